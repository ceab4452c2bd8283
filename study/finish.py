"""When a study's fit returns: interrupted or done, stopped trials finalised, the summary, the report, the exit code."""

from __future__ import annotations

import sys
from pathlib import Path

from geotune.analysis.load import load_studies
from geotune.analysis.report import build_report, report_folder, save_report
from geotune.analysis.tables import text_table
from geotune.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, ConfigError
from geotune.layout import StudyPlan, TrialStatus
from geotune.storage import is_uri
from geotune.study.placement import PendingWatch, largest_node, stuck_message
from geotune.study.progress import summarize_results, summary_text, unfinished_count


def interrupted(plan: StudyPlan, results) -> bool:
    """One Ctrl-C: Ray stopped the trials gracefully and saved its state. Say so and how to go on."""
    unfinished = unfinished_count(results)
    if unfinished:
        print(
            f"geotune: interrupted: {unfinished} of {len(results)} trial(s) unfinished; continue them with: "
            f"geotune resume {plan.study_dir}",
            file=sys.stderr,
            flush=True,
        )
    return bool(unfinished)


def finish_study(plan: StudyPlan, results, with_report: bool = True) -> int:
    """Finalise, summarise and report a fitted study; returns the exit code."""
    watch = PendingWatch.last
    if watch is not None and watch.fired:  # no trial could be placed: what was missing, and the way on
        print(f"geotune: error: {stuck_message(plan, watch, largest_node())}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT  # like an interruption, nothing finalised: resume trains the waiting trials
    if interrupted(plan, results):
        return EXIT_INTERRUPTED  # no finalisation: the unfinished trials train on when resumed
    # deferred: finalizing imports torch and Ray (about 4 s), which `geotune report` alone never needs
    from geotune.study.stopped_trials import finalize_stopped_trials

    finalize_stopped_trials(results, plan)
    rows = summarize_results(results, plan.metric)
    print("\n" + summary_text(rows, plan.metric, plan.mode))
    code = EXIT_FAILED if any(r.status is TrialStatus.FAILED for r in rows) else 0
    return max(code, _close_study(plan, with_report))


def finish_without_training(plan: StudyPlan, with_report: bool = True) -> int:
    """A study whose every planned trial --reuse took from earlier studies: save the plan, then report."""
    plan.save()
    return _close_study(plan, with_report)


def _close_study(plan: StudyPlan, with_report: bool) -> int:
    """What every finished study does last: its reused trials named, trackers given the artifacts, the report."""
    if plan.reused:
        print(f"{len(plan.reused)} trial(s) reused from earlier studies (reused_* folders)")
    print(f"study directory: {plan.study_dir}")
    code = report_study(plan.study_dir) if with_report else 0
    if plan.loggers:  # after the report, which the trackers' study run keeps
        from geotune.study.loggers import log_trial_artifacts  # deferred: MLflow and W&B are optional

        for tracker, runs in log_trial_artifacts(plan).items():
            print(f"{tracker}: artifacts of {runs} trial(s) logged")
    return code


def report_study(
    study_dir: str | list[str], out: str | None = None, detect: dict[str, float] | None = None, strict: bool = False
) -> int:
    """Write the report (of one study, or of several as one); a failure is one line and leaves the studies'
    results untouched. ``detect`` (metric -> change): also print the seeds each effect needs to detect it.
    What could not be read (a damaged study.json) is a warning line each, and with ``strict`` exit code 2."""
    dirs = [study_dir] if isinstance(study_dir, str) else list(study_dir)
    remote = [d for d in dirs if is_uri(d)]
    if remote:
        print(
            f"geotune: the report is written for local study directories; copy {remote[0]} here and run "
            "'geotune report' on it",
            file=sys.stderr,
        )
        return 0
    try:
        study = load_studies(list[str | Path](dirs))
        report = build_report(study, detect)
        index = save_report(report, report_folder(dirs, out))
    except ConfigError:
        raise
    except Exception as exc:  # the study itself is complete: say why the report is missing, keep going
        print(
            f"geotune: the report could not be written ({type(exc).__name__}: {exc}); the study's results "
            f"are complete in {', '.join(dirs)}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    for table in report.tables if detect else []:
        if table.key == "detect":
            print(f"{table.title}\n{text_table(table.headers, table.rows)}\n({table.caption})")
    print(f"report: {index}  (open it in a browser; REPORT.md beside it)")
    for problem in study.problems:
        print(f"geotune: warning: {problem}", file=sys.stderr)
    return EXIT_BAD_INPUT if strict and study.problems else 0
