"""Output layers: the map from embedding to logits, and how logits become a loss.

``softmax`` is trained with cross-entropy. ``sparsemax`` (Martins & Astudillo,
ICML 2016) is the Euclidean projection of the logits onto the probability
simplex; it is trained with the *sparsemax loss* of the same paper,
``L(z, y) = -z_y + 1/2 sum_{j in S(z)} (z_j^2 - tau(z)^2) + 1/2``, whose gradient
is ``sparsemax(z) - onehot(y)``: the sparsemax analogue of cross-entropy. It is
computed in the equal Fenchel-Young form ``<p - e_y, z> + (1 - |p|^2) / 2`` on
logits shifted by their row maximum, which stays exact for large logits. Both
predict the arg-max logit, since sparsemax preserves the order of its inputs.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _sparsemax_threshold(z: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """tau(z) and the support size k(z) along ``dim`` (both keep the dimension)."""
    z_sorted, _ = torch.sort(z, dim=dim, descending=True)
    cumsum = z_sorted.cumsum(dim)
    shape = [1] * z.dim()
    shape[dim] = -1
    k = torch.arange(1, z.size(dim) + 1, device=z.device, dtype=z.dtype).view(shape)
    in_support = 1 + k * z_sorted > cumsum
    support = in_support.sum(dim=dim, keepdim=True)  # k(z) >= 1 always: the largest entry is in the support
    tau = (cumsum.gather(dim, support - 1) - 1) / support.to(z.dtype)
    return tau, support


class _Sparsemax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor, dim: int) -> torch.Tensor:
        z = z - z.amax(dim=dim, keepdim=True)  # sparsemax(z) = sparsemax(z - c): keep the cumsums near 0
        tau, _ = _sparsemax_threshold(z, dim)
        p = torch.clamp(z - tau, min=0)
        ctx.save_for_backward(p)
        ctx.dim = dim
        return p

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (p,) = ctx.saved_tensors
        dim = ctx.dim
        # Jacobian diag(s) - s s^T / |S| with s the support indicator.
        s = (p > 0).to(grad.dtype)
        v = (grad * s).sum(dim, keepdim=True) / s.sum(dim, keepdim=True)
        return s * (grad - v), None


def sparsemax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Project ``z`` onto the probability simplex along ``dim``; exact output and gradient."""
    return _Sparsemax.apply(z, dim)


class _SparsemaxLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # Both the loss and sparsemax are unchanged by a shift of a row; shifting by the row max keeps every
        # term near 0. The form -z_y + 1/2 sum_S (z_j^2 - tau^2) + 1/2 on raw logits loses about z^2 * eps
        # (2.5e-3 at logit scale 100, negative losses at 1000); the Fenchel-Young form
        # <p - e_y, z> + (1 - |p|^2) / 2 (equal: sum_S (z_j^2 - tau^2) = <p, z> + tau, |p|^2 = <p, z> - tau)
        # has no such cancellation.
        z = z - z.amax(dim=1, keepdim=True)
        tau, _ = _sparsemax_threshold(z, 1)
        p = torch.clamp(z - tau, min=0)
        z_y = z.gather(1, target[:, None]).squeeze(1)
        loss = ((p * z).sum(1) - z_y + 0.5 * (1.0 - (p * p).sum(1))).clamp_min(0.0)  # >= 0; rounding only
        ctx.save_for_backward(p, target)
        return loss

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        p, target = ctx.saved_tensors
        g = p.clone()
        g.scatter_add_(1, target[:, None], -torch.ones_like(g[:, :1]))
        return grad[:, None] * g, None


def sparsemax_loss(z: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Sparsemax loss per example (>= 0, zero iff sparsemax(z) puts all mass on the target)."""
    loss = _SparsemaxLoss.apply(z, target)
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


class OutputLayer:
    """How logits turn into a loss and into probabilities."""

    def __init__(self, kind: str):
        if kind not in ("softmax", "sparsemax"):
            raise ValueError(f"unknown output layer '{kind}'")
        self.kind = kind

    def loss(self, logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        logits = logits.float()  # both losses need fp32: bf16 cumsums and log-sum-exps lose the target's margin
        if self.kind == "softmax":
            return F.cross_entropy(logits, target, reduction=reduction)
        return sparsemax_loss(logits, target, reduction)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return torch.softmax(logits, dim=1) if self.kind == "softmax" else sparsemax(logits, dim=1)


def build_head(head_type: str, hidden_dim: int, num_classes: int, dropout: float) -> nn.Module:
    """linear: one affine map; mlp: hidden layer of the embedding's width, ReLU, dropout, affine map."""
    if head_type == "linear":
        return nn.Linear(hidden_dim, num_classes)
    if head_type == "mlp":
        return nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_classes),
        )
    raise ValueError(f"unknown head type '{head_type}'")
