"""Benchmark 4: four quickstart-sized trials through `geotune run` against a plain sequential loop.

The quickstart's four arms (regularizer none / geodesic flat / geometry / geodesic
fixed since 2026-11-23, none / geodesic / geometry / combined before; seed 0,
digits at 16 px, simple_cnn, 8 epochs) run (a) as a study, `geotune run`
on this 2-CPU machine (1 CPU and so 1 torch thread per trial, 2 trials at a time,
workers reused), and (b) one after another in a plain Python loop calling the same
trial function with torch's default threads. Both are timed as whole commands,
from process start to exit (imports, Ray start-up and shutdown included). UMAP is
off on both sides (its numba compilation is a one-off cost per process that
would otherwise dominate such short trials). Target (issue 6): (b) / (a) >= 1.6.
Also measured: the same with longer trials (40 epochs); one trial's time with 1
and 2 torch threads, and with 1 thread while a second such trial runs beside it
in another plain process (so the best gain two 1-thread trials at once can give
over one 2-thread trial at a time, without Ray); each trial's own time inside its
Ray worker; and where the study's time goes (cumulative seconds at the end of
imports, planning, ray.init, Tuner.fit, shutdown).

    python benchmarks/study_parallelism.py [--repeats 2] [--epochs 8 40] [--json out.json]
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

SPACE = """
from geotune.search_spaces.quickstart import SPACE as QUICKSTART
from geotune.search_spaces.space import SearchSpace
from geotune.config_loading import merge

SPACE = SearchSpace(name="parallelism", question="benchmark",
                  base=merge(QUICKSTART.base, {{"logging": {{"save_umap": False}}, "train": {{"epochs": {epochs}}}}}),
                  grid=QUICKSTART.grid, seeds=[0], cpus_per_trial=1, gpus_per_trial=0)
"""

BREAKDOWN = """
import time; T0 = time.perf_counter()
import json, sys
marks = {{}}
def mark(name):
    marks[name] = round(time.perf_counter() - T0, 2)
sys.path.insert(0, {space_dir!r})
from space import SPACE
from geotune.study.cluster import ensure_ray, shutdown_if_started
from geotune.study.plan import RunOptions, make_plan
from geotune.study.run import run_study
mark("imports")
plan = make_plan(SPACE, {{}}, RunOptions(storage={storage!r}, name="breakdown"))
mark("plan and config checks")
info = ensure_ray()
mark("ray.init")

# CPU seconds of every process of this study (this driver, Ray's own processes, the trial workers),
# sampled twice a second so that workers which exit before the end are counted too.
import threading, psutil
seen, done = {{}}, threading.Event()
def kind(proc):
    name = " ".join(proc.cmdline()[:2]) or proc.name()
    if proc.pid == me.pid:
        return "driver (Tune loop, reporting, state saves)"
    if "ImplicitFunc" in name or "trainable" in name.lower() or "default_worker" in name:
        return "trial workers (training)"
    return "Ray's own processes (gcs, raylet, log monitor, ...)"
