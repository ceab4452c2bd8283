"""Segmentation: the shapes_seg generator, the encoder-decoder networks, the task losses, the latent points of a
bottleneck map, the scores, and a trial end to end."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geotune.analysis.figures import draw_dataset_eda
from geotune.analysis.segmentation import segmentation_scores
from geotune.config import TrialConfig
from geotune.errors import ConfigError
from geotune.metric_names import PERFORMANCE, for_task
from geotune.trainables.data import load_data
from geotune.trainables.heads import OutputLayer
from geotune.trainables.losses import TaskLoss, balanced_class_weights, dice_loss, focal_loss
from geotune.trainables.models import build_model, count_parameters
from geotune.trainables.synthetic_data import (
    SEG_CLASS_NAMES,
    SHAPES_CENTRES,
    dataset_eda,
    generate_shapes_seg,
    shapes_seg_statistics,
)
from geotune.trainables.tasks import Task, balanced_sample, location_labels, location_vectors
from geotune.trainables.trial import NoSession, check_config, run_trial

# ---------------------------------------------------------------------------
# the generator


def reference_masks(boxes: np.ndarray, order: np.ndarray, size: int) -> np.ndarray:
    """The masks drawn one rectangle at a time, in the generator's order, by plain slicing."""
    masks = np.zeros((len(boxes), size, size), np.uint8)
    for n in range(len(boxes)):
        for cls in order[n]:
            top, left, height, width = boxes[n, cls]
            rows = slice(max(top, 0), max(min(top + height, size), 0))
            cols = slice(max(left, 0), max(min(left + width, size), 0))
            masks[n, rows, cols] = cls + 1
    return masks


@pytest.mark.parametrize("fully_inside", [True, False])
@pytest.mark.parametrize("seed,size", [(0, 64), (3, 32), (11, 48)])
def test_masks_agree_with_the_drawn_pixels(fully_inside, seed, size):
    drawn = generate_shapes_seg(80, size, 15, 0.25, 0.6, fully_inside, seed)
    assert drawn.images.shape == (80, 3, size, size) and drawn.images.dtype == np.uint8
    # The mask is what drawing the rectangles one by one, last on top, leaves.
    assert np.array_equal(drawn.masks, reference_masks(drawn.boxes, drawn.order, size))
    # Every pixel shows the colour of its mask class: black background, the class centre +/- delta.
    pixels = drawn.images.transpose(0, 2, 3, 1).astype(int)
    assert (pixels[drawn.masks == 0] == 0).all()
    for k in range(3):
        shown = pixels[drawn.masks == k + 1]
        assert len(shown) and (np.abs(shown - SHAPES_CENTRES[k]) <= 15).all()
    # One colour per rectangle: within an image, a class's pixels all have the same RGB.
    for n in range(10):
        for k in range(3):
            colours = np.unique(pixels[n][drawn.masks[n] == k + 1], axis=0)
            assert len(colours) <= 1
    # Each image holds one rectangle of every class, drawn in some order of the three.
    assert (np.sort(drawn.order, axis=1) == np.arange(3)).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fully_inside_holds_and_its_absence_lets_rectangles_run_off(seed):
    inside = generate_shapes_seg(200, 64, 15, 0.25, 0.6, True, seed)
    tops, lefts, heights, widths = np.moveaxis(inside.boxes, -1, 0)
    assert (tops >= 0).all() and (lefts >= 0).all()
    assert (tops + heights <= 64).all() and (lefts + widths <= 64).all()
    assert np.array_equal(inside.areas, inside.full_areas)
    assert shapes_seg_statistics(inside)["cut_fraction"] == 0.0
    loose = generate_shapes_seg(200, 64, 15, 0.25, 0.6, False, seed)
    assert (loose.areas >= 1).all(), "at least one pixel of every rectangle stays inside"
    assert shapes_seg_statistics(loose)["cut_fraction"] > 0.3


