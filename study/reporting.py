"""`geotune report`: a study's report written from its folder, without Ray or torch (the report reads files)."""

from __future__ import annotations

import sys
from pathlib import Path

from geotune.analysis.load import load_studies
from geotune.analysis.report import build_report, report_folder, save_report
from geotune.analysis.tables import text_table
from geotune.errors import EXIT_BAD_INPUT, EXIT_FAILED, ConfigError
from geotune.storage import is_uri


def report_study(
    study_dir: str | list[str],
    out: str | None = None,
    detect: dict[str, float] | None = None,
    strict: bool = False,
    draw_figures: bool = True,
) -> int:
    """Write the report (of one study, or of several as one); a failure is one line and leaves the studies'
    results untouched. ``detect`` (metric -> change): also print the seeds each effect needs to detect it.
    What could not be read (a damaged study.json) is a warning line each, and with ``strict`` exit code 2.
    ``draw_figures`` False (--no-figures): the tables and findings only."""
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
        index = save_report(report, report_folder(dirs, out), draw_figures)
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
