import numpy as np
import pytest
import torch

from conftest import write_cifar, write_image_folder, write_mnist
from geotune.config import DatasetConfig, TrialConfig
from geotune.errors import ConfigError
from geotune.trainables.batches import Augmentation, augment_batch, training_batches
from geotune.trainables.data import DatasetNotFoundError, describe_input, load_data, stratified_splits
from geotune.trainables.synthetic_data import SHAPES_CENTRES, generate_shapes


def dataset(**kw) -> DatasetConfig:
    return TrialConfig.from_dict({"dataset": kw}).dataset


def assert_disjoint_and_stratified(data, n_classes):
    for split in (data.train, data.val, data.test):
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert set(split.labels.unique().tolist()) == set(range(n_classes))


def test_digits_splits_are_stratified_seeded_and_normalised():
    data = load_data(dataset(name="digits"))
    n = len(data.train) + len(data.val) + len(data.test)
    assert n == 1797 and data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert len(data.val) == pytest.approx(0.15 * n, abs=2) and len(data.test) == pytest.approx(0.15 * n, abs=2)
    assert_disjoint_and_stratified(data, 10)
    # class proportions match across splits (stratified)
    p_train = np.bincount(data.train.labels.numpy()) / len(data.train)
    p_val = np.bincount(data.val.labels.numpy()) / len(data.val)
    assert np.abs(p_train - p_val).max() < 0.02
    # training pixels are normalised to zero mean / unit std per channel
    x = data.normalize(data.train.images)
    assert x.mean().item() == pytest.approx(0.0, abs=1e-4) and x.std().item() == pytest.approx(1.0, abs=1e-3)
    # same split seed -> same split; another seed -> another split
    again = load_data(dataset(name="digits"))
    assert torch.equal(again.val.images, data.val.images)
    other = load_data(dataset(name="digits", split_seed=1))
    assert not torch.equal(other.val.images, data.val.images)


def test_digits_resized_once():
    data = load_data(dataset(name="digits", image_size=16))
    assert data.input_shape == (1, 16, 16)
    assert describe_input(dataset(name="digits", image_size=16)) == ((1, 16, 16), 10)


def test_shapes_follow_the_colour_table_and_seed():
    images, labels = generate_shapes(300, 24, 15, 0.3, 0.8, seed=3)
    assert images.shape == (300, 3, 24, 24) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [100, 100, 100]
    for i in range(300):
        mask = images[i].sum(0) > 0
        assert mask.any()
        colour = images[i][:, mask]
        # one colour per rectangle, within centre +/- delta of its class
        assert (colour == colour[:, :1]).all()
        assert np.abs(colour[:, 0].astype(int) - SHAPES_CENTRES[labels[i]]).max() <= 15
        rows, cols = np.nonzero(mask)
        assert mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all(), "a filled rectangle"
    again, labels_again = generate_shapes(300, 24, 15, 0.3, 0.8, seed=3)
    assert np.array_equal(again, images) and np.array_equal(labels_again, labels)
    assert not np.array_equal(generate_shapes(300, 24, 15, 0.3, 0.8, seed=4)[0], images)

    data = load_data(dataset(name="shapes", image_size=16, shapes={"num_samples": 150, "delta": 5}))
    assert data.input_shape == (3, 16, 16) and data.num_classes == 3
    assert len(data.train) + len(data.val) + len(data.test) == 150


@pytest.mark.slow
@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like_from_idx_files(tmp_path, name, folder):
    train_x, train_y, test_x, test_y = write_mnist(tmp_path, folder)
    data = load_data(dataset(name=name, root=str(tmp_path), val_ratio=0.2))
    assert data.input_shape == (1, 28, 28)
    assert len(data.test) == 20 and len(data.train) + len(data.val) == 60
    # the official test split is kept as it is, image for image
    assert np.array_equal(data.test.images[:, 0].numpy(), test_x)
    assert np.array_equal(data.test.labels.numpy(), test_y)
    # every training image is one of the files' images with its label
    lookup = {train_x[i].tobytes(): train_y[i] for i in range(60)}
    for img, lab in zip(data.train.images[:, 0].numpy(), data.train.labels.numpy()):
        assert lookup[img.tobytes()] == lab


@pytest.mark.parametrize("name", ["digits", "shapes", "shapes_seg", "mnist", "cifar10", "cifar100"])
def test_each_data_sets_record_matches_what_its_reader_gives(tmp_path, name):
    """One record per built-in data set (geotune.config.BUILTIN_DATASETS, a reader in READERS under the same
    name): its shape, class count, task and official test split are what loading the data really gives."""
    from geotune.config import BUILTIN_DATASETS, task_of
    from geotune.trainables.data import READERS

    assert set(READERS) == set(BUILTIN_DATASETS)
    facts = BUILTIN_DATASETS[name]
    extra: dict = {"shapes": {"num_samples": 60}} if name.startswith("shapes") else {}
    if name == "mnist":
        write_mnist(tmp_path, "MNIST")
    elif name.startswith("cifar"):
        write_cifar(tmp_path, hundred=name == "cifar100", per_batch=200)
    model = {"type": "unet"} if facts.task == "segmentation" else {}
    cfg = TrialConfig.from_dict({"dataset": {"name": name, "root": str(tmp_path), **extra}, "model": model}).dataset
    raw = READERS[name](cfg)
    assert raw.images.shape[1:] == (facts.channels, facts.size, facts.size)
    assert len(raw.class_names) == facts.num_classes and task_of(name) == facts.task
    assert (raw.test_images is not None) == facts.official_test
    assert describe_input(cfg) == ((facts.channels, facts.size, facts.size), facts.num_classes)


