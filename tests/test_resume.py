"""Kill a running study with SIGKILL, then `geotune resume` it."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import gated_config, tiny_config

REPO = Path(__file__).parents[1]

# The final geometry on the validation split (27 images per class, no resolution probe) takes a fraction of a
# second; on the training split (the default) it takes seconds, in which a second trial can run all its epochs
# and leave no moment when one trial has finished and another is mid-way.
QUICK_FINISH = {"save_umap": False, "geometry_split": "val"}


def gated_base(folder: Path, epochs: int, first_free: bool = False) -> tuple[dict, Path]:
    """A study's base config whose trials are slow (about 1.7 s an epoch) until the test removes the gate: a
    trial is still mid-way seconds after Ray's log shows it so (that log lags the training by several epochs),
    and the resume trains the rest at full speed. ``first_free``: but for the first trial to train."""
    return gated_config(folder, first_free=first_free, train={"epochs": epochs, "patience": 0}, logging=QUICK_FINISH)


# one trial at a time: a program's study starts one trial worker (6-7 CPU-s of imports each), and its first trial
# (epochs 2, ungated: first_free) finishes before the second is interrupted mid-way
GRID_SPACE = """
SPACE = SearchSpace(name="killed_grid", question="q", base=BASE,
                  grid=[{"train.epochs": [2, 12, 3]}], seeds=[0], max_concurrent=1)
"""

OPTUNA_SPACE = """
def sample(trial):
    trial.suggest_float("regularizer.geodesic.lambda_reg", 1e-3, 1.0, log=True)

SPACE = SearchSpace(name="killed_optuna", question="q", base={**BASE, "regularizer": {"name": "geodesic"}},
                  optuna=sample, num_samples=3, seeds=[0], max_concurrent=1)
"""


RESULT_FILES = ("metrics.json", "training_history.json", "model.pt", "latents.npz", "geometry_summary.json")


def trial_dirs(study: Path) -> list[Path]:
    """Trial folders, also before Ray's periodic sync has copied their params.json."""
    try:  # the folder can vanish for a moment: the driver's writability probe creates and removes it
        entries = list(study.iterdir())
    except FileNotFoundError:
        return []
    return sorted(p for p in entries if p.is_dir() and not p.name.startswith(".") and p.name != "report")


def checkpointed_history(trial: Path) -> list[dict]:
    """The training history in the trial's newest readable checkpoint (what a resume must continue)."""
    import torch

    for folder in sorted(trial.glob("checkpoint_*"), reverse=True):
        try:
            state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
        except Exception:
            continue
        return json.loads(json.dumps(state["history"]))  # the same float formatting as training_history.json
    return []


def reported_epochs(trial: Path) -> list[int]:
    path = trial / "result.json"
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines()] if path.exists() else []


def study_command(space: Path, folder: Path, address: str | None = None) -> list[str]:
    """`geotune run SPACE` as a program, its study at FOLDER/runs/s; ``address``: joining that running Ray."""
    cmd = [sys.executable, "-m", "geotune", "run", str(space), "--storage", str(folder / "runs"), "--name", "s"]
    return cmd + (["--address", address] if address else [])


