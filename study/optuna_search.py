"""Ray's Optuna searcher as a study uses it (imported only by Optuna spaces)."""

from __future__ import annotations

import optuna
from ray.tune.search.optuna import OptunaSearch

from geotune.layout import optuna_url
from geotune.variants import trial_folder_name

OPTUNA_USER_ATTRS = (  # final metrics each Optuna trial carries as user attributes (dashboards show them)
    "test_accuracy",
    "test_miou",
    "flatness_calibrated_per_class",
    "intrinsic_dim_twonn",
    "participation_ratio_per_class",
    "epochs_run",
)


class AttributedOptunaSearch(OptunaSearch):
    """OptunaSearch whose trials also record their Tune trial (id and folder) and the final metrics of
    OPTUNA_USER_ATTRS as user attributes (a trial stopped by ASHA has no final metrics: they are written after
    it stopped)."""

    def suggest(self, trial_id: str):
        """Ray's suggestion, with the Optuna trial linked to its Tune trial: user attributes ``ray_trial_id`` and
        ``trial_folder`` (the folder in the study directory holding its checkpoint, model and metrics)."""
        config = super().suggest(trial_id)
        trial = self._ot_trials.get(trial_id)
        if isinstance(config, dict) and trial is not None:
            trial.set_user_attr("ray_trial_id", trial_id)
            trial.set_user_attr("trial_folder", trial_folder_name(trial_id, config))
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        trial = self._ot_trials.get(trial_id)
        if trial is not None and result:
            for key in OPTUNA_USER_ATTRS:
                if isinstance(result.get(key), (int, float)):
                    trial.set_user_attr(key, float(result[key]))
        super().on_trial_complete(trial_id, result, error)

    def relocate(self, study_dir: str) -> None:
        """After a restore: use the Optuna study in ``study_dir`` (a copy's) instead of the pickled one's file,
        for the sampler's history and for the trials in flight."""
        url = optuna_url(study_dir)
        if getattr(self._storage, "url", None) == url:
            return
        assert self._ot_study is not None  # a restored searcher has its study
        self._storage = optuna.storages.RDBStorage(url)
        study = optuna.load_study(study_name=self._ot_study.study_name, storage=self._storage, sampler=self._sampler)
        self._ot_study = study
        for trial in self._ot_trials.values():  # each holds its own unpickled copy of the study and storage
            trial.study, trial.storage = study, self._storage
