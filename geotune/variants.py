"""Names of planned trials: a grid variant (dotted config keys -> values) and its label.

A label such as ``name=geodesic,lambda_reg=0.1,seed=0`` is part of the on-disk
format: it names a trial's folder, and Tune's ``params.json`` of a grid trial
holds it as ``variant``, which ``StudyPlan.variants_by_label`` maps back.
"""

from __future__ import annotations


def keys_of(dicts: list[dict]) -> list[str]:
    """The keys of several dicts (grid arms, variants), each once, in order of first appearance."""
    return list(dict.fromkeys(k for d in dicts for k in d))


def variant_label(variant: dict, full_keys: bool = False) -> str:
    """Short, filesystem-safe description of a variant, e.g. 'name=geodesic,lambda_reg=0.1,seed=0'."""
    parts = []
    for key, value in variant.items():
        short = key if full_keys else "seed" if key == "train.seed" else key.rsplit(".", 1)[-1]
        text = (
            f"{value:g}" if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)
        )
        parts.append(f"{short}={text}")
    return ",".join(parts).replace("/", "-").replace(" ", "")


def variant_labels(variants: list[dict]) -> list[str]:
    """One distinct label per variant (full dotted keys where the short ones would collide)."""
    labels = [variant_label(v) for v in variants]
    if len(set(labels)) < len(labels):
        labels = [variant_label(v, full_keys=True) for v in variants]
    return labels
