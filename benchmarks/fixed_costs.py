"""Benchmark 7 (issue 13): what a short run costs beyond its training, side by side in one run.

1. Single run: `geotune train configs/digits.yaml OUT` from process start to exit, divided by
   the sum of its epochs' `epoch_time` (training_history.json). Goal <= 2.0. Measured in-process
   with UMAP's compile cache cold (an empty GEOTUNE_CACHE_DIR: a fresh machine's first run) and
   warm, and through Ray (`--ray`).
2. Study: `geotune run quickstart` (report included) divided by (sum of every trial's
   epoch_time / CPUs). Goal <= 2.0.
3. Sweep: 64 one-epoch digits trials through `geotune run` against the same 64 trials run one
   after another by a plain Python loop in one process calling geotune's trial function
   (`run_trial` with a session that reports nowhere). Goal: geotune's trials per minute >= 0.8x
   the loop's.
4. Per-trial fixed cost: a trial's time outside its epochs, from its own timestamps (the last
   `time_total_s` Tune recorded, at the report after the artifacts, minus its epochs' epoch_time);
   the median over the study's and the sweep's trials. Goal <= 1 s. The plain loop's trials are
   broken down by phase (building data and model, final evaluation and artifacts, geometry
   summary, the 2-D projection, figures).

    python benchmarks/fixed_costs.py [--sweep 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from common import emit, machine, today

REPO = Path(__file__).resolve().parents[1]
GEOTUNE = str(Path(sys.executable).with_name("geotune"))

SWEEP_SPACE = """
from geotune.search_spaces.space import DIGITS_CNN, SearchSpace
from geotune.config_loading import merge

SPACE = SearchSpace(name="sweep", question="benchmark: tiny trials",
                  base=merge(DIGITS_CNN, {{"train": {{"epochs": 1}}}}),
                  grid=[{{"regularizer.name": ["none"]}}], seeds=list(range({n})), cpus_per_trial=1, gpus_per_trial=0)
"""

LOOP = """
import json, sys, tempfile, time
from pathlib import Path
T0 = time.perf_counter()
sys.path.insert(0, {bench!r})
sys.path.insert(0, {space_dir!r})
from common import NoSession
from space import SPACE
from geotune.config import TrialConfig
from geotune.config_loading import merge, nest
import geotune.trainables.trial as trial_module
import geotune.trainables.artifacts as artifacts
import geotune.analysis.latent as latent

phases = []  # one dict per trial: phase -> seconds, summed over the phase's calls in that trial
def timed(module, name, label):
    inner = getattr(module, name)
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            phases[-1][label] = phases[-1].get(label, 0.0) + time.perf_counter() - t
    setattr(module, name, wrapper)
timed(trial_module, "build_trial", "build data, model, optimiser")
timed(trial_module, "write_trial_artifacts", "final evaluation and artifacts (all)")
timed(artifacts, "write_geometry_artifacts", "geometry summary, projection, scatter")
timed(artifacts, "umap_projection", "UMAP projection")
timed(artifacts, "geometry_summary", "geometry summary (metrics)")
timed(artifacts, "save_figure", "figures (5 png)")
imports = time.perf_counter() - T0
trials = []
for variant in SPACE.variants():
    cfg = TrialConfig.from_dict(merge(SPACE.base, nest(variant)))
    phases.append({{}})
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        trial_module.run_trial(cfg, NoSession(), Path(folder), verbose=False)
        history = json.loads((Path(folder) / "training_history.json").read_text())
    trials.append({{"total": time.perf_counter() - t, "epochs": sum(h["epoch_time"] for h in history)}})
