"""``preprocessing.json``: what turns an image file into the input of a trained trial's model.

With ``config.yaml`` and ``model.pt`` it makes a trial folder a usable model without
the training data: ``geotune predict`` reads it, and so can code that never imports
geotune (the file is plain JSON and says in words what to do). Written at the end of
every trial; read back with everything checked, since a user may hand-edit it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from geotune.config import MAX_INPUT_SIDE
from geotune.errors import ConfigError

FORMAT_VERSION = 1
CHANNEL_ORDERS = {1: "L", 3: "RGB"}  # channels -> the Pillow mode images are converted to
OUTPUTS = ("softmax", "sparsemax")


@dataclass
class Preprocessing:
    input_shape: list[int]  # [channels, height, width] the model takes
    channel_order: str  # "L" (one grey channel) or "RGB"
    mean: list[float]  # per channel, of training pixels scaled to [0, 1]
    std: list[float]  # per channel, likewise
    class_names: list[str]  # output index -> class
    output: str  # how logits become probabilities: softmax or sparsemax
    dataset: str  # the data set the model was trained on (for the reader)
    task: str = "classification"  # classification: logits (N, classes); segmentation: logits (N, classes, H, W)
    steps: str = (
        "convert the image to channel_order (alpha dropped), resize it to height x width (bilinear), "
        "divide the 8-bit pixel values by 255, subtract mean and divide by std per channel, "
        "stack as [channels, height, width]"
    )
    format: int = FORMAT_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def write_preprocessing(path: Path, prep: Preprocessing) -> None:
    Path(path).write_text(json.dumps(asdict(prep), indent=2) + "\n")


def read_preprocessing(path: str | Path) -> Preprocessing:
    """The file's contents, checked; every error names the file and the key."""
    file = Path(path)
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"'{file}' does not exist (trials of geotune before 0.2 did not write it)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"'{file}' is not readable JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"'{file}': expected a JSON object")

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"'{file}': key '{key}' = {str(data.get(key))[:80]}: {why}")

    if data.get("format") != FORMAT_VERSION:
        raise bad("format", f"this geotune reads format {FORMAT_VERSION}")
    shape = data.get("input_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(s, int) and s > 0 for s in shape)):
        raise bad("input_shape", "expected [channels, height, width] of positive integers")
    if max(shape) > MAX_INPUT_SIDE:
        raise bad("input_shape", f"no side may exceed {MAX_INPUT_SIDE} (model.input_shape's bound)")
    channels = shape[0]
    if data.get("channel_order") != CHANNEL_ORDERS.get(channels):
        raise bad("channel_order", f"a {channels}-channel input needs {CHANNEL_ORDERS.get(channels, 'L or RGB')}")
    for key, low in (("mean", -math.inf), ("std", 0.0)):
        values = data.get(key)
        if not (
            isinstance(values, list)
            and len(values) == channels
            and all(isinstance(v, (int, float)) and math.isfinite(v) and v > low for v in values)
        ):
            raise bad(key, f"expected {channels} finite numbers" + (" > 0" if low == 0 else ""))
    names = data.get("class_names")
    if not (isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) for n in names)):
        raise bad("class_names", "expected a list of at least two strings")
    if data.get("output") not in OUTPUTS:
        raise bad("output", f"expected one of {', '.join(OUTPUTS)}")
    return Preprocessing(
        input_shape=shape,
        channel_order=data["channel_order"],
        mean=[float(v) for v in data["mean"]],
        std=[float(v) for v in data["std"]],
        class_names=names,
        output=data["output"],
        dataset=str(data.get("dataset", "")),
        task=str(data.get("task", "classification")),
    )
