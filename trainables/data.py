"""Data sets as uint8 tensors on the training device: which reader a name takes, what can be checked
before training, and ``load_data``.

Every reader (``data_files``, ``synthetic_data``, a user's loader) returns raw images (N, C, H, W)
uint8 and integer labels; ``load_data`` then subsets classes, resizes once, makes stratified seeded
splits, computes per-channel normalisation statistics on the training split, and moves everything to
the device. Batching and augmentation: ``batches``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from geotune.config import BUILTIN_DATASETS, DatasetConfig, task_of
from geotune.errors import ConfigError, DatasetNotFoundError
from geotune.references import is_reference
from geotune.trainables.data_files import (
    CIFAR_LAYOUT,
    IMAGE_SUFFIXES,
    check_mnist_files,
    class_folders,
    first_readable,
    folder_images,
    load_cifar_raw,
    load_digits_raw,
    load_image_folder_raw,
    load_mnist_like_raw,
    require_files,
)
from geotune.trainables.raw_data import RawDataset
from geotune.trainables.synthetic_data import load_shapes_raw, load_shapes_seg_raw
from geotune.trainables.user_data import load_user_raw

# the reader of each built-in data set (its other facts: geotune.config.BUILTIN_DATASETS, same names)
READERS = {
    "digits": load_digits_raw,
    "shapes": load_shapes_raw,
    "mnist": load_mnist_like_raw,
    "fashion_mnist": load_mnist_like_raw,
    "cifar10": load_cifar_raw,
    "cifar100": load_cifar_raw,
    "image_folder": load_image_folder_raw,
    "shapes_seg": load_shapes_seg_raw,
}


@dataclass
class DataCheck:
    """What a config's data will be, found without decoding images: known before any training starts."""

    class_names: list[str]
    split_sizes: tuple[int, int]  # train, val
    warnings: list[str]


def raw_loader(name: str) -> Callable[[DatasetConfig], RawDataset]:
    """The loader of a built-in data set, or of the user's (dataset.name 'package.module:function')."""
    if name in READERS:
        return READERS[name]
    return load_user_raw


