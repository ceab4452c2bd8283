"""Hostile-but-fair input: each case with the exit code and the one line it must give, before Ray starts.

The interruption cases (one and two Ctrl-Cs, SIGKILL) are in test_resume.py; the network
exposure of geotune's own Ray in test_cluster.py.
"""

import json
import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import tiny_config, write_cifar, write_idx, write_image_folder, write_mnist
from geotune.config import DatasetConfig
from geotune.study.cli import main


def run_cli(capsys, *argv) -> tuple[int, str]:
    """Exit code and stderr of one in-process geotune command."""
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def one_line_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("geotune: error:")]
    assert len(lines) == 1, err
    return lines[0]


def write_config(tmp_path: Path, **sections) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config(**sections)))
    return path


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """Every case here must fail before Ray starts: starting or joining Ray fails the test (also where
    another test's Ray is still up in this process)."""
    import ray

    def refuse(*args, **kwargs):
        pytest.fail("Ray was started: the error must come before it")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)


# ---------------------------------------------------------------------------
# data folders are data: no code runs from them


class RunsShell:
    """A pickle payload: unpickling it runs a shell command (writes the marker file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class ReturnsValidMeta:
    """A payload that runs code and still returns a well-formed meta dict (leaves no trace otherwise)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        code = f"(open({str(self.marker)!r}, 'w').close(), {{'label_names': ['class%d' % i for i in range(10)]}})[1]"
        return eval, (code,)


@pytest.mark.parametrize("payload", [RunsShell, ReturnsValidMeta])
def test_a_planted_cifar_pickle_runs_nothing(tmp_path, capsys, payload):
    write_cifar(tmp_path / "data")
    meta = tmp_path / "data" / "cifar-10-batches-py" / "batches.meta"
    marker = tmp_path / "pwned"
    meta.write_bytes(pickle.dumps(payload(marker)))
    config = write_config(tmp_path, dataset={"name": "cifar10", "root": str(tmp_path / "data")})
    code, err = run_cli(capsys, "train", config, tmp_path / "out")
    assert code == 2
    line = one_line_error(err)
    assert str(meta) in line and "refused to load" in line
    assert not marker.exists(), "the payload ran"


def test_a_planted_cifar_batch_runs_nothing_in_the_loader(tmp_path):
    from geotune.errors import DatasetFileError
    from geotune.trainables.data import load_data

    write_cifar(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    marker = tmp_path / "pwned"
    batch.write_bytes(pickle.dumps({"data": RunsShell(marker), "labels": [0]}))
    with pytest.raises(DatasetFileError, match="data_batch_3.*refused to load 'posix.system'"):
        load_data(DatasetConfig(name="cifar10", root=str(tmp_path)))
    assert not marker.exists()


def test_real_cifar_pickles_still_load(tmp_path):
    """Python 3 pickles of numpy arrays (protocols 2 to 5) pass the restricted unpickler."""
    from geotune.trainables.data_files import read_data_pickle

    array = np.arange(3072 * 2, dtype=np.uint8).reshape(2, 3072)
    for protocol in (2, 3, 4, 5):
        path = tmp_path / f"p{protocol}"
        path.write_bytes(pickle.dumps({b"data": array, b"labels": [1, 2]}, protocol=protocol))
        entry = read_data_pickle(path)
        assert np.array_equal(entry["data"], array) and entry["labels"] == [1, 2]


def test_corrupt_cifar_and_mnist_files_name_the_file(tmp_path, capsys):
    write_cifar(tmp_path / "c")
    batch = tmp_path / "c" / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:100])
    code, err = run_cli(
        capsys,
        "train",
        write_config(tmp_path, dataset={"name": "cifar10", "root": str(tmp_path / "c")}),
        tmp_path / "o1",
    )
    assert code == 2 and str(batch) in one_line_error(err) and "not a readable CIFAR batch" in err

    write_mnist(tmp_path / "m")
    labels = tmp_path / "m" / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    labels.write_bytes(b"\x00\x00\x09\x99" + labels.read_bytes()[4:])
    code, err = run_cli(
        capsys, "train", write_config(tmp_path, dataset={"name": "mnist", "root": str(tmp_path / "m")}), tmp_path / "o2"
    )
    assert code == 2 and str(labels) in one_line_error(err) and "magic number" in err


