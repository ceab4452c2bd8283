"""MLflow as a study uses it (imported only for --logger mlflow: Ray's MLflow logger imports mlflow).

Each trial is a run named and tagged by its trial folder; a new experiment keeps its artifacts where geotune
says (the study folder, for the default store). At the study's end (``log_study``) each trial's run gets its
folder's files as artifacts and its resolved config as flattened params, and becomes a nested run of one run
for the study, which holds the report (index.html, REPORT.md, summary.csv, figures); the best trial's model is
logged as an MLflow Model (images in [0, 1] in, class probabilities out, as ``geotune predict``).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import torch
from ray.tune.logger.mlflow import MLflowLoggerCallback

from geotune import __version__
from geotune.config_loading import flatten, read_yaml
from geotune.errors import ConfigError
from geotune.layout import (
    CONFIG_FILE,
    METRICS_FILE,
    PARAMS_FILE,
    REPORT_DIR,
    STUDY_FILE,
    PlanKind,
    StudyPlan,
    artifact_paths,
    read_json,
)
from geotune.trainables.predict import PixelProbabilities, load_trained

TRIAL_TAG = "geotune.trial"  # an MLflow run's tag: the trial folder's name (artifacts find their run by it)
STUDY_TAG = "geotune.study_run"  # the tag of the study's own run, the parent of its trials' runs
PARENT_TAG = "mlflow.parentRunId"  # MLflow's tag that nests a run under another (the UI shows the tree)
MODEL_PATH = "model"  # the best trial's MLflow Model, at runs:/<run id>/model
REPORT_PATH = "report"  # the study run's copy of the report
PARAMS_PER_BATCH = 100  # MLflow's limit on params in one log_batch call
PARAM_VALUE_MAX = 6000  # MLflow's limit on one param's value (characters)


class StudyMLflowCallback(MLflowLoggerCallback):
    def __init__(self, *args, artifact_location: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.artifact_location = artifact_location

    def setup(self, *args, **kwargs):
        ensure_experiment(self.tracking_uri, self.experiment_name, self.artifact_location)
        super().setup(*args, **kwargs)

    def log_trial_start(self, trial):
        first = trial not in self._trial_runs
        super().log_trial_start(trial)
        if first:
            client = mlflow.MlflowClient(self.tracking_uri)
            run_id = self._trial_runs[trial]
            client.set_tag(run_id, TRIAL_TAG, Path(trial.path).name)
            client.set_tag(run_id, "mlflow.runName", Path(trial.path).name)


def ensure_experiment(uri: str, name: str | None, artifact_location: str | None) -> str:
    """The MLflow experiment's id, created (artifacts at ``artifact_location``) if it does not exist yet."""
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial MLflow database tables"
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(name or "Default")
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name or "Default", artifact_location=artifact_location)


def log_study(uri: str, plan: StudyPlan, study_dir: Path) -> int:
    """The study's end: each trial run's artifacts, flattened config params and parent; the study run with the
    report; the best trial's MLflow Model. Returns how many trial runs were logged. A resumed study logs
    again into the same runs (the study run is found by its tag)."""
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(plan.name)
    if experiment is None:
        return 0
    runs = client.search_runs([experiment.experiment_id], max_results=10_000)
    # a study's trials nest under a run of its own; `geotune train`'s one trial stands alone
    alone = plan.kind is PlanKind.TRAIN
    parent = None if alone else _study_run(client, experiment.experiment_id, plan, study_dir, runs)
    trials = {}
    for run in runs:
        name = run.data.tags.get(TRIAL_TAG)
        folder = study_dir / name if name else None
        if folder is None or not (folder / PARAMS_FILE).is_file():
            continue
        for path in artifact_paths(folder):
            if path.is_dir():
                client.log_artifacts(run.info.run_id, str(path), artifact_path=path.name)
            else:
                client.log_artifact(run.info.run_id, str(path))
        _log_config_params(client, run, folder)
        if parent is not None:
            client.set_tag(run.info.run_id, PARENT_TAG, parent)
        trials[folder] = run.info.run_id
    best = _best_trial(plan, list(trials))
    if best is not None:
        try:
            _log_model(client, trials[best], best)
        except Exception as exc:  # the trials are logged; a model MLflow cannot serialise must not undo that
            print(f"MLflow: the model of {best.name} was not logged as an MLflow Model ({type(exc).__name__}: {exc})")
    if parent is not None:
        if best is not None:
            client.set_tag(parent, "geotune.best_trial", best.name)
        client.set_terminated(parent)
    return len(trials)


