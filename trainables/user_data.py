"""Data sets from your own code: ``dataset.name: package.module:function`` or ``path/to/file.py:function``.

The contract (docs/how-to/data.md, "Bring your own data", shows it; ``configs/my_data.py`` is a working example):
the function receives the ``dataset`` config section (a ``DatasetConfig``: ``root``, ``split_seed``,
``image_size``, ... as the config sets them) and returns either

- ``(images, labels)`` or ``(images, labels, class_names)``: one pool, which geotune splits into
  train/val/test by ``dataset.val_ratio`` and ``dataset.test_ratio``, stratified by label; or
- a dict of ready splits, ``{"train": (images, labels), "val": (images, labels), "test": (images, labels),
  "class_names": [...]}``, where only ``train`` is required: a missing val or test split is drawn from train.

``images`` are numpy arrays or torch tensors, (N, H, W) for grey images, (N, C, H, W), or (N, H, W, C) with
C of 1 or 3 (numpy's and PIL's habit), as uint8 in 0..255 or floats in [0, 1]. ``labels`` are integers
0..K-1, one per image. ``class_names``, K strings, defaults to "0".."K-1". Every split has the same image
size. From there on it is a data set like the built-in ones: dataset.classes, image_size, normalize and
augment apply, and the splits move to the device as uint8 tensors.

The result is checked on the first call, and each problem is a one-line error naming the loader and what is
wrong (shape, dtype, value range, label range, counts). Each process calls the loader once per dataset
config (the check before a study starts, then each trial's process).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from geotune.config import DatasetConfig
from geotune.errors import ConfigError
from geotune.references import load_reference
from geotune.trainables.raw_data import RawDataset

SPLIT_KEYS = ("train", "val", "test", "class_names")


def _fail(reference: str, what: str) -> ConfigError:
    return ConfigError(f"dataset '{reference}': {what}")


def _as_numpy(reference: str, name: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise _fail(reference, f"{name} is a {type(value).__name__}; expected a numpy array or torch tensor")
    return value


def check_images(reference: str, name: str, value: Any) -> np.ndarray:
    """Images as uint8 (N, C, H, W); the layouts and ranges of the contract, each failure named."""
    images = _as_numpy(reference, name, value)
    shape = list(images.shape)
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[1] not in (1, 3) and images.shape[3] in (1, 2, 3, 4):
        images = images.transpose(0, 3, 1, 2)  # (N, H, W, C)
    elif images.ndim != 4:
        raise _fail(
            reference,
            f"{name} has shape {list(images.shape)}; expected (N, H, W), (N, C, H, W) or (N, H, W, C) with C 1 or 3",
        )
    if len(images) == 0:
        raise _fail(reference, f"{name} holds no images")
    if images.ndim == 4 and (images.shape[2] == 0 or images.shape[3] == 0):
        raise _fail(reference, f"{name} has shape {shape}: images of zero height or width")
    if images.shape[1] not in (1, 3):  # preprocessing.json, predict and ONNX know grey and RGB only
        raise _fail(
            reference,
            f"{name} has shape {shape}: {images.shape[1]} channels; geotune takes 1 (grey) or 3 (RGB): drop an "
            "alpha channel (images[..., :3]) or convert the images first",
        )
    if images.dtype == np.uint8:
        return np.ascontiguousarray(images)
    if np.issubdtype(images.dtype, np.floating):
        low, high = float(images.min()), float(images.max())
        if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 1:
            raise _fail(
                reference,
                f"{name} are floats in [{low:g}, {high:g}]; float images must lie in [0, 1] (or give uint8 0..255)",
            )
        return np.rint(images * 255.0).astype(np.uint8)
    raise _fail(reference, f"{name} have dtype {images.dtype}; expected uint8 (0..255) or float (0..1)")


def check_labels(reference: str, name: str, value: Any, count: int) -> np.ndarray:
    labels = _as_numpy(reference, name, value)
    if labels.ndim != 1:
        raise _fail(reference, f"{name} has shape {list(labels.shape)}; expected one integer label per image (N,)")
    if not np.issubdtype(labels.dtype, np.integer):
        raise _fail(reference, f"{name} have dtype {labels.dtype}; expected integers 0..K-1")
    if len(labels) != count:
        raise _fail(reference, f"{name} has {len(labels)} entries for {count} images; counts must match")
    if labels.min() < 0:
        raise _fail(reference, f"{name} include {int(labels.min())}; labels are 0..K-1")
    return labels.astype(np.int64)


def _pair(reference: str, split: str, value: Any) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise _fail(reference, f"split '{split}' is a {type(value).__name__}; expected (images, labels)")
    images = check_images(reference, f"{split} images", value[0])
    return images, check_labels(reference, f"{split} labels", value[1], len(images))


def check_loaded(reference: str, result: Any) -> RawDataset:
    """What a user's loader returned, checked against the contract and made a RawDataset."""
    names: Any = None
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if isinstance(result, dict):
        unknown = sorted(set(result) - set(SPLIT_KEYS))
        if unknown or "train" not in result:
            raise _fail(
                reference,
                f"the loader returned a dict with keys {sorted(result)}; expected 'train' and optionally 'val', "
                "'test', 'class_names'",
            )
        for split in ("train", "val", "test"):
            if result.get(split) is not None:
                splits[split] = _pair(reference, split, result[split])
        names = result.get("class_names")
    elif isinstance(result, (tuple, list)) and len(result) in (2, 3):
        splits["train"] = _pair(reference, "the pool", result[:2])
        names = result[2] if len(result) == 3 else None
    else:
        raise _fail(
            reference,
            f"the loader returned a {type(result).__name__}; expected (images, labels), (images, labels, "
            "class_names) or a dict of splits {'train': (images, labels), ...}",
        )
    shapes = {split: tuple(images.shape[1:]) for split, (images, _) in splits.items()}
    if len(set(shapes.values())) > 1:
        raise _fail(reference, f"the splits' images differ in shape (C, H, W): {shapes}; they must share one")
    top = max(int(labels.max()) for _, labels in splits.values())
    if names is None:
        names = [str(i) for i in range(top + 1)]
    if isinstance(names, str) or not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
        raise _fail(reference, f"class_names is {names!r}; expected a list of strings, one per class")
    if len(set(names)) != len(names):
        raise _fail(reference, "class_names lists a name twice")
    if top >= len(names):
        raise _fail(reference, f"a label is {top} but class_names has {len(names)} entries; labels are 0..K-1")
    if len(names) < 2:
        raise _fail(reference, f"{len(names)} class; a classifier needs at least 2")
    train, val, test = splits["train"], splits.get("val"), splits.get("test")
    return RawDataset(
        train[0],
        train[1],
        list(names),
        test_images=test[0] if test else None,
        test_labels=test[1] if test else None,
        val_images=val[0] if val else None,
        val_labels=val[1] if val else None,
    )


_LOADED: dict[str, RawDataset] = {}  # the dataset section as JSON -> its checked data (the last two)


def load_user_raw(cfg: DatasetConfig) -> RawDataset:
    """The user's data set for ``cfg`` (dataset.name a reference), checked; loaded once per process and
    dataset config. A shallow copy is returned, so callers may replace its arrays."""
    key = json.dumps(dataclasses.asdict(cfg), sort_keys=True)
    if key not in _LOADED:
        loader = load_reference("dataset.name", cfg.name)
        try:
            result = loader(cfg)
        except ConfigError:
            raise
        except (Exception, SystemExit) as exc:  # sys.exit() in a loader must not end geotune as a success
            raise _fail(cfg.name, f"the loader raised {type(exc).__name__}: {exc}") from exc
        while len(_LOADED) >= 2:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = check_loaded(cfg.name, result)
    return dataclasses.replace(_LOADED[key])