def test_generation_is_deterministic_per_seed():
    a = generate_shapes_seg(50, 64, 15, 0.25, 0.6, True, 7)
    b = generate_shapes_seg(50, 64, 15, 0.25, 0.6, True, 7)
    c = generate_shapes_seg(50, 64, 15, 0.25, 0.6, True, 8)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.masks, c.masks)


def test_statistics_on_a_known_image():
    """Two overlapping rectangles and one apart, by hand: areas, overlap and hidden shares."""
    drawn = generate_shapes_seg(1, 10, 0, 0.2, 0.2, True, 0)
    drawn.boxes[0] = [[0, 0, 4, 4], [2, 2, 4, 4], [8, 8, 2, 2]]  # class 1 drawn after class 0 hides 2x2 of it
    drawn.order[0] = [0, 1, 2]
    drawn.masks[:] = reference_masks(drawn.boxes, drawn.order, 10)
    cover = np.zeros((1, 10, 10), np.uint8)
    for top, left, h, w in drawn.boxes[0]:
        cover[0, top : top + h, left : left + w] += 1
    drawn.cover[:] = cover
    drawn.areas[:] = drawn.full_areas[:] = [[16, 16, 4]]
    stats = shapes_seg_statistics(drawn)
    assert stats["area_fraction"]["blue-ish"] == pytest.approx(12 / 100)
    assert stats["area_fraction"]["green-ish"] == pytest.approx(16 / 100)
    assert stats["area_fraction"]["background"] == pytest.approx(1 - 32 / 100)
    assert stats["overlap_fraction"] == pytest.approx(4 / 100)
    assert stats["hidden_fraction"] == pytest.approx({"blue-ish": 4 / 16, "green-ish": 0.0, "magenta-ish": 0.0})


def test_splits_hold_masks_on_the_device_as_uint8():
    cfg = TrialConfig.from_dict({"dataset": {"name": "shapes_seg", "shapes_seg": {"num_samples": 100}}, **UNET})
    data = load_data(cfg.dataset)
    assert data.task == "segmentation" and data.class_names == SEG_CLASS_NAMES
    assert data.train.images.shape[1:] == (3, 64, 64) and data.train.labels.shape[1:] == (64, 64)
    assert data.train.labels.dtype == torch.uint8
    assert len(data.train) + len(data.val) + len(data.test) == 100


# ---------------------------------------------------------------------------
# the networks

UNET = {"model": {"type": "unet", "channels": [8, 16, 32], "hidden_dim": 12}}


@pytest.mark.parametrize("kind", ["conv_autoencoder", "unet", "unet_separable"])
@pytest.mark.parametrize("channels,grid", [([8, 16, 32], 16), ([8, 16, 16, 32], 8), ([8], 64)])
def test_network_shapes(kind, channels, grid):
    cfg = TrialConfig.from_dict(
        {"dataset": {"name": "shapes_seg"}, "model": {"type": kind, "channels": channels, "hidden_dim": 12}}
    )
    model = build_model(cfg.model, (3, 64, 64), 4).eval()
    x = torch.randn(2, 3, 64, 64)
    z, logits = model.embed_and_classify(x)
    assert z.shape == (2, 12, grid, grid)
    assert logits.shape == (2, 4, 64, 64)
    assert torch.allclose(model.embed(x), z) and torch.allclose(model(x), logits)


def test_skip_connections_and_separable_weights():
    def build(kind):
        model = {"type": kind, "channels": [16, 32, 64]}
        cfg = TrialConfig.from_dict({"dataset": {"name": "shapes_seg"}, "model": model})
        return build_model(cfg.model, (3, 64, 64), 4).eval()

    x1, x2 = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    for kind, skips in (("conv_autoencoder", False), ("unet", True)):
        model = build(kind)
        with torch.no_grad():
            z, features1 = model._encode(x1)
            _, features2 = model._encode(x2)
            same = torch.allclose(model._decode(z, features1), model._decode(z, features2))
        assert same != skips, f"{kind}: with the latent map fixed the output depends on the input only through skips"
    assert count_parameters(build("unet_separable")) < 0.4 * count_parameters(build("unet"))


