"""Planning a study: a search space and the user's overrides -> a validated ``StudyPlan``.

Everything that can be known before Ray starts is checked here (every planned
trial's config, resources, early-stopping settings, a writable and empty study
directory), so bad input costs seconds, not a cluster's worth of failed trials.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna

from geotune.analysis.tables import text_table
from geotune.config import KEEP_METRICS, WEIGHT_FILE_SUFFIXES, TrialConfig
from geotune.config_loading import fit_to_epochs, merge
from geotune.errors import ConfigError
from geotune.layout import PlanKind, StudyPlan
from geotune.provenance import versions
from geotune.references import absolute_reference, is_reference
from geotune.search_spaces.space import SearchSpace, planned_configs
from geotune.storage import is_uri
from geotune.trainables.trial import check_config
from geotune.variants import keys_of, variant_labels

MAX_FAILURES = 20  # --max-failures bound: Ray's -1 (retry forever) would loop on a diverging config


MAX_NAME_BYTES = 255  # what ext4, APFS and NTFS allow in one path component


def refuse_existing_results(out_dir: str | Path, what: str = "OUT_DIR") -> None:
    """Never overwrite finished work: an experiment folder that already holds results is an error."""
    if is_uri(str(out_dir)):
        return
    path = Path(out_dir).expanduser()
    long = next((part for part in path.parts if len(part.encode()) > MAX_NAME_BYTES), None)
    if long is not None:
        raise ConfigError(
            f"{what} '{str(path)[:80]}...': the folder name '{long[:40]}...' is {len(long.encode())} bytes; "
            f"a folder name holds at most {MAX_NAME_BYTES}"
        )
    if path.is_file():
        raise ConfigError(f"{what} '{path}' is a file, not a folder")
    if path.is_dir() and any(path.iterdir()):
        raise ConfigError(
            f"{what} '{path}' already holds results; choose a new folder "
            "(or 'geotune resume' it if it is an interrupted study)"
        )
    created = [p for p in [path, *path.parents] if not p.exists()]
    probe = path / ".geotune-write-test"
    try:  # a read-only, full or file-blocked storage fails here, before Ray starts, not in every trial
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"{what} '{path}' cannot be written ({exc.strerror or type(exc).__name__}"
            f"{': ' + exc.filename if exc.filename and str(exc.filename) != str(probe) else ''})"
        ) from None
    finally:
        for folder in created:  # leave no trace: a refused command must not leave an empty study folder
            try:
                folder.rmdir()
            except OSError:
                break


def absolute_paths(base: dict) -> dict:
    """Tune runs trials with the trial folder as working directory: make dataset.root, train.init_from,
    model.weights (a file) and the files of references to the user's code absolute here."""
    root = base.get("dataset", {}).get("root")
    root = root if root is not None else TrialConfig().dataset.root
    base = merge(base, {"dataset": {"root": str(Path(root).expanduser().resolve())}})
    init = base.get("train", {}).get("init_from")
    if isinstance(init, str):
        base = merge(base, {"train": {"init_from": str(Path(init).expanduser().resolve())}})
    weights = base.get("model", {}).get("weights")
    if isinstance(weights, str) and (weights.endswith(WEIGHT_FILE_SUFFIXES) or Path(weights).expanduser().is_file()):
        base = merge(base, {"model": {"weights": str(Path(weights).expanduser().resolve())}})
    for dotted in REFERENCE_KEYS:
        section, key = dotted.split(".")
        if key in base.get(section, {}):
            base = merge(base, {section: {key: _absolute_if_reference(dotted, base[section][key])}})
    return base


REFERENCE_KEYS = ("dataset.name", "model.type")  # keys whose value may name the user's code


def _absolute_if_reference(dotted: str, value: object) -> object:
    return absolute_reference(dotted, value) if isinstance(value, str) and is_reference(value) else value


def absolute_variant(variant: dict) -> dict:
    """A planned variant with the files of its references to the user's code made absolute (see absolute_paths)."""
    return {
        key: _absolute_if_reference(key, value) if key in REFERENCE_KEYS else value for key, value in variant.items()
    }


@dataclass
class RunOptions:
    storage: str = "runs"
    name: str | None = None
    num_samples: int | None = None
    max_concurrent: int | None = None
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    asha: bool = True
    max_failures: int = 2
    pareto: bool = False  # Optuna spaces: search the space's two objectives (SearchSpace.pareto) at once


