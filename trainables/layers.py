"""The building blocks a study can swap by config: activations, convolutions, channel attention, pooling.

Each is a small module whose docstring gives its formula and where it comes from;
``tests/test_layers.py`` checks each formula on a hand-computed case and its
gradients against finite differences.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Swish(nn.Module):
    """swish(x) = x * sigmoid(x) (Ramachandran, Zoph & Le 2017, "Searching for Activation Functions";
    the same function as SiLU, Elfwing et al. 2018)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)


def activation(name: str) -> nn.Module:
    """relu (in place, as the networks always had), swish, or gelu (Hendrycks & Gimpel 2016, exact erf form)."""
    if name == "swish":
        return Swish()
    if name == "gelu":
        return nn.GELU()
    return nn.ReLU(inplace=True)


class GatedConv2d(nn.Module):
    """y = conv(x) * sigmoid(gate(x)): a convolution whose every output is scaled by a learned gate in (0, 1)
    computed by a second convolution of the same shape (the gated linear unit of Dauphin et al. 2017,
    "Language Modeling with Gated Convolutional Networks", in 2-D as in Yu et al. 2019, "Free-Form Image
    Inpainting with Gated Convolution"). Twice the parameters of a standard convolution."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0, bias: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=bias)
        self.gate = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.sigmoid(self.gate(x))


class SeparableConv2d(nn.Module):
    """A depthwise k x k convolution (one filter per input channel, ``groups = in_ch``) followed by a pointwise
    1 x 1 convolution that mixes channels (Chollet 2017, "Xception"; Howard et al. 2017, "MobileNets").
    in_ch * k^2 + in_ch * out_ch weights instead of in_ch * out_ch * k^2."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0, bias: bool = True):
        super().__init__()
        self.depthwise = nn.Conv2d(in_ch, in_ch, kernel, stride=stride, padding=padding, groups=in_ch, bias=False)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def conv2d(kind: str, in_ch: int, out_ch: int, kernel: int, stride: int = 1, bias: bool = True) -> nn.Module:
    """A k x k convolution of the configured kind, padded by k // 2 ("same" size at stride 1)."""
    padding = kernel // 2
    if kind == "gated":
        return GatedConv2d(in_ch, out_ch, kernel, stride, padding, bias)
    if kind == "separable":
        return SeparableConv2d(in_ch, out_ch, kernel, stride, padding, bias)
    return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=bias)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation (Hu, Shen & Sun 2018): s = sigmoid(W2 relu(W1 mean_hw(x))), y = x * s per channel.

    W1 reduces the C channel means to max(1, C // reduction) numbers, W2 expands them back;
    each channel is then rescaled by its weight in (0, 1).
    """

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.reduce = nn.Linear(channels, hidden)
        self.expand = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.sigmoid(self.expand(torch.relu(self.reduce(x.mean(dim=(2, 3))))))
        return x * weights[:, :, None, None]


class L2Pool2d(nn.Module):
    """y = sqrt(mean of x^2 over each k x k window) (L2 pooling, the p = 2 case of the Lp pooling of
    Sermanet, Chintala & LeCun 2012). A tiny epsilon under the root keeps its gradient finite where a
    window is all zeros (after a ReLU)."""

    def __init__(self, kernel: int = 2, eps: float = 1e-12):
        super().__init__()
        self.kernel, self.eps = kernel, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(F.avg_pool2d(x * x, self.kernel) + self.eps)


def pool2d(kind: str) -> nn.Module | None:
    """The 2 x 2 downsampling after a block: max, avg or l2; None for ``stride`` (the convolution strides)."""
    if kind == "max":
        return nn.MaxPool2d(2)
    if kind == "avg":
        return nn.AvgPool2d(2)
    if kind == "l2":
        return L2Pool2d(2)
    return None


def global_pool(kind: str) -> nn.Module:
    """Before the embedding layer: keep every position (flatten), or one number per channel (avg or max)."""
    if kind == "avg":
        return nn.AdaptiveAvgPool2d(1)
    if kind == "max":
        return nn.AdaptiveMaxPool2d(1)
    return nn.Identity()
