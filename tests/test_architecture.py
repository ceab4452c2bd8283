"""The house rules, checked: one installed name, floors that import only downward, no import cycle,
a reason on every deferred import, nothing happening on import, and no shadowing by a user's folders."""

from __future__ import annotations

import ast
import io
import os
import subprocess
import sys
import tarfile
import tokenize
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the folder of each floor, bottom first, and the package it is installed as
FLOORS = [
    ("geotune", "geotune"),
    ("analysis", "geotune.analysis"),
    ("trainables", "geotune.trainables"),
    ("search_spaces", "geotune.search_spaces"),
    ("study", "geotune.study"),
]
ENTRY_POINTS = {"geotune.__main__", "geotune.study.__main__"}  # `python -m ...` runs the CLI: nothing imports them
# the package's own __init__ lends the top floor's Python API short names (gt.load_study) by a deferred import
# in its module __getattr__: the one import upward, run only when an API name is first used (never at import)
FACADE = ("geotune", "geotune.study.api")


def source_modules() -> dict[str, Path]:
    """Installed module name -> file, for every module of every floor."""
    out = {}
    for folder, package in FLOORS:
        for path in sorted((ROOT / folder).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            out[name] = path
    return out


def floor_of(module: str) -> int:
    for index, (_, package) in reversed(list(enumerate(FLOORS))):
        if module == package or module.startswith(package + "."):
            return index
    raise AssertionError(module)


def project_imports(path: Path, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported geotune module) of every import in ``path``; ``known``: the modules there are."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import; write geotune.<floor>.<module>"
            base = node.module or ""
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out += [(node.lineno, target) for target in targets if target.split(".")[0] == "geotune"]
    return out


def test_nothing_is_imported_by_its_generic_folder_name():
    """Code and tests import geotune.<floor>: a bare `import analysis` would find a user's folder first."""
    generic = {folder for folder, _ in FLOORS[1:]}
    offenders = []
    for path in sorted(ROOT.glob("*/*.py")):
        if path.parts[-2] in {".venv", "build"}:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] in generic]
    assert not offenders


def test_imports_point_only_downward():
    upward = []
    modules = source_modules()
    for module, path in modules.items():
        if module in ENTRY_POINTS:
            continue
        for line, target in project_imports(path, set(modules)):
            if (module, target) == FACADE:
                continue
            if floor_of(target) > floor_of(module):
                upward.append(f"{path.relative_to(ROOT)}:{line} {module} -> {target}")
    assert not upward, "imports from a higher floor:\n" + "\n".join(upward)


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle's members (strongly connected components with more than one module, or a self-import)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                members.append(member)
                if member == node:
                    break
            if len(members) > 1 or node in graph.get(node, ()):
                cycles.append(sorted(members))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def test_import_cycle_finder_finds_a_planted_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    """Deferred imports included: a cycle held together by an import inside a function is still a cycle."""
    modules = source_modules()
    graph = {}
    for module, path in modules.items():
        targets = {t for _, t in project_imports(path, set(modules))}
        # importing geotune.x.y runs geotune.x/__init__ first; the packages' own __init__ import nothing
        graph[module] = {t for t in targets if t in modules and t != module and (module, t) != FACADE}
    assert not import_cycles(graph)


def test_every_import_inside_a_function_says_why():
    """A deferred import is a start-up optimisation or an optional dependency; its line (or the one above)
    says which, so no reader mistakes it for a cycle workaround."""
    silent = []
    for path in source_modules().values():
        text = path.read_text()
        lines = text.splitlines()
        comments = {
            tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(text).readline) if tok.type == tokenize.COMMENT
        }
        tree = ast.parse(text)
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    end = node.end_lineno or node.lineno
                    if not ({node.lineno - 1, *range(node.lineno, end + 1)} & comments):
                        silent.append(f"{path.relative_to(ROOT)}:{node.lineno} {lines[node.lineno - 1].strip()}")
    assert not silent, "imports inside functions without a reason:\n" + "\n".join(silent)


