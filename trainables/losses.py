"""Task losses (``train.loss``): cross-entropy, class-weighted cross-entropy, focal, soft Dice, and their sums.

Each works on logits (N, C) with labels (N,) and on per-pixel logits (N, C, H, W) with masks (N, H, W) alike:
a pixel is an example. ``TaskLoss.loss(..., reduction="sum")`` is the mean per image times the number of
images, so an evaluation's loss is the mean per image however the split is batched (exactly so for the
per-example terms; the Dice term is a batch statistic and is computed per evaluation batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from geotune.config import loss_terms
from geotune.trainables.heads import OutputLayer

DICE_SMOOTH = 1.0  # added to the Dice numerator and denominator: a class absent from target and prediction scores 1


def balanced_class_weights(counts: torch.Tensor) -> torch.Tensor:
    """Weights that give every class the same total weight: w_c = total / (classes x count_c) (scikit-learn's
    "balanced"); a class with no examples gets weight 0 (it contributes nothing either way)."""
    counts = counts.double()
    present = counts > 0
    weights = torch.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.float()


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, gamma: float, alpha: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over examples of -alpha_y (1 - p_y)^gamma log p_y (Lin et al. 2017); gamma 0 and no alpha is
    cross-entropy."""
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    terms = -((1.0 - log_p.exp()).clamp_min(0.0) ** gamma) * log_p
    if alpha is not None:
        terms = terms * alpha.to(terms.device)[target]
    return terms.mean()


def dice_loss(probabilities: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean over classes of the soft Dice coefficient (2 |P.T| + s) / (|P| + |T| + s), sums taken over
    the whole batch and every pixel (Milletari et al. 2016, with smoothing s); 0 for a perfect prediction."""
    classes = probabilities.shape[1]
    one_hot = F.one_hot(target, classes).movedim(-1, 1).to(probabilities.dtype)
    dims = [0, *range(2, probabilities.dim())]
    overlap = (probabilities * one_hot).sum(dims)
    size = probabilities.sum(dims) + one_hot.sum(dims)
    return 1.0 - ((2.0 * overlap + DICE_SMOOTH) / (size + DICE_SMOOTH)).mean()


class TaskLoss:
    """The sum of the terms of train.loss; ``class_weights`` are weighted_ce's (balanced_class_weights of the
    training labels), reported in metrics.json."""

    def __init__(
        self,
        loss: str,
        output: OutputLayer,
        class_weights: torch.Tensor | None = None,
        focal_gamma: float = 2.0,
        focal_alpha: list[float] | None = None,
    ):
        self.terms = loss_terms(loss)
        self.output = output
        self.class_weights = class_weights
        self.focal_gamma = focal_gamma
        self.focal_alpha = torch.tensor(focal_alpha, dtype=torch.float32) if focal_alpha is not None else None
        if "weighted_ce" in self.terms and class_weights is None:
            raise ValueError("weighted_ce needs class_weights")

    def loss(self, logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        logits = logits.float()  # fp32 for every term: bf16 log-sum-exps lose the target's margin
        total = torch.zeros((), device=logits.device)
        for term in self.terms:
            if term == "ce":
                total = total + self.output.loss(logits, target)
            elif term == "weighted_ce":
                assert self.class_weights is not None
                total = total + F.cross_entropy(logits, target, weight=self.class_weights.to(logits.device))
            elif term == "focal":
                total = total + focal_loss(logits, target, self.focal_gamma, self.focal_alpha)
            else:
                total = total + dice_loss(torch.softmax(logits, dim=1), target)
        return total * len(target) if reduction == "sum" else total
