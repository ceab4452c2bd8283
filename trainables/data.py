"""Data sets as uint8 tensors on the training device, split, batched by slicing.

Every loader returns raw images (N, C, H, W) uint8 and integer labels; ``load_data``
then subsets classes, resizes once, makes stratified seeded splits, computes
per-channel normalisation statistics on the training split, and moves everything
to the device. Training batches are index slices of a random permutation, and
augmentation is one batched affine resampling: nothing per sample, no PIL, no
DataLoader in the hot loop.
"""
from __future__ import annotations

import math
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from study.config import ConfigError, DatasetConfig


class DatasetNotFoundError(ConfigError):
    """The files of an on-disk data set are missing; the message names folder and files."""


@dataclass
class RawDataset:
    """Images as uint8 (N, C, H, W) with labels; ``test_*`` set where the data set has an official test split."""
    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    test_images: Optional[np.ndarray] = None
    test_labels: Optional[np.ndarray] = None


# ---------------------------------------------------------------------------
# loaders, one per data set name


def load_digits_raw(cfg: DatasetConfig) -> RawDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are counts 0..16; spread them over 0..255 so every data set shares one uint8 range.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return RawDataset(images, bunch.target.astype(np.int64), [str(n) for n in bunch.target_names])


SHAPES_CENTRES = np.array([(42, 127, 212), (127, 212, 42), (212, 42, 127)], dtype=np.int64)


def generate_shapes(num_samples: int, image_size: int, delta: int, min_extent: float, max_extent: float,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Coloured rectangles on black; class k's RGB is drawn uniformly from SHAPES_CENTRES[k] +/- delta."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_samples) % len(SHAPES_CENTRES))
    lo = max(1, int(round(min_extent * image_size)))
    hi = max(lo, int(round(max_extent * image_size)))
    heights = rng.integers(lo, hi + 1, num_samples)
    widths = rng.integers(lo, hi + 1, num_samples)
    tops = rng.integers(0, image_size - heights + 1)
    lefts = rng.integers(0, image_size - widths + 1)
    colours = SHAPES_CENTRES[labels] + rng.integers(-delta, delta + 1, (num_samples, 3))
    grid = np.arange(image_size)
    rows = (grid[None, :] >= tops[:, None]) & (grid[None, :] < (tops + heights)[:, None])
    cols = (grid[None, :] >= lefts[:, None]) & (grid[None, :] < (lefts + widths)[:, None])
    mask = rows[:, :, None] & cols[:, None, :]
    images = mask[:, None, :, :] * colours[:, :, None, None]
    return images.astype(np.uint8), labels.astype(np.int64)


def load_shapes_raw(cfg: DatasetConfig) -> RawDataset:
    s = cfg.shapes
    images, labels = generate_shapes(s.num_samples, cfg.image_size or 32, s.delta, s.min_extent, s.max_extent,
                                     cfg.split_seed)
    return RawDataset(images, labels, ["blue-ish (42,127,212)", "green-ish (127,212,42)", "magenta-ish (212,42,127)"])


MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _require_files(name: str, folder: Path, files: tuple[str, ...], download_hint: bool = True) -> None:
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        how = " (set dataset.download: true to fetch it, or copy the files there)" if download_hint else ""
        raise DatasetNotFoundError(f"dataset '{name}' not found: folder '{folder}' must hold "
                                   f"{', '.join(files)}; missing {', '.join(missing)}{how}")


def _mnist_folder(cfg: DatasetConfig) -> Path:
    return Path(cfg.root).expanduser() / ("MNIST" if cfg.name == "mnist" else "FashionMNIST") / "raw"


def load_mnist_like_raw(cfg: DatasetConfig) -> RawDataset:
    """MNIST / Fashion-MNIST through torchvision, from ``root/<MNIST|FashionMNIST>/raw`` idx files."""
    from torchvision import datasets

    cls = datasets.MNIST if cfg.name == "mnist" else datasets.FashionMNIST
    root = Path(cfg.root).expanduser()
    if not cfg.download:
        _require_files(cfg.name, _mnist_folder(cfg), MNIST_FILES)
    train = cls(str(root), train=True, download=cfg.download)
    test = cls(str(root), train=False, download=cfg.download)
    return RawDataset(train.data.numpy()[:, None], train.targets.numpy().astype(np.int64), list(train.classes),
                      test.data.numpy()[:, None], test.targets.numpy().astype(np.int64))


CIFAR_LAYOUT = {
    # name: (folder, training batches, test batch, meta file, label key, class-name key)
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                "batches.meta", "labels", "label_names"),
    "cifar100": ("cifar-100-python", ("train",), "test", "meta", "fine_labels", "fine_label_names"),
}


