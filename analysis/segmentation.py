"""Segmentation scores from a pixel confusion matrix: pixel accuracy, per-class and mean IoU and Dice.

For class c with true positives TP, false positives FP and false negatives FN (pixels):
IoU_c = TP / (TP + FP + FN) (Jaccard) and Dice_c = 2 TP / (2 TP + FP + FN) (F1 of the class's pixels).
A class absent from both the target and the prediction of the evaluated set has neither; it is reported
as null and left out of the means (mIoU, mean Dice), as the usual benchmarks do.
"""

from __future__ import annotations

import numpy as np


def segmentation_scores(confusion: np.ndarray, class_names: list[str]) -> dict:
    """{pixel_accuracy, miou, mean_dice, iou: {class: value}, dice: {class: value}} of ``confusion``
    (rows: true class, columns: predicted class, pixel counts)."""
    m = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(m)
    fp = m.sum(0) - tp
    fn = m.sum(1) - tp
    union = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        dice = np.where(union > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    seen = union > 0
    total = m.sum()

    def per_class(values: np.ndarray) -> dict:
        return {name: (float(v) if np.isfinite(v) else None) for name, v in zip(class_names, values)}

    return {
        "pixel_accuracy": float(tp.sum() / total) if total else None,
        "miou": float(iou[seen].mean()) if seen.any() else None,
        "mean_dice": float(dice[seen].mean()) if seen.any() else None,
        "iou": per_class(iou),
        "dice": per_class(dice),
    }
