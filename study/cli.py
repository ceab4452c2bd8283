"""The ``geotune`` command line.

Verbs:
  run       a search space as a Ray Tune study (grid or Optuna, ASHA, local or cluster)
  resume    finish an interrupted study
  report    tables, figures and a browser page of a study
  compare   a regularized config against the same config without regularizer
  spaces    list the built-in search spaces
  train     one trial of a YAML config (in this process, or through Ray Tune with --ray)
  predict   the top-k classes of image files by a finished trial's model
  geometry  latent-geometry metrics of any saved embeddings
  config    print the default (or resolved) config with every key explained
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
from pathlib import Path

from geotune import __version__
from geotune.config import commented_defaults, reference_markdown
from geotune.config_loading import (
    ASSIGNMENT,
    apply_overrides,
    load_config,
    merge,
    parse_value,
    read_yamls,
    split_assignment,
)
from geotune.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, ConfigError, is_input_error
from geotune.layout import COMPARISON_FILE, ERROR_FILE, LATENTS_FILE, MODEL_FILE, PlanKind, StudyPlan
from geotune.metric_names import METRICS, TRAIN_PRINTED
from geotune.storage import is_uri
from geotune.study.cluster import DEFAULT_PENDING_TIMEOUT_S, notice

# Each verb imports what it runs inside its handler: `geotune --help`, `config` and `spaces` answer at once
# instead of loading torch (1.8 s), Ray (1 s) and pandas for nothing. Those imports say "deferred: start-up".


def _add_config_args(parser: argparse.ArgumentParser, config_required: bool) -> None:
    if config_required:
        parser.add_argument("config", help="YAML trial config (see 'geotune config' for every key)")
    parser.add_argument(
        "--config",
        dest="more_configs",
        action="append",
        default=[],
        metavar="FILE",
        help=("a further YAML file over CONFIG" if config_required else "YAML file overriding the defaults")
        + " (repeatable; later files win)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config key, e.g. --set train.lr=0.01 (repeatable; wins over the files); a bare "
        "SECTION.KEY=VALUE argument does the same",
    )


def config_files(args: argparse.Namespace) -> list[str]:
    """The YAML files of a verb in the order they apply: the positional CONFIG first, then each --config."""
    first = [args.config] if isinstance(getattr(args, "config", None), str) else []
    return first + list(args.more_configs)


def _add_study_args(parser: argparse.ArgumentParser, address_help: str) -> None:
    """What every verb that runs a study takes: where Ray is, and whether to write the report at the end."""
    parser.add_argument("--address", help=address_help)
    parser.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    _add_no_figures(parser)


def _add_no_figures(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-figures",
        action="store_true",
        help="write the report's findings and tables without drawing its figures (quicker; "
        "'geotune report' draws them later)",
    )


class Renamed(argparse.Action):
    """An old spelling of a flag: sets the same value and says the new name once on stderr."""

    def __call__(self, parser, namespace, values, option_string=None):
        new = f"{option_string}-per-trial"
        print(f"geotune: {option_string} is now {new} (the old spelling goes in 0.4)", file=sys.stderr)
        setattr(namespace, self.dest, values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geotune",
        description="Does shaping the geometry of a CNN's latent space change what it learns? "
        "geotune trains classifiers with latent-geometry regularizers as Ray Tune trials.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'geotune VERB --help' for the options of each verb.",
    )
    parser.add_argument("--version", action="version", version=f"geotune {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    train = verbs.add_parser(
        "train",
        help="train one trial of CONFIG, writing its artifacts to OUT_DIR/trial",
        description="Train one classifier from a YAML config on this machine, in this process (no Ray start-up; "
        "--ray runs it as a Ray Tune trial instead, with the same results). Writes metrics.json, "
        "training_history.json, plots, latents.npz, model.pt and Tune's result.json/progress.csv/TensorBoard "
        "files to OUT_DIR/trial and prints the key metrics. Ctrl-C stops it resumably (geotune resume OUT_DIR).",
    )
    _add_config_args(train, config_required=True)
    train.add_argument("out_dir", help="new folder for the results (an existing non-empty folder is refused)")
    train.add_argument(
        "--cpus-per-trial", dest="cpus", type=float, help="CPUs for the trial (default: all of this machine)"
    )
    train.add_argument(
        "--gpus-per-trial",
        dest="gpus",
        type=float,
        help="GPUs for the trial, fractions allowed (default: 1 if a GPU is visible, else 0)",
    )
    # the spellings of 0.2, kept for one release: the same flags as `run` and `compare` now
    train.add_argument("--cpus", dest="cpus", type=float, action=Renamed, help=argparse.SUPPRESS)
    train.add_argument("--gpus", dest="gpus", type=float, action=Renamed, help=argparse.SUPPRESS)
    train.add_argument(
        "--ray",
        action="store_true",
        help="run the trial through Ray Tune (a local Ray instance) rather than in this process",
    )
    train.add_argument(
        "--verbose", action="store_true", help="with --ray: Ray's own status tables and worker log lines too"
    )
    _add_logger(train, "; the trial then runs through Ray Tune (as --ray), whose callbacks log it")
    train.set_defaults(handler=cmd_train)

    run = verbs.add_parser(
        "run",
        help="run a named search space (or your own module) as a Ray Tune study",
        description="Run every trial a search space plans (grid or Optuna), with ASHA early stopping where the "
        "space declares it, on this machine or on a Ray cluster (--address). Prints a progress line (Ray's "
        "trial table with --verbose) and one line per finished trial, writes each trial's artifacts into the "
        "study directory, and ends with a summary (failed trials included).",
    )
    run.add_argument(
        "space",
        nargs="?",
        help="name of a built-in space (see 'geotune spaces') or path to a .py defining SPACE; "
        "leave it out to run a grid of --sweep values over --config",
    )
    _add_config_args(run, config_required=False)
    run.add_argument(
        "-m",
        "--sweep",
        action="append",
        default=[],
        metavar="SECTION.KEY=V1,V2",
        help="vary a key over these values: every combination of the sweeps (times the space's own grid, if "
        "a space is named), times --seeds (repeatable)",
    )
    run.add_argument("--seeds", type=int, help="grid spaces and sweeps: seeds 0..N-1 for every variant")
    run.add_argument(
        "--reuse",
        nargs="+",
        default=[],
        metavar="STUDY_DIR",
        help="take every planned trial whose resolved config (seed included) already finished in one of these "
        "studies from there (linked into the new study) instead of training it again",
    )
    _add_logger(run)
    run.add_argument(
        "--verbose", action="store_true", help="Ray's trial table every 30 s instead of geotune's progress line"
    )
    run.add_argument(
        "--storage",
        default="runs",
        help="folder or URI (s3://, gs://) holding study directories "
        "(default: runs); on a cluster it must be shared by all nodes",
    )
    run.add_argument("--name", help="study directory name under --storage (default: SPACE-date-time)")
    run.add_argument("--num-samples", type=int, help="Optuna spaces: trials to sample; grid spaces: as --seeds")
    run.add_argument("--max-concurrent", type=int, help="at most this many trials at once")
    run.add_argument(
        "--cpus-per-trial", type=float, help="CPUs per trial (default from the space); torch threads follow"
    )
    run.add_argument(
        "--gpus-per-trial",
        type=float,
        help="GPUs per trial, fractions such as 0.25 share one GPU (default from the space; "
        "0 with a notice where there is no GPU)",
    )
    _add_study_args(run, "join this Ray cluster (host:port; default $RAY_ADDRESS) instead of a private local Ray")
    run.add_argument("--no-asha", action="store_true", help="do not stop trials early, even where the space uses ASHA")
    run.add_argument(
        "--pareto",
        action="store_true",
        help="Optuna spaces that declare two objectives (optuna_geodesic: val_accuracy up, per-class flatness "
        "down): search both at once, without ASHA; the report draws the Pareto front",
    )
    run.add_argument("--max-failures", type=int, default=2, help="retries of a trial after a crash (default 2)")
    _add_pending_timeout(run)
    run.add_argument("--dry-run", action="store_true", help="print the trial plan and resources; train nothing")
    run.set_defaults(handler=cmd_run)

    resume = verbs.add_parser(
        "resume",
        help="finish an interrupted study",
        description="Resume STUDY_DIR: finished trials are kept as they are, interrupted ones continue from their "
        "last checkpoint, errored ones are retried, and an Optuna searcher continues from its state.",
    )
    resume.add_argument("study_dir", help="the study directory of an interrupted 'geotune run'")
    _add_study_args(resume, "join this Ray cluster (default $RAY_ADDRESS) instead of a local Ray")
    resume.add_argument(
        "--verbose", action="store_true", help="Ray's trial table every 30 s instead of geotune's progress line"
    )
    _add_pending_timeout(resume)
    resume.set_defaults(handler=cmd_resume)

    compare = verbs.add_parser(
        "compare",
        help="run CONFIG and the same config without regularizer (or at two settings of a key) and compare them",
        description="Run the config as given and the same config with regularizer 'none' (same seed, same data) "
        "as one small study in OUT_DIR, then write OUT_DIR/comparison_report.json (final metrics of "
        "both, absolute and percent differences, geometry and geodesic summaries side by side, the "
        "train/val gap) and OUT_DIR/training_curves_comparison.png.",
    )
    _add_config_args(compare, config_required=True)
    compare.add_argument("out_dir", help="new folder for both runs and the comparison")
    compare.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per run (default 1)")
    compare.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per run, fractions allowed")
    compare.add_argument(
        "--vary",
        metavar="KEY=A,B",
        help="compare the config at KEY=B against KEY=A (the reference) instead of the regularizer against none, "
        "e.g. model.batch_norm=false,true",
    )
    _add_study_args(compare, "join this Ray cluster instead of a private local Ray")
    _add_logger(compare)
    compare.set_defaults(handler=cmd_compare)

    report = verbs.add_parser(
        "report",
        help="write STUDY_DIR/report/: tables, figures, REPORT.md and a self-contained index.html",
        description="Aggregate a study (finished, partial, interrupted or with failed trials) into "
        "STUDY_DIR/report/: summary.csv (a row per trial), Markdown tables, group comparisons with "
        "95%% confidence intervals, paired effects of each regularizer against its baseline "
        "(comparison_report.json), figures, REPORT.md and index.html for a browser. Trains nothing.",
    )
    report.add_argument(
        "study_dir",
        nargs="+",
        help="a study directory (from 'geotune run', 'resume' or 'compare'); several are reported as one",
    )
    report.add_argument(
        "--out", help="write the report here instead of STUDY_DIR/report (several studies: the first's report_combined)"
    )
    report.add_argument(
        "--detect",
        action="append",
        default=[],
        metavar="METRIC=CHANGE",
        help="also print (and add to the report) the seeds each paired effect on METRIC needs to detect a change "
        "of CHANGE with 80%% power, e.g. test_accuracy=0.01 (repeatable)",
    )
    report.add_argument(
        "--strict",
        action="store_true",
        help="exit 2 when part of a study could not be read (a damaged study.json); the report is written anyway",
    )
    _add_no_figures(report)
    report.set_defaults(handler=cmd_report)

    spaces = verbs.add_parser(
        "spaces",
        help="list the built-in search spaces with their questions and trial counts",
        description="List the built-in search spaces: the question each answers, how many trials it plans and "
        "whether ASHA stops trials early. 'geotune run SPACE --dry-run' shows one space's plan.",
    )
    spaces.set_defaults(handler=cmd_spaces)

    predict = verbs.add_parser(
        "predict",
        help="classify image files with a finished trial's model",
        description="Print the top-k classes with their probabilities (softmax or sparsemax, as the model was "
        "trained) for each image, and draw them in a grid PNG. Images are converted as the training data "
        "was (grey or RGB, resized to the model's input size) using the trial folder's preprocessing.json; "
        "files that cannot be read are reported and skipped. A segmentation trial writes a mask PNG per image "
        "(OUT/NAME_mask.png) and prints each class's share of its pixels.",
    )
    predict.add_argument("trial_dir", help="a finished trial folder (or the folder 'geotune train' wrote)")
    predict.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files, or folders of them")
    predict.add_argument("--top-k", type=int, default=3, help="classes shown per image (default 3)")
    predict.add_argument(
        "--out", default=".", help=f"folder for the grid PNG predictions.png (default: here; {GRID_MAX} images at most)"
    )
    predict.add_argument("--json", action="store_true", help="one JSON object per image: file, top_k")
    _add_trust_code(predict)
    predict.set_defaults(handler=cmd_predict)

    export = verbs.add_parser(
        "export",
        help="export a finished trial's model to ONNX or TorchScript, the normalisation inside",
        description="Write a finished trial's kept model as ONNX (extra 'onnx') or TorchScript: "
        "input images N x C x H x W scaled to [0, 1] (dynamic N for ONNX), output the logits (per pixel for "
        "segmentation), the training "
        "normalisation inside. The export is checked against PyTorch on seeded random images of the model's "
        "input size; a mismatch exits 1.",
    )
    export.add_argument("trial_dir", help="a finished trial folder (or the folder 'geotune train' wrote)")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="onnx", help="onnx (default) or torchscript")
    export.add_argument("--out", help="the file to write (default: model.onnx or model.torchscript.pt in the trial)")
    _add_trust_code(export)
    export.set_defaults(handler=cmd_export)

    geometry = verbs.add_parser(
        "geometry",
        help="measure the latent geometry of saved embeddings (any latents.npz)",
        description="Compute geodesic flatness (raw and calibrated against a flat reference), intrinsic "
        "dimension (TwoNN, MLE), silhouette, linear separability, kNN accuracy, PCA dimensions and "
        "trustworthiness for an .npz file with arrays 'embeddings' (N x D) and, optionally, 'labels' "
        "(N); per class too when labels are present, and neural collapse (NC1-NC4; NC4 needs 'logits', NC3 a trial "
        "folder). Works for models trained anywhere.",
    )
    geometry.add_argument(
        "latents",
        help=".npz file with 'embeddings' and optionally 'labels', 'class_names' and 'logits'; or a trial folder "
        "(its latents.npz, and its linear head's weights for neural collapse's NC3)",
    )
    geometry.add_argument("--n-neighbors", type=int, default=10, help="k of the kNN graph (default 10)")
    geometry.add_argument(
        "--umap", action="store_true", help="judge trustworthiness of a UMAP projection instead of PCA (slower)"
    )
    geometry.add_argument("--seed", type=int, default=0, help="seed of sampling and projections (default 0)")
    geometry.add_argument(
        "--max-points",
        type=int,
        default=5_000,
        help="measure a seeded sample of at most this many embeddings (classes in proportion; default 5,000, "
        "about 10 s on 2 cores: the kNN-graph metrics grow faster than the points)",
    )
    geometry.add_argument("--json", action="store_true", help="print the full summary as JSON")
    geometry.set_defaults(handler=cmd_geometry)

    config = verbs.add_parser(
        "config",
        help="print the default config, or the resolved one, as commented YAML",
        description="Print every config key with its default and meaning. With --config/--set, print the "
        "resolved config instead (validated, as a trial would see it).",
    )
    _add_config_args(config, config_required=False)
    config.add_argument("--space", help="print this search space's base config, resolved, with the keys it varies")
    config.add_argument(
        "--markdown",
        action="store_true",
        help="print the reference as a Markdown table (the documentation site's config reference)",
    )
    config.set_defaults(handler=cmd_config)

    docs = verbs.add_parser(
        "docs",
        help="serve the documentation site on 127.0.0.1, or build it into a folder",
        description="Serve the documentation site (getting started, concepts, how-to guides, the recipe log, "
        "and the CLI, config and API references generated from the code) on http://127.0.0.1:PORT, rebuilding "
        "as its pages change. Needs a source checkout and the docs extra: pip install -e '.[docs]'.",
    )
    docs.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000)")
    docs.add_argument(
        "--build",
        metavar="DIR",
        type=Path,
        help="build the static site into DIR in strict mode (a broken link fails) instead of serving it",
    )
    docs.set_defaults(handler=cmd_docs)
    return parser


def _add_logger(parser: argparse.ArgumentParser, note: str = "") -> None:
    parser.add_argument(
        "--logger",
        action="append",
        default=[],
        metavar="mlflow[=URI]|wandb[=PROJECT]",
        help="also log params, per-epoch metrics and artifacts to MLflow (default: a SQLite store in the "
        f"study folder) or Weights & Biases (repeatable); TensorBoard files are always written{note}",
    )


def _add_pending_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pending-timeout",
        type=float,
        default=DEFAULT_PENDING_TIMEOUT_S,
        metavar="SECONDS",
        help=f"stop the study (exit 2, resumable) once its trials have waited this long with none running because "
        f"no node has what a trial needs (default {DEFAULT_PENDING_TIMEOUT_S:g}; 0 waits forever, e.g. for an "
        "autoscaling cluster)",
    )


def _pending_timeout(args: argparse.Namespace) -> float:
    if not (math.isfinite(args.pending_timeout) and args.pending_timeout >= 0):
        raise ConfigError(f"--pending-timeout {args.pending_timeout:g}: must be a number of seconds >= 0")
    return args.pending_timeout


def _add_trust_code(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-code",
        action="store_true",
        help="allow a config.yaml whose model.type names your code (file.py:function, module:function): "
        "rebuilding the network imports it, so it runs",
    )


def cmd_config(args: argparse.Namespace) -> int:
    if args.markdown:
        print(reference_markdown(), end="")
    elif args.space:
        from geotune.search_spaces.space import load_space  # deferred: start-up

        space = load_space(args.space)
        user = _user_overrides(args)
        base, _ = space.base_for_dataset(
            user.get("dataset", {}).get("name") if isinstance(user.get("dataset"), dict) else None
        )
        resolved = load_config(None, None, base=merge(base, user))
        varied = ", ".join(space.varied_keys()) or "nothing (one config)"
        print(f"# space '{space.name}': the base config every trial starts from (with --config/--set applied)")
        print(f"# the space varies: {varied}")
        print(resolved.to_yaml(), end="")
    elif args.more_configs or args.overrides:
        print(load_config(config_files(args), args.overrides).to_yaml(), end="")
    else:
        print(commented_defaults(), end="")
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    from geotune.study import docs_site  # deferred: MkDocs is an optional extra

    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: a port is 1..65535")
    if args.build is None:
        docs_site.serve_site(args.port)
        return 0
    try:
        index = docs_site.build_site(args.build)
    except RuntimeError as exc:
        print(f"geotune: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"documentation site: {index}  (open it in a browser)")
    return 0


def cmd_spaces(args: argparse.Namespace) -> int:
    from geotune.analysis.tables import text_table  # deferred: start-up
    from geotune.search_spaces.space import builtin_space_names, load_space  # deferred: start-up

    rows = []
    for name in builtin_space_names():
        space = load_space(name)
        rows.append(
            (
                name,
                space.trial_count,
                "optuna" if space.is_optuna else "grid",
                "asha" if space.asha else "-",
                space.question,
            )
        )
    print(text_table(["space", "trials", "search", "stopping", "question"], rows))
    print(
        "\nrun one with 'geotune run SPACE' (add --dry-run to see its trials first); a path to your own "
        "module defining SPACE works too"
    )
    return 0


def _user_overrides(args: argparse.Namespace) -> dict:
    return apply_overrides(read_yamls(config_files(args)), args.overrides)


def _print_warnings(plan: StudyPlan) -> None:
    for warning in plan.warnings:
        notice(f"warning: {warning}")


def cmd_report(args: argparse.Namespace) -> int:
    from geotune.study.reporting import report_study  # deferred: start-up

    folders = [Path(d).expanduser() for d in args.study_dir]
    for folder in folders:
        if not folder.is_dir():
            raise ConfigError(f"study directory '{folder}' does not exist")
    dirs = list(dict.fromkeys(str(f.resolve()) for f in folders))
    dirs_or_one = dirs if len(dirs) > 1 else dirs[0]
    return report_study(dirs_or_one, args.out, detect_sizes(args.detect), args.strict, not args.no_figures)


def detect_sizes(texts: list[str]) -> dict[str, float]:
    """--detect METRIC=CHANGE values: a known metric and a finite, non-zero change."""
    sizes = {}
    for text in texts:
        metric, raw = split_assignment(text, "--detect", "METRIC=CHANGE, e.g. test_accuracy=0.01")
        if metric not in METRICS:
            raise ConfigError(f"--detect {text!r}: unknown metric '{metric}' (see the report's tables for names)")
        value = parse_value(raw)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value == 0:
            raise ConfigError(f"--detect {text!r}: CHANGE must be a finite number other than 0")
        sizes[metric] = float(value)
    return sizes


def cmd_run(args: argparse.Namespace) -> int:
    from geotune.search_spaces.space import SWEEP_SPACE, load_space, with_sweeps  # deferred: start-up
    from geotune.study.finish import finish_without_training  # deferred: start-up
    from geotune.study.loggers import chosen_loggers  # deferred: start-up
    from geotune.study.plan import RunOptions, make_plan, plan_text, refuse_existing_results  # deferred: start-up
    from geotune.study.resources import dry_run_gpus  # deferred: start-up
    from geotune.study.reuse import find_reusable, link_reused  # deferred: start-up
    from geotune.study.run import run_study, train_and_finish  # deferred: start-up

    if args.space is None and not args.sweep:
        raise ConfigError("geotune run needs a SPACE (see 'geotune spaces') or at least one --sweep KEY=V1,V2")
    if args.seeds is not None and args.num_samples is not None:
        raise ConfigError("--seeds and --num-samples: give one of them")
    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds {args.seeds}: must be >= 1")
    timeout = _pending_timeout(args)
    user = _user_overrides(args)
    space = load_space(args.space) if args.space else None
    if args.sweep:
        space = with_sweeps(space, args.sweep, user)
    assert space is not None
    options = RunOptions(
        storage=args.storage,
        name=args.name,
        num_samples=args.seeds if args.seeds is not None else args.num_samples,
        max_concurrent=args.max_concurrent,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        asha=not args.no_asha,
        max_failures=args.max_failures,
        pareto=args.pareto,
    )
    if args.seeds is not None and space.is_optuna:
        raise ConfigError(f"--seeds {args.seeds}: space '{space.name}' is an Optuna search; use --num-samples")
    plan = make_plan(space, {} if space.name == SWEEP_SPACE else user, options)
    # a logger that cannot run fails here, before any training
    loggers = chosen_loggers(
        args.logger,
        ("logging.loggers", plan.base.get("logging", {}).get("loggers", [])),
        (f"space '{space.name}' loggers", space.loggers),
    )
    plan.loggers = [logger.text for logger in loggers]
    reused = find_reusable(plan, args.reuse) if args.reuse else {}
    if args.dry_run:
        refuse_existing_results(plan.study_dir, "study directory")  # the storage checks of a real run (no trace)
        dry_run_gpus(plan, args.address)
        print(plan_text(plan, space, reused))
        _print_warnings(plan)
        return 0
    refuse_existing_results(plan.study_dir, "study directory")
    _print_warnings(plan)
    if reused:
        link_reused(plan, reused)
        if len(reused) == plan.trial_count:
            notice(f"all {plan.trial_count} planned trials finished before: nothing to train")
            return finish_without_training(plan, not args.no_report, not args.no_figures)
    study = lambda: run_study(plan, space, verbose=args.verbose, pending_timeout_s=timeout)  # noqa: E731
    return train_and_finish(plan, args.address, study, not args.no_report, not args.no_figures)


def cmd_compare(args: argparse.Namespace) -> int:
    from geotune.study.compare import (  # deferred: start-up
        compare_plan,
        compared_levels,
        comparison_text,
        write_comparison,
    )
    from geotune.study.loggers import chosen_loggers  # deferred: start-up
    from geotune.study.plan import refuse_existing_results  # deferred: start-up
    from geotune.study.reporting import report_study  # deferred: start-up
    from geotune.study.run import run_study, train_and_finish  # deferred: start-up

    cfg = load_config(config_files(args), args.overrides)
    # a tracker that cannot run fails here, before any training
    loggers = chosen_loggers(args.logger, ("logging.loggers", cfg.logging.loggers))
    plan, space = compare_plan(cfg, args.out_dir, args.cpus_per_trial, args.gpus_per_trial, args.vary)
    plan.loggers = [logger.text for logger in loggers]
    refuse_existing_results(args.out_dir)
    _print_warnings(plan)
    code = train_and_finish(plan, args.address, lambda: run_study(plan, space), with_report=False)
    if code == EXIT_INTERRUPTED:
        return code
    report = write_comparison(plan)
    if report is None:
        print("geotune: a run failed, so there is no comparison to write", file=sys.stderr)
        return EXIT_FAILED
    print("\n" + comparison_text(report, *compared_levels(plan)))
    print(f"comparison: {Path(plan.study_dir) / COMPARISON_FILE}")
    if not args.no_report:
        code = max(code, report_study(plan.study_dir, draw_figures=not args.no_figures))
    return code


def cmd_resume(args: argparse.Namespace) -> int:
    from geotune.study.finish import close_study  # deferred: start-up
    from geotune.study.progress import finished_trials  # deferred: start-up
    from geotune.study.run import resume_study, train_and_finish  # deferred: start-up

    study_dir = args.study_dir if is_uri(args.study_dir) else str(Path(args.study_dir).expanduser().resolve())
    plan = StudyPlan.load(study_dir)
    if plan.kind is PlanKind.TRAIN:
        return _train(plan, resume=True, through_ray=False)
    timeout = _pending_timeout(args)
    if not is_uri(study_dir) and len(finished_trials(study_dir)) >= plan.to_train:
        # nothing to train: no Ray, no Tune state rewritten; the report (and trackers) as a finished study's end
        notice(f"all {plan.to_train} trials of {study_dir} have finished: nothing to train")
        return close_study(plan, not args.no_report, not args.no_figures)
    fit = functools.partial(resume_study, plan, args.verbose, timeout)  # called once Ray is up
    return train_and_finish(plan, args.address, fit, not args.no_report, not args.no_figures)


def cmd_geometry(args: argparse.Namespace) -> int:
    from geotune.analysis.measure import measure_embeddings  # deferred: start-up (numpy, scipy)
    from geotune.analysis.tables import collapse_text, geometry_text  # deferred: start-up
    from geotune.latents_file import read_latents  # deferred: start-up (numpy)

    if args.n_neighbors < 2:
        raise ConfigError(f"--n-neighbors {args.n_neighbors}: must be >= 2")
    if not 0 <= args.seed < 2**32:
        raise ConfigError(f"--seed {args.seed}: must be in 0..2^32-1")
    if args.max_points < 100:
        raise ConfigError(f"--max-points {args.max_points}: must be >= 100")
    folder = Path(args.latents) if Path(args.latents).is_dir() else None
    if folder is not None:  # a trial folder: its latents, and its linear head's weights for NC3
        args.latents = str(folder / LATENTS_FILE)
    x, labels, names, logits = read_latents(args.latents)
    measured = measure_embeddings(
        x,
        labels,
        class_names=names,
        logits=logits,
        head_weight=head_weight(folder / MODEL_FILE) if folder is not None and labels is not None else None,
        n_neighbors=args.n_neighbors,
        max_points=args.max_points,
        seed=args.seed,
        umap=args.umap,
    )
    if measured.n_measured < measured.n_points:  # the graph metrics grow faster than the points
        print(
            f"geotune: measuring a seeded sample of {measured.n_measured:,} of the {measured.n_points:,} embeddings"
            f"{' (classes in proportion)' if labels is not None else ''}; --max-points sets the cap",
            file=sys.stderr,
        )
    summary, collapse = measured.geometry, measured.collapse
    if args.json:
        out = {"metrics": measured.metrics, "summary": summary.to_dict()}
        if collapse is not None:
            out["neural_collapse"] = collapse.to_dict()
        print(json.dumps(out, indent=2, default=float))
        return 0
    print(geometry_text(summary, args.latents))
    if collapse is not None:
        print("\n" + collapse_text(collapse))
    return 0


def head_weight(model_file: Path):
    """The (classes, D) weights of a trial's linear head from its model.pt (weights only), or None."""
    import torch  # deferred: start-up (torch); only a trial folder's NC3 needs it

    if not model_file.is_file():
        return None
    try:
        state = torch.load(model_file, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file: said in one line, like every unreadable input
        raise ConfigError(f"'{model_file}' is not a readable weights file ({type(exc).__name__})") from None
    weight = state.get("head.weight") if isinstance(state, dict) else None
    return weight.float().numpy() if isinstance(weight, torch.Tensor) and weight.dim() == 2 else None


GRID_MAX = 64  # images drawn in predictions.png; more stop being readable


def cmd_predict(args: argparse.Namespace) -> int:
    from geotune.analysis.figures import draw_labelled_images, save_figure  # deferred: start-up (matplotlib)
    from geotune.trainables.predict import (  # deferred: start-up (torch)
        Segmentation,
        grid_columns,
        grid_title,
        image_files,
        load_trained,
        mask_colours,
        predict_files,
    )

    if args.top_k < 1:
        raise ConfigError(f"--top-k {args.top_k}: must be >= 1")
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out '{out}' is a file; give a folder for predictions.png")
    trained = load_trained(args.trial_dir, trust_code=args.trust_code)
    files, missing = image_files(args.inputs)
    for path, why in missing:
        print(f"geotune: skipped '{path}': {why}", file=sys.stderr)
    shown: list = []  # the converted images drawn in the grid
    titles: list[str] = []
    predicted = 0
    segmenting = trained.preprocessing.task == "segmentation"
    if segmenting:  # each mask is written as it comes: the folder first
        _make_out(out)
        colours = mask_colours(len(trained.preprocessing.class_names), trained.preprocessing.dataset)
    written: set[str] = set()
    for prediction, image, problem in predict_files(trained, files, args.top_k):
        if problem is not None:
            print(f"geotune: skipped '{problem[0]}': {problem[1]}", file=sys.stderr)
            continue
        assert prediction is not None and image is not None
        predicted += 1
        if isinstance(prediction, Segmentation):
            name = f"{prediction.file.stem}_mask.png"
            name = name if name not in written else f"{prediction.file.stem}_{predicted}_mask.png"
            written.add(name)
            _write_mask(out / name, prediction.mask, colours)
            print(json.dumps(prediction.to_dict(out / name)) if args.json else prediction.line(out / name), flush=True)
            continue
        print(json.dumps(prediction.to_dict()) if args.json else prediction.line(), flush=True)
        if len(shown) < GRID_MAX:
            shown.append(image)
            titles.append(grid_title(prediction))
    if not predicted:
        raise ConfigError(f"no readable image among {', '.join(map(str, args.inputs))}")
    if segmenting:
        return 0
    _make_out(out)
    grid = save_figure(draw_labelled_images(shown, titles, grid_columns(len(shown))), out / "predictions.png")
    first = f" (the first {GRID_MAX} of {predicted})" if predicted > GRID_MAX else ""
    print(f"grid of the predictions{first}: {grid}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _make_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out '{out}' cannot be made ({exc.strerror or type(exc).__name__})") from None


def _write_mask(path: Path, mask, colours) -> None:
    """A mask as a palette PNG: each pixel's value is its class index, shown in the class's colour."""
    from PIL import Image  # deferred: start-up; only predict writes images

    image = Image.fromarray(mask)  # mode L; the palette makes it P, the values staying the class indices
    image.putpalette(colours.reshape(-1).tolist())
    image.save(path)


EXPORT_FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}  # --format -> default file name
EXPORT_CHECK_IMAGES = 8  # seeded random images of the model's input size that an export must reproduce


