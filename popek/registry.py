"""Finding VMM classes: built-ins, the `popek.vmms` entry points, and
``package.module:Class`` given on the command line.  All loaded lazily, so a
broken plug-in only hurts the command that names it."""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import entry_points

from popek.vmm import CAPABILITIES, VMM, Support

ENTRY_POINT_GROUP = "popek.vmms"
# Modules that register profiles (``popek.spec.profiles.register``) when
# imported: how a profile of a plug-in becomes known to commands that load
# no plug-in VMM (`profile`).
PROFILE_ENTRY_POINT_GROUP = "popek.profiles"

# name -> "module:Class"; the designs this repository ships.
BUILTINS: dict[str, str] = {
    "emulator": "popek.model.vmms.emulator:Emulator",
    "trap-and-emulate": "popek.model.vmms.trap_and_emulate:TrapAndEmulate",
    "hybrid": "popek.model.vmms.hybrid:HybridVMM",
    "binary-translation": "popek.model.vmms.binary_translation:BinaryTranslationVMM",
    "paravirt": "popek.model.vmms.paravirt:ParavirtVMM",
    "hardware-assisted": "popek.model.vmms.hardware_assisted:HardwareAssistedVMM",
    "hardware-assisted+shadow": "popek.model.vmms.hardware_assisted:HardwareAssistedShadowVMM",
}


class PluginError(Exception):
    """A VMM that cannot be found, imported, or does not meet the contract."""


def _entry_points() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known() -> dict[str, str]:
    """Every VMM by name: built-ins first, then installed plug-ins."""
    found = dict(BUILTINS)
    for name, target in _entry_points().items():
        found.setdefault(name, target)
    return found


def load(spec: str) -> type[VMM]:
    """The VMM class named by ``spec``: a known name or ``package.module:Class``."""
    target = known().get(spec, spec)
    if ":" not in target:
        from popek.spec.suggest import close_names

        close = close_names(spec, known())
        hint = ("did you mean " + " or ".join(map(repr, close)) + "? " if close else "") + "give a registered name"
        names = ", ".join(sorted(known())) or "none"
        raise PluginError(f"unknown VMM {spec!r}: {hint} ({names}) or package.module:Class")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # a plug-in's import may fail in any way
        raise PluginError(f"cannot import {module_name!r} for VMM {spec!r}: {type(e).__name__}: {e}") from e
    cls = module
    for part in attr.split("."):
        cls = getattr(cls, part, None)
        if cls is None:
            raise PluginError(f"{module_name!r} has no attribute {attr!r} (VMM {spec!r})")
    validate_class(cls, spec)
    return cls


def profile(name: str):
    """The profile ``name``: registered already (the shipped ones, or by a
    plug-in imported before), or by a module of the ``popek.profiles`` entry
    points, imported on this first miss.  `ProfileError` when none has it,
    `PluginError` when such a module fails to import."""
    from popek.spec import profiles

    try:
        return profiles.get(name)
    except profiles.ProfileError:
        pass
    for ep in entry_points(group=PROFILE_ENTRY_POINT_GROUP):
        module_name = ep.value.partition(":")[0]
        try:
            importlib.import_module(module_name)
        except Exception as e:  # a plug-in's import may fail in any way
            raise PluginError(f"cannot import {module_name!r} (profiles {ep.name!r}): "
                              f"{type(e).__name__}: {e}") from e  # fmt: skip
    return profiles.get(name)


def validate_class(cls: object, spec: str = "") -> None:
    """Check what a class declares, before running anything."""
    label = spec or getattr(cls, "__name__", repr(cls))
    if not (inspect.isclass(cls) and issubclass(cls, VMM)):
        raise PluginError(f"{label!r} is not a subclass of popek.vmm.VMM")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise PluginError(f"VMM {label!r} does not implement: {missing}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise PluginError(f"VMM {label!r} must declare a non-empty `name`")
    supports = getattr(cls, "supports", None)
    if not isinstance(supports, dict) or not supports or not all(
        isinstance(k, str) and isinstance(v, Support) for k, v in supports.items()
    ):
        raise PluginError(f"VMM {label!r} must declare `supports`: a dict of profile name -> Support")
    caps = getattr(cls, "capabilities", frozenset())
    unknown = set(caps) - set(CAPABILITIES)
    if unknown:
        raise PluginError(f"VMM {label!r} declares unknown capabilities {sorted(unknown)}")
    for cap in caps:
        for method in CAPABILITIES[cap]:
            if not callable(getattr(cls, method, None)):
                raise PluginError(f"VMM {label!r} declares {cap!r} but has no method {method}()")