def test_mnist_with_fewer_labels_than_images_is_refused(tmp_path, capsys):
    write_mnist(tmp_path, n_train=300)
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw / "train-labels-idx1-ubyte", np.arange(250) % 10)
    code, err = run_cli(
        capsys, "train", write_config(tmp_path, dataset={"name": "mnist", "root": str(tmp_path)}), tmp_path / "out"
    )
    assert code == 2 and "300 images but 250 labels" in one_line_error(err)


def test_truncated_mnist_file_is_refused(tmp_path, capsys):
    write_mnist(tmp_path)
    images = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-5])
    code, err = run_cli(
        capsys, "train", write_config(tmp_path, dataset={"name": "mnist", "root": str(tmp_path)}), tmp_path / "out"
    )
    assert code == 2 and str(images) in one_line_error(err) and "holds" in err


# ---------------------------------------------------------------------------
# images: converted faithfully or refused


def test_16_bit_and_float_images_are_scaled_not_clipped(tmp_path):
    from PIL import Image

    from geotune.trainables.data import load_data

    write_image_folder(tmp_path, {"a": 6, "b": 6})
    Image.fromarray(np.full((8, 8), 32896, dtype=np.uint16)).save(tmp_path / "a" / "deep.png")  # 16-bit mid grey
    Image.fromarray(np.full((8, 8), 0.25, dtype=np.float32), "F").save(tmp_path / "b" / "float.tif")
    from geotune.trainables.data_files import image_to_uint8

    with Image.open(tmp_path / "a" / "deep.png") as im:
        assert im.mode.startswith("I")
        assert np.all(image_to_uint8(im, grayscale=False, size=4) == 128)
    with Image.open(tmp_path / "b" / "float.tif") as im:
        assert np.all(image_to_uint8(im, grayscale=True, size=4) == 64)
    data = load_data(
        DatasetConfig(name="image_folder", root=str(tmp_path), image_size=8, val_ratio=0.25, test_ratio=0.25)
    )
    assert len(data.train) + len(data.val) + len(data.test) == 14


def test_float_images_outside_0_1_are_skipped_with_the_reason(tmp_path, capsys):
    from PIL import Image

    from geotune.trainables.data import load_data

    write_image_folder(tmp_path, {"a": 6, "b": 6})
    Image.fromarray(np.full((8, 8), 300.0, dtype=np.float32), "F").save(tmp_path / "a" / "hdr.tif")
    data = load_data(
        DatasetConfig(name="image_folder", root=str(tmp_path), image_size=8, val_ratio=0.25, test_ratio=0.25)
    )
    assert len(data.train) + len(data.val) + len(data.test) == 12
    err = capsys.readouterr().err
    assert "skipped 1 unreadable image(s)" in err and "hdr.tif" in err and "[0, 1]" in err


def test_a_fifo_named_like_an_image_is_not_read(tmp_path):
    from geotune.trainables.data import load_data

    write_image_folder(tmp_path, {"a": 6, "b": 6})
    os.mkfifo(tmp_path / "a" / "x.png")  # opening it for reading would block forever
    data = load_data(
        DatasetConfig(name="image_folder", root=str(tmp_path), image_size=8, val_ratio=0.25, test_ratio=0.25)
    )
    assert len(data.train) + len(data.val) + len(data.test) == 12


def bomb_png(path: Path, side: int = 30_000) -> None:
    """A PNG of a few bytes whose header declares side x side pixels (a decompression bomb): a real 1x1 PNG with
    the size in its IHDR chunk (and that chunk's CRC) rewritten."""
    import io
    import struct
    import zlib

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", side, side)  # after the signature (8), the length (4) and b"IHDR" (4)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # the CRC of b"IHDR" and its 13 bytes
    path.write_bytes(bytes(data))


def test_a_decompression_bomb_in_a_folder_is_skipped_and_counted(tmp_path, capsys):
    from geotune.trainables.data import load_data

    write_image_folder(tmp_path, {"a": 6, "b": 6})
    bomb_png(tmp_path / "a" / "huge.png")
    bomb_png(tmp_path / "b" / "big.png", side=10_000)  # Pillow's warning band (1-2x its limit): refused too
    data = load_data(
        DatasetConfig(name="image_folder", root=str(tmp_path), image_size=8, val_ratio=0.25, test_ratio=0.25)
    )
    assert len(data.train) + len(data.val) + len(data.test) == 12
    err = capsys.readouterr().err
    assert "skipped 2 unreadable image(s)" in err and "DecompressionBomb" in err


