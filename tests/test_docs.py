"""The documentation site (issue 33 item 1): it builds in MkDocs' strict mode, its references are generated from
the code (every verb, every config key, every name of the public API), a broken link fails the build, and the
README stays one screen that links the pages."""

import re
import shutil
from html import unescape
from pathlib import Path

import pytest

import geotune
from geotune.config import reference_rows
from geotune.study import docs_site
from geotune.study.cli import build_parser, main

REPO = Path(__file__).parents[1]


def _text(html: Path) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html.read_text())))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site as `geotune docs --build` writes it (strict: a warning of any kind fails the build)."""
    out = tmp_path_factory.mktemp("site")
    with pytest.MonkeyPatch.context() as patch:
        lines = []
        patch.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(map(str, a))))
        assert main(["docs", "--build", str(out)]) == 0
    assert lines == [f"documentation site: {out / 'index.html'}  (open it in a browser)"]
    assert (out / "index.html").is_file()
    return out


def test_every_page_of_the_navigation_is_built(site):
    import yaml

    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]

    def pages(entries):
        for entry in entries:
            for value in entry.values():
                yield from pages(value) if isinstance(value, list) else [value]

    listed = list(pages(nav))
    assert len(listed) >= 25
    for page in listed:
        assert (site / page.replace(".md", ".html")).is_file(), page
    # every Markdown page under docs/ is in the navigation (none orphaned)
    on_disk = {str(p.relative_to(REPO / "docs")) for p in (REPO / "docs").rglob("*.md")}
    assert on_disk <= set(listed), on_disk - set(listed)


def test_the_cli_reference_is_the_parser(site):
    text = _text(site / "reference" / "cli.html")
    verbs = build_parser()._subparsers._group_actions[0].choices
    assert len(verbs) >= 10
    for name, sub in verbs.items():
        assert f"geotune {name}" in text, name
        first_words = " ".join(sub.description.split()[:6])
        assert first_words in text, (name, first_words)
    assert "--pending" in text or "--max-failures" in text  # options, not only verbs


def test_the_config_reference_is_the_schema(site):
    text = _text(site / "reference" / "config.html")
    keys = [row[0] for row in reference_rows()]
    assert len(keys) > 100
    missing = [key for key in keys if key not in text]
    assert not missing, missing


def test_the_api_reference_documents_every_public_name(site):
    text = _text(site / "reference" / "api.html")
    for name in geotune.API:
        assert re.search(rf"\b{name}\b", text), name
    # rendered from the docstrings, not only named
    assert "Read a study folder" in text
    assert "load_trained" in text and "TrainedModel" in text


def test_figures_are_inline_and_benchmarks_join_the_site(site):
    getting_started = (site / "getting-started.html").read_text()
    images = re.findall(r'<img[^>]+src="([^"]+)"', getting_started)
    assert len(images) >= 3
    for src in images:
        assert (site / src).is_file(), src
    assert len(re.findall(r"<img", (site / "recipes.html").read_text())) >= 4
    assert "BENCHMARKS" in (site / "benchmarks.html").read_text() or "Benchmarks" in _text(site / "benchmarks.html")
    # nothing loaded from the network: no web fonts, no CDN scripts
    assert "fonts.googleapis" not in getting_started


def test_a_broken_link_fails_the_build(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "docs", copy / "docs")
    shutil.copy(REPO / "mkdocs.yml", copy / "mkdocs.yml")
    for folder in ("study", "analysis", "trainables"):  # the API reference reads these docstrings
        shutil.copytree(REPO / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("BENCHMARKS.md", "CHANGELOG.md"):
        shutil.copy(REPO / name, copy / name)
    page = copy / "docs" / "how-to" / "resume.md"
    page.write_text(page.read_text() + "\nSee [the missing page](nowhere.md).\n")
    # one warning: the copy of the site that builds without any (the fixture) fails for this link alone
    with pytest.raises(RuntimeError, match="Aborted with 1 warnings in strict mode"):
        docs_site.build_site(tmp_path / "broken", copy / "mkdocs.yml")


def test_geotune_docs_checks_its_port(capsys):
    assert main(["docs", "--port", "70000"]) == 2
    assert "--port 70000" in capsys.readouterr().err


def test_geotune_docs_outside_a_checkout_says_where_the_pages_are(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(docs_site, "CHECKOUT", tmp_path)  # as a wheel installs it: no mkdocs.yml beside it
    assert main(["docs", "--build", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err
    assert "source checkout" in err and "mkdocs.yml" in err and len(err.strip().splitlines()) == 1


def test_the_readme_is_one_screen_that_links_the_site():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) < 200
    links = re.findall(r"\]\(((?!https?://)[^)#]+)\)", text)
    assert len(links) >= 20
    for link in links:
        assert (REPO / link).is_file(), link
    assert "geotune docs" in text
