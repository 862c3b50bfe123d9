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