@pytest.mark.parametrize(
    "layout, message",
    [
        ({"only": 8}, "leaves 1 class(es) with images"),
        ({"a": 8, "b": 0}, "holds no images"),
        ({"a": 8, "b": -2}, "img/b' has no readable image (all 2 files are corrupt"),
    ],
)
def test_image_folder_class_problems_are_found_before_training(tmp_path, capsys, layout, message):
    write_image_folder(tmp_path / "img", {k: v for k, v in layout.items() if v > 0})
    for name, count in layout.items():
        (tmp_path / "img" / name).mkdir(exist_ok=True)
        for i in range(-count):  # a class of unreadable files only: a bomb and a broken PNG
            (bomb_png if i == 0 else lambda p: p.write_bytes(b"\x89PNG broken"))(tmp_path / "img" / name / f"{i}.png")
    config = write_config(tmp_path, dataset={"name": "image_folder", "root": str(tmp_path / "img")})
    code, err = run_cli(capsys, "train", config, tmp_path / "out")
    assert code == 2 and message in one_line_error(err)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------
# what is knowable before training fails before Ray, with exit 2 and one line


@pytest.mark.parametrize(
    "override, message",
    [
        ("dataset.classes=[0,12]", "class index 12 is outside 0..9"),
        ("dataset.classes=[zero,one]", "names class 'zero'"),
        ("train.device=cuda", "'train.device' = 'cuda' but trials get no GPU"),
        ("dataset.val_ratio=0.001", "cannot be stratified"),
        ("train.seed=18446744073709551616", "'train.seed'"),
        ("train.epochs=1.0e+30", "must be <= 100000"),
        ("regularizer.name=geodesic", "'regularizer.geodesic.start_epoch' = 5: must be <= train.epochs (3)"),
    ],
)
def test_train_refuses_before_ray(tmp_path, capsys, override, message):
    sets = [override] + (["regularizer.geodesic.start_epoch=5"] if "geodesic" in override else [])
    args = ["train", write_config(tmp_path), tmp_path / "out"]
    for s in sets:
        args += ["--set", s]
    code, err = run_cli(capsys, *args)
    assert code == 2 and message in one_line_error(err), err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--cpus-per-trial", "nan"], "--cpus-per-trial nan: must be a number > 0"),
        (["--cpus-per-trial", "0"], "--cpus-per-trial 0: must be a number > 0"),
        (["--max-failures", "-1"], "--max-failures -1: must be in 0..20"),
        (["--address", "127.0.0.1:9"], "--address 127.0.0.1:9: no Ray cluster answered"),
        (["--set", "train.epochs=2"], "ASHA's grace period (3 epochs) exceeds train.epochs (2)"),
    ],
)
def test_run_refuses_before_training(tmp_path, capsys, argv, message):
    storage = tmp_path / "runs"
    code, err = run_cli(capsys, "run", "geodesic_grid", "--storage", storage, "--name", "s", *argv)
    assert code == 2 and message in one_line_error(err), err
    assert not (storage / "s").exists(), "a refused run leaves no study folder behind"


def test_a_sampled_range_past_the_epochs_is_refused(tmp_path, capsys):
    code, err = run_cli(capsys, "run", "optuna_geodesic", "--set", "train.epochs=4", "--no-asha", "--dry-run")
    assert code == 2 and "'regularizer.geodesic.start_epoch' = 5: must be <= train.epochs (4)" in one_line_error(err)


def test_binary_config_and_unwritable_storage(tmp_path, capsys):
    binary = tmp_path / "model.yaml"
    binary.write_bytes(bytes(range(256)))
    code, err = run_cli(capsys, "train", binary, tmp_path / "out")
    assert code == 2 and f"config file '{binary}' is not a text file" in one_line_error(err)

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, err = run_cli(capsys, "run", "quickstart", "--storage", blocker, "--name", "s")
    assert code == 2 and "cannot be written" in one_line_error(err)
    if os.geteuid() != 0:  # root writes anywhere
        readonly = tmp_path / "ro"
        readonly.mkdir()
        readonly.chmod(stat.S_IRUSR | stat.S_IXUSR)
        try:
            code, err = run_cli(capsys, "run", "quickstart", "--storage", readonly, "--name", "s")
            assert code == 2 and "cannot be written" in one_line_error(err)
        finally:
            readonly.chmod(stat.S_IRWXU)


