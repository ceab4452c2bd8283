"""Search spaces to Ray Tune experiments: plan, run, resume.

A study directory (``STORAGE/NAME``) holds ``study.json`` (the resolved spec:
base config, planned trials, resources, metric, scheduler), Ray Tune's
experiment state, one folder per trial with its artifacts, ``optuna.db`` for
Optuna spaces, and the report.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from search_spaces.spec import StudySpec, keys_of, planned_configs, variant_label, variant_labels
from study.config import ConfigError, TrialConfig, merge

STUDY_FILE = "study.json"
MAX_FAILURES = 20  # --max-failures bound: Ray's -1 (retry forever) would loop on a diverging config
OPTUNA_FILE = "optuna.db"
STOPPED_FILE = "stopped_by_scheduler.json"  # in a trial's folder: the scheduler stopped it (study.schedulers)


def is_uri(path: str) -> bool:
    return "://" in path


def experiment_location(out_dir: str | Path) -> tuple[str, str]:
    """(storage_path, name) such that Tune's experiment directory is exactly ``out_dir``."""
    if is_uri(str(out_dir)):
        storage, _, name = str(out_dir).rstrip("/").rpartition("/")
        return storage, name
    path = Path(out_dir).expanduser().resolve()
    return str(path.parent), path.name


def refuse_existing_results(out_dir: str | Path, what: str = "OUT_DIR") -> None:
    """Never overwrite finished work: an experiment folder that already holds results is an error."""
    if is_uri(str(out_dir)):
        return
    path = Path(out_dir).expanduser()
    if path.is_file():
        raise ConfigError(f"{what} '{path}' is a file, not a folder")
    if path.is_dir() and any(path.iterdir()):
        raise ConfigError(f"{what} '{path}' already holds results; choose a new folder "
                          "(or 'geotune resume' it if it is an interrupted study)")
    created = [p for p in [path, *path.parents] if not p.exists()]
    probe = path / ".geotune-write-test"
    try:  # a read-only, full or file-blocked storage fails here, before Ray starts, not in every trial
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{what} '{path}' cannot be written ({exc.strerror or type(exc).__name__}"
                          f"{': ' + exc.filename if exc.filename and str(exc.filename) != str(probe) else ''})") from None
    finally:
        for folder in created:  # leave no trace: a refused command must not leave an empty study folder
            try:
                folder.rmdir()
            except OSError:
                break


def absolute_data_root(base: dict) -> dict:
    """Tune runs trials with the trial folder as working directory: make dataset.root absolute here."""
    root = base.get("dataset", {}).get("root")
    root = root if root is not None else TrialConfig().dataset.root
    return merge(base, {"dataset": {"root": str(Path(root).expanduser().resolve())}})


# ---------------------------------------------------------------------------
# the plan


@dataclass
class StudyPlan:
    space: str
    module: str
    question: str
    study_dir: str
    base: dict
    variants: list[dict]
    optuna: bool
    num_samples: int
    seeds: list[int]
    metric: str
    mode: str
    asha: Optional[dict]
    cpus_per_trial: float
    gpus_per_trial: float
    max_concurrent: Optional[int]
    max_failures: int
    created: str = ""
    command: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)   # weak-but-valid choices found while planning
    kind: str = "study"   # "study" (geotune run/compare) or "train" (one trial of geotune train)

    @property
    def trial_count(self) -> int:
        return self.num_samples if self.optuna else len(self.variants)

    def variants_by_label(self) -> dict[str, dict]:
        return dict(zip(variant_labels(self.variants), self.variants))

    @property
    def epochs(self) -> int:
        return TrialConfig.from_dict(self.base).train.epochs

    def save(self) -> None:
        write_text(self.study_dir, STUDY_FILE, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, study_dir: str) -> "StudyPlan":
        text = read_text(study_dir, STUDY_FILE)
        if text is None:
            raise ConfigError(f"'{study_dir}' is not a geotune study directory (no {STUDY_FILE})")
        try:
            data = json.loads(text)
            data["study_dir"] = study_dir  # the folder may have moved since
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"'{study_dir}/{STUDY_FILE}' is damaged or not a geotune plan "
                              f"({str(exc).splitlines()[0][:120]})") from None


