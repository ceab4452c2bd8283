"""``geotune docs``: build or serve the documentation site of a source checkout with MkDocs (the docs extra).

The site's sources (mkdocs.yml, docs/) live in the repository, not in the wheel: a released install points to
them instead. The server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from geotune.errors import ConfigError

CHECKOUT = Path(__file__).resolve().parents[1]  # an editable install runs study/ from the repository's top
HOST = "127.0.0.1"  # loopback only: the pages are for this machine's browser


def config_file() -> Path:
    path = CHECKOUT / "mkdocs.yml"
    if not path.is_file():
        raise ConfigError(
            f"geotune docs needs a source checkout (no mkdocs.yml beside the installed package in {CHECKOUT}); "
            "install from the repository with pip install -e '.[docs]', or read its docs/*.md"
        )
    return path


def _mkdocs_logging() -> None:
    """MkDocs logs through `logging`; its own CLI adds the handler that the API leaves to the caller."""
    os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")  # Material's banner about MkDocs 2 on every import
    logger = logging.getLogger("mkdocs")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("docs: %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)


def _require_mkdocs() -> None:
    try:
        import mkdocs  # noqa: F401  (deferred: the docs extra is optional)
    except ImportError:
        raise ConfigError("geotune docs needs the docs extra: pip install -e '.[docs]'") from None


def build_site(out_dir: Path, config: Path | None = None) -> Path:
    """Build the site of ``config`` (default: the checkout's mkdocs.yml) into ``out_dir`` in strict mode (a
    broken link, anchor or reference is an error); returns its index.html. Raises RuntimeError naming the
    count of warnings when the build is refused."""
    path = config or config_file()
    _require_mkdocs()
    _mkdocs_logging()
    from mkdocs.commands.build import build  # deferred, the optional docs extra
    from mkdocs.config import load_config  # deferred: the docs extra
    from mkdocs.exceptions import Abort  # deferred: the docs extra

    settings = load_config(config_file=str(path), site_dir=str(Path(out_dir).resolve()), strict=True)
    try:
        build(settings)
    except Abort as exc:
        raise RuntimeError(f"the documentation site was not built: {exc.message}") from None
    return Path(out_dir) / "index.html"


def serve_site(port: int) -> None:
    """Serve the site on 127.0.0.1:``port``, rebuilding as pages change (not strict: a page being edited may
    hold a broken link for a while), until Ctrl-C."""
    path = config_file()
    _require_mkdocs()
    _mkdocs_logging()
    from mkdocs.commands.serve import serve  # deferred: the docs extra

    print(f"docs: serving http://{HOST}:{port}/ (Ctrl-C stops)", file=sys.stderr)
    serve(config_file=str(path), dev_addr=f"{HOST}:{port}", strict=False)