def _read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as fh:
        entry = pickle.load(fh, encoding="latin1")
    data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return data, np.asarray(entry[label_key], dtype=np.int64)


def load_cifar_raw(cfg: DatasetConfig) -> RawDataset:
    """CIFAR-10/100 from the python pickled batches torchvision downloads and extracts.

    torchvision's dataset classes verify fixed MD5 sums on every load; reading the
    batches here keeps that check for downloads while accepting any well-formed
    batch files (the tests write small ones).
    """
    folder_name, train_files, test_file, meta_file, label_key, names_key = CIFAR_LAYOUT[cfg.name]
    root = Path(cfg.root).expanduser()
    folder = root / folder_name
    if cfg.download:
        from torchvision import datasets

        cls = datasets.CIFAR10 if cfg.name == "cifar10" else datasets.CIFAR100
        cls(str(root), train=True, download=True)  # fetches, verifies and extracts the archive
    _require_files(cfg.name, folder, (*train_files, test_file, meta_file))
    parts = [_read_cifar_batch(folder / f, label_key) for f in train_files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    test_images, test_labels = _read_cifar_batch(folder / test_file, label_key)
    with open(folder / meta_file, "rb") as fh:
        class_names = list(pickle.load(fh, encoding="latin1")[names_key])
    return RawDataset(images, labels, class_names, test_images, test_labels)


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _class_folders(cfg: DatasetConfig) -> list[Path]:
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"dataset 'image_folder' not found: folder '{root}' does not exist "
                                   "(set dataset.root to a folder with one sub-folder of images per class)")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DatasetNotFoundError(f"dataset 'image_folder': folder '{root}' has no class sub-folders "
                                   "(expected root/<class>/*.jpg|png)")
    return class_dirs


def load_image_folder_raw(cfg: DatasetConfig) -> RawDataset:
    """``root/<class>/*.jpg|png``: decoded once, resized to ``image_size`` (default 32)."""
    from PIL import Image, UnidentifiedImageError

    root = Path(cfg.root).expanduser()
    class_dirs = _class_folders(cfg)
    size = cfg.image_size or 32
    mode = "L" if cfg.grayscale else "RGB"
    images, labels, skipped = [], [], []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DatasetNotFoundError(f"dataset 'image_folder': class folder '{class_dir}' holds no images "
                                       f"({', '.join(sorted(IMAGE_SUFFIXES))})")
        for path in files:
            try:
                with Image.open(path) as im:
                    im = im.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
                    array = np.asarray(im, dtype=np.uint8)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                skipped.append((path, exc))
                continue
            images.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
            labels.append(label)
    if skipped:
        path, exc = skipped[0]
        print(f"warning: skipped {len(skipped)} unreadable image(s) under '{root}' "
              f"(first: {path.name}: {type(exc).__name__})", file=sys.stderr)
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_dirs))
    for class_dir, count in zip(class_dirs, counts):
        if count == 0:
            raise DatasetNotFoundError(f"dataset 'image_folder': class folder '{class_dir}' has no readable images")
    return RawDataset(np.stack(images), np.asarray(labels, dtype=np.int64), [p.name for p in class_dirs])


LOADERS = {
    "digits": load_digits_raw,
    "shapes": load_shapes_raw,
    "mnist": load_mnist_like_raw,
    "fashion_mnist": load_mnist_like_raw,
    "cifar10": load_cifar_raw,
    "cifar100": load_cifar_raw,
    "image_folder": load_image_folder_raw,
}

