"""bn_gradients: how do BatchNorm and a sparse output change the gradients each layer receives, and the
latent geometry they build?

simple_cnn with BatchNorm on / off x output softmax / sparsemax, 3 seeds; the report draws the per-layer
gradient L2 norms (layers x epochs) of each group's best trial beside the geometry tables. Runs on the
embedded digits; on an image folder of many classes at any size: --set dataset.name=image_folder
--set dataset.root=PATH (images are resized to 32 px, the space's setting for image folders).
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
    per_dataset={"image_folder": {"dataset": {"image_size": 32}}},
    reference={"model.batch_norm": False, "model.output": "softmax"},  # what each change is measured from
)
