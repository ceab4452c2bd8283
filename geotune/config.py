"""The trial config: every hyperparameter declared once, with its default, allowed values and meaning.

A YAML file overrides the defaults and ``--set section.key=value`` overrides the
file (``geotune.config_loading``). Anything that cannot be right (an unknown key,
a wrong type, a negative learning rate, a start epoch after the last) raises
:class:`~geotune.errors.ConfigError` before anything trains; its message is one
line naming the key, the value and what is allowed (``geotune.schema``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import yaml

from geotune.errors import ConfigError
from geotune.references import FUNCTION, is_reference, split_reference
from geotune.schema import build, commented_yaml, declared_rows, param, show


@dataclass(frozen=True)
class DataSetFacts:
    """What geotune knows of a built-in data set before reading a byte of it (its reader lives in
    ``trainables.data.READERS`` under the same name: readers need torch, this floor does not)."""

    channels: int | None  # None: read from the files (image_folder)
    size: int | None  # native height = width, before dataset.image_size
    num_classes: int | None
    task: str = "classification"  # decides the model family, loss, metrics and report (trainables/tasks.py)
    official_test: bool = False  # ships its own test split (else the test split is drawn from the pool)


# One record per built-in data set: the schema's choices, the task, the input shape all read it.
BUILTIN_DATASETS = {
    "digits": DataSetFacts(1, 8, 10),
    "shapes": DataSetFacts(3, 32, 3),
    "mnist": DataSetFacts(1, 28, 10, official_test=True),
    "fashion_mnist": DataSetFacts(1, 28, 10, official_test=True),
    "cifar10": DataSetFacts(3, 32, 10, official_test=True),
    "cifar100": DataSetFacts(3, 32, 100, official_test=True),
    "image_folder": DataSetFacts(None, None, None),
    "shapes_seg": DataSetFacts(3, 64, 4, task="segmentation"),  # background and three colour families
}
DATASETS = tuple(BUILTIN_DATASETS)
CLASSIFIERS = ("fc", "simple_cnn", "resnet_basic", "resnet_bottleneck")
SEGMENTERS = ("conv_autoencoder", "unet", "unet_separable")
MODELS = CLASSIFIERS + SEGMENTERS
TORCHVISION_PREFIX = "torchvision."  # model.type torchvision.resnet18: a classification model of torchvision.models
FREEZE = ("none", "backbone", "all-but-head")
SEGMENTATION_DATASETS = tuple(name for name, facts in BUILTIN_DATASETS.items() if facts.task == "segmentation")
REGULARIZERS = ("none", "geodesic", "geometry", "combined")
MIN_MEMORY = 50  # fewest remembered samples of a class in which a bend can be seen (flatness's MIN_RESOLVED_POINTS)
# the penalty terms each regularizer name adds (combined = geodesic + geometry, written here only)
REGULARIZER_TERMS = {
    "none": (),
    "geodesic": ("geodesic",),
    "geometry": ("geometry",),
    "combined": ("geodesic", "geometry"),
}
KEEP_METRICS = ("val_loss", "val_accuracy", "val_miou")
LOSS_TERMS = ("ce", "weighted_ce", "focal", "dice")


def task_of(dataset_name: str) -> str:
    """``classification`` or ``segmentation``: what a data set asks a network to predict."""
    facts = BUILTIN_DATASETS.get(dataset_name)
    return facts.task if facts else "classification"  # a user's loader gives class labels (user_data.py)


WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")  # model.weights: a file, not a torchvision weights name


POOLINGS = ("stride", "max", "avg", "l2")
MAX_INPUT_SIDE = 8192  # model.input_shape and preprocessing.json: no side (or channel count) above this
ACTIVATIONS = ("relu", "swish", "gelu")


@dataclass
class ShapesConfig:
    num_samples: int = param(1500, "number of images generated (classes balanced)", ge=3, le=1_000_000)
    delta: int = param(15, "each RGB channel is drawn uniformly from class centre +/- delta", ge=0, le=42)
    min_extent: float = param(0.3, "smallest rectangle side, as a fraction of the image side", gt=0, le=1)
    max_extent: float = param(0.8, "largest rectangle side, as a fraction of the image side", gt=0, le=1)


@dataclass
class ShapesSegConfig:
    num_samples: int = param(
        600, "number of images generated, each with one rectangle of every class", ge=3, le=100_000
    )
    delta: int = param(15, "each RGB channel is drawn uniformly from class centre +/- delta", ge=0, le=42)
    min_extent: float = param(0.25, "smallest rectangle side, as a fraction of the image side", gt=0, le=1)
    max_extent: float = param(0.6, "largest rectangle side, as a fraction of the image side", gt=0, le=1)
    fully_inside: bool = param(
        True, "every rectangle lies wholly inside the image; false: rectangles may run off its edges"
    )


@dataclass
class DatasetConfig:
    name: str = param(
        "digits",
        f"which data set to train on: {', '.join(DATASETS)}, or your loader 'package.module:function' / "
        "'path/to/file.py:function' (docs: how-to, your own data)",
    )
    root: str = param("data", "folder holding on-disk data sets (mnist, fashion_mnist, cifar*, image_folder)")
    download: bool = param(False, "let torchvision download mnist/fashion_mnist/cifar10/cifar100 into root")
    val_ratio: float = param(0.15, "fraction of the training data held out for validation (stratified)", gt=0, lt=1)
    test_ratio: float = param(
        0.15, "fraction held out for test where the data set has no official test split", gt=0, lt=1
    )
    split_seed: int = param(0, "seed of the stratified splits and of synthetic data generation", ge=0, le=2**32 - 1)
    classes: list[int | str] | None = param(
        None, "keep only these classes (indices, or folder names for image_folder), relabelled 0..n-1"
    )
    image_size: int | None = param(
        None,
        "resize images once at load to this square size (at most 1024: the whole split lives in memory); null "
        "keeps the native size",
        ge=4,
        le=1024,
    )
    grayscale: bool = param(False, "image_folder only: decode images as one grey channel instead of RGB")
    normalize: str = param(
        "train_stats",
        "per-channel input normalisation: the training split's mean and std, ImageNet's (grey images: the mean of "
        "its three channels), or none (pixels in [0, 1])",
        choices=("train_stats", "imagenet", "none"),
    )
    augment: bool = param(False, "augment training batches on the device (vectorized flips, translations, rotations)")
    augment_flip: bool = param(
        False, "random horizontal flips (leave off for digits: a mirrored glyph is another glyph)"
    )
    augment_translate: int = param(2, "random translation of up to this many pixels (a padded random crop)", ge=0)
    augment_rotate: float = param(10.0, "random rotation within +/- this many degrees", ge=0, le=180)
    shapes: ShapesConfig = param(ShapesConfig(), "settings of the synthetic coloured-rectangles data set")
    shapes_seg: ShapesSegConfig = param(
        ShapesSegConfig(),
        "settings of the segmentation data set: three overlapping rectangles per image (64x64 unless image_size)",
    )


@dataclass
class ModelConfig:
    type: str = param(
        "simple_cnn",
        f"network body: {', '.join(CLASSIFIERS)}; a torchvision classification model, torchvision.NAME (e.g. "
        "torchvision.resnet18); or your builder 'package.module:function' / 'path/to/file.py:function' (docs: "
        "how-to, your own models). Segmentation data sets take conv_autoencoder (no skip connections), unet or "
        "unet_separable (depthwise-separable convolutions), with one resolution level per model.channels entry",
    )
    weights: str | None = param(
        None,
        "torchvision models: start from these weights, a local state-dict file (.pt) of the torchvision "
        "architecture, or a torchvision weights name (DEFAULT, IMAGENET1K_V1; from torch's cache, downloaded only "
        "with model.download)",
    )
    download: bool = param(False, "let torchvision download the weights model.weights names into torch's cache")
    freeze: str = param(
        "none",
        "train only part of the network: backbone (the body is fixed; embedding layer and head train: a probe "
        "through hidden_dim) or all-but-head (only the head trains: a linear probe of the embedding)",
        choices=FREEZE,
    )
    input_shape: list[int] | None = param(
        None, "[channels, height, width]; null takes it from the data set", ge=1, le=MAX_INPUT_SIDE
    )
    num_classes: int | None = param(None, "number of outputs; null takes it from the data set", ge=2)
    hidden_dim: int | None = param(
        64,
        "size of the embedding (latent vector) that the geometry work measures; segmentation networks: channels of "
        "the bottleneck map (a linear 1x1 convolution), one latent vector per location; torchvision and your own "
        "models: null takes the body's pooled features themselves as the embedding",
        ge=2,
        le=65_536,
    )
    channels: list[int] = param(
        [32, 64], "conv channels per block (simple_cnn), per stage (resnets) or hidden widths (fc)", ge=1, le=16_384
    )
    kernel_size: int = param(3, "convolution kernel size", choices=(3, 5, 7))
    kernel_sizes: list[int] | None = param(
        None, "simple_cnn: one kernel size per block (overrides kernel_size), e.g. [5, 3]", ge=1, le=15
    )
    strides: list[int] | None = param(
        None,
        "simple_cnn: one convolution stride per block, e.g. [4] (default: 2 with pooling stride, else 1)",
        ge=1,
        le=8,
    )
    pooling: str = param(
        "max", "how each conv block downsamples by 2 (l2: sqrt of the mean of squares)", choices=POOLINGS
    )
    global_pool: str | None = param(
        None,
        "before the embedding layer: flatten every position, or avg/max over positions; null: the model's own "
        "(simple_cnn flattens, the resnets average)",
        choices=("flatten", "avg", "max"),
    )
    activation: str = param("relu", "non-linearity of the body (swish: x * sigmoid(x))", choices=ACTIVATIONS)
    conv: str = param(
        "standard",
        "convolution kind: gated (conv(x) * sigmoid(gate(x))) or separable (depthwise, then 1x1)",
        choices=("standard", "gated", "separable"),
    )
    attention: str = param(
        "none", "channel: squeeze-and-excitation channel attention after each block", choices=("none", "channel")
    )
    batch_norm: bool = param(True, "BatchNorm after each convolution (and hidden layer of fc)")
    dropout: float = param(0.1, "dropout probability before the embedding layer and inside the mlp head", ge=0, lt=1)
    param_budget: int | None = param(
        None,
        "scale every width in model.channels by one common factor so that the model has this many parameters "
        "(within 5%): compares architectures at a matched size",
        ge=100,
        le=2_000_000_000,
    )
    resolved_channels: list[int] | None = param(
        None,
        "written by geotune into a trial's config.yaml with param_budget: the widths built; when present they "
        "are used as they are, so a saved trial rebuilds the same network",
        ge=1,
    )
    blocks_per_stage: int = param(1, "residual blocks per stage (resnet_basic, resnet_bottleneck)", ge=1, le=64)
    head_type: str = param("linear", "map from embedding to logits", choices=("linear", "mlp"))
    output: str = param(
        "softmax",
        "output layer: softmax + cross-entropy, or sparsemax + sparsemax loss",
        choices=("softmax", "sparsemax"),
    )


OPTIMIZERS = ("adam", "adamw", "nadam", "radam", "sgd")
SCHEDULERS = ("none", "cosine", "step", "plateau", "exponential", "warmup_cosine")
PHASE_KEYS = ("optimizer", "lr", "momentum", "weight_decay", "scheduler", "warmup_epochs", "lr_step_size", "lr_gamma")


@dataclass
class PhaseConfig:
    """One phase of train.phases: its epochs, and the optimisation keys that differ from train.*'s."""

    epochs: int = param(1, "epochs of this phase", ge=1, le=100_000)
    optimizer: str | None = param(None, "optimiser of this phase (null: train.optimizer)", choices=OPTIMIZERS)
    lr: float | None = param(None, "learning rate at the phase's start (null: train.lr)", gt=0)
    momentum: float | None = param(None, "SGD momentum (null: train.momentum)", ge=0, lt=1)
    weight_decay: float | None = param(None, "weight decay (null: train.weight_decay)", ge=0)
    scheduler: str | None = param(None, "schedule within the phase (null: train.scheduler)", choices=SCHEDULERS)
    warmup_epochs: int | None = param(None, "null: train.warmup_epochs", ge=1)
    lr_step_size: int | None = param(None, "null: train.lr_step_size", ge=1)
    lr_gamma: float | None = param(None, "null: train.lr_gamma", gt=0, lt=1)