def test_missing_files_name_folder_and_files(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_data(dataset(name="mnist", root=str(tmp_path)))
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "train-images-idx3-ubyte" in message
    assert "dataset.download" in message and "\n" not in message
    with pytest.raises(DatasetNotFoundError, match="cifar-100-python.*meta"):
        load_data(dataset(name="cifar100", root=str(tmp_path)))


def test_cifar10_from_pickled_batches(tmp_path):
    written = write_cifar(tmp_path)
    data = load_data(dataset(name="cifar10", root=str(tmp_path), val_ratio=0.25))
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    assert len(data.train) + len(data.val) == 200 and len(data.test) == 40
    test_data, test_labels = written["test_batch"]
    assert np.array_equal(data.test.images.numpy().reshape(40, -1), test_data)
    assert data.test.labels.tolist() == test_labels
    assert data.class_names[3] == "class3"


def test_cifar100_class_subset_is_relabelled(tmp_path):
    written = write_cifar(tmp_path, hundred=True, per_batch=200)
    data = load_data(dataset(name="cifar100", root=str(tmp_path), classes=[56, 0, 33], val_ratio=0.3))
    assert data.num_classes == 3 and data.class_names == ["class56", "class0", "class33"]
    test_data, test_labels = written["test"]
    keep = [i for i, lab in enumerate(test_labels) if lab in (56, 0, 33)]
    expected = [{56: 0, 0: 1, 33: 2}[test_labels[i]] for i in keep]
    assert data.test.labels.tolist() == expected
    assert np.array_equal(data.test.images.numpy().reshape(len(keep), -1), test_data[keep])
    with pytest.raises(ConfigError, match="class index 100"):
        load_data(dataset(name="cifar100", root=str(tmp_path), classes=[0, 100]))


def test_image_folder_decodes_resizes_and_skips_unreadable(tmp_path, capsys):
    write_image_folder(tmp_path, {"alpha": 20, "beta": 20, "gamma": 20})
    (tmp_path / "beta" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "gamma" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    (tmp_path / "alpha" / "notes.txt").write_text("ignored: not an image suffix")
    data = load_data(dataset(name="image_folder", root=str(tmp_path), image_size=12))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "skipped 2 unreadable image(s)" in err[0]
    assert data.input_shape == (3, 12, 12) and data.class_names == ["alpha", "beta", "gamma"]
    assert len(data.train) + len(data.val) + len(data.test) == 60
    assert len(data.test) == 9 and len(data.val) == 9  # the default 70/15/15 split
    # the decoded colours keep the classes apart (class c was drawn around 40 + 60 c)
    means = [data.train.images[data.train.labels == c].float().mean().item() for c in range(3)]
    assert means[0] < means[1] < means[2]
    grey = load_data(dataset(name="image_folder", root=str(tmp_path), grayscale=True, classes=["gamma", "alpha"]))
    assert grey.input_shape == (1, 32, 32) and grey.class_names == ["gamma", "alpha"]


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="no class sub-folders"):
        load_data(dataset(name="image_folder", root=str(tmp_path)))
    write_image_folder(tmp_path, {"a": 4})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="empty' holds no images"):
        load_data(dataset(name="image_folder", root=str(tmp_path)))
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_data(dataset(name="image_folder", root=str(tmp_path / "nope")))


def test_unstratifiable_split_is_a_config_error():
    labels = np.array([0] * 10 + [1])
    with pytest.raises(ConfigError, match="smallest class has 1"):
        stratified_splits(labels, 0.2, 0.2, 0, has_test=False)


def test_training_batches_slice_a_permutation():
    data = load_data(dataset(name="digits"))
    g = torch.Generator().manual_seed(0)
    seen = []
    for x, y in training_batches(data, 100, g):
        assert x.dtype == torch.float32 and x.shape == (100, 1, 8, 8)
        seen.append(y)
    assert len(seen) == len(data.train) // 100  # the last partial batch is dropped
    # batches are disjoint slices: recover each batch's images in the training split
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data.train), generator=g)
    assert torch.equal(torch.cat(seen), data.train.labels[order[: len(seen) * 100]])


def test_augmentation_is_vectorized_flip_and_integer_shift():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 10, 10)
    flipped = augment_batch(x, Augmentation(flip=True), g)
    same = torch.isclose(flipped, x, atol=1e-5).flatten(1).all(1)
    mirrored = torch.isclose(flipped, x.flip(-1), atol=1e-5).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()

    shifted = augment_batch(x, Augmentation(translate=2), torch.Generator().manual_seed(1))
    for i in range(64):  # each output equals its input moved by whole pixels, zero-filled
        matches = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ref = torch.zeros_like(x[i])
                src = x[i][:, max(0, dy) : 10 + min(0, dy), max(0, dx) : 10 + min(0, dx)]
                ref[:, max(0, -dy) : 10 - max(0, dy), max(0, -dx) : 10 - max(0, dx)] = src
                matches.append(torch.allclose(shifted[i], ref, atol=1e-5))
        assert sum(matches) == 1

    a = augment_batch(x, Augmentation(True, 2, 10.0), torch.Generator().manual_seed(5))
    b = augment_batch(x, Augmentation(True, 2, 10.0), torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.allclose(a, x)


def test_augmentation_config_switch():
    assert Augmentation.from_config(dataset(augment=False)) is None
    assert Augmentation.from_config(dataset(augment=True, augment_translate=0, augment_rotate=0)) is None
    assert Augmentation.from_config(dataset(augment=True)) == Augmentation(False, 2, 10.0)
