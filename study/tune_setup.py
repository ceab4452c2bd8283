"""Ray Tune wiring of a planned study: the trainable with its resources, searcher, scheduler, reporter, Tuner.

The same ``trainable_for`` serves a new study and its resume, so a restored Tuner
runs exactly the trainable it was planned with.
"""

from __future__ import annotations

import os
from pathlib import Path

import optuna
from ray import tune
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import ConcurrencyLimiter

from geotune.config_loading import flatten
from geotune.errors import ConfigError
from geotune.layout import StudyPlan, optuna_url
from geotune.metric_names import PROGRESS
from geotune.search_spaces.space import SearchSpace
from geotune.storage import experiment_location, is_uri
from geotune.study.schedulers import RecordingASHA
from geotune.trainables.trainable import tune_trial
from geotune.variants import keys_of, trial_folder_name


def trial_dirname(trial) -> str:
    """'00003_name=geodesic,seed=1': the trial's index and what it varies (a long label ends in its hash)."""
    return trial_folder_name(trial.trial_id, trial.config)


class VariantValue:
    """``tune.sample_from`` of one varied key: its value in the trial's variant (picklable, for resume)."""

    def __init__(self, values: dict[str, object]):
        self.values = values  # variant label -> the key's value in that trial's config

    def __call__(self, config: dict) -> object:
        return self.values[config["variant"]]


class HyperparameterView(tune.Callback):
    """Tune's TensorBoard logger writes a trial's HParams from ``trial.evaluated_params``, which for a grid
    holds only what the grid itself resolved (the variant label), not the keys ``sample_from`` filled in:
    add every dotted key of the trial's config there, so the HParams tab lists lambda, k, seed, ..."""

    def on_trial_start(self, iteration, trials, trial, **info):
        trial.evaluated_params.update({k: v for k, v in trial.config.items() if "." in k})


def grid_param_space(plan: StudyPlan) -> dict:
    """Tune's config of a grid study: the variant label (the trainable maps it to its overrides) and every key
    the study varies, by its dotted name, with the value the trial's config gives it, so that
    ``ResultGrid.get_dataframe()``, TensorBoard's HParams and MLflow/W&B see the real hyperparameters.
    Trials --reuse took from earlier studies are left out.
    A trial whose variant leaves a key alone shows the base's value (what it trained with); lists show as
    text, since TensorBoard's HParams take scalars only."""
    resolved = {label: flatten(c) for label, c in plan.trial_configs().items() if label not in plan.reused}
    space: dict = {"variant": tune.grid_search(list(resolved))}
    for key in keys_of(plan.variants):
        values = {label: config.get(key) for label, config in resolved.items()}
        space[key] = tune.sample_from(
            VariantValue({label: str(v) if isinstance(v, list) else v for label, v in values.items()})
        )
    return space


def trainable_for(plan: StudyPlan):
    """The trainable with the study's planned trial configs (and, for Optuna, its base) attached; the same on
    run and resume."""
    with_data = tune.with_parameters(
        tune_trial, planned=plan.trial_configs(any_label=True), base=plan.base, verbose=False
    )
    return tune.with_resources(with_data, {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial})


def progress_reporter(plan: StudyPlan, keys: list[str]):
    """Ray's trial table with the columns a reader needs: what varies, the epoch and the main metrics."""
    metrics = {"epoch": "epoch", plan.metric: plan.metric}
    for name in PROGRESS:
        metrics.setdefault(name, name)
    params = {"variant": "variant"} if not plan.optuna else {k: k.rsplit(".", 1)[-1] for k in keys}
    return tune.CLIReporter(
        parameter_columns=params, metric_columns=metrics, max_report_frequency=30, max_column_length=60
    )


