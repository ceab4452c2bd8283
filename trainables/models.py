"""Networks with an explicit latent space: ``embed(x)`` and ``forward(x)``.

Every model is ``body -> flatten -> dropout -> Linear(hidden_dim) -> head``. The
output of that Linear layer, before any non-linearity, is the embedding the
regularizers shape and the metrics measure: a linear bottleneck keeps every
coordinate alive (a ReLU there would park many points on the orthant's faces and
distort distances).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from geotune.config import ModelConfig
from geotune.errors import ConfigError
from geotune.trainables.heads import build_head


class LatentModel(nn.Module):
    def __init__(self, body: nn.Module, body_features: int, hidden_dim: int, head: nn.Module, dropout: float):
        super().__init__()
        self.body = body
        self.embedding = nn.Sequential(
            OrderedDict(flatten=nn.Flatten(), dropout=nn.Dropout(dropout), linear=nn.Linear(body_features, hidden_dim))
        )
        self.head = head

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The latent vector (N, hidden_dim)."""
        return self.embedding(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes)."""
        return self.head(self.embed(x))

    def embed_and_classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.embed(x)
        return z, self.head(z)


def _norm2d(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


def _downsampled(size: int, kernel: int, pooling: str) -> int:
    if pooling == "stride":
        return (size + 2 * (kernel // 2) - kernel) // 2 + 1
    return size // 2


def _check_size(size: int, cfg: ModelConfig, input_shape: tuple[int, int, int], what: str) -> None:
    if size < 1:
        raise ConfigError(
            f"config key 'model.channels' = {cfg.channels}: {what} shrink a "
            f"{input_shape[1]}x{input_shape[2]} input below one pixel; use fewer entries "
            "or a larger dataset.image_size"
        )


def build_fc(cfg: ModelConfig, input_shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    width = input_shape[0] * input_shape[1] * input_shape[2]
    for i, out in enumerate(cfg.channels, 1):
        layers[f"fc{i}"] = nn.Linear(width, out, bias=not cfg.batch_norm)
        if cfg.batch_norm:
            layers[f"bn{i}"] = nn.BatchNorm1d(out)
        layers[f"relu{i}"] = nn.ReLU(inplace=True)
        width = out
    return nn.Sequential(layers), width


def build_simple_cnn(cfg: ModelConfig, input_shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
    """Blocks of conv -> [BatchNorm] -> ReLU -> downsample by 2 (strided conv, max- or avg-pool)."""
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    channels, size = input_shape[0], min(input_shape[1:])
    k = cfg.kernel_size
    for i, out in enumerate(cfg.channels, 1):
        stride = 2 if cfg.pooling == "stride" else 1
        block: OrderedDict[str, nn.Module] = OrderedDict(
            conv=nn.Conv2d(channels, out, k, stride=stride, padding=k // 2, bias=not cfg.batch_norm)
        )
        if cfg.batch_norm:
            block["bn"] = nn.BatchNorm2d(out)
        block["relu"] = nn.ReLU(inplace=True)
        if cfg.pooling == "max":
            block["pool"] = nn.MaxPool2d(2)
        elif cfg.pooling == "avg":
            block["pool"] = nn.AvgPool2d(2)
        blocks[f"block{i}"] = nn.Sequential(block)
        channels, size = out, _downsampled(size, k, cfg.pooling)
        _check_size(size, cfg, input_shape, f"{i} downsampling blocks")
    h = _downsampled_shape(input_shape[1], k, cfg.pooling, len(cfg.channels))
    w = _downsampled_shape(input_shape[2], k, cfg.pooling, len(cfg.channels))
    return nn.Sequential(blocks), channels * h * w


def _downsampled_shape(size: int, kernel: int, pooling: str, times: int) -> int:
    for _ in range(times):
        size = _downsampled(size, kernel, pooling)
    return size


class BasicBlock(nn.Module):
    """Two k x k convs with an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int, k: int, batch_norm: bool):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, k, stride=stride, padding=k // 2, bias=not batch_norm)
        self.bn1 = _norm2d(planes, batch_norm)
        self.conv2 = nn.Conv2d(planes, out, k, padding=k // 2, bias=not batch_norm)
        self.bn2 = _norm2d(out, batch_norm)
        self.shortcut = _shortcut(in_ch, out, stride, batch_norm)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class BottleneckBlock(nn.Module):
    """1x1 reduce -> k x k -> 1x1 expand (x4), with a shortcut."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int, k: int, batch_norm: bool):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=not batch_norm)
        self.bn1 = _norm2d(planes, batch_norm)
        self.conv2 = nn.Conv2d(planes, planes, k, stride=stride, padding=k // 2, bias=not batch_norm)
        self.bn2 = _norm2d(planes, batch_norm)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=not batch_norm)
        self.bn3 = _norm2d(out, batch_norm)
        self.shortcut = _shortcut(in_ch, out, stride, batch_norm)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + self.shortcut(x))


def _shortcut(in_ch: int, out: int, stride: int, batch_norm: bool) -> nn.Module:
    if stride == 1 and in_ch == out:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_ch, out, 1, stride=stride, bias=not batch_norm), _norm2d(out, batch_norm))


def build_resnet(
    cfg: ModelConfig, input_shape: tuple[int, int, int], block: type[BasicBlock] | type[BottleneckBlock]
) -> tuple[nn.Module, int]:
    """A small ResNet for 8-32 px inputs: 3x3 stem (no downsampling), one stage per channels entry.

    Every stage after the first halves the resolution: with a strided first conv
    (pooling=stride) or a max/avg-pool in front of the stage.
    """
    k = cfg.kernel_size
    stem_ch = cfg.channels[0]
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        stem=nn.Sequential(
            nn.Conv2d(input_shape[0], stem_ch, 3, padding=1, bias=not cfg.batch_norm),
            _norm2d(stem_ch, cfg.batch_norm),
            nn.ReLU(inplace=True),
        )
    )
    in_ch, size = stem_ch, min(input_shape[1:])
    for s, planes in enumerate(cfg.channels, 1):
        stage: list[nn.Module] = []
        stride = 1
        if s > 1:
            if cfg.pooling == "stride":
                stride = 2
            else:
                stage.append(nn.MaxPool2d(2) if cfg.pooling == "max" else nn.AvgPool2d(2))
            size = _downsampled(size, 3 if cfg.pooling == "stride" else k, cfg.pooling)
            _check_size(size, cfg, input_shape, f"{s - 1} downsampling stages")
        for b in range(cfg.blocks_per_stage):
            stage.append(block(in_ch, planes, stride if b == 0 else 1, k, cfg.batch_norm))
            in_ch = planes * block.expansion
        layers[f"stage{s}"] = nn.Sequential(*stage)
    layers["pool"] = nn.AdaptiveAvgPool2d(1)
    return nn.Sequential(layers), in_ch


def build_model(cfg: ModelConfig, input_shape: tuple[int, int, int], num_classes: int) -> LatentModel:
    """Build the configured network for inputs of ``input_shape`` (C, H, W)."""
    if cfg.input_shape is not None and tuple(cfg.input_shape) != tuple(input_shape):
        raise ConfigError(
            f"config key 'model.input_shape' = {cfg.input_shape}: the data set gives "
            f"{list(input_shape)}; remove the key or change dataset.image_size"
        )
    if cfg.num_classes is not None and cfg.num_classes != num_classes:
        raise ConfigError(
            f"config key 'model.num_classes' = {cfg.num_classes}: the data set has "
            f"{num_classes} classes; remove the key or change dataset.classes"
        )
    if cfg.type == "fc":
        body, features = build_fc(cfg, input_shape)
    elif cfg.type == "simple_cnn":
        body, features = build_simple_cnn(cfg, input_shape)
    elif cfg.type == "resnet_basic":
        body, features = build_resnet(cfg, input_shape, BasicBlock)
    elif cfg.type == "resnet_bottleneck":
        body, features = build_resnet(cfg, input_shape, BottleneckBlock)
    else:  # validated by the config schema
        raise ConfigError(f"config key 'model.type' = {cfg.type!r}: unknown model")
    head = build_head(cfg.head_type, cfg.hidden_dim, num_classes, cfg.dropout)
    return LatentModel(body, features, cfg.hidden_dim, head, cfg.dropout)
