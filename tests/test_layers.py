"""The layers stay layers: data flows spec -> model -> fuzz/proofs -> popek
(the command line last), never back, and the wheel holds every package.

Imports are read with `ast` from the source, so an import inside a function
counts as much as one at the top of a module (a lazy import is still a
dependency), and so does one under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PACKAGE_DIR: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]

# The command line: the dispatcher, its commands and `python -m popek`.
# popek/__main__.py is the command line's second entry point (it only calls
# `popek.cli.main`), so it is counted with it rather than as library.
CLI = ("popek.cli", "popek.commands", "popek.__main__")

# What each layer must not import (a prefix forbids the module and below).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "spec": ("popek.model", "popek.fuzz", "popek.proofs", *CLI),
    "model": ("popek.fuzz", "popek.proofs", *CLI),
    "fuzz": CLI,
    "proofs": CLI,
    "library": CLI,  # the rest of popek/: everything but the command line
}


def _modules() -> dict[str, Path]:
    """Every module of the distribution by its import name."""
    out: dict[str, Path] = {}
    for package, folder in PACKAGE_DIR.items():
        base = ROOT / folder
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            parts = list(rel.parts)
            # a sub-folder mapped to a package of its own is walked there
            if parts and any(
                f"{package}.{'.'.join(parts[:i])}" in PACKAGE_DIR for i in range(1, len(parts))
            ):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


MODULES = _modules()


def _layer(module: str) -> str:
    if _under(module, CLI):
        return "cli"
    for layer in ("spec", "model", "fuzz", "proofs"):
        if _under(module, (f"popek.{layer}",)):
            return layer
    return "library"


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in ``path``, relative ones
    resolved; ``from P import name`` counts ``P.name`` too when that is a
    module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            for a in node.names:
                if f"{target}.{a.name}" in MODULES:
                    found.append((node.lineno, f"{target}.{a.name}"))
    return found


def _violations(layer: str) -> list[str]:
    out = []
    for module, path in MODULES.items():
        if _layer(module) != layer:
            continue
        for line, target in _imports(module, path):
            if _under(target, FORBIDDEN[layer]):
                out.append(f"{path.relative_to(ROOT)}:{line}: {module} imports {target}")
    return out


def test_the_walk_sees_every_layer() -> None:
    layers = {_layer(m) for m in MODULES}
    assert layers == {"spec", "model", "fuzz", "proofs", "library", "cli"}
    assert "popek.model.vmms.base" in MODULES and "popek.commands.run" in MODULES


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_one_above_it(layer: str) -> None:
    bad = _violations(layer)
    assert not bad, f"{layer} must not import {', '.join(FORBIDDEN[layer])}:\n" + "\n".join(bad)


def test_the_rule_catches_a_lazy_import(tmp_path: Path) -> None:
    """The check itself: an import inside a function, and a relative one, count."""
    src = tmp_path / "m.py"
    src.write_text(
        "def f():\n    from popek.commands.run import format_state\n"
        "from .. import cli\n",
        encoding="utf-8",
    )
    got = {t for _, t in _imports("popek.x.m", src)}
    assert "popek.commands.run" in got and "popek.cli" in got


def _runtime_edges(module: str, path: Path) -> dict[str, int]:
    """The modules ``module`` needs to run, each with the first line that
    imports it: every import that executes (at the top or inside a
    function), but not one under ``if TYPE_CHECKING:`` (annotations only),
    and ``from P import m`` of a submodule counts ``P.m``, not ``P``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    edges: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        parts = target.split(".")
        for i in range(len(parts), 0, -1):  # the module itself, or the package holding it
            name = ".".join(parts[:i])
            if name in MODULES:
                if name != module:
                    edges.setdefault(name, line)
                return

    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                target = ".".join(base[: len(base) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
            for s in subs:
                add(s, node.lineno)
            if len(subs) < len(node.names):
                add(target, node.lineno)
    return edges


def _circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_circle() -> None:
    """No two modules need each other, however indirectly: a circle is where
    "data flows one way" stops being true inside a layer, and where a lazy
    import hides a dependency that a change then trips over."""
    graph = {m: _runtime_edges(m, p) for m, p in MODULES.items()}
    circles = _circles(graph)
    text = [
        " <-> ".join(c) + "\n" + "\n".join(
            f"    {MODULES[a].relative_to(ROOT)}:{graph[a][b]}: {a} imports {b}"
            for a in c for b in c if b in graph[a]
        )
        for c in circles
    ]
    assert not circles, "import circles:\n" + "\n".join(text)


def test_the_circle_rule_sees_a_lazy_import_and_not_a_typing_one(tmp_path: Path) -> None:
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("def f():\n    from popek.spec import sem\n", encoding="utf-8")
    b.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from popek.spec import sem\n", encoding="utf-8")
    assert "popek.spec.sem" in _runtime_edges("popek.spec.a", a)
    assert "popek.spec.sem" not in _runtime_edges("popek.spec.b", b)
    assert _circles({"x": {"y": 1}, "y": {"z": 1}, "z": {"x": 1}, "w": {"x": 1}}) == [["x", "y", "z"]]


def test_the_wheel_finds_every_package() -> None:
    """setup.py finds the packages through pyproject.toml's package-dir: each
    folder of the distribution that is a package must be found there (a
    hand-written list once left the subpackages out of the wheel)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("popek_setup", ROOT / "setup.py")
    setup_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup_module)  # not as __main__: setup() is not called
    found = set(setup_module.discovered_packages())
    packages = {m for m, p in MODULES.items() if p.name == "__init__.py"}
    assert {"popek.commands", "popek.model.vmms", "popek.model.analysis"} <= found
    assert packages - found == set(), "setup.py does not find these packages"
    assert found - packages == set(), "setup.py finds packages that this test does not know"
    folders = {p.parent for p in MODULES.values()}
    loose = sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").exists())
    assert not loose, f"folders of modules without __init__.py (left out of the wheel): {loose}"
