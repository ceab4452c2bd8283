"""Bring your own: data sets and models named by import path, torchvision backbones with local weights,
freezing. User modules are written by the tests; torchvision weights are saved by the tests and reloaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from conftest import tiny_config
from geotune.config import TrialConfig
from geotune.errors import ConfigError
from geotune.trainables.data import check_dataset, describe_input, load_data
from geotune.trainables.loop import recalibrate_batchnorm
from geotune.trainables.models import LatentModel, OwnEmbeddingModel, build_model, count_parameters
from geotune.trainables.parts import build_optimizer
from geotune.trainables.trial import check_config

REPO = Path(__file__).parents[1]

USER_DATA = '''
import numpy as np
import torch


def blobs(n_per_class=40, classes=3, side=12, seed=0):
    """Grey squares whose brightness says the class, with noise: an easy, known set."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n_per_class)
    images = (labels[:, None, None] + 1) / (classes + 1) + rng.normal(0, 0.03, (len(labels), side, side))
    return np.clip(images, 0, 1).astype(np.float32), labels


def pool(cfg):
    images, labels = blobs(seed=cfg.split_seed)
    return images, labels, ["dark", "mid", "light"]


def channels_last_tensors(cfg):
    images, labels = blobs()
    rgb = np.repeat((images * 255).round().astype(np.uint8)[..., None], 3, axis=3)  # (N, H, W, 3)
    return torch.from_numpy(rgb), torch.from_numpy(labels)


def ready_splits(cfg):
    train, val, test = blobs(30, seed=1), blobs(7, seed=2), blobs(9, seed=3)
    return {"train": train, "val": val, "test": test, "class_names": ["a", "b", "c"]}


def bad_shape(cfg):
    return np.zeros((10, 2, 3, 4, 5), np.uint8), np.zeros(10, np.int64)


def two_channels(cfg):
    return np.zeros((10, 2, 8, 8), np.uint8), np.arange(10) % 2


def zero_height(cfg):
    return np.zeros((10, 1, 0, 8), np.uint8), np.arange(10) % 2


def rgba_last(cfg):
    return np.zeros((10, 8, 8, 4), np.uint8), np.arange(10) % 2


def bad_range(cfg):
    images, labels = blobs()
    return images * 4 - 1, labels


def bad_count(cfg):
    images, labels = blobs()
    return images, labels[:-1]


def bad_label(cfg):
    images, labels = blobs()
    return images, labels, ["only", "two"]


def bad_dtype(cfg):
    images, labels = blobs()
    return images.astype(np.complex64), labels


def bad_return(cfg):
    return "images"


def bad_splits(cfg):
    return {"train": blobs(side=12), "test": blobs(side=10)}


def broken(cfg):
    raise RuntimeError("the share is not mounted")