@dataclass
class TrainConfig:
    batch_size: int = param(128, "examples per optimisation step", ge=2)
    epochs: int = param(15, "maximum number of passes over the training split", ge=1, le=100_000)
    lr: float = param(1e-3, "peak learning rate", gt=0)
    optimizer: str = param("adam", "optimiser", choices=OPTIMIZERS)
    momentum: float = param(0.9, "SGD momentum (sgd only)", ge=0, lt=1)
    weight_decay: float = param(0.0, "L2 weight decay (decoupled for adamw)", ge=0)
    scheduler: str = param(
        "cosine",
        "learning-rate schedule, stepped once per epoch (exponential: times lr_gamma each epoch; warmup_cosine: "
        "linear warm-up over warmup_epochs, then cosine)",
        choices=SCHEDULERS,
    )
    warmup_epochs: int = param(1, "warmup_cosine: epochs of linear warm-up from lr / (warmup_epochs + 1)", ge=1)
    lr_step_size: int = param(
        10, "step: epochs between decays; plateau: epochs without improvement before a decay", ge=1
    )
    lr_gamma: float = param(
        0.1, "step/plateau/exponential: factor applied to the learning rate at each decay", gt=0, lt=1
    )
    seed: int = param(0, "seed of weight init, batch order, augmentation and dropout", ge=0, le=2**32 - 1)
    device: str = param(
        "auto", "where the trial runs; auto takes the GPU Ray assigned, if any", choices=("auto", "cpu", "cuda")
    )
    keep: str = param(
        "best",
        "which epoch's weights the trial tests and saves: the best on the validation split (train.keep_by; a tie "
        "goes to the lower val_loss, then to the earlier epoch) or the last",
        choices=("best", "last"),
    )
    keep_by: str = param(
        "val_loss",
        "validation metric that picks the best epoch (a study sets its ranking metric when that is one of these)",
        choices=KEEP_METRICS,
    )
    phases: list[PhaseConfig] | None = param(
        None,
        "optimisation phases run one after another, each with a fresh optimiser and schedule, e.g. "
        "[{epochs: 25, optimizer: nadam}, {epochs: 50, optimizer: sgd, lr: 0.01, scheduler: exponential}]; "
        "train.epochs defaults to their sum; a train.epochs given over them (--set) cuts the last ones or "
        "lengthens the last, with a warning",
    )
    init_from: str | None = param(
        None, "start from these weights: a model.pt, or a finished trial folder (its kept model); shapes must match"
    )
    loss: str = param(
        "ce",
        "task loss: ce (the output layer's own: cross-entropy, or the sparsemax loss), weighted_ce (class weights "
        "balancing the training labels, by pixel area for segmentation), focal, dice (soft Dice over the batch), or "
        "a sum such as weighted_ce+dice",
    )
    focal_gamma: float = param(2.0, "focal loss: focusing exponent gamma of (1 - p_true)^gamma", ge=0)
    focal_alpha: list[float] | None = param(
        None, "focal loss: one weight per class multiplying its terms (alpha-balancing); null: 1 for every class"
    )
    patience: int = param(5, "stop after this many epochs without a lower val_loss; 0 never stops early", ge=0)
    precision: str = param(
        "fp32", "autocast precision for forward passes (bf16 on GPU or recent CPUs)", choices=("fp32", "bf16")
    )
    channels_last: bool = param(
        True, "store conv activations channels-last (1.3-1.8x faster CNN steps on CPU; on an H200 it helps bf16 only)"
    )
    precise_bn: str = param(
        "auto",
        "before each evaluation, set BatchNorm's running statistics from up to 2048 training images under the "
        "current weights (PreciseBN): running averages lag in short runs of deep networks, which then evaluate "
        "at chance; auto: on for torchvision and your own models, off for built-in ones",
        choices=("auto", "on", "off"),
    )
    deterministic: bool = param(True, "use deterministic kernels, so a seed reproduces a run bit for bit on CPU")
    num_threads: int | None = param(None, "torch CPU threads; null follows the CPUs Ray gives the trial", ge=1)


