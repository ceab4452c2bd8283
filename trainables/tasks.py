"""What a trial predicts, and so which latent points it measures: the task object the loop consults.

Classification: one latent vector per image (the embedding), labelled by the image's class. Segmentation:
one latent vector per location of the bottleneck map, labelled by the mask class that covers most of that
location's cell (the input pixels the location sits over: an (H/h) x (W/w) block; ties go to the lower
class index, background first). Segmentation's latent points are many and unbalanced (background covers
most cells), so the regularizer sees a sample of ``REGULARIZER_POINTS`` per training step, and the geometry
metrics a sample of ``logging.latent_points`` from the validation maps, both in equal numbers per class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from geotune.config import TrialConfig, task_of

REGULARIZER_POINTS = 256  # segmentation: latent points per training step the regularizer sees (balanced)


def location_labels(masks: torch.Tensor, grid: tuple[int, int], num_classes: int) -> torch.Tensor:
    """(N, h, w) int64: the majority class of each cell of the (N, H, W) masks on an h x w grid."""
    one_hot = F.one_hot(masks.long(), num_classes).movedim(-1, 1).float()  # (N, C, H, W)
    shares = F.adaptive_avg_pool2d(one_hot, grid)  # exact cell averages when h and w divide H and W
    return shares.argmax(1)  # the first maximum on ties


def location_vectors(z: torch.Tensor) -> torch.Tensor:
    """(N * h * w, D): the latent map's vectors, image by image, row by row."""
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def balanced_sample(
    labels: torch.Tensor, per_class: int, num_classes: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Indices of ``per_class`` points drawn at random without replacement from each class (all of a class's
    points where it has fewer), grouped by class."""
    noise = torch.rand(len(labels), generator=generator, device=labels.device, dtype=torch.float64)
    order = torch.argsort(labels.double() + noise)  # by class, in random order within each class
    counts = torch.bincount(labels, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(labels), device=labels.device) - starts[labels[order]]
    return order[rank < per_class]


@dataclass(frozen=True)
class Task:
    name: str  # classification or segmentation
    num_classes: int
    latent_points: int  # segmentation: the validation sample the geometry metrics see (logging.latent_points)
    eval_batch_size: int  # images per evaluation batch: full-resolution maps cost far more memory per image

    @property
    def segmentation(self) -> bool:
        return self.name == "segmentation"

    def points(self, z: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every latent point of a batch with its label: (embeddings, labels), or (location vectors,
        majority classes)."""
        if not self.segmentation:
            return z, target
        return location_vectors(z), location_labels(target, (z.shape[2], z.shape[3]), self.num_classes).reshape(-1)

    def regularizer_points(self, z: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the latent regularizer sees in one training step (drawn with torch's global generator, which
        the checkpoint saves, so a resumed trial draws the same points)."""
        points, labels = self.points(z, target)
        if not self.segmentation:
            return points, labels
        keep = balanced_sample(labels, REGULARIZER_POINTS // self.num_classes, self.num_classes)
        return points[keep], labels[keep]

    def measured(self, points: torch.Tensor, labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The latent points of an evaluated split that the geometry metrics and latents.npz get."""
        if not self.segmentation:
            return points, labels
        generator = torch.Generator(device=labels.device).manual_seed(seed)
        keep = balanced_sample(labels, self.latent_points // self.num_classes, self.num_classes, generator)
        return points[keep], labels[keep]


def task_for(cfg: TrialConfig, num_classes: int) -> Task:
    name = task_of(cfg.dataset.name)
    return Task(name, num_classes, cfg.logging.latent_points, 64 if name == "segmentation" else 1024)
