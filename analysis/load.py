"""A study directory -> one tidy DataFrame, a row per trial, without re-running anything.

Reads only small JSON files per trial (params.json, metrics.json, the last line
of result.json for unfinished trials), so hundreds of trials load in about a
second. Finished, early-stopped, failed, interrupted and never-started trials all
get a row; planned trials with no folder are ``missing``.

Columns: ``trial`` (folder name), ``path``, ``status``, ``error``, ``variant``
(the grid label), every config key in dotted form (``model.pooling``,
``regularizer.geodesic.lambda_reg``, ...), and every scalar of metrics.json
(``test_accuracy``, ``flatness_calibrated``, ...), plus ``epochs`` and
``wall_time_s`` for every trial that ran.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from study.config import ConfigError, TrialConfig, assemble_trial_config, flatten

STATUSES = ("completed", "early stop", "stopped by ASHA", "failed", "interrupted", "pending", "missing")
USABLE = ("completed", "early stop", "stopped by ASHA")  # trials with final metrics


@dataclass
class StudyData:
    frame: pd.DataFrame
    plan: dict = field(default_factory=dict)   # study.json, empty for a bare Tune experiment
    factors: list[str] = field(default_factory=list)  # config keys the study varies, seed excluded
    metric: str = "val_accuracy"
    mode: str = "max"
    study_dir: str = ""

    @property
    def usable(self) -> pd.DataFrame:
        return self.frame[self.frame["status"].isin(USABLE)]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _last_json_line(path: Path) -> Optional[dict]:
    """The last record of a JSON-lines file, reading only its tail."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 65536))
            lines = [line for line in fh.read().splitlines() if line.strip()]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError, IndexError):
        return None


def _error_reason(folder: Path) -> Optional[str]:
    from study.tuner import summarize_error

    for name in ("diverged.txt", "error.txt"):
        path = folder / name
        if path.is_file():
            return summarize_error(path.read_text(errors="replace"))
    return None


def finished_status(metrics: dict) -> str:
    """completed, early stop (patience) or stopped by ASHA: from a finished trial's metrics.json."""
    reason = str(metrics.get("stop_reason", ""))
    if "scheduler" in reason:
        return "stopped by ASHA"
    return "early stop" if reason.startswith("early") else "completed"


def trial_status(folder: Path, metrics: Optional[dict]) -> tuple[str, Optional[str]]:
    if metrics:
        return finished_status(metrics), None
    reason = _error_reason(folder)
    if reason is not None:
        return "failed", reason
    result = folder / "result.json"
    return ("interrupted" if result.is_file() and result.stat().st_size else "pending"), None


def _config_columns(params: dict, plan: dict, variants: dict[str, dict]) -> dict:
    """Every config key of one trial, dotted; ``variants`` is the plan's variants by label."""
    try:
        config = TrialConfig.from_dict(assemble_trial_config(params, plan.get("base"), variants))
    except (ConfigError, KeyError, TypeError):
        return {}
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in flatten(config.to_dict()).items()}


def _variants_by_label(plan: dict) -> dict[str, dict]:
    from search_spaces.spec import variant_labels

    variants = plan.get("variants", [])
    return dict(zip(variant_labels(variants), variants))


def load_study(study_dir: str | Path) -> StudyData:
    """Load every trial of a study (or of a single `geotune train` output folder)."""
    folder = Path(study_dir)
    if not folder.is_dir():
        raise ConfigError(f"study directory '{folder}' does not exist")
    plan = _read_json(folder / "study.json") or {}
    variants = _variants_by_label(plan)
    rows = []
    seen_labels = set()
    for trial in sorted(p for p in folder.iterdir() if (p / "params.json").is_file()):
        params = _read_json(trial / "params.json") or {}
        metrics = _read_json(trial / "metrics.json")
        status, error = trial_status(trial, metrics)
        row = {"trial": trial.name, "path": str(trial), "status": status, "error": error,
               "variant": params.get("variant")}
        seen_labels.add(params.get("variant"))
        row.update(_config_columns(params, plan, variants))
        if metrics:
            row.update({k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None})
            row["epochs"] = metrics.get("epochs_run")
        else:
            last = _last_json_line(trial / "result.json") or {}
            row["epochs"] = last.get("epoch")
            row["wall_time_s"] = last.get("time_total_s")
            for key in ("val_accuracy", "val_loss", "train_accuracy", "train_loss"):
                if key in last:
                    row[key] = last[key]
        rows.append(row)
    if plan and not plan.get("optuna"):
        for label in variants:
            if label not in seen_labels:
                row = {"trial": f"(not started) {label}", "path": None, "status": "missing", "error": None,
                       "variant": label}
                row.update(_config_columns({"variant": label}, plan, variants))
                rows.append(row)
    if not rows:
        raise ConfigError(f"study directory '{folder}' holds no trials (no */params.json)")
    frame = pd.DataFrame(rows)
    frame["status"] = pd.Categorical(frame["status"], categories=STATUSES)
    return StudyData(frame=frame, plan=plan, factors=study_factors(frame, plan),
                     metric=plan.get("metric", "val_accuracy"), mode=plan.get("mode", "max"), study_dir=str(folder))


def study_factors(frame: pd.DataFrame, plan: Optional[dict] = None) -> list[str]:
    """Config keys the study varies (seed excluded): from the plan, else the config columns that differ."""
    from search_spaces.spec import keys_of

    if plan and plan.get("variants"):
        keys = keys_of(plan["variants"])
    else:
        keys = [c for c in frame.columns if "." in c and frame[c].astype(str).nunique(dropna=True) > 1]
    return [k for k in keys if k != "train.seed" and k in frame.columns]


def load_histories(frame: pd.DataFrame) -> dict[str, list[dict]]:
    """training_history.json of each trial that has one, by trial name."""
    out = {}
    for name, path in zip(frame["trial"], frame["path"]):
        if path:
            history = _read_json(Path(path) / "training_history.json")
            if history:
                out[name] = history
    return out
