"""A finished trial as a model: load it from its folder, read image files as training did, predict.

Needs only the trial folder's ``config.yaml`` (the network), ``model.pt`` (the kept
weights) and ``preprocessing.json`` (input shape, channels, normalisation, classes,
output layer); never the training data. ``geotune predict`` is the command line of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geotune.config_loading import load_config
from geotune.errors import ConfigError
from geotune.layout import CONFIG_FILE, MODEL_FILE, PREPROCESSING_FILE, TRAIN_TRIAL_DIR
from geotune.preprocessing_file import Preprocessing, read_preprocessing
from geotune.references import is_reference
from geotune.trainables.data_files import IMAGE_SUFFIXES, UNREADABLE, decode_image
from geotune.trainables.heads import sparsemax
from geotune.trainables.models import LatentNetwork, PixelInput, build_model
from geotune.trainables.synthetic_data import display_colours

BATCH = 256  # images decoded and predicted at a time: bounds memory for folders of any size


@dataclass
class TrainedModel:
    model: LatentNetwork  # in eval mode, on the CPU
    preprocessing: Preprocessing
    trial_dir: Path


@dataclass
class Prediction:
    file: Path
    top_k: list[tuple[str, float]]  # (class name, probability), most probable first

    def to_dict(self) -> dict:
        return {"file": str(self.file), "top_k": [{"class": c, "probability": p} for c, p in self.top_k]}

    def line(self) -> str:
        return f"{self.file}: " + ", ".join(f"{c} ({p:.3f})" for c, p in self.top_k)


@dataclass
class Segmentation:
    file: Path
    mask: np.ndarray  # (H, W) uint8 class index per pixel, at the model's input size
    class_names: list[str]

    def shares(self) -> dict[str, float]:
        """The share of the image's pixels given to each class, largest first."""
        counts = np.bincount(self.mask.reshape(-1), minlength=len(self.class_names)) / self.mask.size
        return {self.class_names[i]: float(counts[i]) for i in np.argsort(-counts, kind="stable") if counts[i] > 0}

    def to_dict(self, mask_file: Path) -> dict:
        return {"file": str(self.file), "mask": str(mask_file), "class_shares": self.shares()}

    def line(self, mask_file: Path) -> str:
        shares = ", ".join(f"{name} {share:.0%}" for name, share in self.shares().items())
        return f"{self.file}: mask {mask_file} ({shares})"


def mask_colours(n_classes: int, dataset: str) -> np.ndarray:
    """(n_classes, 3) uint8 colours of a mask PNG: a synthetic data set's own class colours, else hues spaced
    around the circle with class 0 black (a background, in the segmentation data sets geotune knows)."""
    own = display_colours(dataset)
    if own is not None and len(own) == n_classes:
        return np.rint(own * 255).astype(np.uint8)
    hues = np.linspace(0, 1, max(1, n_classes - 1), endpoint=False)
    sectors = (hues[:, None] * 6 + np.array([5, 3, 1])) % 6  # an HSV wheel at full saturation and value
    rgb = 1 - np.clip(np.minimum(sectors, 4 - sectors), 0, 1)
    return np.rint(np.vstack([np.zeros(3), rgb]) * 255).astype(np.uint8)[:n_classes]


def find_trial_dir(path: str | Path) -> Path:
    """A trial folder, or the folder `geotune train` wrote (whose trial sits in ``trial/``)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"trial folder '{folder}' does not exist")
    if not (folder / MODEL_FILE).is_file() and (folder / TRAIN_TRIAL_DIR / MODEL_FILE).is_file():
        folder = folder / TRAIN_TRIAL_DIR
    for name in (CONFIG_FILE, MODEL_FILE, PREPROCESSING_FILE):
        if not (folder / name).is_file():
            raise ConfigError(f"'{folder}' is not a finished trial folder: it has no {name}")
    return folder


def load_trained(path: str | Path, trust_code: bool = False) -> TrainedModel:
    """The kept model of a finished trial, ready to predict on the CPU. A config whose model.type names code
    (``file.py:build``, ``module:function``) is refused unless ``trust_code``: rebuilding that network
    imports, so runs, the code, and a trial folder may come from anyone."""
    folder = find_trial_dir(path)
    prep = read_preprocessing(folder / PREPROCESSING_FILE)
    if prep.input_shape[1] != prep.input_shape[2]:
        raise ConfigError(
            f"'{folder / PREPROCESSING_FILE}': key 'input_shape' = {prep.input_shape}: predict reads square inputs"
        )
    cfg = load_config(folder / CONFIG_FILE)
    if is_reference(cfg.model.type) and not trust_code:
        raise ConfigError(
            f"'{folder / CONFIG_FILE}': key 'model.type' = {cfg.model.type!r} names code, which rebuilding the "
            "network would import and run; pass --trust-code if you trust where this folder comes from"
        )
    channels, height, width = prep.input_shape
    model = build_model(cfg.model, (channels, height, width), prep.num_classes)
    try:
        state = torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # a truncated file, a pickle payload, weights of another network than config.yaml's
        said = " ".join(str(exc).split())  # torch's texts run over many lines; the error is one
        raise ConfigError(
            f"'{folder / MODEL_FILE}' does not load into the model of {CONFIG_FILE}: {type(exc).__name__}: "
            f"{said[:240]}{'...' if len(said) > 240 else ''}"
        ) from None
    return TrainedModel(model.eval(), prep, folder)


def image_files(inputs: Sequence[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(image files, [(path, why skipped)]): files as given, folders searched recursively for image suffixes."""
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                skipped.append((item, f"a folder with no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"))
            files += found
        elif item.is_file():
            files.append(item)
        else:
            skipped.append((item, "no such file or folder"))
    return files, skipped


