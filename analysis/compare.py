"""A regularized run against its unregularized twin: differences of every final and geometry metric."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

COMPARED = ("val_accuracy", "test_accuracy", "val_loss", "test_loss", "val_macro_f1", "test_macro_f1",
            "train_accuracy", "overfit_gap", "best_val_accuracy", "epochs_run", "wall_time_s",
            "flatness_calibrated_per_class", "participation_ratio_per_class", "top_pc_share_per_class",
            "intrinsic_dim_twonn_per_class", "flatness_calibrated", "flatness_reference", "geodesic_ratio_mean",
            "geodesic_ratio_mean_indirect", "participation_ratio", "top_pc_share", "intrinsic_dim_twonn",
            "intrinsic_dim_mle", "silhouette", "linear_separability", "knn_accuracy", "pca_dims_90", "trustworthiness")


@dataclass
class TrialRecord:
    """What a finished trial directory says about itself."""
    name: str
    path: str
    metrics: dict
    history: list
    geometry: Optional[dict]
    geodesic: Optional[dict]

    @classmethod
    def load(cls, trial_dir: str | Path, name: Optional[str] = None) -> "TrialRecord":
        folder = Path(trial_dir)

        def read(file: str):
            path = folder / file
            return json.loads(path.read_text()) if path.is_file() else None

        return cls(name or folder.name, str(folder), read("metrics.json") or {}, read("training_history.json") or [],
                   read("geometry_summary.json"), read("geodesic_summary.json"))


def difference(a: Optional[float], b: Optional[float]) -> dict:
    """a vs b: both values, a - b, and (a - b) / |b| in percent (None where undefined)."""
    ok = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (a, b))
    absolute = a - b if ok else None
    percent = absolute / abs(b) * 100.0 if ok and b != 0 else None
    return {"regularized": a, "baseline": b, "absolute": absolute, "percent": percent}


def paired_comparison(regularized: TrialRecord, baseline: TrialRecord, config: dict) -> dict:
    """The content of comparison_report.json."""
    r, b = regularized.metrics, baseline.metrics
    return {
        "config": config,
        "runs": {"regularized": {"trial": regularized.path, "metrics": r},
                 "baseline": {"trial": baseline.path, "metrics": b}},
        "differences": {key: difference(r.get(key), b.get(key)) for key in COMPARED if key in r or key in b},
        "overfitting": {
            "definition": "train accuracy minus validation accuracy at the end of training",
            "regularized_gap": r.get("overfit_gap"), "baseline_gap": b.get("overfit_gap"),
            "gap_change": difference(r.get("overfit_gap"), b.get("overfit_gap"))["absolute"],
        },
        "geometry": {"regularized": regularized.geometry, "baseline": baseline.geometry},
        "geodesic": {"regularized": regularized.geodesic, "baseline": baseline.geodesic},
    }