@dataclass
class GeodesicConfig:
    lambda_reg: float = param(0.1, "strength of the geodesic-flatness penalty", ge=0)
    target: str = param(
        "flat",
        "flat: pull pairs that must bend towards their straight chord (flat data of any "
        "shape is left alone); fixed: pull every kNN-graph ratio to target_ratio "
        "(the original platform; rewards collapse)",
        choices=("flat", "fixed"),
    )
    target_ratio: float = param(1.0, "target: fixed only: geodesic/Euclidean ratio the penalty pulls towards", ge=1)
    n_neighbors: int = param(5, "k of the batch's symmetric kNN graph; keep well below batch_size / classes", ge=1)
    start_epoch: int = param(1, "first epoch (1-based) in which the penalty is applied", ge=1)
    every_n_steps: int = param(1, "apply the penalty on every n-th training step only", ge=1)
    per_class: bool = param(True, "build one graph per class in the batch instead of one for the whole batch")
    exclude_direct: bool = param(
        False, "target: fixed only: leave out pairs joined by one edge (ratio 1 by construction)"
    )
    max_sources: int = param(
        0, "geodesics from at most this many random points per batch (a cheaper estimate); 0 = all", ge=0
    )
    memory: int = param(
        256,
        "target: flat with per_class only: samples per class whose last embeddings are remembered; the batch's "
        "bent pairs with them are pulled to the shape of the class's geodesics (held between refreshes); 0 = the "
        f"batch alone, else >= {MIN_MEMORY}",
        ge=0,
    )
    refresh_steps: int = param(
        100,
        "memory only: every this many training steps a class's kNN graph is compared with the one its held "
        "geodesics were computed from; they are recomputed once on average fewer than a quarter of each "
        "remembered point's neighbours are still the held ones (the task rearranged the class)",
        ge=1,
    )


