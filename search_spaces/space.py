"""What a named study is: its question, base config, the trials it plans, how it ranks and stops them.

A search-space module defines ``SPACE = SearchSpace(...)``. Grid spaces list *arms*:
each arm maps dotted config keys to lists of values and contributes the cartesian
product of its lists; the plan is the union of the arms, times the seeds. This
expresses "a baseline plus a grid of the regularized variants" without running
the baseline once per grid point. Optuna spaces give a define-by-run function
instead, which samples dotted keys through an ``optuna.Trial``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import itertools
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from geotune.config import SEGMENTATION_DATASETS, TrialConfig
from geotune.config_loading import merge, parse_value, split_assignment, variant_config
from geotune.errors import ConfigError
from geotune.references import import_file
from geotune.variants import keys_of, variant_label


@dataclass
class Asha:
    """Asynchronous successive halving, on the trial's epoch counter."""

    grace_period: int = 2  # epochs every trial trains before it may be stopped
    reduction_factor: int = 2  # at each rung only the best 1/reduction_factor go on


MAX_TRIALS = 20_000  # trials one study may plan: a bigger plan is refused with its count before it is built


def check_trial_count(count: int, what: str) -> None:
    if count > MAX_TRIALS:
        raise ConfigError(
            f"{what} {count:,} trials; a study plans at most {MAX_TRIALS:,} (fewer seeds or levels, or several "
            "studies, which `geotune report` reads as one)"
        )


@dataclass
class SearchSpace:
    name: str
    question: str  # the research question the study answers
    base: dict  # trial config shared by every trial (over the defaults)
    grid: list[dict] = field(default_factory=list)  # arms: {dotted key: [values]}; union of cartesian products
    seeds: list[int] = field(default_factory=lambda: [0])  # train.seed of every planned variant
    optuna: Callable[[Any], None] | None = None  # define-by-run sampler of dotted keys (Optuna spaces)
    num_samples: int = 1  # Optuna: trials to sample (grid spaces use seeds)
    metric: str = "val_accuracy"  # what the scheduler and searcher rank by
    mode: str = "max"  # "max" or "min"
    asha: Asha | None = None  # None: every trial trains to the end (fair comparisons)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0  # fractional GPUs share one device (memory is not isolated)
    max_concurrent: int | None = None  # None: as many as resources allow
    module: str = ""  # where the space came from (set on loading)
    # base overrides for other data sets than the base's own, by dataset.name (e.g. {"mnist": {...}}); see
    # base_for_dataset: the base's own dataset.* settings are left out on another data set
    per_dataset: dict[str, dict] = field(default_factory=dict)
    # extra Ray Tune callbacks: each is called with the StudyPlan and returns a tune.Callback (a logger of the
    # lab's own, a notifier); they run beside geotune's and --logger's, and are restored with a resumed study
    callbacks: list[Callable[[Any], Any]] = field(default_factory=list)
    # Optuna spaces: the two (metric, mode) objectives of the multi-objective mode `geotune run --pareto` turns on
    pareto: list[tuple[str, str]] = field(default_factory=list)
    # trackers every run of the space logs to, as --logger takes them (e.g. ["mlflow"]); a --logger of the same
    # kind on the command line wins
    loggers: list[str] = field(default_factory=list)
    # the level each varied key's other levels are compared with in the report, e.g. {"model.batch_norm": False};
    # a key left out: regularizer.name's 'none', else the first level the grid lists
    reference: dict[str, Any] = field(default_factory=dict)

    @property
    def own_dataset(self) -> str:
        """The data set the space was written for: its base's dataset.name, else the default."""
        return self.base.get("dataset", {}).get("name", TrialConfig().dataset.name)

    def base_for_dataset(self, name: str | None) -> tuple[dict, list[str]]:
        """(base config, dotted keys left out) for running this space on data set ``name``.

        A space's ``dataset.*`` settings (image size, augmentation, classes, ...) were chosen for its own
        data set; on another one they are left out, except ``root`` and ``download``, and the space's
        ``per_dataset`` entry for it, if any, is merged in.
        """
        if name is None or name == self.own_dataset:
            return self.base, []
        kept = {"root", "download"}
        dataset = {k: v for k, v in self.base.get("dataset", {}).items() if k in kept}
        dropped = sorted(f"dataset.{k}" for k in self.base.get("dataset", {}) if k not in kept | {"name"})
        base = merge({**self.base, "dataset": dataset}, self.per_dataset.get(name, {}))
        return base, dropped

    @property
    def is_optuna(self) -> bool:
        return self.optuna is not None

    def variants(self) -> list[dict]:
        """The planned trials (grid spaces): dotted-key overrides, seeds included; more than MAX_TRIALS is refused
        with the count before any is built."""
        if self.is_optuna:
            check_trial_count(self.num_samples, f"space '{self.name}' samples")
            return []
        arms = self.grid or [{}]
        upper = sum(math.prod(len(values) for values in arm.values()) for arm in arms) * len(self.seeds)
        check_trial_count(upper, f"space '{self.name}' plans {len(arms)} arm(s) x {len(self.seeds)} seed(s):")
        planned: list[dict] = []
        seen: set[str] = set()  # arms may overlap; a variant is planned once (a set: 20,000 trials stay quick)
        for arm in arms:
            keys = list(arm)
            for values in itertools.product(*(arm[k] for k in keys)):
                for seed in self.seeds:
                    variant = dict(zip(keys, values))
                    variant["train.seed"] = seed
                    key = repr(sorted(variant.items(), key=lambda item: item[0]))
                    if key not in seen:
                        seen.add(key)
                        planned.append(variant)
        return planned

    @property
    def trial_count(self) -> int:
        return self.num_samples if self.is_optuna else len(self.variants())

    def varied_keys(self) -> list[str]:
        keys = keys_of(self.grid)
        if self.is_optuna:
            keys.extend(k for k in sample_optuna_keys(self) if k not in keys)
        if len(self.seeds) > 1 or self.is_optuna:
            keys.append("train.seed")
        return keys