@dataclass
class RunOptions:
    storage: str = "runs"
    name: Optional[str] = None
    num_samples: Optional[int] = None
    max_concurrent: Optional[int] = None
    cpus_per_trial: Optional[float] = None
    gpus_per_trial: Optional[float] = None
    asha: bool = True
    max_failures: int = 2


def make_plan(spec: StudySpec, user: dict, options: RunOptions) -> StudyPlan:
    """Resolve a space with the user's config overrides and options; validate every planned trial."""
    if options.num_samples is not None and options.num_samples < 1:
        raise ConfigError(f"--num-samples {options.num_samples}: must be >= 1")
    if options.num_samples and not spec.is_optuna:
        spec.seeds = list(range(options.num_samples))  # grid spaces: N seeds per variant
    elif options.num_samples:
        spec.num_samples = options.num_samples
    for key in spec.varied_keys():
        if _has_dotted(user, key):
            raise ConfigError(f"config key '{key}' is varied by the space '{spec.name}'; a fixed value "
                              "from --config/--set would be overridden (write your own space instead)")
    base = absolute_data_root(merge(spec.base, user))
    configs = planned_configs(spec, base)
    from trainables.trial import check_config  # deferred: torch and the data loaders, only when planning

    seen, warnings = set(), []
    for cfg in configs:  # model shapes and data files, once per distinct trial
        key = cfg.to_yaml().replace(f"seed: {cfg.train.seed}\n", "")
        if key not in seen:
            seen.add(key)
            warnings += [w for w in check_config(cfg) if w not in warnings]
    cpus = options.cpus_per_trial if options.cpus_per_trial is not None else spec.cpus_per_trial
    gpus = options.gpus_per_trial if options.gpus_per_trial is not None else spec.gpus_per_trial
    if not (math.isfinite(cpus) and cpus > 0):
        raise ConfigError(f"--cpus-per-trial {cpus:g}: must be a number > 0")
    if not math.isfinite(gpus) or gpus < 0 or (gpus > 1 and gpus != int(gpus)):
        raise ConfigError(f"--gpus-per-trial {gpus:g}: must be a fraction in (0, 1] or a whole number")
    if options.max_concurrent is not None and options.max_concurrent < 1:
        raise ConfigError(f"--max-concurrent {options.max_concurrent}: must be >= 1")
    if not 0 <= options.max_failures <= MAX_FAILURES:
        raise ConfigError(f"--max-failures {options.max_failures}: must be in 0..{MAX_FAILURES} (retries of a "
                          "crashed trial; a deterministic failure fails again)")
    epochs = min(cfg.train.epochs for cfg in configs)
    if spec.asha and options.asha and spec.asha.grace_period > epochs:
        raise ConfigError(f"space '{spec.name}': ASHA's grace period ({spec.asha.grace_period} epochs) exceeds "
                          f"train.epochs ({epochs}); raise train.epochs or run with --no-asha")
    name = options.name or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = options.storage if is_uri(options.storage) else str(Path(options.storage).expanduser().resolve())
    study_dir = f"{storage.rstrip('/')}/{name}"
    return StudyPlan(
        space=spec.name, module=spec.module, question=spec.question, study_dir=study_dir, base=base,
        variants=spec.variants(), optuna=spec.is_optuna, num_samples=spec.num_samples, seeds=list(spec.seeds),
        metric=spec.metric, mode=spec.mode, asha=asdict(spec.asha) if (spec.asha and options.asha) else None,
        cpus_per_trial=cpus, gpus_per_trial=gpus,
        max_concurrent=options.max_concurrent or spec.max_concurrent, max_failures=options.max_failures,
        created=time.strftime("%Y-%m-%d %H:%M:%S"), command=sys.argv[1:], warnings=warnings,
    )


