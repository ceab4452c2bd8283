"""When a study's fit returns: interrupted or done, stopped trials finalised, the summary, the report, the exit code."""

from __future__ import annotations

import sys

from geotune.analysis.report import write_report
from geotune.errors import EXIT_FAILED, EXIT_INTERRUPTED, ConfigError
from geotune.layout import StudyPlan, TrialStatus
from geotune.storage import is_uri
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
    if interrupted(plan, results):
        return EXIT_INTERRUPTED  # no finalisation: the unfinished trials train on when resumed
    # deferred: finalizing imports torch and Ray (about 4 s), which `geotune report` alone never needs
    from geotune.study.finalize import finalize_stopped_trials

    finalize_stopped_trials(results, plan)
    rows = summarize_results(results, plan.metric)
    print("\n" + summary_text(rows, plan.metric, plan.mode))
    print(f"study directory: {plan.study_dir}")
    code = EXIT_FAILED if any(r.status is TrialStatus.FAILED for r in rows) else 0
    if with_report:
        code = max(code, report_study(plan.study_dir))
    return code


def report_study(study_dir: str, out: str | None = None) -> int:
    """Write the report; a failure is one line and leaves the study's results untouched."""
    if is_uri(study_dir):
        print(
            f"geotune: the report is written for local study directories; copy {study_dir} here and run "
            "'geotune report' on it",
            file=sys.stderr,
        )
        return 0
    try:
        index = write_report(study_dir, out)
    except ConfigError:
        raise
    except Exception as exc:  # the study itself is complete: say why the report is missing, keep going
        print(
            f"geotune: the report could not be written ({type(exc).__name__}: {exc}); the study's results "
            f"are complete in {study_dir}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(f"report: {index}  (open it in a browser; REPORT.md beside it)")
    return 0
