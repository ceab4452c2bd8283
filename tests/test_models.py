import itertools

import numpy as np
import pytest
import torch

from geotune.config import TrialConfig
from geotune.errors import ConfigError
from geotune.trainables.heads import OutputLayer, sparsemax, sparsemax_loss
from geotune.trainables.models import build_model


def model_config(**kw):
    return TrialConfig.from_dict({"model": kw}).model


@pytest.mark.parametrize(
    "kind, pooling, batch_norm, kernel",
    [
        (k, p, bn, ks)
        for k, p, bn, ks in itertools.product(
            ["simple_cnn", "resnet_basic", "resnet_bottleneck"], ["stride", "max", "avg"], [True, False], [3, 5, 7]
        )
    ],
)
def test_conv_models_shapes(kind, pooling, batch_norm, kernel):
    cfg = model_config(
        type=kind,
        pooling=pooling,
        batch_norm=batch_norm,
        kernel_size=kernel,
        channels=[8, 16],
        hidden_dim=24,
        head_type="mlp" if kernel == 5 else "linear",
    )
    for shape in [(1, 8, 8), (3, 32, 32)]:
        model = build_model(cfg, shape, num_classes=7)
        x = torch.randn(5, *shape)
        model.train()
        assert model(x).shape == (5, 7)
        assert model.embed(x).shape == (5, 24)
        z, logits = model.embed_and_classify(x)
        assert z.shape == (5, 24) and logits.shape == (5, 7)
        has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        assert has_bn == batch_norm
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1]
        assert any(m.kernel_size == (kernel, kernel) for m in convs)


@pytest.mark.parametrize(
    "kind, pooling",
    [
        ("simple_cnn", "max"),
        ("simple_cnn", "avg"),
        ("resnet_basic", "stride"),
        ("resnet_bottleneck", "max"),
        ("fc", "max"),
    ],
)
def test_channels_last_changes_the_memory_layout_not_the_function(kind, pooling):
    """train.channels_last (on by default) must give the same embeddings, logits and gradients."""
    import copy

    torch.manual_seed(0)
    model = build_model(model_config(type=kind, pooling=pooling, channels=[8, 16]), (3, 16, 16), num_classes=5)
    other = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = torch.randn(6, 3, 16, 16)
    for m in (model, other):
        m.train()
    torch.manual_seed(1)  # the same dropout masks on both sides
    z, logits = model.embed_and_classify(x)
    torch.manual_seed(1)
    z_cl, logits_cl = other.embed_and_classify(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(z, z_cl, atol=1e-5) and torch.allclose(logits, logits_cl, atol=1e-5)
    logits.square().sum().backward()
    logits_cl.square().sum().backward()
    for (name, p), p_cl in zip(model.named_parameters(), other.parameters()):
        assert torch.allclose(p.grad, p_cl.grad, atol=1e-4), name


def test_pooling_choice_changes_the_downsampling_layers():
    def kinds(pooling):
        model = build_model(model_config(pooling=pooling), (1, 16, 16), 10)
        return {type(m).__name__ for m in model.modules()}, [
            m.stride for m in model.modules() if isinstance(m, torch.nn.Conv2d)
        ]

    assert "MaxPool2d" in kinds("max")[0] and "AvgPool2d" not in kinds("max")[0]
    assert "AvgPool2d" in kinds("avg")[0]
    layers, strides = kinds("stride")
    assert "MaxPool2d" not in layers and "AvgPool2d" not in layers and all(s == (2, 2) for s in strides)


def test_fc_model():
    model = build_model(model_config(type="fc", channels=[64, 32], hidden_dim=16), (1, 8, 8), 10)
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)
    assert model.embed(torch.randn(4, 1, 8, 8)).shape == (4, 16)


def test_too_many_downsampling_blocks_is_a_config_error():
    with pytest.raises(ConfigError, match="model.channels.*below one pixel"):
        build_model(model_config(channels=[8, 8, 8, 8]), (1, 8, 8), 10)