def test_a_size_the_levels_cannot_halve_is_refused():
    cfg = TrialConfig.from_dict(
        {"dataset": {"name": "shapes_seg", "image_size": 60}, "model": {"type": "unet", "channels": [8, 8, 8, 8]}}
    )
    with pytest.raises(ConfigError, match=r"model.channels.*divisible by 8.*60x60"):
        check_config(cfg)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"dataset": {"name": "shapes_seg"}}, r"'model.type' = 'simple_cnn'.*segmentation data set"),
        ({"model": {"type": "unet"}}, r"'model.type' = 'unet'.*classification data set"),
        ({"dataset": {"name": "shapes_seg", "augment": True}, **UNET}, r"'dataset.augment'"),
        ({"dataset": {"name": "shapes_seg"}, "model": {"type": "unet", "output": "sparsemax"}}, r"'model.output'"),
        ({"train": {"loss": "ce+hinge"}}, r"'train.loss' = 'ce\+hinge'.*'hinge'"),
        ({"train": {"focal_alpha": [1.0, 2.0]}}, r"'train.focal_alpha'.*focal loss only"),
        ({"train": {"keep_by": "val_miou"}}, r"'train.keep_by' = 'val_miou'"),
        (
            {"dataset": {"name": "shapes_seg"}, **UNET, "logging": {"geometry_layers": ["input"]}},
            r"'logging.geometry_layers'",
        ),
    ],
)
def test_task_mismatches_are_refused_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        TrialConfig.from_dict(overrides)


def test_focal_alpha_needs_one_weight_per_class():
    cfg = TrialConfig.from_dict(
        {"dataset": {"name": "shapes_seg"}, **UNET, "train": {"loss": "focal", "focal_alpha": [1, 1, 1]}}
    )
    with pytest.raises(ConfigError, match=r"'train.focal_alpha'.*4 classes"):
        check_config(cfg)


# ---------------------------------------------------------------------------
# the losses


def test_dice_of_a_perfect_mask_is_zero_and_a_hand_case():
    target = torch.tensor([[[0, 1], [1, 2]]])  # (1, 2, 2), classes 0, 1, 2
    perfect = F.one_hot(target, 3).movedim(-1, 1).float()
    assert dice_loss(perfect, target).item() == 0.0
    assert TaskLoss("dice", OutputLayer("softmax")).loss(perfect * 100.0, target).item() == pytest.approx(0, abs=1e-6)
    # Uniform probabilities 1/3 everywhere: class c has t_c target pixels, |P_c| = 4/3, overlap t_c / 3.
    uniform = torch.full((1, 3, 2, 2), 1 / 3)
    dice = [(2 * t / 3 + 1) / (4 / 3 + t + 1) for t in (1, 2, 1)]
    assert dice_loss(uniform, target).item() == pytest.approx(1 - sum(dice) / 3, rel=1e-6)


def test_balanced_weights_equalise_a_known_area_split():
    counts = torch.tensor([600, 300, 100, 0])
    w = balanced_class_weights(counts)
    assert w.tolist() == pytest.approx([1000 / (3 * 600), 1000 / (3 * 300), 1000 / (3 * 100), 0.0])
    assert (w[:3] * counts[:3]).tolist() == pytest.approx([1000 / 3] * 3), "every present class weighs the same"


def test_weighted_ce_uses_the_training_masks_weights():
    logits, target = torch.randn(2, 4, 8, 8), torch.randint(0, 4, (2, 8, 8))
    w = balanced_class_weights(torch.bincount(target.reshape(-1), minlength=4))
    got = TaskLoss("weighted_ce", OutputLayer("softmax"), w).loss(logits, target)
    per_pixel = -F.log_softmax(logits, 1).gather(1, target[:, None]).squeeze(1)
    assert got.item() == pytest.approx((w[target] * per_pixel).sum().item() / w[target].sum().item(), rel=1e-5)


