"""Shared fixtures: one loopback Ray for the whole session, tiny configs, on-disk data set writers."""

from __future__ import annotations

import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

# Keep BLAS/torch from oversubscribing the 2-core CI machine alongside Ray workers.
os.environ.setdefault("OMP_NUM_THREADS", "1")


# Modules whose tests mostly wait: on a study they started as a program (gated epochs, a Ctrl-C, a SIGKILL), on a
# two-node cluster, on Ray's 20 s refusal of a wrong token. They are spread evenly through the other slow tests:
# all at the front, both workers (pyproject's -n 2) waited at once (a run's first 220 s used 86% of the two cores,
# the rest 97%). With the in-process `train --ray` test, three pairs of whole runs, one after the other on one
# machine (2026-12-06): 575 -> 532 s, 654 (a profile beside it) -> 597 s and 585 -> 516 s.
WAITING = ("test_resume.py", "test_cluster.py")
# Whole named studies: long, so they start early instead of one running alone at the end.
LONGEST_FIRST = ("test_spaces.py",)


def pytest_collection_modifyitems(config, items):
    """Every test that needs the shared Ray runs trials through it: it is slow (pyproject's `slow` marker).
    Tests that share a module's fixture (a study or a trial trained once) run on one worker (``--dist
    loadgroup``), so it is trained once; each worker has its own shared Ray."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
        info = getattr(item, "_fixtureinfo", None)
        for name, defs in info.name2fixturedefs.items() if info is not None else ():
            if name != "ray_session" and defs and defs[-1].scope != "function" and defs[-1].baseid:
                item.add_marker(pytest.mark.xdist_group(name))
                if config.getoption("loadgroup", default=False):  # set in xdist's workers under --dist loadgroup
                    in_group(item, name)
                break
    items[:] = interleaved(items)


def interleaved(items: list) -> list:
    """The slow tests (the long studies first), with the waiting ones spread evenly among them; then the rest."""
    slow = [item for item in items if item.get_closest_marker("slow")]
    waiting = [item for item in slow if item.path.name in WAITING]
    slow = [item for item in slow if item.path.name not in WAITING]
    slow.sort(key=lambda item: item.path.name not in LONGEST_FIRST)  # stable: the collection's order otherwise
    fast = [item for item in items if not item.get_closest_marker("slow")]
    spacing = len(slow) / max(1, len(waiting))
    merged, taken = [], 0
    for i, item in enumerate(waiting):
        upto = round(i * spacing)
        merged += slow[taken:upto] + [item]
        taken = upto
    return merged + slow[taken:] + fast


def in_group(item: pytest.Item, group: str) -> None:
    """What xdist's loadgroup scheduler groups by: the node id's ``@group`` suffix. xdist 3.8 writes it to
    ``item._nodeid``, which pytest 9.2's structured node ids no longer read (pytest-dev/pytest-xdist#1386): the
    groups were silently ignored and a module's fixture was trained again on the other worker (and again after
    a test of another module). Sets it where pytest 9.2 keeps the id; a no-op once the id has a suffix (the
    scheduler's own test: an "@" after the last "]")."""
    if item.nodeid.rfind("@") > item.nodeid.rfind("]"):
        return
    suffixed = f"{item.nodeid}@{group}"
    if hasattr(item, "_id"):
        from _pytest.nodeid import NodeId  # pytest >= 9.2 only (its structured ids)

        item._id = NodeId.parse(suffixed)
    else:
        item._nodeid = suffixed


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance on 127.0.0.2 with token auth, shared by every test of this pytest worker that needs
    Ray. Its CPUs: the machine's share of one worker, at most 2 (one each for pyproject's two workers on the
    2-core CI machine). With both workers busy, a study's second concurrent trial only adds a worker
    process's start (about 8 CPU-s: torch, the torch._dynamo its optimizer imports, scikit-learn) and
    contention for the same cores: 14 Ray tests of test_spaces and test_study took 584 CPU-s with 2 CPUs and
    496 with 1 (run one after the other in one process, 2026-12-06)."""
    import ray

    from geotune.study.cluster import LOOPBACK_NODE_IP, ensure_ray

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))  # unset under -n 0 (one process)
    info = ensure_ray(num_cpus=max(1, min(2, (os.cpu_count() or 1) // workers)), num_gpus=0)
    assert ray.get_runtime_context().gcs_address.startswith(LOOPBACK_NODE_IP + ":")
    yield info
    ray.shutdown()


@dataclass
class Done:
    """What a CLI command gave: its exit code and what it printed."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys):
    """The CLI in this process (its start-up as a program is tested in test_project.py and test_config.py);
    Ray, where a command needs it, is the session's shared one (add the ray_session fixture)."""
    from geotune.study.cli import main

    def run(*args) -> Done:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return Done(code, out.out, out.err)

    return run


