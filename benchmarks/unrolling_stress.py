"""Which stress unrolls a swiss roll, and what its targets must be held for (issue 28 item 5).

Not a timing: an experiment that the Regularizers page quotes. The roll of tests/test_regularizers.py (400
points in R^64) is moved by plain gradient descent with momentum 0.9 on the stress
sum (|z_i - z_j| - g_ij)^2 / sum g_ij^2 over all pairs, where g holds kNN-graph (k 5) geodesics, under several
policies for g: held from the start, recomputed every step or every R steps, or refreshed every R steps keeping
the shorter (min) or the longer (max) of old and new. Printed per policy and seed: the Spearman correlation of
Euclidean distances with distances along the unrolled sheet (1: unrolled; 0.36 at the start), TwoNN, the
participation ratio and the largest distance (the scale: inflation or collapse). The mini-batch policies move
only a random batch of 64 points a step, against a memory holding each sample's last detached position (what a
network's training could keep, keyed by sample), for 3,000 steps (480 passes over the roll's points). The
scale-free policies compare the batch rows' distance profile with the targets' after dividing each by its norm,
sum (d / |d| - g / |g|)^2: a task that grows or shrinks the embedding meets no resistance, and a refresh cannot
carry a change of scale into the next targets.

    python benchmarks/unrolling_stress.py [--steps 500] [--lr 20] [--seeds 0 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import emit, machine, today

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

POLICIES = {  # name: (refresh every R steps, 0 = never; how a refresh combines old and new ("shape": new, and
    # the scale-free stress); batch, 0 = all)
    "held": (0, "new", 0),
    "recomputed every step": (1, "new", 0),
    "recomputed every 100": (100, "new", 0),
    "refresh 100, never shorten (max)": (100, "max", 0),
    "refresh 100, never lengthen (min)": (100, "min", 0),
    "refresh 50, never lengthen (min)": (50, "min", 0),
    "mini-batch 64 with memory, held": (0, "new", 64),
    "mini-batch 64 with memory, refresh 500 (min)": (500, "min", 64),
    "mini-batch 64 with memory, refresh 100 (min)": (100, "min", 64),
    "mini-batch 64 with memory, scale-free, held": (0, "shape", 64),
    "mini-batch 64 with memory, scale-free, refresh 500": (500, "shape", 64),
    "mini-batch 64 with memory, scale-free, refresh 100": (100, "shape", 64),
}
BATCH_STEPS = 3000  # steps of the mini-batch policies: 480 passes over the 400 points


def geodesics(z):
    """kNN-graph (k 5) shortest paths, as the metrics compute them; pairs the graph does not connect pull nowhere."""
    import numpy as np

    from geotune.analysis.neighbors import graph_geodesics

    g = graph_geodesics(z, 5)
    g[~np.isfinite(g)] = 0.0
    return g


def run(seed: int, refresh: int, combine: str, batch: int, steps: int, lr: float) -> dict:
    import numpy as np
    import torch
    from test_regularizers import swiss_roll_unrolling, unrolled_rank_correlation

    from geotune.analysis.latent import intrinsic_dim_twonn, participation_ratio

    x, along = swiss_roll_unrolling(seed)
    z = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    memory = z.detach().clone()  # each sample's last detached position (all of them, without a batch)
    optimizer = torch.optim.SGD([z], lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    g = None
    for step in range(BATCH_STEPS if batch else steps):
        if g is None or (refresh and step % refresh == 0):
            new = torch.tensor(geodesics(memory.numpy()), dtype=torch.float32)
            if g is None or combine in ("new", "shape"):
                g = new
            else:
                g = torch.maximum(g, new) if combine == "max" else torch.minimum(g, new)
        rows = torch.randperm(len(x), generator=generator)[:batch] if batch else torch.arange(len(x))
        d = torch.cdist(z[rows], memory if batch else z).clamp_min(1e-9)  # a batch meets the others in memory
        if combine == "shape":  # compare shapes only: the loss is the same for z and c * z, so it moves no scale
            loss = ((d / d.norm() - g[rows] / g[rows].norm()) ** 2).sum()
        else:
            loss = ((d - g[rows]) ** 2).sum() / (g[rows] ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        memory[rows] = z.detach()[rows]
        if not torch.isfinite(memory).all():
            return {"seed": seed, "diverged_at_step": step + 1}
    y = memory.double().numpy()
    return {
        "seed": seed,
        "unrolled_rank_correlation": round(unrolled_rank_correlation(y, along), 3),
        "twonn": round(intrinsic_dim_twonn(y), 2),
        "participation_ratio": round(participation_ratio(y), 2),
        "largest_distance": round(float(np.max(np.linalg.norm(y[:, None] - y[None], axis=2))), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="gradient steps per run")
    parser.add_argument("--lr", type=float, default=20.0, help="step size (momentum 0.9)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 3], help="swiss roll seeds")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    from test_regularizers import swiss_roll_unrolling, unrolled_rank_correlation

    start = [round(unrolled_rank_correlation(*swiss_roll_unrolling(s)), 3) for s in args.seeds]
    rows = []
    for name, (refresh, combine, batch) in POLICIES.items():
        for seed in args.seeds:
            rows.append({"policy": name, **run(seed, refresh, combine, batch, args.steps, args.lr)})
            print(rows[-1], file=sys.stderr, flush=True)
    emit(
        {
            "date": today(),
            "machine": machine(),
            "steps": args.steps,
            "mini_batch_steps": BATCH_STEPS,
            "lr": args.lr,
            "start_rank_correlation": start,
            "runs": rows,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
