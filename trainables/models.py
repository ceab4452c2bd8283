"""Networks with an explicit latent space: ``embed(x)`` and ``forward(x)``.

Every model is ``body -> flatten -> dropout -> Linear(hidden_dim) -> head``. The
output of that Linear layer, before any non-linearity, is the embedding the
regularizers shape and the metrics measure: a linear bottleneck keeps every
coordinate alive (a ReLU there would park many points on the orthant's faces and
distort distances). The body is geotune's own, a torchvision classification model
without its classifier, or a user's module (``external_models``); a user's module
with its own ``embed(x)`` is the whole network up to the embedding.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn as nn

from geotune.config import SEGMENTERS, ModelConfig, model_kind
from geotune.errors import ConfigError
from geotune.schema import show
from geotune.trainables.encoder_decoder import EncoderDecoder, build_encoder_decoder
from geotune.trainables.external_models import build_torchvision, build_user, feature_size
from geotune.trainables.heads import build_head
from geotune.trainables.layers import ChannelAttention, activation, conv2d, global_pool, pool2d


class Freezable(nn.Module):
    """A network some of whose parts may be frozen (model.freeze): their parameters get no gradients, and they
    stay in eval mode, so a frozen BatchNorm keeps its running statistics while the rest trains."""

    frozen: tuple[nn.Module, ...] = ()

    def freeze(self, parts: tuple[nn.Module, ...]) -> None:
        self.frozen = parts
        for part in parts:
            part.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        for part in self.frozen:
            part.eval()
        return self


class LatentModel(Freezable):
    def __init__(self, body: nn.Module, body_features: int, hidden_dim: int | None, head: nn.Module, dropout: float):
        super().__init__()
        self.body = body
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten(), dropout=nn.Dropout(dropout))
        if hidden_dim is not None:  # null (external bodies only): the body's features are the embedding
            layers["linear"] = nn.Linear(body_features, hidden_dim)
        self.embedding = nn.Sequential(layers)
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


class OwnEmbeddingModel(Freezable):
    """A user's module with its own ``embed(x)`` (N, features): geotune adds only the head."""

    def __init__(self, net: nn.Module, head: nn.Module):
        super().__init__()
        self.net = net
        self.head = head

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.embed(x)  # type: ignore[operator]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))

    def embed_and_classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.embed(x)
        return z, self.head(z)


# A network of either task: each has embed(x), forward(x) and embed_and_classify(x).
LatentNetwork = LatentModel | OwnEmbeddingModel | EncoderDecoder


class PixelInput(nn.Module):
    """A model that takes images scaled to [0, 1] and applies the training split's normalisation itself:
    the exported ONNX model, and ``geotune predict``, need no statistics beside it."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.reshape(1, -1, 1, 1).clone())
        self.register_buffer("std", std.reshape(1, -1, 1, 1).clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std)


def _norm2d(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


def _conv_out(size: int, kernel: int, stride: int) -> int:
    """Output size of a convolution padded by kernel // 2."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def _too_small(cfg: ModelConfig, input_shape: tuple[int, int, int], block: str, key: str) -> ConfigError:
    return ConfigError(
        f"config key 'model.{key}' = {show(getattr(cfg, key))}: {block} shrinks a "
        f"{input_shape[1]}x{input_shape[2]} input below one pixel; use fewer blocks, smaller strides "
        "or a larger dataset.image_size"
    )


def build_fc(cfg: ModelConfig, input_shape: tuple[int, int, int], widths: list[int]) -> tuple[nn.Module, int]:
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    width = input_shape[0] * input_shape[1] * input_shape[2]
    for i, out in enumerate(widths, 1):
        layers[f"fc{i}"] = nn.Linear(width, out, bias=not cfg.batch_norm)
        if cfg.batch_norm:
            layers[f"bn{i}"] = nn.BatchNorm1d(out)
        layers[f"{cfg.activation}{i}"] = activation(cfg.activation)
        width = out
    return nn.Sequential(layers), width


def build_simple_cnn(cfg: ModelConfig, input_shape: tuple[int, int, int], widths: list[int]) -> tuple[nn.Module, int]:
    """Blocks of conv -> [BatchNorm] -> activation -> [channel attention] -> [2x2 max/avg/L2 pool].

    Each block's kernel and stride come from model.kernel_sizes / model.strides, else
    kernel_size and a stride of 2 with pooling "stride" (no pool layer), 1 otherwise.
    """
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    channels, h, w = input_shape
    kernels = cfg.kernel_sizes or [cfg.kernel_size] * len(widths)
    strides = cfg.strides or [2 if cfg.pooling == "stride" else 1] * len(widths)
    for i, (out, k, stride) in enumerate(zip(widths, kernels, strides), 1):
        block: OrderedDict[str, nn.Module] = OrderedDict(
            conv=conv2d(cfg.conv, channels, out, k, stride, bias=not cfg.batch_norm)
        )
        if cfg.batch_norm:
            block["bn"] = nn.BatchNorm2d(out)
        block[cfg.activation] = activation(cfg.activation)
        if cfg.attention == "channel":
            block["attention"] = ChannelAttention(out)
        h, w = _conv_out(h, k, stride), _conv_out(w, k, stride)
        key = "strides" if cfg.strides else "kernel_sizes" if cfg.kernel_sizes else "channels"
        if min(h, w) < 1:
            raise _too_small(cfg, input_shape, f"block {i}'s convolution", key)
        pool = pool2d(cfg.pooling)
        if pool is not None:
            block["pool"] = pool
            h, w = h // 2, w // 2
            if min(h, w) < 1:
                raise _too_small(cfg, input_shape, f"block {i}'s 2x2 pooling", key)
        blocks[f"block{i}"] = nn.Sequential(block)
        channels = out
    if (cfg.global_pool or "flatten") != "flatten":
        blocks["global_pool"] = global_pool(cfg.global_pool or "flatten")
        return nn.Sequential(blocks), channels
    return nn.Sequential(blocks), channels * h * w


