"""ONNX export of a trained model, checked against PyTorch on a real batch."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from geotune.errors import ConfigError


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, tolerance: float = 1e-4) -> dict:
    """Write ``path`` (dynamic batch size) and compare its logits with PyTorch's on ``example``.

    Returns ``onnx_max_abs_diff`` and ``onnx_matches`` for metrics.json.
    """
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError as exc:
        raise ConfigError(
            f"config key 'logging.export_onnx' = true needs the ONNX extra ({exc.name} is missing): "
            "pip install 'geotune[onnx]'"
        ) from None
    cpu_model = copy.deepcopy(model).float().cpu().eval()
    cpu_model = cpu_model.to(memory_format=torch.contiguous_format)
    example = example.float().cpu().contiguous()
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        cpu_model,
        (example,),
        dynamo=True,
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        verbose=False,
    )
    if program is None:  # torch returns None only for the legacy exporter, which dynamo=True does not use
        raise RuntimeError("torch.onnx.export returned no ONNX program")
    program.save(str(path))
    with torch.no_grad():
        expected = cpu_model(example).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"images": example.numpy()})[0]
    diff = float(np.max(np.abs(got - expected)))
    return {"onnx_max_abs_diff": diff, "onnx_matches": bool(diff <= tolerance * max(1.0, np.abs(expected).max()))}
