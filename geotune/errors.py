"""The errors geotune reports to its users in one line, and reading a failed trial's one line back.

Every input error is a :class:`ConfigError` (exit code 2, before training starts
where it can be known then); a trial that fails inside Ray is known to the driver
only as a traceback text, so ``error_line`` finds its innermost exception line and
``is_input_error`` tells whether that was one of these classes.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value or input that cannot be used; the message is one line for the user."""


class DatasetNotFoundError(ConfigError):
    """An on-disk data set is not where the config says (and download is off)."""


class DatasetFileError(ConfigError):
    """A data file exists but is not in the format its data set ships in."""


INPUT_ERRORS = (ConfigError, DatasetNotFoundError, DatasetFileError)

# the exit codes of the geotune command
EXIT_FAILED = 1  # a trial or the report failed (finished work is kept)
EXIT_BAD_INPUT = 2  # an input error, found before training where it can be known then
EXIT_INTERRUPTED = 130  # the shell's code for a process ended by Ctrl-C (128 + SIGINT)


def error_line(error: object) -> str:
    """The one line that says why a trial failed (the innermost exception, not Ray's wrapper)."""
    text = error if isinstance(error, str) else str(error)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):  # Ray's task errors embed the remote traceback; find the exception line
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception", "Interrupt")) and " " not in head:
            return line
    return lines[-1] if lines else "unknown error"


def is_input_error(line: str) -> bool:
    """Whether a trial's one-line error (``error_line``) is one of geotune's input errors."""
    head = line.split(":", 1)[0].strip()
    return head.rsplit(".", 1)[-1] in {cls.__name__ for cls in INPUT_ERRORS}