def tiny_config(**sections) -> dict:
    """A digits config that trains in a couple of seconds; sections override keys."""
    base = {
        "dataset": {"name": "digits"},
        "model": {"type": "simple_cnn", "channels": [16, 32], "hidden_dim": 32, "dropout": 0.0},
        "train": {"epochs": 3, "batch_size": 64, "lr": 0.003, "num_threads": 1},
        # the final geometry on the validation split (27 digits per class): a second less per trial than the default
        # (the training split, with its resolution probe), which test_geometry_trials and test_trial measure; no
        # PNGs (about 0.9 s of a tiny trial's 1.5): the tests that look at figures turn logging.figures on
        "logging": {"save_umap": False, "geometry_split": "val", "figures": False},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return base


GATED_NET = """
import os
import time

from torch import nn

GATE = {gate!r}
FIRST_FREE = {first_free!r}


def claim_first() -> bool:
    \"\"\"True for the first network to ask (the gate's ".first" file is created once, atomically).\"\"\"
    try:
        os.close(os.open(GATE + ".first", os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False


class Gate(nn.Module):
    \"\"\"Sleeps at every training step while the test's gate file exists; with FIRST_FREE, not in the first
    network to train (the study's first trial).\"\"\"

    def __init__(self):
        super().__init__()
        self.free = None

    def forward(self, x):
        if self.training and os.path.exists(GATE):
            if self.free is None:
                self.free = FIRST_FREE and claim_first()
            if not self.free:
                time.sleep({delay})
        return x


def gated_cnn(input_shape, config):
    \"\"\"tiny_config's simple_cnn (two 3x3 conv blocks, 16 and 32 channels), and the gate.\"\"\"
    return nn.Sequential(
        Gate(),
        nn.Conv2d(input_shape[0], 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
    )
"""


def gated_config(folder: Path, delay: float = 0.1, first_free: bool = False, **sections) -> tuple[dict, Path]:
    """tiny_config (``sections`` override keys) with a user model whose training steps each sleep ``delay`` s
    while the returned gate file exists. A test that must interrupt a trial mid-way keeps the gate while the
    study runs, so a trial stays mid-way for seconds whatever the machine's speed, and removes it before the
    resume, which then trains the rest at full speed (digits at batch 64: 17 steps an epoch, so 0.1 s is 1.7 s
    an epoch). ``first_free``: the first network to train does not sleep (a study whose trials run one at a
    time, whose first must finish before the second is interrupted)."""
    gate = folder / "gate"
    gate.touch()
    (folder / "gated_net.py").write_text(GATED_NET.format(gate=str(gate), delay=delay, first_free=first_free))
    config = tiny_config(**sections)
    config["model"] = {"type": f"{folder / 'gated_net.py'}:gated_cnn", "hidden_dim": 32, "dropout": 0.0}
    return config, gate


# ---------------------------------------------------------------------------
# writers of real on-disk formats


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX file as MNIST ships it (magic: 0x0000 | type 0x08 = uint8 | ndim)."""
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 60, n_test: int = 20, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    train_x = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    train_y = np.arange(n_train) % 10
    test_x = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    test_y = np.arange(n_test) % 10
    write_idx(raw / "train-images-idx3-ubyte", train_x)
    write_idx(raw / "train-labels-idx1-ubyte", train_y)
    write_idx(raw / "t10k-images-idx3-ubyte", test_x)
    write_idx(raw / "t10k-labels-idx1-ubyte", test_y)
    return train_x, train_y, test_x, test_y


def write_cifar(root: Path, hundred: bool = False, per_batch: int = 40, seed: int = 0) -> dict:
    """CIFAR python pickled batches (data: N x 3072 uint8, labels list, meta with class names)."""
    rng = np.random.default_rng(seed)
    n_classes = 100 if hundred else 10
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    label_key = "fine_labels" if hundred else "labels"
    names = [f"class{i}" for i in range(n_classes)]
    written = {}
    batches = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    for i, name in enumerate(batches + ["test"]):
        n = per_batch * (5 if hundred and name == "train" else 1)
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in (np.arange(n) + i) % n_classes]
        entry = {"data": data, label_key: labels, "batch_label": name}
        if hundred:
            entry["coarse_labels"] = [lab // 5 for lab in labels]
        file = "test" if (hundred and name == "test") else ("test_batch" if name == "test" else name)
        with open(folder / file, "wb") as fh:
            pickle.dump(entry, fh)
        written[file] = (data, labels)
    meta = (
        {"fine_label_names": names, "coarse_label_names": [f"super{i}" for i in range(20)]}
        if hundred
        else {"label_names": names, "num_cases_per_batch": per_batch}
    )
    with open(folder / ("meta" if hundred else "batches.meta"), "wb") as fh:
        pickle.dump(meta, fh)
    return written


def write_image_folder(root: Path, classes: dict[str, int], size: int = 20, seed: int = 0) -> None:
    """root/<class>/*.png|jpg with a distinct mean colour per class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, (name, count) in enumerate(classes.items()):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(count):
            base = np.full((size, size, 3), 40 + 60 * c, dtype=np.int64)
            pixels = np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)
            suffix = ".png" if i % 2 == 0 else ".jpg"
            Image.fromarray(pixels).save(folder / f"img{i:03d}{suffix}")
