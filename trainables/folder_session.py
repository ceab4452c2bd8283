"""A trial session that checkpoints into the trial's own folder: the one trial of `geotune train`, without Ray.

A single trial gains nothing from a scheduler, and starting Ray (about 3 s), a
worker process and its imports cost more than a short trial's training
(BENCHMARKS.md section 7). This session runs the same ``run_trial`` in the calling
process and writes what Ray Tune would have written into the trial folder:
``params.json``, one ``result.json`` line and one ``progress.csv`` row per report
(with Tune's bookkeeping keys: ``training_iteration``, ``time_total_s``, ...),
TensorBoard scalars under ``ray/tune/``, and the newest checkpoint as
``checkpoint_NNNNNN/state.pt``. So analysis, ``geotune resume`` and TensorBoard
read the folder the same way whichever way the trial ran (``geotune train --ray``).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import torch

from geotune.layout import (
    CHECKPOINT_PREFIX,
    PARAMS_FILE,
    PROGRESS_FILE,
    RESULT_FILE,
    STATE_FILE,
    clean_json,
    write_json,
)


class FolderSession:
    """TrialSession over a local trial folder: reports append to result.json, checkpoints replace the last one."""

    def __init__(self, trial_dir: Path, config: dict):
        self.trial_dir = Path(trial_dir)
        self.trial_dir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.started = time.time()
        self.last_report = self.started
        self.elapsed_before = 0.0  # a resumed trial's time_total_s continues from its checkpoint
        self.iteration = 0
        self.iterations_since_restore = 0
        self._progress_fields: list[str] | None = None  # progress.csv's header, read once
        self._events: Any = None  # tensorboardX's writer once created; False without tensorboardX
        # Set by the Ctrl-C handler of `geotune train` (study.train_local.stop_on_ctrl_c): the next report stops
        # the trial even where the KeyboardInterrupt itself was swallowed by whatever code it landed in.
        self.interrupt_requested = False
        write_json(self.trial_dir / PARAMS_FILE, config)

    # --- TrialSession
    def restore(self) -> dict | None:
        """The newest readable checkpoint of this folder (one cut short by an interruption is skipped)."""
        for folder in sorted(self.trial_dir.glob(f"{CHECKPOINT_PREFIX}*"), reverse=True):
            try:
                state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
            except Exception:
                continue
            self.iteration = int(folder.name.removeprefix(CHECKPOINT_PREFIX)) + 1
            self.elapsed_before = float(state.get("elapsed", 0.0))
            return state
        return None

    def report(self, metrics: dict, state: dict | None) -> None:
        now = time.time()
        self.iteration += 1
        self.iterations_since_restore += 1
        checkpoint = None
        if state is not None:
            checkpoint = f"{CHECKPOINT_PREFIX}{self.iteration - 1:06d}"
            self._save_checkpoint(checkpoint, state)
        since_restore = now - self.started
        row = {
            **metrics,
            "timestamp": int(now),
            "checkpoint_dir_name": checkpoint,
            "done": False,
            "training_iteration": self.iteration,
            "trial_id": "train",
            "date": time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(now)),
            "time_this_iter_s": now - self.last_report,
            "time_total_s": self.elapsed_before + since_restore,
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "time_since_restore": since_restore,
            "iterations_since_restore": self.iterations_since_restore,
        }
        self.last_report = now
        with open(self.trial_dir / RESULT_FILE, "a") as fh:
            fh.write(json.dumps(clean_json({**row, "config": self.config})) + "\n")
        self._append_progress(row)
        self._write_events(row)
        if self.interrupt_requested:  # this epoch is saved: stop here
            raise KeyboardInterrupt

    def persist(self, artifact_dir: Path) -> None:
        if Path(artifact_dir).resolve() != self.trial_dir.resolve():
            shutil.copytree(artifact_dir, self.trial_dir, dirs_exist_ok=True)

    def read_artifact(self, name: str) -> str | None:
        path = self.trial_dir / name
        return path.read_text() if path.is_file() else None

    def write_artifact(self, name: str, text: str) -> None:
        (self.trial_dir / name).write_text(text)

    def close(self) -> None:
        if self._events is not None:
            self._events.close()

    # --- the files Tune would write
    def _save_checkpoint(self, name: str, state: dict) -> None:
        """Write the new checkpoint completely, then drop the older ones (Tune's num_to_keep=1)."""
        partial = self.trial_dir / f".{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        torch.save(state, partial / STATE_FILE)
        partial.rename(self.trial_dir / name)  # atomic: an interruption leaves the old checkpoint or the new one
        for old in self.trial_dir.glob(f"{CHECKPOINT_PREFIX}*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def _append_progress(self, row: dict) -> None:
        path = self.trial_dir / PROGRESS_FILE
        scalars = {k: v for k, v in row.items() if not isinstance(v, (dict, list))}
        if self._progress_fields is None:  # a resumed trial keeps the columns its first report chose
            header = None
            if path.is_file():
                with open(path, newline="") as fh:
                    header = next(csv.reader(fh), None)
            self._progress_fields = header or list(scalars)
        with open(path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self._progress_fields, extrasaction="ignore")
            if fh.tell() == 0:
                writer.writeheader()
            writer.writerow(scalars)

    def _write_events(self, row: dict) -> None:
        if self._events is None:
            try:
                # deferred: tensorboardX comes with ray[tune]; without it the trial simply writes no events
                from tensorboardX import SummaryWriter
            except ImportError:
                self._events = False
                return
            self._events = SummaryWriter(str(self.trial_dir), flush_secs=30)
        if self._events is False:
            return
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "timestamp":
                self._events.add_scalar(f"ray/tune/{key}", value, global_step=row["training_iteration"])
        self._events.flush()
