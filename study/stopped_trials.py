"""After a study: give trials that the scheduler stopped their artifacts, in parallel on the cluster."""

from __future__ import annotations

import ray

from geotune.layout import METRICS_FILE, STOPPED_FILE, StudyPlan
from geotune.storage import read_text
from geotune.trainables.trainable import tune_finalize_trial


def stopped_without_artifacts(results) -> list:
    """Trials the scheduler stopped (its marker is in their folder) that have no metrics.json yet.

    Never inferred from missing files alone: a trial that an interruption cut short
    also has a checkpoint and no metrics.json, and must train on when resumed.
    """
    return [
        r
        for r in results
        if r.error is None
        and r.checkpoint is not None
        and read_text(r.path, STOPPED_FILE) is not None
        and read_text(r.path, METRICS_FILE) is None
    ]


def finalize_stopped_trials(results, plan: StudyPlan) -> int:
    """Evaluate each early-stopped trial's last checkpoint and write its artifacts; returns how many."""
    todo = stopped_without_artifacts(results)
    if not todo:
        return 0
    print(f"writing the artifacts of {len(todo)} trial(s) stopped early by the scheduler ...", flush=True)
    task = ray.remote(num_cpus=plan.cpus_per_trial, num_gpus=plan.gpus_per_trial, max_retries=1)(tune_finalize_trial)
    planned, base = ray.put(plan.trial_configs(any_label=True)), ray.put(plan.base)
    ray.get([task.remote(r.config, r.checkpoint, r.path, r.filesystem, planned, base) for r in todo])
    return len(todo)
