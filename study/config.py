"""The trial config: schema, defaults, YAML and ``--set`` loading, validation.

Every hyperparameter is declared once below, with its default, its allowed
values and a one-line meaning. A YAML file overrides the defaults and
``--set section.key=value`` overrides the file. Anything that cannot be right
(an unknown key, a wrong type, a negative learning rate) raises
:class:`ConfigError` before anything trains; its message is one line naming the
key, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml


class ConfigError(ValueError):
    """A config value that cannot be used; the message is one line for the user."""


def param(default: Any, help: str, *, choices: tuple | None = None, ge: float | None = None,
          gt: float | None = None, le: float | None = None, lt: float | None = None) -> Any:
    """Declare one config key: its default, meaning and allowed range."""
    meta = {"help": help, "choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    if dataclasses.is_dataclass(default):
        return field(default_factory=type(default), metadata=meta)
    return field(default=default, metadata=meta)


DATASETS = ("digits", "shapes", "mnist", "fashion_mnist", "cifar10", "cifar100", "image_folder")
MODELS = ("fc", "simple_cnn", "resnet_basic", "resnet_bottleneck")
REGULARIZERS = ("none", "geodesic", "geometry", "combined")


@dataclass
class ShapesConfig:
    num_samples: int = param(1500, "number of images generated (classes balanced)", ge=3)
    delta: int = param(15, "each RGB channel is drawn uniformly from class centre +/- delta", ge=0, le=42)
    min_extent: float = param(0.3, "smallest rectangle side, as a fraction of the image side", gt=0, le=1)
    max_extent: float = param(0.8, "largest rectangle side, as a fraction of the image side", gt=0, le=1)


@dataclass
class DatasetConfig:
    name: str = param("digits", "which data set to train on", choices=DATASETS)
    root: str = param("data", "folder holding on-disk data sets (mnist, fashion_mnist, cifar*, image_folder)")
    download: bool = param(False, "let torchvision download mnist/fashion_mnist/cifar10/cifar100 into root")
    val_ratio: float = param(0.15, "fraction of the training data held out for validation (stratified)", gt=0, lt=1)
    test_ratio: float = param(0.15, "fraction held out for test where the data set has no official test split", gt=0, lt=1)
    split_seed: int = param(0, "seed of the stratified splits and of synthetic data generation", ge=0, le=2**32 - 1)
    classes: Optional[list[Union[int, str]]] = param(
        None, "keep only these classes (indices, or folder names for image_folder), relabelled 0..n-1")
    image_size: Optional[int] = param(None, "resize images once at load to this square size; null keeps the native size", ge=4)
    grayscale: bool = param(False, "image_folder only: decode images as one grey channel instead of RGB")
    augment: bool = param(False, "augment training batches on the device (vectorized flips, translations, rotations)")
    augment_flip: bool = param(False, "random horizontal flips (leave off for digits: a mirrored glyph is another glyph)")
    augment_translate: int = param(2, "random translation of up to this many pixels (a padded random crop)", ge=0)
    augment_rotate: float = param(10.0, "random rotation within +/- this many degrees", ge=0, le=180)
    shapes: ShapesConfig = param(ShapesConfig(), "settings of the synthetic coloured-rectangles data set")


@dataclass
class ModelConfig:
    type: str = param("simple_cnn", "network body", choices=MODELS)
    input_shape: Optional[list[int]] = param(None, "[channels, height, width]; null takes it from the data set")
    num_classes: Optional[int] = param(None, "number of outputs; null takes it from the data set", ge=2)
    hidden_dim: int = param(64, "size of the embedding (latent vector) that the geometry work measures", ge=2)
    channels: list[int] = param([32, 64], "conv channels per block (simple_cnn), per stage (resnets) or hidden widths (fc)")
    kernel_size: int = param(3, "convolution kernel size", choices=(3, 5, 7))
    pooling: str = param("max", "how each conv block downsamples by 2", choices=("stride", "max", "avg"))
    batch_norm: bool = param(True, "BatchNorm after each convolution (and hidden layer of fc)")
    dropout: float = param(0.1, "dropout probability before the embedding layer and inside the mlp head", ge=0, lt=1)
    blocks_per_stage: int = param(1, "residual blocks per stage (resnet_basic, resnet_bottleneck)", ge=1)
    head_type: str = param("linear", "map from embedding to logits", choices=("linear", "mlp"))
    output: str = param("softmax", "output layer: softmax + cross-entropy, or sparsemax + sparsemax loss",
                        choices=("softmax", "sparsemax"))


@dataclass
class TrainConfig:
    batch_size: int = param(128, "examples per optimisation step", ge=2)
    epochs: int = param(15, "maximum number of passes over the training split", ge=1, le=100_000)
    lr: float = param(1e-3, "peak learning rate", gt=0)
    optimizer: str = param("adam", "optimiser", choices=("adam", "adamw", "sgd"))
    momentum: float = param(0.9, "SGD momentum (sgd only)", ge=0, lt=1)
    weight_decay: float = param(0.0, "L2 weight decay (decoupled for adamw)", ge=0)
    scheduler: str = param("cosine", "learning-rate schedule, stepped once per epoch",
                           choices=("none", "cosine", "step", "plateau"))
    lr_step_size: int = param(10, "step: epochs between decays; plateau: epochs without improvement before a decay", ge=1)
    lr_gamma: float = param(0.1, "step/plateau: factor applied to the learning rate at each decay", gt=0, lt=1)
    seed: int = param(0, "seed of weight init, batch order, augmentation and dropout", ge=0, le=2**32 - 1)
    device: str = param("auto", "where the trial runs; auto takes the GPU Ray assigned, if any",
                        choices=("auto", "cpu", "cuda"))
    patience: int = param(5, "stop after this many epochs without a lower val_loss; 0 never stops early", ge=0)
    precision: str = param("fp32", "autocast precision for forward passes (bf16 on GPU or recent CPUs)",
                           choices=("fp32", "bf16"))
    channels_last: bool = param(True, "store conv activations channels-last (1.3-1.8x faster CNN steps on CPU, "
                                      "faster with bf16 on GPUs)")
    deterministic: bool = param(True, "use deterministic kernels, so a seed reproduces a run bit for bit on CPU")
    num_threads: Optional[int] = param(None, "torch CPU threads; null follows the CPUs Ray gives the trial", ge=1)


@dataclass
class GeodesicConfig:
    lambda_reg: float = param(0.1, "strength of the geodesic-flatness penalty", ge=0)
    target: str = param("flat", "flat: pull pairs that must bend towards their straight chord (flat data of any "
                                "shape is left alone); fixed: pull every kNN-graph ratio to target_ratio "
                                "(the original platform; rewards collapse)", choices=("flat", "fixed"))
    target_ratio: float = param(1.0, "target: fixed only: geodesic/Euclidean ratio the penalty pulls towards", ge=1)
    n_neighbors: int = param(5, "k of the batch's symmetric kNN graph; keep well below batch_size / classes", ge=1)
    start_epoch: int = param(1, "first epoch (1-based) in which the penalty is applied", ge=1)
    every_n_steps: int = param(1, "apply the penalty on every n-th training step only", ge=1)
    per_class: bool = param(True, "build one graph per class in the batch instead of one for the whole batch")
    exclude_direct: bool = param(False, "target: fixed only: leave out pairs joined by one edge (ratio 1 by "
                                        "construction)")
    max_sources: int = param(0, "geodesics from at most this many random points per batch (a cheaper estimate); 0 = all",
                             ge=0)


@dataclass
class GeometryConfig:
    lambda_reg: float = param(0.1, "strength of the geometry penalty", ge=0)
    class_weight: float = param(1.0, "weight of the class-structure term (intra-class spread / centroid separation)", ge=0)
    dim_weight: float = param(0.1, "weight of the local-intrinsic-dimension term", ge=0)
    target_dim: float = param(8.0, "intrinsic dimension the dimension term pulls towards", gt=0)
    estimator: str = param("mle", "differentiable intrinsic-dimension estimate", choices=("mle", "twonn"))
    n_neighbors: int = param(10, "neighbours used by the MLE estimate", ge=2)
    start_epoch: int = param(1, "first epoch (1-based) in which the penalty is applied", ge=1)
    every_n_steps: int = param(1, "apply the penalty on every n-th training step only", ge=1)


@dataclass
class RegularizerConfig:
    name: str = param("none", "latent-geometry regularizer added to the task loss", choices=REGULARIZERS)
    enabled: bool = param(True, "switch the regularizer off without changing its settings")
    weight: float = param(1.0, "global multiplier: total = task + weight * lambda_reg * regularizer", ge=0)
    geodesic: GeodesicConfig = param(GeodesicConfig(), "settings of the geodesic regularizer")
    geometry: GeometryConfig = param(GeometryConfig(), "settings of the geometry regularizer")

    @property
    def active(self) -> bool:
        return self.enabled and self.name != "none" and self.weight > 0


@dataclass
class LoggingConfig:
    embedding_metrics_every: int = param(0, "measure latent geometry of the val set every n epochs; 0 only at the end", ge=0)
    metrics_n_neighbors: int = param(10, "k of the kNN graph the geometry metrics use (fixed, so trials compare)", ge=2)
    save_latents: bool = param(True, "write latents.npz (val embeddings, labels, logits)")
    save_umap: bool = param(True, "project latents with UMAP for umap.png (off: PCA, stated in the figure)")
    save_checkpoint: bool = param(True, "checkpoint every epoch, so trials resume where they stopped")
    export_onnx: bool = param(False, "export the final model to ONNX and check it against PyTorch (extra 'onnx')")
    interactive_scatter: bool = param(False, "also write a self-contained interactive HTML scatter of the latents")


@dataclass
class TrialConfig:
    dataset: DatasetConfig = param(DatasetConfig(), "data set, splits and augmentation")
    model: ModelConfig = param(ModelConfig(), "network body, embedding, head and output")
    train: TrainConfig = param(TrainConfig(), "optimisation")
    regularizer: RegularizerConfig = param(RegularizerConfig(), "latent-geometry regularizer")
    logging: LoggingConfig = param(LoggingConfig(), "what each trial measures and writes")

    @classmethod
    def from_dict(cls, data: dict | None) -> "TrialConfig":
        """Build and validate a config from nested dicts (missing keys take defaults)."""
        config = _build(cls, data or {}, "")
        _check_cross_field(config)
        return config

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---------------------------------------------------------------------------
# building and type checking


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _show(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    text = text.removesuffix("\n...").strip()
    return text if len(text) <= 60 else text[:57] + "..."


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Return value converted to tp, or raise ConfigError naming key."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}' = {_show(value)}: expected {_type_name(tp)}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' = {_show(value)}: expected {_type_name(tp)}")
        (item_type,) = typing.get_args(tp)
        return [_coerce(item_type, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' = {_show(value)}: expected a mapping of the keys of '{key}'")
        return _build(tp, value, key)
    if tp is bool:
        if isinstance(value, (bool, _np_bool())):
            return bool(value)
    elif tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, (bool, _np_bool())):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, numbers.Real) and not isinstance(value, (bool, _np_bool())):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as a string; accept it as the number it means.
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"config key '{key}' = {_show(value)}: expected {_type_name(tp)}")


def _np_bool() -> type:
    try:
        import numpy as np
        return np.bool_
    except ImportError:  # pragma: no cover - numpy is a dependency
        return bool


def _check_value(key: str, value: Any, meta: dict) -> None:
    if value is None:
        return
    values = value if isinstance(value, list) else [value]
    for v in values:
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"config key '{key}' = {_show(value)}: must be a finite number")
        choices = meta.get("choices")
        if choices and v not in choices:
            allowed = ", ".join(str(c) for c in choices)
            raise ConfigError(f"config key '{key}' = {_show(value)}: allowed values are {allowed}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            for bound, ok, word in (("ge", lambda a, b: a >= b, ">="), ("gt", lambda a, b: a > b, ">"),
                                    ("le", lambda a, b: a <= b, "<="), ("lt", lambda a, b: a < b, "<")):
                limit = meta.get(bound)
                if limit is not None and not ok(v, limit):
                    raise ConfigError(f"config key '{key}' = {_show(value)}: must be {word} "
                                      f"{limit if isinstance(limit, int) else format(limit, 'g')}")


def _build(cls: type, data: dict, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix or '<root>'}' = {_show(data)}: expected a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            where = f"'{prefix}'" if prefix else "the top level"
            full = f"{prefix}.{key}" if prefix else str(key)
            close = _closest_key(str(key), list(fields))
            hint = f" (did you mean '{close}'?)" if close else ""
            raise ConfigError(f"unknown config key '{full}'{hint}; keys allowed in {where}: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            value = _coerce(hints[name], data[name], key)
        elif dataclasses.is_dataclass(hints[name]):
            value = _build(hints[name], {}, key)
        else:
            value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        _check_value(key, value, dict(f.metadata))
        kwargs[name] = value
    return cls(**kwargs)


def _closest_key(key: str, candidates: list[str]) -> str | None:
    """A likely intended key: a near spelling, or the initials of a spelled-out name (learning_rate -> lr)."""
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if close:
        return close[0]
    initials = "".join(part[0] for part in key.split("_") if part)
    return next((c for c in candidates if len(initials) > 1 and c == initials), None)


def _check_cross_field(config: TrialConfig) -> None:
    d, m, r = config.dataset, config.model, config.regularizer
    if d.val_ratio + d.test_ratio >= 1:
        raise ConfigError(f"config keys 'dataset.val_ratio' + 'dataset.test_ratio' = {d.val_ratio + d.test_ratio:g}: "
                          "must be < 1 to leave training data")
    if d.shapes.min_extent > d.shapes.max_extent:
        raise ConfigError(f"config key 'dataset.shapes.min_extent' = {d.shapes.min_extent:g}: "
                          f"must be <= dataset.shapes.max_extent ({d.shapes.max_extent:g})")
    if not m.channels:
        raise ConfigError("config key 'model.channels' = []: needs at least one entry")
    if any(c < 1 for c in m.channels):
        raise ConfigError(f"config key 'model.channels' = {_show(m.channels)}: every entry must be >= 1")
    if m.input_shape is not None and (len(m.input_shape) != 3 or any(s < 1 for s in m.input_shape)):
        raise ConfigError(f"config key 'model.input_shape' = {_show(m.input_shape)}: "
                          "expected [channels, height, width] of positive integers")
    if d.classes is not None:
        if len(d.classes) < 2:
            raise ConfigError(f"config key 'dataset.classes' = {_show(d.classes)}: needs at least two classes")
        if len(set(map(str, d.classes))) != len(d.classes):
            raise ConfigError(f"config key 'dataset.classes' = {_show(d.classes)}: lists a class twice")
    if r.geodesic.target == "flat" and r.geodesic.target_ratio != 1.0:
        raise ConfigError(f"config key 'regularizer.geodesic.target_ratio' = {r.geodesic.target_ratio:g}: applies to "
                          "regularizer.geodesic.target: fixed only (target flat pulls bent pairs to their chord); "
                          "set regularizer.geodesic.target=fixed to use it")
    if r.geodesic.target == "flat" and r.geodesic.exclude_direct:
        raise ConfigError("config key 'regularizer.geodesic.exclude_direct' = true: applies to "
                          "regularizer.geodesic.target: fixed only (target flat never counts a straight segment)")
    for part in {"geodesic": ["geodesic"], "geometry": ["geometry"], "combined": ["geodesic", "geometry"]}.get(r.name, []):
        start = getattr(r, part).start_epoch
        if start > config.train.epochs:
            raise ConfigError(f"config key 'regularizer.{part}.start_epoch' = {start}: must be <= train.epochs "
                              f"({config.train.epochs}); the penalty would never apply")
    if r.name == "geodesic" or r.name == "combined":
        if r.geodesic.n_neighbors >= config.train.batch_size:
            raise ConfigError(f"config key 'regularizer.geodesic.n_neighbors' = {r.geodesic.n_neighbors}: "
                              f"must be < train.batch_size ({config.train.batch_size})")


# ---------------------------------------------------------------------------
# loading: defaults < YAML file < --set overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse one ``section.key=value`` into (path, value); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. train.lr=0.01")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".")]
    if not all(path):
        raise ConfigError(f"--set {text!r}: '{key}' is not a dotted key such as train.lr")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return path, value


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Return a copy of nested ``data`` with each ``section.key=value`` applied."""
    import copy

    data = copy.deepcopy(data)
    for text in overrides or []:
        path, value = parse_override(text)
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: '{'.'.join(path[:i + 1])}' is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file '{path}' is not a text file (not UTF-8); expected YAML") from None
    except OSError as exc:
        raise ConfigError(f"config file '{path}' cannot be read ({exc.strerror or type(exc).__name__})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file '{path}'{where}: not valid YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}': expected a mapping of sections at the top level")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> TrialConfig:
    """Defaults, then ``base`` (e.g. a search space's base), then the YAML file, then ``--set``."""
    data = merge(base or {}, read_yaml(path) if path else {})
    data = apply_overrides(data, overrides)
    return TrialConfig.from_dict(data)


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge: values of ``update`` win; sections merge key by key."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def nest(dotted: dict) -> dict:
    """{"a.b": 1} -> {"a": {"b": 1}}"""
    out: dict = {}
    for key, value in dotted.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def flatten(nested: dict, prefix: str = "", sep: str = ".") -> dict:
    out = {}
    for key, value in nested.items():
        path = f"{prefix}{sep}{key}" if prefix else key
        if isinstance(value, dict) and value:
            out.update(flatten(value, path, sep))
        else:
            out[path] = value
    return out


