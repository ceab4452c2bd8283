"""Kill a running study with SIGKILL, then `geotune resume` it."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import tiny_config

REPO = Path(__file__).parents[1]

GRID_SPACE = """
SPACE = StudySpec(name="killed_grid", question="q", base=BASE,
                  grid=[{"train.epochs": [2, 60, 3]}], seeds=[0], max_concurrent=2)
"""

OPTUNA_SPACE = """
def sample(trial):
    trial.suggest_float("regularizer.geodesic.lambda_reg", 1e-3, 1.0, log=True)

SPACE = StudySpec(name="killed_optuna", question="q", base={**BASE, "regularizer": {"name": "geodesic"}},
                  optuna=sample, num_samples=3, seeds=[0], max_concurrent=1)
"""


RESULT_FILES = ("metrics.json", "training_history.json", "model.pt", "latents.npz", "geometry_summary.json")


def trial_dirs(study: Path) -> list[Path]:
    return sorted(p for p in study.iterdir() if (p / "params.json").is_file())


def reported_epochs(trial: Path) -> list[int]:
    path = trial / "result.json"
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines()] if path.exists() else []


def run_until_interruptible(cmd: list[str], study: Path, log: Path, timeout: float = 240) -> None:
    """Start the study in its own process group; SIGKILL it once one trial finished and another is mid-way."""
    proc = subprocess.Popen(cmd, cwd=str(REPO), stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            assert proc.poll() is None, f"the study ended before it could be interrupted:\n{log.read_text()[-3000:]}"
            trials = trial_dirs(study) if study.is_dir() else []
            finished = [t for t in trials if (t / "metrics.json").is_file()]
            midway = [t for t in trials if not (t / "metrics.json").is_file() and len(reported_epochs(t)) >= 3
                      and list(t.glob("checkpoint_*"))]
            if finished and midway:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"no moment with a finished and a mid-way trial:\n{log.read_text()[-3000:]}")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started, nothing else
        proc.wait(timeout=60)
    time.sleep(3)  # Ray workers notice their raylet is gone and exit; let their last writes land


@pytest.mark.parametrize("kind", ["grid", "optuna"])
def test_sigkill_then_resume(tmp_path, kind):
    space = tmp_path / "space.py"
    space.write_text("from search_spaces.spec import StudySpec\n"
                     f"BASE = {tiny_config(train={'epochs': 30, 'patience': 0})!r}\n"
                     + textwrap.dedent(GRID_SPACE if kind == "grid" else OPTUNA_SPACE))
    study = tmp_path / "runs" / "s"
    run_until_interruptible([sys.executable, "-m", "study", "run", str(space), "--storage", str(tmp_path / "runs"),
                             "--name", "s"], study, tmp_path / "run.log")
    before = {t.name: t for t in trial_dirs(study)}
    finished = {name: {f: (t / f).read_bytes() for f in RESULT_FILES}
                for name, t in before.items() if (t / "metrics.json").is_file()}
    interrupted = {name: reported_epochs(t) for name, t in before.items() if name not in finished}
    assert finished and interrupted, (sorted(finished), interrupted)

    proc = subprocess.run([sys.executable, "-m", "study", "resume", str(study)], cwd=str(REPO),
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    after = trial_dirs(study)
    assert len(after) == 3, "the planned number of trials, no more"
    for trial in after:
        assert (trial / "metrics.json").is_file(), trial.name
    for name, files in finished.items():  # finished trials were not rerun: their results are byte for byte the same
        for file, content in files.items():
            assert (study / name / file).read_bytes() == content, (name, file)
    for name, epochs_before in interrupted.items():  # interrupted trials continued where they were
        epochs = reported_epochs(study / name)
        assert epochs.count(1) == 1, f"{name} restarted from scratch: {epochs}"
        assert epochs[:len(epochs_before)] == epochs_before
        # Tune resumes from the last checkpoint its saved state knows, at most a couple of epochs back;
        # those epochs are trained again (identically) and appear twice in Ray's own log.
        assert len(epochs) - len(set(epochs)) <= 3, epochs
        history = json.loads((study / name / "training_history.json").read_text())
        assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
        assert len(history) == max(epochs)
    if kind == "optuna":
        import optuna

        stored = optuna.load_study(study_name="killed_optuna", storage=f"sqlite:///{study / 'optuna.db'}")
        complete = [t for t in stored.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(complete) == 3, [t.state for t in stored.trials]
