"""The synthetic data sets, drawn from a seed: ``shapes`` (three colour families to classify) and
``shapes_seg`` (shapes on a background, with their pixel masks), and the statistics of the latter."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from geotune.config import DatasetConfig
from geotune.trainables.raw_data import RawDataset

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
