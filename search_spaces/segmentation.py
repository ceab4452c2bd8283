"""segmentation: how do encoder-decoder networks and segmentation losses shape the latent space of the bottleneck?

Three networks of different capacity and topology (a convolutional autoencoder without skip connections, a
small U-Net, the same U-Net with depthwise-separable convolutions) x three losses (area-balanced weighted
cross-entropy, focal, Dice) on shapes_seg: 64x64 images of three overlapping coloured rectangles. Training
follows the reference design's two phases: Nadam, then SGD with momentum and an exponentially decaying
rate. The latent points are the bottleneck's vectors per location, labelled by the majority class of their
cell (trainables/tasks.py); the report compares test mIoU and Dice with the geometry of those points
(linear separability by one-vs-rest perceptrons, silhouette, intrinsic dimension, flatness), and each trial
folder holds UMAP and PCA panels (umap.png) and the masks it predicts (masks.png). 300 images keep it at a
few minutes on a laptop CPU; raise dataset.shapes_seg.num_samples and train.epochs for the full study.
"""

from geotune.search_spaces.space import SearchSpace

SPACE = SearchSpace(
    name="segmentation",
    question="How do the network (autoencoder, U-Net, separable U-Net) and the loss (weighted CE, focal, Dice) "
    "shape the bottleneck's latent space, and what does it cost in mIoU?",
    base={
        "dataset": {"name": "shapes_seg", "shapes_seg": {"num_samples": 300}},
        "model": {"type": "unet", "channels": [8, 16, 32, 32], "hidden_dim": 16},  # four levels: an 8x8 bottleneck
        "train": {
            "epochs": 15,
            "batch_size": 16,
            "lr": 3e-3,
            "patience": 0,  # every trial trains its two phases to the end
            "phases": [
                {"epochs": 9, "optimizer": "nadam"},
                {
                    "epochs": 6,
                    "optimizer": "sgd",
                    "lr": 0.01,
                    "momentum": 0.9,
                    "scheduler": "exponential",
                    "lr_gamma": 0.8,
                },
            ],
        },
        "logging": {"latent_points": 1200},
    },
    grid=[
        {
            "model.type": ["conv_autoencoder", "unet", "unet_separable"],
            "train.loss": ["weighted_ce", "focal", "dice"],
        }
    ],
    seeds=[0, 1, 2],
    metric="val_miou",
    mode="max",
    cpus_per_trial=1,
    gpus_per_trial=0.25,
)
