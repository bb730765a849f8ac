"""Progress bars and stage lines. tqdm writes to stderr; stage lines go to stdout so they can be piped."""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable

from tqdm.auto import tqdm


_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Switch every progress bar off (the CLI's --quiet), including those of library calls deep inside."""
    global _QUIET
    _QUIET = bool(quiet)


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", disable: bool | None = None, **kw: Any) -> tqdm:
    quiet_when_piped = kw.pop("quiet_when_piped", False)
    if _QUIET:
        disable = True
    elif disable is None:
        disable = quiet_when_piped and not sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, leave=False, disable=disable, **kw)


class Stage:
    """`with Stage("train classifier"):` prints a start line and the elapsed time at the end."""

    def __init__(self, name: str, stream: Any = None):
        self.name = name
        self.stream = stream or sys.stdout
        self.seconds = 0.0

    def __enter__(self) -> "Stage":
        self.t0 = time.perf_counter()
        print(f"[medxgan] {self.name} ...", file=self.stream, flush=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.t0
        if exc[0] is None:
            print(f"[medxgan] {self.name}: done in {self.seconds:.1f} s", file=self.stream, flush=True)