def test_a_damaged_study_json_is_one_line(tmp_path, capsys):
    study = tmp_path / "s"
    study.mkdir()
    (study / "study.json").write_text('{"space": "x", ')
    code, err = run_cli(capsys, "resume", study)
    assert code == 2 and "study.json' is damaged" in one_line_error(err)
    (study / "study.json").write_text('{"space": "x"}')
    code, err = run_cli(capsys, "resume", study)
    assert code == 2 and "study.json' is damaged" in one_line_error(err)


def test_a_refused_optuna_space_leaves_a_folder_that_run_accepts(tmp_path, capsys):
    """The grace-period check comes before the study directory is made, so the same name works once fixed."""
    storage = tmp_path / "runs"
    code, _ = run_cli(capsys, "run", "optuna_geodesic", "--storage", storage, "--name", "s", "--set", "train.epochs=2")
    assert code == 2
    code, err = run_cli(capsys, "run", "optuna_geodesic", "--storage", storage, "--name", "s", "--dry-run")
    assert code == 0, err


# ---------------------------------------------------------------------------
# geotune geometry on hostile .npz files


def save_npz(path: Path, **arrays) -> Path:
    np.savez_compressed(path, **arrays)
    return path


@pytest.mark.parametrize(
    "embeddings, message",
    [
        (np.random.default_rng(0).normal(size=(50, 1)), "D >= 2"),
        (np.random.default_rng(0).normal(size=(50, 4)) + 1j, "real-valued"),
        (np.random.default_rng(0).normal(size=(50, 4)) * 1e200, "overflow"),
        (np.full((50, 4), np.nan), "NaN"),
    ],
)
def test_geometry_refuses_hostile_embeddings(tmp_path, capsys, embeddings, message):
    path = save_npz(tmp_path / "x.npz", embeddings=embeddings)
    code, err = run_cli(capsys, "geometry", path)
    assert code == 2 and message in one_line_error(err)


def test_geometry_refuses_class_names_that_do_not_cover_the_labels(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(30, 3))
    path = save_npz(tmp_path / "x.npz", embeddings=x, labels=np.arange(30) % 3, class_names=np.array(["a", "b"]))
    code, err = run_cli(capsys, "geometry", path)
    assert code == 2 and "'class_names' holds 2 names, but 'labels' go up to 2" in one_line_error(err)


def test_geometry_checks_the_unpacked_size_before_loading(tmp_path, capsys, monkeypatch):
    import geotune.latents_file

    path = save_npz(tmp_path / "bomb.npz", embeddings=np.zeros((4000, 256)))  # 8 MB of zeros, a few kB packed
    assert path.stat().st_size < 100_000
    monkeypatch.setattr(geotune.latents_file, "MAX_LATENTS_BYTES", 2**20)
    loaded = []
    monkeypatch.setattr(np, "load", lambda *a, **k: loaded.append(a) or pytest.fail("np.load ran"))
    code, err = run_cli(capsys, "geometry", path)
    assert code == 2 and "unpacks to" in one_line_error(err) and not loaded


def test_geometry_refuses_a_file_that_is_not_a_zip(tmp_path, capsys):
    path = tmp_path / "x.npz"
    path.write_bytes(b"PK\x03\x04 not really")
    code, err = run_cli(capsys, "geometry", path)
    assert code == 2 and "not a readable .npz archive" in one_line_error(err)


# ---------------------------------------------------------------------------
# results survive reporting steps; weak runs say so


@pytest.mark.parametrize("split", ["val", "auto"])
def test_a_tiny_validation_split_keeps_its_results(tmp_path, split):
    """4 validation images: measured there, trustworthiness is undefined and the artifacts are still written;
    logging.geometry_split auto measures the training split instead, whose classes are larger."""
    from test_trial import MemorySession

    from geotune.config import TrialConfig
    from geotune.trainables.trial import check_config, run_trial

    cfg = TrialConfig.from_dict(
        tiny_config(
            dataset={"classes": [0, 1], "val_ratio": 0.01}, train={"epochs": 2}, logging={"geometry_split": split}
        )
    )
    warnings = check_config(cfg)
    assert any("validation split holds 4 images" in w for w in warnings), warnings
    final = run_trial(cfg, MemorySession(), tmp_path, verbose=False)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["val_size"] == 4 and written["epochs_run"] == 2 and final["val_size"] == 4
    if split == "val":
        assert written["geometry_split"] == "val" and written["geometry_points"] == 4
        assert written.get("trustworthiness") is None
    else:
        assert written["geometry_split"] == "train" and written["geometry_points"] == written["train_size"]
        assert written["trustworthiness"] is not None
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "latents.npz").is_file()