@dataclass
class GeometryConfig:
    lambda_reg: float = param(0.1, "strength of the geometry penalty", ge=0)
    class_weight: float = param(
        1.0, "weight of the class-structure term (intra-class spread / centroid separation)", ge=0
    )
    dim_weight: float = param(0.1, "weight of the local-intrinsic-dimension term", ge=0)
    target_dim: float = param(8.0, "intrinsic dimension the dimension term pulls towards", gt=0)
    estimator: str = param("mle", "differentiable intrinsic-dimension estimate", choices=("mle", "twonn"))
    n_neighbors: int = param(10, "neighbours used by the MLE estimate", ge=2)
    start_epoch: int = param(1, "first epoch (1-based) in which the penalty is applied", ge=1)
    every_n_steps: int = param(1, "apply the penalty on every n-th training step only", ge=1)


@dataclass
class RegularizerConfig:
    name: str = param("none", "latent-geometry regularizer added to the task loss", choices=REGULARIZERS)
    enabled: bool = param(True, "switch the regularizer off without changing its settings")
    weight: float = param(1.0, "global multiplier: total = task + weight * lambda_reg * regularizer", ge=0)
    geodesic: GeodesicConfig = param(GeodesicConfig(), "settings of the geodesic regularizer")
    geometry: GeometryConfig = param(GeometryConfig(), "settings of the geometry regularizer")

    @property
    def terms(self) -> tuple[str, ...]:
        """The penalty terms this config trains with: those of its name whose lambda_reg > 0 (none when
        disabled or at weight 0). The one answer to "is this trial regularized?" (``active``): the
        training loop, metrics.json's ``regularized`` and the report's pairing all read it."""
        if not self.enabled or self.weight <= 0:
            return ()
        return tuple(t for t in REGULARIZER_TERMS[self.name] if getattr(self, t).lambda_reg > 0)

    @property
    def active(self) -> bool:
        return bool(self.terms)


