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
from pathlib import Path

from popek.errors import UserError
from popek.spec import profiles
from popek.spec.asm import AsmError, assemble
from popek.spec.image import Image
from popek.spec.profiles import Profile, ProfileError

IMAGE_SUFFIX = ".json"


def profile_named(name: str) -> Profile:
    """The registered profile ``name``; an unknown name is the user's mistake."""
    try:
        return profiles.get(name)
    except ProfileError as e:
        raise UserError(str(e)) from None


def read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read: {e}") from None


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
    """Parse `image_to_json` output (or a hand-written image) strictly."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{file}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("words"), dict):
        raise UserError(f'{file}: an image is an object with "entry" and "words"')

    def number(value: object, what: str) -> int:
        if isinstance(value, bool):
            raise UserError(f"{file}: {what} {value!r} is not a number")
        try:
            n = value if isinstance(value, int) else int(str(value), 0)
        except ValueError:
            raise UserError(f"{file}: {what} {value!r} is not a number") from None
        if not 0 <= n <= word_mask:
            raise UserError(f"{file}: {what} {value!r} does not fit in a word")
        return n

    words = {number(a, "address"): number(w, f"word at {a}") for a, w in doc["words"].items()}
    entry = number(doc.get("entry", min(words, default=0)), "entry")
    code = {number(a, "code address") for a in doc.get("code", [])}
    return Image(words, entry, code=code)