print(json.dumps({{"imports": imports, "wall": time.perf_counter() - T0, "trials": trials, "phases": phases}}))
"""


def run(cmd: list[str], cwd: Path, env: dict | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def trial_times(study_dir: Path) -> list[dict]:
    """Each trial's epochs (sum of epoch_time) and its own total (last time_total_s of result.json)."""
    out = []
    for folder in sorted(p for p in study_dir.iterdir() if (p / "training_history.json").is_file()):
        history = json.loads((folder / "training_history.json").read_text())
        lines = [json.loads(line) for line in (folder / "result.json").read_text().splitlines() if line.strip()]
        epochs = sum(h["epoch_time"] for h in history)
        out.append({"epochs": epochs, "total": lines[-1]["time_total_s"]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", type=int, default=64, help="tiny trials in the sweep (default 64)")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="geotune-bench-") as tmp:
        work = Path(tmp)
        # 1. one trial: in-process with UMAP's compile cache cold (a fresh machine's first run) and warm,
        # and through Ray (--ray) with the cache warm
        singles = {}
        for label, extra, env in (
            ("cold compile cache", [], {"GEOTUNE_CACHE_DIR": str(work / "cold-cache")}),
            ("in-process", [], {}),
            ("--ray", ["--ray"], {}),
        ):
            out = work / f"train-{len(singles)}"
            wall = run([GEOTUNE, "train", str(REPO / "configs" / "digits.yaml"), str(out), *extra], work, env)
            epochs = sum(h["epoch_time"] for h in json.loads((out / "trial" / "training_history.json").read_text()))
            singles[label] = {"wall_s": round(wall, 1), "epochs_s": round(epochs, 2), "ratio": round(wall / epochs, 2)}
        # 2. the quickstart study, report included
        study = run([GEOTUNE, "run", "quickstart", "--storage", str(work), "--name", "quickstart"], work)
        quick = trial_times(work / "quickstart")
        quick_epochs = sum(t["epochs"] for t in quick)
        # 3. the sweep, through geotune and in a plain loop
        space_dir = work / "space"
        space_dir.mkdir()
        (space_dir / "space.py").write_text(textwrap.dedent(SWEEP_SPACE.format(n=args.sweep)))
        sweep = run(
            [GEOTUNE, "run", str(space_dir / "space.py"), "--storage", str(work), "--name", "sweep", "--no-report"],
            work,
        )
        sweep_trials = trial_times(work / "sweep")
        loop_code = LOOP.format(bench=str(Path(__file__).parent), space_dir=str(space_dir))
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", loop_code], cwd=work, capture_output=True, text=True)
        loop_wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"the plain loop failed:\n{done.stderr[-3000:]}")
        loop = json.loads(done.stdout.strip().splitlines()[-1])
    fixed = [t["total"] - t["epochs"] for t in quick + sweep_trials]
    loop_fixed = [t["total"] - t["epochs"] for t in loop["trials"]]
    result = {
        "benchmark": "fixed costs of short runs (issue 13)",
        "date": today(),
        "machine": machine(f"{cpus} CPUs used by studies"),
        "1_single_run": {**singles, "goal": "<= 2.0"},
        "2_quickstart": {
            "wall_s": round(study, 1),
            "epochs_s": round(quick_epochs, 2),
            "cpus": cpus,
            "ratio": round(study / (quick_epochs / cpus), 2),
            "goal": "<= 2.0",
        },
        "3_sweep": {
            "trials": args.sweep,
            "geotune_wall_s": round(sweep, 1),
            "loop_wall_s": round(loop_wall, 1),
            "geotune_per_min": round(args.sweep / sweep * 60, 1),
            "loop_per_min": round(args.sweep / loop_wall * 60, 1),
            "ratio": round(loop_wall / sweep, 2),
            "goal": ">= 0.8",
        },
        "4_per_trial_fixed_s": {
            "median_geotune": round(statistics.median(fixed), 2),
            "median_plain_loop": round(statistics.median(loop_fixed), 2),
            "goal": "<= 1.0",
            "loop_imports_s": round(loop["imports"], 1),
            "loop_phases_median_s": {
                k: round(statistics.median(trial.get(k, 0.0) for trial in loop["phases"]), 3) for k in loop["phases"][0]
            },
            "loop_first_trial_phases_s": {k: round(v, 2) for k, v in loop["phases"][0].items()},
        },
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
