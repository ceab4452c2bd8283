"""Why `train.channels_last` is on by default: training-step time in NCHW against channels-last on the CPU.

For each model (simple_cnn at 16 and 28 px, resnet_basic, resnet_bottleneck, fc),
batch 128, one and two torch threads: the median time of a training step (forward,
loss, backward, Adam) with the model and its input in the default contiguous
(NCHW) layout and in channels-last, the two layouts interleaved step by step.
Also the max-pooling operator alone (forward, and forward + backward), which is
where NCHW loses most on this CPU build of torch.

    python benchmarks/memory_layout.py [--steps 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from common import emit, machine, today

from geotune.config import TrialConfig
from geotune.trainables.heads import OutputLayer
from geotune.trainables.models import build_model

CASES = (("simple_cnn", 16), ("simple_cnn", 28), ("resnet_basic", 28), ("resnet_bottleneck", 28), ("fc", 28))
BATCH = 128


def make_step(kind: str, size: int, channels_last: bool):
    torch.manual_seed(0)
    model = build_model(TrialConfig.from_dict({"model": {"type": kind}}).model, (1, size, size), 10)
    x = torch.randn(BATCH, 1, size, size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.arange(BATCH) % 10
    optimizer = torch.optim.Adam(model.parameters())
    output = OutputLayer("softmax")

    def step() -> None:
        _, logits = model.embed_and_classify(x)
        loss = output.loss(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def step_times(kind: str, size: int, steps: int) -> dict:
    fns = {"nchw": make_step(kind, size, False), "channels_last": make_step(kind, size, True)}
    for fn in fns.values():
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    return {**{f"{name}_ms": v for name, v in ms.items()}, "speedup": ms["nchw"] / ms["channels_last"]}


def max_pool_times(repeats: int = 50) -> dict:
    out = {}
    for shape in ((BATCH, 32, 28, 28), (BATCH, 64, 14, 14)):
        x = torch.randn(*shape)
        row = {}
        for name, t in (("nchw", x), ("channels_last", x.contiguous(memory_format=torch.channels_last))):
            t = t.requires_grad_()
            for _ in range(3):
                F.max_pool2d(t, 2).sum().backward()
            start = time.perf_counter()
            for _ in range(repeats):
                F.max_pool2d(t, 2)
            row[f"{name}_forward_ms"] = 1000 * (time.perf_counter() - start) / repeats
            start = time.perf_counter()
            for _ in range(repeats):
                F.max_pool2d(t, 2).sum().backward()
            row[f"{name}_forward_backward_ms"] = 1000 * (time.perf_counter() - start) / repeats
        out["x".join(map(str, shape))] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per layout")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    result = {"benchmark": "memory_layout", "batch": BATCH, "steps": {}}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for kind, size in CASES:
            row = step_times(kind, size, args.steps)
            result["steps"][f"{kind} {size}px, {threads} thread{'s' if threads > 1 else ''}"] = row
            print(
                f"{kind:18s} {size:2d}px {threads} thr: NCHW {row['nchw_ms']:7.1f} ms, channels_last "
                f"{row['channels_last_ms']:7.1f} ms, {row['speedup']:.2f}x",
                flush=True,
            )
    torch.set_num_threads(1)
    result["max_pool2d_one_thread"] = max_pool_times()
    result["machine"] = machine(f"torch {torch.__version__}, CPU")
    result["date"] = today()
    emit(result, args.json)


if __name__ == "__main__":
    main()