def test_input_shape_and_classes_must_match_the_data():
    with pytest.raises(ConfigError, match="model.input_shape.*gives \\[1, 8, 8\\]"):
        build_model(model_config(input_shape=[3, 8, 8]), (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="model.num_classes.*10 classes"):
        build_model(model_config(num_classes=3), (1, 8, 8), 10)


# ---------------------------------------------------------------------------
# sparsemax


def reference_sparsemax(z: np.ndarray) -> np.ndarray:
    """Euclidean projection onto the simplex by bisection on the threshold (independent of sorting)."""
    lo, hi = z.min() - 1, z.max()
    for _ in range(200):
        tau = (lo + hi) / 2
        if np.clip(z - tau, 0, None).sum() > 1:
            lo = tau
        else:
            hi = tau
    return np.clip(z - (lo + hi) / 2, 0, None)


def test_sparsemax_known_value_and_simplex():
    p = sparsemax(torch.tensor([[-2.0, 0.0, 0.5]]))
    assert torch.allclose(p, torch.tensor([[0.0, 0.25, 0.75]]))
    z = torch.randn(50, 9, dtype=torch.float64) * 3
    p = sparsemax(z)
    assert torch.allclose(p.sum(1), torch.ones(50, dtype=torch.float64))
    assert (p >= 0).all() and (p == 0).any()
    for row, out in zip(z.numpy(), p.numpy()):
        assert np.allclose(out, reference_sparsemax(row), atol=1e-9)
    # along another dimension
    assert torch.allclose(sparsemax(z.T, dim=0), p.T)


def test_sparsemax_gradcheck():
    z = (torch.randn(6, 5, dtype=torch.float64) * 2).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: sparsemax(t, dim=1), (z,), eps=1e-6, atol=1e-5)
    target = torch.randint(0, 5, (6,))
    assert torch.autograd.gradcheck(lambda t: sparsemax_loss(t, target, reduction="none"), (z,), eps=1e-6, atol=1e-5)


def test_sparsemax_loss_properties():
    z = torch.randn(40, 6, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 6, (40,))
    loss = sparsemax_loss(z, target, reduction="sum")
    loss.backward()
    expected = sparsemax(z.detach()) - torch.nn.functional.one_hot(target, 6).double()
    assert torch.allclose(z.grad, expected)  # gradient = sparsemax(z) - onehot(y)
    assert (sparsemax_loss(z.detach(), target, "none") >= -1e-12).all()
    confident = torch.tensor([[5.0, 0.0, 0.0]])
    assert sparsemax_loss(confident, torch.tensor([0])).item() == pytest.approx(0.0)
    assert sparsemax_loss(confident, torch.tensor([1])).item() > 1.0


@pytest.mark.parametrize("scale, offset", [(1.0, 0.0), (100.0, 0.0), (1000.0, 0.0), (3.0, 1e4), (100.0, 1e4)])
def test_sparsemax_loss_is_exact_for_large_and_offset_logits(scale, offset):
    # float32 logits; the reference is the paper's formula in float64 on the same values (threshold by bisection)
    g = torch.Generator().manual_seed(int(scale))
    z = (torch.randn(64, 10, generator=g) * scale + offset).float()
    target = torch.randint(0, 10, (64,), generator=g)
    loss = sparsemax_loss(z, target, reduction="none")
    assert (loss >= 0).all()
    for row, y, value in zip(z.double().numpy(), target.numpy(), loss.numpy()):
        shifted = row - row.max()  # the loss is shift-invariant; in float64 this subtraction is exact
        p = reference_sparsemax(shifted)
        tau = (shifted[p > 0] - p[p > 0]).mean()
        support = p > 0
        reference = -shifted[y] + 0.5 * (shifted[support] ** 2 - tau**2).sum() + 0.5
        assert abs(value - reference) <= 1e-4 * max(1.0, abs(reference)), (scale, offset, value, reference)
    # probabilities are shift-invariant too
    assert torch.allclose(sparsemax(z), sparsemax(z - offset), atol=1e-6)


def test_output_layer_losses():
    logits = torch.randn(8, 4)
    y = torch.randint(0, 4, (8,))
    assert torch.allclose(OutputLayer("softmax").loss(logits, y), torch.nn.functional.cross_entropy(logits, y))
    assert torch.allclose(OutputLayer("sparsemax").probabilities(logits).sum(1), torch.ones(8))
    assert torch.allclose(OutputLayer("sparsemax").loss(logits, y), sparsemax_loss(logits, y))