def build_tuner(plan: StudyPlan, space: SearchSpace, callbacks: list, verbose: bool = True, stop=None):
    storage, name = experiment_location(plan.study_dir)
    scheduler = FIFOScheduler()
    if plan.asha:
        scheduler = RecordingASHA(  # its metric and mode come from the TuneConfig below, where Tune records them
            time_attr="epoch",
            max_t=plan.epochs,
            grace_period=plan.asha["grace_period"],
            reduction_factor=plan.asha["reduction_factor"],
        )
    search_alg = None
    if plan.optuna:
        search_alg = optuna_searcher(plan, space)
        param_space: dict = {}
        num_samples = plan.num_samples
    else:
        param_space = grid_param_space(plan)
        num_samples = 1
    tune_config = tune.TuneConfig(
        num_samples=num_samples,
        search_alg=search_alg,
        scheduler=scheduler,
        max_concurrent_trials=plan.max_concurrent if not plan.optuna else None,
        trial_dirname_creator=trial_dirname,
        reuse_actors=True,
        # Recorded in tuner.pkl, so Tune's readers rank trials with no argument (Tuner.restore(...).get_results()
        # .get_best_result()); the Optuna searcher keeps the objectives it was built with (Tune leaves a searcher
        # built with a space alone), the first of a --pareto search's being the plan's.
        metric=plan.metric,
        mode=plan.mode,
    )
    run_config = tune.RunConfig(
        storage_path=storage,
        name=name,
        verbose=1 if verbose else 0,
        callbacks=callbacks,
        stop=stop,  # placement.PendingWatch: ends a study none of whose trials can be placed
        progress_reporter=progress_reporter(plan, space.varied_keys()) if verbose else None,
        failure_config=tune.FailureConfig(max_failures=plan.max_failures),
        # Local studies: study.recovery.StateKeeper deletes old checkpoints, only once a durable snapshot of
        # Ray's state no longer names them (Ray's own num_to_keep can leave a state naming a deleted one).
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2 if is_uri(plan.study_dir) else None),
    )
    return tune.Tuner(trainable_for(plan), param_space=param_space, tune_config=tune_config, run_config=run_config)


def optuna_searcher(plan: StudyPlan, space: SearchSpace):
    """OptunaSearch (TPE) over the space's define-by-run sampler, stored in STUDY_DIR/optuna.db."""
    if is_uri(plan.study_dir):
        raise ConfigError(
            f"--storage {plan.study_dir}: Optuna spaces keep their SQLite study in the study "
            "directory, which must be a local or shared-filesystem path"
        )
    Path(plan.study_dir).mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(optuna_url(plan.study_dir))
    # Created here (OptunaSearch loads it) to name the objective after the metric: dashboards show the name
    # instead of "Objective 0".
    objectives = [tuple(o) for o in plan.objectives] or [(plan.metric, plan.mode)]
    created = optuna.create_study(
        study_name=plan.name,
        storage=storage,
        directions=["maximize" if mode == "max" else "minimize" for _, mode in objectives],
        load_if_exists=True,
    )
    created.set_metric_names([metric for metric, _ in objectives])
    # deferred: Ray's Optuna searcher, for Optuna spaces only
    from geotune.study.optuna_search import AttributedOptunaSearch

    searcher = AttributedOptunaSearch(
        space=OptunaSpace(space.optuna, plan.seeds[0]),
        metric=[m for m, _ in objectives] if plan.objectives else plan.metric,
        mode=[m for _, m in objectives] if plan.objectives else plan.mode,
        sampler=optuna.samplers.TPESampler(seed=plan.seeds[0]),
        study_name=plan.name,
        storage=storage,
    )
    return ConcurrencyLimiter(searcher, plan.max_concurrent) if plan.max_concurrent else searcher


class OptunaSpace:
    """Define-by-run function for OptunaSearch: sample the space's dotted keys, fix the seed."""

    def __init__(self, sampler, seed: int):
        self.sampler, self.seed = sampler, seed

    def __call__(self, trial) -> dict:
        self.sampler(trial)
        return {"train.seed": self.seed}


def tune_environment(plan: StudyPlan | None = None) -> None:
    """Settings Tune reads from the environment, set where a study starts or resumes (never on import)."""
    if plan is not None and plan.objectives:
        # --pareto: the flatness objective is a final metric; Tune would refuse the epochs' reports without it.
        os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # Save the experiment state at least every 5 s (Ray's default waits >= 10 s), so an interrupted
    # study redoes little. Each save copies the driver's whole staging folder, so saving at every
    # event would cost large studies dearly. A trial that finished inside the window is not retrained
    # on resume (the trainable finds its metrics.json and only reports it again).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")
    # Ray's classic trial table (CLIReporter) lets us choose its columns; the newer output engine
    # prints a box with every metric of every finished trial instead.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Short epochs force frequent state saves on object-store studies (one per num_to_keep checkpoints).
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def train_trainable(plan: StudyPlan, verbose: bool = True):
    """The trainable of `geotune train`: the whole config comes as Tune's param_space."""
    trainable = tune.with_parameters(tune_trial, verbose=verbose)
    return tune.with_resources(trainable, {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial})