def run_python(code: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_geotune_report_imports_neither_torch_nor_ray(tmp_path):
    """The report reads files: `geotune report` of a study loads no torch and no Ray (issue 36, about 3 s)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from synthetic import make_study

    variants = [{"regularizer.name": name, "train.seed": s} for name in ("none", "geodesic") for s in range(3)]
    study = make_study(tmp_path / "s", variants, [{"variant": i} for i in range(6)])
    code = (
        "import sys\nfrom geotune.study.cli import main\n"
        f"code = main(['report', {str(study)!r}])\n"
        "print(code, sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    )
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stdout[-2000:]
    assert (study / "report" / "index.html").is_file()


@pytest.mark.slow
def test_importing_every_module_changes_nothing_in_the_process(tmp_path):
    """No environment variable set, no Ray started, nothing written, by importing any module of geotune."""
    names = sorted(n for n in source_modules() if n not in ENTRY_POINTS)
    code = (
        "import importlib, os, sys, json\n"
        # the libraries first: what Ray or torch do to the environment when imported is theirs, not geotune's
        "import ray, ray.tune, torch, torchvision, optuna, pandas, sklearn\n"
        "before = dict(os.environ)\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "keys = set(before) | set(os.environ)\n"
        "changed = {k: os.environ.get(k) for k in keys if before.get(k) != os.environ.get(k)}\n"
        "print(json.dumps({'changed': changed, 'ray_started': ray.is_initialized()}))\n"
    )
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"changed": {}, "ray_started": False}
    assert list(tmp_path.iterdir()) == [], "importing wrote files into the working directory"


def plant_generic_packages(folder: Path) -> None:
    """A user's project with its own analysis/, study/, trainables/ and search_spaces/ packages."""
    for name, _ in FLOORS[1:]:
        (folder / name).mkdir()
        (folder / name / "__init__.py").write_text(f"raise ImportError('the user\\'s own {name} package')\n")


@pytest.mark.slow
def test_geotune_runs_beside_a_users_own_analysis_package(tmp_path):
    plant_generic_packages(tmp_path)
    names = sorted(n for n in source_modules() if n not in ENTRY_POINTS)
    done = run_python(
        f"import importlib\nfor name in {names!r}:\n    importlib.import_module(name)\n"
        "import geotune.analysis.report as r\nprint(r.__file__)",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert Path(done.stdout.strip()).resolve().is_relative_to(ROOT)
    cli = subprocess.run(
        [sys.executable, "-m", "geotune", "config", "--set", "train.lr=0.01"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0 and "lr: 0.01" in cli.stdout, cli.stderr[-2000:]


@pytest.mark.slow
def test_the_released_wheel_and_sdist_work_from_another_folder(tmp_path):
    """The released form, as a user of the package gets it: the wheel holds geotune/ and its metadata only
    (nothing generic at the top of site-packages) and py.typed; the sdist holds the sources; the wheel, installed
    apart from the repository and run from another folder, answers --version and spaces and trains a trial."""
    pytest.importorskip("setuptools")
    dist = tmp_path / "dist"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = dist.glob("geotune-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"geotune"}
    for _, package in FLOORS:
        assert package.replace(".", "/") + "/__init__.py" in names
    assert "geotune/py.typed" in names and "geotune/study/api.py" in names

    # the sdist, by PyPA's build (run from elsewhere: the repository's build/ folder would shadow the module)
    done = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(dist), str(ROOT)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (sdist,) = dist.glob("geotune-*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"pyproject.toml", "README.md", "analysis/latent.py", "study/api.py", "geotune/py.typed"} <= members

    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    elsewhere.mkdir()
    (elsewhere / "c.yaml").write_text(
        "train: {epochs: 1, num_threads: 1}\nlogging: {figures: false, save_umap: false}\n"
    )
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": str(site)}

    def geotune(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "geotune", *args],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    where = subprocess.run(
        [sys.executable, "-c", "import geotune; print(geotune.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr  # the wheel's, not the repo's
    version = geotune("--version")
    assert version.returncode == 0 and "0." in version.stdout, version.stderr
    spaces = geotune("spaces")
    assert spaces.returncode == 0 and "quickstart" in spaces.stdout, spaces.stderr[-2000:]
    trained = geotune("train", "c.yaml", "out")
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    assert (elsewhere / "out" / "trial" / "metrics.json").is_file()


def test_the_cli_starts_without_torch_or_ray(tmp_path):
    """`geotune --help`, `config` and `spaces` must not pay for torch and Ray: the verbs import them on use."""
    done = run_python(
        "import sys, geotune.study.cli\nprint(sorted({'torch', 'ray', 'pandas'} & set(sys.modules)))", tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