def _has_dotted(nested: dict, key: str) -> bool:
    node = nested
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def plan_text(plan: StudyPlan, spec: Optional[StudySpec] = None) -> str:
    """The trial plan and resources, as `--dry-run` prints it."""
    from analysis.tables import text_table

    lines = [f"study '{plan.space}': {plan.question}",
             f"  study directory : {plan.study_dir}",
             f"  trials          : {plan.trial_count} ({'Optuna TPE samples' if plan.optuna else 'grid'})",
             f"  per trial       : {plan.cpus_per_trial:g} CPU, {plan.gpus_per_trial:g} GPU"
             + (f"; at most {plan.max_concurrent} at once" if plan.max_concurrent else ""),
             f"  ranked by       : {plan.metric} ({plan.mode})",
             "  early stopping  : " + (f"ASHA on epochs (grace period {plan.asha['grace_period']}, reduction "
                                       f"factor {plan.asha['reduction_factor']}, max {plan.epochs})"
                                       if plan.asha else "none: every trial trains to the end")
             + f"; patience {TrialConfig.from_dict(plan.base).train.patience or 'off'}",
             ""]
    if plan.optuna:
        import optuna

        lines.append(f"Optuna samples these keys (seed {plan.seeds[0]}), TPE with {plan.num_samples} trials:")
        study = optuna.create_study()
        trial = study.ask()
        if spec is not None:
            spec.optuna(trial)
            for key, dist in trial.distributions.items():
                lines.append(f"  {key}: {dist}")
        return "\n".join(lines)
    keys = keys_of(plan.variants)
    rows = [[i] + [v.get(k, "") for k in keys] for i, v in enumerate(plan.variants)]
    lines.append(text_table(["#"] + keys, rows))
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# storage helpers (local folder or object-store URI alike)


def _fs_and_path(path: str):
    import pyarrow.fs

    if is_uri(path):
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), path


def write_text(folder: str, name: str, text: str) -> None:
    fs, base = _fs_and_path(folder)
    fs.create_dir(base, recursive=True)
    with fs.open_output_stream(f"{base}/{name}") as out:
        out.write(text.encode())


def read_text(folder: str, name: str) -> Optional[str]:
    import pyarrow.fs

    fs, base = _fs_and_path(folder)
    path = f"{base}/{name}"
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(path) as src:
        return src.readall().decode()


# ---------------------------------------------------------------------------
# building and running the Tuner


def trial_dirname(trial) -> str:
    """'00003_name=geodesic,seed=1': the trial's index and what it varies."""
    index = trial.trial_id.rsplit("_", 1)[-1]
    label = trial.config.get("variant") or variant_label(
        {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in trial.config.items() if "." in k})
    return f"{index}_{label}"[:120] if label else f"trial_{index}"


def trainable_for(plan: StudyPlan):
    """The trainable with the study's base config and variants attached (the same on run and resume)."""
    from ray import tune

    from trainables.trainable import train_trial

    with_data = tune.with_parameters(train_trial, base=plan.base, variants=plan.variants_by_label(), verbose=False)
    return tune.with_resources(with_data, {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial})


def progress_reporter(plan: StudyPlan, keys: list[str]):
    """Ray's trial table with the columns a reader needs: what varies, the epoch and the main metrics."""
    from ray import tune

    metrics = {"epoch": "epoch", plan.metric: plan.metric}
    for name in ("val_loss", "reg_loss", "test_accuracy"):
        metrics.setdefault(name, name)
    params = {"variant": "variant"} if not plan.optuna else {k: k.rsplit(".", 1)[-1] for k in keys}
    return tune.CLIReporter(parameter_columns=params, metric_columns=metrics, max_report_frequency=30,
                            max_column_length=60)


