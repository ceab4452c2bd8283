"""cifar100_pooling: on a few natural-image classes, how do the downsampling operator, a first strided 5x5
convolution and global pooling shape the latent space?

Arm 1: two 3x3 blocks downsampling by strided convolution, max or avg pooling. Arm 2, the original experiment's
network: a first 5x5 convolution of stride 4, a 3x3 convolution of stride 2 (no pooling layers), then global max
or avg pooling before the embedding. 3 seeds. Out of the box it runs on the embedded RGB shapes; on CIFAR-100
(three classes, 0 apple, 33 forest, 56 palm tree): --set dataset.name=cifar100 --set dataset.root=data
(with --set dataset.download=true once, where the machine can reach the internet).
"""

from geotune.search_spaces.space import SearchSpace

SPACE = SearchSpace(
    name="cifar100_pooling",
    question="How do pooling, a first strided 5x5 convolution and global pooling shape the latent space?",
    base={
        "dataset": {"name": "shapes"},
        "model": {"type": "simple_cnn", "channels": [32, 64], "hidden_dim": 64},
        "train": {"epochs": 12, "batch_size": 128, "lr": 0.002, "patience": 0},
    },
    grid=[
        {"model.pooling": ["stride", "max", "avg"]},
        {
            "model.kernel_sizes": [[5, 3]],
            "model.strides": [[4, 2]],
            "model.pooling": ["stride"],  # the strides downsample: no 2x2 pooling layers
            "model.global_pool": ["max", "avg"],
        },
    ],
    seeds=[0, 1, 2],
    metric="val_accuracy",
    mode="max",
    cpus_per_trial=1,
    gpus_per_trial=0.25,
    per_dataset={
        "cifar100": {"dataset": {"classes": [0, 33, 56], "augment": True, "augment_flip": True}},
        "cifar10": {"dataset": {"augment": True, "augment_flip": True}},
    },
)
