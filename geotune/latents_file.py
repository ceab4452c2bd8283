"""``latents.npz``: the embeddings a trial's geometry summary measured, with their split, labels, logits and class
names; read back by ``geotune geometry``, which also takes such files from models trained anywhere (so reading
checks everything).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from geotune.errors import ConfigError


def write_latents(
    path: Path,
    embeddings: np.ndarray,
    labels: np.ndarray,
    logits: np.ndarray | None,
    class_names: list[str],
    split: str = "val",
    test_embeddings: np.ndarray | None = None,
) -> None:
    """``logits`` None: a segmentation trial's latent points (bottleneck locations) have none of their own.
    ``split``: which split the points come from (``logging.geometry_split``), stored as ``split``.
    ``test_embeddings``: the first test images' embeddings in the split's order, the same images in every trial
    of a study (the report's CKA compares trials on them)."""
    arrays: dict[str, Any] = {
        "embeddings": embeddings,
        "labels": labels,
        "class_names": np.asarray(class_names),
        "split": np.asarray(split),
    }
    if logits is not None:
        arrays["logits"] = logits
    if test_embeddings is not None:
        arrays["test_embeddings"] = test_embeddings
    np.savez_compressed(path, **arrays)


def read_test_embeddings(path: str | Path) -> np.ndarray | None:
    """A trial's ``test_embeddings`` (the report's CKA), or None when its latents file has none or is unreadable."""
    try:
        with np.load(Path(path), allow_pickle=False) as archive:
            found = archive["test_embeddings"] if "test_embeddings" in archive.files else None
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
    return found if found is not None and found.ndim == 2 and np.isfinite(found).all() else None


MAX_LATENTS_BYTES = 2 * 2**30  # geotune geometry refuses .npz files that unpack to more
MAX_LATENT_VALUE = 1e100  # beyond this, float64 squared distances overflow


def read_latents(path: str | Path) -> tuple:
    """(embeddings, labels or None, class names or None, logits or None) from an .npz file; errors name the
    file."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"latents file '{file}' does not exist")
    try:
        with zipfile.ZipFile(file) as archive:  # sizes first: a small file may decompress to gigabytes
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise ConfigError(f"latents file '{file}' is not a readable .npz archive ({type(exc).__name__})") from None
    if unpacked > MAX_LATENTS_BYTES:
        raise ConfigError(
            f"latents file '{file}' unpacks to {unpacked / 2**30:.1f} GiB; geotune geometry reads at most "
            f"{MAX_LATENTS_BYTES / 2**30:.0f} GiB (subsample the embeddings first)"
        )
    try:
        archive = np.load(file, allow_pickle=False)
        arrays = {name: archive[name] for name in archive.files}
    except Exception as exc:
        raise ConfigError(f"latents file '{file}' is not a readable .npz archive ({type(exc).__name__})") from None
    if "embeddings" not in arrays:
        raise ConfigError(f"latents file '{file}' has no array 'embeddings' (it has: {', '.join(arrays) or 'none'})")
    x = arrays["embeddings"]
    if x.ndim != 2 or len(x) < 3 or x.shape[1] < 2 or x.dtype.kind not in "iuf":
        raise ConfigError(
            f"latents file '{file}': 'embeddings' must be a real-valued (N, D) array with N >= 3 and "
            f"D >= 2, got shape {x.shape} of {x.dtype}"
        )
    if not np.isfinite(x).all():
        raise ConfigError(f"latents file '{file}': 'embeddings' contains NaN or infinite values")
    largest = float(np.abs(x).max())
    if largest > MAX_LATENT_VALUE:
        raise ConfigError(
            f"latents file '{file}': 'embeddings' reach {largest:.3g}; squared distances would "
            f"overflow above {MAX_LATENT_VALUE:g} (rescale them: the metrics are scale-free)"
        )
    labels = arrays.get("labels")
    if labels is not None:
        if labels.shape != (len(x),) or not np.issubdtype(labels.dtype, np.integer):
            raise ConfigError(
                f"latents file '{file}': 'labels' must be N={len(x)} integers, got shape "
                f"{labels.shape} of {labels.dtype}"
            )
        if labels.min() < 0:
            raise ConfigError(f"latents file '{file}': 'labels' must be >= 0")
    names = [str(n) for n in arrays["class_names"].reshape(-1)] if "class_names" in arrays else None
    if names is not None and labels is not None and len(labels) and len(names) <= int(labels.max()):
        raise ConfigError(
            f"latents file '{file}': 'class_names' holds {len(names)} names, but 'labels' go up to "
            f"{int(labels.max())}: one name per class 0..{int(labels.max())}"
        )
    logits = arrays.get("logits")  # a segmentation trial's file and a user's may hold none
    if logits is not None and (
        logits.ndim != 2 or len(logits) != len(x) or logits.dtype.kind not in "iuf" or not np.isfinite(logits).all()
    ):
        raise ConfigError(
            f"latents file '{file}': 'logits' must be finite real numbers of shape (N={len(x)}, classes), got "
            f"shape {logits.shape} of {logits.dtype}"
        )
    return x, labels, names, logits
