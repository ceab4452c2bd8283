"""Segmentation networks with an explicit latent space: an encoder, a linear bottleneck, a decoder.

Every network here is ``encoder -> dropout -> 1x1 conv to hidden_dim -> decoder -> 1x1 conv to classes``.
The 1x1 convolution's output, before any non-linearity, is the latent map (N, hidden_dim, h, w): one latent
vector per bottleneck location, linear for the same reason as the classifiers' embedding layer (a ReLU
would park points on the orthant's faces). ``embed(x)`` returns it; the regularizers and the geometry
metrics see its vectors (``trainables.tasks``).

- ``conv_autoencoder``: conv blocks with 2x downsampling between levels, then transposed-conv upsampling
  back to the input size; nothing passes the bottleneck, so the latent map must carry the whole mask.
- ``unet``: the same encoder and decoder with skip connections (Ronneberger et al. 2015): each decoder level
  concatenates the encoder's features of its resolution.
- ``unet_separable``: ``unet`` with every 3x3 convolution depthwise-separable (depthwise, then 1x1;
  Chollet 2017): about 1/8 of the weights at the same widths.

One level per ``model.channels`` entry; the input side must be divisible by 2^(levels - 1).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from geotune.config import ModelConfig
from geotune.errors import ConfigError
from geotune.schema import show
from geotune.trainables.layers import activation, conv2d, pool2d


def conv_block(cfg: ModelConfig, in_ch: int, out_ch: int, kind: str) -> nn.Sequential:
    """Two k x k convolutions, each followed by [BatchNorm] and the activation."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, (a, b) in enumerate(((in_ch, out_ch), (out_ch, out_ch)), 1):
        layers[f"conv{i}"] = conv2d(kind, a, b, cfg.kernel_size, 1, bias=not cfg.batch_norm)
        if cfg.batch_norm:
            layers[f"bn{i}"] = nn.BatchNorm2d(b)
        layers[f"{cfg.activation}{i}"] = activation(cfg.activation)
    return nn.Sequential(layers)


def downsample(cfg: ModelConfig, channels: int) -> nn.Module:
    """2x downsampling between encoder levels: model.pooling's pool, or a strided 3x3 conv for pooling stride."""
    pool = pool2d(cfg.pooling)
    return pool if pool is not None else nn.Conv2d(channels, channels, 3, stride=2, padding=1)


class EncoderDecoder(nn.Module):
    def __init__(self, cfg: ModelConfig, in_channels: int, num_classes: int, widths: list[int], skips: bool):
        super().__init__()
        kind = "separable" if cfg.type == "unet_separable" else "standard"
        self.skips = skips
        self.encoder = nn.ModuleList()
        self.down = nn.ModuleList()
        channels = in_channels
        for i, width in enumerate(widths):
            # The first convolution sees the raw channels: a separable conv there would mix nothing
            # across the three colours before its 1x1, so it stays standard.
            self.encoder.append(conv_block(cfg, channels, width, kind if i else "standard"))
            if i < len(widths) - 1:
                self.down.append(downsample(cfg, width))
            channels = width
        assert cfg.hidden_dim is not None  # segmentation networks are built-in: the config check requires it
        self.bottleneck = nn.Sequential(
            OrderedDict(dropout=nn.Dropout(cfg.dropout), linear=nn.Conv2d(channels, cfg.hidden_dim, 1))
        )
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        channels = cfg.hidden_dim
        for width in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(channels, width, 2, stride=2))
            self.decoder.append(conv_block(cfg, width * 2 if skips else width, width, kind))
            channels = width
        if len(widths) == 1:  # one level: no resolution change, the latent map is decoded in place
            self.decoder.append(conv_block(cfg, channels, widths[0], kind))
            channels = widths[0]
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = []
        for i, block in enumerate(self.encoder):
            x = block(x)
            if i < len(self.down):
                features.append(x)
                x = self.down[i](x)
        return self.bottleneck(x), features

    def _decode(self, z: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        x = z
        if not self.up:
            return self.classifier(self.decoder[0](x))
        for up, block, skip in zip(self.up, self.decoder, reversed(features)):
            x = up(x)
            x = block(torch.cat([x, skip], dim=1) if self.skips else x)
        return self.classifier(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The latent map (N, hidden_dim, h, w): one latent vector per bottleneck location."""
        return self._encode(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits (N, num_classes, H, W)."""
        return self.embed_and_classify(x)[1]

    def embed_and_classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, features = self._encode(x)
        return z, self._decode(z, features)


def build_encoder_decoder(
    cfg: ModelConfig, input_shape: tuple[int, int, int], num_classes: int, widths: list[int]
) -> EncoderDecoder:
    factor = 2 ** (len(widths) - 1)
    _, h, w = input_shape
    if h % factor or w % factor:
        raise ConfigError(
            f"config key 'model.channels' = {show(cfg.channels)}: {len(widths)} levels halve the resolution "
            f"{len(widths) - 1} times, so the input side must be divisible by {factor}; the data set gives "
            f"{h}x{w} (change dataset.image_size or the number of levels)"
        )
    return EncoderDecoder(cfg, input_shape[0], num_classes, widths, skips=cfg.type != "conv_autoencoder")
