"""One epoch of training, one evaluation pass, and the bookkeeping around them.

The loop never calls ``.item()`` inside the batch loop: losses, correct counts and
gradient norms accumulate as device tensors and are read once per epoch, so a
GPU is never stalled waiting for the host.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import torch
import torch.nn as nn

from geotune.trainables.batches import evaluation_batches
from geotune.trainables.data import DataSplits, Split
from geotune.trainables.models import LatentNetwork
from geotune.trainables.tasks import Task

ModelT = TypeVar("ModelT", bound=nn.Module)


class Criterion(Protocol):
    """The task loss: ``TaskLoss`` (train.loss), or an ``OutputLayer`` alone (its own loss)."""

    def loss(self, logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor: ...


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the trial cannot continue."""


def autocast_context(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class GradientNormTracker:
    """Per-layer gradient L2 norms, averaged over the batches of an epoch.

    A layer is a module that owns parameters directly (a conv, a BatchNorm, a
    Linear). The per-parameter squared norms are summed per layer with a fixed 0/1
    matrix rather than ``index_add_``, which is non-deterministic on CUDA.
    """

    def __init__(self, model: nn.Module):
        self.names: list[str] = []
        self.params: list[nn.Parameter] = []
        owner: list[int] = []
        for name, module in model.named_modules():
            own = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if own:
                self.names.append(name)
                self.params.extend(own)
                owner.extend([len(self.names) - 1] * len(own))
        device = self.params[0].device
        self.assign = torch.zeros(len(self.names), len(self.params), device=device)
        self.assign[owner, range(len(self.params))] = 1.0
        self.reset()

    def reset(self) -> None:
        self.total = torch.zeros(len(self.names), device=self.assign.device)
        self.batches = 0

    def update(self) -> None:
        squares = torch.stack(
            [
                p.grad.detach().float().pow(2).sum()
                if p.grad is not None
                else torch.zeros((), device=self.assign.device)
                for p in self.params
            ]
        )
        self.total += (self.assign @ squares).sqrt()
        self.batches += 1

    def epoch_means(self) -> dict[str, float]:
        means = (self.total / max(1, self.batches)).tolist()
        self.reset()
        return dict(zip(self.names, means))


@dataclass
class EarlyStopping:
    """Stop after ``patience`` epochs without a lower validation loss (0 disables)."""

    patience: int
    best: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0

    def step(self, value: float, epoch: int) -> bool:
        """Record one epoch's value; True when training should stop."""
        if value < self.best:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]


# (latent points, labels, epoch, step, the batch's sample ids or None) -> (penalty or None, statistics)
RegularizerFn = Callable[[torch.Tensor, torch.Tensor, int, int, torch.Tensor | None], tuple[torch.Tensor | None, dict]]


@dataclass
class KeptWeights:
    """The weights of the epoch a trial keeps (``train.keep``): the best validation value so far, or the last.

    Best means better than every earlier epoch. An accuracy-like metric ties often (it
    counts images, and saturates): a tie goes to the lower validation loss, so a run whose
    accuracy reached 1.0 in epoch 1 keeps the network its later epochs trained, not epoch
    1's; a tie on both keeps the earlier epoch. The copy lives on the training device (no
    host transfer per epoch) and goes into each checkpoint, so a resumed trial keeps the
    same epoch.
    """

    keep: str  # "best" or "last"
    metric: str  # a validation metric of the history, e.g. val_loss or val_accuracy
    value: float = math.nan
    epoch: int = 0
    weights: dict[str, torch.Tensor] | None = None
    loss: float = math.nan  # the kept epoch's val_loss, which breaks a tie of another metric

    @property
    def mode(self) -> str:
        return "min" if self.metric.endswith("loss") else "max"

    def update(self, row: dict, model: nn.Module) -> bool:
        """Record one epoch's history row; True when this epoch is now the kept one."""
        value = float(row[self.metric])
        loss = float(row.get("val_loss", math.nan))
        better = (
            self.epoch == 0
            or self.keep == "last"
            or (value < self.value if self.mode == "min" else value > self.value)
            or (value == self.value and loss < self.loss)  # a tie: the lower validation loss (nan never wins)
        )
        if better:
            self.value, self.epoch, self.loss = value, int(row["epoch"]), loss
            if self.keep == "best":
                self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return better

    def kept_model(self, model: ModelT) -> ModelT:
        """``model`` itself when it holds the kept weights, else a copy with them loaded."""
        if self.weights is None:
            return model
        kept = copy.deepcopy(model)
        kept.load_state_dict(self.weights)
        return kept

    def state_dict(self) -> dict:
        return {"value": self.value, "epoch": self.epoch, "weights": self.weights, "loss": self.loss}

    def load_state_dict(self, state: dict) -> None:
        self.value, self.epoch, self.weights = state["value"], state["epoch"], state["weights"]
        self.loss = state.get("loss", math.nan)  # absent from checkpoints written before ties went to the loss