def _label_source(cfg: DatasetConfig) -> tuple[RawDataset, bool]:
    """(the pool's labels, class names and any official test/val labels as a RawDataset, images only where
    they are in memory anyway; whether an official test split exists), cheaply."""

    def labels_only(labels: np.ndarray, names: list[str]) -> RawDataset:
        return RawDataset(np.zeros((len(labels), 0), np.uint8), labels, names)

    if cfg.name in ("mnist", "fashion_mnist"):
        if cfg.download:  # nothing on disk yet: the trial downloads and checks the files
            raise _Deferred
        from torchvision import datasets  # deferred: torchvision costs 3.6 s to import; only its data sets need it

        cls = datasets.MNIST if cfg.name == "mnist" else datasets.FashionMNIST
        return labels_only(check_mnist_files(cfg), list(cls.classes)), BUILTIN_DATASETS[cfg.name].official_test
    if cfg.name in CIFAR_LAYOUT:
        if cfg.download:
            raise _Deferred
        folder = Path(cfg.root).expanduser().resolve() / CIFAR_LAYOUT[cfg.name][0]
        require_files(cfg.name, folder, tuple(CIFAR_LAYOUT[cfg.name][1]) + CIFAR_LAYOUT[cfg.name][2:4])
        stamp = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.iterdir()))
        labels, names = _cifar_labels(cfg.name, str(folder.parent), stamp)
        return labels_only(labels, list(names)), BUILTIN_DATASETS[cfg.name].official_test
    if cfg.name == "image_folder":
        class_dirs = class_folders(cfg)
        counts = []
        for class_dir in class_dirs:
            files = folder_images(class_dir)
            if not files:
                raise DatasetNotFoundError(
                    f"dataset 'image_folder': class folder '{class_dir}' holds no images "
                    f"({', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            if first_readable(files, cfg.grayscale) is None:
                raise DatasetNotFoundError(
                    f"dataset 'image_folder': class folder '{class_dir}' has no readable image (all {len(files)} "
                    "files are corrupt, not images, or beyond Pillow's pixel limit)"
                )
            counts.append(len(files))
        labels = np.repeat(np.arange(len(class_dirs)), counts)
        return labels_only(labels, [p.name for p in class_dirs]), BUILTIN_DATASETS[cfg.name].official_test
    raw = raw_loader(cfg.name)(cfg)  # digits, shapes and a user's loader: in memory
    return raw, raw.test_labels is not None


@functools.lru_cache(maxsize=4)
def _cifar_labels(name: str, root: str, stamp: tuple) -> tuple[np.ndarray, tuple[str, ...]]:
    """CIFAR's training labels and class names; the pickles must be read whole (DataBatchUnpickler runs no
    code), so a study that plans many configs on one CIFAR folder reads it once (``stamp``: the files'
    names, times and sizes, so a changed folder is read again)."""
    raw = load_cifar_raw(DatasetConfig(name=name, root=root))
    return raw.labels, tuple(raw.class_names)


class _Deferred(Exception):
    """The data is downloaded by the trial, so it cannot be checked before."""


MIN_VAL_FOR_GEOMETRY = 30  # below this the validation latents cannot carry geometry metrics


def check_dataset(cfg: DatasetConfig) -> DataCheck | None:
    """Everything about the data that can fail, checked now: files and their formats, class choice,
    at least two classes, stratifiable splits. None where the trial downloads the data first."""
    try:
        source, has_test = _label_source(cfg)
    except _Deferred:
        return None
    raw = select_classes(source, cfg.classes)
    present = np.unique(raw.labels)  # masks: the classes with any pixel
    if len(raw.class_names) < 2 or len(present) < 2:
        which = f"'dataset.classes' = {cfg.classes}" if cfg.classes is not None else f"dataset '{cfg.name}'"
        raise ConfigError(f"{which} leaves {len(present)} class(es) with images: a classifier needs at least 2")
    if len(present) < len(raw.class_names):
        empty = [raw.class_names[i] for i in range(len(raw.class_names)) if i not in set(present.tolist())]
        raise ConfigError(f"dataset '{cfg.name}': class(es) {', '.join(empty[:5])} have no training images")
    has_val = raw.val_labels is not None
    train, val, _ = stratified_splits(
        strata(raw.labels), cfg.val_ratio, cfg.test_ratio, cfg.split_seed, has_test, has_val
    )
    if raw.val_labels is not None:  # the loader's own validation split
        val = raw.val_labels
    warnings = []
    if len(val) < MIN_VAL_FOR_GEOMETRY and raw.labels.ndim == 1:  # masks give many latent points per image
        warnings.append(
            f"the validation split holds {len(val)} images: accuracy moves in steps of "
            f"{1 / len(val):.2f} and the latent geometry metrics need at least "
            f"{MIN_VAL_FOR_GEOMETRY} points (raise dataset.val_ratio)"
        )
    return DataCheck(raw.class_names, (len(train), len(val)), warnings)


def describe_input(cfg: DatasetConfig) -> tuple[tuple[int, int, int], int]:
    """(input shape, number of classes) a config will produce, without loading the images."""
    if cfg.name == "image_folder":
        n_classes = len(class_folders(cfg))
        channels, size = (1 if cfg.grayscale else 3), cfg.image_size or 32
        shape = (channels, size, size)
    elif is_reference(cfg.name):  # a user's loader: its data, loaded once per process
        raw = raw_loader(cfg.name)(cfg)
        c, h, w = raw.images.shape[1:]
        shape = (c, cfg.image_size, cfg.image_size) if cfg.image_size else (c, h, w)
        n_classes = len(raw.class_names)
    else:
        facts = BUILTIN_DATASETS[cfg.name]
        assert facts.channels and facts.size and facts.num_classes  # every built-in set but image_folder
        size, n_classes = cfg.image_size or facts.size, facts.num_classes
        shape = (facts.channels, size, size)
    if cfg.classes is not None:
        n_classes = len(cfg.classes)
    return shape, n_classes


# ---------------------------------------------------------------------------
# subsetting, resizing, splitting


def select_classes(raw: RawDataset, classes: list[int | str] | None) -> RawDataset:
    """Keep the listed classes (indices or names), relabelled 0..n-1 in the order given."""
    if classes is None:
        return raw
    indices = []
    for c in classes:
        if isinstance(c, str) and not c.lstrip("-").isdigit():
            if c not in raw.class_names:
                raise ConfigError(
                    f"config key 'dataset.classes' names class '{c}', which is not one of "
                    f"{', '.join(raw.class_names[:20])}"
                )
            indices.append(raw.class_names.index(c))
        else:
            index = int(c)
            if not 0 <= index < len(raw.class_names):
                raise ConfigError(
                    f"config key 'dataset.classes' = {classes}: class index {index} is outside "
                    f"0..{len(raw.class_names) - 1}"
                )
            indices.append(index)
    mapping = np.full(len(raw.class_names), -1, dtype=np.int64)
    mapping[indices] = np.arange(len(indices))

    def keep(images, labels):
        if images is None:
            return None, None
        new = mapping[labels]
        mask = new >= 0
        return images[mask], new[mask]

    images, labels = keep(raw.images, raw.labels)
    test_images, test_labels = keep(raw.test_images, raw.test_labels)
    val_images, val_labels = keep(raw.val_images, raw.val_labels)
    names = [raw.class_names[i] for i in indices]
    return RawDataset(images, labels, names, test_images, test_labels, val_images, val_labels)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 (N, C, H, W) to size x size once, antialiased; no-op at the native size."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = []
    for start in range(0, len(images), 4096):  # chunks bound the float copy's memory
        chunk = torch.from_numpy(images[start : start + 4096]).float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(chunk.round().clamp(0, 255).to(torch.uint8).numpy())
    return np.concatenate(out)


def strata(labels: np.ndarray) -> np.ndarray:
    """What the splits are stratified by: the image labels, or for masks nothing (one stratum for every image
    is a plain seeded random split)."""
    return labels if labels.ndim == 1 else np.zeros(len(labels), np.int64)


def stratified_splits(
    labels: np.ndarray, val_ratio: float, test_ratio: float, seed: int, has_test: bool, has_val: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of train/val/test stratified by label; val (test) is empty when the data set brings its own."""
    # deferred: scikit-learn's first import costs 1.4 s; only the splits need it
    from sklearn.model_selection import train_test_split

    all_idx = np.arange(len(labels))
    empty = np.array([], dtype=np.int64)
    try:
        if has_val and has_test:
            return all_idx, empty, empty
        if has_val:
            train, test = train_test_split(all_idx, test_size=test_ratio, stratify=labels, random_state=seed)
            return np.sort(train), empty, np.sort(test)
        if has_test:
            train, val = train_test_split(all_idx, test_size=val_ratio, stratify=labels, random_state=seed)
            return np.sort(train), np.sort(val), empty
        rest, test = train_test_split(all_idx, test_size=test_ratio, stratify=labels, random_state=seed)
        val_share = val_ratio / (1.0 - test_ratio)
        train, val = train_test_split(rest, test_size=val_share, stratify=labels[rest], random_state=seed)
    except ValueError as exc:
        counts = np.bincount(labels)
        raise ConfigError(
            f"config keys 'dataset.val_ratio'/'dataset.test_ratio' ({val_ratio:g}/{test_ratio:g}) "
            f"cannot be stratified: the smallest class has {counts[counts > 0].min()} images "
            f"({str(exc).splitlines()[0]})"
        ) from None
    return np.sort(train), np.sort(val), np.sort(test)


# ---------------------------------------------------------------------------
# device-resident splits


@dataclass
class Split:
    """One split on the training device: uint8 images, and int64 labels (N,) or uint8 masks (N, H, W)
    (batches turn both into int64 targets)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DataSplits:
    train: Split
    val: Split
    test: Split
    class_names: list[str]
    mean: torch.Tensor  # per-channel mean of training pixels in [0, 1], shape (1, C, 1, 1)
    std: torch.Tensor  # per-channel std of training pixels in [0, 1], shape (1, C, 1, 1)
    task: str = "classification"  # or segmentation: labels are masks

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> float normalised with the training split's per-channel statistics."""
        return (images.float() / 255.0 - self.mean) / self.std


IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet statistics of pixels in [0, 1], RGB
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalization(kind: str, train_images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std), each (1, C, 1, 1), that ``DataSplits.normalize`` applies to pixels in [0, 1]."""
    channels = train_images.shape[1]
    if kind == "none":
        return torch.zeros(1, channels, 1, 1), torch.ones(1, channels, 1, 1)
    if kind == "imagenet":
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        if channels != 3:  # grey images: one channel with the mean of the three channels' statistics
            mean, std = mean.mean().repeat(channels), std.mean().repeat(channels)
        return mean.reshape(1, -1, 1, 1), std.reshape(1, -1, 1, 1)
    pixels = torch.from_numpy(train_images).float().div_(255.0)
    # A constant channel (e.g. a black border everywhere) must not divide by zero.
    return pixels.mean(dim=(0, 2, 3), keepdim=True), pixels.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3)


def load_data(cfg: DatasetConfig, device: torch.device | str = "cpu") -> DataSplits:
    """Load, subset, resize, split and normalise one data set; tensors end up on ``device``."""
    raw = select_classes(raw_loader(cfg.name)(cfg), cfg.classes)
    if cfg.image_size and cfg.name not in ("shapes", "shapes_seg", "image_folder"):  # these draw at the size
        raw.images = resize_images(raw.images, cfg.image_size)
        if raw.test_images is not None:
            raw.test_images = resize_images(raw.test_images, cfg.image_size)
        if raw.val_images is not None:
            raw.val_images = resize_images(raw.val_images, cfg.image_size)
    has_test = raw.test_images is not None
    train_idx, val_idx, test_idx = stratified_splits(
        strata(raw.labels), cfg.val_ratio, cfg.test_ratio, cfg.split_seed, has_test, raw.val_images is not None
    )
    if raw.test_images is not None and raw.test_labels is not None:  # the data set's official test split
        test_images, test_labels = raw.test_images, raw.test_labels
    else:
        test_images, test_labels = raw.images[test_idx], raw.labels[test_idx]
    if raw.val_images is not None and raw.val_labels is not None:  # the loader's own validation split
        val_images, val_labels = raw.val_images, raw.val_labels
    else:
        val_images, val_labels = raw.images[val_idx], raw.labels[val_idx]

    mean, std = normalization(cfg.normalize, raw.images[train_idx])

    def to_split(images: np.ndarray, labels: np.ndarray) -> Split:
        return Split(
            torch.from_numpy(np.ascontiguousarray(images)).to(device),
            torch.from_numpy(np.ascontiguousarray(labels)).to(device),
        )

    return DataSplits(
        to_split(raw.images[train_idx], raw.labels[train_idx]),
        to_split(val_images, val_labels),
        to_split(test_images, test_labels),
        list(map(str, raw.class_names)),
        mean.to(device),
        std.to(device),
        task_of(cfg.name),
    )
