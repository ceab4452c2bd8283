"""Cost of the per-epoch neural-collapse measurement against the epoch it follows (issue 31: at most 5% of an
epoch on digits).

Trains the digits recipe (configs/digits.yaml) in this process for a few epochs and reads, from its own history,
the epoch times; then times ``analysis.collapse.neural_collapse`` on features of the validation split's shape
(and on a large split, 10,000 x 512) with the same machine, in the same run.

    python benchmarks/collapse_cost.py [--epochs 6] [--json benchmarks/results/collapse_cost.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import NoSession, emit, machine, today

from geotune.analysis.collapse import neural_collapse
from geotune.config_loading import load_config
from geotune.trainables.trial import run_trial

REPO = Path(__file__).resolve().parents[1]


def time_collapse(n: int, d: int, classes: int, repeats: int) -> float:
    """Median seconds of one measurement of (n, d) features of ``classes`` classes, head and predictions given."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, n)
    x = rng.standard_normal((classes, d))[labels] + rng.standard_normal((n, d))
    head, predictions = rng.standard_normal((classes, d)), rng.integers(0, classes, n)
    neural_collapse(x, labels, head, predictions)  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        neural_collapse(x, labels, head, predictions)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    cfg = load_config(REPO / "configs" / "digits.yaml", [f"train.epochs={args.epochs}", "logging.figures=false"])
    with tempfile.TemporaryDirectory() as out:
        run_trial(cfg, NoSession(), Path(out), verbose=False)
        history = json.loads((Path(out) / "training_history.json").read_text())
        val_size = json.loads((Path(out) / "metrics.json").read_text())["val_size"]
    epoch = float(np.median([row["epoch_time"] for row in history[1:]]))  # the first epoch carries warm-up
    hidden = cfg.model.hidden_dim or 64
    per_epoch = time_collapse(val_size, hidden, 10, 50)
    large = time_collapse(10_000, 512, 10, 5)
    emit(
        {
            "benchmark": "collapse_cost",
            "date": today(),
            "machine": machine(f"torch {torch.__version__}, {torch.get_num_threads()} threads"),
            "digits_epoch_s": epoch,
            "validation_features": [val_size, hidden],
            "collapse_per_epoch_s": per_epoch,
            "share_of_epoch": per_epoch / epoch,
            "collapse_10000x512_s": large,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