def build_tuner(plan: StudyPlan, spec: StudySpec, callbacks: list):
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from study.schedulers import RecordingASHA  # deferred: it imports Ray, needed only when a study runs

    storage, name = experiment_location(plan.study_dir)
    scheduler = FIFOScheduler()
    if plan.asha:
        scheduler = RecordingASHA(time_attr="epoch", metric=plan.metric, mode=plan.mode, max_t=plan.epochs,
                                  grace_period=plan.asha["grace_period"],
                                  reduction_factor=plan.asha["reduction_factor"])
    search_alg = None
    if plan.optuna:
        search_alg = optuna_searcher(plan, spec)
        param_space: dict = {}
        num_samples = plan.num_samples
    else:
        param_space = {"variant": tune.grid_search(list(plan.variants_by_label()))}
        num_samples = 1
    tune_config = tune.TuneConfig(
        num_samples=num_samples, search_alg=search_alg, scheduler=scheduler,
        max_concurrent_trials=plan.max_concurrent if not plan.optuna else None,
        trial_dirname_creator=trial_dirname, reuse_actors=True,
        metric=None if (plan.asha or plan.optuna) else plan.metric, mode=None if (plan.asha or plan.optuna) else plan.mode,
    )
    run_config = tune.RunConfig(
        storage_path=storage, name=name, verbose=1, callbacks=callbacks,
        progress_reporter=progress_reporter(plan, spec.varied_keys()),
        failure_config=tune.FailureConfig(max_failures=plan.max_failures),
        # Local studies: study.recovery.StateKeeper deletes old checkpoints, only once a durable snapshot of
        # Ray's state no longer names them (Ray's own num_to_keep can leave a state naming a deleted one).
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2 if is_uri(plan.study_dir) else None),
    )
    return tune.Tuner(trainable_for(plan), param_space=param_space, tune_config=tune_config, run_config=run_config)


def optuna_searcher(plan: StudyPlan, spec: StudySpec):
    """OptunaSearch (TPE) over the space's define-by-run sampler, stored in STUDY_DIR/optuna.db."""
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    if is_uri(plan.study_dir):
        raise ConfigError(f"--storage {plan.study_dir}: Optuna spaces keep their SQLite study in the study "
                          "directory, which must be a local or shared-filesystem path")
    Path(plan.study_dir).mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{Path(plan.study_dir) / OPTUNA_FILE}")
    searcher = OptunaSearch(space=OptunaSpace(spec.optuna, plan.seeds[0]), metric=plan.metric,
                            mode=plan.mode, sampler=optuna.samplers.TPESampler(seed=plan.seeds[0]),
                            study_name=plan.space, storage=storage)
    return ConcurrencyLimiter(searcher, plan.max_concurrent) if plan.max_concurrent else searcher


class OptunaSpace:
    """Define-by-run function for OptunaSearch: sample the space's dotted keys, fix the seed."""

    def __init__(self, sampler, seed: int):
        self.sampler, self.seed = sampler, seed

    def __call__(self, trial) -> dict:
        self.sampler(trial)
        return {"train.seed": self.seed}


def quiet_tune_environment() -> None:
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


def run_study(plan: StudyPlan, spec: StudySpec):
    """Fit the planned study; returns Tune's ResultGrid (trials stopped by ASHA are finalized after)."""
    from study.progress import TrialLedger, TrialLines
    from study.recovery import StateKeeper

    quiet_tune_environment()
    plan.save()
    tuner = build_tuner(plan, spec, [TrialLines(plan.trial_count, plan.metric), StateKeeper(plan.study_dir),
                                     TrialLedger()])
    TrialLedger.active = None
    return tuner.fit()


