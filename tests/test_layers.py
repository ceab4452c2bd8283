"""The building blocks a study swaps by config: each formula on a hand-computed case, gradients against finite
differences, the shapes they give inside every model, parameter budgets, normalisation, optimisers, schedules."""

import math

import numpy as np
import pytest
import torch

from geotune.config import ModelConfig, TrialConfig
from geotune.errors import ConfigError
from geotune.trainables.layers import ChannelAttention, GatedConv2d, L2Pool2d, SeparableConv2d, Swish, activation
from geotune.trainables.models import build_model, count_parameters, model_widths


def test_swish_and_gelu_on_hand_computed_values():
    x = torch.tensor([-2.0, 0.0, 1.0, 3.0])
    sigmoid = 1 / (1 + np.exp(-x.numpy()))
    assert Swish()(x).numpy() == pytest.approx(x.numpy() * sigmoid, rel=1e-6)
    assert Swish()(torch.tensor([1.0])).item() == pytest.approx(1 / (1 + math.exp(-1)), rel=1e-6)  # 0.7311
    gelu = activation("gelu")(torch.tensor([1.0])).item()
    assert gelu == pytest.approx(0.5 * (1 + math.erf(1 / math.sqrt(2))), rel=1e-6)  # x * Phi(x) = 0.8413
    assert isinstance(activation("relu"), torch.nn.ReLU)


def test_l2_pool_is_the_root_mean_square_of_each_window():
    x = torch.tensor([[[[1.0, 2.0, 0.0, 0.0], [3.0, 4.0, 0.0, 0.0]]]])  # windows [1, 2, 3, 4] and all zeros
    y = L2Pool2d(2)(x)
    assert y.shape == (1, 1, 1, 2)
    assert y[0, 0, 0, 0].item() == pytest.approx(math.sqrt((1 + 4 + 9 + 16) / 4), rel=1e-6)
    assert y[0, 0, 0, 1].item() == pytest.approx(0.0, abs=1e-5)
    x.requires_grad_(True)
    L2Pool2d(2)(x).sum().backward()
    assert torch.isfinite(x.grad).all()  # finite at an all-zero window
    assert x.grad[0, 0, 0, 0].item() == pytest.approx(1 / (4 * math.sqrt(7.5)), rel=1e-5)  # d/dx1 = x1 / (4 y)


def test_gated_conv_multiplies_the_convolution_by_its_gate():
    layer = GatedConv2d(1, 1, 1)
    with torch.no_grad():
        layer.conv.weight.fill_(2.0)
        layer.conv.bias.fill_(1.0)
        layer.gate.weight.fill_(1.0)
        layer.gate.bias.fill_(0.0)
    x = torch.tensor([[[[0.0, 1.0]]]])
    # (2x + 1) * sigmoid(x): 1 * 0.5 at x = 0, 3 * sigmoid(1) at x = 1
    assert layer(x).flatten().tolist() == pytest.approx([0.5, 3 / (1 + math.exp(-1))], rel=1e-6)
    assert count_parameters(GatedConv2d(4, 8, 3)) == 2 * (4 * 8 * 9 + 8)


def test_separable_conv_is_depthwise_then_pointwise():
    layer = SeparableConv2d(2, 3, 3, padding=1, bias=False)
    assert count_parameters(layer) == 2 * 9 + 2 * 3  # in_ch k^2 + in_ch out_ch
    x = torch.randn(1, 2, 5, 5)
    depth = torch.nn.functional.conv2d(x, layer.depthwise.weight, padding=1, groups=2)
    assert torch.allclose(layer(x), torch.nn.functional.conv2d(depth, layer.pointwise.weight), atol=1e-6)


def test_channel_attention_rescales_each_channel_by_its_squeeze_excitation_weight():
    layer = ChannelAttention(2, reduction=2)
    with torch.no_grad():
        layer.reduce.weight.copy_(torch.tensor([[1.0, 1.0]]))
        layer.reduce.bias.zero_()
        layer.expand.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        layer.expand.bias.zero_()
    x = torch.stack([torch.full((2, 2), 1.0), torch.full((2, 2), 3.0)])[None]  # channel means 1 and 3
    s = 1 / (1 + math.exp(-4.0))  # relu(1 + 3) = 4; channel 0: sigmoid(4), channel 1: sigmoid(-4)
    y = layer(x)
    assert y[0, 0, 0, 0].item() == pytest.approx(1.0 * s, rel=1e-6)
    assert y[0, 1, 0, 0].item() == pytest.approx(3.0 * (1 - s), rel=1e-6)


