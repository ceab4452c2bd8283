"""ONNX and TorchScript exports of a trained model, normalisation included, checked against PyTorch."""

from __future__ import annotations

import copy
import importlib.util
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from geotune.errors import ConfigError
from geotune.trainables.models import PixelInput

ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # the extra 'onnx': the exporter and the checker


def require_onnx(
    asked_by: str = "config key 'logging.export_onnx' = true", instead: str = "set logging.export_onnx=false"
) -> None:
    """Refuse an ONNX export (``logging.export_onnx`` before training, ``geotune export``) when the extra is
    missing (cheap: nothing is imported)."""
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"{asked_by} needs the ONNX extra ({', '.join(missing)} missing): pip install 'geotune[onnx]', or {instead}"
        )


def export_onnx(
    model: nn.Module,
    mean: torch.Tensor,
    std: torch.Tensor,
    images: torch.Tensor,
    path: Path,
    tolerance: float = 1e-4,
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict:
    """Write ``path`` (input ``images``: N x C x H x W in [0, 1], dynamic N; output ``logits``; the normalisation
    by ``mean`` and ``std`` inside) and compare its logits on ``images`` (uint8) with PyTorch's model on the same
    images normalised by ``normalize`` (the training path's own, where there is one).

    Returns ``onnx_max_abs_diff`` and ``onnx_matches`` for metrics.json.
    """
    require_onnx()
    import onnxruntime  # deferred: an optional extra, checked above

    cpu_model, wrapped, pixels = _wrapped(model, mean, std, images)
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
    expected = _reference(cpu_model, images, mean, std, normalize)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"images": pixels.numpy()})[0]
    diff = float(np.max(np.abs(got - expected)))
    return {"onnx_max_abs_diff": diff, "onnx_matches": bool(diff <= tolerance * max(1.0, np.abs(expected).max()))}


def export_torchscript(
    model: nn.Module, mean: torch.Tensor, std: torch.Tensor, images: torch.Tensor, path: Path, tolerance: float = 1e-4
) -> dict:
    """Write ``path``, a TorchScript module (``torch.jit.load``) taking images in [0, 1] with the normalisation
    inside, traced on ``images`` (uint8), and compare what the saved module gives with PyTorch's model."""
    cpu_model, wrapped, pixels = _wrapped(model, mean, std, images)
    with torch.no_grad(), warnings.catch_warnings():
        # torch 2.10 marks TorchScript deprecated (for torch.export); its runtimes (C++ libtorch, mobile) still
        # load these files, which is why it is offered
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(wrapped, (pixels,), check_trace=False)
        traced.save(str(path))
        got = torch.jit.load(str(path), map_location="cpu")(pixels).numpy()
    expected = _reference(cpu_model, images, mean, std, None)
    diff = float(np.max(np.abs(got - expected)))
    return {
        "torchscript_max_abs_diff": diff,
        "torchscript_matches": bool(diff <= tolerance * max(1.0, np.abs(expected).max())),
    }


def _wrapped(model: nn.Module, mean: torch.Tensor, std: torch.Tensor, images: torch.Tensor):
    """(the model on the CPU in eval mode, it with the normalisation in front, ``images`` scaled to [0, 1])."""
    cpu_model = copy.deepcopy(model).float().cpu().eval().to(memory_format=torch.contiguous_format)
    wrapped = PixelInput(cpu_model, mean.float().cpu(), std.float().cpu()).eval()
    return cpu_model, wrapped, images.float().cpu().contiguous() / 255.0


def _reference(
    model: nn.Module,
    images: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    normalize: Callable[[torch.Tensor], torch.Tensor] | None,
) -> np.ndarray:
    """The logits an export must reproduce: the model on the images normalised outside the wrapper."""
    shape = (1, -1, 1, 1)
    inputs = (
        normalize(images)
        if normalize is not None
        else (images.float() / 255.0 - mean.reshape(shape)) / std.reshape(shape)
    )
    with torch.no_grad():
        return model(inputs.float().cpu().contiguous()).numpy()
