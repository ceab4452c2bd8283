"""The Ray Tune function trainable: one trial of geotune.

``train_trial(config)`` receives the nested trial config from Tune, restores from
``tune.get_checkpoint()`` when Tune restarts or resumes the trial, reports once
per epoch with a checkpoint, and copies the finished trial's artifacts into the
trial's directory in the experiment storage (a local folder, a shared file
system or an object store alike).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import torch
from ray import tune

from study.config import TrialConfig
from trainables.trial import run_trial

STATE_FILE = "state.pt"


class TuneSession:
    """TrialSession backed by Ray Tune's checkpoints and storage."""

    def restore(self) -> Optional[dict]:
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as folder:
            return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)

    def report(self, metrics: dict, state: Optional[dict]) -> None:
        if state is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="geotune-ckpt-") as folder:
            torch.save(state, Path(folder) / STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    def persist(self, artifact_dir: Path) -> None:
        import pyarrow.fs

        storage = tune.get_context().get_storage()
        pyarrow.fs.copy_files(str(artifact_dir), storage.trial_fs_path,
                              source_filesystem=pyarrow.fs.LocalFileSystem(),
                              destination_filesystem=storage.storage_filesystem)


def assigned_cpus() -> int:
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, int(round(cpus)))


def train_trial(config: dict) -> None:
    """Ray Tune entry point: build everything from ``config`` and run one trial."""
    cfg = TrialConfig.from_dict(config)
    # Threads follow the CPUs Ray reserved for this trial, so parallel trials share cores instead of fighting.
    torch.set_num_threads(cfg.train.num_threads or assigned_cpus())
    with tempfile.TemporaryDirectory(prefix="geotune-artifacts-") as folder:
        run_trial(cfg, TuneSession(), Path(folder))