'''

USER_NETS = """
import torch
from torch import nn


def body(input_shape, config):
    conv = nn.Conv2d(input_shape[0], config.channels[0], 3, padding=1)
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(2))


class Own(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.out = nn.Linear(8, 5)

    def embed(self, x):
        return self.out(self.bn(self.conv(x)).mean(dim=(2, 3)))


def own_embedding(input_shape, num_classes):
    return Own(input_shape[0])


def needs_more(input_shape, depth):
    return nn.Identity()


def not_a_module():
    return "a network"


class Lambda(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x):
        return self.f(x)


def ignores_batch():
    return Lambda(lambda x: x[:1].flatten(1))  # one row whatever the batch


def mixes_batch():
    return Lambda(lambda x: (x - x.mean(0)).flatten(1))  # each row depends on the others


def zero_width():
    return Lambda(lambda x: x.flatten(1)[:, :0])


def scalar():
    return Lambda(lambda x: x.sum())


def exits():
    import sys

    sys.exit(0)
"""


@pytest.fixture()
def user_code(tmp_path):
    (tmp_path / "user_data.py").write_text(USER_DATA)
    (tmp_path / "user_nets.py").write_text(USER_NETS)
    return tmp_path


def data_config(user_code: Path, function: str, **dataset) -> TrialConfig:
    return TrialConfig.from_dict(
        tiny_config(dataset={"name": f"{user_code / 'user_data.py'}:{function}", **dataset}, train={"batch_size": 16})
    )


# ---------------------------------------------------------------------------
# data sets


def test_a_user_pool_is_split_normalised_and_moved_like_a_built_in_set(user_code):
    cfg = data_config(user_code, "pool", val_ratio=0.25, test_ratio=0.25)
    data = load_data(cfg.dataset)
    assert data.class_names == ["dark", "mid", "light"]
    assert (len(data.train), len(data.val), len(data.test)) == (60, 30, 30)
    assert data.train.images.dtype == torch.uint8 and data.input_shape == (1, 12, 12)
    assert torch.bincount(data.val.labels).tolist() == [10, 10, 10], "stratified"
    # floats in [0, 1] became 0..255: class 1 of 3 is brightness 2/4
    mid = data.train.images[data.train.labels == 1].float().mean().item()
    assert abs(mid - 127.5) < 3
    assert describe_input(cfg.dataset) == ((1, 12, 12), 3)
    check = check_dataset(cfg.dataset)
    assert check is not None and check.split_sizes == (60, 30)


def test_user_tensors_channels_last_and_ready_splits(user_code):
    data = load_data(data_config(user_code, "channels_last_tensors", image_size=8).dataset)
    assert data.input_shape == (3, 8, 8) and len(data.train) + len(data.val) + len(data.test) == 120
    ready = load_data(data_config(user_code, "ready_splits", classes=["c", "a"]).dataset)
    assert (len(ready.train), len(ready.val), len(ready.test)) == (60, 14, 18), "the loader's own splits, kept"
    assert ready.class_names == ["c", "a"]
    check = check_dataset(data_config(user_code, "ready_splits").dataset)
    assert check is not None and check.split_sizes == (90, 21)


@pytest.mark.parametrize(
    "function, message",
    [
        ("bad_shape", "images has shape [10, 2, 3, 4, 5]; expected (N, H, W), (N, C, H, W) or (N, H, W, C)"),
        ("two_channels", "images has shape [10, 2, 8, 8]: 2 channels; geotune takes 1 (grey) or 3 (RGB)"),
        ("rgba_last", "images has shape [10, 8, 8, 4]: 4 channels; geotune takes 1 (grey) or 3 (RGB)"),
        ("zero_height", "images has shape [10, 1, 0, 8]: images of zero height or width"),
        ("bad_range", "float images must lie in [0, 1]"),
        ("bad_count", "labels has 119 entries for 120 images; counts must match"),
        ("bad_label", "a label is 2 but class_names has 2 entries"),
        ("bad_dtype", "have dtype complex64; expected uint8 (0..255) or float (0..1)"),
        ("bad_return", "the loader returned a str; expected (images, labels)"),
        ("bad_splits", "the splits' images differ in shape"),
        ("broken", "the loader raised RuntimeError: the share is not mounted"),
        ("missing", "has no 'missing'"),
    ],
)
def test_a_user_loader_s_mistake_is_one_line_naming_it(user_code, function, message):
    cfg = data_config(user_code, function)
    with pytest.raises(ConfigError) as raised:
        check_config(cfg)
    text = str(raised.value)
    assert message in text and "\n" not in text
    assert text.startswith(("dataset '", "config key 'dataset.name'")) and "user_data.py" in text


def test_references_are_checked_when_read_and_imported_when_needed(tmp_path):
    with pytest.raises(ConfigError, match="a reference to your code is 'package.module:function'"):
        TrialConfig.from_dict({"dataset": {"name": "my data:load"}})
    cfg = TrialConfig.from_dict({"dataset": {"name": str(tmp_path / "nowhere.py") + ":load"}})  # read: no import
    with pytest.raises(ConfigError, match="nowhere.py' does not exist"):
        check_dataset(cfg.dataset)
    cfg = TrialConfig.from_dict({"dataset": {"name": "no_such_package_xyz.data:load"}})
    with pytest.raises(ConfigError, match="module 'no_such_package_xyz.data' cannot be imported"):
        check_dataset(cfg.dataset)
    with pytest.raises(ConfigError, match="unknown data set"):
        TrialConfig.from_dict({"dataset": {"name": "imagenet"}})


def test_relative_references_are_stored_absolute_in_a_plan(user_code, monkeypatch):
    """Ray runs trials in their own folders: a plan holds the files of references absolute, sweeps included."""
    from geotune.search_spaces.space import with_sweeps
    from geotune.study.plan import RunOptions, make_plan

    monkeypatch.chdir(user_code)
    config = tiny_config(dataset={"name": "user_data.py:pool"}, model={"channels": [6]})
    spec = with_sweeps(None, ["model.type=user_nets.py:body,simple_cnn"], config)
    plan = make_plan(spec, {}, RunOptions(storage=str(user_code / "runs"), name="p"))
    assert plan.base["dataset"]["name"] == f"{user_code / 'user_data.py'}:pool"
    assert {v["model.type"] for v in plan.variants} == {f"{user_code / 'user_nets.py'}:body", "simple_cnn"}


# ---------------------------------------------------------------------------
# models


def test_a_user_body_gets_geotune_s_embedding_and_head(user_code):
    cfg = TrialConfig.from_dict(
        {"model": {"type": f"{user_code / 'user_nets.py'}:body", "channels": [6], "hidden_dim": 10}}
    )
    model = build_model(cfg.model, (3, 12, 12), 4)
    assert isinstance(model, LatentModel) and model.embedding.linear.in_features == 6 * 2 * 2
    z, logits = model.embed_and_classify(torch.randn(5, 3, 12, 12))
    assert z.shape == (5, 10) and logits.shape == (5, 4)


def test_a_user_module_with_its_own_embed_keeps_it(user_code):
    cfg = TrialConfig.from_dict({"model": {"type": f"{user_code / 'user_nets.py'}:own_embedding"}})
    model = build_model(cfg.model, (1, 8, 8), 3)
    assert isinstance(model, OwnEmbeddingModel)
    x = torch.randn(4, 1, 8, 8)
    model.eval()
    assert torch.equal(model.embed(x), model.net.embed(x)), "the module's embedding, untouched"
    assert model(x).shape == (4, 3) and count_parameters(model) == count_parameters(model.net) + 5 * 3 + 3


@pytest.mark.parametrize(
    "function, message",
    [
        ("needs_more", "the builder needs depth; it may take only input_shape, num_classes and config"),
        ("not_a_module", "the builder returned a str, not a torch.nn.Module"),
        ("ignores_batch", r"returns shape \[1, 64\] for a batch of 2 images; expected one row per image"),
        ("mixes_batch", "gives an image other features in a larger batch \\(eval mode\\): its output mixes"),
        ("zero_width", "gives 0 features per image"),
        ("scalar", r"returns shape \[\] for a batch of 2 images"),
        ("exits", "the builder raised SystemExit: 0"),
    ],
)
def test_a_user_builder_s_mistake_is_one_line(user_code, function, message):
    cfg = TrialConfig.from_dict({"model": {"type": f"{user_code / 'user_nets.py'}:{function}"}})
    with pytest.raises(ConfigError, match=message):
        build_model(cfg.model, (1, 8, 8), 3)


def test_built_in_only_keys_and_torchvision_only_keys_are_refused_elsewhere():
    with pytest.raises(ConfigError, match="'model.param_budget' = 5000: shapes geotune's built-in models"):
        TrialConfig.from_dict({"model": {"type": "torchvision.resnet18", "param_budget": 5000}})
    with pytest.raises(ConfigError, match="'model.weights' = w.pt: applies to torchvision models"):
        TrialConfig.from_dict({"model": {"weights": "w.pt"}})
    with pytest.raises(ConfigError, match="'model.hidden_dim' = null: built-in models need an embedding size"):
        TrialConfig.from_dict({"model": {"hidden_dim": None}})
    with pytest.raises(ConfigError, match="'model.freeze' = 'all-but-head': the embedding cannot move"):
        TrialConfig.from_dict({"model": {"freeze": "all-but-head"}, "regularizer": {"name": "geodesic"}})
    with pytest.raises(ConfigError, match="torchvision has no classification model 'resnet9'"):
        build_model(TrialConfig.from_dict({"model": {"type": "torchvision.resnet9"}}).model, (3, 32, 32), 3)


# ---------------------------------------------------------------------------
# torchvision backbones


def resnet18_config(**model) -> TrialConfig:
    return TrialConfig.from_dict({"model": {"type": "torchvision.resnet18", **model}})


def test_a_torchvision_resnet18_reloads_weights_saved_by_the_test(tmp_path):
    torch.manual_seed(3)
    source = torchvision.models.resnet18(num_classes=10)  # the classifier's size does not matter: it is left out
    torch.save(source.state_dict(), tmp_path / "resnet18.pt")
    cfg = resnet18_config(weights=str(tmp_path / "resnet18.pt"), hidden_dim=None)
    torch.manual_seed(0)
    model = build_model(cfg.model, (3, 64, 64), 4, with_weights=True)
    assert isinstance(model, LatentModel)
    body = model.body.state_dict()
    assert all(torch.equal(body[k], v) for k, v in source.state_dict().items() if not k.startswith("fc."))
    # the embedding is the pooled features (hidden_dim null): exactly torchvision's penultimate output
    source.fc = nn.Identity()
    source.eval(), model.eval()
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(model.embed(x), source(x), atol=1e-5)
    assert model.head.in_features == 512
    without = build_model(cfg.model, (3, 64, 64), 4, with_weights=False)  # a finished trial's rebuild
    assert not torch.equal(without.body.conv1.weight, body["conv1.weight"])


def test_grey_inputs_see_what_the_rgb_network_sees_in_equal_channels(tmp_path):
    torch.manual_seed(1)
    source = torchvision.models.resnet18()
    torch.save(source.state_dict(), tmp_path / "w.pt")
    model = build_model(resnet18_config(weights=str(tmp_path / "w.pt"), hidden_dim=None).model, (1, 64, 64), 3, True)
    source.fc = nn.Identity()
    model.eval(), source.eval()
    grey = torch.rand(2, 1, 64, 64)
    assert model.body.conv1.in_channels == 1
    assert torch.allclose(model.embed(grey), source(grey.repeat(1, 3, 1, 1)), atol=1e-4)


def test_small_images_get_the_small_image_stem():
    small = build_model(resnet18_config().model, (3, 32, 32), 3)
    assert small.body.conv1.stride == (1, 1) and isinstance(small.body.maxpool, nn.Identity)
    large = build_model(resnet18_config().model, (3, 64, 64), 3)
    assert large.body.conv1.stride == (2, 2) and isinstance(large.body.maxpool, nn.MaxPool2d)


def test_weights_of_another_network_or_a_missing_download_are_refused(tmp_path, monkeypatch):
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "resnet34.pt")
    cfg = resnet18_config(weights=str(tmp_path / "resnet34.pt"))
    with pytest.raises(ConfigError, match=r"not weights of torchvision.resnet18 \(unexpected layer1.2"):
        build_model(cfg.model, (3, 32, 32), 3, with_weights=True)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_cache"))
    with pytest.raises(ConfigError, match="ResNet18_Weights.IMAGENET1K_V1 is not in torch's cache .*model.download"):
        build_model(resnet18_config(weights="DEFAULT").model, (3, 32, 32), 3, with_weights=True)
    with pytest.raises(ConfigError, match="neither a file nor a weights name of torchvision.resnet18"):
        build_model(resnet18_config(weights="IMAGENET9K").model, (3, 32, 32), 3, with_weights=True)


def test_a_cached_torchvision_weights_name_loads_without_a_download(tmp_path, monkeypatch):
    """torch's cache holds the file torchvision's weights name points at: loaded from there, nothing fetched."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(2)
    source = torchvision.models.resnet18()
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(source.state_dict(), tmp_path / "hub" / "checkpoints" / Path(url).name)
    model = build_model(resnet18_config(weights="DEFAULT").model, (3, 64, 64), 3, with_weights=True)
    assert torch.equal(model.body.layer4[1].conv2.weight, source.layer4[1].conv2.weight)


@pytest.mark.parametrize("freeze, trained", [("backbone", {"embedding", "head"}), ("all-but-head", {"head"})])
def test_freezing_is_checked_by_gradients_and_batchnorm_statistics(freeze, trained):
    cfg = TrialConfig.from_dict(
        {"model": {"type": "torchvision.resnet18", "freeze": freeze, "hidden_dim": 16}, "train": {"optimizer": "sgd"}}
    )
    model = build_model(cfg.model, (3, 32, 32), 3)
    model.train()
    before = model.body.bn1.running_mean.clone()
    z, logits = model.embed_and_classify(torch.randn(8, 3, 32, 32))
    logits.sum().backward()
    got = {name.split(".")[0] for name, p in model.named_parameters() if p.grad is not None}
    assert got == trained
    assert all(p.grad is None for p in model.body.parameters())
    assert torch.equal(model.body.bn1.running_mean, before), "a frozen BatchNorm keeps its statistics"
    optimised = {id(p) for group in build_optimizer(cfg, model).param_groups for p in group["params"]}
    assert optimised == {id(p) for name, p in model.named_parameters() if name.split(".")[0] in trained}
    free = build_model(TrialConfig.from_dict({"model": {"type": "torchvision.resnet18"}}).model, (3, 32, 32), 3)
    free.train()
    free(torch.randn(8, 3, 32, 32))
    assert not torch.equal(free.body.bn1.running_mean, before), "unfrozen, the statistics move"


# ---------------------------------------------------------------------------
# BatchNorm statistics for short runs (train.precise_bn)


def test_precise_bn_sets_running_statistics_to_the_average_over_training_images():
    """By hand: the running mean and (unbiased) variance become the average of the per-batch statistics of
    the convolution's output over the images, in batches of batch_size; momentum is restored."""
    torch.manual_seed(0)
    cfg = TrialConfig.from_dict({"model": {"channels": [4], "hidden_dim": 4, "dropout": 0.0}})
    model = build_model(cfg.model, (1, 8, 8), 3)
    bn = model.body.block1.bn
    bn.momentum = 0.01
    images = torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8)

    def normalize(x):
        return x.float() / 255

    assert recalibrate_batchnorm(model, images, normalize, batch_size=4) == 1
    with torch.no_grad():
        out = model.body.block1.conv(normalize(images))
    chunks = [out[0:4], out[4:8], out[8:10]]
    mean = torch.stack([c.mean(dim=(0, 2, 3)) for c in chunks]).mean(0)
    var = torch.stack([c.var(dim=(0, 2, 3)) for c in chunks]).mean(0)
    assert torch.allclose(bn.running_mean, mean, atol=1e-6) and torch.allclose(bn.running_var, var, atol=1e-6)
    assert bn.momentum == 0.01

    frozen = build_model(TrialConfig.from_dict({"model": {"freeze": "backbone"}}).model, (1, 8, 8), 3)
    before = {k: v.clone() for k, v in frozen.state_dict().items() if "running" in k}
    assert recalibrate_batchnorm(frozen, images, normalize, batch_size=4) == 0, "frozen BatchNorms keep theirs"
    assert all(torch.equal(frozen.state_dict()[k], v) for k, v in before.items())


def test_precise_bn_is_on_for_external_models_by_default():
    from geotune.config import precise_bn_on

    assert precise_bn_on(TrialConfig.from_dict({"model": {"type": "torchvision.resnet18"}}))
    assert not precise_bn_on(TrialConfig.from_dict({}))
    assert precise_bn_on(TrialConfig.from_dict({"train": {"precise_bn": "on"}}))


# ---------------------------------------------------------------------------
# the documented example, end to end


@pytest.mark.slow
def test_the_bring_your_own_example_trains(tmp_path, cli, monkeypatch):
    """The example as the README runs it, from the repository root with its relative paths, in this process (a
    program's start is tested in test_project.py); its figures, UMAP and internals are tested elsewhere."""
    monkeypatch.chdir(REPO)
    light = ["logging.save_umap=false", "logging.figures=false", "logging.internals=off", "logging.geometry_split=val"]
    proc = cli("train", "configs/bring_your_own.yaml", tmp_path / "t", "train.epochs=2", *light)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = (tmp_path / "t" / "trial" / "config.yaml").read_text()
    assert f"{REPO / 'configs' / 'my_data.py'}:gratings" in config, "the reference is stored absolute"
    metrics = json.loads((tmp_path / "t" / "trial" / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.5, "four orientations are easy to tell apart"


def test_the_example_loader_and_builders_meet_the_contracts():
    """configs/my_data.py and configs/my_nets.py, through geotune's own checks (fast)."""
    cfg = TrialConfig.from_dict({"dataset": {"name": f"{REPO / 'configs' / 'my_data.py'}:gratings", "image_size": 16}})
    data = load_data(cfg.dataset)
    assert data.class_names == ["0 deg", "45 deg", "90 deg", "135 deg"] and data.input_shape == (1, 16, 16)
    for builder in ("small_body", "with_embedding"):
        model_cfg = TrialConfig.from_dict({"model": {"type": f"{REPO / 'configs' / 'my_nets.py'}:{builder}"}}).model
        assert build_model(model_cfg, (1, 16, 16), 4)(torch.zeros(2, 1, 16, 16)).shape == (2, 4)
    assert np.isfinite(data.mean.numpy()).all()
