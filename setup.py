"""Which packages the wheel holds, found rather than listed.

popek's import names are not its folder names (``popek.spec`` lives in
``spec/``: pyproject.toml's ``package-dir``), and setuptools' own discovery
does not follow such a mapping, so a hand-written list was the only way,
and a hand-written list forgot the subpackages once: a non-editable install
then failed on its first import.  Here every package under each mapped
folder is found with `find_packages` and named through the mapping, so a
new subpackage is in the wheel without anyone remembering to add it.
Everything else about the build is in pyproject.toml.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent


def package_dir() -> dict[str, str]:
    """pyproject.toml's mapping of import names to folders."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]["package-dir"]


def discovered_packages() -> list[str]:
    """Every package of the distribution by its import name."""
    out = set()
    for name, folder in package_dir().items():
        out.add(name)
        out.update(f"{name}.{sub}" for sub in find_packages(str(ROOT / folder)))
    return sorted(out)


if __name__ == "__main__":  # setuptools runs this file as __main__
    setup(packages=discovered_packages())