def assemble_trial_config(config: dict, base: dict | None = None, variants: dict | None = None) -> dict:
    """The nested trial config from what Tune passes.

    ``config`` is either a whole nested config (one trial), or a grid ``variant``
    label that ``variants`` maps to dotted overrides, or dotted keys sampled by a
    searcher; either is applied over ``base``.
    """
    config = dict(config)
    label = config.pop("variant", None)
    overrides = dict(variants[label]) if label is not None else {}
    overrides.update({k: config.pop(k) for k in list(config) if "." in k})
    return merge(merge(base or {}, config), nest(overrides))


def save_config(config: TrialConfig, path: str | Path) -> None:
    Path(path).write_text(config.to_yaml())


# ---------------------------------------------------------------------------
# documentation generated from the schema (README reference, `geotune config`)


def reference_rows(cls: type = TrialConfig, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, default, allowed, meaning) for every leaf key, in declaration order."""
    rows = []
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(reference_rows(tp, key))
            continue
        meta = f.metadata
        allowed = [", ".join(map(str, meta["choices"]))] if meta.get("choices") else []
        for bound, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if meta.get(bound) is not None:
                limit = meta[bound]
                allowed.append(f"{word} {limit if isinstance(limit, int) else format(limit, 'g')}")
        if not meta.get("choices"):
            allowed.insert(0, _type_name(tp))
        default = getattr(defaults, f.name)
        rows.append((key, _show(default), "; ".join(allowed), meta["help"]))
    return rows


def commented_defaults() -> str:
    """The default config as YAML with each key's meaning as a comment."""
    lines: list[str] = []

    def emit(cls: type, obj: Any, indent: int) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            pad = "  " * indent
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(hints[f.name]):
                lines.append(f"{pad}{f.name}:  # {f.metadata['help']}")
                emit(hints[f.name], value, indent + 1)
            else:
                lines.append(f"{pad}{f.name}: {_show(value)}  # {f.metadata['help']}")

    emit(TrialConfig, TrialConfig(), 0)
    return "\n".join(lines) + "\n"
