"""Benchmark 1: how close the training data pipeline comes to the pure compute of an epoch.

One epoch of simple_cnn on a 28x28, 60,000-image data set (synthetic uint8 pixels,
10 classes), batch 128, augmentation on (random translation +/- 2 px and rotation
+/- 10 degrees), divided by the time of the same training steps on batches made
beforehand and already on the device ("pure compute"). Target (issue 6): <= 1.05
for geotune's pipeline (device-resident uint8 tensors, batches sliced from a
permutation, one batched affine resample). Measured side by side with the
conventional pipeline: a torchvision-style Dataset returning PIL images, per-
sample torchvision transforms (RandomAffine, ToTensor, Normalize) and a
DataLoader, with 0 and 2 worker processes. Every variant runs the same
``train_one_epoch`` step (forward, loss, backward, optimizer, gradient norms) in
geotune's default channels-last layout.
The script runs with the glibc malloc settings geotune gives its Ray workers, and
also times a pure-compute epoch with glibc's defaults against those settings.

    python benchmarks/data_pipeline.py [--samples 60000] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch
from common import emit, machine, today

from geotune.config import TrialConfig
from geotune.trainables.batches import Augmentation, augment_batch, training_batches
from geotune.trainables.data import DataSplits, Split
from geotune.trainables.heads import OutputLayer
from geotune.trainables.loop import GradientNormTracker, train_one_epoch
from geotune.trainables.models import build_model

BATCH = 128
AUGMENT = Augmentation(flip=False, translate=2, rotate=10.0)
CHANNELS_LAST = TrialConfig.from_dict({}).train.channels_last  # geotune's default memory layout (on)


def default_model(device="cpu"):
    """simple_cnn for 28x28 inputs and 10 classes, as a trial with geotune's defaults builds it."""
    model = build_model(TrialConfig.from_dict({}).model, (1, 28, 28), 10).to(device)
    return model.to(memory_format=torch.channels_last) if CHANNELS_LAST else model


def synthetic_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 60, (n, 1, 28, 28), dtype=np.uint8)
    for c in range(10):  # a bright bar per class, so the network has something to learn
        images[labels == c, :, 3 + 2 * c : 6 + 2 * c, 4:24] = 220
    return images, labels


def device_splits(images: np.ndarray, labels: np.ndarray) -> DataSplits:
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    pixels = x.float() / 255.0
    mean, std = pixels.mean().view(1, 1, 1, 1), pixels.std().view(1, 1, 1, 1)
    split = Split(x, y)
    return DataSplits(split, split, split, [str(c) for c in range(10)], mean, std)


