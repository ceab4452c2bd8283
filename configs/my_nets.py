"""Examples of your own networks for geotune (docs/how-to/models.md, "Bring your own models").

``model.type: configs/my_nets.py:small_body`` returns a body: geotune flattens its output and adds the
embedding layer (model.hidden_dim) and the head. ``model.type: configs/my_nets.py:with_embedding`` returns a
module with its own ``embed(x)``: that is the embedding the geometry work measures, and geotune adds only
the head. A builder may take any of ``input_shape`` (C, H, W), ``num_classes`` and ``config`` (the model
section of the trial config).
"""

import torch
from torch import nn


def small_body(input_shape, config):
    """Two conv blocks as wide as model.channels says, then an average over positions."""
    channels, layers = input_shape[0], []
    for width in config.channels:
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1))


class TinyEmbedder(nn.Module):
    """A network whose embedding is its own: a conv layer, an average, and a 16-wide linear map."""

    def __init__(self, channels: int):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, 24, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.project = nn.Linear(24, 16)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(x).flatten(1))


def with_embedding(input_shape):
    return TinyEmbedder(input_shape[0])