def resume_study(plan: StudyPlan):
    """Finish an interrupted study (``StudyPlan.load`` of its directory, resources as Ray can give them):
    finished trials stay, interrupted ones continue, errored ones retry. Returns Tune's ResultGrid."""
    from ray import tune

    quiet_tune_environment()
    study_dir = plan.study_dir
    if not tune.Tuner.can_restore(study_dir):
        raise ConfigError(f"'{study_dir}' holds no Ray Tune experiment state to resume (was it started?)")
    if not is_uri(study_dir):
        from study.cluster import notice
        from study.recovery import install_snapshot

        repaired = install_snapshot(study_dir)
        if repaired:
            notice(repaired)
    if plan.optuna:
        # The saved searcher refers to the space's sampler function by module: import that module again.
        from search_spaces.spec import load_space

        module = plan.module.removeprefix("search_spaces.")
        try:
            load_space(module)
        except ConfigError as exc:
            raise ConfigError(f"cannot resume '{study_dir}': its Optuna space {plan.module} cannot be loaded "
                              f"({exc})") from None
    tuner = tune.Tuner.restore(study_dir, trainable=trainable_for(plan), resume_unfinished=True,
                               resume_errored=True)
    from study.progress import TrialLedger

    TrialLedger.active = None  # studies from before the ledger existed resume without one
    return tuner.fit()


# ---------------------------------------------------------------------------
# one trial (geotune train)


@dataclass
class TrialOutcome:
    trial_dir: Path
    metrics: dict
    error: Optional[str]
    interrupted: bool = False   # Ctrl-C: the trial stopped mid-way and can be resumed


def train_plan(cfg: TrialConfig, out_dir: str | Path, cpus: float, gpus: float) -> StudyPlan:
    """The plan of `geotune train`: one trial, saved as study.json so the folder can be resumed."""
    study_dir = str(Path(out_dir).expanduser().resolve())
    return StudyPlan(space="train", module="geotune train", question="one trial of a config", study_dir=study_dir,
                     base=absolute_data_root(cfg.to_dict()), variants=[{}], optuna=False, num_samples=1,
                     seeds=[cfg.train.seed], metric="val_accuracy", mode="max", asha=None, cpus_per_trial=cpus,
                     gpus_per_trial=gpus, max_concurrent=None, max_failures=0,
                     created=time.strftime("%Y-%m-%d %H:%M:%S"), command=sys.argv[1:], kind="train")


def single_trial_trainable(plan: StudyPlan):
    from ray import tune

    from trainables.trainable import train_trial

    return tune.with_resources(train_trial, {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial})


def run_single_trial(plan: StudyPlan, verbose: int = 1, resume: bool = False) -> TrialOutcome:
    """Run (or resume) the one trial of ``plan``; its directory is ``STUDY_DIR/trial``."""
    from ray import tune

    from study.progress import TrialLedger, unfinished_count

    quiet_tune_environment()

    if resume:
        tuner = tune.Tuner.restore(plan.study_dir, trainable=single_trial_trainable(plan), resume_unfinished=True,
                                   resume_errored=True)
    else:
        plan.save()
        storage, name = experiment_location(plan.study_dir)
        tuner = tune.Tuner(
            single_trial_trainable(plan), param_space=plan.base,
            tune_config=tune.TuneConfig(num_samples=1, trial_dirname_creator=lambda trial: "trial"),
            run_config=tune.RunConfig(storage_path=storage, name=name, verbose=verbose, callbacks=[TrialLedger()],
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
        )
    TrialLedger.active = None
    results = tuner.fit()
    result = results[0]
    trial_dir = Path(result.path)
    metrics_file = trial_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else dict(result.metrics or {})
    interrupted = unfinished_count(results) > 0
    return TrialOutcome(trial_dir, metrics, summarize_error(result.error) if result.error else None, interrupted)


def summarize_error(error) -> str:
    """The one line that says why a trial failed (the innermost exception, not Ray's wrapper)."""
    text = error if isinstance(error, str) else str(error)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):  # Ray's task errors embed the remote traceback; find the exception line
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception", "Interrupt")) and " " not in head:
            return line
    return lines[-1] if lines else "unknown error"
