"""Inside the network: the model summary, layer outputs, output sparsity, the activation mosaic, and the
geometry of each named layer (per trial and per group in the report)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tiny_config
from geotune.config import ModelConfig, TrialConfig
from geotune.errors import ConfigError
from geotune.trainables.internals import (
    activation_mosaic,
    layer_outputs,
    layer_vectors,
    model_summary,
    output_sparsity,
    pooled,
    relative_depths,
    resolve_layers,
    summary_text,
)
from geotune.trainables.models import build_model


def cnn():
    return build_model(ModelConfig(type="simple_cnn", channels=[8, 16], hidden_dim=12), (1, 16, 16), 10).eval()


def test_model_summary_has_every_layer_with_its_shape_and_parameters():
    model = cnn()
    rows = {r.name: r for r in model_summary(model, torch.zeros(2, 1, 16, 16))}
    assert rows["body.block1.conv"].output_shape == (8, 16, 16)  # 3x3 conv, padding 1
    assert rows["body.block1.pool"].output_shape == (8, 8, 8)
    assert rows["body.block2"].output_shape == (16, 4, 4)
    assert rows["embedding"].output_shape == (12,) and rows["head"].output_shape == (10,)
    assert rows["body.block1.conv"].parameters == 8 * 1 * 9  # no bias before BatchNorm
    assert rows["embedding.linear"].parameters == 16 * 4 * 4 * 12 + 12
    total = sum(p.numel() for p in model.parameters())
    assert rows["body"].parameters + rows["embedding"].parameters + rows["head"].parameters == total
    text = summary_text(list(rows.values()), total, (1, 16, 16))
    assert f"total parameters: {total:,}" in text and "    body.block1.conv  Conv2d" in text
    assert not model.training  # the summary leaves the mode as it was
    model.train()
    model_summary(model, torch.zeros(2, 1, 16, 16))
    assert model.training


def test_layer_names_resolve_by_suffix_and_bad_names_are_refused():
    model = cnn()
    assert list(resolve_layers(model, ["input", "block1", "body.block2", "embedding"], "k")) == [
        "input",
        "body.block1",
        "body.block2",
        "embedding",
    ]
    with pytest.raises(ConfigError, match=r"config key 'logging.geometry_layers' = 'block9': is no layer"):
        resolve_layers(model, ["block9"], "logging.geometry_layers")
    with pytest.raises(ConfigError, match=r"'conv': matches body.block1.conv, body.block2.conv"):
        resolve_layers(model, ["conv"], "logging.activation_layer")


def test_layer_outputs_match_the_forward_pass_and_pooling_averages_positions():
    model = cnn()
    x = torch.randn(5, 1, 16, 16)
    outputs = layer_outputs(model, resolve_layers(model, ["input", "block2", "embedding"], "k"), x, batch_size=2)
    with torch.no_grad():
        assert torch.allclose(outputs["embedding"], model.embed(x), atol=1e-6)
        assert torch.allclose(outputs["body.block2"], model.body(x), atol=1e-6)
    assert torch.equal(outputs["input"], x)
    feature = pooled(outputs["body.block2"], "body.block2")
    assert feature.shape == (5, 16)
    assert np.allclose(feature, outputs["body.block2"].numpy().mean(axis=(2, 3)))
    assert pooled(outputs["input"], "input").shape == (5, 256)  # pixels are flattened, not averaged


def test_layer_vectors_flatten_or_average_and_project_only_wide_layers():
    model = cnn()
    x = torch.randn(7, 1, 16, 16)
    layers = resolve_layers(model, ["block1", "embedding"], "k")
    outputs = layer_outputs(model, layers, x)
    flat = layer_vectors(model, "body.block1", layers["body.block1"], x, batch_size=3)  # 8 x 8 x 8 = 512 wide
    assert flat.output_shape == [8, 8, 8] and flat.width == 512 and not flat.projected
    assert np.allclose(flat.points, outputs["body.block1"].reshape(7, -1).numpy(), atol=1e-6)
    mean = layer_vectors(model, "body.block1", layers["body.block1"], x, features="position_mean")
    assert mean.width == 8 and np.allclose(mean.points, pooled(outputs["body.block1"], "body.block1"), atol=1e-6)
    wide = layer_vectors(model, "body.block1", layers["body.block1"], x, max_dim=64, seed=3, batch_size=2)
    assert wide.projected and wide.width == 512 and wide.points.shape == (7, 64)
    again = layer_vectors(model, "body.block1", layers["body.block1"], x, max_dim=64, seed=3, batch_size=7)
    assert np.allclose(wide.points, again.points, atol=1e-5)  # one projection per seed, whatever the batches
    assert not np.allclose(
        layer_vectors(model, "body.block1", layers["body.block1"], x, max_dim=64).points, again.points
    )
    assert model.training is False  # cnn() is in eval mode and stays there


def test_wide_layers_go_through_in_smaller_batches_with_the_same_vectors(monkeypatch):
    import geotune.trainables.internals as internals

    model, x = cnn(), torch.randint(0, 256, (11, 1, 16, 16), dtype=torch.uint8)
    layers = resolve_layers(model, ["block1"], "k")
    whole = layer_vectors(model, "body.block1", layers["body.block1"], x, normalize=lambda b: b.float() / 255)
    monkeypatch.setattr(internals, "LAYER_BATCH_VALUES", 600)  # 512 numbers per image: one image a batch
    single = layer_vectors(model, "body.block1", layers["body.block1"], x, normalize=lambda b: b.float() / 255)
    assert single.points.shape == (11, 512) and np.allclose(single.points, whole.points, atol=1e-6)
    with torch.no_grad():
        assert np.allclose(whole.points, model.body.block1(x.float() / 255).reshape(11, -1).numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "d, shape, seeds, tolerance",
    [
        (2, "curved", (0, 1), 0.02),
        (5, "curved", (0, 1, 2), 0.02),
        (10, "curved", (0, 1, 2), 0.02),
        (5, "flat", (0, 1), 0.02),
        (10, "flat", (0, 1), 0.02),
        (20, "curved", (0,), 0.05),
    ],
)
def test_the_projection_of_wide_layers_keeps_the_twonn_dimension(d, shape, seeds, tolerance):
    """Ground truth for logging.layer_projection_dim: a d-dimensional set in 10,000 dimensions (flat: a
    Gaussian in a random d-plane; curved: d latent coordinates through 10,000 random cosines) reads the same
    TwoNN dimension on its 2048-dimensional projection as on its full width (measured: within 1% up to
    d = 10; a curved d = 20 set reads about 38 at either width, within 5%). The flat sets also read d."""
    from geotune.analysis.latent import intrinsic_dim_twonn

    for seed in seeds:
        rng = np.random.default_rng(seed)
        z = rng.normal(size=(800, d))
        if shape == "flat":
            x = z @ np.linalg.qr(rng.normal(size=(10_000, d)))[0].T
        else:
            x = np.cos(z @ rng.normal(0, 0.5, (d, 10_000)) + rng.uniform(0, 2 * np.pi, 10_000))
        images = torch.from_numpy(x.astype(np.float32)).reshape(800, 1, 100, 100)
        vectors = layer_vectors(torch.nn.Identity(), "input", None, images, max_dim=2048, seed=seed)
        assert vectors.projected and vectors.points.shape == (800, 2048)
        full, projected = intrinsic_dim_twonn(x), intrinsic_dim_twonn(vectors.points)
        assert projected == pytest.approx(full, rel=tolerance), (seed, full, projected)
        if shape == "flat":
            assert projected == pytest.approx(d, rel=0.12), (seed, projected)


def test_relative_depth_counts_the_weight_layers_applied():
    model = cnn()  # weight layers: block1.conv, block2.conv, embedding.linear, head (BatchNorm weights are 1-D)
    layers = resolve_layers(model, ["input", "block1.conv", "block1.pool", "block2", "embedding", "head"], "k")
    depths = relative_depths(model, layers, torch.zeros(2, 1, 16, 16))
    assert depths == {
        "input": 0.0,
        "body.block1.conv": 0.25,
        "body.block1.pool": 0.25,  # pooling after a convolution sits where the convolution does
        "body.block2": 0.5,
        "embedding": 0.75,
        "head": 1.0,
    }
    free = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Tanh())  # no weight layer: evenly spaced, in order
    assert relative_depths(free, resolve_layers(free, ["input", "0", "1"], "k"), torch.zeros(1, 3)) == {
        "input": 0.0,
        "0": 0.5,
        "1": 1.0,
    }


def test_output_sparsity_on_logits_with_known_answers():
    confident = torch.tensor([[10.0, 0, 0, 0, 0]])  # sparsemax: one class; softmax: e^-10 outside the top 3 x2
    uniform = torch.zeros(1, 5)  # sparsemax: all five classes; softmax: 2/5 outside the top 3
    two = torch.tensor([[1.0, 0.8, -5, -5, -5]])  # sparsemax support {0, 1}: tau = 0.4
    result = output_sparsity(torch.cat([confident, uniform, two]))
    assert result["sparsemax_support_size"]["counts"] == {"1": 1, "2": 1, "3": 0, "4": 0, "5": 1}
    assert result["sparsemax_support_size"]["mean"] == pytest.approx(8 / 3)
    e = np.exp(-10.0)
    outside_confident = 2 * e / (1 + 4 * e)
    outside_two = 2 * np.exp(-5) / (np.exp(1) + np.exp(0.8) + 3 * np.exp(-5))
    assert result["softmax_mass_outside_top3"]["mean"] == pytest.approx(
        (outside_confident + 0.4 + outside_two) / 3, rel=1e-5
    )
    assert result["softmax_mass_outside_top3"]["median"] == pytest.approx(outside_two, rel=1e-4)


def test_activation_mosaic_scales_each_channel_over_the_images():
    images = np.zeros((2, 1, 8, 8), np.uint8)
    images[1] = 255
    maps = torch.stack([torch.full((3, 4, 4), 1.0), torch.full((3, 4, 4), 3.0)])
    maps[1, 2] = 5.0
    mosaic, channels = activation_mosaic(images, maps, max_channels=2)
    assert channels == 2 and mosaic.shape == (2 * 6, 3 * 6)  # tiles of 4 + a 1-pixel frame each side
    assert mosaic[1:5, 1:5].max() == 0.0 and mosaic[7:11, 1:5].min() == 1.0  # the inputs, grey in [0, 1]
    assert mosaic[1:5, 7:11].max() == 0.0 and mosaic[7:11, 7:11].min() == 1.0  # channel 0: 1 -> 0, 3 -> 1


@pytest.mark.slow
def test_a_trial_writes_its_internals_and_the_geometry_of_each_layer(tmp_path):
    from geotune.trainables.trial import NoSession, run_trial

    cfg = TrialConfig.from_dict(
        tiny_config(
            dataset={"image_size": 16},
            logging={
                "geometry_layers": ["input", "block1", "block2", "embedding"],
                "activation_layer": "block1.conv",
                "figures": True,
            },
        )
    )
    run_trial(cfg, NoSession(), tmp_path, verbose=False)
    for name in ("model_summary.txt", "logits.png", "activations.png", "output_sparsity.json", "layer_geometry.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["warnings"] == []
    layers = json.loads((tmp_path / "layer_geometry.json").read_text())["layers"]
    assert [r["layer"] for r in layers] == ["input", "body.block1", "body.block2", "embedding"]
    assert [r["width"] for r in layers] == [256, 16 * 8 * 8, 32 * 4 * 4, 32]  # flattened, as Ansuini et al.
    assert [r["dim"] for r in layers] == [256, 1024, 512, 32] and not any(r["projected"] for r in layers)
    assert [r["relative_depth"] for r in layers] == [0.0, 0.25, 0.5, 0.75]
    # the embedding layer is the latent space every other file measures: the same numbers
    final = json.loads((tmp_path / "geometry_summary.json").read_text())
    embedding = layers[-1]
    assert embedding["intrinsic_dim_twonn"] == pytest.approx(final["intrinsic_dim_twonn"], rel=1e-6)
    assert embedding["participation_ratio"] == pytest.approx(final["participation_ratio"], rel=1e-6)
    assert embedding["linear_separability"] == pytest.approx(metrics["linear_separability"], rel=1e-6)
    sparsity = json.loads((tmp_path / "output_sparsity.json").read_text())
    assert sparsity["n_images"] == metrics["val_size"]
    assert sum(sparsity["sparsemax_support_size"]["counts"].values()) == metrics["val_size"]

    # switched off: none of the internals
    off = TrialConfig.from_dict(tiny_config(train={"epochs": 1}, logging={"internals": "off"}))
    run_trial(off, NoSession(), tmp_path / "off", verbose=False)
    assert not any((tmp_path / "off" / n).exists() for n in ("logits.png", "model_summary.txt", "activations.png"))


def test_unknown_layers_are_refused_before_training():
    from geotune.trainables.trial import check_config

    cfg = TrialConfig.from_dict(tiny_config(logging={"geometry_layers": ["block1", "blok2"]}))
    with pytest.raises(ConfigError, match=r"'logging.geometry_layers' = 'blok2'"):
        check_config(cfg)


def test_report_draws_one_line_per_group_with_a_band(tmp_path):
    from geotune.analysis.figure_data import layer_curves

    rows = []
    for group, shift in (("none", 0.0), ("geodesic", 1.0)):
        for seed in range(3):
            folder = tmp_path / f"{group}{seed}"
            folder.mkdir()
            layers = [
                {
                    "layer": name,
                    "relative_depth": depth / 4,
                    "intrinsic_dim_twonn": depth + shift + seed,
                    "flatness_calibrated": 1.0,
                }
                for depth, name in enumerate(["input", "body.block1", "embedding"])
            ]
            (folder / "layer_geometry.json").write_text(json.dumps({"layers": layers}))
            rows.append({"trial": folder.name, "path": str(folder), "regularizer.name": group, "val_accuracy": 0.9})
    rows.append({"trial": "old", "path": str(tmp_path / "missing"), "regularizer.name": "none", "val_accuracy": 0.9})
    curves = layer_curves(pd.DataFrame(rows), ["regularizer.name"])
    assert curves is not None and curves.layers == ["input", "body.block1", "embedding"]
    dims = dict(curves.panels)["intrinsic_dim_twonn"]
    by_label = {s.label.split(" (")[0]: s for s in dims}
    assert by_label["name=none"].mean == pytest.approx([1.0, 2.0, 3.0])  # seeds 0, 1, 2 average to +1
    assert by_label["name=geodesic"].mean == pytest.approx([2.0, 3.0, 4.0])
    half = 4.302653 * 1.0 / np.sqrt(3)  # t(0.975, 2) x std 1 / sqrt(3)
    assert by_label["name=none"].high[0] - by_label["name=none"].mean[0] == pytest.approx(half, rel=1e-4)
    assert by_label["name=none"].label.endswith("(n=3)")  # the trial without the file is not counted
    assert curves.depths == [0.0, 0.25, 0.5]
    from geotune.analysis.figures import draw_layer_curves

    figure = draw_layer_curves(curves.layers, curves.panels, curves.depths)
    twonn = figure.axes[0]
    dashed = [line.get_ydata() for line in twonn.lines if line.get_linestyle() == "--" and len(line.get_ydata())]
    assert sorted(round(float(y[0]), 6) for y in dashed) == [1.0, 2.0]  # each group's input dimension
    assert list(twonn.lines[0].get_xdata()) == [0.0, 0.25, 0.5]


def test_the_test_image_grid_shows_each_class_then_the_surest_errors():
    from geotune.trainables.artifacts import prediction_picks, thumbnails

    labels = np.array([0, 1, 0, 2, 1, 2])
    probabilities = np.array(
        [[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.05, 0.9, 0.05], [0.2, 0.2, 0.6], [0.6, 0.3, 0.1], [0.95, 0.03, 0.02]]
    )
    assert prediction_picks(labels, probabilities, 5).tolist() == [0, 1, 3, 5, 2]  # firsts, then errors by confidence
    assert prediction_picks(labels, probabilities, 2).tolist() == [0, 1]
    images = torch.arange(2 * 3 * 56 * 40, dtype=torch.float32).reshape(2, 3, 56, 40).remainder(256).to(torch.uint8)
    small = thumbnails(images, side=28)
    assert small.shape == (2, 28, 20, 3) and small.dtype == np.uint8  # longer side 28, aspect kept, channels last
    assert thumbnails(images[:, :, :8, :8], side=28).tolist() == images[:, :, :8, :8].permute(0, 2, 3, 1).tolist()