@dataclass
class LoggingConfig:
    embedding_metrics_every: int = param(
        0, "measure latent geometry of the val set every n epochs; 0 only at the end", ge=0
    )
    metrics_n_neighbors: int = param(10, "k of the kNN graph the geometry metrics use (fixed, so trials compare)", ge=2)
    save_latents: bool = param(True, "write latents.npz (the measured embeddings, their labels and logits)")
    save_umap: bool = param(True, "project latents with UMAP for umap.png (off: PCA, stated in the figure)")
    figures: bool = param(
        True, "draw the trial's PNGs (confusion matrix, curves, umap.png, internals); off: numbers and files only"
    )
    save_checkpoint: bool = param(True, "checkpoint every epoch, so trials resume where they stopped")
    test_every_epoch: bool = param(
        False, "also evaluate the test split after every epoch (test_loss, test_accuracy in the history)"
    )
    internals: str = param(
        "auto",
        "logits.png, output_sparsity.json, activations.png and model_summary.txt; auto: for models of at most "
        "5 million parameters",
        choices=("auto", "on", "off"),
    )
    activation_layer: str | None = param(
        None, "layer whose feature maps activations.png shows (a name from model_summary.txt); null: the first conv"
    )
    geometry_split: str = param(
        "auto",
        "split whose embeddings the final geometry summary measures; auto: the one with the most points in its "
        "smallest class (val on a tie), so that classes are large enough to resolve a bend",
        choices=("auto", "val", "train", "test"),
    )
    geometry_points_per_class: int = param(
        1000, "at most this many points of each class are measured (a seeded sample; the cost grows with it)", ge=10
    )
    loggers: list[str] = param(
        [],
        "also log the study to these trackers, as --logger does: mlflow[=URI], wandb[=PROJECT] (a --logger of the "
        "same tracker on the command line wins); results do not depend on it",
    )
    geometry_layers: list[str] = param(
        [],
        "layers whose outputs on the measured images (logging.geometry_split) get the geometry summary "
        "(layer_geometry.json, layer_geometry.png against relative depth), e.g. [block1, block2, embedding]; "
        "the input (the normalised pixels) is always measured too",
    )
    layer_features: str = param(
        "flattened",
        "how a layer's output becomes one vector per image: flattened (all channels x positions, as Ansuini et al. "
        "2019 measure dimension across depth) or position_mean (each channel averaged over positions)",
        choices=("flattened", "position_mean"),
    )
    layer_projection_dim: int = param(
        2048,
        "flattened outputs wider than this are measured on a seeded sparse random projection to this many "
        "dimensions (distances kept within a few per cent; TwoNN within 5% on the tests' manifolds)",
        ge=64,
    )
    layer_points: int = param(
        2000,
        "at most this many of the measured images go through logging.geometry_layers (a seeded sample, classes "
        "in proportion): a wide layer costs far more than the embedding",
        ge=30,
    )
    latent_points: int = param(
        1200,
        "segmentation: bottleneck vectors sampled from the validation maps for the geometry metrics and latents.npz, "
        "equal numbers per class",
        ge=30,
    )
    export_onnx: bool = param(False, "export the final model to ONNX and check it against PyTorch (extra 'onnx')")
    interactive_scatter: bool = param(False, "also write a self-contained interactive HTML scatter of the latents")


@dataclass
class TrialConfig:
    dataset: DatasetConfig = param(DatasetConfig(), "data set, splits and augmentation")
    model: ModelConfig = param(ModelConfig(), "network body, embedding, head and output")
    train: TrainConfig = param(TrainConfig(), "optimisation")
    regularizer: RegularizerConfig = param(RegularizerConfig(), "latent-geometry regularizer")
    logging: LoggingConfig = param(LoggingConfig(), "what each trial measures and writes")

    @classmethod
    def from_dict(cls, data: dict | None) -> TrialConfig:
        """Build and validate a config from nested dicts (missing keys take defaults)."""
        config = build(cls, data or {}, "")
        _check_cross_field(config)
        return config

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def precise_bn_on(config: TrialConfig) -> bool:
    """Whether train.precise_bn recalibrates BatchNorm before each evaluation (auto: external models only)."""
    if config.train.precise_bn == "auto":
        return model_kind(config.model.type) != "builtin"
    return config.train.precise_bn == "on"


