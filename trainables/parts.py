"""A trial assembled from its config (data, model, output layer, optimiser, schedule) and its resumable state."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geotune.config import TrialConfig, phase_train
from geotune.errors import ConfigError
from geotune.layout import MODEL_FILE, TRAIN_TRIAL_DIR
from geotune.trainables.data import DataSplits, load_data
from geotune.trainables.heads import OutputLayer
from geotune.trainables.loop import EarlyStopping, KeptWeights
from geotune.trainables.losses import TaskLoss, balanced_class_weights
from geotune.trainables.models import LatentNetwork, build_model, model_widths
from geotune.trainables.tasks import Task, task_for


def resolve_device(name: str) -> torch.device:
    if name == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if name == "cuda":
        raise ConfigError(
            "config key 'train.device' = 'cuda': no GPU is visible to this trial "
            "(give trials GPUs with --gpus-per-trial, or use device auto/cpu)"
        )
    return torch.device("cpu")


def seed_everything(seed: int, deterministic: bool, device: torch.device) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        if device.type == "cuda":
            # cuBLAS needs a fixed workspace to give the same sums every run.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def build_optimizer(cfg: TrialConfig, model: torch.nn.Module, phase: int = 0) -> torch.optim.Optimizer:
    """The optimiser of ``phase`` (train.phases; train.* without phases), over the parameters that train
    (model.freeze leaves some out)."""
    t = phase_train(cfg.train, phase)
    params = [p for p in model.parameters() if p.requires_grad]
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "nadam":  # Adam with Nesterov momentum (Dozat 2016)
        return torch.optim.NAdam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "radam":  # Adam with a rectified warm-up of the adaptive step (Liu et al. 2020)
        return torch.optim.RAdam(params, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)


def build_scheduler(cfg: TrialConfig, optimizer: torch.optim.Optimizer, phase: int = 0):
    """The per-epoch schedule of ``phase``, over that phase's epochs."""
    t = phase_train(cfg.train, phase)
    if t.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t.epochs)
    if t.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=t.lr_step_size, gamma=t.lr_gamma)
    if t.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=t.lr_gamma, patience=t.lr_step_size)
    if t.scheduler == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=t.lr_gamma)
    if t.scheduler == "warmup_cosine":
        warmup = torch.optim.lr_scheduler.LinearLR(
            optimizer, start_factor=1.0 / (t.warmup_epochs + 1), total_iters=t.warmup_epochs
        )
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t.epochs - t.warmup_epochs)
        return torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[t.warmup_epochs])
    return None


def initial_weights(source: str, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict ``train.init_from`` names, checked against ``model`` key by key and shape by shape."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / MODEL_FILE if (path / MODEL_FILE).is_file() else path / TRAIN_TRIAL_DIR / MODEL_FILE
    if not path.is_file():
        raise ConfigError(f"config key 'train.init_from' = {source!r}: no {MODEL_FILE} there")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(
            f"config key 'train.init_from' = {source!r}: '{path}' is not a readable state dict ({type(exc).__name__})"
        ) from None
    own = model.state_dict()
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"config key 'train.init_from' = {source!r}: '{path}' holds no state dict (name -> tensor)")
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [
        f"{k} {list(state[k].shape)} vs {list(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or extra or wrong:
        problems = (
            ([f"missing {', '.join(missing[:3])}"] if missing else [])
            + ([f"unexpected {', '.join(extra[:3])}"] if extra else [])
            + ([f"shape of {', '.join(wrong[:3])}"] if wrong else [])
        )
        raise ConfigError(
            f"config key 'train.init_from' = {source!r}: its weights do not fit this model.* config "
            f"({'; '.join(problems)})"
        )
    return state


@dataclass
class TrialParts:
    data: DataSplits
    model: LatentNetwork
    criterion: TaskLoss  # train.loss, with the output layer and weighted_ce's class weights
    task: Task
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    device: torch.device
    phase: int = 0  # index into train.phases of the optimiser and schedule above

    def start_phase(self, cfg: TrialConfig, phase: int) -> None:
        """A fresh optimiser and schedule for ``phase`` (train.phases): switching optimisers discards the
        old one's moments, as starting a new optimiser in the reference recipes does."""
        self.optimizer = build_optimizer(cfg, self.model, phase)
        self.scheduler = build_scheduler(cfg, self.optimizer, phase)
        self.phase = phase


def build_trial(cfg: TrialConfig) -> TrialParts:
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed, cfg.train.deterministic, device)
    data = load_data(cfg.dataset, device)
    if cfg.model.param_budget is not None:  # resolved once; config.yaml records the widths built
        cfg.model.resolved_channels = model_widths(cfg.model, data.input_shape, data.num_classes)
    # model.weights only where train.init_from does not replace every weight anyway
    model = build_model(cfg.model, data.input_shape, data.num_classes, with_weights=cfg.train.init_from is None)
    if cfg.train.init_from is not None:
        model.load_state_dict(initial_weights(cfg.train.init_from, model))
    model = model.to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model)
    return TrialParts(
        data,
        model,
        build_criterion(cfg, data),
        task_for(cfg, data.num_classes),
        optimizer,
        build_scheduler(cfg, optimizer),
        device,
    )


def label_counts(data: DataSplits) -> torch.Tensor:
    """Training examples per class: images, or pixels for masks."""
    return torch.bincount(data.train.labels.reshape(-1).long(), minlength=data.num_classes).cpu()


def build_criterion(cfg: TrialConfig, data: DataSplits) -> TaskLoss:
    t = cfg.train
    weights = balanced_class_weights(label_counts(data)) if "weighted_ce" in t.loss else None
    return TaskLoss(t.loss, OutputLayer(cfg.model.output), weights, t.focal_gamma, t.focal_alpha)


def trial_state(
    parts: TrialParts,
    generator: torch.Generator,
    epoch: int,
    step: int,
    history: list,
    early: EarlyStopping,
    kept: KeptWeights,
    stopped: bool,
    elapsed: float,
) -> dict:
    """Everything needed to continue bit for bit; loadable with ``torch.load(weights_only=True)``."""
    state = {
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict() if parts.scheduler is not None else None,
        "epoch": epoch,
        "step": step,
        "history": history,
        "early_stopping": early.state_dict(),
        "kept": kept.state_dict(),
        "phase": parts.phase,
        "stopped": stopped,
        "elapsed": elapsed,
        "torch_rng": torch.get_rng_state(),
        "data_rng": generator.get_state(),
    }
    if parts.device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(parts.device)
    return state


def load_trial_state(
    cfg: TrialConfig,
    parts: TrialParts,
    generator: torch.Generator,
    state: dict,
    early: EarlyStopping,
    kept: KeptWeights,
) -> None:
    parts.model.load_state_dict(state["model"])
    if state.get("phase", 0) != parts.phase:
        parts.start_phase(cfg, state["phase"])
    parts.optimizer.load_state_dict(state["optimizer"])
    if parts.scheduler is not None and state["scheduler"] is not None:
        parts.scheduler.load_state_dict(state["scheduler"])
    early.load_state_dict(state["early_stopping"])
    if "kept" in state:  # checkpoints written before train.keep existed kept the last epoch
        kept.load_state_dict(state["kept"])
    torch.set_rng_state(state["torch_rng"])
    generator.set_state(state["data_rng"])
    if parts.device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], parts.device)
