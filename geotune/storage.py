"""Reading and writing small files of a study wherever it is stored: a local folder or an object-store URI.

Ray Tune keeps a study under ``storage_path/name``; a local path and an ``s3://``
or ``gs://`` URI are reached through the same pyarrow file-system calls here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def is_uri(path: str | Path) -> bool:
    return "://" in str(path)


def experiment_location(out_dir: str | Path) -> tuple[str, str]:
    """(storage_path, name) such that Tune's experiment directory is exactly ``out_dir``."""
    if is_uri(str(out_dir)):
        storage, _, name = str(out_dir).rstrip("/").rpartition("/")
        return storage, name
    path = Path(out_dir).expanduser().resolve()
    return str(path.parent), path.name


def fs_and_path(path: str | Path) -> tuple[Any, str]:
    """The file system and the path on it; a local folder may be a ``Path`` or a relative path (made absolute:
    pyarrow refuses relative ones)."""
    import pyarrow.fs  # deferred: pyarrow (a Ray dependency) takes 0.2 s to import; only storage calls need it

    if is_uri(path):
        return pyarrow.fs.FileSystem.from_uri(str(path))
    return pyarrow.fs.LocalFileSystem(), str(Path(path).expanduser().absolute())


def write_text(folder: str, name: str, text: str) -> None:
    fs, base = fs_and_path(folder)
    fs.create_dir(base, recursive=True)
    with fs.open_output_stream(f"{base}/{name}") as out:
        out.write(text.encode())


def read_text(folder: str, name: str) -> str | None:
    """The file ``name`` of ``folder`` as text, or None where it is not there."""
    import pyarrow.fs  # deferred: see fs_and_path

    fs, base = fs_and_path(folder)
    path = f"{base}/{name}"
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(path) as src:
        return src.readall().decode()
