"""Names of planned trials: a grid variant (dotted config keys -> values), its label and its folder name.

A label such as ``name=geodesic,lambda_reg=0.1,seed=0`` is part of the on-disk
format: it names a trial's folder, and Tune's ``params.json`` of a grid trial
holds it as ``variant``, which ``StudyPlan.variants_by_label`` maps back. A key
is shortened to its last part unless another varied key ends the same way
(``dataset.name=mnist,regularizer.name=none``).
"""

from __future__ import annotations

import hashlib

FOLDER_LABEL_MAX = 90  # characters of a label in a trial folder's name; longer ones end in a hash instead


def keys_of(dicts: list[dict]) -> list[str]:
    """The keys of several dicts (grid arms, variants), each once, in order of first appearance."""
    return list(dict.fromkeys(k for d in dicts for k in d))


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each dotted key by its last part ('train.seed' as 'seed'), in full where two keys share a last part."""
    last = {key: "seed" if key == "train.seed" else key.rsplit(".", 1)[-1] for key in keys}
    counts: dict[str, int] = {}
    for short in last.values():
        counts[short] = counts.get(short, 0) + 1
    return {key: short if counts[short] == 1 else key for key, short in last.items()}


def variant_label(variant: dict, full_keys: bool = False, names: dict[str, str] | None = None) -> str:
    """Short, filesystem-safe description of a variant, e.g. 'name=geodesic,lambda_reg=0.1,seed=0'.
    ``names``: how to print each key (``short_keys`` of the whole study's keys)."""
    names = names if names is not None else short_keys(list(variant))
    parts = []
    for key, value in variant.items():
        short = key if full_keys else names.get(key, key)
        text = (
            f"{value:g}" if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)
        )
        parts.append(f"{short}={text}")
    return ",".join(parts).replace("/", "-").replace(" ", "")


def variant_labels(variants: list[dict], legacy: bool = False) -> list[str]:
    """One distinct label per variant (full dotted keys where the short ones would collide). ``legacy``: the
    labels geotune 0.1 gave (every key by its last part), which the trials of its studies still carry."""
    keys = keys_of(variants)
    names = {k: "seed" if k == "train.seed" else k.rsplit(".", 1)[-1] for k in keys} if legacy else short_keys(keys)
    labels = [variant_label(v, names=names) for v in variants]
    if len(set(labels)) < len(labels):
        labels = [variant_label(v, full_keys=True) for v in variants]
    return labels


def trial_folder_name(trial_id: str, config: dict) -> str:
    """'00003_name=geodesic,seed=1': a Tune trial's folder, from its id (the index after its last '_') and its
    config (the grid's variant label, or the sampled dotted keys of an Optuna trial; a long label ends in its
    hash). Tune names the folder with it, and the Optuna searcher records it on the Optuna trial."""
    index = trial_id.rsplit("_", 1)[-1]
    label = config.get("variant") or variant_label(
        {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in config.items() if "." in k}
    )
    return f"{index}_{folder_label(label)}" if label else f"trial_{index}"


def folder_label(label: str) -> str:
    """A label as a trial folder's name carries it: whole up to FOLDER_LABEL_MAX characters, else cut and ended
    by a hash of the whole label, so two long labels never share a folder name and the same label always gets
    the same one."""
    if len(label) <= FOLDER_LABEL_MAX:
        return label
    digest = hashlib.sha1(label.encode()).hexdigest()[:8]
    return f"{label[: FOLDER_LABEL_MAX - 9]}~{digest}"
