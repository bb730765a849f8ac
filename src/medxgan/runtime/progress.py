"""Progress bars and stage lines. tqdm writes to stderr; stage lines go to stdout so they can be piped.

On a terminal the bars are live tqdm bars. When stderr is not a terminal (a log file, a pipe, CI), a bar
writes one plain line every ``LINE_PERCENT`` percent of its total (every ``LINE_SECONDS`` seconds when
the total is unknown or progress is slow) and one at the end, instead of thousands of carriage-return
updates. ``MEDXGAN_PROGRESS=bar|lines|off`` overrides the choice; ``set_quiet(True)`` switches them off.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable

from tqdm.auto import tqdm


_QUIET = False
LINE_PERCENT = 10.0
LINE_SECONDS = 10.0  # issue 28: no command runs more than 10 s without a progress line in a log


def set_quiet(quiet: bool) -> None:
    """Switch every progress bar off (the CLI's --quiet), including those of library calls deep inside."""
    global _QUIET
    _QUIET = bool(quiet)


class LineProgress(tqdm):
    """A tqdm bar for a non-terminal: a plain line (``desc: 40/400 (10%) 12.3 s``) every ``LINE_PERCENT``
    percent or ``LINE_SECONDS`` seconds, and a last line at close; no carriage returns."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        self._next_pct = LINE_PERCENT
        self._last_t = time.time()
        self._printed_n: int | None = None
        kw.update(mininterval=0.0, miniters=1, leave=False, dynamic_ncols=False)
        super().__init__(*args, **kw)
        self._printed_n = self.n  # a resumed bar (initial=) starts counting from there
        if self.total:
            while self._next_pct <= 100.0 * self.n / self.total:
                self._next_pct += LINE_PERCENT

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if self.disable or not hasattr(self, "start_t"):  # tqdm's first refresh, inside __init__
            return True
        n, total, now = self.n, self.total, time.time()
        pct = 100.0 * n / total if total else None
        due = (pct is not None and pct >= self._next_pct) or now - self._last_t >= LINE_SECONDS
        if due and n != self._printed_n:
            self._line(n, total, pct, now)
        return True

    def _line(self, n: int, total: Any, pct: float | None, now: float) -> None:
        if pct is not None:
            while self._next_pct <= pct:
                self._next_pct += LINE_PERCENT
        self._last_t = now
        self._printed_n = n
        elapsed = now - self.start_t
        desc = self.desc.rstrip(": ") or "progress"
        count = f"{n}/{total} ({pct:.0f}%)" if pct is not None else f"{n}"
        post = f"  {self.postfix}" if self.postfix else ""
        self.fp.write(f"{desc}: {count} {elapsed:.1f} s{post}\n")
        self.fp.flush()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        super().set_postfix_str(s, refresh=False)  # shown on the next line, not a line of its own

    def close(self) -> None:
        if not self.disable and not getattr(self, "_closed_line", False):
            self._closed_line = True
            if self.n != self._printed_n:
                self._line(self.n, self.total, 100.0 * self.n / self.total if self.total else None, time.time())
        self.disable = True  # nothing more to write (tqdm's close would clear a terminal line)
        super().close()


def _mode() -> str:
    """"bar" on a terminal, "lines" otherwise; MEDXGAN_PROGRESS overrides."""
    m = os.environ.get("MEDXGAN_PROGRESS", "").strip().lower()
    if m in ("bar", "lines", "off"):
        return m
    try:
        return "bar" if sys.stderr.isatty() else "lines"
    except (AttributeError, ValueError):
        return "lines"


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", disable: bool | None = None, **kw: Any) -> tqdm:
    """A progress bar over ``iterable`` (or updated by hand with ``total``), suited to where stderr goes:
    a live bar on a terminal, a line every few percent elsewhere (see the module docstring)."""
    quiet_when_piped = kw.pop("quiet_when_piped", False)
    mode = _mode()
    if _QUIET or mode == "off":
        disable = True
    elif disable is None:
        disable = quiet_when_piped and mode != "bar"
    if mode == "lines" and not disable:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        return LineProgress(iterable, total=total, desc=desc, disable=False, **kw)
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