# Shape of one image and number of classes before subsetting/resizing; image_folder is read from disk.
NATIVE_SHAPES = {"digits": (1, 8, 8, 10), "shapes": (3, 32, 32, 3), "mnist": (1, 28, 28, 10),
                 "fashion_mnist": (1, 28, 28, 10), "cifar10": (3, 32, 32, 10), "cifar100": (3, 32, 32, 100)}


def check_dataset_available(cfg: DatasetConfig) -> None:
    """Raise DatasetNotFoundError now if loading would fail for missing files (no images decoded)."""
    if cfg.name in ("mnist", "fashion_mnist") and not cfg.download:
        _require_files(cfg.name, _mnist_folder(cfg), MNIST_FILES)
    elif cfg.name in CIFAR_LAYOUT and not cfg.download:
        folder, train_files, test_file, meta_file, *_ = CIFAR_LAYOUT[cfg.name]
        _require_files(cfg.name, Path(cfg.root).expanduser() / folder, (*train_files, test_file, meta_file))
    elif cfg.name == "image_folder":
        _class_folders(cfg)


def describe_input(cfg: DatasetConfig) -> tuple[tuple[int, int, int], int]:
    """(input shape, number of classes) a config will produce, without loading the images."""
    if cfg.name == "image_folder":
        n_classes = len(_class_folders(cfg))
        channels, size = (1 if cfg.grayscale else 3), cfg.image_size or 32
        shape = (channels, size, size)
    else:
        c, h, w, n_classes = NATIVE_SHAPES[cfg.name]
        size = cfg.image_size or (32 if cfg.name == "shapes" else None)
        shape = (c, size, size) if size else (c, h, w)
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
                raise ConfigError(f"config key 'dataset.classes' names class '{c}', which is not one of "
                                  f"{', '.join(raw.class_names[:20])}")
            indices.append(raw.class_names.index(c))
        else:
            index = int(c)
            if not 0 <= index < len(raw.class_names):
                raise ConfigError(f"config key 'dataset.classes' = {classes}: class index {index} is outside "
                                  f"0..{len(raw.class_names) - 1}")
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
    return RawDataset(images, labels, [raw.class_names[i] for i in indices], test_images, test_labels)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 (N, C, H, W) to size x size once, antialiased; no-op at the native size."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = []
    for start in range(0, len(images), 4096):  # chunks bound the float copy's memory
        chunk = torch.from_numpy(images[start:start + 4096]).float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(chunk.round().clamp(0, 255).to(torch.uint8).numpy())
    return np.concatenate(out)


def stratified_splits(labels: np.ndarray, val_ratio: float, test_ratio: float, seed: int,
                      has_test: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of train/val(/test) stratified by label; test is empty when the data set brings its own."""
    from sklearn.model_selection import train_test_split

    all_idx = np.arange(len(labels))
    try:
        if has_test:
            train, val = train_test_split(all_idx, test_size=val_ratio, stratify=labels, random_state=seed)
            return np.sort(train), np.sort(val), np.array([], dtype=np.int64)
        rest, test = train_test_split(all_idx, test_size=test_ratio, stratify=labels, random_state=seed)
        val_share = val_ratio / (1.0 - test_ratio)
        train, val = train_test_split(rest, test_size=val_share, stratify=labels[rest], random_state=seed)
    except ValueError as exc:
        counts = np.bincount(labels)
        raise ConfigError(f"config keys 'dataset.val_ratio'/'dataset.test_ratio' ({val_ratio:g}/{test_ratio:g}) "
                          f"cannot be stratified: the smallest class has {counts[counts > 0].min()} images "
                          f"({str(exc).splitlines()[0]})") from None
    return np.sort(train), np.sort(val), np.sort(test)


# ---------------------------------------------------------------------------
# device-resident splits


@dataclass
class Split:
    """One split: uint8 images and int64 labels, on the training device."""
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
    std: torch.Tensor   # per-channel std of training pixels in [0, 1], shape (1, C, 1, 1)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> float normalised with the training split's per-channel statistics."""
        return (images.float() / 255.0 - self.mean) / self.std


def load_data(cfg: DatasetConfig, device: torch.device | str = "cpu") -> DataSplits:
    """Load, subset, resize, split and normalise one data set; tensors end up on ``device``."""
    raw = select_classes(LOADERS[cfg.name](cfg), cfg.classes)
    if cfg.image_size and cfg.name not in ("shapes", "image_folder"):
        raw.images = resize_images(raw.images, cfg.image_size)
        if raw.test_images is not None:
            raw.test_images = resize_images(raw.test_images, cfg.image_size)
    has_test = raw.test_images is not None
    train_idx, val_idx, test_idx = stratified_splits(raw.labels, cfg.val_ratio, cfg.test_ratio, cfg.split_seed,
                                                     has_test)
    test_images = raw.test_images if has_test else raw.images[test_idx]
    test_labels = raw.test_labels if has_test else raw.labels[test_idx]

    train_pixels = torch.from_numpy(raw.images[train_idx]).float().div_(255.0)
    mean = train_pixels.mean(dim=(0, 2, 3), keepdim=True)
    # A constant channel (e.g. a black border everywhere) must not divide by zero.
    std = train_pixels.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3)
    del train_pixels

    def to_split(images: np.ndarray, labels: np.ndarray) -> Split:
        return Split(torch.from_numpy(np.ascontiguousarray(images)).to(device),
                     torch.from_numpy(np.ascontiguousarray(labels)).to(device))

    return DataSplits(to_split(raw.images[train_idx], raw.labels[train_idx]),
                      to_split(raw.images[val_idx], raw.labels[val_idx]),
                      to_split(test_images, test_labels),
                      list(map(str, raw.class_names)), mean.to(device), std.to(device))


