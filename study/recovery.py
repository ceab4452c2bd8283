"""Keep a study resumable when it is killed at any instant.

Two gaps in Ray Tune 2.60's bookkeeping show up when a study is killed with
SIGKILL (both reproduced by tests/test_resume.py before this module existed):

1. Ray writes its state files atomically in a local staging folder, then copies
   them into the study directory; the copy is not atomic, and a kill during it
   leaves empty state files there, from which Ray resumes the wrong study.
2. With ``CheckpointConfig(num_to_keep)``, Ray deletes old checkpoints at once
   but persists the state that stops naming them a moment later; a kill in
   between leaves a state naming a deleted checkpoint, and the trial fails with
   "Could not recover from checkpoint".

So for local study directories geotune keeps, next to Ray's files, its own
snapshot of the staging state, taken in the driver right after each save of
Ray's and swapped in atomically; checkpoint retention is done here, deleting
only checkpoints older than the ones that durable snapshot names; and
``geotune resume`` installs the snapshot before Ray reads the state.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from ray import tune

from geotune.errors import ConfigError
from geotune.layout import CHECKPOINT_PREFIX, SNAPSHOT_DIR

STATE_PATTERNS = (
    "experiment_state-*.json",
    "basic-variant-state-*.json",
    "search_gen_state-*.json",
    "searcher-state-*.pkl",
)


def _newest(folder: Path) -> list[Path]:
    """The newest file of each state kind, as Ray picks them (largest name = newest session)."""
    out = []
    for pattern in STATE_PATTERNS:
        matches = sorted(folder.glob(pattern))
        if matches:
            out.append(matches[-1])
    return out


def readable(path: Path) -> bool:
    """JSON that parses, or a pickle that is complete (ends with the STOP opcode); no unpickling needed."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if not data:
        return False
    if path.name.startswith("experiment_state"):
        try:
            json.loads(data)
            return True
        except ValueError:
            return False
    return data.endswith(b".")


def snapshot(staging: Path, study_dir: Path) -> bool:
    """Copy the newest state files from Ray's staging folder into STUDY_DIR/.geotune/ray_state, atomically."""
    files = [p for p in _newest(staging) if readable(p)]
    if not files:
        return False
    target = study_dir / SNAPSHOT_DIR
    fresh, old = target.with_name(target.name + ".tmp"), target.with_name(target.name + ".old")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    for path in files:
        shutil.copy2(path, fresh / path.name)
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.rename(target, old)
    os.rename(fresh, target)  # a kill between the two renames leaves .old, which install_snapshot falls back to
    shutil.rmtree(old, ignore_errors=True)
    return True


def checkpoint_index(path: Path) -> int:
    try:
        return int(path.name.rsplit("_", 1)[-1])
    except ValueError:
        return -1


def prune_checkpoints(trial_dir: Path, keep_from: int) -> None:
    """Delete the trial's checkpoint folders numbered below ``keep_from``."""
    for folder in trial_dir.glob(f"{CHECKPOINT_PREFIX}*"):
        if folder.is_dir() and 0 <= checkpoint_index(folder) < keep_from:
            shutil.rmtree(folder, ignore_errors=True)


class StateKeeper(tune.Callback):
    """After each save of Ray's state: snapshot it, then delete checkpoints that snapshot no longer names."""

    def __init__(self, study_dir: str):
        self.study_dir = study_dir
        self.seen: dict[str, float] = {}

    def on_step_end(self, iteration, trials, **info):
        if not trials or "://" in self.study_dir:
            return
        staging = Path(trials[0].storage.experiment_driver_staging_path)
        state = {p.name: p.stat().st_mtime for p in _newest(staging)} if staging.is_dir() else {}
        if not state or state == self.seen:
            return
        # The state just saved names each trial's latest checkpoint: nothing is processed between the
        # save and this callback, so trial.checkpoint is what the snapshot refers to.
        named = {t.path: t.checkpoint.path for t in trials if t.checkpoint is not None and t.path}
        if snapshot(staging, Path(self.study_dir)):
            self.seen = state
            for trial_path, checkpoint_path in named.items():
                prune_checkpoints(Path(trial_path), checkpoint_index(Path(checkpoint_path)))

    def on_experiment_end(self, trials, **info):
        self.on_step_end(0, trials)


def install_snapshot(study_dir: str) -> str | None:
    """Put geotune's snapshot in place of Ray's state files; returns a notice when Ray's were damaged."""
    folder = Path(study_dir)
    damaged = [p for p in _newest(folder) if not readable(p)]
    snap = next(
        (
            s
            for s in (folder / SNAPSHOT_DIR, folder / (SNAPSHOT_DIR + ".old"))
            if s.is_dir() and _newest(s) and all(readable(p) for p in _newest(s))
        ),
        None,
    )
    if snap is None:
        if damaged:
            raise ConfigError(
                f"cannot resume '{study_dir}': Ray's state files "
                f"({', '.join(p.name for p in damaged)}) were cut short by the interruption and "
                "there is no readable geotune snapshot of them; run the study again"
            )
        return None
    aside = folder / ".geotune" / f"replaced-{time.strftime('%Y%m%d-%H%M%S')}"
    aside.mkdir(parents=True, exist_ok=True)
    names = {p.name for p in _newest(snap)}
    for path in _newest(folder):  # the whole newest set: a mix of old and new files would be inconsistent
        if path.name in names or not readable(path):
            os.replace(path, aside / path.name)
    for path in _newest(snap):
        shutil.copy2(path, folder / path.name)
    if damaged:
        taken = time.strftime("%H:%M:%S", time.localtime(max(p.stat().st_mtime for p in _newest(snap))))
        return (
            f"Ray's state files ({', '.join(p.name for p in damaged)}) were cut short by the interruption; "
            f"resuming from geotune's snapshot of {taken} (the damaged files are in {aside})"
        )
    return None