def model_kind(model_type: str) -> str:
    """``builtin``, ``torchvision`` (torchvision.NAME) or ``user`` (a reference to the user's builder)."""
    if model_type.startswith(TORCHVISION_PREFIX):
        return "torchvision"
    return "user" if is_reference(model_type) else "builtin"


def _first_changed(settings: tuple[tuple[str, object, object], ...]) -> tuple[str, object] | None:
    """The first (key, value) of (key, value, default) settings whose value is not its default."""
    return next(((key, value) for key, value, default in settings if value != default), None)


def _check_sources(config: TrialConfig) -> None:
    """Where the data and the network come from: a built-in name, torchvision, or the user's code."""
    d, m = config.dataset, config.model
    if is_reference(d.name):
        split_reference("dataset.name", d.name)
    elif d.name not in DATASETS:
        raise ConfigError(
            f"config key 'dataset.name' = {d.name!r}: unknown data set; use one of {', '.join(DATASETS)}, or your "
            "loader as 'package.module:function' or 'path/to/file.py:function'"
        )
    kind = model_kind(m.type)
    if kind == "user":
        split_reference("model.type", m.type)
    elif kind == "torchvision":
        if not FUNCTION.match(m.type.removeprefix(TORCHVISION_PREFIX)):
            raise ConfigError(
                f"config key 'model.type' = {m.type!r}: expected torchvision.NAME with a model name of "
                "torchvision.models, e.g. torchvision.resnet18"
            )
    elif m.type not in MODELS:
        raise ConfigError(
            f"config key 'model.type' = {m.type!r}: unknown model; use one of {', '.join(MODELS)}, "
            "torchvision.NAME (e.g. torchvision.resnet18), or your builder as 'package.module:function'"
        )
    torchvision_only = _first_changed((("weights", m.weights, None), ("download", m.download, False)))
    if kind != "torchvision" and torchvision_only:
        key, value = torchvision_only
        raise ConfigError(
            f"config key 'model.{key}' = {show(value)}: applies to torchvision models "
            f"(model.type torchvision.NAME), not {m.type!r}"
        )
    if kind == "torchvision" and m.download and (m.weights is None or m.weights.endswith(WEIGHT_FILE_SUFFIXES)):
        raise ConfigError(
            f"config key 'model.download' = true: applies to a torchvision weights name in model.weights "
            f"(DEFAULT, IMAGENET1K_V1), not {show(m.weights)}"
        )
    if kind == "builtin":
        if m.hidden_dim is None:
            raise ConfigError(
                f"config key 'model.hidden_dim' = null: built-in models need an embedding size; null applies to "
                f"torchvision and your own models, not {m.type!r}"
            )
        return
    builtin_only = _first_changed(
        (
            ("param_budget", m.param_budget, None),
            ("resolved_channels", m.resolved_channels, None),
            ("kernel_sizes", m.kernel_sizes, None),
            ("strides", m.strides, None),
            ("conv", m.conv, "standard"),
            ("attention", m.attention, "none"),
            ("global_pool", m.global_pool, None),
        )
    )
    if builtin_only:
        key, value = builtin_only
        raise ConfigError(
            f"config key 'model.{key}' = {show(value)}: shapes geotune's built-in models, not {m.type!r}; remove it"
        )