def test_a_run_at_chance_is_flagged():
    from geotune.trainables.artifacts import learning_warnings

    (warning,) = learning_warnings(0.11, 270, 10, 1e6)
    assert "no better than chance" in warning and "1e+06" in warning
    assert learning_warnings(0.6, 270, 10, 1e-3) == []
    assert learning_warnings(1.0, 4, 2, 1e-3) == []  # a tiny split at 100% is not "at chance"
    assert learning_warnings(0.5, 4, 2, 1e-3) != []


def test_a_pickle_in_a_study_folder_is_never_unpickled_by_report(tmp_path):
    """geotune report reads JSON and CSV only: planted pickles in a study folder do not run."""
    from geotune.analysis.report import write_report
    from synthetic import make_study

    study = make_study(
        tmp_path / "s",
        [{"regularizer.name": "none", "train.seed": s} for s in range(2)],
        [{"variant": 0}, {"variant": 1}],
    )
    marker = tmp_path / "pwned"
    for name in ("tuner.pkl", "searcher-state-2026.pkl"):
        (study / name).write_bytes(pickle.dumps(RunsShell(marker)))
    for trial in study.iterdir():
        if trial.is_dir():
            (trial / "params.pkl").write_bytes(pickle.dumps(RunsShell(marker)))
    write_report(str(study))
    assert (study / "report" / "index.html").is_file() and not marker.exists()


def test_palette_and_alpha_images_keep_their_colours(tmp_path):
    from PIL import Image

    from geotune.trainables.data_files import image_to_uint8

    palette = Image.new("P", (6, 6))
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    palette.paste(1, (0, 0, 6, 6))
    assert image_to_uint8(palette, grayscale=False, size=3)[:, 0, 0].tolist() == [200, 100, 50]
    rgba = Image.new("RGBA", (6, 6), (10, 20, 30, 0))  # fully transparent: the colour stays, as torchvision's loader
    assert image_to_uint8(rgba, grayscale=False, size=3)[:, 1, 1].tolist() == [10, 20, 30]


def test_a_full_disk_is_found_before_ray(tmp_path, capsys, monkeypatch):
    import errno

    real = Path.write_bytes

    def full(self, data):
        if self.name == ".geotune-write-test":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    code, err = run_cli(capsys, "run", "quickstart", "--storage", tmp_path / "runs", "--name", "s")
    assert code == 2 and "cannot be written (No space left on device)" in one_line_error(err)
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------
# a trial folder someone sent you: nothing in it runs unless you say so


def test_predict_runs_no_code_a_received_config_names_unless_trusted(tmp_path, capsys):
    """config.yaml's model.type naming a file's function would import it (its code runs) to rebuild the
    network: predict refuses, naming the key and the flag; with --trust-code it imports."""
    from geotune.preprocessing_file import Preprocessing, write_preprocessing

    folder, marker = tmp_path / "received", tmp_path / "ran"
    folder.mkdir()
    code = f"open({str(marker)!r}, 'w').close()\ndef build(*a, **k):\n    raise ValueError('no')\n"
    (folder / "evil.py").write_text(code)
    (folder / "config.yaml").write_text(yaml.safe_dump({"model": {"type": f"{folder / 'evil.py'}:build"}}))
    (folder / "model.pt").write_bytes(b"")
    prep = Preprocessing([1, 8, 8], "L", [0.5], [0.25], ["a", "b"], "softmax", "digits")
    write_preprocessing(folder / "preprocessing.json", prep)
    (tmp_path / "x.png").write_bytes(b"")
    rc, err = run_cli(capsys, "predict", folder, tmp_path / "x.png")
    line = one_line_error(err)
    assert rc == 2 and not marker.exists()
    assert "key 'model.type'" in line and "evil.py:build" in line and "names code" in line and "--trust-code" in line
    rc, err = run_cli(capsys, "predict", folder, tmp_path / "x.png", "--trust-code")
    assert rc == 2 and marker.exists()  # imported as asked; its build then fails, named
    assert "model.type" in one_line_error(err)


# ---------------------------------------------------------------------------
# bounds before work