def cmd_export(args: argparse.Namespace) -> int:
    import torch  # deferred: start-up (torch); only export and predict need it

    from geotune.trainables.export import export_onnx, export_torchscript, require_onnx  # deferred: start-up
    from geotune.trainables.predict import load_trained  # deferred: start-up (torch)

    if args.format == "onnx":
        require_onnx("geotune export --format onnx", "use --format torchscript")
    trained = load_trained(args.trial_dir, trust_code=args.trust_code)
    out = Path(args.out).expanduser() if args.out else trained.trial_dir / EXPORT_FORMATS[args.format]
    if out.is_dir():
        raise ConfigError(f"--out '{out}' is a folder; give the file to write")
    prep = trained.preprocessing
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (EXPORT_CHECK_IMAGES, *prep.input_shape), generator=generator, dtype=torch.uint8)
    mean, std = torch.tensor(prep.mean), torch.tensor(prep.std)
    export = export_onnx if args.format == "onnx" else export_torchscript
    try:
        checked = export(trained.model, mean, std, images, out)
    except OSError as exc:
        raise ConfigError(f"--out '{out}' cannot be written ({exc.strerror or type(exc).__name__})") from None
    diff, matches = (checked[f"{args.format}_max_abs_diff"], checked[f"{args.format}_matches"])
    verdict = "matches PyTorch" if matches else "DOES NOT match PyTorch"
    print(f"{out}: {verdict} (largest logit difference {diff:.2g} on {EXPORT_CHECK_IMAGES} seeded random images)")
    return 0 if matches else EXIT_FAILED