# ---------------------------------------------------------------------------
# batching and augmentation


@dataclass
class Augmentation:
    flip: bool = False        # random horizontal flip
    translate: int = 0        # max shift in pixels along each axis
    rotate: float = 0.0       # max rotation in degrees

    @classmethod
    def from_config(cls, cfg: DatasetConfig) -> Optional["Augmentation"]:
        if not cfg.augment:
            return None
        aug = cls(cfg.augment_flip, cfg.augment_translate, cfg.augment_rotate)
        return aug if (aug.flip or aug.translate or aug.rotate) else None


def augment_batch(x: torch.Tensor, aug: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """Random flip, translation and rotation of a float batch as one batched affine resample.

    Translations are whole pixels, so without rotation the result equals a padded
    random crop exactly. Border pixels are filled with 0, i.e. the channel mean
    after normalisation.
    """
    n, _, h, w = x.shape
    dev = x.device
    angle = (torch.rand(n, generator=generator, device=dev) * 2 - 1) * math.radians(aug.rotate)
    cos, sin = torch.cos(angle), torch.sin(angle)
    flip = torch.ones(n, device=dev)
    if aug.flip:
        flip = torch.where(torch.rand(n, generator=generator, device=dev) < 0.5, -1.0, 1.0)
    shift = torch.randint(-aug.translate, aug.translate + 1, (n, 2), generator=generator, device=dev).float()
    theta = torch.stack([
        torch.stack([cos * flip, -sin, shift[:, 0] * 2.0 / w], dim=1),
        torch.stack([sin * flip, cos, shift[:, 1] * 2.0 / h], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def training_batches(data: DataSplits, batch_size: int, generator: torch.Generator,
                     augmentation: Optional[Augmentation] = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled, normalised (and augmented) training batches sliced from device tensors.

    The last partial batch is dropped when there is more than one batch: a batch of
    a handful of points breaks BatchNorm statistics and the kNN graphs of the
    geometry regularizers. Every epoch drops different examples.
    """
    split = data.train
    n = len(split)
    order = torch.randperm(n, generator=generator, device=generator.device)
    n_batches = max(1, n // batch_size)
    for b in range(n_batches):
        idx = order[b * batch_size:(b + 1) * batch_size]
        x = data.normalize(split.images[idx])
        if augmentation is not None:
            x = augment_batch(x, augmentation, generator)
        yield x, split.labels[idx]


def evaluation_batches(data: DataSplits, split: Split, batch_size: int = 1024
                       ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(split), batch_size):
        yield data.normalize(split.images[start:start + batch_size]), split.labels[start:start + batch_size]
