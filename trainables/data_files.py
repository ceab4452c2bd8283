"""Readers of the data sets that live in files: scikit-learn's digits, MNIST and Fashion-MNIST (IDX),
CIFAR-10/100 (python pickles, read without running code) and a folder of images per class. This module
owns those formats: each reader checks its files and returns a ``RawDataset``."""

from __future__ import annotations

import math
import pickle
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from geotune.config import DatasetConfig
from geotune.errors import DatasetFileError, DatasetNotFoundError
from geotune.trainables.raw_data import RawDataset


def load_digits_raw(cfg: DatasetConfig) -> RawDataset:
    from sklearn.datasets import load_digits  # deferred: scikit-learn's first import costs 1.4 s; only digits needs it

    bunch = load_digits()
    # Pixel values are counts 0..16; spread them over 0..255 so every data set shares one uint8 range.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return RawDataset(images, bunch.target.astype(np.int64), [str(n) for n in bunch.target_names])


MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def require_files(name: str, folder: Path, files: tuple[str, ...], download_hint: bool = True) -> None:
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
    require_files(cfg.name, folder, MNIST_FILES)
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
    require_files(cfg.name, folder, (*train_files, test_file, meta_file))
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


def class_folders(cfg: DatasetConfig) -> list[Path]:
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


def folder_images(class_dir: Path) -> list[Path]:
    """Regular files with an image suffix (a FIFO or device named x.png would block the reader)."""
    return sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


# what makes one file of a folder unreadable (skipped and counted, never fatal): not an image, a truncated or
# corrupt one, values that cannot be scaled, or a header declaring more pixels than Pillow's decompression-bomb
# limit (Image.MAX_IMAGE_PIXELS, about 89 million: a 30000 x 30000 PNG of a few kilobytes would fill memory)
UNREADABLE = (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning)


def decode_image(path: Path, grayscale: bool, size: int) -> np.ndarray:
    """One image file as uint8 (C, size, size); raises one of UNREADABLE. Images above Pillow's pixel limit are
    refused whatever their size (its warning band, 1-2x the limit, included), before any pixel is decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            return image_to_uint8(im, grayscale, size)


def first_readable(files: list[Path], grayscale: bool) -> Path | None:
    """The first of ``files`` that decodes, or None: the check before a study that a class has an image at all,
    at the cost of one decode per class where the files are sound."""
    for path in files:
        try:
            decode_image(path, grayscale, 8)
        except UNREADABLE:
            continue
        return path
    return None


def load_image_folder_raw(cfg: DatasetConfig) -> RawDataset:
    """``root/<class>/*.jpg|png``: decoded once, resized to ``image_size`` (default 32)."""
    root = Path(cfg.root).expanduser()
    class_dirs = class_folders(cfg)
    size = cfg.image_size or 32
    images, labels, skipped = [], [], []
    for label, class_dir in enumerate(class_dirs):
        files = folder_images(class_dir)
        if not files:
            raise DatasetNotFoundError(
                f"dataset 'image_folder': class folder '{class_dir}' holds no images "
                f"({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        for path in files:
            try:
                images.append(decode_image(path, cfg.grayscale, size))
            except UNREADABLE as exc:
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