class PilDataset(torch.utils.data.Dataset):
    """The conventional pipeline: one PIL image per item, per-sample torchvision transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: float, std: float):
        from torchvision import transforms

        self.images, self.labels = images, labels
        self.transform = transforms.Compose(
            [
                transforms.RandomAffine(degrees=10, translate=(2 / 28, 2 / 28)),
                transforms.ToTensor(),
                transforms.Normalize((mean,), (std,)),
            ]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i, 0])), int(self.labels[i])


def epoch_seconds(batches, model, optimizer, output, tracker) -> float:
    start = time.perf_counter()
    train_one_epoch(model, output, optimizer, batches, epoch=1, grad_tracker=tracker, channels_last=CHANNELS_LAST)
    return time.perf_counter() - start


def run_like_a_worker() -> None:
    """Re-run this script with the malloc settings geotune gives its Ray workers (read at process start)."""
    import sys

    from geotune.study.cluster import WORKER_MALLOC_ENV

    if any(os.environ.get(k) != v for k, v in WORKER_MALLOC_ENV.items()) and "--as-is" not in sys.argv:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **WORKER_MALLOC_ENV})


PURE_EPOCH = """
import sys, json
sys.path.insert(0, {here!r})
from data_pipeline import *
torch.manual_seed(0)
images, labels = synthetic_images({samples})
data = device_splits(images, labels)
model = default_model()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
premade = list(training_batches(data, BATCH, torch.Generator().manual_seed(0), AUGMENT))
epoch_seconds(premade[:20], model, optimizer, OutputLayer("softmax"), GradientNormTracker(model))
print(json.dumps(epoch_seconds(premade, model, optimizer, OutputLayer("softmax"), GradientNormTracker(model))))
"""


def malloc_effect(samples: int, repeats: int) -> dict:
    """Pure-compute epoch time with glibc's default malloc and with geotune's worker settings, interleaved."""
    import subprocess
    import sys

    from geotune.study.cluster import WORKER_MALLOC_ENV

    code = PURE_EPOCH.format(here=os.path.dirname(os.path.abspath(__file__)), samples=samples)
    plain = {k: v for k, v in os.environ.items() if k not in WORKER_MALLOC_ENV}
    times: dict[str, list[float]] = {"glibc default": [], "geotune workers": []}
    for _ in range(repeats):
        for name, env in (("glibc default", plain), ("geotune workers", {**plain, **WORKER_MALLOC_ENV})):
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            times[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {
        "pure_compute_epoch_seconds": medians,
        "runs": times,
        "speedup": medians["glibc default"] / medians["geotune workers"],
    }


def main() -> None:
    run_like_a_worker()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--as-is", action="store_true", help="keep this process's malloc settings instead of those of geotune's workers"
    )
    parser.add_argument("--samples", type=int, default=60_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    torch.manual_seed(0)
    images, labels = synthetic_images(args.samples)
    data = device_splits(images, labels)
    model = default_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    output = OutputLayer("softmax")
    tracker = GradientNormTracker(model)
    steps = args.samples // BATCH
    generator = torch.Generator().manual_seed(0)

    # Pure compute: the same number of steps on batches made (and augmented) beforehand.
    premade = list(training_batches(data, BATCH, generator, AUGMENT))
    assert len(premade) == steps
    # Warm-up: a whole epoch, as the first one after start-up ran up to 35% slower on either side here.
    epoch_seconds(premade, model, optimizer, output, tracker)

    results: dict[str, list[float]] = {"pure_compute": [], "geotune": []}
    for r in range(args.repeats):  # interleaved, order alternating, so drifts of the machine hit both alike
        for name in ("pure_compute", "geotune") if r % 2 == 0 else ("geotune", "pure_compute"):
            batches = premade if name == "pure_compute" else training_batches(data, BATCH, generator, AUGMENT)
            results[name].append(epoch_seconds(batches, model, optimizer, output, tracker))
    mean, std = float(data.mean), float(data.std)
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(
            PilDataset(images, labels, mean, std),
            batch_size=BATCH,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            persistent_workers=False,
        )
        results[f"torchvision_dataloader_{workers}_workers"] = [
            epoch_seconds(loader, model, optimizer, output, tracker)
        ]
    pure = statistics.median(results["pure_compute"])
    # The augmentation alone, on pre-sliced batches: how much of the gap it is.
    start = time.perf_counter()
    for x, _ in premade:
        augment_batch(x, AUGMENT, generator)
    augment_seconds = time.perf_counter() - start
    summary = {
        "benchmark": "data_pipeline",
        "samples": args.samples,
        "batch": BATCH,
        "steps": steps,
        "epoch_seconds": {k: statistics.median(v) for k, v in results.items()},
        "ratio_to_pure_compute": {k: statistics.median(v) / pure for k, v in results.items() if k != "pure_compute"},
        "target_ratio_geotune": 1.05,
        "augmentation_alone_seconds": augment_seconds,
        "runs": results,
        "malloc_settings_effect": malloc_effect(min(args.samples, 20_000), args.repeats),
        "malloc": {k: os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")},
        "machine": machine(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU"),
        "date": today(),
    }
    emit(summary, args.json)


if __name__ == "__main__":
    main()
