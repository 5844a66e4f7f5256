"""Which library files a pipeline stage runs, for Snakemake's ``code=`` inputs (``lib("attacks")``
in ``workflow/rules/*.smk``): editing one of them reruns the stage.

A stage's code is its subpackage — every ``.py`` and ``.c`` file in it — plus every module those
files import, followed through the package (:func:`import_graph`, read with ``ast``: module-level
and function-local imports), with the ``.c`` sources of each imported subpackage module's folder.
``spkrobust.config`` is left out: what a stage reads of the config reaches it as its ``params``
slice, and the config layer is imported by every stage (editing ``vocab.py`` would rerun the whole
grid).  The top-level plumbing (``errors``, ``io``, ``bits``, ``text``) counts where it is imported.
Pure Python and no torch: the Snakefile calls it at DAG time.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

PKG = Path(__file__).resolve().parents[1]
NOT_TRACKED = ("config",)  # subpackages whose edits reach the stages through their params


def module_name(f: Path, pkg: Path = PKG) -> str:
    parts = f.relative_to(pkg.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(f: Path, mod: str, modules: set[str]) -> set[tuple[str, int]]:
    """(imported package module, line) of every import in ``f``, wherever it stands."""
    is_pkg = f.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(f.read_text(), str(f))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = mod.split(".") if is_pkg else mod.split(".")[:-1]
                here = here[:len(here) - node.level + 1]
                base = ".".join(here + ([node.module] if node.module else []))
            # `from spkrobust.nets import fused` names a module; `from spkrobust.x import f` a name
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for n in names:
            while n and n not in modules:  # `import spkrobust.a.b.c` -> the longest module prefix
                n = n.rpartition(".")[0]
            if n and n != mod:
                out.add((n, node.lineno))
    return out


def module_files(pkg: Path = PKG) -> dict[str, Path]:
    return {module_name(f, pkg): f for f in sorted(pkg.rglob("*.py"))}


def import_graph(pkg: Path = PKG) -> dict[str, set[tuple[str, int]]]:
    """``{module: {(imported module, line), ...}}`` over the package's modules."""
    files = module_files(pkg)
    return {m: imports_of(f, m, set(files)) for m, f in files.items()}


@functools.lru_cache(maxsize=None)
def _graph(pkg: Path) -> tuple[dict[str, Path], dict[str, set[str]]]:
    files = module_files(pkg)
    return files, {m: {n for n, _ in imports_of(f, m, set(files))} for m, f in files.items()}


def _tracked(m: str) -> bool:
    parts = m.split(".")
    return len(parts) > 1 and parts[1] not in NOT_TRACKED


@functools.lru_cache(maxsize=None)
def _closure(pkg: Path, subpackages: tuple[str, ...]) -> tuple[Path, ...]:
    files, graph = _graph(pkg)
    root = pkg.name
    own = [m for m in files if any(m == f"{root}.{s}" or m.startswith(f"{root}.{s}.") for s in subpackages)]
    seen, todo = set(own), list(own)
    while todo:
        m = todo.pop()
        # importing a module runs its packages' __init__ files (the root's: a lazy load_model only)
        parents = [".".join(m.split(".")[:k]) for k in range(2, m.count(".") + 1)]
        for n in list(graph[m]) + parents:
            if n not in seen and _tracked(n):
                seen.add(n)
                todo.append(n)
    seen.add(root)
    paths = {files[m] for m in seen}
    # C sources a module compiles (spkrobust/nets/fused_kernel.c, named in nets/fused.py)
    for c in pkg.rglob("*.c"):
        if c in paths or any(c.name in files[m].read_text() for m in seen if files[m].parent == c.parent):
            paths.add(c)
    return tuple(sorted(paths))


def stage_code(*subpackages: str, pkg: Path = PKG) -> list[Path]:
    """The files the stage of ``subpackages`` (e.g. ``"attacks"``) runs, sorted."""
    for s in subpackages:
        if not (pkg / s).is_dir():
            raise ValueError(f"{s!r} is not a subpackage of {pkg.name} ({', '.join(sorted(_subpackages(pkg)))})")
    return list(_closure(pkg, tuple(subpackages)))


def _subpackages(pkg: Path) -> set[str]:
    return {p.parent.name for p in pkg.glob("*/__init__.py")}
