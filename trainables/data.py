"""Data sets as uint8 tensors on the training device, split, batched by slicing.

Every loader returns raw images (N, C, H, W) uint8 and integer labels; ``load_data``
then subsets classes, resizes once, makes stratified seeded splits, computes
per-channel normalisation statistics on the training split, and moves everything
to the device. Training batches are index slices of a random permutation, and
augmentation is one batched affine resampling: nothing per sample, no PIL, no
DataLoader in the hot loop.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pickle
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from geotune.config import BUILTIN_DATASETS, DatasetConfig, task_of
from geotune.errors import ConfigError, DatasetFileError, DatasetNotFoundError
from geotune.references import is_reference
from geotune.trainables.raw_data import RawDataset
from geotune.trainables.user_data import load_user_raw

# ---------------------------------------------------------------------------
# loaders, one per data set name


def load_digits_raw(cfg: DatasetConfig) -> RawDataset:
    from sklearn.datasets import load_digits  # deferred: scikit-learn's first import costs 1.4 s; only digits needs it

    bunch = load_digits()
    # Pixel values are counts 0..16; spread them over 0..255 so every data set shares one uint8 range.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return RawDataset(images, bunch.target.astype(np.int64), [str(n) for n in bunch.target_names])


SHAPES_CENTRES = np.array([(42, 127, 212), (127, 212, 42), (212, 42, 127)], dtype=np.int64)


def generate_shapes(
    num_samples: int, image_size: int, delta: int, min_extent: float, max_extent: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
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
    images, labels = generate_shapes(
        s.num_samples, cfg.image_size or 32, s.delta, s.min_extent, s.max_extent, cfg.split_seed
    )
    return RawDataset(images, labels, ["blue-ish (42,127,212)", "green-ish (127,212,42)", "magenta-ish (212,42,127)"])


SEG_CLASS_NAMES = ["background", "blue-ish", "green-ish", "magenta-ish"]  # the centres of SHAPES_CENTRES, in order


def display_colours(dataset_name: str) -> np.ndarray | None:
    """(classes, 3) RGB in [0, 1] that figures draw each class in, where a data set's classes are colours
    (the synthetic rectangles: their centre colours, background black); None: the figures' class colour map."""
    centres = SHAPES_CENTRES / 255.0
    if dataset_name == "shapes":
        return centres
    if dataset_name == "shapes_seg":
        return np.vstack([np.zeros(3), centres])
    return None


@dataclass
class SegmentationShapes:
    """What ``generate_shapes_seg`` drew: images, masks, and how many rectangles cover each pixel."""

    images: np.ndarray  # (N, 3, S, S) uint8
    masks: np.ndarray  # (N, S, S) uint8: 0 background, 1 + k where rectangle class k shows
    cover: np.ndarray  # (N, S, S) uint8: rectangles under each pixel (0..3), visible or hidden
    areas: np.ndarray  # (N, 3) pixels each class's rectangle covers inside the image, hidden parts included
    full_areas: np.ndarray  # (N, 3) each rectangle's height x width, parts off the image included
    boxes: np.ndarray  # (N, 3, 4) each class's rectangle as top, left, height, width (top/left may be < 0)
    order: np.ndarray  # (N, 3) the classes in the order drawn (the last one shows where they overlap)


