"""Running a planned study through Ray Tune, resuming one, and the one trial of `geotune train`.

Each returns what Tune's fit gave; ``geotune.study.finish`` turns that into the
summary, the report and the exit code.
"""

from __future__ import annotations

from pathlib import Path

from ray import tune

from geotune.config import TrialConfig
from geotune.errors import ConfigError, error_line
from geotune.layout import DATASET_EDA_FILE, METRICS_FILE, TRAIN_TRIAL_DIR, StudyPlan, read_json, write_json
from geotune.search_spaces.spec import StudySpec, load_space
from geotune.storage import experiment_location, is_uri
from geotune.study.cluster import notice
from geotune.study.progress import TrialLedger, TrialLines, unfinished_count
from geotune.study.recovery import StateKeeper, install_snapshot
from geotune.study.train_local import TrialOutcome
from geotune.study.tune_setup import build_tuner, train_trainable, trainable_for, tune_environment
from geotune.trainables.data import dataset_eda


def write_dataset_eda(plan: StudyPlan) -> None:
    """dataset_eda.json in the study folder: the base data set's statistics, computed once per study (the
    report draws them); nothing for data sets without any, or for a study in remote storage."""
    if is_uri(plan.study_dir):
        return
    eda = dataset_eda(TrialConfig.from_dict(plan.base).dataset)
    if eda is not None:
        write_json(Path(plan.study_dir) / DATASET_EDA_FILE, eda)


def run_study(plan: StudyPlan, spec: StudySpec):
    """Fit the planned study; returns Tune's ResultGrid (trials stopped by ASHA are finalized after)."""
    tune_environment()
    plan.save()
    write_dataset_eda(plan)
    tuner = build_tuner(
        plan, spec, [TrialLines(plan.trial_count, plan.metric), StateKeeper(plan.study_dir), TrialLedger()]
    )
    TrialLedger.active = None
    return tuner.fit()


def resume_study(plan: StudyPlan):
    """Finish an interrupted study (``StudyPlan.load`` of its directory, resources as Ray can give them):
    finished trials stay, interrupted ones continue, errored ones retry. Returns Tune's ResultGrid."""
    tune_environment()
    study_dir = plan.study_dir
    if not tune.Tuner.can_restore(study_dir):
        raise ConfigError(f"'{study_dir}' holds no Ray Tune experiment state to resume (was it started?)")
    if not is_uri(study_dir):
        repaired = install_snapshot(study_dir)
        if repaired:
            notice(repaired)
    if plan.optuna:
        # The saved searcher refers to the space's sampler function by module: import that module again.
        module = plan.module.removeprefix("geotune.").removeprefix("search_spaces.")
        try:
            load_space(module)
        except ConfigError as exc:
            raise ConfigError(
                f"cannot resume '{study_dir}': its Optuna space {plan.module} cannot be loaded ({exc})"
            ) from None
    tuner = tune.Tuner.restore(study_dir, trainable=trainable_for(plan), resume_unfinished=True, resume_errored=True)
    TrialLedger.active = None  # studies from before the ledger existed resume without one
    return tuner.fit()


def run_train(plan: StudyPlan, verbose: int = 1) -> TrialOutcome:
    """Run the one trial of ``plan`` as a Ray Tune trial (`geotune train --ray`); its directory is
    ``STUDY_DIR/trial``. Without --ray, and for every resume, ``study.train_local`` runs it in-process."""
    tune_environment()
    plan.save()
    storage, name = experiment_location(plan.study_dir)
    tuner = tune.Tuner(
        train_trainable(plan),
        param_space=plan.base,
        tune_config=tune.TuneConfig(num_samples=1, trial_dirname_creator=lambda trial: TRAIN_TRIAL_DIR),
        run_config=tune.RunConfig(
            storage_path=storage,
            name=name,
            verbose=verbose,
            callbacks=[TrialLedger()],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )
    TrialLedger.active = None
    results = tuner.fit()
    result = results[0]
    trial_dir = Path(result.path)
    metrics = read_json(trial_dir / METRICS_FILE) or dict(result.metrics or {})
    interrupted = unfinished_count(results) > 0
    return TrialOutcome(trial_dir, metrics, error_line(result.error) if result.error else None, interrupted)
