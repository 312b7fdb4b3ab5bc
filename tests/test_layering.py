"""Arrows point down: no import cycle between modules, and no module imports a layer above its own.

    layer     modules                                                              may import
    top       cdviz.cli, cdviz.workflow (analyses, then the report),               anything
              cdviz.zoo, cdviz.bench, cdviz.diagnostics, cdviz.synthetic, app
    report    cdviz.report                                                         core
    analyses  analyses                                                             core
    train     cdviz.train                                                          core
    core      cdviz (the package), types, errors, io, store, metrics, vat,         core
              layer_map, prompts, conversation, lineage, evaluate, pieces,
              models, probes, record

Every module file of cdviz, analyses and app is parsed with ``ast``, and every import counts,
those inside functions too (they run when the function does). An import is an arrow to the most
specific module it names: ``from cdviz.models import load_model`` -> cdviz.models,
``from cdviz.models import tiny`` -> cdviz.models.tiny. The parent packages Python initialises on
the way are not arrows (a package's ``__init__`` importing its own submodules is no cycle). A
module in no layer, or an import of a cdviz / analyses / app module that does not exist, fails too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("cdviz", "analyses", "app")

# (layer, module prefixes), the first layer with a matching prefix wins; "cdviz" alone is the package.
LAYERS = (
    ("top", ("cdviz.cli", "cdviz.workflow", "cdviz.zoo", "cdviz.bench", "cdviz.diagnostics", "cdviz.synthetic",
             "app")),
    ("report", ("cdviz.report",)),
    ("train", ("cdviz.train",)),
    ("analyses", ("analyses",)),
    ("core", ("cdviz.types", "cdviz.errors", "cdviz.io", "cdviz.store", "cdviz.metrics", "cdviz.vat",
              "cdviz.layer_map", "cdviz.prompts", "cdviz.conversation", "cdviz.lineage", "cdviz.schema", "cdviz.evaluate",
              "cdviz.pieces", "cdviz.models", "cdviz.probes", "cdviz.record")),
)
MAY_IMPORT = {
    "core": {"core"},
    "train": {"core", "train"},
    "analyses": {"core", "analyses"},
    "report": {"core", "report"},
    "top": {"core", "train", "analyses", "report", "top"},
}
# Upward arrows on their way out, as (importer prefix, imported prefix); each leaves with the work
# that removes it. None is left.
PENDING: set[tuple[str, str]] = set()

# Streamlit scripts (run by `streamlit run` / st.navigation, not imported) and `python -m` entries.
NOT_IMPORTABLE = ("app.main", "app.app_pages")


@dataclass(frozen=True)
class Arrow:
    source: str
    target: str
    where: str  # file:line of the import


def module_files() -> dict[str, Path]:
    """{dotted module name: file} for every .py file under the packages."""
    found = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> str | None:
    if module == "cdviz":
        return "core"
    for layer, prefixes in LAYERS:
        if any(_within(module, p) for p in prefixes):
            return layer
    return None


def arrows(modules: dict[str, Path]) -> tuple[list[Arrow], list[str]]:
    """Every import between our modules, and a line per import of one of ours that does not exist."""
    found, missing = [], []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                targets = [(alias.name, None) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [(base, alias.name) for alias in node.names]
            else:
                continue
            for base, member in targets:
                if base.split(".")[0] not in PACKAGES:
                    continue
                if member is not None and f"{base}.{member}" in modules:
                    target = f"{base}.{member}"
                elif base in modules:
                    target = base
                else:
                    missing.append(f"{where}: {name} imports {base}{'.' + member if member else ''}, which does not exist")
                    continue
                if target != name:
                    found.append(Arrow(name, target, where))
    return list(dict.fromkeys(found)), missing


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a list of modules, first repeated last) per strongly connected component (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    found = []
    for component in components:
        start = min(component)
        # breadth-first from start, inside the component, back to start: a shortest cycle through it
        paths = {start: [start]}
        queue = [start]
        while queue:
            v = queue.pop(0)
            for w in sorted(graph[v] & component):
                if w == start:
                    found.append(paths[v] + [start])
                    queue = []
                    break
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    queue.append(w)
    return found


def upward(found: list[Arrow]) -> list[str]:
    bad = []
    for a in found:
        source, target = layer_of(a.source), layer_of(a.target)
        if source is None or target is None:
            continue  # reported by test_every_module_has_a_layer
        if target in MAY_IMPORT[source]:
            continue
        if any(_within(a.source, s) and _within(a.target, t) for s, t in PENDING):
            continue
        bad.append(f"{a.where}: {a.source} ({source}) imports {a.target} ({target}); {source} may import "
                   f"{', '.join(sorted(MAY_IMPORT[source]))}")
    return bad


def test_every_module_has_a_layer():
    unplaced = [m for m in module_files() if layer_of(m) is None]
    assert not unplaced, f"modules in no layer (add them to LAYERS in {Path(__file__).name}): {unplaced}"


def test_imports_name_modules_that_exist():
    _, missing = arrows(module_files())
    assert not missing, "imports of modules that do not exist:\n" + "\n".join(missing)


def test_no_import_cycles():
    found, _ = arrows(module_files())
    graph: dict[str, set[str]] = {}
    for a in found:
        graph.setdefault(a.source, set()).add(a.target)
        graph.setdefault(a.target, set())
    where = {(a.source, a.target): a.where for a in found}
    loops = cycles(graph)
    lines = [" -> ".join(c) + "\n    " + ", ".join(where[(x, y)] for x, y in zip(c, c[1:])) for c in loops]
    assert not loops, "import cycles:\n" + "\n".join(lines)


def test_no_upward_imports():
    found, _ = arrows(module_files())
    bad = upward(found)
    assert not bad, "imports that point up a layer:\n" + "\n".join(bad)


def test_pending_allowances_are_still_needed():
    """An allowance whose arrow is gone is removed, so it cannot let a new one in."""
    found, _ = arrows(module_files())
    for s, t in PENDING:
        assert any(_within(a.source, s) and _within(a.target, t) for a in found), (
            f"PENDING allows {s} -> {t}, but no such import is left: remove it from PENDING")


def test_checker_finds_cycles_and_upward_arrows():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    bad = upward([Arrow("cdviz.evaluate", "cdviz.train.data", "x:1"), Arrow("cdviz.train.data", "cdviz.metrics", "x:2"),
                  Arrow("cdviz.report.build", "analyses.misalignment", "x:3"), Arrow("analyses.common", "cdviz.train", "x:4")])
    assert [line.split(":")[0] + ":" + line.split(":")[1] for line in bad] == ["x:1", "x:3", "x:4"]


def test_every_module_imports():
    """Each module imports in one fresh interpreter (a cycle that breaks at import shows here first)."""
    names = [m for m in module_files() if not any(_within(m, p) for p in NOT_IMPORTABLE)
             and not m.endswith(".__main__")]
    code = ("import importlib, sys\nbad = []\nfor name in sys.argv[1:]:\n    try:\n        importlib.import_module(name)\n"
            "    except Exception as e:\n        bad.append(f'{name}: {type(e).__name__}: {e}')\nprint('\\n'.join(bad))\n"
            "sys.exit(1 if bad else 0)\n")
    run = subprocess.run([sys.executable, "-c", code, *names], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"modules that fail to import:\n{run.stdout}{run.stderr[-2000:]}"
