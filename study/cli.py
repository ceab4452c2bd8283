"""The ``geotune`` command line.

Verbs:
  run       a search space as a Ray Tune study (grid or Optuna, ASHA, local or cluster)
  resume    finish an interrupted study
  report    tables, figures and a browser page of a study
  compare   a regularized config against the same config without regularizer
  spaces    list the built-in search spaces
  train     one trial of a YAML config through Ray Tune
  geometry  latent-geometry metrics of any saved embeddings
  config    print the default (or resolved) config with every key explained
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import zipfile
from pathlib import Path

from study.config import ConfigError

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130  # the shell's code for a process ended by Ctrl-C (128 + SIGINT)


def _add_config_args(parser: argparse.ArgumentParser, config_required: bool) -> None:
    if config_required:
        parser.add_argument("config", help="YAML trial config (see 'geotune config' for every key)")
    else:
        parser.add_argument("--config", help="YAML file overriding the defaults")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config key, e.g. --set train.lr=0.01 (repeatable; wins over the file)")


def _add_study_args(parser: argparse.ArgumentParser, address_help: str) -> None:
    """What every verb that runs a study takes: where Ray is, and whether to write the report at the end."""
    parser.add_argument("--address", help=address_help)
    parser.add_argument("--no-report", action="store_true", help="do not write the report at the end")


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

    run = verbs.add_parser(
        "run", help="run a named search space (or your own module) as a Ray Tune study",
        description="Run every trial a search space plans (grid or Optuna), with ASHA early stopping where the "
                    "space declares it, on this machine or on a Ray cluster (--address). Prints Ray's trial table "
                    "and one line per finished trial, writes each trial's artifacts into the study directory, "
                    "and ends with a summary (failed trials included).")
    run.add_argument("space", help="name of a built-in space (see 'geotune spaces') or path to a .py defining SPACE")
    _add_config_args(run, config_required=False)
    run.add_argument("--storage", default="runs", help="folder or URI (s3://, gs://) holding study directories "
                                                       "(default: runs); on a cluster it must be shared by all nodes")
    run.add_argument("--name", help="study directory name under --storage (default: SPACE-date-time)")
    run.add_argument("--num-samples", type=int, help="Optuna spaces: trials to sample; grid spaces: seeds per variant")
    run.add_argument("--max-concurrent", type=int, help="at most this many trials at once")
    run.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default from the space); torch threads follow")
    run.add_argument("--gpus-per-trial", type=float,
                     help="GPUs per trial, fractions such as 0.25 share one GPU (default from the space; "
                          "0 with a notice where there is no GPU)")
    _add_study_args(run, "join this Ray cluster (host:port; default $RAY_ADDRESS) instead of a private local Ray")
    run.add_argument("--no-asha", action="store_true", help="do not stop trials early, even where the space uses ASHA")
    run.add_argument("--max-failures", type=int, default=2, help="retries of a trial after a crash (default 2)")
    run.add_argument("--dry-run", action="store_true", help="print the trial plan and resources; train nothing")
    run.set_defaults(handler=cmd_run)

    resume = verbs.add_parser(
        "resume", help="finish an interrupted study",
        description="Resume STUDY_DIR: finished trials are kept as they are, interrupted ones continue from their "
                    "last checkpoint, errored ones are retried, and an Optuna searcher continues from its state.")
    resume.add_argument("study_dir", help="the study directory of an interrupted 'geotune run'")
    _add_study_args(resume, "join this Ray cluster (default $RAY_ADDRESS) instead of a local Ray")
    resume.set_defaults(handler=cmd_resume)

    compare = verbs.add_parser(
        "compare", help="run CONFIG and the same config without regularizer side by side, and compare them",
        description="Run the config as given and the same config with regularizer 'none' (same seed, same data) "
                    "as one small study in OUT_DIR, then write OUT_DIR/comparison_report.json (final metrics of "
                    "both, absolute and percent differences, geometry and geodesic summaries side by side, the "
                    "train/val gap) and OUT_DIR/training_curves_comparison.png.")
    _add_config_args(compare, config_required=True)
    compare.add_argument("out_dir", help="new folder for both runs and the comparison")
    compare.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per run (default 1)")
    compare.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per run, fractions allowed")
    _add_study_args(compare, "join this Ray cluster instead of a private local Ray")
    compare.set_defaults(handler=cmd_compare)

    report = verbs.add_parser(
        "report", help="write STUDY_DIR/report/: tables, figures, REPORT.md and a self-contained index.html",
        description="Aggregate a study (finished, partial, interrupted or with failed trials) into "
                    "STUDY_DIR/report/: summary.csv (a row per trial), Markdown tables, group comparisons with "
                    "95%% confidence intervals, paired effects of each regularizer against its baseline "
                    "(comparison_report.json), figures, REPORT.md and index.html for a browser. Trains nothing.")
    report.add_argument("study_dir", help="a study directory (from 'geotune run', 'resume' or 'compare')")
    report.add_argument("--out", help="write the report here instead of STUDY_DIR/report")
    report.set_defaults(handler=cmd_report)

    spaces = verbs.add_parser(
        "spaces", help="list the built-in search spaces with their questions and trial counts",
        description="List the built-in search spaces: the question each answers, how many trials it plans and "
                    "whether ASHA stops trials early. 'geotune run SPACE --dry-run' shows one space's plan.")
    spaces.set_defaults(handler=cmd_spaces)

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


def cmd_spaces(args: argparse.Namespace) -> int:
    from analysis.tables import text_table
    from search_spaces.spec import builtin_space_names, load_space

    rows = []
    for name in builtin_space_names():
        space = load_space(name)
        rows.append((name, space.trial_count, "optuna" if space.is_optuna else "grid",
                     "asha" if space.asha else "-", space.question))
    print(text_table(["space", "trials", "search", "stopping", "question"], rows))
    print("\nrun one with 'geotune run SPACE' (add --dry-run to see its trials first); a path to your own "
          "module defining SPACE works too")
    return 0


def _user_overrides(args: argparse.Namespace) -> dict:
    from study.config import apply_overrides, read_yaml

    return apply_overrides(read_yaml(args.config) if args.config else {}, args.overrides)


def _start_ray_for(plan, address: str | None):
    from study.cluster import check_storage_shared, ensure_ray, notice

    info = ensure_ray(address=address)
    if plan.gpus_per_trial and not info.gpus:
        notice(f"--gpus-per-trial {plan.gpus_per_trial:g}: the Ray cluster has no GPU, so trials run on CPUs "
               "(gpus per trial set to 0)")
        plan.gpus_per_trial = 0.0
    if plan.cpus_per_trial > info.cpus:
        raise ConfigError(f"--cpus-per-trial {plan.cpus_per_trial:g}: the Ray cluster has only {info.cpus:g} CPUs")
    _check_devices(plan)
    if not info.started_here:
        check_storage_shared(plan.study_dir)
    return info


def _check_devices(plan) -> None:
    """Trials that must run on CUDA need a GPU share: known once the resources are."""
    from study.config import TrialConfig, merge, nest
    from trainables.trial import check_device

    for variant in plan.variants or [{}]:
        check_device(TrialConfig.from_dict(merge(plan.base, nest(variant))), plan.gpus_per_trial)


def _print_warnings(plan) -> None:
    from study.cluster import notice

    for warning in plan.warnings:
        notice(f"warning: {warning}")


def _interrupted(plan, results) -> bool:
    """One Ctrl-C: Ray stopped the trials gracefully and saved its state. Say so and how to go on."""
    from study.progress import unfinished_count

    unfinished = unfinished_count(results)
    if unfinished:
        print(f"geotune: interrupted: {unfinished} of {len(results)} trial(s) unfinished; continue them with: "
              f"geotune resume {plan.study_dir}", file=sys.stderr, flush=True)
    return bool(unfinished)


def _finish_study(plan, results, write_report: bool = True) -> int:
    from study.finalize import finalize_stopped
    from study.progress import summarize_results, summary_text

    if _interrupted(plan, results):
        return EXIT_INTERRUPTED  # no finalisation: the unfinished trials train on when resumed
    finalize_stopped(results, plan)
    rows = summarize_results(results, plan.metric)
    print("\n" + summary_text(rows, plan.metric, plan.mode))
    print(f"study directory: {plan.study_dir}")
    code = EXIT_FAILED if any(r.status == "failed" for r in rows) else 0
    if write_report:
        code = max(code, _report(plan.study_dir))
    return code


def _report(study_dir: str, out: str | None = None) -> int:
    """Write the report; a failure is one line and leaves the study's results untouched."""
    from analysis.report import write_report
    from study.tuner import is_uri

    if is_uri(study_dir):
        print(f"geotune: the report is written for local study directories; copy {study_dir} here and run "
              "'geotune report' on it", file=sys.stderr)
        return 0
    try:
        index = write_report(study_dir, out)
    except ConfigError:
        raise
    except Exception as exc:  # the study itself is complete: say why the report is missing, keep going
        print(f"geotune: the report could not be written ({type(exc).__name__}: {exc}); the study's results "
              f"are complete in {study_dir}", file=sys.stderr)
        return EXIT_FAILED
    print(f"report: {index}  (open it in a browser; REPORT.md beside it)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    folder = Path(args.study_dir).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"study directory '{folder}' does not exist")
    return _report(str(folder.resolve()), args.out)


def cmd_run(args: argparse.Namespace) -> int:
    from search_spaces.spec import load_space
    from study.cluster import local_gpu_count, shutdown_if_started
    from study.tuner import RunOptions, make_plan, plan_text, refuse_existing_results, run_study

    spec = load_space(args.space)
    options = RunOptions(storage=args.storage, name=args.name, num_samples=args.num_samples,
                         max_concurrent=args.max_concurrent, cpus_per_trial=args.cpus_per_trial,
                         gpus_per_trial=args.gpus_per_trial, asha=not args.no_asha, max_failures=args.max_failures)
    plan = make_plan(spec, _user_overrides(args), options)
    if args.dry_run:
        if plan.gpus_per_trial and not (args.address or os.environ.get("RAY_ADDRESS")) and not local_gpu_count():
            print(f"note: no GPU on this machine: trials would get 0 GPUs instead of {plan.gpus_per_trial:g}")
            plan.gpus_per_trial = 0.0
        print(plan_text(plan, spec))
        _print_warnings(plan)
        return 0
    refuse_existing_results(plan.study_dir, "study directory")
    _print_warnings(plan)
    info = _start_ray_for(plan, args.address)
    try:
        results = run_study(plan, spec)
        return _finish_study(plan, results, not args.no_report)
    finally:
        shutdown_if_started(info)


def cmd_compare(args: argparse.Namespace) -> int:
    from analysis.compare import TrialRecord, paired_comparison
    from analysis.figures import draw_curves_comparison, save_figure
    from analysis.tables import text_table
    from search_spaces.spec import StudySpec
    from study.cluster import shutdown_if_started
    from study.config import load_config
    from study.tuner import RunOptions, make_plan, refuse_existing_results, run_study, write_text

    cfg = load_config(args.config, args.overrides)
    if not cfg.regularizer.active:
        raise ConfigError(f"config key 'regularizer.name' = {cfg.regularizer.name}"
                          + ("" if cfg.regularizer.name == "none" else " (disabled or weight 0)")
                          + ": nothing to compare against the unregularized run; choose geodesic, geometry or "
                            "combined")
    refuse_existing_results(args.out_dir)
    user = cfg.to_dict()
    name = user["regularizer"].pop("name")
    spec = StudySpec(name="compare", question=f"What does the {name} regularizer change against no regularizer?",
                     base={}, grid=[{"regularizer.name": [name, "none"]}], seeds=[user["train"].pop("seed")],
                     metric="val_accuracy", mode="max", cpus_per_trial=args.cpus_per_trial,
                     gpus_per_trial=args.gpus_per_trial, module="geotune compare")
    out = Path(args.out_dir).expanduser().resolve()
    plan = make_plan(spec, user, RunOptions(storage=str(out.parent), name=out.name, max_failures=1))
    _print_warnings(plan)
    info = _start_ray_for(plan, args.address)
    try:
        results = run_study(plan, spec)
        code = _finish_study(plan, results, write_report=False)
    finally:
        shutdown_if_started(info)
    if code == EXIT_INTERRUPTED:
        return code
    by_name = {r.config["variant"].split(",")[0]: r.path for r in results}
    regularized = TrialRecord.load(by_name[f"name={name}"], name)
    baseline = TrialRecord.load(by_name["name=none"], "none")
    if not regularized.metrics or not baseline.metrics:
        print("geotune: a run failed, so there is no comparison to write", file=sys.stderr)
        return EXIT_FAILED
    report = paired_comparison(regularized, baseline, cfg.to_dict())
    write_text(str(out), "comparison_report.json", json.dumps(report, indent=2, default=float))
    save_figure(draw_curves_comparison([(name, regularized.history), ("none", baseline.history)],
                                       f"{name} vs no regularizer (seed {cfg.train.seed})"),
                out / "training_curves_comparison.png")
    from analysis.stats import SUMMARY_METRICS  # deferred: pandas is only needed for this table

    rows = [(key, d["regularized"], d["baseline"], d["absolute"], d["percent"])
            for key, d in report["differences"].items() if key in SUMMARY_METRICS or key == "val_accuracy"]
    print("\n" + text_table(["metric", name, "none", "difference", "percent"], rows))
    print(f"comparison: {out / 'comparison_report.json'}")
    if not args.no_report:
        code = max(code, _report(str(out)))
    return code


def cmd_resume(args: argparse.Namespace) -> int:
    from study.cluster import shutdown_if_started
    from study.tuner import StudyPlan, is_uri, resume_study

    study_dir = args.study_dir if is_uri(args.study_dir) else str(Path(args.study_dir).expanduser().resolve())
    plan = StudyPlan.load(study_dir)
    if plan.kind == "train":
        return _train(plan, resume=True)
    info = _start_ray_for(plan, args.address)  # may set gpus_per_trial to 0 where the cluster has no GPU
    try:
        results = resume_study(plan)
        return _finish_study(plan, results, not args.no_report)
    finally:
        shutdown_if_started(info)


MAX_LATENTS_BYTES = 2 * 2**30   # geotune geometry refuses .npz files that unpack to more
MAX_LATENT_VALUE = 1e100         # beyond this, float64 squared distances overflow


def load_latents(path: str) -> tuple:
    """(embeddings, labels or None, class names or None) from an .npz file; errors name the file."""
    import numpy as np

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"latents file '{file}' does not exist")
    try:
        with zipfile.ZipFile(file) as archive:  # sizes first: a small file may decompress to gigabytes
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise ConfigError(f"latents file '{file}' is not a readable .npz archive ({type(exc).__name__})") from None
    if unpacked > MAX_LATENTS_BYTES:
        raise ConfigError(f"latents file '{file}' unpacks to {unpacked / 2**30:.1f} GiB; geotune geometry reads at most "
                          f"{MAX_LATENTS_BYTES / 2**30:.0f} GiB (subsample the embeddings first)")
    try:
        archive = np.load(file, allow_pickle=False)
        arrays = {name: archive[name] for name in archive.files}
    except Exception as exc:
        raise ConfigError(f"latents file '{file}' is not a readable .npz archive ({type(exc).__name__})") from None
    if "embeddings" not in arrays:
        raise ConfigError(f"latents file '{file}' has no array 'embeddings' (it has: {', '.join(arrays) or 'none'})")
    x = arrays["embeddings"]
    if x.ndim != 2 or len(x) < 3 or x.shape[1] < 2 or x.dtype.kind not in "iuf":
        raise ConfigError(f"latents file '{file}': 'embeddings' must be a real-valued (N, D) array with N >= 3 and "
                          f"D >= 2, got shape {x.shape} of {x.dtype}")
    if not np.isfinite(x).all():
        raise ConfigError(f"latents file '{file}': 'embeddings' contains NaN or infinite values")
    largest = float(np.abs(x).max())
    if largest > MAX_LATENT_VALUE:
        raise ConfigError(f"latents file '{file}': 'embeddings' reach {largest:.3g}; squared distances would "
                          f"overflow above {MAX_LATENT_VALUE:g} (rescale them: the metrics are scale-free)")
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
    from study.cluster import local_gpu_count, notice
    from study.config import load_config
    from study.tuner import refuse_existing_results, train_plan
    from trainables.trial import check_config

    cfg = load_config(args.config, args.overrides)
    warnings = check_config(cfg)
    cpus = args.cpus if args.cpus is not None else float(os.cpu_count() or 1)
    gpus = args.gpus if args.gpus is not None else (1.0 if local_gpu_count() else 0.0)
    if not (math.isfinite(cpus) and cpus > 0):
        raise ConfigError(f"--cpus {cpus:g}: must be a number > 0")
    if not math.isfinite(gpus) or gpus < 0:
        raise ConfigError(f"--gpus {gpus:g}: must be a number >= 0")
    if gpus and not local_gpu_count():
        notice(f"--gpus {gpus:g} asked for, but this machine has no GPU: training on the CPU")
        gpus = 0.0
    refuse_existing_results(args.out_dir)
    plan = train_plan(cfg, args.out_dir, cpus, gpus)
    plan.warnings = warnings
    _check_devices(plan)
    _print_warnings(plan)
    return _train(plan, resume=False)


