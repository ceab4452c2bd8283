"""Training and evaluation batches as index slices of device-resident uint8 tensors, and augmentation as
one batched affine resampling: nothing per sample, no PIL, no DataLoader in the hot loop."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from geotune.config import DatasetConfig
from geotune.trainables.data import DataSplits, Split


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
    data: DataSplits,
    batch_size: int,
    generator: torch.Generator,
    augmentation: Augmentation | None = None,
    with_samples: bool = False,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Shuffled, normalised (and augmented) training batches sliced from device tensors; with ``with_samples``,
    each batch also carries its rows of the training split (what a regularizer's memory is keyed by).

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
        yield (x, split.labels[idx].long(), idx) if with_samples else (x, split.labels[idx].long())


def evaluation_batches(
    data: DataSplits, split: Split, batch_size: int = 1024
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(split), batch_size):
        yield data.normalize(split.images[start : start + batch_size]), split.labels[start : start + batch_size].long()
