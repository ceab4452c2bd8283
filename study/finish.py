"""When a study's fit returns: interrupted or done, stopped trials finalised, the summary, the report, the exit code."""

from __future__ import annotations

import sys

from geotune.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED
from geotune.layout import StudyPlan, TrialStatus
from geotune.study.placement import PendingWatch, largest_node, stuck_message
from geotune.study.progress import summarize_results, summary_text, unfinished_count
from geotune.study.reporting import report_study


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


def finish_study(plan: StudyPlan, results, with_report: bool = True, draw_figures: bool = True) -> int:
    """Finalise, summarise and report a fitted study (``draw_figures``: the report's); returns the exit code."""
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
    return max(code, close_study(plan, with_report, draw_figures))


def finish_without_training(plan: StudyPlan, with_report: bool = True, draw_figures: bool = True) -> int:
    """A study whose every planned trial --reuse took from earlier studies: save the plan, then report."""
    plan.save()
    return close_study(plan, with_report, draw_figures)


def close_study(plan: StudyPlan, with_report: bool, draw_figures: bool = True) -> int:
    """What every finished study does last: its reused trials named, trackers given the artifacts, the report."""
    if plan.reused:
        print(f"{len(plan.reused)} trial(s) reused from earlier studies (reused_* folders)")
    print(f"study directory: {plan.study_dir}")
    code = report_study(plan.study_dir, draw_figures=draw_figures) if with_report else 0
    if plan.loggers:  # after the report, which the trackers' study run keeps
        from geotune.study.loggers import log_trial_artifacts  # deferred: MLflow and W&B are optional

        for tracker, runs in log_trial_artifacts(plan).items():
            print(f"{tracker}: artifacts of {runs} trial(s) logged")
    return code
