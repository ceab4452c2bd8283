"""MkDocs hooks: the references that are generated from the code, so that they cannot drift from it.

- ``<!-- geotune:cli -->`` on a page becomes every verb's ``--help`` (from ``geotune.study.cli.build_parser``);
- ``<!-- geotune:config -->`` becomes the config table (from the schema, ``geotune.config.reference_markdown``);
- BENCHMARKS.md and CHANGELOG.md at the repository root join the site as ``benchmarks.md`` and ``changelog.md``
  (one copy of each: the root files are what GitHub and the sdist show).

The Python API page is rendered by mkdocstrings from the docstrings (``::: geotune.study.api...``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mkdocs.structure.files import File

from geotune.config import reference_markdown
from geotune.study.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
ROOT_PAGES = {"BENCHMARKS.md": "benchmarks.md", "CHANGELOG.md": "changelog.md"}
HELP_WIDTH = "100"  # argparse wraps to $COLUMNS: one width, so the page does not depend on the builder's terminal


def cli_reference() -> str:
    """The top-level help, then a section per verb with its one-line purpose and its full --help."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH
    try:
        parser = build_parser()
        verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        purposes = {choice.dest: choice.help for choice in verbs._choices_actions}
        parts = ["```text", parser.format_help().rstrip(), "```", ""]
        for name, sub in verbs.choices.items():
            parts += [f"## geotune {name}", "", f"{purposes.get(name, '')}.", "", "```text"]
            parts += [sub.format_help().rstrip(), "```", ""]
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved
    return "\n".join(parts)


GENERATED = {"<!-- geotune:cli -->": cli_reference, "<!-- geotune:config -->": reference_markdown}


def on_files(files, config):
    for source, page in ROOT_PAGES.items():
        files.append(File.generated(config, page, content=(ROOT / source).read_text()))
    return files


def on_page_markdown(markdown, page, config, files):
    for marker, make in GENERATED.items():
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    return markdown