def _study_run(client, experiment_id: str, plan: StudyPlan, study_dir: Path, runs) -> str:
    """The study's own run (made once; found again on resume): tags, the plan, the report as artifacts."""
    found = [r for r in runs if r.data.tags.get(STUDY_TAG)]
    run_id = found[0].info.run_id if found else None
    if run_id is None:
        tags = {STUDY_TAG: "1", "mlflow.runName": plan.name, "geotune.space": plan.space}
        run_id = client.create_run(experiment_id, tags=tags, run_name=plan.name).info.run_id
    if (study_dir / STUDY_FILE).is_file():
        client.log_artifact(run_id, str(study_dir / STUDY_FILE))
    report = study_dir / REPORT_DIR
    if report.is_dir():
        client.log_artifacts(run_id, str(report), artifact_path=REPORT_PATH)
    return run_id


def _log_config_params(client, run, folder: Path) -> None:
    """The trial's resolved config, every key by its dotted name (MLflow params cannot change: keys the run
    already has, such as the varied ones Ray logged, are left as they are)."""
    try:
        config = read_yaml(folder / CONFIG_FILE)
    except ConfigError:  # a trial folder without a readable config.yaml: its run keeps Ray's params alone
        return
    have = run.data.params
    params = [
        mlflow.entities.Param(key, _param_text(value))
        for key, value in sorted(flatten(config).items())
        if key not in have
    ]
    for start in range(0, len(params), PARAMS_PER_BATCH):
        client.log_batch(run.info.run_id, params=params[start : start + PARAMS_PER_BATCH])


def _param_text(value) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text[:PARAM_VALUE_MAX]


def _best_trial(plan: StudyPlan, folders: list[Path]) -> Path | None:
    scored = []
    for folder in folders:
        value = (read_json(folder / METRICS_FILE) or {}).get(plan.metric)
        if isinstance(value, (int, float)) and np.isfinite(value):
            scored.append((value, folder.name, folder))
    if not scored:
        return None
    pick = max if plan.mode == "max" else min
    return pick(scored, key=lambda s: (s[0], s[1]))[2]


def _log_model(client, run_id: str, folder: Path) -> None:
    """The trial's kept model as an MLflow Model (pytorch flavour): images scaled to [0, 1] in, class
    probabilities out, with a signature and an input example (two seeded random images of its input shape)."""
    trained = load_trained(folder, trust_code=True)  # the study's own model: its code ran in the study already
    module = PixelProbabilities(trained).eval()
    shape = trained.preprocessing.input_shape
    example = torch.rand((2, *shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        output = module(example)
    signature = mlflow.models.infer_signature(example.numpy(), output.numpy())
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"geotune=={__version__}"]
    with tempfile.TemporaryDirectory() as scratch:
        # pt2 (torch.export: a traced graph, loaded without geotune and without running pickled code) where the
        # network exports; else pickle, which needs geotune installed where the model is loaded
        for form in ("pt2", "pickle"):
            local = Path(scratch) / form / MODEL_PATH
            try:
                mlflow.pytorch.save_model(
                    module,
                    str(local),
                    signature=signature,
                    input_example=example.numpy(),
                    pip_requirements=requirements,
                    serialization_format=form,
                )
                break
            except Exception:
                if form == "pickle":
                    raise
        client.log_artifacts(run_id, str(local), artifact_path=MODEL_PATH)
    client.set_tag(run_id, "geotune.mlflow_model", f"{MODEL_PATH} ({form})")
