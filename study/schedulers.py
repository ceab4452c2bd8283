"""Schedulers whose decisions a study can read back after the fact."""

from __future__ import annotations

import json

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from geotune.layout import STOPPED_FILE
from geotune.storage import write_text


class RecordingASHA(ASHAScheduler):
    """ASHA that leaves STOPPED_FILE in the folder of each trial it stops before its last epoch.

    Tune marks a trial the scheduler stopped and a trial that finished alike
    (TERMINATED). The marker is the scheduler's own word, written as it decides, so
    the study's finalisation writes results at the stopping epoch for exactly these
    trials and never for one that an interruption cut short. It lives in the trial's
    folder, so it moves with the study.
    """

    def on_trial_result(self, tune_controller, trial, result):
        action = super().on_trial_result(tune_controller, trial, result)
        epoch = result.get(self._time_attr)
        if action == TrialScheduler.STOP and epoch is not None and epoch < self._max_t and trial.path:
            write_text(trial.path, STOPPED_FILE, json.dumps({"epoch": epoch, "scheduler": "ASHA"}))
        return action
