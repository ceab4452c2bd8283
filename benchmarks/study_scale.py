"""Big studies cloned from a small real one (issue 36 item 5): plan, load, report and resume at 100-5,000 trials.

A real finished study (`--from STUDY_DIR`; default: a 1-epoch, 1-seed quickstart run here first) gives the
trial folders. For each size, a sweep of regularizer none/geodesic x the geodesic lambda x 4 seeds is
planned in this process (`make_plan`, timed), and every planned trial gets a folder made from a real trial of
the same regularizer: params.json, config.yaml and metrics.json written with the planned label and config
(metrics.json's scores jittered by 1%, so that paired effects have intervals), every other file linked. Then
`load_study`, the report (`build_report` + `save_report`) and `geotune resume` of the finished study (no report)
are timed. Prints a table and the growth exponents between the smallest and the largest size.

    python benchmarks/study_scale.py [--from STUDY_DIR] [--trials 100 1000 5000] [--json out.json]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import emit, machine, today

SEEDS = 4  # pairs per arm


def source_study(given: str | None, scratch: Path) -> Path:
    if given:
        return Path(given).resolve()
    storage = scratch / "source"
    cmd = [sys.executable, "-m", "geotune", "run", "quickstart", "--seeds", "1", "--set", "train.epochs=1"]
    subprocess.run([*cmd, "--storage", str(storage), "--name", "q", "--no-report"], check=True, capture_output=True)
    return storage / "q"


def real_trials(study: Path) -> dict[str, list[Path]]:
    """The source's finished trial folders by regularizer name."""
    from geotune.layout import METRICS_FILE, read_json

    out: dict[str, list[Path]] = {}
    for folder in sorted(study.iterdir()):
        if (folder / METRICS_FILE).is_file():
            name = "geodesic" if read_json(folder / METRICS_FILE).get("regularized") else "none"
            out.setdefault(name, []).append(folder)
    return out


def plan_of(trials: int, root: Path):
    from geotune.search_spaces.space import with_sweeps
    from geotune.study.plan import RunOptions, make_plan

    arms = max(1, trials // (2 * SEEDS))  # each lambda with the geodesic term and its baseline (name none)
    lambdas = ",".join(f"{0.001 * (i + 1):.4g}" for i in range(arms))
    space = with_sweeps(None, ["regularizer.name=none,geodesic", f"regularizer.geodesic.lambda_reg={lambdas}"], {})
    start = time.perf_counter()
    plan = make_plan(space, {}, RunOptions(storage=str(root), name="study", num_samples=SEEDS))
    return plan, time.perf_counter() - start


def clone(plan, sources: dict[str, list[Path]]) -> Path:
    """A trial folder per planned trial, from a real trial of the same regularizer."""
    import numpy as np
    import yaml

    from geotune.layout import CONFIG_FILE, METRICS_FILE, PARAMS_FILE, read_json, write_json
    from geotune.variants import folder_label

    study = Path(plan.study_dir)
    study.mkdir(parents=True, exist_ok=True)
    plan.save()
    rng = np.random.default_rng(0)
    for index, (label, config) in enumerate(plan.trial_configs().items()):
        name = config["regularizer"]["name"]
        source = sources.get(name, sources["none"])[index % len(sources.get(name, sources["none"]))]
        folder = study / f"{index:05d}_{folder_label(label)}"
        folder.mkdir()
        for path in source.iterdir():
            if path.is_dir():
                continue
            if path.name == PARAMS_FILE:
                write_json(folder / path.name, {"variant": label})
            elif path.name == CONFIG_FILE:
                (folder / path.name).write_text(yaml.safe_dump(config, sort_keys=False))
            elif path.name == METRICS_FILE:
                metrics = read_json(path)
                for key, value in metrics.items():
                    if isinstance(value, float) and key not in ("wall_time_s",):
                        metrics[key] = value * (1 + 0.01 * rng.standard_normal())
                write_json(folder / path.name, metrics)
            else:  # every other file as the real trial has it (linked: 5,000 copies would fill a disk)
                os.symlink(path, folder / path.name)
    return study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", help="a finished study to clone (default: a tiny quickstart)")
    parser.add_argument("--trials", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    from geotune.analysis.load import load_study
    from geotune.analysis.report import build_report, report_folder, save_report
    from geotune.study.cli import main as geotune

    scratch = Path(tempfile.mkdtemp(prefix="geotune-scale-"))
    sources = real_trials(source_study(args.source, scratch))
    rows = []
    for trials in args.trials:
        plan, plan_seconds = plan_of(trials, scratch / f"n{trials}")
        study = clone(plan, sources)
        start = time.perf_counter()
        loaded = load_study(study)
        load_seconds = time.perf_counter() - start
        start = time.perf_counter()
        index = save_report(build_report(loaded), report_folder([str(study)], None))
        report_seconds = time.perf_counter() - start
        state = sorted(p.name for p in study.rglob("*") if "report" not in p.parts)
        start = time.perf_counter()
        code = geotune(["resume", str(study), "--no-report"])
        resume_seconds = time.perf_counter() - start
        assert code == 0 and sorted(p.name for p in study.rglob("*") if "report" not in p.parts) == state
        rows.append(
            {
                "trials": len(loaded.frame),
                "plan_seconds": round(plan_seconds, 2),
                "load_seconds": round(load_seconds, 2),
                "report_seconds": round(report_seconds, 1),
                "resume_seconds": round(resume_seconds, 2),
                "index_html_mb": round(index.stat().st_size / 2**20, 2),
            }
        )
        print(rows[-1], flush=True)
        shutil.rmtree(study.parent)
    growth = {}
    if len(rows) >= 2:
        span = math.log(rows[-1]["trials"] / rows[0]["trials"])
        for key in ("plan_seconds", "load_seconds", "report_seconds", "resume_seconds"):
            growth[key] = round(math.log(rows[-1][key] / rows[0][key]) / span, 2)
    emit(
        {"benchmark": "study_scale", "rows": rows, "growth_exponents": growth, "machine": machine(), "date": today()},
        args.json,
    )


if __name__ == "__main__":
    main()
