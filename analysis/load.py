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

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from geotune.config import TrialConfig
from geotune.config_loading import flatten, trial_config_dict
from geotune.errors import ConfigError, error_line
from geotune.layout import (
    DIVERGED_FILE,
    ERROR_FILE,
    FAILURES_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    PARAMS_FILE,
    RESULT_FILE,
    STUDY_FILE,
    USABLE,
    StudyPlan,
    TrialStatus,
    finished_status,
    read_json,
    read_last_json_line,
    recovery_in,
)
from geotune.variants import keys_of


@dataclass
class StudyData:
    frame: pd.DataFrame
    plan: StudyPlan | None = None  # study.json; None for a bare Tune experiment
    factors: list[str] = field(default_factory=list)  # config keys the study varies, seed excluded
    metric: str = "val_accuracy"
    mode: str = "max"
    study_dir: str = ""
    sources: list[str] = field(default_factory=list)  # several studies reported as one: their folders
    problems: list[str] = field(default_factory=list)  # what could not be read (a damaged study.json), in words

    @property
    def usable(self) -> pd.DataFrame:
        return self.frame[self.frame["status"].isin([s.value for s in USABLE])]

    @property
    def task(self) -> str:
        """segmentation when the study's trials segment (metrics.json's ``task``), else classification."""
        tasks = self.frame["task"].dropna() if "task" in self.frame else pd.Series(dtype=object)
        return "segmentation" if (tasks == "segmentation").any() else "classification"


def _error_reason(folder: Path) -> str | None:
    for name in (DIVERGED_FILE, ERROR_FILE):
        path = folder / name
        if path.is_file():
            return error_line(path.read_text(errors="replace"))
    return None


def trial_status(folder: Path, metrics: dict | None) -> tuple[TrialStatus, str | None]:
    if metrics:
        return finished_status(metrics), None
    reason = _error_reason(folder)
    if reason is not None:
        return TrialStatus.FAILED, reason
    result = folder / RESULT_FILE
    return (TrialStatus.INTERRUPTED if result.is_file() and result.stat().st_size else TrialStatus.PENDING), None


def _config_columns(params: dict, plan: StudyPlan | None, planned: dict[str, dict]) -> dict:
    """Every config key of one trial, dotted; ``planned`` is the plan's trial configs by any label."""
    try:
        resolved = plan.trial_config(params, planned) if plan else trial_config_dict(params)
        # a grid trial of a plan that carries its configs: resolved and checked whole when planned (every key);
        # anything else (Optuna samples, plans before 0.3, bare Tune experiments) is resolved and checked here
        whole = plan is not None and params.get("variant") in plan.trials
        values = resolved if whole else TrialConfig.from_dict(resolved).to_dict()
        active = _regularized(json.dumps(values["regularizer"], sort_keys=True))
    except (ConfigError, KeyError, TypeError):
        return {}
    columns = {k: (tuple(v) if isinstance(v, list) else v) for k, v in flatten(values).items()}
    # the config's own answer (metrics.json's "regularized" says the same for finished trials)
    columns["regularized"] = active
    return columns


@functools.lru_cache(maxsize=4096)
def _regularized(section: str) -> bool:
    """RegularizerConfig.active of a regularizer section (as JSON): decided once per distinct section."""
    return TrialConfig.from_dict({"regularizer": json.loads(section)}).regularizer.active