@dataclass
class EpochStats:
    loss: float
    accuracy: float
    reg_loss: float
    grad_norms: dict[str, float] = field(default_factory=dict)
    reg_stats: dict[str, float] = field(default_factory=dict)
    # spread over the epoch's batches: 25th and 75th percentiles of the batch loss and accuracy
    loss_quartiles: tuple[float, float] = (math.nan, math.nan)
    accuracy_quartiles: tuple[float, float] = (math.nan, math.nan)


def train_one_epoch(
    model: LatentNetwork,
    criterion: Criterion,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[torch.Tensor, ...]],
    epoch: int,
    *,
    regularizer: RegularizerFn | None = None,
    grad_tracker: GradientNormTracker | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
    step_offset: int = 0,
    task: Task | None = None,
) -> EpochStats:
    """One pass over ``batches`` (normalised inputs, labels or masks, and optionally the batch's sample ids for
    the regularizer); returns epoch means (accuracy: of images, or of pixels for masks)."""
    model.train()
    device = next(model.parameters()).device
    zero = torch.zeros((), device=device)
    task_sum, reg_sum, correct, images, seen = zero.clone(), zero.clone(), zero.clone(), 0, 0
    reg_totals: dict[str, torch.Tensor] = {}
    reg_counts: dict[str, int] = {}
    reg_steps = 0
    batch_losses, batch_accuracies = [], []  # device scalars, read once at the end of the epoch
    for step, (x, y, *samples) in enumerate(batches, start=step_offset):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, precision):
            z, logits = model.embed_and_classify(x)
        task_loss = criterion.loss(logits, y)
        loss = task_loss
        if regularizer is not None:
            points, labels = task.regularizer_points(z, y) if task is not None else (z, y)
            ids = samples[0] if samples and (task is None or not task.segmentation) else None  # pixels have no id
            penalty, stats = regularizer(points.float(), labels, epoch, step, ids)
            if penalty is not None:
                loss = loss + penalty
                reg_sum += penalty.detach()
                reg_steps += 1
                for key, value in stats.items():  # terms of a combined regularizer may fire on different steps
                    reg_totals[key] = reg_totals.get(key, zero) + torch.as_tensor(value, device=device)
                    reg_counts[key] = reg_counts.get(key, 0) + 1
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_tracker is not None:
            grad_tracker.update()
        optimizer.step()
        hits = (logits.detach().argmax(1) == y).sum()
        task_sum += task_loss.detach() * len(y)
        correct += hits
        images += len(y)
        seen += y.numel()  # images, or pixels
        batch_losses.append(task_loss.detach().float())
        batch_accuracies.append(hits / y.numel())
    # One host sync per epoch: here, where the numbers are needed anyway.
    task_mean = (task_sum / images).item()
    reg_mean = (reg_sum / reg_steps).item() if reg_steps else 0.0
    for name, value in (("task loss", task_mean), ("regularizer loss", reg_mean)):
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"the {name} became {value} in epoch {epoch}; lower train.lr or the regularizer's lambda_reg"
            )
    quartiles = torch.tensor([0.25, 0.75], device=device)
    loss_q = torch.quantile(torch.stack(batch_losses), quartiles).tolist()
    accuracy_q = torch.quantile(torch.stack(batch_accuracies).float(), quartiles).tolist()
    return EpochStats(
        loss_quartiles=(loss_q[0], loss_q[1]),
        accuracy_quartiles=(accuracy_q[0], accuracy_q[1]),
        loss=task_mean,
        accuracy=(correct / seen).item(),
        reg_loss=reg_mean,
        grad_norms=grad_tracker.epoch_means() if grad_tracker is not None else {},
        reg_stats={k: (v / reg_counts[k]).item() for k, v in reg_totals.items()},
    )