def make_plan(space: SearchSpace, user: dict, options: RunOptions) -> StudyPlan:
    """Resolve a space with the user's config overrides and options; validate every planned trial."""
    if options.num_samples is not None and options.num_samples < 1:
        raise ConfigError(f"--num-samples {options.num_samples}: must be >= 1")
    # a copy: a built-in space is one object per process (a notebook, the in-process CLI), never changed by a plan
    if options.num_samples and not space.is_optuna:
        space = dataclasses.replace(space, seeds=list(range(options.num_samples)))  # grid spaces: N seeds a variant
    elif options.num_samples:
        space = dataclasses.replace(space, num_samples=options.num_samples)
    for key in space.varied_keys():
        if _has_dotted(user, key):
            raise ConfigError(
                f"config key '{key}' is varied by the space '{space.name}'; a fixed value "
                "from --config/--set would be overridden (write your own space instead)"
            )
    chosen = user.get("dataset", {}).get("name") if isinstance(user.get("dataset"), dict) else None
    space_base, dropped = space.base_for_dataset(chosen)
    dropped = [key for key in dropped if not _has_dotted(user, key)]
    base, fitted = fit_to_epochs(
        absolute_paths(merge(space_base, user)), user if _has_dotted(user, "train.epochs") else None
    )
    if space.metric in KEEP_METRICS and not _has_dotted(base, "train.keep_by"):
        base = merge(base, {"train": {"keep_by": space.metric}})  # keep each trial's best epoch by the study's metric
    variants = [absolute_variant(v) for v in space.variants()]
    check_reference(space, variants)
    configs = planned_configs(space, base, variants)
    seen, warnings = set(), list(fitted)
    if dropped:
        own = space.own_dataset
        warnings.append(
            f"space '{space.name}' was written for {own}: on {chosen} it leaves out its {own} settings "
            f"{', '.join(dropped)}"
            + (f" and uses its settings for {chosen}" if chosen in space.per_dataset else "")
            + " (set any of them with --set to keep it)"
        )
    memo: dict = {}  # data files read and networks built once for every config that shares them
    resolved = [c.to_dict() for c in configs]  # each once: the plan keeps them (trials) and keys the checks by them
    for cfg, whole in zip(configs, resolved):  # shapes and data files, once per distinct trial (not per seed)
        unseeded = {**whole, "train": {k: v for k, v in whole["train"].items() if k != "seed"}}
        key = json.dumps(unseeded, sort_keys=True, default=repr)
        if key not in seen:
            seen.add(key)
            warnings += [w for w in check_config(cfg, memo) if w not in warnings]
    cpus = options.cpus_per_trial if options.cpus_per_trial is not None else space.cpus_per_trial
    gpus = options.gpus_per_trial if options.gpus_per_trial is not None else space.gpus_per_trial
    if not (math.isfinite(cpus) and cpus > 0):
        raise ConfigError(f"--cpus-per-trial {cpus:g}: must be a number > 0")
    if not math.isfinite(gpus) or gpus < 0 or (gpus > 1 and gpus != int(gpus)):
        raise ConfigError(f"--gpus-per-trial {gpus:g}: must be a fraction in (0, 1] or a whole number")
    if options.max_concurrent is not None and options.max_concurrent < 1:
        raise ConfigError(f"--max-concurrent {options.max_concurrent}: must be >= 1")
    if not 0 <= options.max_failures <= MAX_FAILURES:
        raise ConfigError(
            f"--max-failures {options.max_failures}: must be in 0..{MAX_FAILURES} (retries of a "
            "crashed trial; a deterministic failure fails again)"
        )
    objectives: list[list[str]] = []
    if options.pareto:
        if not space.is_optuna or len(space.pareto) != 2:
            raise ConfigError(
                f"--pareto: space '{space.name}' declares no two objectives (SearchSpace.pareto, Optuna spaces)"
            )
        objectives = [list(objective) for objective in space.pareto]
        if space.asha and options.asha:
            warnings.append("--pareto: ASHA is off (it ranks by one metric; the objectives are final metrics)")
        options.asha = False
    epochs = min(cfg.train.epochs for cfg in configs)
    if space.asha and options.asha and space.asha.grace_period > epochs:
        raise ConfigError(
            f"space '{space.name}': ASHA's grace period ({space.asha.grace_period} epochs) exceeds "
            f"train.epochs ({epochs}); raise train.epochs or run with --no-asha"
        )
    name = options.name if options.name is not None else f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    check_folder_name(name, "--name")
    storage = options.storage if is_uri(options.storage) else str(Path(options.storage).expanduser().resolve())
    study_dir = f"{storage.rstrip('/')}/{name}"
    return StudyPlan(
        space=space.name,
        module=space.module,
        question=space.question,
        study_dir=study_dir,
        base=base,
        variants=variants,
        optuna=space.is_optuna,
        num_samples=space.num_samples,
        seeds=list(space.seeds),
        metric=objectives[0][0] if objectives else space.metric,
        mode=objectives[0][1] if objectives else space.mode,
        asha=asdict(space.asha) if (space.asha and options.asha) else None,
        cpus_per_trial=cpus,
        gpus_per_trial=gpus,
        max_concurrent=options.max_concurrent or space.max_concurrent,
        max_failures=options.max_failures,
        created=time.strftime("%Y-%m-%d %H:%M:%S"),
        command=sys.argv[1:],
        warnings=warnings,
        versions=versions(),
        objectives=objectives,
        # each trial's config, resolved once here: workers, resources, --reuse and the analysis read it
        reference=dict(space.reference),
        trials={} if space.is_optuna else dict(zip(variant_labels(variants), resolved)),
    )


