"""Looking inside a trained network: its layers, what they output, and how sure its output layer is.

``model_summary`` lists every named module with its output shape and parameter
count (one forward pass with hooks, as torchinfo does it; the few lines here spare a
dependency). ``layer_outputs`` captures named layers' outputs for a batch;
``layer_vectors`` turns one layer's outputs into one vector per image as the
layer-by-layer geometry measures them (flattened, as Ansuini et al. 2019 do, and
randomly projected when wide; or averaged over positions), and ``relative_depths``
places layers between the input (0) and the output (1). ``output_sparsity``
compares softmax and sparsemax on the same logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from geotune.errors import ConfigError
from geotune.trainables.heads import sparsemax
from geotune.trainables.models import count_parameters

INPUT_LAYER = "input"  # the pseudo-layer of logging.geometry_layers / activation_layer: the normalised pixels
TOP_K_MASS = 3  # output_sparsity: softmax's probability mass outside the top 3 classes


@dataclass
class LayerRow:
    name: str  # dotted module name, as logging.geometry_layers and logging.activation_layer take it
    kind: str  # the module's class
    output_shape: tuple[int, ...]  # for one image (batch dimension left out)
    parameters: int  # including those of the modules inside it


def _outputs_of(model: nn.Module, modules: dict[str, nn.Module], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run ``model(x)`` once and return what each of ``modules`` output (its first tensor output)."""
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in modules.items():

        def hook(_module, _inputs, output, name=name):
            captured.setdefault(name, output[0] if isinstance(output, (tuple, list)) else output)

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def model_summary(model: nn.Module, example: torch.Tensor) -> list[LayerRow]:
    """Every named module (in definition order), with its output shape for ``example`` (a normalised batch)."""
    modules = {name: m for name, m in model.named_modules() if name}
    was_training = model.training
    model.eval()
    try:
        outputs = _outputs_of(model, modules, example)
    finally:
        model.train(was_training)
    return [
        LayerRow(name, type(m).__name__, tuple(outputs[name].shape[1:]) if name in outputs else (), count_parameters(m))
        for name, m in modules.items()  # a parent before its children, as printed summaries go
    ]


def summary_text(rows: list[LayerRow], total: int, input_shape: tuple[int, ...]) -> str:
    """``model_summary.txt``: one line per layer, indented by depth."""
    width = max(len("layer"), *(len(r.name) + 2 * r.name.count(".") for r in rows))
    lines = [
        f"input: {list(input_shape)}",
        f"{'layer':<{width}}  {'type':<18}  {'output shape':<18}  {'parameters':>10}",
        "-" * (width + 52),
    ]
    for r in rows:
        indent = "  " * r.name.count(".")
        shape = str(list(r.output_shape)) if r.output_shape else "(not run)"
        lines.append(f"{indent + r.name:<{width}}  {r.kind:<18}  {shape:<18}  {r.parameters:>10,}")
    lines.append("-" * (width + 52))
    lines.append(f"total parameters: {total:,}")
    return "\n".join(lines) + "\n"


def resolve_layers(model: nn.Module, names: list[str], key: str) -> dict[str, nn.Module | None]:
    """Map config names to modules: a full dotted name, or its last part(s) when that is unambiguous
    (``block1`` for ``body.block1``); ``input`` is the normalised image itself (None). Errors name the key."""
    modules = {name: m for name, m in model.named_modules() if name}
    resolved: dict[str, nn.Module | None] = {}
    for wanted in names:
        if wanted == INPUT_LAYER:
            resolved[INPUT_LAYER] = None
            continue
        matches = [n for n in modules if n == wanted] or [n for n in modules if n.endswith("." + wanted)]
        if len(matches) != 1:
            shown = ", ".join(n for n in modules if n.count(".") <= 1)
            why = f"matches {', '.join(matches)}" if matches else "is no layer of this model"
            raise ConfigError(
                f"config key '{key}' = {wanted!r}: {why}; name one of {INPUT_LAYER}, {shown} "
                "(model_summary.txt lists every layer)"
            )
        resolved[matches[0]] = modules[matches[0]]
    return resolved


