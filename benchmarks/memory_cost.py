"""The cost of the flat target's memory (regularizer.geodesic.memory) per training step, against a plain step.

simple_cnn on 28x28 inputs, 10 classes, batch 256 (issue 28's goal: <= 1.3x a plain step), k 5 (the
default), lambda 0.5: the median time of a full training step (forward, loss, backward, Adam) with
cross-entropy only, with the flat target on the batch alone (memory 0), and with a memory of 256 samples per
class (the default). Sample ids are drawn as from an MNIST-sized training split (60,000 rows, 6,000 per
class), so the memory fills (256 rows per class) before the timed steps and its targets are held; the check
of the classes' kNN graphs and the recomputation of the targets, each at most once every refresh_steps (100)
steps, are timed on their own (all ten classes) and added per step (a bound: the targets are recomputed only
at checks that find a class rearranged). Modes are interleaved in rounds in one process (drift hits all
alike). The inputs are random images: their classes are blobs, so few remembered pairs bend (a lower bound on
the pull's cost; the targets' cost does not depend on it); the share of timed steps on which each penalty
pulled is printed. So the memory's penalty is also timed alone (forward and backward) where every class is a
swiss roll of 256 remembered points and every step pulls; added to the plain step, it bounds the cost on
curved classes.

    python benchmarks/memory_cost.py [--steps 60] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import emit, machine, today

BATCH = 256
SPLIT = 60_000  # rows of an MNIST-sized training split
MODES = {"plain": None, "flat, batch alone": 0, "flat, memory 256": 256}


def build(memory: int | None):
    """A training step of simple_cnn and its regularizer (None for the plain step)."""
    import torch

    from geotune.config import TrialConfig
    from geotune.trainables.heads import OutputLayer
    from geotune.trainables.models import build_model
    from geotune.trainables.regularizers import build_regularizer

    torch.manual_seed(0)
    geodesic = {"lambda_reg": 0.5, "memory": memory or 0}
    cfg = TrialConfig.from_dict(
        {"regularizer": {"name": "none" if memory is None else "geodesic", "geodesic": geodesic}}
    )
    model = build_model(cfg.model, (1, 28, 28), 10).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    output = OutputLayer("softmax")
    regularizer = build_regularizer(cfg.regularizer, 10, BATCH, [SPLIT // 10] * 10)
    x = torch.randn(BATCH, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(0)
    state = {"step": 0, "acting": 0}

    def step() -> None:
        ids = torch.randperm(SPLIT, generator=generator)[:BATCH]
        y = ids % 10  # each row's class: 6,000 rows per class
        z, logits = model.embed_and_classify(x)
        loss = output.loss(logits, y)
        if regularizer is not None:
            penalty, stats = regularizer(z, y, 1, state["step"], ids)
            loss = loss + penalty
            state["acting"] += int(stats.get("geodesic_acting", 0))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state["step"] += 1

    step.state = state  # type: ignore[attr-defined]
    return step, regularizer


def curved_pull_ms(steps: int) -> tuple[float, float]:
    """Median ms of the memory's penalty alone (forward and backward) at batch 256 when every class is a swiss
    roll of 256 remembered points in R^64 (every step pulls), and the share of steps that pulled."""
    import numpy as np
    import torch
    from sklearn.datasets import make_swiss_roll

    from geotune.config import TrialConfig
    from geotune.trainables.regularizers import build_regularizer

    rolls = []
    for label in range(10):
        roll, _ = make_swiss_roll(256, random_state=label)
        basis, _ = np.linalg.qr(np.random.default_rng(label).standard_normal((64, 3)))
        rolls.append(roll / 5 @ basis.T)
    points = torch.tensor(np.concatenate(rolls), dtype=torch.float32)  # row r: class r // 256
    cfg = TrialConfig.from_dict({"regularizer": {"name": "geodesic", "geodesic": {"lambda_reg": 0.5}}})
    regularizer = build_regularizer(cfg.regularizer, 10, BATCH, [256] * 10)
    generator = torch.Generator().manual_seed(0)
    times, pulled = [], 0
    for step in range(60 + steps):  # the first 60 fill the memory (25.6 rows of each class a step)
        ids = torch.randperm(len(points), generator=generator)[:BATCH]
        z = points[ids].clone().requires_grad_(True)
        start = time.perf_counter()
        penalty, stats = regularizer(z, ids // 256, 1, step, ids)
        penalty.backward()
        if step >= 60:
            times.append(time.perf_counter() - start)
            pulled += int(stats["geodesic_acting"])
    return 1000 * statistics.median(times), pulled / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps per mode")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    import torch

    built = {name: build(memory) for name, memory in MODES.items()}
    for step, _ in built.values():  # the memory holds 256 per class after about 150 steps of 25.6 per class
        for _ in range(160):
            step()
    memory = built["flat, memory 256"][1].memory
    assert memory is not None and all(m.geodesics is not None for m in memory.classes.values()), "targets held"
    times: dict[str, list[float]] = {name: [] for name in MODES}
    for step, _ in built.values():
        step.state["acting"] = 0
    rounds = 5
    for _ in range(rounds):
        for name, (step, _) in built.items():
            for _ in range(max(1, args.steps // rounds)):
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    start = time.perf_counter()
    for m in memory.classes.values():
        memory._stale(m)
    check_s = time.perf_counter() - start
    start = time.perf_counter()
    for m in memory.classes.values():
        memory._refresh(m, 0)
    refresh_s = time.perf_counter() - start
    median = {name: 1000 * statistics.median(t) for name, t in times.items()}
    pull_ms, pull_share = curved_pull_ms(args.steps)
    per_step_refresh_ms = 1000 * (check_s + refresh_s) / memory.refresh_steps
    with_refresh = median["flat, memory 256"] + per_step_refresh_ms
    summary = {
        "benchmark": "memory_cost",
        "batch": BATCH,
        "step_ms": median,
        "ratio_to_plain": {name: ms / median["plain"] for name, ms in median.items()},
        "share_of_timed_steps_pulled": {
            name: step.state["acting"] / len(times[name]) for name, (step, _) in built.items()
        },
        "curved_classes_pull_ms": pull_ms,
        "curved_classes_share_pulled": pull_share,
        "curved_classes_ratio_with_refresh_per_step": (median["plain"] + pull_ms + per_step_refresh_ms)
        / median["plain"],
        "graph_check_all_classes_s": check_s,
        "targets_all_classes_s": refresh_s,
        "memory_ratio_with_refresh_per_step": with_refresh / median["plain"],
        "target_ratio": 1.3,
        "machine": machine(f"torch {torch.__version__}, CPU"),
        "date": today(),
    }
    emit(summary, args.json)


if __name__ == "__main__":
    main()
