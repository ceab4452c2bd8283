"""Benchmark 2: the cost of a training step with the geodesic regularizer against a plain step.

simple_cnn on 28x28 inputs (10 classes), k = 10, batch 128 / 256 / 512 / 1024: the
median time of a full training step (forward, loss, backward, Adam) with cross-
entropy only, and with the geodesic penalty: target flat (the default) and fixed,
on per-class graphs (the default) and on one whole-batch graph. Target (issue 6):
<= 1.15x a plain step at batch 256 on CPU for the default. The inputs are random
images: their classes are blobs whose segments all stay on the data, so the flat
target costs its support tests here, not its shortest paths (a lower bound on
curved data).
Step times are measured side by side: one process per batch size runs all modes
interleaved in rounds. The regularizer's peak memory is the peak resident memory
(ru_maxrss) of a process computing only the penalty (forward and backward) on a
(batch, 64) embedding, minus that of the same process computing nothing. The
all-pairs shortest-path options the issue names (scipy Dijkstra, Floyd-Warshall,
torch min-plus relaxation) are timed on the same graphs.

    python benchmarks/regularizer_cost.py [--steps 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from common import emit, machine, today

BATCHES = (128, 256, 512, 1024)
MODES = (
    "plain",
    "flat_per_class",
    "fixed_per_class",
    "fixed_whole_batch",
    "fixed_whole_batch_64_sources",
    "flat_whole_batch_64_sources",
)


def geodesic_settings(mode: str) -> dict:
    return {
        "n_neighbors": 10,
        "lambda_reg": 0.5,
        "target": mode.split("_")[0] if mode != "plain" else "flat",
        "per_class": mode.endswith("per_class"),
        "max_sources": 64 if mode.endswith("64_sources") else 0,
    }


def build(batch: int, mode: str, model=None, device: str = "cpu"):
    """A training step of simple_cnn for one configuration (of ``model``, if given: same weights and input)."""
    import torch

    from geotune.config import TrialConfig
    from geotune.trainables.heads import OutputLayer
    from geotune.trainables.models import build_model
    from geotune.trainables.regularizers import build_regularizer

    torch.manual_seed(0)
    cfg = TrialConfig.from_dict(
        {"regularizer": {"name": "none" if mode == "plain" else "geodesic", "geodesic": geodesic_settings(mode)}}
    )
    if model is None:
        model = build_model(cfg.model, (1, 28, 28), 10).to(device)
        if cfg.train.channels_last:  # geotune's default layout
            model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    output = OutputLayer("softmax")
    regularizer = build_regularizer(cfg.regularizer, 10, batch)
    x = torch.randn(batch, 1, 28, 28, device=device)
    if cfg.train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.arange(batch, device=device) % 10

    def step() -> None:
        z, logits = model.embed_and_classify(x)
        loss = output.loss(logits, y)
        if regularizer is not None:
            penalty, _ = regularizer(z, y, 1, 0)
            loss = loss + penalty
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step.model = model
    return step


def time_batch(batch: int, steps: int, rounds: int = 5, modes=MODES, device: str = "cpu") -> dict:
    """Median step time (ms) of each mode at one batch size, modes interleaved in rounds (drift hits all alike);
    on a GPU each step is timed to the end of its queued work."""
    import torch

    def wait() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    step_fns = {mode: build(batch, mode, device=device) for mode in modes}
    for fn in step_fns.values():
        for _ in range(2):
            fn()
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(rounds):
        for mode, fn in step_fns.items():
            for _ in range(max(1, steps // rounds)):
                wait()
                start = time.perf_counter()
                fn()
                wait()
                times[mode].append(time.perf_counter() - start)
    return {mode: 1000 * statistics.median(t) for mode, t in times.items()}


def penalty_peak_rss(batch: int, mode: str) -> float:
    """Peak resident memory (MB) of a process that computes the penalty (forward and backward) 3 times.

    With mode "plain" nothing is computed: the difference to it is the regularizer's own working
    memory (graph, paths, distance matrix, their gradients), without the network's activations.
    """
    import torch

    from geotune.config import TrialConfig
    from geotune.trainables.regularizers import build_regularizer, geodesic_penalty  # noqa: F401 (same imports as plain)

    torch.manual_seed(0)
    z = torch.randn(batch, 64, requires_grad=True)
    y = torch.arange(batch) % 10
    geodesic_penalty(torch.randn(16, 4), 3, 1.0)  # load what the penalty loads (scipy's csgraph), in every mode
    if mode != "plain":
        cfg = TrialConfig.from_dict(
            {"regularizer": {"name": "geodesic", "geodesic": geodesic_settings(mode)}}
        ).regularizer
        regularizer = build_regularizer(cfg, 10, batch)
        for _ in range(3):
            penalty, _ = regularizer(z, y, 1, 0)
            penalty.backward()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="timed steps per mode and batch size")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, batch = args.child[0], int(args.child[1])
        print(json.dumps(time_batch(batch, args.steps) if kind == "time" else penalty_peak_rss(batch, args.child[2])))
        return

    from geotune.study.cluster import WORKER_MALLOC_ENV

    env = {**os.environ, **WORKER_MALLOC_ENV}  # as in geotune's Ray workers

    def child(*extra: str):
        out = subprocess.run(
            [sys.executable, __file__, "--steps", str(args.steps), "--child", *extra],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    rows = []
    for batch in BATCHES:
        step_ms = child("time", str(batch))
        memory = {mode: child("memory", str(batch), mode) for mode in MODES}
        for mode in MODES:
            rows.append(
                {
                    "batch": batch,
                    "mode": mode,
                    "step_ms": step_ms[mode],
                    "ratio_to_plain": step_ms[mode] / step_ms["plain"],
                    "regularizer_peak_mb": memory[mode] - memory["plain"],
                }
            )
            print(
                f"batch {batch:5d} {mode:34s} {step_ms[mode]:8.1f} ms {rows[-1]['ratio_to_plain']:6.3f}x "
                f"{rows[-1]['regularizer_peak_mb']:+7.1f} MB",
                flush=True,
            )
    target = next(r for r in rows if r["batch"] == 256 and r["mode"] == "flat_per_class")
    fixed = next(r for r in rows if r["batch"] == 256 and r["mode"] == "fixed_per_class")
    import torch

    summary = {
        "benchmark": "regularizer_cost",
        "k": 10,
        "rows": rows,
        "shortest_path_algorithms": apsp_options(),
        "ratio_batch_256_per_class": target["ratio_to_plain"],
        "target_ratio": 1.15,
        "ratio_batch_256_per_class_fixed": fixed["ratio_to_plain"],
        "machine": machine(f"torch {torch.__version__}, CPU"),
        "date": today(),
    }
    emit(summary, args.json)


def apsp_options() -> dict:
    """All-pairs shortest paths with predecessors on a batch's 10-NN graph: the options the issue names."""
    import numpy as np
    import torch
    from scipy import sparse
    from scipy.sparse.csgraph import dijkstra, floyd_warshall

    from geotune.trainables.regularizers import knn_indices, pairwise_distances

    out = {}
    for batch in BATCHES:
        torch.manual_seed(0)
        nbr_dist, nbr_idx = knn_indices(pairwise_distances(torch.randn(batch, 64)), 10)
        rows = np.repeat(np.arange(batch), 10)
        graph = sparse.csr_matrix(
            (nbr_dist.numpy().ravel().astype(float), (rows, nbr_idx.numpy().ravel())), shape=(batch, batch)
        )
        graph = graph.maximum(graph.T)
        row = {}
        for name, fn in (("scipy dijkstra", dijkstra), ("scipy floyd_warshall", floyd_warshall)):
            start = time.perf_counter()
            fn(graph, directed=False, return_predecessors=True)
            row[name + " ms"] = 1000 * (time.perf_counter() - start)
        row["torch min-plus relaxation ms"] = 1000 * min_plus_seconds(graph.toarray())
        out[str(batch)] = row
    return out


def min_plus_seconds(weights) -> float:
    """Hop-by-hop relaxation D <- min(D, D[:, nbr(j)] + w(nbr(j), j)) in torch until nothing changes."""
    import numpy as np
    import torch

    n = len(weights)
    neighbours = [np.nonzero(weights[:, j])[0] for j in range(n)]
    width = max(len(v) for v in neighbours)
    idx = torch.zeros((n, width), dtype=torch.long)
    w = torch.full((n, width), float("inf"))
    for j, v in enumerate(neighbours):
        idx[j, : len(v)] = torch.from_numpy(v)
        w[j, : len(v)] = torch.from_numpy(weights[v, j]).float()
    start = time.perf_counter()
    dist = torch.full((n, n), float("inf"))
    dist.fill_diagonal_(0.0)
    while True:
        best, _ = (dist[:, idx] + w[None]).min(2)  # argmin would give the predecessors
        new = torch.minimum(dist, best)
        if torch.equal(new, dist):
            return time.perf_counter() - start
        dist = new


if __name__ == "__main__":
    main()
