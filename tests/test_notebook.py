"""examples/reading_a_study.ipynb, executed as a user's Jupyter would (nbclient, a python3 kernel over local
IPC sockets, no TCP): it uses only the public API and shows the findings, a table, the forest plot and
measured embeddings. Its study joins the test worker's shared Ray (RAY_ADDRESS, as a notebook beside a running
cluster would): a Ray of its own cost the kernel a Ray start and a second trial worker."""

import ast
import os
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]


@pytest.mark.slow
def test_the_example_notebook_runs_and_shows_the_study(tmp_path, ray_session):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from jupyter_client.manager import KernelManager

    notebook = nbformat.read(REPO / "examples" / "reading_a_study.ipynb", as_version=4)
    imports = [line for cell in notebook.cells if cell.cell_type == "code" for line in cell.source.splitlines()]
    assert not [line for line in imports if "from geotune." in line or "import geotune." in line], "public API only"
    kernel = KernelManager(kernel_name="python3", transport="ipc", ip=str(tmp_path / "kernel"))
    client = nbclient.NotebookClient(notebook, km=kernel, timeout=600, resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute(env=dict(os.environ, RAY_ADDRESS=ray_session.address))
    finally:  # a kernel manager passed in is the caller's to stop: the kernel otherwise idles until the worker exits
        if kernel.has_kernel:
            kernel.shutdown_kernel(now=True)
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    assert not [out for out in outputs if out.get("output_type") == "error"]
    shown = [out.get("data", {}) for out in outputs if out.get("output_type") == "execute_result"]
    markdown = next(d["text/markdown"] for d in shown if "text/markdown" in d)
    assert markdown.startswith("**notebook**: 4 trials") and "vs no regularizer (1 pair; too few for a test" in markdown
    assert any("image/png" in d for d in shown), "the forest plot inline"
    measured = ast.literal_eval(shown[-1]["text/plain"])  # three 2-D discs: dimension 2 by both estimators
    assert measured["intrinsic_dim_twonn_per_class"] == pytest.approx(2.0, abs=0.1)
    assert measured["participation_ratio_per_class"] == pytest.approx(2.0, abs=0.1)
    assert (tmp_path / "runs" / "notebook" / "report" / "index.html").is_file()