def run_until_interruptible(cmd: list[str], study: Path, log: Path, timeout: float = 240) -> None:
    """Start the study in its own process group; SIGKILL it once one trial finished and another is mid-way."""
    proc = subprocess.Popen(cmd, cwd=str(REPO), stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_finished_and_midway(proc, study, log, timeout)
    finally:
        kill_session(proc.pid)
        proc.wait(timeout=60)


def wait_for_finished_and_midway(proc: subprocess.Popen, study: Path, log: Path, timeout: float) -> None:
    """Until one trial of the study has finished and another is mid-way."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"the study ended before it could be interrupted:\n{log.read_text()[-3000:]}"
        trials = trial_dirs(study)
        finished = [t for t in trials if (t / "metrics.json").is_file()]
        # Mid-way as Ray's saved state knows it: its log, copied with that state, shows epochs.
        midway = [t for t in trials if not (t / "metrics.json").is_file() and len(reported_epochs(t)) >= 3]
        if finished and midway:
            return
        time.sleep(0.2)
    pytest.fail(f"no moment with a finished and a mid-way trial:\n{log.read_text()[-3000:]}")


def kill_session(sid: int) -> None:
    """SIGKILL every process of the study's session: the driver, the Ray it started and its workers (a study that
    joined a running Ray: its driver; Ray then stops the trials the driver owned).

    Ray workers get their own process group, but stay in the session the test created for the study.
    """
    out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, session = map(int, line.split())
        if session == sid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.time() + 30
    while time.time() < deadline:  # until none of them is left running
        out = subprocess.run(["ps", "-eo", "sid=,stat="], capture_output=True, text=True).stdout
        if not any(int(s) == sid and not st.startswith("Z") for s, st in (line.split() for line in out.splitlines())):
            return
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["grid", "optuna"])
def test_sigkill_then_resume(tmp_path, kind, ray_session, cli):
    """A study killed with SIGKILL resumes: finished trials are not rerun (their files byte for byte the
    same), interrupted ones continue from their checkpoints, the plan's trials all finish. The grid study is
    resumed from a copy in another folder, as from a backup: it must finish there and leave the original
    exactly as it was (Tune restores callbacks and its search algorithm with the first folder's paths). The grid
    study starts its own Ray, which dies with it (a laptop's study); the Optuna study joins a running one
    (--address, the session's: a cluster's study), where only its driver dies."""
    space = tmp_path / "space.py"
    # Optuna's three trials run one at a time: 12 gated epochs leave the second mid-way for about 15 s after Ray's
    # log shows its third epoch (that log lags by seconds: at 15 ungated epochs of 0.27 s the second trial once
    # finished before the kill landed); the first, which must finish before the kill, trains ungated (its 12
    # gated epochs were 20 s of sleep)
    base, gate = gated_base(tmp_path, epochs=12, first_free=True)
    # the grid's third trial has not started when the study is killed, so the resume starts it
    space.write_text(
        "from geotune.search_spaces.space import SearchSpace\n"
        f"BASE = {base!r}\n" + textwrap.dedent(GRID_SPACE if kind == "grid" else OPTUNA_SPACE)
    )
    original = tmp_path / "runs" / "s"
    run_until_interruptible(
        study_command(space, tmp_path, ray_session.address if kind == "optuna" else None),
        original,
        tmp_path / "run.log",
    )
    study = original
    if kind == "grid":
        study = tmp_path / "elsewhere" / "s"
        shutil.copytree(original, study, symlinks=True)
        untouched = file_states(original)
    before = {t.name: t for t in trial_dirs(study)}
    finished = {
        name: {f: (t / f).read_bytes() for f in RESULT_FILES}
        for name, t in before.items()
        if (t / "metrics.json").is_file()
    }
    interrupted = {name: checkpointed_history(t) for name, t in before.items() if name not in finished}
    assert finished and any(len(h) >= 3 for h in interrupted.values()), (sorted(finished), interrupted)
    gate.unlink()  # the resume trains at full speed
    if kind == "grid":
        # The worst case of a kill during Ray's copy of its state into the study directory: empty files.
        for pattern in ("experiment_state-*.json", "basic-variant-state-*.json"):
            for path in study.glob(pattern):
                path.write_bytes(b"")

    # the killed study needed a process; its resume does not (nor do its assertions need the report's figures)
    proc = cli("resume", study, "--no-figures")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    if kind == "grid":
        assert "resuming from geotune's snapshot" in proc.stderr
        assert file_states(original) == untouched, "the original study was written to"
        assert str(original) not in (study / "report" / "REPORT.md").read_text()
    after = [t for t in trial_dirs(study) if (t / "params.json").is_file()]
    assert len(after) == 3, "the planned number of trials, no more"
    assert "report:" in proc.stdout and (study / "report" / "index.html").is_file()
    for trial in after:
        assert (trial / "metrics.json").is_file() and (trial / "params.json").is_file(), trial.name
    for name, files in finished.items():  # finished trials were not rerun: their results are byte for byte the same
        for file, content in files.items():
            assert (study / name / file).read_bytes() == content, (name, file)
    for name, history_before in interrupted.items():  # interrupted trials continued where they were
        history = json.loads((study / name / "training_history.json").read_text())
        planned = json.loads((study / name / "metrics.json").read_text())["epochs_run"]
        assert [h["epoch"] for h in history] == list(range(1, planned + 1))
        # Epoch times are wall-clock measurements: a restart from scratch would have measured them anew.
        assert history[: len(history_before)] == history_before, f"{name} did not continue from its checkpoint"
    if kind == "optuna":
        import optuna

        stored = optuna.load_study(study_name=study.name, storage=f"sqlite:///{study / 'optuna.db'}")
        complete = [t for t in stored.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(complete) == 3, [t.state for t in stored.trials]


def interrupt_with_ctrl_c(cmd: list[str], study: Path, log: Path, presses: int, timeout: float = 240) -> int:
    """Start the study; once a trial finished and another is mid-way, press Ctrl-C ``presses`` times
    (SIGINT to the study's process group, as a terminal does). Returns the exit code."""
    proc = subprocess.Popen(cmd, cwd=str(REPO), stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_finished_and_midway(proc, study, log, timeout)
        for _ in range(presses):
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.3)
        return proc.wait(timeout=120)
    finally:
        kill_session(proc.pid)  # whatever Ray left behind


@pytest.mark.slow
@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_then_resume_trains_every_trial_to_its_planned_epochs(tmp_path, presses, ray_session, cli):
    """One Ctrl-C lets Ray stop gracefully, two skip that; either way nothing is finalised at the interrupted
    epoch, the run exits 130 naming `geotune resume`, and the resume trains every trial to its plan. With one
    press the study has its own Ray; with two it has joined a running one (--address, the session's)."""
    space = tmp_path / "space.py"
    base, gate = gated_base(tmp_path, epochs=12, first_free=True)  # the grid sets the epochs: 2, 12 and 3
    space.write_text(
        f"from geotune.search_spaces.space import SearchSpace\nBASE = {base!r}\n" + textwrap.dedent(GRID_SPACE)
    )
    study = tmp_path / "runs" / "s"
    log = tmp_path / "run.log"
    code = interrupt_with_ctrl_c(
        study_command(space, tmp_path, ray_session.address if presses == 2 else None),
        study,
        log,
        presses,
    )
    text = log.read_text()
    assert code == 130, text[-3000:]
    assert f"geotune resume {study}" in text or "interrupted" in text, text[-3000:]
    unfinished = [t for t in trial_dirs(study) if not (t / "metrics.json").is_file()]
    assert unfinished, "the interrupted trial must not have been finalised at the interrupted epoch"
    assert not any((t / "stopped_by_scheduler.json").exists() for t in trial_dirs(study))

    gate.unlink()
    proc = cli("resume", study, "--no-figures")  # the killed study needed a process; its resume does not
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    after = [t for t in trial_dirs(study) if (t / "params.json").is_file()]
    assert len(after) == 3
    for trial in after:
        metrics = json.loads((trial / "metrics.json").read_text())
        planned = json.loads((trial / "params.json").read_text())
        epochs = {"2": 2, "12": 12, "3": 3}[trial.name.split("epochs=")[1].split(",")[0]]
        assert metrics["epochs_run"] == epochs and metrics["stop_reason"] == "completed all epochs", (
            trial.name,
            metrics["epochs_run"],
            metrics["stop_reason"],
            planned,
        )
    assert "stopped by ASHA" not in (study / "report" / "REPORT.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("how", [[], ["--ray"]], ids=["in-process", "ray"])
def test_ctrl_c_on_geotune_train_exits_130_and_resumes(tmp_path, how, ray_session, cli):
    """Started from a user's project folder with its own analysis/, study/, trainables/ and search_spaces/
    packages: Ray workers get the driver's working directory on sys.path, so with generic top-level names the
    user's packages would be imported by the trial (and the trial would fail)."""
    from test_architecture import plant_generic_packages

    project = tmp_path / "project"
    project.mkdir()
    plant_generic_packages(project)
    config = tmp_path / "c.yaml"
    import yaml

    base, gate = gated_base(tmp_path, epochs=10)  # the Ctrl-C after epoch 3 lands mid-training (12 s before the end)
    config.write_text(yaml.safe_dump(base))
    out = tmp_path / "out"
    log = tmp_path / "train.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "geotune", "train", str(config), str(out), "--cpus-per-trial", "1", *how],
        cwd=str(project),
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 240
        while len(reported_epochs(out / "trial")) < 3:
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) == 130, log.read_text()[-3000:]
    finally:
        kill_session(proc.pid)
    assert f"geotune resume {out}" in log.read_text()
    assert not (out / "trial" / "metrics.json").exists()
    gate.unlink()
    done = cli("resume", out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "resuming from the checkpoint of epoch" in done.stdout + done.stderr
    assert json.loads((out / "trial" / "metrics.json").read_text())["epochs_run"] == 10


def file_states(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under a folder with its size and modification time (what any write would change)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


@pytest.mark.slow
def test_ctrl_c_while_every_trial_waits_exits_130_and_resume_trains_them(tmp_path, ray_session, cli):
    """Ctrl-C while every trial is still pending: Tune marks them TERMINATED as if finished; geotune's own record
    (no metrics.json, no end seen) tells them apart: exit 130 with the resume line, and the resume trains all."""
    import re

    space = tmp_path / "space.py"
    space.write_text(
        "from geotune.search_spaces.space import SearchSpace\n"
        f"BASE = {tiny_config(train={'epochs': 1}, logging=QUICK_FINISH)!r}\n"
        + textwrap.dedent(GRID_SPACE).replace("[2, 12, 3]", "[1, 2, 3]")
    )
    study, log = tmp_path / "runs" / "s", tmp_path / "run.log"
    cmd = study_command(space, tmp_path)
    proc = subprocess.Popen(cmd, cwd=str(REPO), stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not re.search(r", 0 running, \d+ pending", log.read_text()) and time.time() < deadline:
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=120)
    finally:
        kill_session(proc.pid)
    text = log.read_text()
    assert code == 130 and f"continue them with: geotune resume {study}" in text, text[-3000:]
    assert not list(study.glob("*/metrics.json"))
    proc = cli("resume", study, "--no-report")  # the report after a resume: the tests above
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(list(study.glob("*/metrics.json"))) == 3


def test_ctrl_c_outside_tune_names_the_way_on(tmp_path, capsys):
    """Ctrl-C while Ray starts, or while the finished study is finalised and reported: exit 130, with the
    resume line where Tune saved the study's state, else that nothing had started."""
    from geotune.study.run import interrupted_outside_tune

    assert interrupted_outside_tune(str(tmp_path)) == 130
    assert "no trial had started, so nothing is lost: run the same command again" in capsys.readouterr().err
    (tmp_path / "tuner.pkl").write_bytes(b"")  # what Tune saves first
    assert interrupted_outside_tune(str(tmp_path)) == 130
    assert f"geotune: interrupted; continue it with: geotune resume {tmp_path}" in capsys.readouterr().err
