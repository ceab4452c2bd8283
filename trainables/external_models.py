"""Network bodies from outside geotune: torchvision's classification models by name, and your own builders.

``model.type: torchvision.NAME`` builds ``torchvision.models.get_model(NAME)`` (any name of
``torchvision.models.list_models(module=torchvision.models)``) and removes its last Linear layer, the
classifier: the body's output is the network's pooled (penultimate) features, which go through geotune's
embedding layer (``hidden_dim``; null keeps the features themselves) and head. Adapted to the data, a
documented choice:

- **channels**: for inputs of C != 3 channels the first convolution is rebuilt for C; with weights, grey
  images (C = 1) get the sum of the RGB kernels, so a grey image gives what the RGB network gives the same
  image as three equal channels; other C get the mean RGB kernel times 3 / C on every channel (same rule).
- **small images** (sides under SMALL_INPUT pixels): the first convolution's stride becomes 1 and a max-pool
  that follows it before the next convolution is removed (as CIFAR ResNets do), so a 32 px image is not
  reduced to 1x1 before the last stage. Kernels and weights are kept. Vision transformers (vit, swin, maxvit)
  need their native size (dataset.image_size: 224).
- **weights** (``model.weights``): a local state dict of the unadapted architecture (torchvision's own file
  or ``torch.save(model.state_dict())``), or a torchvision weights name (DEFAULT, IMAGENET1K_V1) read from
  torch's cache and downloaded only with ``model.download``; loaded before the adaptation, the classifier
  left out. ImageNet weights expect ``dataset.normalize: imagenet``.

``model.type: package.module:function`` (or ``path/to/file.py:function``) calls your function with those of
``input_shape`` (C, H, W), ``num_classes`` and ``config`` (the model section) that it names, and takes the
``nn.Module`` it returns as the body (its output flattened into the embedding layer), or, when the module has
its own ``embed(x)``, as the whole network up to the embedding: geotune adds only the head.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
import torch.nn as nn

from geotune.config import TORCHVISION_PREFIX, WEIGHT_FILE_SUFFIXES, ModelConfig
from geotune.errors import ConfigError
from geotune.references import load_reference
from geotune.schema import show

SMALL_INPUT = 64  # image sides below this get the small-image stem (first convolution at stride 1, no max-pool)
AUX_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")  # googlenet / inception_v3 auxiliary classifiers, left out


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


def _last_linear(model: nn.Module, model_type: str) -> tuple[str, nn.Linear]:
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(
            f"config key 'model.type' = {model_type!r}: has no final Linear classifier to take the pooled "
            "features before (e.g. squeezenet ends in a convolution); choose another model"
        )
    return linears[-1]


def torchvision_names() -> list[str]:
    import torchvision  # deferred: torchvision costs seconds to import; only torchvision models need it

    return list(torchvision.models.list_models(module=torchvision.models))


def _torchvision_network(name: str, model_type: str) -> nn.Module:
    import torchvision  # deferred: see torchvision_names

    if name not in torchvision_names():
        raise ConfigError(
            f"config key 'model.type' = {model_type!r}: torchvision has no classification model {name!r} "
            f"(e.g. {', '.join(n for n in torchvision_names() if n.startswith(('resnet', 'mobilenet')))})"
        )
    # googlenet and inception_v3 return auxiliary outputs too in training mode unless told otherwise
    kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    return torchvision.models.get_model(name, weights=None, **kwargs)


def weights_state(m: ModelConfig, name: str) -> dict[str, torch.Tensor]:
    """The state dict model.weights names: a local file, or a torchvision weights name from torch's cache."""
    assert m.weights is not None
    path = Path(m.weights).expanduser()
    if m.weights.endswith(WEIGHT_FILE_SUFFIXES) or path.is_file():
        if not path.is_file():
            raise ConfigError(f"config key 'model.weights' = {m.weights!r}: the file does not exist")
        try:  # weights_only: a state dict is tensors; nothing in the file may run code
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ConfigError(
                f"config key 'model.weights' = {m.weights!r}: not a PyTorch state-dict file "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
            ) from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]  # a Lightning-style checkpoint
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ConfigError(f"config key 'model.weights' = {m.weights!r}: holds no state dict (name -> tensor)")
        return state
    import torchvision  # deferred: see torchvision_names

    enum = torchvision.models.get_model_weights(name)
    try:
        weights = enum[m.weights]
    except KeyError:
        raise ConfigError(
            f"config key 'model.weights' = {m.weights!r}: neither a file nor a weights name of torchvision.{name} "
            f"({', '.join(['DEFAULT'] + [w.name for w in enum])})"
        ) from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True)
    if not m.download:
        raise ConfigError(
            f"config key 'model.weights' = {m.weights!r}: {type(weights).__name__}.{weights.name} is not in torch's "
            f"cache ({cached}); set model.download: true to let torchvision download it, or give a local file"
        )
    return weights.get_state_dict(progress=False)


