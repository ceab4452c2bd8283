"""Loading a 500-trial study directory into the analysis DataFrame (issue 5: seconds, not minutes).

Writes a synthetic study of 500 finished trials (study.json, params.json,
metrics.json, history and result lines per trial, as a real study does), then
times `analysis.load.load_study` and the whole `geotune report` on it.

    python benchmarks/load_study.py [--trials 500] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import emit, machine, today

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    from geotune.analysis.load import load_study
    from geotune.analysis.report import write_report
    from synthetic import make_study

    variants = [
        {"regularizer.name": "geodesic", "regularizer.geodesic.lambda_reg": 0.001 * (i // 5 + 1), "train.seed": i % 5}
        for i in range(args.trials)
    ]
    folder = make_study(
        Path(tempfile.mkdtemp(prefix="geotune-load-")) / "study",
        variants,
        [{"variant": i, "metrics": {"test_accuracy": 0.8 + 0.0002 * i}} for i in range(args.trials)],
    )
    start = time.perf_counter()
    study = load_study(folder)
    load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    write_report(folder)
    report_seconds = time.perf_counter() - start
    result = {
        "benchmark": "load_study",
        "trials": len(study.frame),
        "load_seconds": load_seconds,
        "report_seconds": report_seconds,
        "machine": machine(),
        "date": today(),
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