def generate_shapes_seg(
    num_samples: int,
    image_size: int,
    delta: int,
    min_extent: float,
    max_extent: float,
    fully_inside: bool,
    seed: int,
) -> SegmentationShapes:
    """Three rectangles per image, one of each colour class, drawn in a random order on black; where they
    overlap the one drawn last shows, in the image and in the mask alike. Each rectangle's RGB is its class
    centre (SHAPES_CENTRES) +/- delta, drawn once per rectangle. With ``fully_inside`` every rectangle lies
    wholly inside the image; without it the top-left corner may lie up to a side length outside, so a
    rectangle can run off the edges (at least one pixel of it stays inside)."""
    rng = np.random.default_rng(seed)
    n, size, k = num_samples, image_size, len(SHAPES_CENTRES)
    lo = max(1, int(round(min_extent * size)))
    hi = max(lo, int(round(max_extent * size)))
    heights = rng.integers(lo, hi + 1, (n, k))
    widths = rng.integers(lo, hi + 1, (n, k))
    if fully_inside:
        tops, lefts = rng.integers(0, size - heights + 1), rng.integers(0, size - widths + 1)
    else:
        tops, lefts = rng.integers(1 - heights, size), rng.integers(1 - widths, size)
    colours = SHAPES_CENTRES[None] + rng.integers(-delta, delta + 1, (n, k, 3))  # (N, class, RGB)
    order = rng.permuted(np.tile(np.arange(k), (n, 1)), axis=1)  # order[:, j]: the class drawn j-th
    grid = np.arange(size)
    rows = (grid >= tops[..., None]) & (grid < (tops + heights)[..., None])  # (N, class, S)
    cols = (grid >= lefts[..., None]) & (grid < (lefts + widths)[..., None])
    inside = rows[..., :, None] & cols[..., None, :]  # (N, class, S, S)
    masks = np.zeros((n, size, size), np.uint8)
    for j in range(k):  # later rectangles overwrite earlier ones
        drawn = order[:, j]
        masks = np.where(inside[np.arange(n), drawn], (drawn + 1)[:, None, None].astype(np.uint8), masks)
    palette = np.concatenate([np.zeros((n, 1, 3), np.int64), colours], axis=1)  # index 0: black background
    images = np.take_along_axis(palette[:, :, None, :], masks.reshape(n, 1, -1, 1).astype(np.int64), axis=1)
    images = images.reshape(n, size, size, 3).transpose(0, 3, 1, 2)
    return SegmentationShapes(
        images.astype(np.uint8),
        masks,
        inside.sum(1).astype(np.uint8),
        inside.sum((2, 3)).astype(np.int64),
        (heights * widths).astype(np.int64),
        np.stack([tops, lefts, heights, widths], axis=-1),
        order,
    )


def load_shapes_seg_raw(cfg: DatasetConfig) -> RawDataset:
    s = cfg.shapes_seg
    drawn = generate_shapes_seg(
        s.num_samples, cfg.image_size or 64, s.delta, s.min_extent, s.max_extent, s.fully_inside, cfg.split_seed
    )
    return RawDataset(drawn.images, drawn.masks, list(SEG_CLASS_NAMES))


def shapes_seg_statistics(drawn: SegmentationShapes) -> dict:
    """How much of the images each class covers and how much the rectangles overlap (the data set's EDA).

    area_fraction: share of all pixels in each mask class; overlap_fraction: share of pixels under two or
    more rectangles; hidden_fraction: share of each class's rectangle hidden by a later one; cut_fraction:
    share of rectangles (over all classes) that run off the image's edge.
    """
    n, size = drawn.masks.shape[0], drawn.masks.shape[1]
    pixels = n * size * size
    counts = np.bincount(drawn.masks.reshape(-1), minlength=len(SEG_CLASS_NAMES))
    visible = counts[1:].astype(float)
    drawn_area = drawn.areas.sum(0).astype(float)
    return {
        "images": int(n),
        "image_size": int(size),
        "area_fraction": dict(zip(SEG_CLASS_NAMES, (counts / pixels).tolist())),
        "overlap_fraction": float((drawn.cover >= 2).sum() / pixels),
        "hidden_fraction": dict(zip(SEG_CLASS_NAMES[1:], (1 - visible / np.maximum(drawn_area, 1)).tolist())),
        "cut_fraction": float((drawn.areas < drawn.full_areas).mean()),
    }


def dataset_eda(cfg: DatasetConfig) -> dict | None:
    """A data set's statistics, drawn once per study (``dataset_eda.json``): for shapes_seg, class area and
    overlap fractions as configured and with ``fully_inside`` flipped, on the same seed and sizes; None for
    data sets that have none yet."""
    if cfg.name != "shapes_seg":
        return None
    s = cfg.shapes_seg
    size = cfg.image_size or 64
    variants = {}
    for inside in (True, False):
        drawn = generate_shapes_seg(s.num_samples, size, s.delta, s.min_extent, s.max_extent, inside, cfg.split_seed)
        variants["fully_inside" if inside else "may_run_off"] = shapes_seg_statistics(drawn)
    return {
        "dataset": cfg.name,
        "configured": "fully_inside" if s.fully_inside else "may_run_off",
        "settings": {"image_size": size, "split_seed": cfg.split_seed, **dataclasses.asdict(s)},
        "variants": variants,
    }


MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _require_files(name: str, folder: Path, files: tuple[str, ...], download_hint: bool = True) -> None:
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        how = " (set dataset.download: true to fetch it, or copy the files there)" if download_hint else ""
        raise DatasetNotFoundError(
            f"dataset '{name}' not found: folder '{folder}' must hold "
            f"{', '.join(files)}; missing {', '.join(missing)}{how}"
        )


def _mnist_folder(cfg: DatasetConfig) -> Path:
    return Path(cfg.root).expanduser() / ("MNIST" if cfg.name == "mnist" else "FashionMNIST") / "raw"


IDX_MAGIC = {3: 0x0803, 1: 0x0801}  # uint8 images (N, rows, cols) and uint8 labels (N,)


def read_idx_header(path: Path, ndim: int) -> tuple[int, ...]:
    """The shape an MNIST idx file declares, after checking its magic number and its size against it."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4 + 4 * ndim)
        size = path.stat().st_size
    except OSError as exc:
        raise DatasetFileError(f"data file '{path}' cannot be read ({exc.strerror})") from None
    if len(head) < 4 + 4 * ndim or int.from_bytes(head[:4], "big") != IDX_MAGIC[ndim]:
        raise DatasetFileError(
            f"data file '{path}' is not an idx file of uint8 {'images' if ndim == 3 else 'labels'} "
            f"(magic number {head[:4].hex() or 'missing'}, expected {IDX_MAGIC[ndim]:08x})"
        )
    shape = tuple(int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = 4 + 4 * ndim + math.prod(shape)
    if size != expected:
        raise DatasetFileError(f"data file '{path}' declares shape {shape} ({expected} bytes) but holds {size} bytes")
    return shape


def check_mnist_files(cfg: DatasetConfig) -> np.ndarray:
    """Check the four idx files (headers, sizes, image and label counts); returns the training labels."""
    folder = _mnist_folder(cfg)
    _require_files(cfg.name, folder, MNIST_FILES)
    labels = None
    for images_file, labels_file in ((MNIST_FILES[0], MNIST_FILES[1]), (MNIST_FILES[2], MNIST_FILES[3])):
        shape = read_idx_header(folder / images_file, 3)
        (count,) = read_idx_header(folder / labels_file, 1)
        if shape[1:] != (28, 28):
            raise DatasetFileError(
                f"data file '{folder / images_file}' holds {shape[1]}x{shape[2]} images; {cfg.name} images are 28x28"
            )
        if shape[0] != count:
            raise DatasetFileError(
                f"data files '{folder / images_file}' and '{labels_file}' disagree: "
                f"{shape[0]} images but {count} labels"
            )
        y = np.fromfile(folder / labels_file, dtype=np.uint8, offset=8).astype(np.int64)
        if len(y) and y.max() > 9:
            raise DatasetFileError(f"data file '{folder / labels_file}': labels must lie in 0..9, found {y.max()}")
        labels = y if labels is None else labels
    assert labels is not None  # the loop reads the training files first
    return labels


def load_mnist_like_raw(cfg: DatasetConfig) -> RawDataset:
    """MNIST / Fashion-MNIST through torchvision, from ``root/<MNIST|FashionMNIST>/raw`` idx files."""
    from torchvision import datasets  # deferred: torchvision costs 3.6 s to import; only its data sets need it

    cls = datasets.MNIST if cfg.name == "mnist" else datasets.FashionMNIST
    root = Path(cfg.root).expanduser()
    if cfg.download:
        cls(str(root), train=True, download=True)  # fetches and verifies the files
    check_mnist_files(cfg)  # torchvision's own checks are bare asserts naming no file
    train = cls(str(root), train=True)
    test = cls(str(root), train=False)
    return RawDataset(
        train.data.numpy()[:, None],
        train.targets.numpy().astype(np.int64),
        list(train.classes),
        test.data.numpy()[:, None],
        test.targets.numpy().astype(np.int64),
    )


CIFAR_LAYOUT = {
    # name: (folder, training batches, test batch, meta file, label key, class-name key)
    "cifar10": (
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "batches.meta",
        "labels",
        "label_names",
    ),
    "cifar100": ("cifar-100-python", ("train",), "test", "meta", "fine_labels", "fine_label_names"),
}


class DataBatchUnpickler(pickle.Unpickler):
    """Reads CIFAR's pickled batches without running code from the data folder.

    A pickle may name any importable callable and call it; this one admits only
    what the format needs to rebuild dicts, lists, strings and numpy arrays.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refused to load '{module}.{name}' (a data batch holds only dicts, lists, strings and numpy arrays)"
            )
        return super().find_class(module, name)