class BasicBlock(nn.Module):
    """Two k x k convs with an identity (or 1x1 projection) shortcut; channel attention, when asked, on the
    residual branch before the addition (as SE-ResNet places it)."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int, k: int, cfg: ModelConfig):
        super().__init__()
        out = planes * self.expansion
        bias = not cfg.batch_norm
        self.conv1 = conv2d(cfg.conv, in_ch, planes, k, stride, bias=bias)
        self.bn1 = _norm2d(planes, cfg.batch_norm)
        self.conv2 = conv2d(cfg.conv, planes, out, k, 1, bias=bias)
        self.bn2 = _norm2d(out, cfg.batch_norm)
        self.attention = ChannelAttention(out) if cfg.attention == "channel" else nn.Identity()
        self.shortcut = _shortcut(in_ch, out, stride, cfg.batch_norm)
        self.act = activation(cfg.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        return self.act(self.attention(self.bn2(self.conv2(y))) + self.shortcut(x))


class BottleneckBlock(nn.Module):
    """1x1 reduce -> k x k -> 1x1 expand (x4), with a shortcut (attention as in BasicBlock)."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int, k: int, cfg: ModelConfig):
        super().__init__()
        out = planes * self.expansion
        bias = not cfg.batch_norm
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=bias)
        self.bn1 = _norm2d(planes, cfg.batch_norm)
        self.conv2 = conv2d(cfg.conv, planes, planes, k, stride, bias=bias)
        self.bn2 = _norm2d(planes, cfg.batch_norm)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=bias)
        self.bn3 = _norm2d(out, cfg.batch_norm)
        self.attention = ChannelAttention(out) if cfg.attention == "channel" else nn.Identity()
        self.shortcut = _shortcut(in_ch, out, stride, cfg.batch_norm)
        self.act = activation(cfg.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        y = self.act(self.bn2(self.conv2(y)))
        return self.act(self.attention(self.bn3(self.conv3(y))) + self.shortcut(x))


def _shortcut(in_ch: int, out: int, stride: int, batch_norm: bool) -> nn.Module:
    if stride == 1 and in_ch == out:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_ch, out, 1, stride=stride, bias=not batch_norm), _norm2d(out, batch_norm))


def build_resnet(
    cfg: ModelConfig,
    input_shape: tuple[int, int, int],
    widths: list[int],
    block: type[BasicBlock] | type[BottleneckBlock],
) -> tuple[nn.Module, int]:
    """A small ResNet for 8-32 px inputs: 3x3 stem (no downsampling), one stage per channels entry.

    Every stage after the first halves the resolution: with a strided first conv
    (pooling=stride) or a max/avg/L2 pool in front of the stage. The stage outputs are
    averaged over positions (model.global_pool: null or avg), or max-pooled or flattened.
    """
    k = cfg.kernel_size
    stem_ch = widths[0]
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        stem=nn.Sequential(
            nn.Conv2d(input_shape[0], stem_ch, 3, padding=1, bias=not cfg.batch_norm),
            _norm2d(stem_ch, cfg.batch_norm),
            activation(cfg.activation),
        )
    )
    in_ch, h, w = stem_ch, input_shape[1], input_shape[2]
    for s, planes in enumerate(widths, 1):
        stage: list[nn.Module] = []
        stride = 1
        if s > 1:
            pool = pool2d(cfg.pooling)
            if pool is None:
                stride = 2
                h, w = _conv_out(h, k, 2), _conv_out(w, k, 2)
            else:
                stage.append(pool)
                h, w = h // 2, w // 2
            if min(h, w) < 1:
                raise _too_small(cfg, input_shape, f"stage {s}'s downsampling", "channels")
        for b in range(cfg.blocks_per_stage):
            stage.append(block(in_ch, planes, stride if b == 0 else 1, k, cfg))
            in_ch = planes * block.expansion
        layers[f"stage{s}"] = nn.Sequential(*stage)
    if (cfg.global_pool or "avg") == "flatten":
        return nn.Sequential(layers), in_ch * h * w
    layers["pool"] = global_pool(cfg.global_pool or "avg")
    return nn.Sequential(layers), in_ch