def sample():
    while not done.wait(0.5):
        for proc in [me, *me.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                seen[proc.pid] = (kind(proc), t.user + t.system)
            except psutil.Error:
                pass
me = psutil.Process()
before = {{p.pid: sum(p.cpu_times()[:2]) for p in [me, *me.children(recursive=True)]}}
sampler = threading.Thread(target=sample, daemon=True); sampler.start()
results = run_study(plan, SPACE)
mark("Tuner.fit (4 trials, 2 at a time)")
done.set(); sampler.join()
cpu = {{}}
for pid, (name, seconds) in seen.items():
    cpu[name] = round(cpu.get(name, 0.0) + seconds - before.get(pid, 0.0), 2)
shutdown_if_started(info)
mark("ray.shutdown")
print(json.dumps({{"timeline": marks, "cpu_seconds_during_fit": cpu}}))
"""

# Runs trials as plain Python, outside Ray: the start of both scripts below.
TRIALS_PRELUDE = """
import json, sys, tempfile, time
from pathlib import Path
sys.path[:0] = [{space_dir!r}, {bench_dir!r}]
from space import SPACE
from common import NoSession
from geotune.search_spaces.space import planned_configs
from geotune.study.plan import absolute_paths
from geotune.trainables.trial import run_trial
configs = planned_configs(SPACE, absolute_paths(SPACE.base))
"""

# One trial, warm, with the torch threads given on the command line: prints its seconds.
# With a second argument "sync" it says "ready" after warming up and waits for a line on stdin,
# so that trials run side by side start their timed runs together.
THREADS = (
    TRIALS_PRELUDE
    + """
import torch
torch.set_num_threads(int(sys.argv[1]))
with tempfile.TemporaryDirectory() as folder:  # warm-up, as a reused worker is after its first trial
    run_trial(configs[0], NoSession(), Path(folder), verbose=False)
if sys.argv[2:] == ["sync"]:
    print("ready", flush=True)
    sys.stdin.readline()
with tempfile.TemporaryDirectory() as folder:
    start = time.perf_counter()
    run_trial(configs[0], NoSession(), Path(folder), verbose=False)
print(json.dumps(time.perf_counter() - start))
"""
)

# The study's trials one after another, torch's default threads.
LOOP = (
    TRIALS_PRELUDE
    + """
for cfg in configs:
    with tempfile.TemporaryDirectory() as folder:
        run_trial(cfg, NoSession(), Path(folder), verbose=False)
"""
)


def threads_env(env: dict, threads: int) -> dict:
    """OpenMP/BLAS threads as Ray gives a worker of ``threads`` CPUs (numpy, scipy and scikit-learn use them)."""
    return {**env, "OMP_NUM_THREADS": str(threads)}


def trials_code(template: str, work: Path) -> str:
    return template.format(space_dir=str(work), bench_dir=str(Path(__file__).resolve().parent))


def child_json(code: str, env: dict, *argv: str):
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *argv],
        cwd=str(REPO),
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def concurrent_json(code: str, env: dict, copies: int, *argv: str) -> list:
    """Run ``copies`` children side by side (as a study's trials run), their timed parts started together."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), *argv, "sync"],
            cwd=str(REPO),
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(copies)
    ]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    return [json.loads(proc.communicate()[0].strip().splitlines()[-1]) for proc in procs]


def trial_seconds_in_ray(study_dir: Path) -> list[float]:
    """Each trial's own running time inside its Ray worker (Tune's time_total_s of its last result)."""
    times = []
    for result in sorted(study_dir.glob("*/result.json")):
        lines = result.read_text().strip().splitlines()
        times.append(round(json.loads(lines[-1])["time_total_s"], 2))
    return times


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=str(REPO), env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--epochs", type=int, nargs="+", default=[8, 40], help="trial lengths to measure (8 = the quickstart's)"
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    from geotune.study.cluster import WORKER_MALLOC_ENV

    env = {**os.environ, **WORKER_MALLOC_ENV}  # both sides with the malloc settings of geotune's workers
    result = {
        "benchmark": "study_parallelism",
        "trials": 4,
        "cpus": os.cpu_count(),
        "target_speedup": 1.6,
        "by_epochs": {},
        "machine": machine(),
        "date": today(),
    }
    for epochs in args.epochs:
        work = Path(tempfile.mkdtemp(prefix="geotune-parallelism-"))
        (work / "space.py").write_text(textwrap.dedent(SPACE.format(epochs=epochs)))
        (work / "loop.py").write_text(trials_code(LOOP, work))
        study_times, loop_times = [], []
        for r in range(args.repeats):  # interleaved
            study_times.append(
                timed(
                    [
                        sys.executable,
                        "-m",
                        "geotune",
                        "run",
                        str(work / "space.py"),
                        "--storage",
                        str(work / "runs"),
                        "--name",
                        f"s{r}",
                        "--no-report",
                    ],
                    env,
                )
            )
            loop_times.append(timed([sys.executable, str(work / "loop.py")], env))
        row = {
            "study_seconds": statistics.median(study_times),
            "loop_seconds": statistics.median(loop_times),
            "speedup": statistics.median(loop_times) / statistics.median(study_times),
            "runs": {"study": study_times, "loop": loop_times},
            "one_trial_seconds": {
                f"{t} thread{'s' if t > 1 else ''}": child_json(trials_code(THREADS, work), threads_env(env, t), str(t))
                for t in (1, 2)
            },
        }
        profile = child_json(BREAKDOWN.format(space_dir=str(work), storage=str(work / "runs")), env)
        row["study_timeline_cumulative_seconds"] = profile["timeline"]
        row["cpu_seconds_during_fit"] = profile["cpu_seconds_during_fit"]
        row["trial_seconds_inside_ray"] = trial_seconds_in_ray(work / "runs" / "s0")
        # Two 1-thread trials at once in plain processes, no Ray: what the two cores give when shared.
        row["one_trial_seconds"]["1 thread, two at once"] = statistics.mean(
            concurrent_json(trials_code(THREADS, work), threads_env(env, 1), 2, "1")
        )
        one = row["one_trial_seconds"]
        row["ideal_speedup_two_one_thread_trials"] = 2 * one["2 threads"] / one["1 thread"]
        row["ideal_speedup_measured_two_at_once"] = 2 * one["2 threads"] / one["1 thread, two at once"]
        result["by_epochs"][str(epochs)] = row
        print(epochs, "epochs:", json.dumps(row), flush=True)
    emit(result, args.json)


if __name__ == "__main__":
    main()