def read_image(path: Path, prep: Preprocessing) -> np.ndarray:
    """One file as uint8 (C, H, W), converted as the training images were: channel mode, then bilinear resize.

    Raises ValueError (or OSError) with the reason when the file is not a usable image.
    """
    return decode_image(path, prep.channel_order == "L", prep.input_shape[1])


class PixelProbabilities(torch.nn.Module):
    """A trained model as one module: images scaled to [0, 1] in, class probabilities out by the output layer
    it trained with (per pixel for a segmentation model); what ``geotune predict`` computes, and the MLflow
    Model a study logs."""

    def __init__(self, trained: TrainedModel):
        super().__init__()
        prep = trained.preprocessing
        self.pixel_model = PixelInput(trained.model, torch.tensor(prep.mean), torch.tensor(prep.std))
        self.sparse = prep.output == "sparsemax"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.pixel_model(images).float()
        return sparsemax(logits, dim=1) if self.sparse else torch.softmax(logits, dim=1)


def probabilities(trained: TrainedModel, images: torch.Tensor) -> torch.Tensor:
    """(N, classes) class probabilities of uint8 images (N, C, H, W), by the output layer the model trained with
    ((N, classes, H, W) per pixel for a segmentation model)."""
    with torch.no_grad():
        return PixelProbabilities(trained)(images.float() / 255.0)


def top_k(probs: torch.Tensor, k: int, class_names: Sequence[str]) -> list[list[tuple[str, float]]]:
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    return [
        [(class_names[i], float(v)) for v, i in zip(row_v.tolist(), row_i.tolist())]
        for row_v, row_i in zip(values, indices)
    ]


def predict_files(
    trained: TrainedModel, files: Sequence[Path], k: int
) -> Iterator[tuple[Prediction | Segmentation | None, np.ndarray | None, tuple[Path, str] | None]]:
    """Per file, in order: (prediction, the converted image) or, for a file that cannot be read, its reason;
    a segmentation model's prediction is the image's mask (each pixel's most probable class)."""
    for start in range(0, len(files), BATCH):
        readable: list[tuple[Path, np.ndarray]] = []
        problems: dict[Path, str] = {}
        for path in files[start : start + BATCH]:
            try:
                readable.append((path, read_image(path, trained.preprocessing)))
            except UNREADABLE as exc:
                problems[path] = f"{type(exc).__name__}: {str(exc)[:160]}"
        names = trained.preprocessing.class_names
        ranked: Iterator[Prediction | Segmentation] = iter([])
        if readable:
            probs = probabilities(trained, torch.from_numpy(np.stack([image for _, image in readable])))
            if trained.preprocessing.task == "segmentation":  # (N, classes, H, W): a class per pixel
                masks = probs.argmax(1).to(torch.uint8).numpy()
                ranked = iter(Segmentation(path, mask, names) for (path, _), mask in zip(readable, masks))
            else:
                ranked = iter(Prediction(path, top) for (path, _), top in zip(readable, top_k(probs, k, names)))
        images = dict(readable)
        for path in files[start : start + BATCH]:
            if path in problems:
                yield None, None, (path, problems[path])
            else:
                yield next(ranked), images[path], None


def grid_title(prediction: Prediction, width: int = 22) -> str:
    """A panel title: the file name, then one line per class of the top-k."""
    name = prediction.file.name
    name = name if len(name) <= width else name[: width - 1] + "…"
    return "\n".join([name] + [f"{c[:14]}: {p:.2f}" for c, p in prediction.top_k])


def grid_columns(n: int) -> int:
    return max(1, min(8, math.ceil(math.sqrt(n))))
