"""backbones: do standard torchvision backbones differ in latent geometry, and does the regularizer change that?

Three families of different design, trained from scratch on the synthetic shapes at 16 px (each gets the
small-image stem: first convolution at stride 1, no max-pool; trainables/external_models.py): resnet18
(residual, 11 M parameters), mobilenet_v3_small (inverted residuals with squeeze-and-excitation, 1.5 M) and
shufflenet_v2_x0_5 (grouped convolutions with channel shuffle, 0.4 M), each without and with the geodesic
regularizer, 3 seeds (the fewest for a paired test). Every backbone's pooled features go through the same
32-wide embedding layer, so the geometry is measured in spaces of one dimension. Batches of 150 hold about
50 images per class, enough for the flat target to tell a bent class from a flat one. BatchNorm statistics
are recalibrated before each evaluation (train.precise_bn auto): in runs this short, MobileNetV3's running
averages (momentum 0.01) lag so far that it evaluates at chance. About ten minutes on a 2-core CPU; for
pretrained backbones add model.weights (a local state dict), dataset.normalize imagenet and a larger
dataset.image_size, and model.freeze backbone for a probe of fixed features.
"""

from geotune.search_spaces.space import SearchSpace

SPACE = SearchSpace(
    name="backbones",
    question="Do standard backbones (ResNet-18, MobileNet-V3, ShuffleNet-V2) differ in latent geometry, and "
    "does the geodesic regularizer change that?",
    base={
        "dataset": {"name": "shapes", "image_size": 16, "shapes": {"num_samples": 1200}},
        "model": {
            "type": "torchvision.resnet18",
            "hidden_dim": 32,  # one embedding width for every backbone: geometry compared in spaces of one dimension
            "dropout": 0.1,
        },
        # batches of 150: about 50 points per class, the fewest at which the flat target can see a class bend
        "train": {"epochs": 8, "batch_size": 150, "lr": 2e-3, "patience": 0},  # every trial trains to the end
        "regularizer": {"geodesic": {"lambda_reg": 0.5, "n_neighbors": 5}},
    },
    grid=[
        {
            "model.type": ["torchvision.resnet18", "torchvision.mobilenet_v3_small", "torchvision.shufflenet_v2_x0_5"],
            "regularizer.name": ["none", "geodesic"],
        }
    ],
    seeds=[0, 1, 2],
    metric="val_accuracy",
    mode="max",
    cpus_per_trial=1,
    gpus_per_trial=0.25,
)
