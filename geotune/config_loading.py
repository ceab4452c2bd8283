"""Where a trial config comes from: defaults < a search space's base < the YAML files < ``--set`` overrides.

Also the nested-dict helpers every floor uses on configs (merge, dotted keys), the one
merge of a planned trial's overrides over a study's base (``variant_dict``), and
``trial_config_dict``, which picks a trial's resolved config out of what Ray Tune
passes a trainable.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from geotune.config import TrialConfig
from geotune.errors import ConfigError

# a bare section.key=value on the command line (as Hydra takes it): recognised here, split by split_assignment
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+=")


def split_assignment(text: str, option: str, example: str) -> tuple[str, str]:
    """The one reader of ``section.key=value`` text (--set, --sweep, bare arguments): (dotted key, raw value).

    ``option`` and ``example`` name the flag and a valid form in the error.
    """
    if "=" not in text:
        raise ConfigError(f"{option} {text!r}: expected {example}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not all(key.split(".")):
        raise ConfigError(f"{option} {text!r}: '{key}' is not a dotted key such as train.lr")
    return key, raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse one ``section.key=value`` into (path, value); the value is read as YAML."""
    key, raw = split_assignment(text, "--set", "section.key=value, e.g. train.lr=0.01")
    return key.split("."), parse_value(raw)


NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")  # 1e-3 included, which YAML 1.1 reads as text


def parse_value(raw: str) -> Any:
    """A value from the command line, read as YAML; numbers YAML 1.1 leaves as text (1e-3) become floats."""
    if not raw.strip():
        return None
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw.strip()
    return float(value) if isinstance(value, str) and NUMBER.fullmatch(value) else value


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Return a copy of nested ``data`` with each ``section.key=value`` applied."""
    data = copy.deepcopy(data)
    for text in overrides or []:
        path, value = parse_override(text)
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: '{'.'.join(path[: i + 1])}' is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error: a second ``train:``
    section would silently replace the first (its epochs gone) under YAML's last-wins."""

    def construct_mapping(self, node, deep=False):
        if any(key_node.tag == "tag:yaml.org,2002:merge" for key_node, _ in node.value):
            return super().construct_mapping(node, deep=deep)  # `<<: *anchor` then a key: overriding is the point
        first: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                seen = first.get(key)
            except TypeError:  # an unhashable key: PyYAML's own error follows
                continue
            if seen is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"the key '{key}' appears twice (lines {seen + 1} and {key_node.start_mark.line + 1}); YAML "
                    "would keep only the last",
                    key_node.start_mark,
                )
            first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)  # a SafeLoader subclass
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


def read_yamls(paths: str | Path | list | None) -> dict:
    """Several YAML files merged in order: a later file's keys win over an earlier one's."""
    if paths is None:
        return {}
    data: dict = {}
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        data = merge(data, read_yaml(path))
    return data


def load_config(
    paths: str | Path | list | None = None,
    overrides: list[str] | None = None,
    base: dict | None = None,
    notes: list[str] | None = None,
) -> TrialConfig:
    """Defaults, then ``base`` (e.g. a search space's base), then the YAML files in order, then ``--set``;
    epoch-dependent settings of earlier layers fitted to a train.epochs a later one gives (``fit_to_epochs``),
    each change said in ``notes``."""
    files = read_yamls(paths)
    data = apply_overrides(merge(base or {}, files), overrides)
    given = apply_overrides({}, overrides)
    # the settings of the layer that gave train.epochs and of every later one are the user's, and stay as written
    layer = given if _epochs_in(given) else merge(files, given) if _epochs_in(files) else None
    data, changed = fit_to_epochs(data, layer)
    if notes is not None:
        notes.extend(changed)
    return TrialConfig.from_dict(data)


def _epochs_in(layer: dict) -> bool:
    return isinstance(layer.get("train"), dict) and "epochs" in layer["train"]


def _section(data: dict, name: str) -> dict:
    section = data.get(name)
    return section if isinstance(section, dict) else {}


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def fit_to_epochs(data: dict, layer: dict | None) -> tuple[dict, list[str]]:
    """A nested config with its epoch-dependent settings fitted to train.epochs, and a line per change.

    Without train.epochs, the phases' sum is the number of epochs. Where ``layer`` (the config layer that gave
    train.epochs, a smoke test's --set train.epochs=1, with any later ones) did not also set them, train.phases
    are cut (or the last one lengthened) to add up to it, and a regularizer term's start_epoch after the last
    epoch moves to the last epoch. What that layer set itself is left for the schema to judge, as is anything
    malformed."""
    train = _section(data, "train")
    own = _section(layer, "train") if layer is not None else {}
    phases = train.get("phases")
    notes: list[str] = []
    phase_list = phases if isinstance(phases, list) else []
    lengths = [_count(p.get("epochs", 1)) if isinstance(p, dict) else None for p in phase_list]
    if lengths and all(lengths):
        total = sum(n for n in lengths if n)
        epochs = _count(train.get("epochs"))
        if "epochs" not in train:
            data = merge(data, {"train": {"epochs": total}})
        elif layer is not None and "phases" not in own and epochs is not None and epochs != total:
            fitted: list[dict] = []
            left = epochs
            for phase, length in zip(phase_list, lengths):
                if left > 0 and length:
                    fitted.append({**phase, "epochs": min(length, left)})
                    left -= min(length, left)
            fitted[-1]["epochs"] += left  # a longer run: the last phase goes on
            data = merge(data, {"train": {"phases": fitted}})
            now = [p["epochs"] for p in fitted]
            notes.append(f"train.phases {lengths} -> {now} epochs, to add up to train.epochs ({epochs})")
    epochs = _count(_section(data, "train").get("epochs"))
    set_here = _section(layer, "regularizer") if layer is not None else {}
    for term, section in sorted(_section(data, "regularizer").items()):
        start = _count(section.get("start_epoch")) if isinstance(section, dict) else None
        mine = isinstance(set_here.get(term), dict) and "start_epoch" in set_here[term]
        if layer is not None and epochs is not None and start is not None and start > epochs and not mine:
            data = merge(data, {"regularizer": {term: {"start_epoch": epochs}}})
            notes.append(f"regularizer.{term}.start_epoch {start} -> {epochs}: train.epochs ({epochs}) ends before it")
    return data, notes


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


def variant_dict(base: dict, variant: dict | None) -> dict:
    """A variant's dotted keys over a base config: the one place a planned trial's config is merged."""
    return merge(base, nest(variant or {}))


def variant_config(base: dict, variant: dict | None = None) -> TrialConfig:
    """A planned trial's checked config (``variant_dict`` read by the schema)."""
    return TrialConfig.from_dict(variant_dict(base, variant))


def trial_config_dict(params: dict, planned: dict[str, dict] | None = None, base: dict | None = None) -> dict:
    """A trial's resolved config from what Tune passes it (``params``, also its params.json).

    A grid trial's ``variant`` label names its config in ``planned`` (resolved and checked when the study was
    planned; the dotted copies beside the label only show its values to Ray and its loggers). An Optuna trial's
    dotted keys were sampled on the worker: they are resolved here, over ``base``. `geotune train` passes the
    whole config.
    """
    if "variant" in params:
        return (planned or {})[params["variant"]]
    whole = {k: v for k, v in params.items() if "." not in k}
    return variant_dict(merge(base or {}, whole), {k: v for k, v in params.items() if "." in k})


def save_config(config: TrialConfig, path: str | Path) -> None:
    Path(path).write_text(config.to_yaml())
