"""The layers import downward only, with no import cycle, function-level (lazy) imports included.

Every module under dispatch/ and targets/ is parsed with `ast`; each `import` and `from ... import` in it,
at any depth (inside functions too), is an edge to the module it loads (`from pkg import sub` to the
submodule `pkg.sub` when that is a module). The layers, lowest first, as docs/architecture.md lists them:

    0 core      dispatch.errors, cost, ir, fileio, attributes, opset, budget: plain data and helpers
    1 model     dispatch.frontend, fold, consistency, analysis/: load an ONNX model into a Graph, count
                each node's work
    2 targets   targets/: the cost models and executors (roofline, fusion tables, ASIC timing, profiles)
    3 planner   dispatch.problem, objective, plan, partition/, explain, plan_io; and calibration/ (fits a
                target's cost model by timing cases: it loads and analyses models and drives targets)
    4 runtime   dispatch.runtime, pipeline, validate, feeds, report, trace, dot, annotate
    5 api       dispatch (the package's lazy facade), api, backend, sweep/, serve/
    6 cli       dispatch.cli, __main__, and the serve, sweep and calibrate command lines

A module may import its own layer and those below. Targets are stricter: from dispatch they import the core
only, so that a cost model can be read (and reused) without the planner, runtime or model loader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LAYERS: dict[str, int] = {
    **dict.fromkeys(
        ["dispatch.errors", "dispatch.cost", "dispatch.ir", "dispatch.fileio", "dispatch.attributes",
         "dispatch.opset", "dispatch.budget"], 0),
    **dict.fromkeys(["dispatch.frontend", "dispatch.fold", "dispatch.consistency", "dispatch.analysis"], 1),
    "targets": 2,
    **dict.fromkeys(
        ["dispatch.problem", "dispatch.objective", "dispatch.plan", "dispatch.partition", "dispatch.explain",
         "dispatch.plan_io", "dispatch.calibration"], 3),
    **dict.fromkeys(
        ["dispatch.runtime", "dispatch.pipeline", "dispatch.validate", "dispatch.feeds", "dispatch.report",
         "dispatch.trace",
         "dispatch.dot", "dispatch.annotate"], 4),
    **dict.fromkeys(["dispatch", "dispatch.api", "dispatch.backend", "dispatch.sweep", "dispatch.serve"], 5),
    **dict.fromkeys(
        ["dispatch.cli", "dispatch.__main__", "dispatch.serve.cli", "dispatch.serve.__main__",
         "dispatch.sweep.cli", "dispatch.calibration.cli"], 6),
}
CORE = 0


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = ROOT, packages: tuple[str, ...] = ("dispatch", "targets")) -> dict[str, Path]:
    return {module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules that `path` (module `name`) imports anywhere in its body."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known]
            found = subs if len(subs) == len(node.names) else [mod, *subs]
        else:
            continue
        for m in found:
            # `import a.b.c` loads the deepest project module named; keep that one
            while m and m not in known:
                m = m.rpartition(".")[0]
            if m and m != name:
                out.add(m)
    return out


def graph(root: Path = ROOT, packages: tuple[str, ...] = ("dispatch", "targets")) -> dict[str, set[str]]:
    mods = modules(root, packages)
    return {name: imports(path, name, set(mods)) for name, path in mods.items()}


def layer(module: str) -> int:
    """The layer of the longest LAYERS entry that names `module` or a package above it (the package
    `dispatch` itself only by its own name: each module of dispatch is placed on purpose)."""
    m = module
    while m:
        if m in LAYERS and (m != "dispatch" or module == "dispatch"):
            return LAYERS[m]
        m = m.rpartition(".")[0]
    raise KeyError(f"{module} is in no layer: add it to LAYERS here and to docs/architecture.md")


def violations(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for a, deps in sorted(g.items()):
        for b in sorted(deps):
            if a.startswith("targets") and b.startswith("dispatch") and layer(b) != CORE:
                bad.append(f"{a} -> {b} (targets import only dispatch's core)")
            elif layer(b) > layer(a):
                bad.append(f"{a} (layer {layer(a)}) -> {b} (layer {layer(b)})")
    return bad


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    with pytest.raises(KeyError, match="in no layer"):
        layer("dispatch.somewhere_new")
    g = graph()
    assert {"targets.gpu", "targets.profile", "dispatch.calibration.run", "dispatch.api"} <= g.keys()
    for m in g:
        layer(m)  # raises for a module no layer names


def test_layers_import_downward_only():
    assert violations(graph()) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_targets_read_profiles_without_calibration():
    # The cycle this file was written against: targets.gpu read profiles from dispatch.calibrate, which
    # imported targets.gpu (lazily, inside functions).
    g = graph()
    assert "targets.profile" in g["targets.gpu"]
    assert not any(m.startswith("dispatch.calibration") for m in g["targets.gpu"])


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def test_the_checker_sees_lazy_relative_and_submodule_imports(tmp_path):
    # A tiny tree with the three kinds of edge the checker must not miss.
    root = _tree(tmp_path, {
        "dispatch/__init__.py": "",
        "dispatch/cost.py": "",
        "dispatch/api.py": "from . import cost\n",
        "dispatch/partition/__init__.py": "from dispatch.partition import optimal\n",
        "dispatch/partition/optimal.py": "def f():\n    from dispatch.partition import cut\n",
        "dispatch/partition/cut.py": "",
        "targets/__init__.py": "",
        "targets/gpu.py": "def g():\n    import dispatch.api\n",
    })
    g = graph(root)
    assert g["dispatch.api"] == {"dispatch.cost"}  # relative import, resolved
    assert g["dispatch.partition.optimal"] == {"dispatch.partition.cut"}  # lazy; the submodule
    assert g["targets.gpu"] == {"dispatch.api"}  # lazy import inside a function
    assert violations(g) == ["targets.gpu -> dispatch.api (targets import only dispatch's core)"]


@pytest.mark.parametrize(
    "files, cycle",
    [
        ({"targets/__init__.py": "", "targets/a.py": "import targets.b\n",
          "targets/b.py": "def f():\n    from targets import a\n"}, ["targets.a", "targets.b"]),
        ({"targets/__init__.py": "", "targets/a.py": "import targets.b\n", "targets/b.py": ""}, None),
    ],
)
def test_the_checker_finds_cycles(tmp_path, files, cycle):
    g = graph(_tree(tmp_path, files), ("targets",))
    assert cycles(g) == ([cycle] if cycle else [])