def test_focal_loss_by_hand():
    logits, target = torch.zeros(3, 2), torch.tensor([0, 1, 1])  # p_true = 1/2 everywhere
    assert focal_loss(logits, target, 2.0).item() == pytest.approx(0.25 * math.log(2), rel=1e-6)
    alpha = torch.tensor([1.0, 3.0])
    assert focal_loss(logits, target, 2.0, alpha).item() == pytest.approx(0.25 * math.log(2) * 7 / 3, rel=1e-6)
    x, y = torch.randn(6, 4, 5, 5), torch.randint(0, 4, (6, 5, 5))
    assert focal_loss(x, y, 0.0).item() == pytest.approx(F.cross_entropy(x, y).item(), rel=1e-5), "gamma 0 is CE"


def test_a_sum_of_losses_is_the_sum_of_its_terms():
    x, y = torch.randn(3, 4, 6, 6), torch.randint(0, 4, (3, 6, 6))
    w = balanced_class_weights(torch.bincount(y.reshape(-1), minlength=4))
    out = OutputLayer("softmax")
    both = TaskLoss("weighted_ce+dice", out, w).loss(x, y)
    assert both.item() == pytest.approx(
        (TaskLoss("weighted_ce", out, w).loss(x, y) + TaskLoss("dice", out).loss(x, y)).item(), rel=1e-6
    )
    assert TaskLoss("ce", out).loss(x, y, reduction="sum").item() == pytest.approx(3 * F.cross_entropy(x, y).item())


# ---------------------------------------------------------------------------
# latent points of a bottleneck map


def test_location_labels_are_the_majority_class_of_each_cell():
    masks = torch.zeros(1, 4, 4, dtype=torch.long)
    masks[0, :2, :2] = torch.tensor([[1, 1], [1, 0]])  # cell (0, 0): three of class 1
    masks[0, :2, 2:] = torch.tensor([[2, 2], [3, 3]])  # cell (0, 1): a tie of 2 and 3 -> the lower, 2
    masks[0, 2:, :2] = torch.tensor([[3, 0], [0, 3]])  # cell (1, 0): a tie of 0 and 3 -> background
    masks[0, 2:, 2:] = 3  # cell (1, 1): all class 3
    assert location_labels(masks, (2, 2), 4).tolist() == [[[1, 2], [0, 3]]]


def test_points_carry_the_label_of_their_own_cell():
    """A feature map whose vector at (n, i, j) spells out (n, i, j), over random masks of 16 x 16 on a 4 x 4 grid."""
    n, grid, size = 3, 4, 16
    masks = torch.randint(0, 4, (n, size, size))
    index = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(grid), torch.arange(grid), indexing="ij"))
    z = index.permute(1, 0, 2, 3).float()  # (N, 3, h, w): channel c holds coordinate c
    task = Task("segmentation", 4, latent_points=40, eval_batch_size=8)
    points, labels = task.points(z, masks)
    assert points.shape == (n * grid * grid, 3)
    for (img, i, j), label in zip(points.long().tolist(), labels.tolist()):
        cell = masks[img, i * 4 : i * 4 + 4, j * 4 : j * 4 + 4].reshape(-1)
        counts = torch.bincount(cell, minlength=4)
        assert counts[label] == counts.max() and label == int(torch.nonzero(counts == counts.max())[0])
    assert torch.equal(location_vectors(z)[5], z[0, :, 1, 1])