def build_model(
    cfg: ModelConfig, input_shape: tuple[int, int, int], num_classes: int, with_weights: bool = False
) -> LatentNetwork:
    """Build the configured network for inputs of ``input_shape`` (C, H, W), its model.freeze parts frozen;
    ``with_weights``: a torchvision body starts from model.weights (a trial's start, and its check)."""
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
    kind = model_kind(cfg.type)
    if kind == "builtin":
        model = _build(cfg, input_shape, num_classes, model_widths(cfg, input_shape, num_classes))
    else:
        model = _build_external(cfg, input_shape, num_classes, with_weights)
    if cfg.freeze != "none":
        assert isinstance(model, (LatentModel, OwnEmbeddingModel))  # segmentation refuses model.freeze
        if isinstance(model, OwnEmbeddingModel):
            model.freeze((model.net,))
        else:
            model.freeze((model.body,) if cfg.freeze == "backbone" else (model.body, model.embedding))
    return model


def _build_external(
    cfg: ModelConfig, input_shape: tuple[int, int, int], num_classes: int, with_weights: bool
) -> LatentNetwork:
    """A torchvision body, or the user's module, with geotune's embedding and head (external_models)."""
    if model_kind(cfg.type) == "torchvision":
        body, _ = build_torchvision(cfg, input_shape, with_weights)
    else:
        body, own_embedding = build_user(cfg, input_shape, num_classes)
        if own_embedding:
            dim = feature_size(body, input_shape, cfg.type, embed=True)
            return OwnEmbeddingModel(body, build_head(cfg.head_type, dim, num_classes, cfg.dropout))
    features = feature_size(body, input_shape, cfg.type)
    embedding_dim = cfg.hidden_dim if cfg.hidden_dim is not None else features
    head = build_head(cfg.head_type, embedding_dim, num_classes, cfg.dropout)
    return LatentModel(body, features, cfg.hidden_dim, head, cfg.dropout)


def _build(cfg: ModelConfig, input_shape: tuple[int, int, int], num_classes: int, widths: list[int]) -> LatentNetwork:
    if cfg.type in SEGMENTERS:
        return build_encoder_decoder(cfg, input_shape, num_classes, widths)
    assert cfg.hidden_dim is not None  # built-in models need one (config check)
    if cfg.type == "fc":
        body, features = build_fc(cfg, input_shape, widths)
    elif cfg.type == "simple_cnn":
        body, features = build_simple_cnn(cfg, input_shape, widths)
    elif cfg.type == "resnet_basic":
        body, features = build_resnet(cfg, input_shape, widths, BasicBlock)
    elif cfg.type == "resnet_bottleneck":
        body, features = build_resnet(cfg, input_shape, widths, BottleneckBlock)
    else:  # validated by the config schema
        raise ConfigError(f"config key 'model.type' = {cfg.type!r}: unknown model")
    head = build_head(cfg.head_type, cfg.hidden_dim, num_classes, cfg.dropout)
    return LatentModel(body, features, cfg.hidden_dim, head, cfg.dropout)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def linear_head_weight(model: nn.Module) -> torch.Tensor | None:
    """The (classes, hidden_dim) weights of a linear head on the embedding (neural collapse's NC3 compares them
    with the class means); None for an mlp head or a model without one."""
    head = getattr(model, "head", None)
    return head.weight.detach() if isinstance(head, nn.Linear) else None


BUDGET_TOLERANCE = 0.05  # model.param_budget: the built model's count lands within 5% of the budget


def model_widths(cfg: ModelConfig, input_shape: tuple[int, int, int], num_classes: int) -> list[int]:
    """The channel widths the model is built with: model.channels, or, with model.param_budget, model.channels
    times one common factor chosen so that the parameter count is as close to the budget as rounding allows.

    The count grows with the factor, so a bisection on the factor (in log space) finds it; the candidate
    models are built on the meta device (shapes only, no memory, no initialisation).
    """
    budget = cfg.param_budget
    if budget is None:
        return list(cfg.channels)
    if cfg.resolved_channels is not None:
        return list(cfg.resolved_channels)

    def widths(factor: float) -> list[int]:
        return [max(1, round(c * factor)) for c in cfg.channels]

    def count(factor: float) -> int:
        with torch.device("meta"):
            return count_parameters(_build(cfg, input_shape, num_classes, widths(factor)))

    low, high = 1e-4, 1e4
    for _ in range(60):
        middle = math.sqrt(low * high)
        if count(middle) < budget:
            low = middle
        else:
            high = middle
    best = min((low, high), key=lambda f: abs(count(f) - budget))
    got = count(best)
    if abs(got - budget) > BUDGET_TOLERANCE * budget:
        raise ConfigError(
            f"config key 'model.param_budget' = {budget}: the closest this network gets is {got:,} "
            f"parameters (widths {widths(best)}); its fixed parts (embedding width {cfg.hidden_dim}, head, "
            "input) or the rounding of small widths stand in the way: change the budget or model.channels"
        )
    return widths(best)