def _check_cross_field(config: TrialConfig) -> None:
    d, m, r = config.dataset, config.model, config.regularizer
    _check_sources(config)
    if d.val_ratio + d.test_ratio >= 1:
        raise ConfigError(
            f"config keys 'dataset.val_ratio' + 'dataset.test_ratio' = {d.val_ratio + d.test_ratio:g}: "
            "must be < 1 to leave training data"
        )
    if d.shapes.min_extent > d.shapes.max_extent:
        raise ConfigError(
            f"config key 'dataset.shapes.min_extent' = {d.shapes.min_extent:g}: "
            f"must be <= dataset.shapes.max_extent ({d.shapes.max_extent:g})"
        )
    if d.shapes_seg.min_extent > d.shapes_seg.max_extent:
        raise ConfigError(
            f"config key 'dataset.shapes_seg.min_extent' = {d.shapes_seg.min_extent:g}: "
            f"must be <= dataset.shapes_seg.max_extent ({d.shapes_seg.max_extent:g})"
        )
    _check_task(config)
    t = config.train
    if t.phases is not None:
        if not t.phases:
            raise ConfigError("config key 'train.phases' = []: give at least one phase, or null")
        total = sum(p.epochs for p in t.phases)
        if total != t.epochs:
            raise ConfigError(
                f"config key 'train.phases' = {len(t.phases)} phases of {total} epochs in all: must add up to "
                f"train.epochs ({t.epochs}); set train.epochs={total}"
            )
    names = [f"train.phases[{i}]" for i in range(len(t.phases))] if t.phases else ["train"]
    for where, phase in [(name, phase_train(t, i)) for i, name in enumerate(names)]:
        if phase.scheduler == "warmup_cosine" and phase.warmup_epochs >= phase.epochs:
            raise ConfigError(
                f"config key '{where}.warmup_epochs' = {phase.warmup_epochs}: must be < the epochs it applies to "
                f"({phase.epochs}) to leave epochs for the cosine decay"
            )
    if not m.channels:
        raise ConfigError("config key 'model.channels' = []: needs at least one entry")
    conv_only = {
        "kernel_sizes": m.kernel_sizes is not None,
        "strides": m.strides is not None,
        "conv": m.conv != "standard",
        "attention": m.attention != "none",
        "global_pool": m.global_pool is not None,
    }
    if m.type == "fc" and any(conv_only.values()):
        key = next(k for k, set_ in conv_only.items() if set_)
        raise ConfigError(
            f"config key 'model.{key}' = {show(getattr(m, key))}: applies to convolutional models, not model.type fc"
        )
    if m.resolved_channels is not None and (m.param_budget is None or len(m.resolved_channels) != len(m.channels)):
        raise ConfigError(
            f"config key 'model.resolved_channels' = {show(m.resolved_channels)}: geotune writes it next to "
            "model.param_budget, one entry per model.channels entry; remove it"
        )
    for key in ("kernel_sizes", "strides"):
        values = getattr(m, key)
        if values is None:
            continue
        if m.type != "simple_cnn":
            raise ConfigError(f"config key 'model.{key}' = {show(values)}: applies to model.type simple_cnn only")
        if len(values) != len(m.channels):
            raise ConfigError(
                f"config key 'model.{key}' = {show(values)}: needs one entry per block, as model.channels "
                f"({len(m.channels)})"
            )
    if m.input_shape is not None and (len(m.input_shape) != 3 or any(s < 1 for s in m.input_shape)):
        raise ConfigError(
            f"config key 'model.input_shape' = {show(m.input_shape)}: "
            "expected [channels, height, width] of positive integers"
        )
    if d.classes is not None:
        facts = BUILTIN_DATASETS.get(d.name)
        known = facts.num_classes if facts is not None else None
        outside = next((c for c in d.classes if isinstance(c, int) and known and not 0 <= c < known), None)
        if outside is not None and known:  # said before the count: [99] is out of range first, one class second
            raise ConfigError(
                f"config key 'dataset.classes' = {show(d.classes)}: class index {outside} is outside 0..{known - 1}"
            )
        if len(d.classes) < 2:
            raise ConfigError(f"config key 'dataset.classes' = {show(d.classes)}: needs at least two classes")
        if len(set(map(str, d.classes))) != len(d.classes):
            raise ConfigError(f"config key 'dataset.classes' = {show(d.classes)}: lists a class twice")
    if r.geodesic.target == "flat" and r.geodesic.target_ratio != 1.0:
        raise ConfigError(
            f"config key 'regularizer.geodesic.target_ratio' = {r.geodesic.target_ratio:g}: applies to "
            "regularizer.geodesic.target: fixed only (target flat pulls bent pairs to their chord); "
            "set regularizer.geodesic.target=fixed to use it"
        )
    if 0 < r.geodesic.memory < MIN_MEMORY:
        raise ConfigError(
            f"config key 'regularizer.geodesic.memory' = {r.geodesic.memory}: must be 0 (the batch alone) or >= "
            f"{MIN_MEMORY}: in fewer points a class reads flat whatever its shape"
        )
    if r.geodesic.target == "flat" and r.geodesic.exclude_direct:
        raise ConfigError(
            "config key 'regularizer.geodesic.exclude_direct' = true: applies to "
            "regularizer.geodesic.target: fixed only (target flat never counts a straight segment)"
        )
    for part in REGULARIZER_TERMS[r.name]:
        start = getattr(r, part).start_epoch
        if start > config.train.epochs:
            raise ConfigError(
                f"config key 'regularizer.{part}.start_epoch' = {start}: must be <= train.epochs "
                f"({config.train.epochs}); the penalty would never apply"
            )
    if m.freeze == "all-but-head" and r.active:
        raise ConfigError(
            f"config key 'model.freeze' = 'all-but-head': the embedding cannot move, so regularizer "
            f"{r.name!r} has nothing to shape; use model.freeze backbone (the embedding layer trains) or "
            "regularizer.name none"
        )
    if "geodesic" in REGULARIZER_TERMS[r.name]:
        if r.geodesic.n_neighbors >= config.train.batch_size:
            raise ConfigError(
                f"config key 'regularizer.geodesic.n_neighbors' = {r.geodesic.n_neighbors}: "
                f"must be < train.batch_size ({config.train.batch_size})"
            )