def first_conv(model: nn.Module) -> str | None:
    return next((name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def layer_outputs(
    model: nn.Module, layers: dict[str, nn.Module | None], x: torch.Tensor, batch_size: int = 512
) -> dict[str, torch.Tensor]:
    """Each layer's output for the normalised images ``x`` (eval mode, on the CPU), batch by batch."""
    was_training = model.training
    model.eval()
    hooked = {name: m for name, m in layers.items() if m is not None}
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    try:
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size]
            outputs = _outputs_of(model, hooked, batch) if hooked else {}
            for name in layers:
                out = batch if layers[name] is None else outputs[name]
                chunks[name].append(out.detach().float().cpu())
    finally:
        model.train(was_training)
    return {name: torch.cat(parts) for name, parts in chunks.items()}


def pooled(output: torch.Tensor, layer: str) -> np.ndarray:
    """One vector per image: a layer's spatial outputs (N, C, H, W) averaged over positions (its channels'
    mean responses), others flattened; the input's pixels are flattened (averaging would leave one number
    per channel)."""
    if output.dim() == 4 and layer != INPUT_LAYER:
        return output.mean(dim=(2, 3)).numpy()
    return output.reshape(len(output), -1).numpy()


@dataclass
class LayerVectors:
    points: np.ndarray  # (N, measured dimensions) float32: one vector per image
    output_shape: list[int]  # the layer's output for one image
    width: int  # dimensions before any projection (flattened: the product of output_shape)
    projected: bool  # a seeded sparse random projection to logging.layer_projection_dim was applied


LAYER_BATCH_VALUES = 1 << 25  # layer_vectors: a batch's outputs hold at most about this many numbers (128 MB)


def layer_vectors(
    model: nn.Module,
    name: str,
    module: nn.Module | None,
    x: torch.Tensor,
    features: str = "flattened",
    max_dim: int = 2048,
    seed: int = 0,
    batch_size: int = 256,
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> LayerVectors:
    """One vector per image of ``x`` from layer ``name``, batch by batch so that only the measured vectors are
    ever held: the whole output flattened (``flattened``), or a spatial output averaged over positions
    (``position_mean``; the input's pixels are flattened either way). ``normalize`` turns a batch of stored
    images into the network's input (``x`` is that input already without it). Batches shrink below
    ``batch_size`` where a layer is wide (a 224-pixel convolution's map), to LAYER_BATCH_VALUES numbers.

    A flattened output wider than ``max_dim`` goes through one seeded sparse random projection
    (Li, Hastie & Church 2006; density 1/sqrt(width)): by Johnson-Lindenstrauss every distance keeps its
    length within a few per cent at 2048 dimensions, so neighbour-based measures (TwoNN, kNN, geodesics)
    read the same set; tests/test_internals.py holds TwoNN on known manifolds to this.
    """
    from sklearn.random_projection import SparseRandomProjection  # deferred: only wide layers need scikit-learn

    parts, shape, projector = [], [], None
    start, size = 0, min(batch_size, 8)  # a small first batch measures the layer's width
    while start < len(x):  # layer_outputs runs the model in eval mode and leaves its mode as it was
        batch = x[start : start + size]
        batch = normalize(batch) if normalize is not None else batch
        out = batch if module is None else layer_outputs(model, {name: module}, batch, size)[name]
        start += len(batch)
        size = max(1, min(batch_size, LAYER_BATCH_VALUES // max(1, out[0].numel())))
        out, shape = out.detach().float().cpu(), list(out.shape[1:])
        vectors = pooled(out, name) if features == "position_mean" else out.reshape(len(out), -1).numpy()
        if projector is None and vectors.shape[1] > max_dim:
            projector = SparseRandomProjection(n_components=max_dim, dense_output=True, random_state=seed)
            projector.fit(vectors[:1])  # the projection depends only on the width and the seed
        parts.append(vectors if projector is None else projector.transform(vectors).astype(np.float32))
    width = int(np.prod(shape)) if features == "flattened" or module is None or len(shape) != 3 else shape[0]
    return LayerVectors(np.concatenate(parts), shape, width, projector is not None)


def relative_depths(model: nn.Module, layers: dict[str, nn.Module | None], example: torch.Tensor) -> dict[str, float]:
    """Where each layer sits between the input (0) and the output (1): the share of the network's weight
    layers (convolutions, linear maps: modules with a weight of 2+ dimensions) applied by the time the layer
    has its output, in one forward pass of ``example``. A ReLU or pooling after a convolution sits where the
    convolution does. A model with no such modules spaces the layers evenly in the order given."""
    modules = {n: m for n, m in model.named_modules() if n}
    leaves = {n for n, m in modules.items() if not list(m.children())}
    weighted = {
        n
        for n in leaves
        if isinstance(getattr(modules[n], "weight", None), torch.Tensor) and modules[n].weight.dim() >= 2
    }
    applied, handles = [0], []
    done: dict[str, int] = {}  # module name -> weight layers applied when it first gave its output
    for n, m in modules.items():

        def hook(_module, _inputs, _output, n=n):
            applied[0] += n in weighted
            done.setdefault(n, applied[0])

        handles.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    total = applied[0]
    if not total:
        return {n: i / max(1, len(layers) - 1) for i, n in enumerate(layers)}
    missing = [n for n in layers if n != INPUT_LAYER and n not in done]
    if missing:
        raise ValueError(f"layer {missing[0]} did not run in the forward pass")
    return {n: 0.0 if n == INPUT_LAYER else done[n] / total for n in layers}


def output_sparsity(logits: torch.Tensor) -> dict:
    """How concentrated the two output layers are on the same logits: sparsemax's support size (how many
    classes get non-zero probability) and the probability mass softmax leaves outside its top 3."""
    logits = logits.float()
    n_classes = logits.shape[1]
    support = (sparsemax(logits, dim=1) > 0).sum(dim=1).numpy()
    soft = torch.softmax(logits, dim=1)
    outside = (1.0 - soft.topk(min(TOP_K_MASS, n_classes), dim=1).values.sum(dim=1)).clamp_min(0).numpy()
    counts = np.bincount(support, minlength=n_classes + 1)[1:]
    return {
        "n_images": int(len(logits)),
        "n_classes": int(n_classes),
        "sparsemax_support_size": {
            "counts": {str(k): int(c) for k, c in enumerate(counts, 1)},
            "mean": float(support.mean()),
            "median": float(np.median(support)),
            "share_one_class": float((support == 1).mean()),
        },
        "softmax_mass_outside_top3": {
            "mean": float(outside.mean()),
            "median": float(np.median(outside)),
            "p95": float(np.quantile(outside, 0.95)),
        },
        "note": "both computed on the same validation logits of the kept model, whichever output it was trained with",
    }


def activation_mosaic(images: np.ndarray, maps: torch.Tensor, max_channels: int = 8) -> tuple[np.ndarray, int]:
    """(mosaic, channels shown) for ``activations.png``: one row per image, its input (grey) and the first
    channels' feature maps, each scaled to [0, 1] over the images shown so rows compare."""
    n, channels = maps.shape[0], min(max_channels, maps.shape[1])
    h, w = maps.shape[2:]
    maps = maps[:, :channels]
    low = maps.amin(dim=(0, 2, 3), keepdim=True)
    high = maps.amax(dim=(0, 2, 3), keepdim=True)
    scaled = ((maps - low) / (high - low).clamp_min(1e-12)).numpy()
    grey = images.astype(np.float32).mean(axis=1) / 255.0  # (n, H, W)
    rows = []
    for i in range(n):
        source = torch.nn.functional.interpolate(torch.from_numpy(grey[i][None, None]), size=(h, w)).numpy()[0, 0]
        tiles = [source] + [scaled[i, c] for c in range(channels)]
        rows.append(np.concatenate([np.pad(t, 1, constant_values=1.0) for t in tiles], axis=1))
    return np.concatenate(rows, axis=0), channels
