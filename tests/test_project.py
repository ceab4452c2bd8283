"""The README's promises: its test command is what CI runs; the CLI explains every verb."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_has_two_commands_and_ci_runs_the_test_command():
    commands = readme_commands()
    assert len(commands) == 2
    main, tests = commands
    assert "geotune" in main and "pytest" in tests
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert tests in ci_lines


@pytest.mark.slow
def test_help_explains_every_verb():
    from geotune.study.cli import build_parser

    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices
    out = subprocess.run([sys.executable, "-m", "geotune", "--help"], capture_output=True, text=True, check=True).stdout
    for verb, sub in verbs.items():
        assert re.search(rf"^\s+{verb}\s+\S", out, flags=re.M), f"{verb} lacks a help line"
        assert sub.description, f"{verb} lacks a description"
