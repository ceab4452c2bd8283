"""Benchmark 6: the GPU paths: bf16 autocast, channels_last, device-resident data, packing trials on one GPU.

On a machine with a CUDA GPU it measures, for simple_cnn on 28x28 inputs:

1. training steps per second at batch 512 in fp32, bf16 autocast, and bf16 + channels_last;
2. one epoch over 60,000 images held on the GPU as uint8 (geotune's pipeline) against
   the same images kept on the host and copied over batch by batch;
3. a training step with the geodesic penalty (flat and fixed targets, per class) against a plain
   step at batch 256 and 1024 (the penalty's shortest paths run on the CPU);
4. packing: 8 trials (the synthetic `shapes` data set at 28 px, 20,000 images,
   5 epochs) through `geotune run` with --gpus-per-trial 1, 0.5 and 0.25, as trials per hour.

Without a GPU it says so and measures nothing (the same training switches run on
the CPU in the tests: tests/test_trial.py::test_bf16_channels_last_trial_on_cpu).
``--smoke`` runs every step of this script on the CPU with tiny sizes, to check the
script itself where no GPU is at hand (its numbers mean nothing).

    python benchmarks/gpu_paths.py [--json out.json] [--smoke] [--parts steps,epoch,regularizer,packing] [--budget S]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from common import emit, machine, today

REPO = Path(__file__).resolve().parents[1]

PACKING_SPACE = """
from geotune.search_spaces.space import SearchSpace

SPACE = SearchSpace(
    name="gpu_packing", question="How many trials per hour fit on one GPU?",
    base={"dataset": {"name": "shapes", "image_size": 28, "shapes": {"num_samples": 20000}},
          "model": {"type": "simple_cnn", "channels": [32, 64]},
          "train": {"epochs": 5, "batch_size": 256, "patience": 0, "precision": "bf16", "channels_last": True},
          "logging": {"save_umap": False}},
    grid=[{"train.lr": [0.001, 0.002, 0.003, 0.004]}], seeds=[0, 1], cpus_per_trial=2)
