"""Program files as the command line sees them: assembly text or a JSON image.

Every command that takes a program (``asm``, ``disasm``, ``run``, and later
ones) reads it through `load_program`, so they accept the same files and
report the same one-line errors.  A JSON image is what ``popek asm -o`` writes::

    {"entry": "0x0010", "words": {"0x0010": 528, ...}, "code": ["0x0010", ...]}

``entry`` and the addresses may be numbers or strings in any base Python's
``int(x, 0)`` reads; ``code`` (the addresses assembled as instructions) is
optional and only helps the disassembler tell code from data.
"""

from __future__ import annotations

import json

from popek.errors import UserError
from popek.spec import profiles, stored
from popek.spec.asm import AsmError, assemble
from popek.spec.image import Image
from popek.spec.profiles import Profile, ProfileError

IMAGE_SUFFIX = ".json"


def profile_named(name: str, vmm: str | None = None) -> Profile:
    """The registered profile ``name``; an unknown name is the user's mistake.
    A profile a plug-in registers is known once the plug-in is imported:
    the VMM ``vmm`` (when the command names one), or a module of the
    ``popek.profiles`` entry points (`popek.registry.profile`)."""
    from popek import registry

    if vmm:
        try:
            return profiles.get(name)
        except ProfileError:
            from popek.vmm_runner import load_vmm

            load_vmm(vmm)  # its import may register the profile
    try:
        return registry.profile(name)
    except (ProfileError, registry.PluginError) as e:
        raise UserError(str(e)) from None


def read_text(path: str) -> str:
    """The program's text: a regular file within popek's size limit (a FIFO
    or a device would block or never end), UTF-8."""
    try:
        data = stored.read_bytes(path, what="file")
        return data.decode("utf-8")
    except stored.StoredError as e:
        raise UserError(str(e)) from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: cannot read: not UTF-8 text (byte {e.start})") from None


def load_program(path: str, profile: Profile) -> Image:
    """Assemble a ``.s`` file, or read a ``.json`` image, for ``profile``."""
    text = read_text(path)
    if path.endswith(IMAGE_SUFFIX):
        return image_from_json(text, file=path, word_mask=profile.arch.mask)
    try:
        return assemble(text, profile, file=path)
    except AsmError as e:
        raise UserError(str(e)) from None


def image_to_json(image: Image) -> str:
    """The image as JSON text, addresses in hex so that it reads like a listing."""
    doc = {
        "entry": f"{image.entry:#06x}",
        "words": {f"{a:#06x}": image.words[a] for a in sorted(image.words)},
        "code": [f"{a:#06x}" for a in sorted(image.code)],
    }
    return json.dumps(doc, indent=1) + "\n"


def image_from_json(text: str, *, file: str, word_mask: int) -> Image:
    """Parse `image_to_json` output (or a hand-written image) strictly: read
    within `popek.spec.stored`'s limits (size, nesting, integer length), then
    every field checked, so a bad image is one line naming the field."""
    try:
        doc = stored.loads(text, file=file)
    except stored.StoredError as e:
        raise UserError(str(e)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("words"), dict):
        raise UserError(f'{file}: an image is an object with "entry" and "words"')

    def number(value: object, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise UserError(f"{file}: {what} {str(value)[:40]} is not a number")
        if isinstance(value, str) and len(value) > stored.MAX_INT_DIGITS:
            raise UserError(f"{file}: {what} {value[:12]}... is too long for a word")
        try:
            n = value if isinstance(value, int) else int(value, 0)
        except ValueError:
            raise UserError(f"{file}: {what} {value!r} is not a number") from None
        if not 0 <= n <= word_mask:
            raise UserError(f"{file}: {what} {value!r} does not fit in a word")
        return n

    words = {number(a, "address"): number(w, f"word at {a}") for a, w in doc["words"].items()}
    entry = number(doc.get("entry", min(words, default=0)), "entry")
    code_list = doc.get("code", [])
    if not isinstance(code_list, list):
        raise UserError(f'{file}: "code" is a list of addresses, not {type(code_list).__name__}')
    code = {number(a, "code address") for a in code_list}
    return Image(words, entry, code=code)
