"""Planning a big study (issue 36 item 1): `geotune run --dry-run` of a lambda x k grid from 10 to 10,000 trials.

Each size is a grid of the geodesic regularizer's lambda x k with 2 seeds (so half as many distinct configs as
trials), planned by the CLI in a fresh process as a user runs it (imports included), on the embedded digits
data. Prints the seconds per size and the growth exponent fitted between the two largest sizes.

    python benchmarks/plan_scale.py [--trials 10 100 1000 10000] [--json out.json]
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time

from common import emit, machine, today

SEEDS = 2


def grid(trials: int) -> list[str]:
    """--sweep arguments of about ``trials`` trials: lambdas x ks x SEEDS."""
    configs = max(1, trials // SEEDS)
    n_lambda = max(1, int(math.sqrt(configs * 2)))
    n_k = max(1, configs // n_lambda)
    lambdas = ",".join(f"{0.001 * (i + 1):.4g}" for i in range(n_lambda))
    ks = ",".join(str(i + 2) for i in range(n_k))
    sweeps = ["regularizer.name=geodesic", f"regularizer.geodesic.lambda_reg={lambdas}"]
    return [arg for s in [*sweeps, f"regularizer.geodesic.n_neighbors={ks}"] for arg in ("--sweep", s)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[10, 100, 1000, 10000])
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    rows = []
    for trials in args.trials:
        with tempfile.TemporaryDirectory() as storage:
            cmd = [sys.executable, "-m", "geotune", "run", *grid(trials), "--seeds", str(SEEDS), "--dry-run"]
            start = time.perf_counter()
            done = subprocess.run([*cmd, "--storage", storage], capture_output=True, text=True, check=True)
            seconds = time.perf_counter() - start
        planned = sum(1 for line in done.stdout.splitlines() if line.split()[:1] and line.split()[0].isdigit())
        rows.append({"trials": planned, "distinct_configs": planned // SEEDS, "seconds": round(seconds, 2)})
        print(rows[-1], flush=True)
    growth = None
    if len(rows) >= 2 and rows[-1]["trials"] > rows[-2]["trials"]:
        growth = math.log(rows[-1]["seconds"] / rows[-2]["seconds"]) / math.log(rows[-1]["trials"] / rows[-2]["trials"])
    emit(
        {
            "benchmark": "plan_scale",
            "rows": rows,
            "growth_exponent_largest": growth,
            "machine": machine(),
            "date": today(),
        },
        args.json,
    )


if __name__ == "__main__":
    main()
