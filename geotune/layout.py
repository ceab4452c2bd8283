"""The on-disk format of a study and of a trial: file names, ``study.json``, statuses, stop reasons.

A study directory (``STORAGE/NAME``) holds ``study.json`` (the ``StudyPlan``: base
config, planned variants, resources, ranking metric, scheduler, versions), Ray
Tune's experiment state, ``optuna.db`` for Optuna spaces, ``report/`` and one
folder per trial. A trial folder holds Tune's ``params.json`` and ``result.json``
(one line per epoch), checkpoints, and what the trial writes at its end:
``config.yaml``, ``metrics.json`` (typed stop reason included),
``training_history.json``, the geometry summaries, ``latents.npz``, ``model.pt``
and figures. Every module reads and writes these through the names and readers
below, never through literals of its own.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from geotune.config import TrialConfig
from geotune.config_loading import trial_config_dict, variant_dict
from geotune.errors import ConfigError
from geotune.storage import read_text, write_text
from geotune.variants import variant_labels

# --- a study directory
STUDY_FILE = "study.json"  # the StudyPlan
OPTUNA_FILE = "optuna.db"  # Optuna spaces: the sampler's SQLite study
REPORT_DIR = "report"  # geotune report's output
COMPARISON_FILE = "comparison_report.json"  # paired effects (report/, and geotune compare's folder)
SNAPSHOT_DIR = ".geotune/ray_state"  # geotune.study.recovery's durable copy of Ray's state
MLFLOW_FILE = "mlflow.db"  # --logger mlflow without a URI: MLflow's SQLite store in the study folder
MLFLOW_ARTIFACTS_DIR = "mlruns"  # ... and its artifact store beside it
WANDB_DIR = "wandb"  # --logger wandb: W&B's local run files (offline runs too) in the study folder
TRAIN_TRIAL_DIR = "trial"  # the one trial folder of a `geotune train` directory

# --- a trial folder: written by Ray Tune
PARAMS_FILE = "params.json"  # the trial's Tune config (grid: {"variant": label, varied keys: values})
REUSED_FILE = "reused_from.txt"  # a trial --reuse linked from another study: the folder it came from
REUSED_PREFIX = "reused_"  # such a trial's folder name: reused_<label>
RESULT_FILE = "result.json"  # one JSON line per reported epoch
PROGRESS_FILE = "progress.csv"  # the same reports as CSV rows
CHECKPOINT_PREFIX = "checkpoint_"  # checkpoint_NNNNNN/ folders, each holding STATE_FILE
ERROR_FILE = "error.txt"  # the traceback of a failed trial

# --- a trial folder: written by geotune
CONFIG_FILE = "config.yaml"  # the resolved trial config
METRICS_FILE = "metrics.json"  # final metrics; present = the trial finished
HISTORY_FILE = "training_history.json"  # one dict per epoch
CLASSIFICATION_FILE = "classification_report.json"
SEGMENTATION_FILE = "segmentation_report.json"  # segmentation: pixel accuracy, IoU, Dice, confusion per split
DATASET_EDA_FILE = "dataset_eda.json"  # in a study folder: the data set's statistics (shapes_seg), drawn once
GEOMETRY_FILE = "geometry_summary.json"
GEODESIC_FILE = "geodesic_summary.json"
LATENTS_FILE = "latents.npz"  # format owned by geotune.latents_file
MODEL_FILE = "model.pt"  # state dict of the kept model (train.keep)
PREPROCESSING_FILE = "preprocessing.json"  # input shape, channels, normalisation, classes: geotune.preprocessing_file
MODEL_SUMMARY_FILE = "model_summary.txt"  # per layer: output shape and parameters
OUTPUT_SPARSITY_FILE = "output_sparsity.json"  # sparsemax support sizes, softmax mass outside the top 3
TEST_EXAMPLES_FILE = "test_examples.json"  # the first test image of each class: thumbnail, logits, probabilities
LAYER_GEOMETRY_FILE = "layer_geometry.json"  # logging.geometry_layers: the geometry summary of each layer
ONNX_FILE = "model.onnx"  # logging.export_onnx: the kept model, normalisation included, on images in [0, 1]
STATE_FILE = "state.pt"  # inside each checkpoint_*/: the resumable training state
DIVERGED_FILE = "diverged.txt"  # the loss became non-finite: retrying would diverge again
STOPPED_FILE = "stopped_by_scheduler.json"  # the scheduler stopped the trial before its last epoch
TENSORBOARD_PREFIX = "events.out.tfevents"  # Tune's TensorBoard event files in each trial folder
FAILURES_FILE = "failures.json"  # each crash Tune retried the trial after (node lost, worker killed): recovery_of


class StopReason(str, Enum):
    """Why a finished trial stopped training (``metrics.json``'s ``stop``)."""

    COMPLETED = "completed"  # every planned epoch
    PATIENCE = "patience"  # early stopping: val_loss did not improve for train.patience epochs
    SCHEDULER = "scheduler"  # the study's scheduler (ASHA) stopped it

    def __str__(self) -> str:
        return self.value

    def sentence(self, patience: int | None = None) -> str:
        """The words of ``metrics.json``'s ``stop_reason``."""
        if self is StopReason.PATIENCE:
            return f"early stop: val_loss did not improve for {patience} epochs"
        return "completed all epochs" if self is StopReason.COMPLETED else "stopped by the scheduler"


class TrialStatus(str, Enum):
    """Where a trial of a study stands, as tables, summaries and the report show it."""

    COMPLETED = "completed"  # trained every planned epoch
    EARLY_STOP = "early stop"  # stopped by its own patience
    STOPPED = "stopped by ASHA"  # stopped by the study's scheduler; final metrics at that epoch
    FAILED = "failed"  # raised (error.txt or diverged.txt says why)
    INTERRUPTED = "interrupted"  # reported epochs, then the study was interrupted: resume continues it
    PENDING = "pending"  # has a folder but never reported
    MISSING = "missing"  # planned, no folder

    def __str__(self) -> str:
        return self.value

    @property
    def usable(self) -> bool:
        """Whether the trial has final metrics."""
        return self in USABLE


USABLE = (TrialStatus.COMPLETED, TrialStatus.EARLY_STOP, TrialStatus.STOPPED)
STATUS_OF_STOP = {
    StopReason.COMPLETED: TrialStatus.COMPLETED,
    StopReason.PATIENCE: TrialStatus.EARLY_STOP,
    StopReason.SCHEDULER: TrialStatus.STOPPED,
}


def artifact_paths(trial_dir: Path) -> list[Path]:
    """What a tracker keeps of a trial folder: its files and folders; checkpoints, hidden names and TensorBoard's
    event files left out (a copy in the study folder's mlruns/ would show each trial twice in TensorBoard)."""
    skipped = (CHECKPOINT_PREFIX, ".", TENSORBOARD_PREFIX)
    return [p for p in sorted(trial_dir.iterdir()) if not p.name.startswith(skipped)]


def optuna_url(study_dir: str | Path) -> str:
    """The SQLAlchemy URL of an Optuna space's study in ``study_dir`` (OPTUNA_FILE)."""
    return f"sqlite:///{Path(study_dir) / OPTUNA_FILE}"


def stop_of(metrics: dict) -> StopReason:
    """The stop reason of a finished trial's metrics.json (files from geotune 0.1 only have the sentence)."""
    if "stop" in metrics:
        return StopReason(metrics["stop"])
    sentence = str(metrics.get("stop_reason", ""))
    if "scheduler" in sentence:
        return StopReason.SCHEDULER
    return StopReason.PATIENCE if sentence.startswith("early") else StopReason.COMPLETED


def finished_status(metrics: dict) -> TrialStatus:
    return STATUS_OF_STOP[stop_of(metrics)]


# ---------------------------------------------------------------------------
# JSON files


def clean_json(value: Any) -> Any:
    """Plain JSON values from numpy scalars and arrays; NaN and infinities become null."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy arrays and scalars
        return clean_json(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def write_json(path: Path, data: Any) -> None:
    Path(path).write_text(json.dumps(clean_json(data), indent=2))


def read_json(path: Path) -> Any:
    """A JSON file's content, or None where it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def failure_record(text: str | None) -> list[dict]:
    """The crashes of a trial that Tune retried, from its FAILURES_FILE (written by the driver as it retries):
    one dict each, {attempt, node, epoch_reached, checkpoint_epoch, error}; [] where there were none."""
    try:
        record = json.loads(text) if text else {}
    except ValueError:
        return []
    failures = record.get("failures") if isinstance(record, dict) else None
    return [f for f in failures if isinstance(f, dict)] if isinstance(failures, list) else []


def failures_text(failures: list[dict]) -> str:
    return json.dumps({"failures": failures}, indent=2)


def recovery_of(failures: list[dict]) -> dict[str, int]:
    """metrics.json's ``failures`` (crashes retried) and ``epochs_retrained`` (epochs completed before a crash
    and trained again after it, because the checkpoint it resumed from was older than the last epoch)."""
    retrained = 0
    for failure in failures:
        reached, saved = failure.get("epoch_reached"), failure.get("checkpoint_epoch")
        if isinstance(reached, int):
            retrained += max(0, reached - (saved if isinstance(saved, int) else 0))
    return {"failures": len(failures), "epochs_retrained": retrained}


def recovery_in(text: str | None) -> dict[str, int]:
    """``recovery_of`` the crashes a FAILURES_FILE's text records (None: no file, no crash)."""
    return recovery_of(failure_record(text))


def read_last_json_line(path: Path) -> dict | None:
    """The last record of a JSON-lines file (Tune's result.json), reading only its tail."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 65536))
            lines = [line for line in fh.read().splitlines() if line.strip()]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class TrialRecord:
    """What a trial folder says about itself once it finished (empty metrics when it did not)."""

    name: str
    path: str
    metrics: dict
    history: list
    geometry: dict | None
    geodesic: dict | None

    @classmethod
    def load(cls, trial_dir: str | Path, name: str | None = None) -> TrialRecord:
        folder = Path(trial_dir)
        return cls(
            name or folder.name,
            str(folder),
            read_json(folder / METRICS_FILE) or {},
            read_json(folder / HISTORY_FILE) or [],
            read_json(folder / GEOMETRY_FILE),
            read_json(folder / GEODESIC_FILE),
        )


# ---------------------------------------------------------------------------
# study.json


class PlanKind(str, Enum):
    STUDY = "study"  # geotune run / compare: a search space's trials
    TRAIN = "train"  # geotune train: one trial of a config, in TRAIN_TRIAL_DIR

    def __str__(self) -> str:
        return self.value


@dataclass
class StudyPlan:
    """A study as planned and as ``study.json`` records it; every floor reads a study's plan as this."""

    space: str
    module: str  # where the space came from: geotune.search_spaces.NAME, a file, or a verb
    question: str
    study_dir: str
    base: dict  # the trial config every trial shares (over the defaults)
    variants: list[dict]  # grid spaces: dotted-key overrides of each planned trial (seeds included)
    optuna: bool
    num_samples: int
    seeds: list[int]
    metric: str
    mode: str
    asha: dict | None  # {"grace_period", "reduction_factor"} or None
    cpus_per_trial: float
    gpus_per_trial: float
    max_concurrent: int | None
    max_failures: int
    created: str = ""
    command: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # weak-but-valid choices found while planning
    kind: PlanKind = PlanKind.STUDY
    versions: dict = field(default_factory=dict)  # geotune, torch, ray, optuna, numpy, git commit
    loggers: list[str] = field(default_factory=list)  # --logger values (mlflow[=URI], wandb[=PROJECT]), for resume
    # --reuse: variant label -> the finished trial folder of another study it was taken from (not trained here)
    reused: dict[str, str] = field(default_factory=dict)
    # --pareto: the Optuna search's (metric, mode) objectives; empty: one objective, metric and mode above
    objectives: list[list[str]] = field(default_factory=list)
    # grid studies: each planned trial's resolved config (every key; checked when planned), by variant label.
    # Empty for Optuna (a trial's config is resolved where its keys are sampled) and in plans before 0.3.
    trials: dict[str, dict] = field(default_factory=dict)
    # the space's reference level of each varied key it names (the report compares the other levels with it)
    reference: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The study's name: its folder's (MLflow's experiment, W&B's group and Optuna's study are named so)."""
        return self.study_dir.rstrip("/").rsplit("/", 1)[-1]

    @property
    def trial_count(self) -> int:
        return self.num_samples if self.optuna else len(self.variants)

    @property
    def to_train(self) -> int:
        """Trials Tune runs: the planned ones less those --reuse took from other studies."""
        return self.trial_count - len(self.reused)

    def variants_by_label(self) -> dict[str, dict]:
        return dict(zip(variant_labels(self.variants), self.variants))

    def variants_by_any_label(self) -> dict[str, dict]:
        """variants_by_label, plus the labels geotune 0.1 gave them, which its studies' trials carry."""
        return {**dict(zip(variant_labels(self.variants, legacy=True), self.variants)), **self.variants_by_label()}

    def trial_configs(self, any_label: bool = False) -> dict[str, dict]:
        """Each planned trial's resolved config by variant label (``any_label``: by geotune 0.1's labels too).
        A plan written before plans carried them gets them the one way a planned config is made."""
        labels = variant_labels(self.variants)
        configs = [self.trials.get(label) or variant_dict(self.base, v) for label, v in zip(labels, self.variants)]
        by_label = dict(zip(labels, configs))
        if not any_label:
            return by_label
        return {**dict(zip(variant_labels(self.variants, legacy=True), configs)), **by_label}

    def trial_config(self, params: dict, planned: dict[str, dict] | None = None) -> dict:
        """The resolved config of the trial whose Tune config (params.json) is ``params``; pass ``planned``
        (``trial_configs(any_label=True)``) when asking for many trials."""
        return trial_config_dict(params, planned if planned is not None else self.trial_configs(True), self.base)

    def base_config(self) -> TrialConfig:
        """The base every trial shares, checked (for `geotune train`: the trial's whole config)."""
        return TrialConfig.from_dict(self.base)

    @property
    def epochs(self) -> int:
        return self.base_config().train.epochs

    def to_dict(self) -> dict:
        return clean_json(asdict(self))

    def save(self) -> None:
        write_text(self.study_dir, STUDY_FILE, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_dict(cls, data: dict, study_dir: str) -> StudyPlan:
        known = {f.name for f in dataclasses.fields(cls)}
        plan = cls(**{k: v for k, v in data.items() if k in known and k != "study_dir"}, study_dir=study_dir)
        plan.kind = PlanKind(plan.kind)
        return plan

    @classmethod
    def load(cls, study_dir: str | Path) -> StudyPlan:
        """The plan of ``study_dir`` (which may have moved since it was written); one-line errors."""
        study_dir = str(study_dir)
        text = read_text(study_dir, STUDY_FILE)
        if text is None:
            raise ConfigError(f"'{study_dir}' is not a geotune study directory (no {STUDY_FILE})")
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise TypeError(f"holds a {type(data).__name__}, not a mapping")
            return cls.from_dict(data, study_dir)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"'{study_dir}/{STUDY_FILE}' is damaged or not a geotune plan ({str(exc).splitlines()[0][:120]})"
            ) from None

    @classmethod
    def find(cls, study_dir: str | Path) -> StudyPlan | None:
        """The plan of a local folder, or None for a bare Tune experiment or a damaged file."""
        try:
            return cls.load(str(study_dir))
        except ConfigError:
            return None
