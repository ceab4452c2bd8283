"""Running a planned study through Ray Tune, resuming one, and the one trial of `geotune train`.

Each returns what Tune's fit gave; ``geotune.study.finish`` turns that into the
summary, the report and the exit code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from geotune.errors import EXIT_INTERRUPTED, ConfigError, error_line
from geotune.layout import DATASET_EDA_FILE, METRICS_FILE, TRAIN_TRIAL_DIR, StudyPlan, read_json, write_json
from geotune.search_spaces.space import SearchSpace, load_space
from geotune.storage import experiment_location, is_uri
from geotune.study.cluster import DEFAULT_PENDING_TIMEOUT_S, notice, shutdown_if_started
from geotune.study.finish import finish_study
from geotune.study.loggers import logger_callbacks
from geotune.study.placement import PendingWatch
from geotune.study.progress import (
    EpochLines,
    StudyProgress,
    TrialLedger,
    TrialLines,
    TrialRetries,
    finished_trials,
    unfinished_count,
)
from geotune.study.recovery import StateKeeper, install_snapshot
from geotune.study.relocate import relocate_search
from geotune.study.resources import start_ray_for
from geotune.study.train_local import TrialOutcome
from geotune.study.tune_setup import HyperparameterView, build_tuner, train_trainable, trainable_for, tune_environment
from geotune.trainables.synthetic_data import dataset_eda


def write_dataset_eda(plan: StudyPlan) -> None:
    """dataset_eda.json in the study folder: the base data set's statistics, computed once per study (the
    report draws them); nothing for data sets without any, or for a study in remote storage."""
    if is_uri(plan.study_dir):
        return
    eda = dataset_eda(plan.base_config().dataset)
    if eda is not None:
        write_json(Path(plan.study_dir) / DATASET_EDA_FILE, eda)


def run_study(
    plan: StudyPlan, space: SearchSpace, verbose: bool = False, pending_timeout_s: float = DEFAULT_PENDING_TIMEOUT_S
):
    """Fit the planned study; returns Tune's ResultGrid (trials stopped by ASHA are finalized after).

    Without ``verbose`` the terminal shows one progress line (trials done / running / pending, elapsed, ETA)
    and a line per finished trial; with it, Ray's trial table every 30 s instead of the progress line.
    Trials that wait ``pending_timeout_s`` with none running stop the study (placement.PendingWatch)."""
    tune_environment(plan)
    plan.save()
    write_dataset_eda(plan)
    watch = PendingWatch(pending_timeout_s)
    tuner = build_tuner(plan, space, study_callbacks(plan, space, verbose) + [watch], verbose, stop=watch)
    TrialLedger.active = None
    StudyProgress.already_done = frozenset()
    return tuner.fit()


def study_callbacks(plan: StudyPlan, space: SearchSpace | None, verbose: bool) -> list:
    """Every Tune callback of a study, made for the folder it runs in now (a resumed copy writes only into
    itself): what the terminal shows, the state keeper, the ledger, --logger's trackers, the space's own."""
    shown = [TrialLines(plan.to_train, plan.metric)] + ([] if verbose else [StudyProgress(plan.to_train)])
    kept = [StateKeeper(plan.study_dir), TrialLedger(), TrialRetries(), HyperparameterView()]
    callbacks = shown + kept + logger_callbacks(plan)
    return callbacks + [make(plan) for make in (space.callbacks if space is not None else [])]


def resume_study(plan: StudyPlan, verbose: bool = False, pending_timeout_s: float = DEFAULT_PENDING_TIMEOUT_S):
    """Finish an interrupted study (``StudyPlan.load`` of its directory, resources as Ray can give them):
    finished trials stay, interrupted ones continue, errored ones retry. Returns Tune's ResultGrid."""
    tune_environment(plan)
    study_dir = plan.study_dir
    if not tune.Tuner.can_restore(study_dir):
        raise ConfigError(f"'{study_dir}' holds no Ray Tune experiment state to resume (was it started?)")
    if not is_uri(study_dir):
        repaired = install_snapshot(study_dir)
        if repaired:
            notice(repaired)
    space = None
    module = plan.module.removeprefix("geotune.").removeprefix("search_spaces.")
    try:  # the space's own callbacks; an Optuna searcher refers to the space's sampler function by module
        known = plan.optuna or plan.module.startswith(("geotune.", "search_spaces.")) or module.endswith(".py")
        space = load_space(module) if known else None
    except ConfigError as exc:
        if plan.optuna:
            raise ConfigError(
                f"cannot resume '{study_dir}': its Optuna space {plan.module} cannot be loaded ({exc})"
            ) from None
        notice(f"the space {plan.module} cannot be loaded ({exc}); its own callbacks, if any, do not run")
    tuner = tune.Tuner.restore(study_dir, trainable=trainable_for(plan), resume_unfinished=True, resume_errored=True)
    # Tune restores the callbacks pickled when the study started, with the paths of the folder it started in;
    # a study copied elsewhere must write only into the copy, so they are made again for this folder.
    assert tuner._local_tuner is not None  # None only under Ray Client, which geotune does not use
    run_config = tuner._local_tuner.get_run_config()
    watch = PendingWatch(pending_timeout_s)
    run_config.callbacks = study_callbacks(plan, space, verbose) + [watch]
    run_config.stop = watch
    relocate_search(tuner._local_tuner._tune_config, study_dir)  # the search's trials-to-come, likewise
    if not verbose:  # the progress line instead of Ray's table, whatever the first run chose
        run_config.verbose, run_config.progress_reporter = 0, None
    TrialLedger.active = None  # studies from before the ledger existed resume without one
    StudyProgress.already_done = finished_trials(study_dir)  # the progress lines count them as done
    return tuner.fit()