"""
# --smoke: the same study, two 1-epoch trials on 500 images
SMOKE_SPACE = (
    PACKING_SPACE.replace('"num_samples": 20000', '"num_samples": 500')
    .replace('"epochs": 5', '"epochs": 1')
    .replace("seeds=[0, 1]", "seeds=[0]")
    .replace("0.001, 0.002, 0.003, 0.004", "0.001, 0.002")
    .replace("cpus_per_trial=2", "cpus_per_trial=1")
)


def synchronize(device) -> None:
    """Wait for the device's queue of work: without it a GPU time measures only the launches."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def step_rates(device, steps: int = 100) -> dict:
    import torch

    from geotune.config import TrialConfig
    from geotune.trainables.heads import OutputLayer
    from geotune.trainables.loop import autocast_context
    from geotune.trainables.models import build_model

    out = {}
    for name, precision, channels_last in (
        ("fp32", "fp32", False),
        ("bf16", "bf16", False),
        ("bf16 + channels_last", "bf16", True),
    ):
        torch.manual_seed(0)
        model = build_model(TrialConfig.from_dict({}).model, (1, 28, 28), 10).to(device)
        x = torch.randn(512, 1, 28, 28, device=device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (512,), device=device)
        optimizer = torch.optim.Adam(model.parameters())
        loss_fn = OutputLayer("softmax")

        def step(model=model, x=x, y=y, optimizer=optimizer, loss_fn=loss_fn, precision=precision):
            with autocast_context(device, precision):
                logits = model(x)
            loss = loss_fn.loss(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        for _ in range(min(10, steps)):
            step()
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        out[name] = steps / (time.perf_counter() - start)
    return out


def resident_vs_host(device, samples: int = 60_000) -> dict:
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from data_pipeline import AUGMENT, BATCH, CHANNELS_LAST, default_model, device_splits, synthetic_images

    from geotune.trainables.batches import training_batches
    from geotune.trainables.heads import OutputLayer
    from geotune.trainables.loop import train_one_epoch

    images, labels = synthetic_images(samples)
    on_host = device_splits(images, labels)
    on_gpu = device_splits(images, labels)
    for split in (on_gpu.train,):
        split.images, split.labels = split.images.to(device), split.labels.to(device)
    on_gpu.mean, on_gpu.std = on_gpu.mean.to(device), on_gpu.std.to(device)
    model = default_model(device)
    optimizer = torch.optim.Adam(model.parameters())
    output = OutputLayer("softmax")

    def host_batches():
        g = torch.Generator().manual_seed(0)
        for x, y in training_batches(on_host, BATCH, g, AUGMENT):
            yield x.to(device, non_blocking=False), y.to(device)

    out = {}
    for name, batches in (
        (
            "device-resident uint8",
            lambda: training_batches(on_gpu, BATCH, torch.Generator(device=device).manual_seed(0), AUGMENT),
        ),
        ("host, copied per batch", host_batches),
    ):
        train_one_epoch(model, output, optimizer, batches(), epoch=1, channels_last=CHANNELS_LAST)  # warm-up
        synchronize(device)
        start = time.perf_counter()
        train_one_epoch(model, output, optimizer, batches(), epoch=1, channels_last=CHANNELS_LAST)
        synchronize(device)
        out[name] = time.perf_counter() - start
    return out


def regularizer_steps(device, steps: int = 30) -> dict:
    """Milliseconds per training step, plain and with the geodesic penalty (benchmark 2's modes), at batch 256 and 1024.

    On a GPU the penalty's shortest paths still run on the CPU (scipy), so its ratio to a plain
    step is much larger than on a CPU, where the network's own step is slow.
    """
    sys.path.insert(0, str(Path(__file__).parent))
    from regularizer_cost import time_batch

    out: dict = {}
    for batch in (256, 1024):
        ms = time_batch(batch, steps, modes=("plain", "flat_per_class", "fixed_per_class"), device=str(device))
        out[str(batch)] = {mode: {"step_ms": v, "ratio_to_plain": v / ms["plain"]} for mode, v in ms.items()}
    return out


def packing(space: str = PACKING_SPACE, fractions=(1.0, 0.5, 0.25), budget: float | None = None) -> dict:
    """Whole `geotune run` commands at each GPU fraction per trial: seconds and finished trials per hour.

    ``budget`` (seconds per study) stops a study that runs past it and records what it had finished,
    so a machine lent for minutes still reports the fractions that did finish.
    """
    work = Path(tempfile.mkdtemp(prefix="geotune-packing-"))
    (work / "space.py").write_text(textwrap.dedent(space))
    out: dict = {}
    for gpus in fractions:
        command = [sys.executable, "-m", "geotune", "run", str(work / "space.py"), "--storage", str(work)]
        command += ["--name", f"g{gpus}", "--gpus-per-trial", str(gpus), "--no-report"]
        start = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=str(REPO), capture_output=True, text=True, timeout=budget)
            note = "" if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip()[-400:]}"
        except subprocess.TimeoutExpired:
            note = f"stopped after {budget:.0f} s"
        seconds = time.perf_counter() - start
        finished = len(list((work / f"g{gpus}").glob("*/metrics.json")))
        out[str(gpus)] = {"seconds": seconds, "trials": finished, "trials_per_hour": finished * 3600 / seconds}
        if note:
            out[str(gpus)]["unfinished"] = note
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="run every step on the CPU with tiny sizes (checks the script; the numbers mean nothing)",
    )
    parser.add_argument(
        "--parts",
        default="steps,epoch,regularizer,packing",
        help="comma-separated subset of steps, epoch, regularizer, packing (to fit a machine lent for minutes)",
    )
    parser.add_argument("--budget", type=float, help="seconds each packing study may run (default: no limit)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))

    import torch

    result = {"benchmark": "gpu_paths", "date": today()}
    if args.smoke:
        device = torch.device("cpu")
        result["smoke"] = "CPU, tiny sizes: checks that the script runs; not a measurement"
        result["steps_per_second_batch_512"] = step_rates(device, steps=2)
        result["epoch_seconds"] = resident_vs_host(device, samples=1024)
        result["regularizer_step_ms"] = regularizer_steps(device, steps=2)
        result["packing"] = packing(SMOKE_SPACE, fractions=(1.0,))
    elif not torch.cuda.is_available():
        result["skipped"] = "no CUDA GPU visible on this machine; run this script on one with a GPU"
    else:
        device = torch.device("cuda")
        result["machine"] = f"{torch.cuda.get_device_name(0)}, {os.cpu_count()} CPUs, torch {torch.__version__}"
        if "steps" in parts:
            result["steps_per_second_batch_512"] = step_rates(device)
        if "epoch" in parts:
            result["epoch_seconds"] = resident_vs_host(device)
        if "regularizer" in parts:
            result["regularizer_step_ms"] = regularizer_steps(device)
        if "packing" in parts:
            result["packing"] = packing(budget=args.budget)
    result.setdefault("machine", machine())
    emit(result, args.json)


if __name__ == "__main__":
    main()
