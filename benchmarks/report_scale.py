"""The report of a big study stays a page (issue 35 item 6): index.html size and build time at 100-1,000 trials.

Writes synthetic studies of finished trials over lambda x k of the geodesic regularizer plus baselines, each
arm with 4 seeds, metrics drawn at random around the truth of each arm (so the paired effects have intervals),
then times `geotune report` (load, effects, figures, index.html) and measures the page and the forest.

    python benchmarks/report_scale.py [--trials 100 1000 5000] [--json out.json]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

from common import emit, machine, today

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

SEEDS = 4  # pairs per arm: enough for a CI


def study_of(trials: int, root: Path) -> Path:
    import numpy as np

    from synthetic import make_study

    arms = max(1, trials // SEEDS - 1)  # the baseline is one arm more
    lambdas = np.geomspace(1e-3, 1.0, max(1, int(np.sqrt(arms))))
    ks = range(3, 3 + int(np.ceil(arms / len(lambdas))))
    grid = [(float(lam), k) for lam in lambdas for k in ks][:arms]
    variants, runs = [], []
    rng = np.random.default_rng(0)
    for seed in range(SEEDS):
        variants.append({"regularizer.name": "none", "train.seed": seed})
        for lam, k in grid:
            geodesic = "regularizer.geodesic"
            variants.append(
                {"regularizer.name": "geodesic", f"{geodesic}.lambda_reg": lam, f"{geodesic}.n_neighbors": k}
                | {"train.seed": seed}
            )
    for index, variant in enumerate(variants):
        lam = variant.get("regularizer.geodesic.lambda_reg", 0.0)
        metrics = {
            "test_accuracy": 0.95 - 0.05 * lam + rng.normal(0, 0.005),
            "val_accuracy": 0.95 - 0.05 * lam + rng.normal(0, 0.005),
            "participation_ratio_per_class": 5.0 - 2.0 * lam + rng.normal(0, 0.1),
            "intrinsic_dim_twonn": 6.0 - lam + rng.normal(0, 0.1),
            "silhouette": 0.3 + 0.1 * lam + rng.normal(0, 0.01),
            "knn_accuracy": 0.95 + rng.normal(0, 0.005),
            "flatness_calibrated_per_class": 1.1 - 0.05 * lam + rng.normal(0, 0.01),
        }
        runs.append({"variant": index, "metrics": metrics})
    return make_study(root, variants, runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    from geotune.analysis.figure_data import FOREST_MAX_ROWS
    from geotune.analysis.load import load_study
    from geotune.analysis.report import build_report, report_folder, save_report

    rows = []
    for trials in args.trials:
        folder = study_of(trials, Path(tempfile.mkdtemp(prefix="geotune-report-")) / "study")
        start = time.perf_counter()
        study = load_study(folder)
        loaded = time.perf_counter() - start
        report = build_report(study)
        index = save_report(report, report_folder([str(folder)], None))
        seconds = time.perf_counter() - start
        figures = sorted((index.parent / "figures").glob("*.png"))
        forest = report.forest.data if report.forest is not None else None
        rows.append(
            {
                "trials": len(report.summary),
                "arms": len(forest.regularizers) + forest.left_out if forest else 0,
                "forest_rows_drawn": len(forest.regularizers) if forest else 0,
                "load_seconds": round(loaded, 2),
                "report_seconds": round(seconds, 1),
                "index_html_mb": round(index.stat().st_size / 2**20, 2),
                "figures_mb": round(sum(f.stat().st_size for f in figures) / 2**20, 2),
            }
        )
        print(rows[-1], flush=True)
    growth = {}
    if len(rows) >= 2 and rows[-1]["trials"] > rows[0]["trials"]:
        span = math.log(rows[-1]["trials"] / rows[0]["trials"])
        for key in ("load_seconds", "report_seconds", "index_html_mb"):
            growth[key] = round(math.log(rows[-1][key] / rows[0][key]) / span, 2)
    emit(
        {
            "benchmark": "report_scale",
            "growth_exponents_first_to_last": growth,
            "forest_max_rows": FOREST_MAX_ROWS,
            "rows": rows,
            "machine": machine(),
            "date": today(),
        },
        args.json,
    )


if __name__ == "__main__":
    main()