def test_a_large_set_of_embeddings_is_measured_on_a_stated_sample(tmp_path, capsys):
    rng = np.random.default_rng(0)
    path = save_npz(tmp_path / "big.npz", embeddings=rng.normal(size=(3000, 2)), labels=np.arange(3000) % 3)
    code = main(["geometry", str(path), "--max-points", "300", "--json"])
    out, err = capsys.readouterr()
    assert code == 0 and "measuring a seeded sample of 300 of the 3,000 embeddings (classes in proportion)" in err
    summary = json.loads(out)["summary"]
    assert summary["n_points"] == 300 and [c["n_points"] for c in summary["per_class"].values()] == [100] * 3
    for argv, message in (
        (["--seed", "-1"], "--seed -1: must be in 0..2^32-1"),
        (["--max-points", "5"], "--max-points 5: must be >= 100"),
    ):
        code, err = run_cli(capsys, "geometry", path, *argv)
        assert code == 2 and message in one_line_error(err)


def test_plans_beyond_the_trial_cap_are_refused_with_their_count_at_once(tmp_path, capsys):
    code, err = run_cli(capsys, "run", "quickstart", "--seeds", "100000", "--dry-run", "--storage", tmp_path)
    line = one_line_error(err)
    assert code == 2 and "400,000 trials; a study plans at most 20,000" in line and "2 arm(s) x 100000 seed(s)" in line


def test_a_received_preprocessing_file_with_a_huge_input_is_refused(tmp_path, capsys):
    from geotune.preprocessing_file import Preprocessing, write_preprocessing

    folder = tmp_path / "trial"
    folder.mkdir()
    (folder / "config.yaml").write_text("{}\n")
    (folder / "model.pt").write_bytes(b"")
    write_preprocessing(
        folder / "preprocessing.json", Preprocessing([1, 100000, 100000], "L", [0.5], [0.2], ["a", "b"], "softmax", "x")
    )
    (tmp_path / "x.png").write_bytes(b"")
    code, err = run_cli(capsys, "predict", folder, tmp_path / "x.png")
    assert code == 2 and "key 'input_shape'" in (line := one_line_error(err)) and "may exceed 8192" in line


# ---------------------------------------------------------------------------
# paths and storage: one plain folder, checked in --dry-run too


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--name", ".."], "--name '..': is not a folder name"),
        (["--name", "a/b"], "--name 'a/b': holds a path separator"),
        (["--name", ""], "--name '': is empty"),
        (["--name", "n" * 300], "is 300 bytes; a folder name holds at most 255"),
        (["--logger", "mlflow=bad://uri"], "--logger 'mlflow=bad://uri': MLflow stores runs at a path or a URI"),
    ],
)
def test_study_names_and_loggers_are_checked_in_a_dry_run(tmp_path, capsys, argv, message):
    code, err = run_cli(capsys, "run", "quickstart", "--dry-run", "--storage", tmp_path / "runs", *argv)
    assert code == 2 and message in one_line_error(err)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "b").exists()


