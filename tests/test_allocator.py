"""The medxgan command's allocator settings (runtime/allocator.py): glibc's mmap threshold raised to the largest value it
accepts, the trim threshold raised, nothing without glibc or with MEDXGAN_MALLOC=default; the CLI applies them, the
library does not."""

from __future__ import annotations

import pytest

from medxgan.runtime import allocator
from medxgan.runtime.allocator import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, MMAP_THRESHOLDS, TRIM_BYTES, tune_allocator


class FakeLibc:
    """mallopt as a glibc that refuses mmap thresholds above ``limit`` (as builds whose heap is 64 MB do above 32 MB)."""

    def __init__(self, limit: int):
        self.limit, self.calls = limit, []

    def mallopt(self, param: int, value) -> int:
        v = int(value.value)
        self.calls.append((param, v))
        return int(param != M_MMAP_THRESHOLD or v <= self.limit)


def test_the_largest_accepted_threshold_is_set(monkeypatch):
    monkeypatch.delenv(allocator.ENV, raising=False)
    libc = FakeLibc(limit=32 << 20)
    assert tune_allocator(libc) == {"mmap_threshold": 32 << 20, "trim_threshold": TRIM_BYTES}
    assert libc.calls == [(M_MMAP_THRESHOLD, v) for v in MMAP_THRESHOLDS] + [(M_TRIM_THRESHOLD, TRIM_BYTES)]
    roomy = FakeLibc(limit=1 << 31)
    assert tune_allocator(roomy)["mmap_threshold"] == MMAP_THRESHOLDS[0] and len(roomy.calls) == 2


def test_nothing_changes_when_refused_opted_out_or_without_glibc(monkeypatch):
    monkeypatch.delenv(allocator.ENV, raising=False)
    refusing = FakeLibc(limit=0)
    assert tune_allocator(refusing) is None
    assert all(p == M_MMAP_THRESHOLD for p, _ in refusing.calls)  # no trim setting without the threshold
    monkeypatch.setenv(allocator.ENV, "default")
    untouched = FakeLibc(limit=1 << 31)
    assert tune_allocator(untouched) is None and untouched.calls == []
    monkeypatch.delenv(allocator.ENV)
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    assert tune_allocator() is None


def test_the_cli_tunes_its_own_process_and_the_library_does_not(monkeypatch, tmp_path):
    import medxgan
    from medxgan.cli import main

    calls = []
    monkeypatch.setattr(allocator, "tune_allocator", lambda: calls.append(1))
    assert main(["synth", "lesions", str(tmp_path / "none.nii.gz"), "--out", str(tmp_path / "o")]) == 2  # even a refused command
    assert calls == [1]
    medxgan.MedXGAN  # noqa: B018 (importing and using the library calls nothing)
    assert calls == [1]


@pytest.mark.skipif(allocator._glibc() is None, reason="glibc only")
def test_real_glibc_accepts_the_settings(monkeypatch):
    monkeypatch.delenv(allocator.ENV, raising=False)
    got = tune_allocator()
    assert got is not None and got["mmap_threshold"] in MMAP_THRESHOLDS
