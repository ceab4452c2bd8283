"""ONNX export of a trained model, normalisation included, checked against PyTorch on a real batch."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from geotune.errors import ConfigError
from geotune.trainables.data import DataSplits
from geotune.trainables.models import PixelInput

ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # the extra 'onnx': the exporter and the checker


def require_onnx() -> None:
    """Refuse ``logging.export_onnx`` before training when the extra is missing (cheap: nothing is imported)."""
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"config key 'logging.export_onnx' = true needs the ONNX extra ({', '.join(missing)} missing): "
            "pip install 'geotune[onnx]', or set logging.export_onnx=false"
        )


def export_onnx(model: nn.Module, data: DataSplits, images: torch.Tensor, path: Path, tolerance: float = 1e-4) -> dict:
    """Write ``path`` (input ``images``: N x C x H x W in [0, 1], dynamic N; output ``logits``) and compare
    its logits on ``images`` (uint8, from the test split) with PyTorch's model on the same images normalised
    as in training (``data.normalize``).

    Returns ``onnx_max_abs_diff`` and ``onnx_matches`` for metrics.json.
    """
    require_onnx()
    import onnxruntime  # deferred: an optional extra, checked above

    cpu_model = copy.deepcopy(model).float().cpu().eval().to(memory_format=torch.contiguous_format)
    wrapped = PixelInput(cpu_model, data.mean.float().cpu(), data.std.float().cpu()).eval()
    pixels = images.float().cpu().contiguous() / 255.0
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        wrapped,
        (pixels,),
        dynamo=True,
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        verbose=False,
    )
    if program is None:  # torch returns None only for the legacy exporter, which dynamo=True does not use
        raise RuntimeError("torch.onnx.export returned no ONNX program")
    program.save(str(path))
    with torch.no_grad():  # the reference: the training path's own normalisation, not the wrapper's
        expected = cpu_model(data.normalize(images).float().cpu().contiguous()).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"images": pixels.numpy()})[0]
    diff = float(np.max(np.abs(got - expected)))
    return {"onnx_max_abs_diff": diff, "onnx_matches": bool(diff <= tolerance * max(1.0, np.abs(expected).max()))}
