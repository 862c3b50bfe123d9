"""`popek run --show-storage [RANGE]`: the words of storage, after the run.

A finding that is a storage difference (``mem[0x02bf]`` differs) could not
be looked at with `popek run`, which printed registers only.  Without a
RANGE, every word that is not zero is shown (storage is mostly zeros);
with one (``0x2b8-0x2c7``, ``0x2bf``, ``0x2b8+16``), every word in it.
Eight words a row, each row led by its first address.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from popek.errors import UserError

ALL = "nonzero"  # what --show-storage means without a RANGE
PER_ROW = 8


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--show-storage", nargs="?", const=ALL, default=None, metavar="RANGE",
        help="after the run, print storage: the words in RANGE (0x2b8-0x2c7, 0x2bf or 0x2b8+16; "
        "addresses as the guest sees them), or without RANGE every nonzero word",
    )  # fmt: skip


def parse_range(text: str, size: int) -> range:
    """``A-B`` (inclusive), ``A+N`` or ``A``: numbers in any base Python reads."""
    try:
        if "+" in text:
            first, count = (int(x, 0) for x in text.split("+", 1))
            last = first + count - 1
        elif "-" in text:
            first, last = (int(x, 0) for x in text.split("-", 1))
        else:
            first = last = int(text, 0)
    except ValueError:
        raise UserError(f"--show-storage {text!r}: expected A-B, A+N or A (e.g. 0x2b8-0x2c7)") from None
    if first < 0 or last < first:
        raise UserError(f"--show-storage {text!r}: an empty or negative range")
    if last >= size:
        raise UserError(f"--show-storage {text!r}: storage has {size} words (0x0-{size - 1:#x})")
    return range(first, last + 1)


def format_storage(words: Sequence[int], spec: str, word_bits: int) -> str:
    """The storage lines `popek run` prints.  Within a row, a word that is
    not shown (zero, or outside RANGE) is dots."""
    digits = (word_bits + 3) // 4
    if spec == ALL:
        shown = [a for a, w in enumerate(words) if w]
        title = f"storage: {len(shown)} nonzero words of {len(words)} (the others are 0)"
    else:
        span = parse_range(spec, len(words))
        shown = list(span)
        title = f"storage {span[0]:#06x}-{span[-1]:#06x}"
    selected = set(shown)
    lines = [title]
    for start in sorted({a - a % PER_ROW for a in shown}):
        cells = [f"{words[a]:0{digits}x}" if a in selected else "." * digits
                 for a in range(start, min(start + PER_ROW, len(words)))]  # fmt: skip
        lines.append(f"  {start:#06x}: " + " ".join(cells))
    return "\n".join(lines)
