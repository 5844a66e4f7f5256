"""The package's import graph, read with `ast` (module-level AND function-local imports): no circle
among spkrobust's modules, and every import goes down the layer order of docs/architecture.md,
config -> data -> nets -> training -> attacks -> evaluation -> report, with tools on top.  A
function-local import is no way around either rule (it would only hide the circle); lazy imports
are for heavy optional dependencies (torch in a torch-free layer, cupy, matplotlib)."""
from __future__ import annotations

import pytest

from helpers.wfutil import REPO
from spkrobust.tools.codedeps import import_graph
from spkrobust.tools.codedeps import imports_of as _imports

PKG = REPO / "spkrobust"
# bottom to top; the package's plumbing (errors, io, bits, text, provenance) sits below every layer, the
# CLI above them all
LAYERS = ("errors", "io", "bits", "text", "provenance", "config", "data", "nets", "training", "attacks", "evaluation", "report", "tools",
          "cli", "__main__")
KNOWN_CIRCLES: set = set()  # circles left on purpose, each with its reason (none today; none may be added)


def layer(mod: str) -> int:
    """The layer index of a module; the package itself (spkrobust/__init__) counts as the top."""
    parts = mod.split(".")
    return len(LAYERS) if len(parts) == 1 else LAYERS.index(parts[1])


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    assert all(layer(m) >= 0 for m in import_graph())  # LAYERS.index raises on a new subpackage


def test_no_import_circle():
    graph = {m: {n for n, _ in deps} for m, deps in import_graph().items()}
    circles = [c for c in _cycles(graph) if frozenset(c) not in KNOWN_CIRCLES]
    assert not circles, f"import circles (function-local imports included): {circles}"


def test_imports_go_down_the_layers():
    wrong = sorted(f"{m} -> {n} (line {line})" for m, deps in import_graph().items() for n, line in deps
                   if layer(n) > layer(m))
    assert not wrong, "imports against the layer order " + " -> ".join(LAYERS) + ":\n" + "\n".join(wrong)


@pytest.mark.parametrize("src, expected", [
    ("import spkrobust.nets.models\n", {"spkrobust.nets.models"}),
    ("def f():\n    from spkrobust.nets import fused\n", {"spkrobust.nets.fused"}),
    ("from . import vocab\n", {"spkrobust.config.vocab"}),
    ("from .vocab import DATASETS\n", {"spkrobust.config.vocab"}),
])
def test_the_reader_sees_every_import_form(tmp_path, src, expected):
    f = tmp_path / "expand.py"
    f.write_text(src)
    modules = {"spkrobust.config.expand", "spkrobust.config.vocab", "spkrobust.nets", "spkrobust.nets.fused",
               "spkrobust.nets.models", "spkrobust.config", "spkrobust"}
    assert {n for n, _ in _imports(f, "spkrobust.config.expand", modules)} == expected


def test_a_circle_is_found():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_unit_tests_mirror_the_packages():
    """tests/unit/<package>/ exists only for a real subpackage of spkrobust (scenario suites —
    workflow, slurm, cifar, fidelity, gpu — live beside tests/unit/)."""
    unit = REPO / "tests" / "unit"
    folders = sorted(p.name for p in unit.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert folders and all((PKG / f / "__init__.py").exists() for f in folders), folders
