"""Ray Tune experiments for geotune: one trial (``train``) or a whole search space (``run``)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from study.config import ConfigError, TrialConfig

TRIAL_FILES = ("metrics.json", "training_history.json", "config.yaml")


def experiment_location(out_dir: str | Path) -> tuple[str, str]:
    """(storage_path, name) such that Tune's experiment directory is exactly ``out_dir``."""
    path = Path(out_dir).expanduser().resolve()
    return str(path.parent), path.name


def refuse_existing_results(out_dir: str | Path, what: str = "OUT_DIR") -> None:
    """Never overwrite finished work: an experiment folder that already holds results is an error."""
    path = Path(out_dir).expanduser()
    if path.is_file():
        raise ConfigError(f"{what} '{path}' is a file, not a folder")
    if path.is_dir() and any(path.iterdir()):
        raise ConfigError(f"{what} '{path}' already holds results; choose a new folder "
                          "(or 'geotune resume' it if it is an interrupted study)")


@dataclass
class TrialOutcome:
    trial_dir: Path
    metrics: dict
    error: Optional[str]


def run_single_trial(cfg: TrialConfig, out_dir: str | Path, cpus: float, gpus: float,
                     verbose: int = 1) -> TrialOutcome:
    """Run one trial of ``cfg`` through Ray Tune; its directory is ``out_dir/trial``."""
    from ray import tune

    from trainables.trainable import train_trial

    storage, name = experiment_location(out_dir)
    tuner = tune.Tuner(
        tune.with_resources(train_trial, {"cpu": cpus, "gpu": gpus}),
        param_space=cfg.to_dict(),
        tune_config=tune.TuneConfig(num_samples=1, trial_dirname_creator=lambda trial: "trial"),
        run_config=tune.RunConfig(storage_path=storage, name=name, verbose=verbose,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )
    result = tuner.fit()[0]
    trial_dir = Path(result.path)
    metrics_file = trial_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else dict(result.metrics or {})
    return TrialOutcome(trial_dir, metrics, summarize_error(result.error) if result.error else None)


def summarize_error(error: BaseException) -> str:
    """The one line that says why a trial failed (the innermost exception, not Ray's wrapper)."""
    cause = error
    while getattr(cause, "cause", None) is not None:
        cause = cause.cause
    while cause.__cause__ is not None:
        cause = cause.__cause__
    text = str(cause).strip().splitlines()
    # Ray's task errors embed the remote traceback; its last line names the real exception.
    lines = [line for line in text if line.strip()]
    return lines[-1].strip() if lines else type(cause).__name__