def test_a_dry_run_checks_the_storage_like_a_run(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    code, err = run_cli(capsys, "run", "quickstart", "--dry-run", "--storage", tmp_path / "file", "--name", "s")
    assert code == 2 and "cannot be written" in one_line_error(err)
    code, err = run_cli(capsys, "run", "quickstart", "--dry-run", "--storage", tmp_path / "ok", "--name", "s")
    assert code == 0 and not (tmp_path / "ok").exists()  # the probe leaves no trace


def test_long_output_names_and_a_file_as_out_are_one_line(tmp_path, capsys):
    config = write_config(tmp_path)
    code, err = run_cli(capsys, "train", config, tmp_path / ("a" * 300))
    assert code == 2 and "is 300 bytes; a folder name holds at most 255" in one_line_error(err)
    (tmp_path / "afile").write_text("x")
    code, err = run_cli(capsys, "predict", tmp_path, tmp_path / "x.png", "--out", tmp_path / "afile")
    assert code == 2 and "--out" in (line := one_line_error(err)) and "is a file" in line


# ---------------------------------------------------------------------------
# nothing silently last-wins


def test_a_key_given_twice_in_a_config_file_is_refused_with_both_lines(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\nmodel:\n  type: fc\ntrain:\n  lr: 0.01\n")  # the second train: drops epochs
    code, err = run_cli(capsys, "train", path, tmp_path / "out")
    line = one_line_error(err)
    assert code == 2 and "line 5" in line and "the key 'train' appears twice (lines 1 and 5)" in line
    path.write_text("train: {epochs: 3, epochs: 4}\n")  # on one line too
    code, err = run_cli(capsys, "train", path, tmp_path / "out")
    assert code == 2 and "the key 'epochs' appears twice (lines 1 and 1)" in one_line_error(err)


@pytest.mark.parametrize("sweep", ["train.lr=1e-3,", "train.lr=,1e-3", "train.lr=1e-3,,1e-2"])
def test_an_empty_value_in_a_sweep_is_refused(tmp_path, capsys, sweep):
    code, err = run_cli(capsys, "run", "quickstart", "--dry-run", "--storage", tmp_path, "-m", sweep)
    assert code == 2 and "none of them empty" in one_line_error(err)


def test_a_report_on_a_damaged_study_json_warns_and_strict_fails(tmp_path, capsys):
    from synthetic import make_study

    root = make_study(tmp_path / "s", [{"train.seed": 0}, {"train.seed": 1}], [{"variant": 0}, {"variant": 1}])
    (root / "study.json").write_text('{"broken')
    code = main(["report", str(root)])
    err = capsys.readouterr().err
    assert (
        code == 0 and "geotune: warning: " in err and "study.json' is damaged" in err and "bare Tune experiment" in err
    )
    assert "Part of the study could not be read" in (root / "report" / "REPORT.md").read_text()
    assert main(["report", str(root), "--strict"]) == 2


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.phases=[{epochs: 3, optimizer: adamx}]"], "'train.phases[0].optimizer' = adamx: allowed values are"),
        (["train.phases=[{epochs: 3, bogus: 1}]"], "unknown config key 'train.phases[0].bogus'"),
        (["dataset.classes=[99]"], "class index 99 is outside 0..9"),
    ],
)
def test_messages_name_the_inner_key_and_the_first_problem(tmp_path, capsys, overrides, message):
    config = write_config(tmp_path)
    code, err = run_cli(capsys, "train", config, tmp_path / "out", *[a for o in overrides for a in ("--set", o)])
    assert code == 2 and message in one_line_error(err)


def test_seeds_0_is_named_as_seeds(tmp_path, capsys):
    code, err = run_cli(capsys, "run", "quickstart", "--seeds", "0", "--dry-run", "--storage", tmp_path)
    assert code == 2 and "--seeds 0: must be >= 1" in one_line_error(err)


def test_init_from_a_file_of_non_tensors_is_one_line(tmp_path):
    import torch

    from geotune.errors import ConfigError
    from geotune.trainables.parts import initial_weights

    torch.save({"body.weight": 1, "head": "x"}, tmp_path / "model.pt")
    with pytest.raises(ConfigError, match=r"holds no state dict \(name -> tensor\)"):
        initial_weights(str(tmp_path / "model.pt"), torch.nn.Linear(2, 2))


def test_a_pickle_payload_as_model_pt_is_one_line_and_runs_nothing(tmp_path, capsys):
    from geotune.preprocessing_file import Preprocessing, write_preprocessing

    folder, marker = tmp_path / "trial", tmp_path / "ran"
    folder.mkdir()
    (folder / "config.yaml").write_text("{}\n")
    (folder / "model.pt").write_bytes(pickle.dumps(RunsShell(marker), protocol=2))
    write_preprocessing(
        folder / "preprocessing.json", Preprocessing([1, 8, 8], "L", [0.5], [0.2], ["a", "b"], "softmax", "digits")
    )
    (tmp_path / "x.png").write_bytes(b"")
    code, err = run_cli(capsys, "predict", folder, tmp_path / "x.png")
    line = one_line_error(err)
    assert code == 2 and "model.pt' does not load" in line and "UnpicklingError" in line and not marker.exists()


@pytest.mark.parametrize("where", ["import", "call"])
def test_sys_exit_in_user_code_is_an_error_naming_it_not_a_success(tmp_path, capsys, where):
    code = "import sys\n" + ("sys.exit(0)\n" if where == "import" else "") + "def load(cfg):\n    sys.exit(0)\n"
    (tmp_path / "exits.py").write_text(code)
    config = write_config(tmp_path, dataset={"name": f"{tmp_path / 'exits.py'}:load"})
    rc, err = run_cli(capsys, "train", config, tmp_path / "out")
    line = one_line_error(err)
    assert rc == 2 and "exits.py" in line and "SystemExit" in line
    assert not (tmp_path / "out").exists()