def read_data_pickle(path: Path) -> dict:
    """One CIFAR pickle as a dict, safely; errors name the file and say what is wrong."""
    try:
        with open(path, "rb") as fh:
            entry = DataBatchUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, OSError) as exc:
        raise DatasetFileError(f"data file '{path}' is not a readable CIFAR batch ({exc})") from None
    if not isinstance(entry, dict):
        raise DatasetFileError(f"data file '{path}' is not a CIFAR batch (holds a {type(entry).__name__}, not a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    entry = read_data_pickle(path)
    missing = [k for k in ("data", label_key) if k not in entry]
    if missing:
        raise DatasetFileError(f"data file '{path}' is not a CIFAR batch (no {', '.join(missing)} entry)")
    data, labels = np.asarray(entry["data"]), np.asarray(entry[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetFileError(
            f"data file '{path}': 'data' must be uint8 rows of 3072 pixels, got {data.shape} of {data.dtype}"
        )
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetFileError(
            f"data file '{path}': {len(data)} images but '{label_key}' holds "
            f"{labels.shape} of {labels.dtype} (expected {len(data)} integers)"
        )
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _cifar_class_names(cfg: DatasetConfig) -> list[str]:
    folder_name, *_, meta_file, _, names_key = CIFAR_LAYOUT[cfg.name]
    path = Path(cfg.root).expanduser() / folder_name / meta_file
    names = read_data_pickle(path).get(names_key)
    if not isinstance(names, list) or not all(isinstance(n, (str, bytes)) for n in names):
        raise DatasetFileError(f"data file '{path}' has no list of class names '{names_key}'")
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]


def load_cifar_raw(cfg: DatasetConfig) -> RawDataset:
    """CIFAR-10/100 from the python pickled batches torchvision downloads and extracts.

    torchvision's dataset classes verify fixed MD5 sums on every load; reading the
    batches here keeps that check for downloads while accepting any well-formed
    batch files (the tests write small ones). They are unpickled by
    DataBatchUnpickler, which admits no callable beyond numpy's array rebuilding:
    a data folder cannot run code.
    """
    folder_name, train_files, test_file, meta_file, label_key, names_key = CIFAR_LAYOUT[cfg.name]
    root = Path(cfg.root).expanduser()
    folder = root / folder_name
    if cfg.download:
        from torchvision import datasets  # deferred: torchvision costs 3.6 s to import; only its data sets need it

        cls = datasets.CIFAR10 if cfg.name == "cifar10" else datasets.CIFAR100
        cls(str(root), train=True, download=True)  # fetches, verifies and extracts the archive
    _require_files(cfg.name, folder, (*train_files, test_file, meta_file))
    parts = [_read_cifar_batch(folder / f, label_key) for f in train_files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    test_images, test_labels = _read_cifar_batch(folder / test_file, label_key)
    class_names = _cifar_class_names(cfg)
    for name, y in ((folder / train_files[0], labels), (folder / test_file, test_labels)):
        if len(y) and (y.min() < 0 or y.max() >= len(class_names)):
            raise DatasetFileError(
                f"data file '{name}': labels must lie in 0..{len(class_names) - 1} "
                f"({len(class_names)} class names in {meta_file}), found {y.min()}..{y.max()}"
            )
    return RawDataset(images, labels, class_names, test_images, test_labels)


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _class_folders(cfg: DatasetConfig) -> list[Path]:
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"dataset 'image_folder' not found: folder '{root}' does not exist "
            "(set dataset.root to a folder with one sub-folder of images per class)"
        )
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DatasetNotFoundError(
            f"dataset 'image_folder': folder '{root}' has no class sub-folders (expected root/<class>/*.jpg|png)"
        )
    return class_dirs


class ImageRangeError(ValueError):
    """An image whose pixel values cannot be mapped to 0..255 without guessing."""


def image_to_uint8(im, grayscale: bool, size: int) -> np.ndarray:
    """One PIL image as uint8 (C, size, size), with 16-bit and float images scaled, not clipped.

    8-bit modes (L, RGB, palette, alpha, CMYK) go through Pillow's own conversion (alpha
    is dropped, as torchvision's loader does). 16-bit integer images are divided by 257
    (65535 -> 255); float images must lie in [0, 1] and are multiplied by 255; anything
    else is refused rather than silently clipped to white or black.
    """
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(im, dtype=np.float64)
        if im.mode == "F":
            if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
                raise ImageRangeError(
                    f"float image with values in [{values.min():.3g}, {values.max():.3g}]; "
                    "only [0, 1] can be mapped to 0..255 without guessing"
                )
            values = values * 255.0
        else:
            if values.min() < 0 or values.max() > 65535:
                raise ImageRangeError(
                    f"{im.mode} image with values in [{values.min():.0f}, {values.max():.0f}], outside the 16-bit range"
                )
            values = values / 257.0
        resized = np.asarray(
            Image.fromarray(values.astype(np.float32), "F").resize((size, size), Image.Resampling.BILINEAR)
        )
        gray = np.clip(np.rint(resized), 0, 255).astype(np.uint8)[None]  # rounding error only: values are in range
        return gray if grayscale else np.repeat(gray, 3, axis=0)
    array = np.asarray(
        im.convert("L" if grayscale else "RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8
    )
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _image_files(class_dir: Path) -> list[Path]:
    """Regular files with an image suffix (a FIFO or device named x.png would block the reader)."""
    return sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_image_folder_raw(cfg: DatasetConfig) -> RawDataset:
    """``root/<class>/*.jpg|png``: decoded once, resized to ``image_size`` (default 32)."""
    root = Path(cfg.root).expanduser()
    class_dirs = _class_folders(cfg)
    size = cfg.image_size or 32
    images, labels, skipped = [], [], []
    for label, class_dir in enumerate(class_dirs):
        files = _image_files(class_dir)
        if not files:
            raise DatasetNotFoundError(
                f"dataset 'image_folder': class folder '{class_dir}' holds no images "
                f"({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        for path in files:
            try:
                with Image.open(path) as im:
                    images.append(image_to_uint8(im, cfg.grayscale, size))
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                skipped.append((path, exc))
                continue
            labels.append(label)
    if skipped:
        first_path, first_error = skipped[0]
        reason = str(first_error) if isinstance(first_error, ImageRangeError) else type(first_error).__name__
        print(
            f"warning: skipped {len(skipped)} unreadable image(s) under '{root}' (first: {first_path.name}: {reason})",
            file=sys.stderr,
        )
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_dirs))
    for class_dir, count in zip(class_dirs, counts):
        if count == 0:
            raise DatasetNotFoundError(f"dataset 'image_folder': class folder '{class_dir}' has no readable images")
    return RawDataset(np.stack(images), np.asarray(labels, dtype=np.int64), [p.name for p in class_dirs])


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
        _require_files(cfg.name, folder, tuple(CIFAR_LAYOUT[cfg.name][1]) + CIFAR_LAYOUT[cfg.name][2:4])
        stamp = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.iterdir()))
        labels, names = _cifar_labels(cfg.name, str(folder.parent), stamp)
        return labels_only(labels, list(names)), BUILTIN_DATASETS[cfg.name].official_test
    if cfg.name == "image_folder":
        class_dirs = _class_folders(cfg)
        counts = []
        for class_dir in class_dirs:
            files = _image_files(class_dir)
            if not files:
                raise DatasetNotFoundError(
                    f"dataset 'image_folder': class folder '{class_dir}' holds no images "
                    f"({', '.join(sorted(IMAGE_SUFFIXES))})"
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
        n_classes = len(_class_folders(cfg))
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


# ---------------------------------------------------------------------------
# batching and augmentation


@dataclass
class Augmentation:
    flip: bool = False  # random horizontal flip
    translate: int = 0  # max shift in pixels along each axis
    rotate: float = 0.0  # max rotation in degrees

    @classmethod
    def from_config(cls, cfg: DatasetConfig) -> Augmentation | None:
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
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, shift[:, 0] * 2.0 / w], dim=1),
            torch.stack([sin * flip, cos, shift[:, 1] * 2.0 / h], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def training_batches(
    data: DataSplits, batch_size: int, generator: torch.Generator, augmentation: Augmentation | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
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
        idx = order[b * batch_size : (b + 1) * batch_size]
        x = data.normalize(split.images[idx])
        if augmentation is not None:
            x = augment_batch(x, augmentation, generator)
        yield x, split.labels[idx].long()


def evaluation_batches(
    data: DataSplits, split: Split, batch_size: int = 1024
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(split), batch_size):
        yield data.normalize(split.images[start : start + batch_size]), split.labels[start : start + batch_size].long()