def loss_terms(loss: str) -> list[str]:
    """The terms of train.loss (``weighted_ce+dice`` -> [weighted_ce, dice]), each checked."""
    terms = [term.strip() for term in loss.split("+")]
    for term in terms:
        if term not in LOSS_TERMS:
            raise ConfigError(
                f"config key 'train.loss' = {loss!r}: unknown term {term!r}; use {', '.join(LOSS_TERMS)} "
                "or a sum of them joined by '+'"
            )
    if len(set(terms)) != len(terms):
        raise ConfigError(f"config key 'train.loss' = {loss!r}: names a term twice")
    return terms


def _check_task(config: TrialConfig) -> None:
    """What the task of the data set (task_of) rules out: the other task's networks and settings."""
    d, m, t = config.dataset, config.model, config.train
    task = task_of(d.name)
    terms = loss_terms(t.loss)
    if t.focal_alpha is not None and "focal" not in terms:
        raise ConfigError(
            f"config key 'train.focal_alpha' = {show(t.focal_alpha)}: applies to the focal loss only; "
            f"train.loss is {t.loss!r}"
        )
    if t.focal_alpha is not None and any(a < 0 for a in t.focal_alpha):
        raise ConfigError(f"config key 'train.focal_alpha' = {show(t.focal_alpha)}: weights must be >= 0")
    if m.output == "sparsemax" and terms != ["ce"]:
        raise ConfigError(
            f"config key 'train.loss' = {t.loss!r}: model.output sparsemax is trained with its own loss; "
            "use train.loss ce, or model.output softmax"
        )
    if task == "classification":
        if m.type in SEGMENTERS:
            raise ConfigError(
                f"config key 'model.type' = {m.type!r}: a segmentation network, but dataset '{d.name}' is a "
                f"classification data set; use one of {', '.join(CLASSIFIERS)} (or dataset.name: shapes_seg)"
            )
        if t.keep_by == "val_miou":
            raise ConfigError(
                f"config key 'train.keep_by' = 'val_miou': a segmentation metric; dataset '{d.name}' is a "
                "classification data set (use val_loss or val_accuracy)"
            )
        return
    if m.type not in SEGMENTERS:
        raise ConfigError(
            f"config key 'model.type' = {m.type!r}: dataset '{d.name}' is a segmentation data set; use one of "
            f"{', '.join(SEGMENTERS)}"
        )
    not_for_segmentation = _first_changed(
        (
            ("dataset.classes", d.classes, None),
            ("dataset.augment", d.augment, False),  # the batched affine resampling moves images, not their masks
            ("model.output", m.output, "softmax"),
            ("model.head_type", m.head_type, "linear"),
            ("model.global_pool", m.global_pool, None),
            ("model.attention", m.attention, "none"),
            ("model.conv", m.conv, "standard"),
            ("model.freeze", m.freeze, "none"),
        )
    )
    if not_for_segmentation:
        key, value = not_for_segmentation
        raise ConfigError(
            f"config key '{key}' = {show(value)}: does not apply to segmentation (dataset '{d.name}', "
            f"model.type {m.type}); remove it"
        )
    if config.logging.geometry_layers:
        raise ConfigError(
            f"config key 'logging.geometry_layers' = {show(config.logging.geometry_layers)}: measures one vector "
            "per image, which a segmentation network's layers do not give; remove it"
        )


def phase_train(train: TrainConfig, index: int) -> TrainConfig:
    """The optimisation settings of phase ``index`` of train.phases (train.* itself without phases), with
    ``epochs`` the phase's own."""
    if not train.phases:
        return train
    phase = train.phases[index]
    changed = {key: getattr(phase, key) for key in PHASE_KEYS if getattr(phase, key) is not None}
    return dataclasses.replace(train, epochs=phase.epochs, phases=None, **changed)


def phase_of(train: TrainConfig, epoch: int) -> int:
    """Which phase (0-based) the 1-based ``epoch`` belongs to (0 without phases)."""
    end = 0
    for index, phase in enumerate(train.phases or []):
        end += phase.epochs
        if epoch <= end:
            return index
    return max(0, len(train.phases or []) - 1)


def reference_rows() -> list[tuple[str, str, str, str]]:
    """(key, default, allowed, meaning) of every config key: the documentation's reference and ``geotune config``."""
    return declared_rows(TrialConfig)


def reference_markdown() -> str:
    """Every config key as one Markdown table (``geotune config --markdown``; the site's config reference)."""
    lines = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    lines += [
        f"| `{key}` | `{default}` | {allowed} | {meaning} |" for key, default, allowed, meaning in reference_rows()
    ]
    return "\n".join(lines) + "\n"


def commented_defaults() -> str:
    """The default trial config as YAML, each key's meaning as a comment."""
    return commented_yaml(TrialConfig)