def _train(plan, resume: bool) -> int:
    """Run or resume the one trial of a `geotune train` folder and print what it gave."""
    from study.cluster import ensure_ray, local_gpu_count, shutdown_if_started
    from study.tuner import run_single_trial

    cpus = plan.cpus_per_trial
    info = ensure_ray(num_cpus=max(1, math.ceil(cpus)), num_gpus=local_gpu_count() or None)
    try:
        if plan.gpus_per_trial and not info.gpus:
            plan.gpus_per_trial = 0.0
        _check_devices(plan)
        outcome = run_single_trial(plan, resume=resume)
    finally:
        shutdown_if_started(info)
    if outcome.interrupted:
        print("geotune: interrupted; the trial continues from its last checkpoint with: "
              f"geotune resume {plan.study_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if outcome.error:
        print(f"geotune: trial failed: {outcome.error} (details: {outcome.trial_dir}/error.txt)", file=sys.stderr)
        return EXIT_BAD_INPUT if is_config_error(outcome.error) else EXIT_FAILED
    m = outcome.metrics
    print(f"\nfinished: {m.get('epochs_run')} epochs ({m.get('stop_reason')}), {m.get('wall_time_s', 0):.1f} s")
    for key in ("val_accuracy", "test_accuracy", "val_loss", "test_loss", "test_macro_f1", "overfit_gap",
                "best_val_accuracy", "flatness_calibrated_per_class", "participation_ratio_per_class",
                "top_pc_share_per_class", "intrinsic_dim_twonn", "silhouette", "knn_accuracy",
                "flatness_calibrated", "geodesic_ratio_mean"):
        if isinstance(m.get(key), (int, float)):
            print(f"  {key:30s} {m[key]:.4f}")
    for warning in m.get("warnings") or []:
        print(f"  warning: {warning}")
    print(f"artifacts: {outcome.trial_dir}")
    return 0


def is_config_error(line: str) -> bool:
    """Whether a trial's one-line error is one of geotune's input errors (ConfigError or a subclass)."""
    from trainables.data import DatasetFileError, DatasetNotFoundError

    names = {cls.__name__ for cls in (ConfigError, DatasetNotFoundError, DatasetFileError)}
    return line.split(":", 1)[0].strip() in names


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
