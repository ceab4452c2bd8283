"""Benchmark 5: what ASHA saves on a 16-trial grid, and what it costs in best validation accuracy.

The same 16-trial grid (learning rate x geodesic lambda on digits, simple_cnn,
16 epochs, no patience) runs twice through `geotune run` on this machine: with
ASHA (grace period 2 epochs, reduction factor 2, on the epoch counter) and with
`--no-asha`. Target (issue 6): total epochs trained with ASHA <= 45% of those
without, while the best validation accuracy (over trials and epochs) stays within
0.5 points.

    python benchmarks/early_stopping.py [--json out.json]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from common import emit, machine, today

REPO = Path(__file__).resolve().parents[1]

SPACE = """
from geotune.search_spaces.space import DIGITS_CNN, Asha, SearchSpace
from geotune.config_loading import merge

SPACE = SearchSpace(
    name="asha_value", question="What does ASHA save?",
    base=merge(DIGITS_CNN, {"train": {"epochs": 16, "patience": 0}, "logging": {"save_umap": False},
                            # fixed: the penalty acts on digits at any lambda (target flat never does here)
                            "regularizer": {"name": "geodesic", "geodesic": {"target": "fixed"}}}),
    grid=[{"train.lr": [0.0003, 0.001, 0.003, 0.01],
           "regularizer.geodesic.lambda_reg": [0.05, 0.2, 1.0, 3.0]}],
    seeds=[0], asha=Asha(grace_period=2, reduction_factor=2), metric="val_accuracy", mode="max",
    cpus_per_trial=1)
"""


def run(space: Path, storage: Path, name: str, *extra: str) -> dict:
    from geotune.analysis.load import load_study

    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "geotune",
            "run",
            str(space),
            "--storage",
            str(storage),
            "--name",
            name,
            "--no-report",
            *extra,
        ],
        cwd=str(REPO),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - start
    frame = load_study(storage / name).frame
    return {
        "seconds": seconds,
        "trials": len(frame),
        "total_epochs": int(frame["epochs_run"].sum()),
        "best_val_accuracy": float(frame["best_val_accuracy"].max()),
        "stopped_early": int((frame["status"] == "stopped by ASHA").sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="geotune-asha-"))
    space = work / "space.py"
    space.write_text(textwrap.dedent(SPACE))
    with_asha = run(space, work, "asha")
    without = run(space, work, "no_asha", "--no-asha")
    result = {
        "benchmark": "early_stopping",
        "grid_trials": 16,
        "epochs_per_trial": 16,
        "with_asha": with_asha,
        "without_asha": without,
        "epoch_share": with_asha["total_epochs"] / without["total_epochs"],
        "target_epoch_share": 0.45,
        "best_val_accuracy_difference_points": 100 * (without["best_val_accuracy"] - with_asha["best_val_accuracy"]),
        "target_difference_points": 0.5,
        "machine": machine(),
        "date": today(),
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
