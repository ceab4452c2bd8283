"""Experiment trackers beside Tune's own files: MLflow and Weights & Biases through Ray's logger callbacks.

``--logger mlflow[=URI]`` logs each trial as an MLflow run (its Tune config as params:
the variant and every varied key; each epoch's metrics; at the end of the study the
trial folder's files as artifacts). Without a URI the store is SQLite in the study
folder (``mlflow.db``, artifacts in ``mlruns/``), so the study folder stays the unit of
truth. ``--logger wandb[=PROJECT]`` logs params and per-epoch metrics to W&B (project:
the space's name unless given; group: the study's name; W&B's files under
``STUDY_DIR/wandb``; ``WANDB_MODE=offline`` works without a network) and at the end of
the study each trial folder's files as an artifact of its run. TensorBoard
needs no option: Tune writes event files into every trial folder.
"""

from __future__ import annotations

import importlib.util
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from geotune.errors import ConfigError
from geotune.layout import MLFLOW_ARTIFACTS_DIR, MLFLOW_FILE, WANDB_DIR, StudyPlan
from geotune.storage import is_uri

LOGGERS = {"mlflow": "mlflow", "wandb": "wandb"}  # --logger name -> the package it needs


@dataclass
class LoggerChoice:
    kind: str  # mlflow | wandb
    target: str | None  # MLflow tracking URI, or W&B project; None: the default
    text: str  # as given on the command line (kept in study.json)


def parse_loggers(texts: list[str]) -> list[LoggerChoice]:
    """--logger values, checked now: an unknown name or a tracker that is not installed stops the run here."""
    out: list[LoggerChoice] = []
    for text in texts:
        kind, _, target = text.partition("=")
        kind = kind.strip().lower()
        if kind not in LOGGERS:
            raise ConfigError(f"--logger {text!r}: unknown logger; choose mlflow[=URI] or wandb[=PROJECT]")
        if any(choice.kind == kind for choice in out):
            raise ConfigError(f"--logger {text!r}: {kind} is given twice")
        if importlib.util.find_spec(LOGGERS[kind]) is None:
            raise ConfigError(
                f"--logger {kind}: the {LOGGERS[kind]} package is not installed (pip install 'geotune[{kind}]')"
            )
        if kind == "mlflow" and target.strip():
            scheme = urllib.parse.urlparse(target.strip()).scheme
            if scheme not in MLFLOW_SCHEMES:
                raise ConfigError(
                    f"--logger {text!r}: MLflow stores runs at a path or a URI of {', '.join(MLFLOW_SCHEMES[1:])}, "
                    f"not '{scheme}:'"
                )
        out.append(LoggerChoice(kind, target.strip() or None, text))
    return out


def chosen_loggers(given: list[str], *settings: tuple[str, list[str]]) -> list[LoggerChoice]:
    """The trackers of a study: --logger values first, then each (name, values) setting in turn (a config's
    logging.loggers, a space's loggers) for the trackers not chosen before it. Checked as parse_loggers checks
    them, an error naming where the value came from."""
    out = parse_loggers(list(given))
    for name, setting in settings:
        chosen = {choice.kind for choice in out}
        texts = [text for text in setting if text.partition("=")[0].strip().lower() not in chosen]
        try:
            out += parse_loggers(texts)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("--logger", name, 1)) from None
    return out


# the tracking URIs MLflow 2-3 can store runs at (its own list in the error it raises later, in a trial's setup)
MLFLOW_SCHEMES = ("", "file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def mlflow_uri(plan: StudyPlan, target: str | None) -> str:
    if target:
        return target
    if is_uri(plan.study_dir):
        raise ConfigError(
            "--logger mlflow: a study in remote storage needs the tracking server's URI (--logger mlflow=URI)"
        )
    return f"sqlite:///{Path(plan.study_dir) / MLFLOW_FILE}"


def wandb_project(plan: StudyPlan, target: str | None) -> str:
    return target or plan.space


def logger_callbacks(plan: StudyPlan) -> list:
    """Tune callbacks of the study's --logger choices."""
    callbacks: list = []
    for choice in parse_loggers(plan.loggers):
        if choice.kind == "mlflow":
            # deferred: Ray's MLflow module imports mlflow (optional, about a second) on import
            from geotune.study.mlflow_logger import StudyMLflowCallback

            callbacks.append(
                StudyMLflowCallback(
                    tracking_uri=mlflow_uri(plan, choice.target),
                    experiment_name=plan.name,
                    tags={"geotune.space": plan.space, "geotune.study_dir": plan.study_dir},
                    # the study's end logs the trial folders as artifacts (stopped trials are finalised late)
                    save_artifact=False,
                    artifact_location=None if choice.target else str(Path(plan.study_dir) / MLFLOW_ARTIFACTS_DIR),
                )
            )
        else:
            # deferred: Ray's W&B logger imports wandb, an optional dependency
            from ray.tune.logger.wandb import WandbLoggerCallback

            wandb_dir = Path(plan.study_dir) / WANDB_DIR
            wandb_dir.mkdir(parents=True, exist_ok=True)
            callbacks.append(
                WandbLoggerCallback(
                    project=wandb_project(plan, choice.target),
                    group=plan.name,
                    dir=str(wandb_dir),
                    log_config=False,
                )
            )
    return callbacks


def log_trial_artifacts(plan: StudyPlan) -> dict[str, int]:
    """At the study's end: each trial folder's files as its tracker run's artifacts. Returns, per tracker,
    how many runs received them."""
    logged: dict[str, int] = {}
    if is_uri(plan.study_dir):  # the folders are not on this machine's disk
        return logged
    study_dir, name = Path(plan.study_dir), plan.name
    for choice in parse_loggers(plan.loggers):
        if choice.kind == "mlflow":
            # deferred: Ray's MLflow module imports mlflow (optional, about a second) on import
            from geotune.study.mlflow_logger import log_study

            logged["MLflow"] = log_study(mlflow_uri(plan, choice.target), plan, study_dir)
        else:
            from geotune.study.wandb_logger import log_folders_as_artifacts as to_wandb  # deferred: wandb, optional

            logged["W&B"] = to_wandb(wandb_project(plan, choice.target), name, study_dir / WANDB_DIR, study_dir)
    return logged