def test_balanced_sample_takes_equal_numbers_per_class():
    labels = torch.tensor([0] * 500 + [1] * 40 + [2] * 9 + [3] * 200)
    picked = balanced_sample(labels, 30, 4, torch.Generator().manual_seed(0))
    assert len(set(picked.tolist())) == len(picked), "without replacement"
    assert torch.bincount(labels[picked], minlength=4).tolist() == [30, 30, 9, 30]
    again = balanced_sample(labels, 30, 4, torch.Generator().manual_seed(0))
    other = balanced_sample(labels, 30, 4, torch.Generator().manual_seed(1))
    assert torch.equal(picked, again) and not torch.equal(picked, other)
    task = Task("segmentation", 4, latent_points=80, eval_batch_size=8)
    points, measured = task.measured(torch.randn(len(labels), 5), labels, seed=0)
    assert torch.bincount(measured, minlength=4).tolist() == [20, 20, 9, 20] and len(points) == 69


# ---------------------------------------------------------------------------
# scores


def test_segmentation_scores_by_hand():
    confusion = np.array([[50, 5, 0, 0], [10, 30, 0, 0], [0, 0, 0, 0], [0, 0, 0, 5]])
    scores = segmentation_scores(confusion, ["bg", "a", "b", "c"])
    assert scores["pixel_accuracy"] == pytest.approx(85 / 100)
    assert scores["iou"] == pytest.approx({"bg": 50 / 65, "a": 30 / 45, "b": None, "c": 1.0})
    assert scores["dice"] == pytest.approx({"bg": 100 / 115, "a": 60 / 75, "b": None, "c": 1.0})
    assert scores["miou"] == pytest.approx((50 / 65 + 30 / 45 + 1) / 3), "a class absent everywhere is left out"


# ---------------------------------------------------------------------------
# end to end

TRIAL_FILES = {
    "config.yaml",
    "metrics.json",
    "training_history.json",
    "segmentation_report.json",
    "confusion_matrix.png",
    "masks.png",
    "train_val_loss.png",
    "train_val_accuracy.png",
    "grad_norms.png",
    "latents.npz",
    "geometry_summary.json",
    "geodesic_summary.json",
    "umap.png",
    "model.pt",
    "preprocessing.json",
    "model_summary.txt",
    "activations.png",
    "data_samples.png",
}