def cmd_train(args: argparse.Namespace) -> int:
    from geotune.study.loggers import chosen_loggers  # deferred: start-up
    from geotune.study.plan import refuse_existing_results, train_plan  # deferred: start-up
    from geotune.study.resources import check_devices, train_resources  # deferred: start-up
    from geotune.trainables.trial import check_config  # deferred: start-up

    fitted: list[str] = []
    cfg = load_config(config_files(args), args.overrides, notes=fitted)
    # a tracker that cannot run fails here, before any training
    loggers = chosen_loggers(args.logger, ("logging.loggers", cfg.logging.loggers))
    warnings = fitted + check_config(cfg)
    cpus, gpus = train_resources(args.cpus, args.gpus)
    refuse_existing_results(args.out_dir)
    plan = train_plan(cfg, args.out_dir, cpus, gpus)
    plan.warnings = warnings
    plan.loggers = [logger.text for logger in loggers]
    check_devices(plan)
    _print_warnings(plan)
    # a tracker logs through Ray Tune's callbacks: with --logger the trial runs as a Tune trial
    return _train(plan, resume=False, through_ray=args.ray or bool(loggers), verbose=args.verbose)


def _train(plan: StudyPlan, resume: bool, through_ray: bool, verbose: bool = False) -> int:
    """Run or resume the one trial of a `geotune train` folder and print what it gave.

    A resume always runs in-process: it continues from the newest checkpoint in the
    trial folder, which both ways of running write.
    """
    if through_ray:
        from geotune.study.cluster import shutdown_if_started  # deferred: start-up
        from geotune.study.resources import start_ray_for_train  # deferred: start-up
        from geotune.study.run import run_train  # deferred: start-up

        info = start_ray_for_train(plan)
        try:
            outcome = run_train(plan, verbose)
        finally:
            shutdown_if_started(info)
    else:
        from geotune.study.train_local import run_train_in_process  # deferred: start-up

        if not resume:
            plan.save()
        outcome = run_train_in_process(plan)
    if outcome.interrupted:
        print(
            f"geotune: interrupted; the trial continues from its last checkpoint with: geotune resume {plan.study_dir}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if outcome.error:
        print(f"geotune: trial failed: {outcome.error} (details: {outcome.trial_dir / ERROR_FILE})", file=sys.stderr)
        return EXIT_BAD_INPUT if is_input_error(outcome.error) else EXIT_FAILED
    m = outcome.metrics
    print(f"\nfinished: {m.get('epochs_run')} epochs ({m.get('stop_reason')}), {m.get('wall_time_s', 0):.1f} s")
    print(f"kept: {m.get('kept_reason')}")
    for key in TRAIN_PRINTED:
        if isinstance(m.get(key), (int, float)):
            print(f"  {key:30s} {m[key]:.4f}")
    for warning in m.get("warnings") or []:
        print(f"  warning: {warning}")
    print(f"artifacts: {outcome.trial_dir}")
    if plan.loggers:
        from geotune.study.loggers import log_trial_artifacts  # deferred: MLflow and W&B are optional

        for tracker, runs in log_trial_artifacts(plan).items():
            print(f"{tracker}: artifacts of {runs} trial(s) logged")
    return 0


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """argparse, plus bare SECTION.KEY=VALUE arguments anywhere after the verb, taken as --set overrides."""
    args, extra = parser.parse_known_args(argv)
    bare = [text for text in extra if ASSIGNMENT.match(text)]
    unknown = [text for text in extra if not ASSIGNMENT.match(text)]
    if getattr(args, "space", None) and ASSIGNMENT.match(args.space):  # `geotune run train.lr=0.1 --sweep ...`
        bare.insert(0, args.space)
        args.space = None
    if unknown or (bare and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or bare)}")
    if bare:
        args.overrides = list(args.overrides) + bare
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"geotune: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("geotune: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early
        sys.stdout = open(os.devnull, "w")
        return 0
    except Exception as exc:  # the study/cluster layer's own one-line errors
        from geotune.study.cluster import ClusterError  # deferred: start-up

        if isinstance(exc, ClusterError):
            print(f"geotune: error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