def sample_optuna_keys(space: SearchSpace) -> list[str]:
    """The dotted keys an Optuna space samples, found by running it once on a throwaway study."""
    return list(_sample_optuna(space)[0].keys())


def _sample_optuna(space: SearchSpace) -> tuple[dict, dict]:
    """(one sample of the space's keys, their distributions), from a throwaway study."""
    if space.optuna is None:
        raise ValueError(f"space '{space.name}' is a grid: it samples nothing")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    space.optuna(trial)
    return dict(trial.params), dict(trial.distributions)


def optuna_extremes(space: SearchSpace) -> list[dict]:
    """One sample, then the same with each numeric key at the low and at the high end of its range:
    a range that reaches past what a config allows (a start epoch after the last) fails now."""
    params, distributions = _sample_optuna(space)
    out = [params]
    for key, dist in distributions.items():
        if hasattr(dist, "low") and hasattr(dist, "high"):
            out += [{**params, key: dist.low}, {**params, key: dist.high}]
    return out


def planned_configs(space: SearchSpace, base: dict, variants: list[dict] | None = None) -> list[TrialConfig]:
    """Validate every planned trial's full config now, before anything starts: of each of ``variants`` (the
    space's own by default) over ``base``; for Optuna, of a sample and the ends of every sampled range."""
    if space.is_optuna:
        variants = [{**params, "train.seed": space.seeds[0]} for params in optuna_extremes(space)]
    elif variants is None:
        variants = space.variants()
    configs = []
    for variant in variants:
        try:
            configs.append(variant_config(base, variant))
        except ConfigError as exc:
            raise ConfigError(f"space '{space.name}', trial {variant_label(variant)}: {exc}") from None
    return configs


# The base of the built-in studies: the embedded digits, upsampled once to 16 px so
# two conv blocks keep a 4x4 map; batches of 128 hold about 13 images per class,
# room for the 5-NN per-class graphs of the geodesic regularizer.
DIGITS_CNN = {
    "dataset": {"name": "digits", "image_size": 16, "augment": True, "augment_translate": 1, "augment_rotate": 8.0},
    "model": {"type": "simple_cnn", "channels": [32, 64], "hidden_dim": 64},
    "train": {"epochs": 12, "batch_size": 128, "lr": 0.002, "patience": 0},
    "regularizer": {
        "geodesic": {"lambda_reg": 0.5, "n_neighbors": 5, "start_epoch": 2},
        "geometry": {"lambda_reg": 0.1, "target_dim": 8.0},
    },
}


# ---------------------------------------------------------------------------
# a grid from the command line (`geotune run --sweep key=v1,v2`)

