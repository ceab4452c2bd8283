"""MLflow as a study uses it (imported only for --logger mlflow: Ray's MLflow logger imports mlflow).

Each trial is a run named and tagged by its trial folder; a new experiment keeps its
artifacts where geotune says (the study folder, for the default store); at the
study's end each trial folder's files become its run's artifacts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
from ray.tune.logger.mlflow import MLflowLoggerCallback

from geotune.layout import PARAMS_FILE, artifact_paths

TRIAL_TAG = "geotune.trial"  # an MLflow run's tag: the trial folder's name (artifacts find their run by it)


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


def log_folders_as_artifacts(uri: str, experiment_name: str, study_dir: Path) -> int:
    """Each run's trial folder (found by its tag), checkpoints left out, as the run's artifacts."""
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return 0
    logged = 0
    for run in client.search_runs([experiment.experiment_id], max_results=10_000):
        name = run.data.tags.get(TRIAL_TAG)
        folder = study_dir / name if name else None
        if folder is None or not (folder / PARAMS_FILE).is_file():
            continue
        for path in artifact_paths(folder):
            if path.is_dir():
                client.log_artifacts(run.info.run_id, str(path), artifact_path=path.name)
            else:
                client.log_artifact(run.info.run_id, str(path))
        logged += 1
    return logged
