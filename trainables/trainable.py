"""The Ray Tune function trainable: one trial of geotune.

``tune_trial(config)`` receives the nested trial config from Tune, restores from
``tune.get_checkpoint()`` when Tune restarts or resumes the trial, reports once
per epoch with a checkpoint, and copies the finished trial's artifacts into the
trial's directory in the experiment storage (a local folder, a shared file
system or an object store alike).
"""

from __future__ import annotations

import io
import logging
import tempfile
from pathlib import Path

import pyarrow.fs
import ray
import torch
from ray import tune

from geotune.config import TrialConfig
from geotune.config_loading import trial_config_dict
from geotune.layout import CHECKPOINT_PREFIX, STATE_FILE
from geotune.trainables.trial import finalize_trial, run_stored_trial


class TuneSession:
    """TrialSession backed by Ray Tune's checkpoints and storage."""

    def restore(self) -> dict | None:
        state = None
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
        # Tune saves its own state every few seconds, so after an interruption it can name an older checkpoint
        # than the trial wrote (or none, for a trial it had not yet recorded): continue from the newest.
        newer = self._newest_own_state(after_epoch=state["epoch"] if state is not None else 0)
        return newer if newer is not None else state

    def _newest_own_state(self, after_epoch: int) -> dict | None:
        """The newest readable checkpoint in this trial's folder, if it is past ``after_epoch``."""
        storage = tune.get_context().get_storage()
        fs, base = storage.storage_filesystem, storage.trial_fs_path
        entries = fs.get_file_info(pyarrow.fs.FileSelector(base, allow_not_found=True))
        folders = sorted(
            (
                e.path
                for e in entries
                if e.type == pyarrow.fs.FileType.Directory and e.base_name.startswith(CHECKPOINT_PREFIX)
            ),
            reverse=True,
        )
        for folder in folders:
            try:
                with fs.open_input_stream(f"{folder}/{STATE_FILE}") as src:
                    state = torch.load(io.BytesIO(src.readall()), map_location="cpu", weights_only=True)
            except Exception:  # cut short by the interruption: try the one before
                continue
            return state if state["epoch"] > after_epoch else None
        return None

    def report(self, metrics: dict, state: dict | None) -> None:
        if state is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="geotune-ckpt-") as folder:
            torch.save(state, Path(folder) / STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    def persist(self, artifact_dir: Path) -> None:
        storage = tune.get_context().get_storage()
        copy_to_storage(artifact_dir, storage.trial_fs_path, storage.storage_filesystem)

    def read_artifact(self, name: str) -> str | None:
        """A file already in this trial's storage folder (from an earlier attempt), or None."""
        storage = tune.get_context().get_storage()
        path = f"{storage.trial_fs_path}/{name}"
        if storage.storage_filesystem.get_file_info(path).type != pyarrow.fs.FileType.File:
            return None
        with storage.storage_filesystem.open_input_stream(path) as src:
            return src.readall().decode()

    def write_artifact(self, name: str, text: str) -> None:
        with tempfile.TemporaryDirectory(prefix="geotune-marker-") as folder:
            (Path(folder) / name).write_text(text)
            self.persist(Path(folder))


def copy_to_storage(local_dir: Path, destination: str, filesystem) -> None:
    filesystem.create_dir(destination, recursive=True)  # a trial that never reported has no folder yet
    pyarrow.fs.copy_files(
        str(local_dir), destination, source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=filesystem
    )


def assigned_cpus() -> int:
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, int(round(cpus)))


def trial_config(config: dict, planned: dict | None, base: dict | None) -> TrialConfig:
    """The trial's validated config (its planned one, or an Optuna sample over the base), with torch threads set."""
    cfg = TrialConfig.from_dict(trial_config_dict(config, planned, base))
    # Threads follow the CPUs Ray reserved for this trial, so parallel trials share cores instead of fighting.
    torch.set_num_threads(cfg.train.num_threads or assigned_cpus())
    return cfg


def tune_trial(config: dict, planned: dict | None = None, base: dict | None = None, verbose: bool = True) -> None:
    """Ray Tune entry point: run one trial of ``config`` (a grid trial's label in ``planned``, an Optuna
    sample over a study's ``base``, or a whole config).

    Studies pass ``verbose=False``: their progress is Ray's table and one line per finished trial.
    """
    if not verbose:
        logging.getLogger("ray.train").setLevel(logging.WARNING)  # "Checkpoint successfully created" per epoch
    cfg = trial_config(config, planned, base)
    with tempfile.TemporaryDirectory(prefix="geotune-artifacts-") as folder:
        run_stored_trial(cfg, TuneSession(), Path(folder), verbose=verbose)


def tune_finalize_trial(
    config: dict,
    checkpoint: tune.Checkpoint,
    trial_path: str,
    filesystem,
    planned: dict | None = None,
    base: dict | None = None,
) -> str:
    """Write the artifacts of a trial the scheduler stopped, from its last checkpoint (run as a Ray task)."""
    cfg = trial_config(config, planned, base)
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
    with tempfile.TemporaryDirectory(prefix="geotune-artifacts-") as folder:
        finalize_trial(cfg, state, Path(folder))
        copy_to_storage(Path(folder), trial_path, filesystem)
    return trial_path