PRECISE_BN_IMAGES = 2048  # training images whose statistics replace BatchNorm's running averages (PreciseBN)


def recalibrate_batchnorm(
    model: LatentNetwork, images: torch.Tensor, normalize: Callable, batch_size: int, channels_last: bool = False
) -> int:
    """PreciseBN (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm"): set every training BatchNorm's running
    mean and variance to their average over up to PRECISE_BN_IMAGES evenly spaced training images (uint8
    ``images``, un-augmented) under the current weights. Running averages lag behind weights that move fast, as
    in short runs of deep networks (torchvision's MobileNetV3 averages with momentum 0.01): a network at train
    accuracy 1.0 then evaluates at chance. Frozen BatchNorms (eval mode) keep theirs. Returns how many layers."""
    model.train()
    layers = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
    ]
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: every batch counts the same
    count = min(len(images), PRECISE_BN_IMAGES)
    chosen = torch.linspace(0, len(images) - 1, count, device=images.device).round().long()
    with torch.no_grad():
        for start in range(0, count, batch_size):
            x = normalize(images[chosen[start : start + batch_size]])
            if len(x) < 2:  # BatchNorm cannot take the statistics of one image
                break
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            model(x)
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
    return len(layers)


@dataclass
class Evaluation:
    loss: float
    accuracy: float  # of images, or of pixels (segmentation)
    logits: torch.Tensor | None  # (N, classes) on the CPU; None for segmentation (per-pixel logits are not kept)
    embeddings: torch.Tensor  # the measured latent points (N, hidden_dim), on the CPU
    labels: torch.Tensor  # their labels (N,), on the CPU
    confusion: torch.Tensor | None = None  # (classes, classes) counts of images or pixels: rows true, columns predicted

    @property
    def predictions(self) -> torch.Tensor:
        assert self.logits is not None, "a segmentation evaluation keeps no per-image logits"
        return self.logits.argmax(1)


@torch.no_grad()
def evaluate(
    model: LatentNetwork,
    criterion: Criterion,
    data: DataSplits,
    split: Split,
    *,
    precision: str = "fp32",
    channels_last: bool = False,
    batch_size: int | None = None,
    task: Task | None = None,
    seed: int = 0,
) -> Evaluation:
    """Loss, accuracy, confusion matrix, logits (classification) and the measured latent points of one split,
    in eval mode; ``seed`` draws segmentation's sample of latent points (the same every epoch)."""
    model.eval()
    device = split.images.device
    classes = data.num_classes
    loss_sum = torch.zeros((), device=device)
    confusion = torch.zeros(classes * classes, dtype=torch.int64, device=device)
    logits_all, points_all, labels_all = [], [], []
    size = batch_size or (task.eval_batch_size if task is not None else 1024)
    for x, y in evaluation_batches(data, split, size):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, precision):
            z, logits = model.embed_and_classify(x)
        loss_sum += criterion.loss(logits, y, reduction="sum")
        confusion += torch.bincount((y * classes + logits.argmax(1)).reshape(-1), minlength=classes * classes)
        if task is None or not task.segmentation:
            logits_all.append(logits.float())
        points, labels = task.points(z, y) if task is not None else (z, y)
        points_all.append(points.float())
        labels_all.append(labels)
    points, labels = torch.cat(points_all), torch.cat(labels_all)
    if task is not None:
        points, labels = task.measured(points, labels, seed)
    matrix = confusion.reshape(classes, classes).cpu()
    return Evaluation(
        (loss_sum / len(split)).item(),
        (matrix.trace() / matrix.sum().clamp_min(1)).item(),
        torch.cat(logits_all).cpu() if logits_all else None,
        points.cpu(),
        labels.cpu(),
        matrix,
    )


def timed(fn: Callable, *args, device: torch.device, **kwargs):
    """Run fn and return (result, seconds), waiting for queued GPU work so the time is real."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - start
