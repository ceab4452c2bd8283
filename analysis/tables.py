"""Plain-text and Markdown tables of metrics."""

from __future__ import annotations

from collections.abc import Sequence

from geotune.analysis.latent import GeometrySummary


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}" if value == value else "nan"
    return str(value)


def text_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """Fixed-width table: numbers right-aligned, text left-aligned."""
    numeric = [[isinstance(v, (int, float)) and not isinstance(v, bool) for v in row] for row in rows]
    cells = [[str(h) for h in headers]] + [[fmt(v) for v in row] for row in rows]
    flags = [[False] * len(headers)] + numeric
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, (row, nums) in enumerate(zip(cells, flags)):
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, nums)]
        lines.append("  ".join(parts))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence], digits: int = 3) -> str:
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(v, digits) for v in row) + " |")
    return "\n".join(lines)


GEOMETRY_ROWS = [
    ("flatness_calibrated_per_class", "within classes: chord-geodesic / Euclidean ratio, 1 = flat (the headline)"),
    ("participation_ratio_per_class", "within classes: (sum of covariance eigenvalues)^2 / sum of squares (mean)"),
    ("top_pc_share_per_class", "within classes: share of variance on the first principal axis (mean)"),
    ("intrinsic_dim_twonn_per_class", "within classes: intrinsic dimension, TwoNN (mean)"),
    ("geodesic_ratio_mean_per_class", "within classes: raw kNN-graph ratio (pair-weighted)"),
    ("flatness_calibrated", "whole set: chord-geodesic ratio (mixes class connections with curvature)"),
    ("flatness_reference", "whole set: raw / calibrated, the kNN graph's own detours"),
    ("geodesic_ratio_mean", "whole set: mean kNN-graph geodesic / Euclidean ratio over connected pairs"),
    ("geodesic_ratio_median", "median ratio"),
    ("geodesic_ratio_mean_indirect", "mean ratio without pairs joined by one edge"),
    ("geodesic_components", "connected components of the kNN graph"),
    ("geodesic_pairs_fraction", "share of pairs that are connected"),
    ("intrinsic_dim_twonn", "intrinsic dimension, TwoNN"),
    ("intrinsic_dim_mle", "intrinsic dimension, Levina-Bickel MLE (k=20)"),
    ("participation_ratio", "participation ratio of the whole set"),
    ("top_pc_share", "share of variance on the first principal axis"),
    ("pca_dims_90", "principal components for 90% of the variance"),
    ("silhouette", "silhouette score"),
    ("linear_separability", "one-vs-rest perceptron macro-F1 (train = test)"),
    ("knn_accuracy", "leave-one-out kNN accuracy"),
    ("trustworthiness", "trustworthiness of the 2-D projection"),
]


def geometry_text(summary: GeometrySummary, source: str | None = None) -> str:
    """Human-readable report of a geometry summary: headline metrics, then one row per class."""
    flat = summary.flat_metrics()
    g = summary.geodesic
    head = [
        f"{source}: " if source else "",
        f"{summary.n_points} embeddings of dimension {summary.dim}, k = {summary.n_neighbors}",
        f" (geodesics from {g.sampled_sources} sampled sources)" if g.sampled_sources else " (exact)",
    ]
    rows = [
        (key, flat.get(key), meaning)
        for key, meaning in GEOMETRY_ROWS
        if (key != "trustworthiness" or summary.projection) and (summary.per_class or not key.endswith("_per_class"))
    ]
    if summary.projection:
        rows[-1] = (
            "trustworthiness",
            flat["trustworthiness"],
            f"trustworthiness of the 2-D {summary.projection.upper()}",
        )
    out = ["".join(head), "", text_table(["metric", "value", "meaning"], rows)]
    if summary.n_duplicates:
        out.append(
            f"note: {summary.n_duplicates} embeddings repeat an earlier one exactly; dimension estimates "
            "leave the repeats out"
        )
    if summary.per_class:
        out += [
            "",
            "per class:",
            text_table(
                ["class", "n", "calibrated", "raw ratio", "reference", "ID twonn", "ID mle", "part. ratio", "top PC"],
                [
                    (
                        name,
                        c["n_points"],
                        c["flatness_calibrated"],
                        c["geodesic_ratio_mean"],
                        c["flatness_reference"],
                        c["intrinsic_dim_twonn"],
                        c["intrinsic_dim_mle"],
                        c["participation_ratio"],
                        c["top_pc_share"],
                    )
                    for name, c in summary.per_class.items()
                ],
            ),
        ]
        trivial = [name for name, c in summary.per_class.items() if c["geodesic"]["trivial"]]
        if trivial:
            out.append(f"note: classes {', '.join(trivial)} have <= k+1 points: their ratio is 1 by construction")
    return "\n".join(out)


COLLAPSE_ROWS = (
    ("nc1", "within-class over between-class spread, tr(Sigma_W Sigma_B^+) / C (0: points on their class means)"),
    ("nc2_equinorm", "std / mean of the centred class means' norms (0: equal norms)"),
    ("nc2_equiangular", "mean |cos + 1/(C-1)| over pairs of class means (0: a simplex's angles)"),
    ("nc3_self_duality", "linear head's rows against the centred means, normalised (0: the same; - without a head)"),
    ("nc4_ncc_mismatch", "share decided unlike the nearest class mean (0: none; - without logits)"),
)


def collapse_text(collapse) -> str:
    """Neural collapse (``analysis.collapse.NeuralCollapse``) as a table."""
    flat = collapse.flat_metrics()
    rows = [(key, flat.get(key), meaning) for key, meaning in COLLAPSE_ROWS]
    return f"neural collapse of {collapse.n_classes} classes (Papyan et al. 2020):\n" + text_table(
        ["metric", "value", "meaning"], rows
    )
