"""A data set as its loader gives it, before subsetting, resizing and splitting (``data``, ``user_data``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RawDataset:
    """Images as uint8 (N, C, H, W) with labels; ``test_*`` set where the data set has an official test split,
    ``val_*`` where it brings its own validation split (a user's loader may)."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    test_images: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    val_images: np.ndarray | None = None
    val_labels: np.ndarray | None = None