def _load_weights(network: nn.Module, m: ModelConfig, name: str, classifier: str) -> None:
    state = {k: v for k, v in weights_state(m, name).items() if not k.startswith(f"{classifier}.")}
    state = {k: v for k, v in state.items() if not k.startswith(AUX_PREFIXES)}
    own = {k: v for k, v in network.state_dict().items() if not k.startswith(f"{classifier}.")}
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    wrong = [k for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        what = (
            f"missing {', '.join(missing[:3])}"
            if missing
            else f"unexpected {', '.join(unexpected[:3])}"
            if unexpected
            else f"{wrong[0]} has shape {list(state[wrong[0]].shape)}, not {list(own[wrong[0]].shape)}"
        )
        raise ConfigError(f"config key 'model.weights' = {m.weights!r}: not weights of torchvision.{name} ({what})")
    network.load_state_dict(state, strict=False)


def _adapt_channels(network: nn.Module, channels: int) -> None:
    name, conv = next((n, c) for n, c in network.named_modules() if isinstance(c, nn.Conv2d))
    if conv.in_channels == channels:
        return
    new = nn.Conv2d(
        channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=1,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        rgb = conv.weight.sum(dim=1, keepdim=True)  # what one grey channel must carry for three equal channels
        new.weight.copy_((rgb / channels).expand(-1, channels, -1, -1))
        if conv.bias is not None and new.bias is not None:
            new.bias.copy_(conv.bias)
    _set_module(network, name, new)


def _adapt_small_input(network: nn.Module) -> None:
    modules = list(network.named_modules())
    first = next(i for i, (_, m) in enumerate(modules) if isinstance(m, nn.Conv2d))
    conv = modules[first][1]
    assert isinstance(conv, nn.Conv2d)
    conv.stride = (1, 1)
    for name, module in modules[first + 1 :]:
        if isinstance(module, nn.Conv2d):
            return
        if isinstance(module, nn.MaxPool2d):
            _set_module(network, name, nn.Identity())
            return


def build_torchvision(m: ModelConfig, input_shape: tuple[int, int, int], with_weights: bool) -> tuple[nn.Module, int]:
    """(body, number of features) of model.type torchvision.NAME for inputs of ``input_shape``; the weights
    of model.weights are loaded only ``with_weights`` (a finished trial's model.pt replaces them anyway)."""
    name = m.type.removeprefix(TORCHVISION_PREFIX)
    network = _torchvision_network(name, m.type)
    classifier, linear = _last_linear(network, m.type)
    if with_weights and m.weights is not None:
        _load_weights(network, m, name, classifier)
    _set_module(network, classifier, nn.Identity())
    _adapt_channels(network, input_shape[0])
    if min(input_shape[1:]) < SMALL_INPUT:
        _adapt_small_input(network)
    return network, linear.in_features


def _call_builder(m: ModelConfig, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    build = load_reference("model.type", m.type)
    offered = {"input_shape": input_shape, "num_classes": num_classes, "config": m}
    parameters = inspect.signature(build).parameters
    unknown = [
        p.name
        for p in parameters.values()
        if p.name not in offered and p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if unknown:
        raise ConfigError(
            f"config key 'model.type' = {m.type!r}: the builder needs {', '.join(unknown)}; it may take only "
            "input_shape, num_classes and config"
        )
    takes_all = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
    try:
        module = build(**{k: v for k, v in offered.items() if takes_all or k in parameters})
    except ConfigError:
        raise
    except (Exception, SystemExit) as exc:  # sys.exit() in a builder must not end geotune as a success
        raise ConfigError(
            f"config key 'model.type' = {m.type!r}: the builder raised {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(module, nn.Module):
        raise ConfigError(
            f"config key 'model.type' = {m.type!r}: the builder returned a {type(module).__name__}, not a "
            "torch.nn.Module"
        )
    return module


PROBE_BATCHES = (2, 3, 5)  # feature_size: distinct batch sizes, so that an output that ignores the batch shows


def feature_size(module: nn.Module, input_shape: tuple[int, int, int], model_type: str, embed: bool = False) -> int:
    """Features per image that ``module`` (or its ``embed``) gives for inputs of ``input_shape``, checked on
    seeded random batches of PROBE_BATCHES images in eval mode (the mode left as it was): a tensor with one
    row per image, of the same non-zero size whatever the batch, each image's row independent of the others
    (the first two images give the same rows alone as in the batch of five)."""
    what = f"config key 'model.type' = {model_type!r}: {'embed() ' if embed else ''}"
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(max(PROBE_BATCHES), *input_shape, generator=generator)
    training = module.training
    module.eval()
    outputs = {}
    try:
        with torch.no_grad():
            for n in PROBE_BATCHES:
                outputs[n] = (module.embed if embed else module)(images[:n])  # type: ignore[operator]
    except Exception as exc:
        hint = "; vision transformers need dataset.image_size: 224" if "torchvision.vi" in model_type else ""
        raise ConfigError(
            f"config key 'model.type' = {model_type!r}: does not run on {show(list(input_shape))} inputs "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}){hint}"
        ) from None
    finally:
        module.train(training)
    for n, out in outputs.items():
        if not isinstance(out, torch.Tensor):
            raise ConfigError(f"{what}returns a {type(out).__name__}, not a tensor")
        if out.ndim == 0 or out.shape[0] != n:
            raise ConfigError(
                f"{what}returns shape {list(out.shape)} for a batch of {n} images; expected one row per image (N, ...)"
            )
    if embed and any(out.ndim != 2 for out in outputs.values()):
        shape = next(list(out.shape) for out in outputs.values() if out.ndim != 2)
        raise ConfigError(f"{what}returns shape {shape}; expected (N, features)")
    sizes = {n: int(out[0].numel()) for n, out in outputs.items()}
    if len(set(sizes.values())) > 1:
        raise ConfigError(
            f"{what}gives {sizes} features per image for batches of {list(sizes)}: it depends on the batch"
        )
    size = next(iter(sizes.values()))
    if size == 0:
        raise ConfigError(f"{what}gives 0 features per image: nothing for the head to classify")
    first, last = outputs[PROBE_BATCHES[0]], outputs[PROBE_BATCHES[-1]][: PROBE_BATCHES[0]]
    if not torch.allclose(first.float(), last.float(), rtol=1e-4, atol=1e-5):
        raise ConfigError(
            f"{what}gives an image other features in a larger batch (eval mode): its output mixes the images of a batch"
        )
    return size


def build_user(m: ModelConfig, input_shape: tuple[int, int, int], num_classes: int) -> tuple[nn.Module, bool]:
    """The user's module for model.type 'package.module:function', and whether it brings its own embed()."""
    module = _call_builder(m, input_shape, num_classes)
    return module, callable(getattr(module, "embed", None))
