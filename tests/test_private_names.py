"""No module reaches into another's private names.

A name with one leading underscore (``_counts``, ``_emit``) is its module's
own: another module that reads or writes it depends on what the owner is free
to change, so it must use the owner's API instead (issue 17, item 5).  The
check reads the package's source with `ast` and flags every attribute access
``x._name`` (one underscore, not a dunder) whose name the same module does
not define: as a class attribute or method, as ``<anything>._name = ...``,
as a function, or as a module global.  ``self._name`` counts as well: a
subclass in another module writing its base class's private state is the
case this check is for.

The rule is by name, so it is simple rather than exact (a module that
defines ``_name`` for itself may still reach another object's ``_name``
unnoticed); it catches the common case, which is all a lint rule does too
(ruff's SLF001 is of the same kind).  Genuine exceptions are listed in
`ALLOWED`, each with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("popek", "spec", "model", "fuzz", "proofs")

# Private names of the standard library and of libraries popek builds on
# that are their documented API despite the underscore.
PUBLIC_ANYWHERE = frozenset(
    {
        "_replace",  # namedtuple's documented API
        "_asdict",
        "_fields",
        "_make",
        "_exit",  # os._exit: leave a forked worker without running atexit
        "_getframe",
        # argparse has no public name for the type add_subparsers() returns;
        # the commands use it in annotations only
        "_SubParsersAction",
    }
)

# (module path relative to the root, private name): why it may be used there.
ALLOWED: dict[tuple[str, str], str] = {
    # -- by design: the machine's own collaborators share its state --------
    ("model/vmms/hardware_assisted.py", "_env"): "the VMCS state area binds to host storage",
}


def _defined(tree: ast.Module) -> set[str]:
    """Every underscore name the module defines for itself."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)  # module globals and class attributes
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.keyword) and node.arg:
            names.add(node.arg)  # C(_x=...): a field the module names itself
    return names


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in PUBLIC_ANYWHERE


def _module_name(path: Path) -> str:
    if not path.is_relative_to(ROOT):  # the rule's own test
        return path.stem
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    head = [] if parts[0] == "popek" else ["popek"]
    return ".".join(head + parts)


class _Class:
    """A class of the package: where it is, its bases (module, name), and
    the private names its own body defines (methods, class attributes,
    ``self._x = ...``)."""

    def __init__(self, module: str, node: ast.ClassDef, imported: dict[str, tuple[str, str]]):
        self.module, self.node = module, node
        self.bases = [
            imported.get(b.id, (module, b.id)) for b in node.bases if isinstance(b, ast.Name)
        ]
        self.own = {
            n for n in _defined(ast.Module(body=node.body, type_ignores=[])) if _private(n)
        }


def _classes(trees: dict[str, ast.Module]) -> dict[tuple[str, str], _Class]:
    out = {}
    for module, tree in trees.items():
        package = module if module.count(".") < 1 else module.rpartition(".")[0]
        imported: dict[str, tuple[str, str]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                for a in node.names:
                    imported[a.asname or a.name] = (base, a.name)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                out[(module, node.name)] = _Class(module, node, imported)
    return out


def _foreign(cls: _Class, classes: dict[tuple[str, str], _Class]) -> set[str]:
    """Private names ``cls`` inherits from classes of other modules."""
    names: set[str] = set()
    for key in cls.bases:
        base = classes.get(key)
        if base is None or base is cls:
            continue
        if base.module != cls.module:
            names |= base.own | _all_private(base, classes)
        else:
            names |= _foreign(base, classes)
    return names


def _all_private(cls: _Class, classes: dict[tuple[str, str], _Class]) -> set[str]:
    names = set(cls.own)
    for key in cls.bases:
        base = classes.get(key)
        if base is not None and base is not cls:
            names |= _all_private(base, classes)
    return names


def offenders(paths: list[Path]) -> dict[Path, list[tuple[int, str]]]:
    """(line, name) per file for each private name it uses but does not own:
    ``x._name`` that the module does not define, ``from m import _name``,
    and ``self._name`` (read, written or overridden) that a class inherits
    from another module."""
    trees = {
        _module_name(p): ast.parse(p.read_text(encoding="utf-8"), filename=str(p)) for p in paths
    }
    classes = _classes(trees)
    out: dict[Path, list[tuple[int, str]]] = {}
    for path, (module, tree) in zip(paths, trees.items()):
        own = _defined(tree)
        found = {
            (node.lineno, node.attr)
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own
        }
        found |= {  # from elsewhere import _name
            (node.lineno, a.name)
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            for a in node.names
            if _private(a.name)
        }
        for (m, _), cls in classes.items():
            if m != module:
                continue
            foreign = _foreign(cls, classes)
            for node in ast.walk(cls.node):
                if (
                    isinstance(node, ast.Attribute)
                    and isinstance(node.value, ast.Name)
                    and node.value.id in ("self", "cls")
                    and node.attr in foreign
                ):
                    found.add((node.lineno, node.attr))
                elif isinstance(node, ast.FunctionDef) and node.name in foreign:
                    found.add((node.lineno, node.name))  # overrides a private hook
        out[path] = sorted(found)
    return out


def _files() -> list[Path]:
    return [p for d in PACKAGE_DIRS for p in sorted((ROOT / d).rglob("*.py"))]


def test_the_walk_sees_the_package() -> None:
    rel = {str(p.relative_to(ROOT)) for p in _files()}
    assert "model/vmms/base.py" in rel and "popek/vmm.py" in rel and "spec/state.py" in rel


def test_no_module_touches_another_modules_private_names() -> None:
    bad = []
    for path, found in offenders(_files()).items():
        rel = str(path.relative_to(ROOT))
        for line, name in found:
            if (rel, name) not in ALLOWED:
                bad.append(f"{rel}:{line}: .{name} is not this module's")
    assert not bad, "use the owner's API (or list the exception in ALLOWED):\n" + "\n".join(bad)


def test_every_exception_is_still_needed() -> None:
    """An allow-list entry that no longer matches anything is dropped."""
    used = {
        (str(p.relative_to(ROOT)), name)
        for p, found in offenders(_files()).items()
        for _, name in found
    }
    assert set(ALLOWED) <= used, f"stale ALLOWED entries: {sorted(set(ALLOWED) - used)}"


def test_the_rule_catches_a_subclass_writing_its_bases_state(tmp_path: Path) -> None:
    """The check itself: ``self._x`` not defined here is flagged; names the
    module defines (attributes, functions, globals, fields) are not."""
    src = tmp_path / "m.py"
    src.write_text(
        "import os\n"
        "from .other import _theirs, public as _alias\n"
        "_GLOBAL = 1\n"
        "class A(Base):\n"
        "    _field: int = 0\n"
        "    def __init__(self):\n"
        "        self._mine = 1\n"
        "    def _helper(self):\n"
        "        return self._mine + self._field + _GLOBAL + other._helper()\n"
        "    def f(self, other):\n"
        "        self._counts.direct += 1\n"
        "        other._secret = 2\n"
        "        os._exit(0)\n"
        "        return other._hidden, self.__dict__\n",
        encoding="utf-8",
    )
    assert sorted(name for _, name in offenders([src])[src]) == ["_counts", "_hidden", "_theirs"]
