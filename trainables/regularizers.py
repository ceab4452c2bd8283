"""Latent-geometry regularizers (filled in by the geometry issue)."""
from __future__ import annotations

from study.config import RegularizerConfig


def build_regularizer(cfg: RegularizerConfig, num_classes: int):
    """The penalty function for the loop, or None when no regularizer is active."""
    if not cfg.active:
        return None
    raise ValueError(f"regularizer '{cfg.name}' is not available yet")
