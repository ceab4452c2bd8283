"""The ``geotune`` command line.

Verbs:
  train     one trial of a YAML config through Ray Tune
  geometry  latent-geometry metrics of any saved embeddings
  config    print the default (or resolved) config with every key explained
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from study.config import ConfigError

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def _add_config_args(parser: argparse.ArgumentParser, config_required: bool) -> None:
    if config_required:
        parser.add_argument("config", help="YAML trial config (see 'geotune config' for every key)")
    else:
        parser.add_argument("--config", help="YAML file overriding the defaults")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config key, e.g. --set train.lr=0.01 (repeatable; wins over the file)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geotune",
        description="Does shaping the geometry of a CNN's latent space change what it learns? "
                    "geotune trains classifiers with latent-geometry regularizers as Ray Tune trials.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'geotune VERB --help' for the options of each verb.",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    train = verbs.add_parser(
        "train", help="train one trial of CONFIG through Ray Tune, writing its artifacts to OUT_DIR/trial",
        description="Train one classifier from a YAML config as a Ray Tune trial on this machine. "
                    "Writes metrics.json, training_history.json, plots, latents.npz and model.pt to "
                    "OUT_DIR/trial and prints the key metrics.")
    _add_config_args(train, config_required=True)
    train.add_argument("out_dir", help="new folder for the results (an existing non-empty folder is refused)")
    train.add_argument("--cpus", type=float, default=None, help="CPUs for the trial (default: all of this machine)")
    train.add_argument("--gpus", type=float, default=None,
                       help="GPUs for the trial, fractions allowed (default: 1 if a GPU is visible, else 0)")
    train.set_defaults(handler=cmd_train)

    geometry = verbs.add_parser(
        "geometry", help="measure the latent geometry of saved embeddings (any latents.npz)",
        description="Compute geodesic flatness (raw and calibrated against a flat reference), intrinsic "
                    "dimension (TwoNN, MLE), silhouette, linear separability, kNN accuracy, PCA dimensions and "
                    "trustworthiness for an .npz file with arrays 'embeddings' (N x D) and, optionally, 'labels' "
                    "(N); per class too when labels are present. Works for models trained anywhere.")
    geometry.add_argument("latents", help=".npz file with 'embeddings' and optionally 'labels' (and 'class_names')")
    geometry.add_argument("--n-neighbors", type=int, default=10, help="k of the kNN graph (default 10)")
    geometry.add_argument("--umap", action="store_true",
                          help="judge trustworthiness of a UMAP projection instead of PCA (slower)")
    geometry.add_argument("--seed", type=int, default=0, help="seed of sampling and projections (default 0)")
    geometry.add_argument("--json", action="store_true", help="print the full summary as JSON")
    geometry.set_defaults(handler=cmd_geometry)

    config = verbs.add_parser(
        "config", help="print the default config, or the resolved one, as commented YAML",
        description="Print every config key with its default and meaning. With --config/--set, print the "
                    "resolved config instead (validated, as a trial would see it).")
    _add_config_args(config, config_required=False)
    config.add_argument("--markdown", action="store_true",
                        help="print the reference as a Markdown table (the README's config reference)")
    config.set_defaults(handler=cmd_config)
    return parser


def cmd_config(args: argparse.Namespace) -> int:
    from study.config import commented_defaults, load_config, reference_rows

    if args.markdown:
        print("| key | default | allowed | meaning |\n|---|---|---|---|")
        for key, default, allowed, meaning in reference_rows():
            print(f"| `{key}` | `{default}` | {allowed} | {meaning} |")
    elif args.config or args.overrides:
        print(load_config(args.config, args.overrides).to_yaml(), end="")
    else:
        print(commented_defaults(), end="")
    return 0


def load_latents(path: str) -> tuple:
    """(embeddings, labels or None, class names or None) from an .npz file; errors name the file."""
    import numpy as np

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"latents file '{file}' does not exist")
    try:
        archive = np.load(file, allow_pickle=False)
        arrays = {name: archive[name] for name in archive.files}
    except Exception as exc:
        raise ConfigError(f"latents file '{file}' is not a readable .npz archive ({type(exc).__name__})") from None
    if "embeddings" not in arrays:
        raise ConfigError(f"latents file '{file}' has no array 'embeddings' (it has: {', '.join(arrays) or 'none'})")
    x = arrays["embeddings"]
    if x.ndim != 2 or len(x) < 3 or not np.issubdtype(x.dtype, np.number):
        raise ConfigError(f"latents file '{file}': 'embeddings' must be a numeric (N, D) array with N >= 3, "
                          f"got shape {x.shape} of {x.dtype}")
    if not np.isfinite(x).all():
        raise ConfigError(f"latents file '{file}': 'embeddings' contains NaN or infinite values")
    labels = arrays.get("labels")
    if labels is not None:
        if labels.shape != (len(x),) or not np.issubdtype(labels.dtype, np.integer):
            raise ConfigError(f"latents file '{file}': 'labels' must be N={len(x)} integers, got shape "
                              f"{labels.shape} of {labels.dtype}")
        if labels.min() < 0:
            raise ConfigError(f"latents file '{file}': 'labels' must be >= 0")
    names = [str(n) for n in arrays["class_names"]] if "class_names" in arrays else None
    return x, labels, names


def cmd_geometry(args: argparse.Namespace) -> int:
    import json

    from analysis.latent import geometry_summary, pca_projection, umap_projection

    if args.n_neighbors < 2:
        raise ConfigError(f"--n-neighbors {args.n_neighbors}: must be >= 2")
    x, labels, names = load_latents(args.latents)
    if args.n_neighbors >= len(x):
        raise ConfigError(f"--n-neighbors {args.n_neighbors}: must be < the number of embeddings ({len(x)})")
    projection = umap_projection(x, args.n_neighbors, args.seed) if args.umap else pca_projection(x)
    summary = geometry_summary(x, labels, n_neighbors=args.n_neighbors, class_names=names, projection=projection,
                               projection_name="umap" if args.umap else "pca", seed=args.seed)
    if args.json:
        print(json.dumps({"metrics": summary.flat_metrics(), "summary": summary.to_dict()}, indent=2,
                         default=float))
        return 0
    from analysis.tables import geometry_text

    print(geometry_text(summary, args.latents))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from study.cluster import ensure_ray, local_gpu_count, notice, shutdown_if_started
    from study.config import load_config
    from study.tuner import refuse_existing_results, run_single_trial
    from trainables.trial import check_config

    cfg = load_config(args.config, args.overrides)
    check_config(cfg)
    refuse_existing_results(args.out_dir)
    cpus = args.cpus if args.cpus is not None else float(os.cpu_count() or 1)
    gpus = args.gpus if args.gpus is not None else (1.0 if local_gpu_count() else 0.0)
    if gpus and not local_gpu_count():
        notice(f"--gpus {gpus:g} asked for, but this machine has no GPU: training on the CPU")
        gpus = 0.0
    info = ensure_ray(num_cpus=max(1, int(cpus + 0.999)), num_gpus=local_gpu_count() or None)
    try:
        outcome = run_single_trial(cfg, args.out_dir, cpus, gpus)
    finally:
        shutdown_if_started(info)
    if outcome.error:
        print(f"geotune: trial failed: {outcome.error} (details: {outcome.trial_dir}/error.txt)", file=sys.stderr)
        return EXIT_FAILED
    m = outcome.metrics
    print(f"\nfinished: {m.get('epochs_run')} epochs ({m.get('stop_reason')}), {m.get('wall_time_s', 0):.1f} s")
    for key in ("val_accuracy", "test_accuracy", "val_loss", "test_loss", "test_macro_f1", "overfit_gap",
                "best_val_accuracy", "geodesic_ratio_mean", "flatness_calibrated", "flatness_calibrated_per_class",
                "intrinsic_dim_twonn", "silhouette"):
        if m.get(key) is not None:
            print(f"  {key:30s} {m[key]:.4f}")
    print(f"artifacts: {outcome.trial_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"geotune: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("geotune: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early
        sys.stdout = open(os.devnull, "w")
        return 0
    except Exception as exc:  # the study/cluster layer's own one-line errors
        from study.cluster import ClusterError

        if isinstance(exc, ClusterError):
            print(f"geotune: error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
