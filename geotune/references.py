"""User code named in a config: ``package.module:function`` (an importable module) or ``path/to/file.py:function``.

``dataset.name`` and ``model.type`` take such a reference besides their built-in names. Reading a config only
checks the reference's shape; the module is imported (its code runs, as a search-space file's does) when a
trial, or the check before a study starts, first needs the function.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from geotune.errors import ConfigError

MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")  # package.module
FUNCTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_reference(text: str) -> bool:
    """Whether a config value names user code (it holds a ':' before a function name)."""
    return ":" in text


def split_reference(key: str, text: str) -> tuple[str, str]:
    """(module or file, function) of a reference, its shape checked."""
    where, _, function = text.rpartition(":")
    if not FUNCTION.match(function) or not (where.endswith(".py") or MODULE.match(where)):
        raise ConfigError(
            f"config key '{key}' = {text!r}: a reference to your code is 'package.module:function' or "
            "'path/to/file.py:function'"
        )
    return where, function


def absolute_reference(key: str, text: str) -> str:
    """The reference with a file path made absolute (Ray workers run in other folders); modules unchanged."""
    where, function = split_reference(key, text)
    if not where.endswith(".py"):
        return text
    return f"{Path(where).expanduser().resolve()}:{function}"


def import_file(path: Path, module_name: str, what: str, cached: bool = True) -> ModuleType:
    """The .py file at ``path`` imported as ``module_name`` (its code runs); ``cached``: once per process.
    ``what`` begins each one-line error and names the file."""
    if cached and module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{what} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # sys.exit() at import must not end geotune as a success
        del sys.modules[module_name]
        raise ConfigError(f"{what} failed to import: {type(exc).__name__}: {exc}") from None
    return module


def _import_reference_file(key: str, text: str, path: Path) -> ModuleType:
    if not path.is_file():
        raise ConfigError(f"config key '{key}' = {text!r}: the file '{path}' does not exist")
    resolved = path.resolve()
    # One module per file (a hash of its path in the name: two files may share a name), imported once.
    name = f"geotune_user_{resolved.stem}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:8]}"
    return import_file(resolved, name, f"config key '{key}' = {text!r}: '{path}'")


def load_reference(key: str, text: str) -> Callable[..., Any]:
    """The function a reference names, imported; each failure is one line naming the key and what is wrong."""
    where, function = split_reference(key, text)
    if where.endswith(".py"):
        module = _import_reference_file(key, text, Path(where).expanduser())
    else:
        try:
            module = importlib.import_module(where)
        except (Exception, SystemExit) as exc:
            raise ConfigError(
                f"config key '{key}' = {text!r}: module '{where}' cannot be imported ({type(exc).__name__}: {exc}); "
                "install it, put it on PYTHONPATH, or name its file: path/to/file.py:function"
            ) from None
    found = getattr(module, function, None)
    if found is None:
        raise ConfigError(f"config key '{key}' = {text!r}: '{where}' has no '{function}'")
    if not callable(found):
        raise ConfigError(f"config key '{key}' = {text!r}: '{where}.{function}' is not a function")
    return found
