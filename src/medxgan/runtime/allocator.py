"""The C allocator's settings for the ``medxgan`` command's own process (glibc on Linux).

glibc's malloc serves a block above its mmap threshold (128 kB at start, raised as blocks are freed, to 32 MB at most)
with fresh pages from the kernel and gives them back on free, so a large tensor allocated again and again in a loop
(one occlusion pass of 128 copies holds ~30 MB of feature maps) pays the page faults that zero its pages every time.
Measured on the 2-core CPU (benchmarks/performance/RESULTS.md, issue 32): occlusion of 8 images 1.8-3.1 s with glibc's
defaults, 1.7-2.0 s with the settings below. PyTorch's CPU tuning guide recommends jemalloc or tcmalloc for this; pip
cannot install those, so the command asks glibc itself (``mallopt``, through ctypes: no library wraps it) to serve
blocks up to the largest threshold it accepts from its heap and to keep up to :data:`TRIM_BYTES` of freed memory for
reuse. The arithmetic is unchanged (PyTorch aligns every CPU tensor to 64 bytes wherever its memory comes from).

The library never changes its caller's allocator: only :func:`medxgan.cli.main` calls :func:`tune_allocator`.
``MEDXGAN_MALLOC=default`` keeps glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["tune_allocator", "MMAP_THRESHOLDS", "TRIM_BYTES", "ENV"]

ENV = "MEDXGAN_MALLOC"
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
#: mmap thresholds tried in turn (glibc refuses one above half its heap size: 32 MB on many 64-bit builds)
MMAP_THRESHOLDS = (1 << 30, 256 << 20, 32 << 20)
TRIM_BYTES = 1 << 30


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 (glibc only: musl has no mallopt thresholds to speak of)
        return libc
    except (OSError, AttributeError):
        return None


def tune_allocator(libc: ctypes.CDLL | None = None) -> dict[str, int] | None:
    """Raise glibc's mmap and trim thresholds for this process (see the module docstring); returns the values set, or
    None when nothing was changed (not glibc, ``MEDXGAN_MALLOC=default``, or glibc refused every value)."""
    if os.environ.get(ENV, "").strip().lower() == "default":
        return None
    libc = libc or _glibc()
    if libc is None:
        return None
    mmap_threshold = next((v for v in MMAP_THRESHOLDS if libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(v)) == 1), None)
    if mmap_threshold is None:
        return None
    trim = TRIM_BYTES if libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(TRIM_BYTES)) == 1 else None
    return {"mmap_threshold": mmap_threshold, **({"trim_threshold": trim} if trim else {})}