SWEEP_SPACE = "sweep"  # the name of a study whose grid came from --sweep alone


def parse_sweep(text: str, option: str = "--sweep") -> tuple[str, list]:
    """``train.lr=1e-3,1e-2`` -> ('train.lr', [0.001, 0.01]); the values are read as one YAML flow sequence,
    so commas inside brackets belong to one value (``model.channels=[16,32],[32,64]``). ``option`` names the
    flag in errors."""
    key, raw = split_assignment(text, option, "section.key=value1,value2, e.g. train.lr=1e-3,1e-2")
    if "." not in key:
        raise ConfigError(f"{option} {text!r}: '{key}' is not a dotted key such as train.lr")
    try:  # YAML's flow sequences allow a trailing comma ([1e-3,] is one value): an empty value is refused first
        parsed = None if raw.strip().startswith(",") or raw.strip().endswith(",") else yaml.safe_load(f"[{raw}]")
    except yaml.YAMLError:
        parsed = None
    if not parsed or any(value is None for value in parsed):
        raise ConfigError(f"{option} {text!r}: expected values separated by commas, none of them empty")
    values = [parse_value(value) if isinstance(value, str) else value for value in parsed]
    if len(set(map(repr, values))) < len(values):
        raise ConfigError(f"{option} {text!r}: a value appears twice")
    return key, values


def with_sweeps(space: SearchSpace | None, sweeps: list[str], base: dict) -> SearchSpace:
    """The space crossed with the --sweep values (every arm times every combination), or, without a space,
    a grid of its own over ``base`` (the user's config files and overrides)."""
    arm: dict[str, list] = {}
    for text in sweeps:
        key, values = parse_sweep(text)
        if key in arm:
            raise ConfigError(f"--sweep {text!r}: '{key}' is swept twice; give all its values in one --sweep")
        if key == "train.seed":
            raise ConfigError(f"--sweep {text!r}: seeds come from --seeds N (0..N-1), not from a sweep")
        arm[key] = values
    if space is None:
        task_metric = "val_miou" if base.get("dataset", {}).get("name") in SEGMENTATION_DATASETS else "val_accuracy"
        return SearchSpace(
            name=SWEEP_SPACE,
            question=("how does " if len(arm) == 1 else "how do ")
            + ", ".join(arm)
            + " change the trained network and its latent geometry?",
            base=base,
            grid=[arm] if arm else [],
            metric=task_metric,
            module="geotune run --sweep",
        )
    for key in arm:
        if key in space.varied_keys():
            raise ConfigError(f"--sweep {key}: the space '{space.name}' varies '{key}' itself")
    return dataclasses.replace(space, grid=[{**existing, **arm} for existing in (space.grid or [{}])])


# ---------------------------------------------------------------------------
# finding spaces


def builtin_space_names() -> list[str]:
    from geotune import search_spaces  # this floor's own package: its folder lists the spaces

    not_spaces = ("space", "spec")  # this module, and its name before 0.3
    return sorted(m.name for m in pkgutil.iter_modules(search_spaces.__path__) if m.name not in not_spaces)


def load_space(name_or_path: str) -> SearchSpace:
    """A built-in space by name, or a user's module by file path (it must define SPACE)."""
    path = Path(name_or_path)
    if name_or_path.endswith(".py") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"search-space file '{path}' does not exist")
        # imported anew on every load: a space file may change between two loads in one process
        module = import_file(path, f"geotune_user_space_{path.stem}", f"search-space file '{path}'", cached=False)
        where = str(path.resolve())
    else:
        if name_or_path not in builtin_space_names():
            raise ConfigError(
                f"unknown search space '{name_or_path}'; built-in spaces: "
                f"{', '.join(builtin_space_names())} (or pass a path to a .py file defining SPACE)"
            )
        module = importlib.import_module(f"geotune.search_spaces.{name_or_path}")
        where = f"geotune.search_spaces.{name_or_path}"
    space = getattr(module, "SPACE", None)
    if not isinstance(space, SearchSpace):
        raise ConfigError(f"search space '{name_or_path}' does not define SPACE = SearchSpace(...)")
    if space.mode not in ("max", "min"):
        raise ConfigError(f"search space '{space.name}': mode = {space.mode!r}; allowed values are max, min")
    return dataclasses.replace(space, module=where)  # a copy: changing it leaves the module's SPACE as written
