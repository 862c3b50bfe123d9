"""A program image: words to place in storage, and where to start."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Image:
    words: dict[int, int]  # physical address -> word
    entry: int = 0
    symbols: dict[str, int] = field(default_factory=dict)
    # address of an instruction's first word -> (file, line) it came from
    lines: dict[int, tuple[str, int]] = field(default_factory=dict)
    # addresses assembled as instructions (the rest is data)
    code: set[int] = field(default_factory=set)
