"""The report page in a real browser: every figure loads, the tables are there, nothing is fetched."""

import json
import re
import shutil
import subprocess

import pytest
from test_analysis import planted_study, reg_study

from geotune.analysis.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

CHECK = """<script>
window.addEventListener('load', () => {
  const images = [...document.images];
  const result = {images: images.length,
                  loaded: images.filter(i => i.complete && i.naturalWidth > 0).length,
                  tables: document.querySelectorAll('table').length,
                  rows: document.querySelectorAll('tbody tr').length,
                  headings: [...document.querySelectorAll('h2')].map(h => h.textContent)};
  const out = document.createElement('pre');
  out.id = 'geotune-check';
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>"""


def rendered(index, tmp_path) -> dict:
    """What headless Chromium saw of a report page: images (and how many loaded), tables, rows, headings."""
    probe = index.with_name("probe.html")
    probe.write_text(index.read_text().replace("</body>", CHECK + "</body>"))
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    match = re.search(r'<pre id="geotune-check">(.*?)</pre>', proc.stdout)
    assert match, f"the page did not finish loading:\n{proc.stderr[-2000:]}"
    return json.loads(match.group(1))


NO_CHROMIUM = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed here (.ci/run installs Debian's chromium); "
    "the report page is not rendered in a browser",
)


@NO_CHROMIUM
@pytest.mark.slow
def test_report_page_renders_in_headless_chromium(tmp_path):
    result = rendered(write_report(reg_study(tmp_path)), tmp_path)
    assert result["images"] >= 4 and result["loaded"] == result["images"], result
    assert result["tables"] == 6 and result["rows"] >= 10, result  # plan, three group tables, cost, paired effects
    for heading in (
        "What each regularizer did, and how sure we are",
        "Findings",
        "Plan",
        "Paired effect of regularization (regularized minus its baseline)",
        "Training curves",
        "Accuracy against flatness within classes",
    ):
        assert heading in result["headings"], result["headings"]
    assert result["headings"][0] == "What each regularizer did, and how sure we are", "the forest plot comes first"


@NO_CHROMIUM
@pytest.mark.slow
def test_a_factor_studys_forests_and_tables_render(tmp_path):
    result = rendered(write_report(planted_study(tmp_path, seeds=3).study_dir), tmp_path)
    assert result["loaded"] == result["images"] and result["images"] >= 5, result
    for heading in (
        "What model.batch_norm did, against false",
        "What model.kernel_size did, against 3",
        "Interactions: where one factor's effect depends on another",
        "Paired effect of model.pooling: each level minus max (the first level the study lists)",
        "Interactions: does one factor's effect depend on another's level?",
        "The training images",
        "Confusion matrix of each group's best trial",
    ):
        assert heading in result["headings"], result["headings"]