@pytest.mark.parametrize(
    "layer",
    [Swish(), L2Pool2d(2), GatedConv2d(2, 2, 3, padding=1), SeparableConv2d(2, 3, 3, padding=1), ChannelAttention(4)],
    ids=["swish", "l2pool", "gated", "separable", "attention"],
)
def test_gradients_match_finite_differences(layer):
    torch.manual_seed(0)
    layer = layer.double()
    channels = 4 if isinstance(layer, ChannelAttention) else 2
    x = (torch.rand(2, channels, 4, 4, dtype=torch.float64) + 0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(layer, (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("model_type", ["simple_cnn", "resnet_basic", "resnet_bottleneck"])
@pytest.mark.parametrize(
    "options",
    [
        {"activation": "swish", "conv": "gated", "attention": "channel"},
        {"activation": "gelu", "conv": "separable", "pooling": "l2"},
        {"global_pool": "max", "pooling": "stride"},
        {"global_pool": "flatten", "attention": "channel"},
    ],
)
def test_every_option_builds_and_trains_in_every_conv_model(model_type, options):
    cfg = ModelConfig(type=model_type, channels=[8, 16], hidden_dim=6, **options)
    model = build_model(cfg, (3, 16, 16), 4)
    x = torch.randn(5, 3, 16, 16)
    z, logits = model.embed_and_classify(x)
    assert z.shape == (5, 6) and logits.shape == (5, 4)
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_per_block_kernels_and_strides_express_a_strided_first_convolution():
    cfg = ModelConfig(channels=[16], kernel_sizes=[5], strides=[4], pooling="stride", global_pool="avg")
    model = build_model(cfg, (3, 32, 32), 3)
    conv = model.body.block1.conv
    assert conv.kernel_size == (5, 5) and conv.stride == (4, 4)
    assert model.body(torch.zeros(2, 3, 32, 32)).shape == (2, 16, 1, 1)  # (32 + 4 - 5) // 4 + 1 = 8, pooled
    two = ModelConfig(channels=[8, 16], kernel_sizes=[5, 3], strides=[2, 1], pooling="max")
    body = build_model(two, (1, 28, 28), 10).body
    assert body(torch.zeros(1, 1, 28, 28)).shape == (1, 16, 3, 3)  # 28 -s2-> 14 -pool-> 7 -> 7 -pool-> 3


def test_shapes_that_cannot_work_are_refused_naming_the_block():
    with pytest.raises(ConfigError, match=r"'model.strides' = \[4, 4\]: block 2's 2x2 pooling shrinks a 16x16"):
        build_model(
            ModelConfig(channels=[8, 8], strides=[4, 4], pooling="max"), (1, 16, 16), 10
        )  # 16 -> 4 -> 2 -> 1 -> 0
    with pytest.raises(ConfigError, match=r"'model.kernel_sizes' = \[3\]: needs one entry per block"):
        TrialConfig.from_dict({"model": {"channels": [8, 16], "kernel_sizes": [3]}})
    with pytest.raises(ConfigError, match=r"'model.strides' = \[2, 2\]: applies to model.type simple_cnn only"):
        TrialConfig.from_dict({"model": {"type": "resnet_basic", "strides": [2, 2]}})
    with pytest.raises(ConfigError, match=r"'model.attention' = channel: applies to convolutional models"):
        TrialConfig.from_dict({"model": {"type": "fc", "attention": "channel"}})


@pytest.mark.parametrize("model_type", ["simple_cnn", "resnet_basic", "resnet_bottleneck"])
@pytest.mark.parametrize("budget", [40_000, 150_000])
def test_param_budget_matches_sizes_across_kernels(model_type, budget):
    counts = []
    for kernel in (3, 5, 7):
        cfg = ModelConfig(type=model_type, kernel_size=kernel, channels=[32, 64], param_budget=budget)
        counts.append(count_parameters(build_model(cfg, (1, 28, 28), 10)))
    assert all(abs(c - budget) <= 0.05 * budget for c in counts), counts
    unmatched = [
        count_parameters(build_model(ModelConfig(type=model_type, kernel_size=k, channels=[32, 64]), (1, 28, 28), 10))
        for k in (3, 5, 7)
    ]
    assert max(unmatched) / min(unmatched) > 1.3  # the comparison a budget fixes is really unequal without one


def test_param_budget_keeps_the_width_ratios_and_is_refused_when_out_of_reach():
    cfg = ModelConfig(channels=[16, 64], param_budget=60_000)
    widths = model_widths(cfg, (1, 16, 16), 10)
    assert widths[1] / widths[0] == pytest.approx(4, rel=0.15)
    locked = ModelConfig(channels=[16, 64], param_budget=60_000, resolved_channels=[3, 5])
    assert model_widths(locked, (1, 16, 16), 10) == [3, 5]  # a saved trial rebuilds what it built
    with pytest.raises(ConfigError, match=r"'model.param_budget' = 500: the closest this network gets is"):
        model_widths(ModelConfig(channels=[16, 64], param_budget=500), (1, 16, 16), 10)
    with pytest.raises(ConfigError, match=r"'model.resolved_channels' = \[3\]: geotune writes it"):
        TrialConfig.from_dict({"model": {"channels": [16, 64], "param_budget": 1000, "resolved_channels": [3]}})


def test_normalisation_choices():
    from geotune.trainables.data import normalization

    images = np.stack([np.full((1, 4, 4), 51, np.uint8), np.full((1, 4, 4), 153, np.uint8)])  # 0.2 and 0.6
    mean, std = normalization("train_stats", images)
    assert mean.flatten().item() == pytest.approx(0.4, rel=1e-6)
    assert std.flatten().item() == pytest.approx(0.2 * math.sqrt(32 / 31), rel=1e-6)  # sample std of 32 pixels
    mean, std = normalization("none", images)
    assert mean.flatten().item() == 0 and std.flatten().item() == 1
    rgb = np.zeros((2, 3, 4, 4), np.uint8)
    mean, std = normalization("imagenet", rgb)
    assert mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    assert std.flatten().tolist() == pytest.approx([0.229, 0.224, 0.225])
    mean, _ = normalization("imagenet", images)
    assert mean.flatten().tolist() == pytest.approx([(0.485 + 0.456 + 0.406) / 3])


def test_optimisers_and_schedules():
    from geotune.trainables.parts import build_optimizer, build_scheduler

    model = torch.nn.Linear(2, 2)
    for name, cls in (("nadam", torch.optim.NAdam), ("radam", torch.optim.RAdam)):
        assert isinstance(build_optimizer(TrialConfig.from_dict({"train": {"optimizer": name}}), model), cls)

    def lrs(train: dict) -> list[float]:
        cfg = TrialConfig.from_dict({"train": {"lr": 1.0, "optimizer": "sgd", **train}})
        optimizer = build_optimizer(cfg, model)
        scheduler = build_scheduler(cfg, optimizer)
        out = []
        for _ in range(cfg.train.epochs):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return out

    assert lrs({"scheduler": "exponential", "lr_gamma": 0.5, "epochs": 4}) == pytest.approx([1, 0.5, 0.25, 0.125])
    warm = lrs({"scheduler": "warmup_cosine", "warmup_epochs": 2, "epochs": 6})
    assert warm[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])  # linear warm-up from lr / (warmup + 1)
    assert warm[3:] == pytest.approx([0.5 * (1 + math.cos(math.pi * e / 4)) for e in (1, 2, 3)])
    with pytest.raises(ConfigError, match=r"'train.warmup_epochs' = 5: must be < the epochs it applies to \(5\)"):
        TrialConfig.from_dict({"train": {"scheduler": "warmup_cosine", "warmup_epochs": 5, "epochs": 5}})


@pytest.mark.slow
def test_a_trial_at_a_budget_records_the_widths_it_built(tmp_path):
    from conftest import tiny_config
    from geotune.config_loading import load_config
    from geotune.trainables.predict import load_trained
    from geotune.trainables.trial import NoSession, run_trial

    cfg = TrialConfig.from_dict(
        tiny_config(model={"param_budget": 30_000, "activation": "swish", "attention": "channel"}, train={"epochs": 1})
    )
    metrics = run_trial(cfg, NoSession(), tmp_path, verbose=False)
    assert abs(metrics["num_parameters"] - 30_000) <= 1_500
    saved = load_config(tmp_path / "config.yaml")
    assert saved.model.resolved_channels == metrics["channels_built"] != [16, 32]
    assert saved.model.param_budget == 30_000
    assert count_parameters(load_trained(tmp_path).model) == metrics["num_parameters"]  # model.pt loads back


@pytest.mark.slow
def test_init_from_starts_at_saved_weights_and_refuses_other_shapes(tmp_path):
    from conftest import tiny_config
    from geotune.trainables.parts import build_trial
    from geotune.trainables.trial import NoSession, check_config, run_trial

    first = TrialConfig.from_dict(tiny_config(train={"epochs": 1}))
    run_trial(first, NoSession(), tmp_path / "first", verbose=False)
    saved = torch.load(tmp_path / "first" / "model.pt", weights_only=True)
    again = TrialConfig.from_dict(tiny_config(train={"epochs": 1, "init_from": str(tmp_path / "first")}))
    model = build_trial(again).model
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    other = TrialConfig.from_dict(
        tiny_config(model={"channels": [8, 32]}, train={"init_from": str(tmp_path / "first")})
    )
    with pytest.raises(ConfigError, match=r"'train.init_from' = .*do not fit this model.* config \(shape of body"):
        check_config(other)
    with pytest.raises(ConfigError, match=r"'train.init_from' = .*: no model.pt there"):
        check_config(TrialConfig.from_dict(tiny_config(train={"init_from": str(tmp_path)})))