def check_folder_name(name: str, flag: str) -> None:
    """``name`` is one plain folder inside the storage: not empty, not . or .., no separator, at most 255 bytes."""
    why = (
        "is empty"
        if not name.strip()
        else "is not a folder name"
        if name in (".", "..")
        else "holds a path separator: give one folder name (--storage says where it goes)"
        if "/" in name or "\\" in name or "\0" in name
        else f"is {len(name.encode())} bytes; a folder name holds at most {MAX_NAME_BYTES}"
        if len(name.encode()) > MAX_NAME_BYTES
        else None
    )
    if why:
        raise ConfigError(f"{flag} {name[:60]!r}: {why}")


def check_reference(space: SearchSpace, variants: list[dict]) -> None:
    """A space's reference names keys it varies, each at a level its grid plans."""
    for key, level in space.reference.items():
        if key not in space.varied_keys():
            raise ConfigError(f"space '{space.name}': reference '{key}' is not a key the space varies")
        planned = [v[key] for v in variants if key in v]
        if planned and level not in planned:
            levels = ", ".join(dict.fromkeys(map(str, planned)))
            raise ConfigError(f"space '{space.name}': reference {key} = {level!r} is not one of its levels ({levels})")


def _has_dotted(nested: dict, key: str) -> bool:
    node = nested
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def plan_text(plan: StudyPlan, space: SearchSpace | None = None, reused: dict[str, str] | None = None) -> str:
    """The trial plan and resources, as `--dry-run` prints it; ``reused``: trials --reuse would take."""
    reused = reused or {}
    lines = [
        f"study '{plan.space}': {plan.question}",
        f"  study directory : {plan.study_dir}",
        f"  trials          : {plan.trial_count} ({'Optuna TPE samples' if plan.optuna else 'grid'})",
        f"  per trial       : {plan.cpus_per_trial:g} CPU, {plan.gpus_per_trial:g} GPU"
        + (f"; at most {plan.max_concurrent} at once" if plan.max_concurrent else ""),
        f"  ranked by       : {plan.metric} ({plan.mode})"
        + (f"; Pareto front with {plan.objectives[1][0]} ({plan.objectives[1][1]})" if plan.objectives else ""),
        "  early stopping  : "
        + (
            f"ASHA on epochs (grace period {plan.asha['grace_period']}, reduction "
            f"factor {plan.asha['reduction_factor']}, max {plan.epochs})"
            if plan.asha
            else "none: every trial trains to the end"
        )
        + f"; patience {plan.base_config().train.patience or 'off'}",
    ]
    if plan.loggers:
        sources = "(--logger, logging.loggers, or the space's loggers)"
        lines.append(f"  trackers        : {', '.join(plan.loggers)} {sources}")
    lines.append("")
    if plan.optuna:
        lines.append(f"Optuna samples these keys (seed {plan.seeds[0]}), TPE with {plan.num_samples} trials:")
        study = optuna.create_study()
        trial = study.ask()
        if space is not None and space.optuna is not None:
            space.optuna(trial)
            for key, dist in trial.distributions.items():
                lines.append(f"  {key}: {dist}")
        return "\n".join(lines)
    keys = keys_of(plan.variants)
    labels = list(plan.variants_by_label())
    rows = [
        [i] + [v.get(k, "") for k in keys] + ([reused.get(labels[i], "train here")] if reused else [])
        for i, v in enumerate(plan.variants)
    ]
    lines.append(text_table(["#"] + keys + (["taken from"] if reused else []), rows))
    if reused:
        lines.append(
            f"\n{len(reused)} of {plan.trial_count} trials are taken from earlier studies; "
            f"{plan.trial_count - len(reused)} train"
        )
    return "\n".join(lines)


def train_plan(cfg: TrialConfig, out_dir: str | Path, cpus: float, gpus: float) -> StudyPlan:
    """The plan of `geotune train`: one trial, saved as study.json so the folder can be resumed."""
    study_dir = str(Path(out_dir).expanduser().resolve())
    resolved = absolute_paths(cfg.to_dict())
    return StudyPlan(
        space="train",
        module="geotune train",
        question="one trial of a config",
        study_dir=study_dir,
        base=resolved,
        variants=[{}],
        trials={"": resolved},  # the one trial's config is the base, whole
        optuna=False,
        num_samples=1,
        seeds=[cfg.train.seed],
        metric="val_accuracy",
        mode="max",
        asha=None,
        cpus_per_trial=cpus,
        gpus_per_trial=gpus,
        max_concurrent=None,
        max_failures=RunOptions.max_failures,  # `train --ray` retries a crashed trial as `run` does
        created=time.strftime("%Y-%m-%d %H:%M:%S"),
        command=sys.argv[1:],
        kind=PlanKind.TRAIN,
        versions=versions(),
    )
