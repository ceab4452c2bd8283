"""An example of your own data set for geotune: oriented gratings (docs/how-to/data.md, "Bring your own data").

Name it in a config as ``dataset.name: configs/my_data.py:gratings`` (a path from the folder you run geotune
in), or, in an installed package, ``my_package.my_module:gratings``. geotune calls the function with the
``dataset`` config section and checks what it returns; this one shows the simplest form, one pool of images
with labels and class names, which geotune splits by dataset.val_ratio / test_ratio.
"""

import numpy as np

ANGLES = (0, 45, 90, 135)  # one class per stripe orientation, in degrees


def gratings(cfg):
    """Sinusoidal stripes at four orientations with a random phase and frequency, plus pixel noise.

    Returns (images, labels, class_names): images float32 in [0, 1], shape (N, H, W) (grey); labels int64.
    cfg.split_seed seeds the drawing, cfg.image_size sets the side (default 24), as a built-in set does.
    """
    rng = np.random.default_rng(cfg.split_seed)
    side, per_class = cfg.image_size or 24, 150
    ys, xs = np.mgrid[0:side, 0:side] / side
    images, labels = [], []
    for label, angle in enumerate(ANGLES):
        theta = np.deg2rad(angle)
        along = xs * np.cos(theta) + ys * np.sin(theta)
        for _ in range(per_class):
            frequency, phase = rng.uniform(2, 5), rng.uniform(0, 2 * np.pi)
            stripes = 0.5 + 0.4 * np.sin(2 * np.pi * frequency * along + phase)
            images.append(np.clip(stripes + rng.normal(0, 0.05, stripes.shape), 0, 1))
            labels.append(label)
    return np.stack(images).astype(np.float32), np.array(labels), [f"{a} deg" for a in ANGLES]