def load_study(study_dir: str | Path) -> StudyData:
    """Load every trial of a study (or of a single `geotune train` output folder)."""
    folder = Path(study_dir)
    if not folder.is_dir():
        raise ConfigError(f"study directory '{folder}' does not exist")
    problems = []
    try:
        plan = StudyPlan.load(str(folder)) if (folder / STUDY_FILE).is_file() else None
    except ConfigError as exc:  # read on as a bare Tune experiment, and say what that loses
        plan = None
        problems.append(
            f"{exc}; the report reads '{folder}' as a bare Tune experiment: no question, no ranking metric of "
            "the study's own, and planned trials that never started are not listed"
        )
    variants = plan.variants_by_any_label() if plan else {}
    planned = plan.trial_configs(any_label=True) if plan else {}
    rows = []
    seen: set[int] = set()  # the planned variants that have a trial folder
    for trial in sorted(p for p in folder.iterdir() if (p / PARAMS_FILE).is_file()):
        params = read_json(trial / PARAMS_FILE) or {}
        metrics = read_json(trial / METRICS_FILE)
        status, error = trial_status(trial, metrics)
        row = {
            "trial": trial.name,
            "path": str(trial),
            "status": status.value,
            "error": error,
            "variant": params.get("variant"),
        }
        if params.get("variant") in variants:  # by any label it carries, old or new
            seen.add(id(variants[params["variant"]]))
        row.update(_config_columns(params, plan, planned))
        if not metrics or "failures" not in metrics:  # a failed trial's crashes (a finished one's metrics have them)
            record = trial / FAILURES_FILE
            row.update(recovery_in(record.read_text() if record.is_file() else None))
        if metrics:
            row.update({k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None})
            row["epochs"] = metrics.get("epochs_run")
        else:
            last = read_last_json_line(trial / RESULT_FILE) or {}
            row["epochs"] = last.get("epoch")
            row["wall_time_s"] = last.get("time_total_s")
            for key in ("val_accuracy", "val_loss", "train_accuracy", "train_loss"):
                if key in last:
                    row[key] = last[key]
        rows.append(row)
    if plan and not plan.optuna:
        for label, variant in plan.variants_by_label().items():
            if id(variant) not in seen:
                row = {
                    "trial": f"(not started) {label}",
                    "path": None,
                    "status": TrialStatus.MISSING.value,
                    "error": None,
                    "variant": label,
                }
                row.update(_config_columns({"variant": label}, plan, planned))
                rows.append(row)
    if not rows:
        raise ConfigError(f"study directory '{folder}' holds no trials (no */{PARAMS_FILE})")
    frame = pd.DataFrame(rows)
    frame["status"] = pd.Categorical(frame["status"], categories=[s.value for s in TrialStatus])
    return StudyData(
        frame=frame,
        plan=plan,
        factors=study_factors(frame, plan),
        metric=plan.metric if plan else "val_accuracy",
        mode=plan.mode if plan else "max",
        study_dir=str(folder),
        problems=problems,
    )


def study_factors(frame: pd.DataFrame, plan: StudyPlan | None = None) -> list[str]:
    """Config keys the study varies (seed excluded): from the plan, else the config columns that differ."""
    if plan and plan.variants:
        keys = keys_of(plan.variants)
    else:
        keys = [c for c in frame.columns if "." in c and frame[c].astype(str).nunique(dropna=True) > 1]
    return [k for k in keys if k != "train.seed" and k in frame.columns]


def load_histories(frame: pd.DataFrame) -> dict[str, list[dict]]:
    """training_history.json of each trial that has one, by trial name."""
    out = {}
    for name, path in zip(frame["trial"], frame["path"]):
        if path:
            history = read_json(Path(path) / HISTORY_FILE)
            if history:
                out[name] = history
    return out


def load_studies(study_dirs: list[str | Path]) -> StudyData:
    """Several studies as one (`geotune report DIR1 DIR2 ...`): every trial, named STUDY/TRIAL, the factors
    found from the config columns that differ across all of them, ranked by the first study's metric. A trial
    another of them --reuse'd appears once."""
    studies = [load_study(folder) for folder in study_dirs]
    if len(studies) == 1:
        return studies[0]
    frames = []
    seen: set[str] = set()
    for study in studies:
        frame = study.frame.copy()
        name = Path(study.study_dir).name
        frame["trial"] = [f"{name}/{trial}" for trial in frame["trial"]]
        frame["study"] = name
        keep = []
        for path in frame["path"]:
            real = str(Path(path, METRICS_FILE).resolve()) if isinstance(path, str) else None
            keep.append(real is None or real not in seen)
            if real is not None:
                seen.add(real)
        frames.append(frame[keep])
    frame = pd.concat(frames, ignore_index=True)
    frame["status"] = pd.Categorical(frame["status"], categories=[s.value for s in TrialStatus])
    first = studies[0]
    return StudyData(
        frame=frame,
        plan=None,
        factors=study_factors(frame),
        metric=first.metric,
        mode=first.mode,
        study_dir=first.study_dir,
        sources=[s.study_dir for s in studies],
        problems=[problem for study in studies for problem in study.problems],
    )
