"""bn_gradients: how do BatchNorm and a sparse output change the gradients each layer receives, and the
latent geometry they build?

simple_cnn with BatchNorm on / off x output softmax / sparsemax, 3 seeds; the report draws the per-layer
gradient L2 norms (layers x epochs) of each group's best trial beside the geometry tables. Runs on the
embedded digits; on an image folder, as the original experiment: --set dataset.name=image_folder
--set dataset.root=PATH (images resized to 224 px, the original's size, with three blocks and global average
pooling before the embedding so the network stays small at that size; --set dataset.image_size=32 for a quick look).
"""

from geotune.search_spaces.space import DIGITS_CNN, SearchSpace

SPACE = SearchSpace(
    name="bn_gradients",
    question="How do BatchNorm and a sparsemax output change per-layer gradient norms and latent geometry?",
    base=DIGITS_CNN,
    grid=[{"model.batch_norm": [True, False], "model.output": ["softmax", "sparsemax"]}],
    seeds=[0, 1, 2],
    metric="val_accuracy",
    mode="max",
    cpus_per_trial=1,
    gpus_per_trial=0.25,
    per_dataset={
        "image_folder": {"dataset": {"image_size": 224}, "model": {"channels": [32, 64, 128], "global_pool": "avg"}}
    },
    reference={"model.batch_norm": False, "model.output": "softmax"},  # what each change is measured from
)