@pytest.mark.slow
def test_a_unet_trial_segments_shapes_and_writes_every_artifact(tmp_path, capsys):
    cfg = TrialConfig.from_dict(
        {
            "dataset": {"name": "shapes_seg", "shapes_seg": {"num_samples": 300}},
            "model": {"type": "unet", "channels": [8, 16, 32, 32], "hidden_dim": 16},
            "train": {"epochs": 8, "batch_size": 16, "lr": 3e-3, "loss": "weighted_ce", "patience": 0},
            "logging": {"latent_points": 400},
        }
    )
    metrics = run_trial(cfg, NoSession(), tmp_path, verbose=False)
    assert metrics["test_miou"] >= 0.8 and metrics["val_miou"] >= 0.8
    assert metrics["task"] == "segmentation" and metrics["warnings"] == []
    assert TRIAL_FILES <= {p.name for p in tmp_path.iterdir()}
    assert not (tmp_path / "classification_report.json").exists() and not (tmp_path / "logits.png").exists()
    assert not (tmp_path / "test_predictions.png").exists(), "masks have no per-image top-3"
    weights = metrics["loss_class_weights"]
    assert weights["background"] < 1 < weights["blue-ish"], "the larger background weighs less per pixel"
    report = json.loads((tmp_path / "segmentation_report.json").read_text())
    assert set(report) == {"train", "val", "test"} and report["test"]["miou"] == pytest.approx(metrics["test_miou"])
    assert np.array(report["test"]["confusion"]).sum() == metrics["test_size"] * 64 * 64
    history = json.loads((tmp_path / "training_history.json").read_text())
    assert all("val_miou" in row and "val_dice" in row for row in history)
    latents = np.load(tmp_path / "latents.npz")
    assert latents["embeddings"].shape == (400, 16) and "logits" not in latents.files
    assert np.bincount(latents["labels"], minlength=4).tolist() == [100] * 4
    geometry = json.loads((tmp_path / "geometry_summary.json").read_text())
    assert geometry["n_points"] == 400 and metrics["linear_separability"] is not None
    prep = json.loads((tmp_path / "preprocessing.json").read_text())
    assert prep["task"] == "segmentation" and prep["class_names"] == SEG_CLASS_NAMES

    # geotune predict on image files: one mask PNG each, its pixels the class indices the model gives
    from PIL import Image

    from geotune.study.cli import main
    from geotune.trainables.data import load_data
    from geotune.trainables.predict import load_trained, probabilities

    data = load_data(cfg.dataset)
    images, truth = data.test.images[:4], data.test.labels[:4].numpy()
    (tmp_path / "in").mkdir()
    for i in range(4):
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(tmp_path / "in" / f"img{i}.png")
    assert main(["predict", str(tmp_path), str(tmp_path / "in"), "--json", "--out", str(tmp_path / "masks")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(r["mask"]).name for r in rows] == [f"img{i}_mask.png" for i in range(4)]
    expected = probabilities(load_trained(tmp_path), images).argmax(1).numpy()
    for i, row in enumerate(rows):
        mask = np.asarray(Image.open(row["mask"]))
        assert Image.open(row["mask"]).mode == "P" and np.array_equal(mask, expected[i])
        assert sum(row["class_shares"].values()) == pytest.approx(1.0)
        assert (mask == truth[i]).mean() >= 0.8  # the masks are the trial's (mIoU >= 0.8)


@pytest.mark.slow
def test_a_segmentation_trial_trains_with_the_geodesic_regularizer(tmp_path):
    cfg = TrialConfig.from_dict(
        {
            "dataset": {"name": "shapes_seg", "shapes_seg": {"num_samples": 120}},
            "model": {"type": "conv_autoencoder", "channels": [8, 16, 16], "hidden_dim": 8},
            "train": {"epochs": 2, "batch_size": 16, "loss": "focal+dice", "patience": 0},
            "regularizer": {"name": "geodesic", "geodesic": {"target": "fixed", "lambda_reg": 1.0}},
            "logging": {"save_umap": False, "internals": "off", "latent_points": 200},
        }
    )
    metrics = run_trial(cfg, NoSession(), tmp_path, verbose=False)
    history = json.loads((tmp_path / "training_history.json").read_text())
    assert all(row["reg_loss"] > 0 for row in history), "the penalty acts on the bottleneck locations"
    assert math.isfinite(metrics["test_miou"])


def test_dataset_eda_compares_both_placements_on_the_same_seed():
    cfg = TrialConfig.from_dict({"dataset": {"name": "shapes_seg", "shapes_seg": {"num_samples": 200}}, **UNET})
    eda = dataset_eda(cfg.dataset)
    assert eda is not None and eda["configured"] == "fully_inside"
    inside, loose = eda["variants"]["fully_inside"], eda["variants"]["may_run_off"]
    assert inside["cut_fraction"] == 0.0 < loose["cut_fraction"]
    assert sum(inside["area_fraction"].values()) == pytest.approx(1.0)
    # Rectangles that run off the image cover less of it, so the background grows and overlaps shrink.
    assert loose["area_fraction"]["background"] > inside["area_fraction"]["background"]
    assert loose["overlap_fraction"] < inside["overlap_fraction"]
    assert dataset_eda(TrialConfig().dataset) is None
    figure = draw_dataset_eda(eda)
    assert len(figure.axes) == 3


def test_report_views_name_miou_where_classification_names_accuracy():
    assert for_task(PERFORMANCE, "classification") == PERFORMANCE
    seg = for_task(PERFORMANCE, "segmentation")
    assert seg[:2] == ("test_miou", "test_dice") and "test_accuracy" not in seg
    assert for_task(("val_accuracy", "silhouette"), "segmentation") == ("val_miou", "silhouette")
