"""``comparison_report.json``: the paired effects of regularization, one schema for every study.

``geotune report`` writes it into ``report/``; ``geotune compare`` (a study of one
regularized run and its unregularized twin) writes it into its folder as well.
Its keys:

- ``effects``: per regularizer and metric, the mean paired difference, its 95% CI
  and a paired test where there are enough pairs (``analysis.stats.PairedEffect``);
- ``pairs``: every regularized trial with its baseline and both values of each metric;
- ``unpaired``: regularized trials without exactly one baseline of the same config;
- with exactly one pair (as ``geotune compare`` makes), that pair in full: ``runs``
  (both trial folders and final metrics), ``differences`` (absolute and percent,
  every compared metric), ``overfitting`` (the train/val gaps) and the ``geometry``
  and ``geodesic`` summaries side by side.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from geotune.analysis.stats import PairedEffect, Pairing
from geotune.layout import COMPARISON_FILE, TrialRecord, clean_json
from geotune.metric_names import COMPARED

SCHEMA_VERSION = 1


def difference(a: float | None, b: float | None) -> dict:
    """a vs b: both values, a - b, and (a - b) / |b| in percent (None where undefined)."""
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return {"regularized": a, "baseline": b, "absolute": None, "percent": None}
    return {"regularized": a, "baseline": b, "absolute": a - b, "percent": (a - b) / abs(b) * 100.0 if b else None}


def pair_in_full(regularized: TrialRecord, baseline: TrialRecord) -> dict:
    """One regularized trial against its baseline: metrics, differences, gaps, geometry side by side."""
    r, b = regularized.metrics, baseline.metrics
    return {
        "runs": {
            "regularized": {"trial": regularized.path, "metrics": r},
            "baseline": {"trial": baseline.path, "metrics": b},
        },
        "differences": {key: difference(r.get(key), b.get(key)) for key in COMPARED if key in r or key in b},
        "overfitting": {
            "definition": "train accuracy minus validation accuracy at the end of training",
            "regularized_gap": r.get("overfit_gap"),
            "baseline_gap": b.get("overfit_gap"),
            "gap_change": difference(r.get("overfit_gap"), b.get("overfit_gap"))["absolute"],
        },
        "geometry": {"regularized": regularized.geometry, "baseline": baseline.geometry},
        "geodesic": {"regularized": regularized.geodesic, "baseline": baseline.geodesic},
    }


def single_pair(pairing: Pairing, frame: pd.DataFrame) -> tuple[TrialRecord, TrialRecord] | None:
    """(regularized, baseline) records where the study has exactly one pair; ``frame`` gives the folders."""
    if len(pairing.pairs) != 1:
        return None
    folders = dict(zip(frame["trial"], frame["path"]))
    pair = pairing.pairs.iloc[0]
    return TrialRecord.load(folders[pair["trial"]]), TrialRecord.load(folders[pair["baseline"]])


def comparison_report(
    pairing: Pairing, effects: list[PairedEffect], pair: tuple[TrialRecord, TrialRecord] | None
) -> dict:
    """The content of comparison_report.json; ``pair``: the study's one pair (``single_pair``), if it has one."""
    report: dict = {
        "schema_version": SCHEMA_VERSION,
        "definition": "difference = regularized trial minus its baseline (same config except regularizer.*)",
        "effects": [e.to_dict() for e in effects],
        "pairs": pairing.pairs.to_dict(orient="records") if not pairing.pairs.empty else [],
        "unpaired": pairing.unpaired,
    }
    if pair is not None:
        report.update(pair_in_full(*pair))
    return report


def write_comparison_report(folder: str | Path, report: dict) -> Path:
    """FOLDER/comparison_report.json; NaN and numpy values as JSON's null and numbers."""
    path = Path(folder) / COMPARISON_FILE
    path.write_text(json.dumps(clean_json(report), indent=2))
    return path
