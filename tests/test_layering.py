"""The layout's rules (docs/design.md, "Layout"), read from the source with the AST.

Layers, bottom to top: the leaves (``raydgm`` itself, which holds the version, the public
math modules, ``data``, ``models/``, ``config/``), ``training/``, ``pipeline/``, ``tracking/``, ``sweeps/``, then the command
line (``cli``, ``demo``). A module imports only from its own layer or below, with no import
circle; ``ray`` only under ``pipeline/`` and ``sweeps/``, ``mlflow`` only under
``tracking/``; no module over 400 lines; a function over 50 lines says why in its docstring.
Within the leaves and layers, two folders keep apart (``APART``): ``config/`` imports nothing of
raydgm but itself and ``raydgm._names`` (configs hold data, not code), and ``tracking/`` imports
nothing from ``pipeline/`` (it logs the files a stage wrote or was handed). Imports inside
functions count as much as those at the top.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "raydgm"
LEAVES = {"raydgm", "raydgm.resample", "raydgm.recovery", "raydgm.density_ratio", "raydgm._classifier",
          "raydgm._diagnostics", "raydgm.calibration", "raydgm.metrics", "raydgm._cifar", "raydgm._checks",
          "raydgm._names", "raydgm._env",
          "raydgm.semantic_loss", "raydgm.data"}
LAYERS = ("leaf", "training", "pipeline", "tracking", "sweeps", "command line")
EXTERNAL = {"ray": ("pipeline", "sweeps"), "mlflow": ("tracking",)}   # package: layers allowed
# folder: (what it must not import, the exceptions)
APART = {"raydgm.config": ("raydgm", ("raydgm.config", "raydgm._names")),
         "raydgm.tracking": ("raydgm.pipeline", ())}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    """The layer of a raydgm module, from its folder."""
    parts = module.split(".")
    if module in LEAVES or parts[1:2] in (["models"], ["config"]):
        return "leaf"
    if parts[1:2] and parts[1] in LAYERS:
        return parts[1]
    return "command line"          # raydgm.cli, raydgm.demo


def imports(module: str) -> tuple[set[str], set[str]]:
    """(raydgm modules, top-level external packages) that ``module`` imports anywhere in it."""
    ours, external = set(), set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                     for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "raydgm":
                while name not in MODULES:          # raydgm.x.y where y is a name in raydgm.x
                    name = name.rsplit(".", 1)[0]
                ours.add(name)
            else:
                external.add(name.split(".")[0])
    return ours - {module}, external


GRAPH = {m: imports(m) for m in MODULES}


def test_the_layers_cover_the_package():
    """Every folder of raydgm is a layer; a new one must be placed here first."""
    folders = {p.relative_to(PACKAGE).parts[0] for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE}
    assert folders == {"models", "config", "training", "pipeline", "tracking", "sweeps"}
    assert {layer(m) for m in MODULES} == set(LAYERS)


def test_a_module_imports_only_its_own_layer_or_below():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = sorted(f"{m} ({layer(m)}) imports {d} ({layer(d)})" for m, (deps, _) in GRAPH.items()
                    for d in deps if rank[layer(d)] > rank[layer(m)])
    assert upward == []


def test_no_import_circle():
    """Depth-first search for a back edge; the circle found is printed whole."""
    state: dict[str, int] = {}   # 1 on the stack, 2 done
    circles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(GRAPH[m][0]):
            if state.get(d) == 1:
                circles.append(" -> ".join(stack[stack.index(d):] + [m, d]))
            elif d not in state:
                visit(d, stack + [m])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [])
    assert circles == []


@pytest.mark.parametrize("package", sorted(EXTERNAL))
def test_ray_and_mlflow_stay_in_their_layers(package):
    where = sorted(m for m, (_, ext) in GRAPH.items() if package in ext)
    assert where and all(layer(m) in EXTERNAL[package] for m in where), where


def under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def crossings(graph: dict, folder: str) -> list[str]:
    """``folder``'s imports that ``APART`` forbids, as "importer imports imported"."""
    banned, allowed = APART[folder]
    return sorted(f"{m} imports {d}" for m, (deps, _) in graph.items() if under(m, folder) for d in deps
                  if under(d, banned) and not any(under(d, a) for a in allowed))


@pytest.mark.parametrize("folder", sorted(APART))
def test_config_imports_no_implementation_and_tracking_nothing_from_pipeline(folder):
    assert crossings(GRAPH, folder) == []


def test_the_apart_check_can_fail():
    """It flags the imports these rules were written against (config/stages.py once imported
    data and resample for their lists of names; tracking/runs.py drew through pipeline.plots)."""
    old = {"raydgm.config.stages": ({"raydgm.data", "raydgm.resample", "raydgm.config.base"}, set()),
           "raydgm.tracking.runs": ({"raydgm.pipeline.plots", "raydgm.tracking.client"}, set()),
           "raydgm.pipelines": ({"raydgm.config.stages"}, set())}   # a name that only starts alike
    assert crossings(old, "raydgm.config") == ["raydgm.config.stages imports raydgm.data",
                                               "raydgm.config.stages imports raydgm.resample"]
    assert crossings(old, "raydgm.tracking") == ["raydgm.tracking.runs imports raydgm.pipeline.plots"]
    assert any(under(d, "raydgm.pipeline") for d in GRAPH["raydgm.sweeps.semantic"][0])   # real edges are seen


def test_no_module_over_400_lines():
    sizes = {m: len(p.read_text().splitlines()) for m, p in MODULES.items()}
    assert {m: n for m, n in sizes.items() if n > 400} == {}


def test_a_function_over_50_lines_says_why():
    """Its docstring holds a sentence starting "Long because"."""
    unexplained = []
    for m, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                    and node.end_lineno - node.lineno >= 50 \
                    and "Long because" not in (ast.get_docstring(node) or ""):
                unexplained.append(f"{m}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert unexplained == []


def test_the_rule_checks_can_fail():
    """The checks above see what they look for: real upward and external imports exist here."""
    assert "raydgm.pipeline.stages" in GRAPH["raydgm.sweeps.semantic"][0]
    assert "raydgm.config.stages" in GRAPH["raydgm.config"][0]
    assert layer("raydgm.training.ssl") == "training" and layer("raydgm.demo") == "command line"
    assert "ray" in GRAPH["raydgm.pipeline.raydata"][1] and "mlflow" in GRAPH["raydgm.tracking.client"][1]


@pytest.mark.parametrize("script", ["semantic_weight.py", "classifier.py"])
@pytest.mark.parametrize("flag", ["--help", "--show-config"])
def test_sweep_scripts_answer_help_and_show_config_without_ray_or_torch(script, flag):
    """The script runs as ``__main__`` in a fresh interpreter, which then lists what it imported."""
    probe = ("import runpy, sys\n"
             f"sys.argv = [{script!r}, {flag!r}]\n"
             "try:\n"
             f"    runpy.run_path({str(ROOT / 'sweeps' / script)!r}, run_name='__main__')\n"
             "except SystemExit as stop:\n"
             "    assert not stop.code, stop.code\n"
             "print('loaded:', ' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = out.stdout.rsplit("loaded:", 1)[1].split()
    assert "raydgm" in loaded and "ray" not in loaded and "torch" not in loaded
    assert ("usage:" in out.stdout) == (flag == "--help")