def train_and_finish(
    plan: StudyPlan,
    address: str | None,
    fit: Callable[[], Any],
    with_report: bool = True,
    draw_figures: bool = True,
) -> int:
    """What run, resume and compare share: start (or join) Ray for the plan, ``fit`` the study, finish it
    (stopped trials finalised, the summary, the report: ``draw_figures``, its figures) and leave Ray as it was
    found; the exit code."""
    info = None
    try:
        info = start_ray_for(plan, address)  # may set gpus_per_trial to 0 where the cluster has no GPU
        return finish_study(plan, fit(), with_report, draw_figures)
    except KeyboardInterrupt:  # Ctrl-C outside Tune's own handling: starting Ray, finalising, the report
        return interrupted_outside_tune(plan.study_dir)
    finally:
        shutdown_if_started(info)


def interrupted_outside_tune(study_dir: str) -> int:
    """Exit 130 with the way on: `geotune resume` where Tune saved the study's state (it finalises and reports
    what is finished and trains the rest), else that no trial ran and the command can simply run again."""
    if tune.Tuner.can_restore(study_dir):
        how = f"continue it with: geotune resume {study_dir}"
    else:
        how = "no trial had started, so nothing is lost: run the same command again"
    print(f"geotune: interrupted; {how}", file=sys.stderr, flush=True)
    return EXIT_INTERRUPTED


def run_train(plan: StudyPlan, verbose: bool = False) -> TrialOutcome:
    """Run the one trial of ``plan`` as a Ray Tune trial (`geotune train --ray`); its directory is
    ``STUDY_DIR/trial``. Without --ray, and for every resume, ``study.train_local`` runs it in-process.
    Without ``verbose`` the driver prints the epoch lines (as the in-process trial does) and Ray nothing."""
    tune_environment()
    plan.save()
    storage, name = experiment_location(plan.study_dir)
    tuner = tune.Tuner(
        train_trainable(plan, verbose),
        param_space=plan.base,
        tune_config=tune.TuneConfig(num_samples=1, trial_dirname_creator=lambda trial: TRAIN_TRIAL_DIR),
        run_config=tune.RunConfig(
            storage_path=storage,
            name=name,
            verbose=1 if verbose else 0,
            callbacks=[TrialLedger(), TrialRetries()]
            + ([] if verbose else [EpochLines(plan.epochs)])
            + logger_callbacks(plan),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=plan.max_failures),  # retried as `run` retries
        ),
    )
    TrialLedger.active = None
    results = tuner.fit()
    result = results[0]
    trial_dir = Path(result.path)
    metrics = read_json(trial_dir / METRICS_FILE) or dict(result.metrics or {})
    interrupted = unfinished_count(results) > 0
    return TrialOutcome(trial_dir, metrics, error_line(result.error) if result.error else None, interrupted)
