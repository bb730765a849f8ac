"""Output folders: what medxgan may delete, and one writer per folder.

* **Marker.** Every folder the project creates for output (a run, an explanation or evaluation folder,
  the demo folder, a synthetic data set, translate outputs) holds :data:`MARKER` (a small JSON file
  naming the command that made it). Anything destructive -- ``--restart``, ``--overwrite``, the sweep of
  temp files a killed write left behind -- acts only on a marked folder, and only on names the project
  writes; an unmarked folder is refused with one line and left untouched.
* **Temp names.** Every temporary file or folder the project writes starts with :data:`TEMP_PREFIX`, a
  prefix no user file plausibly has, so a sweep never matches ``.backup.v2/`` or ``.draft.notes.tmp``.
* **Lock.** :func:`lock_out` takes an exclusive ``fcntl.flock`` on :data:`LOCK` in the folder for the
  command's lifetime and writes the holder's PID in it; a second process on the same folder is refused
  in one line naming that PID (the OS drops the lock when the holder dies, even on kill -9).

Written by hand: no library does "a folder we own" semantics; ``fcntl.flock`` is the OS primitive.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from contextlib import contextmanager
from typing import Iterable, Iterator

from medxgan.runtime.errors import MedxganError

__all__ = ["MARKER", "LOCK", "TEMP_PREFIX", "OWN_FILES", "temp_name", "is_marked", "mark", "user_entries", "is_empty",
           "require_ours", "marked_kind", "claim_out", "claimed", "sweep_temp", "lock_out", "unlock_out", "holder_pid", "check_out_not_input", "release_claim"]

MARKER = ".medxgan-output.json"
LOCK = ".medxgan-lock"
TEMP_PREFIX = ".medxgan-tmp-"
OWN_FILES = (MARKER, LOCK)

_HELD: dict[str, tuple[int, int]] = {}  # resolved folder -> (fd of the lock file, nesting count) held by this process


def temp_name(label: str) -> str:
    """A temp file/folder name the sweep recognises as the project's (``label`` makes it readable)."""
    return f"{TEMP_PREFIX}{label}"


def is_marked(path: str | os.PathLike) -> bool:
    return (Path(path) / MARKER).is_file()


def mark(path: str | os.PathLike, kind: str) -> Path:
    """Create ``path`` (parents too) if needed and write the marker (kept if already there)."""
    from medxgan.runtime.atomic import atomic_write_text
    from medxgan.runtime.version import __version__

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if not is_marked(path):
        atomic_write_text(path / MARKER, json.dumps({"made_by": "medxgan", "kind": kind, "medxgan_version": __version__}) + "\n")
    return path


def user_entries(path: str | os.PathLike) -> list[Path]:
    """The entries of ``path`` other than the marker and the lock (none for a missing folder)."""
    path = Path(path)
    if not path.is_dir():
        return []
    return [p for p in path.iterdir() if p.name not in OWN_FILES]


def is_empty(path: str | os.PathLike) -> bool:
    """True for a missing folder or one that holds nothing but the project's marker/lock."""
    return not user_entries(path)


def marked_kind(path: str | os.PathLike) -> str | None:
    """The command that made a marked folder (None: unmarked or unreadable marker)."""
    try:
        kind = json.loads((Path(path) / MARKER).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


def require_ours(path: str | os.PathLike, arg: str | None, action: str, kind: str | None = None) -> None:
    """Refuse ``action`` (e.g. "--restart") on an existing, non-empty folder that lacks the marker (or,
    with ``kind``, whose marker names another command)."""
    path = Path(path)
    if not path.is_dir() or is_empty(path):
        return
    where = f"{arg} {path}" if arg else str(path)
    if not is_marked(path):
        raise MedxganError(f"{where}: {action} only acts on a folder medxgan made, and this one has no {MARKER} marker; "
                           f"nothing in it was touched (choose another {arg or 'folder'}, or empty it yourself)", arg=arg)
    made_by = marked_kind(path)
    if kind is not None and not (made_by or "").startswith(kind):
        raise MedxganError(f"{where}: {action} acts only on a folder made by `medxgan {kind}`; this one was made by "
                           f"`medxgan {made_by}`; nothing in it was touched", arg=arg)


def claim_out(path: str | os.PathLike, kind: str, arg: str | None = "out", legacy: Iterable[str] = ()) -> Path | None:
    """Make ``path`` this command's output folder: refuse a non-empty folder that medxgan did not make
    (no marker, none of the ``legacy`` files an older medxgan wrote there), create and mark a new or
    empty one, take the lock. Returns the topmost folder this call created (None: ``path`` existed)."""
    path = Path(path)

    def refuse_foreign(ignore_temp: bool) -> None:
        entries = [p for p in user_entries(path) if not (ignore_temp and p.name.startswith(TEMP_PREFIX))]
        if entries and not is_marked(path) and not any((path / n).exists() for n in legacy):
            raise MedxganError(f"{f'{arg} ' if arg else ''}{path}: not empty and not made by medxgan (no {MARKER} marker); nothing in it was "
                               f"touched -- choose a new or empty folder", arg=arg)

    refuse_foreign(ignore_temp=True)  # before writing anything (a marker being written by a concurrent claim is no user file)
    top = None
    probe = path.absolute()
    while not probe.exists() and probe.parent != probe:
        top, probe = probe, probe.parent
    path.mkdir(parents=True, exist_ok=True)
    lock_out(path, arg)  # first the lock, then the marker: a concurrent claim is refused naming this process
    try:
        refuse_foreign(ignore_temp=False)
        if is_empty(path):
            mark(path, kind)
    except BaseException:
        release_claim(path, top)
        raise
    return top


@contextmanager
def claimed(path: str | os.PathLike, kind: str, arg: str | None = "out", legacy: Iterable[str] = ()) -> Iterator[Path]:
    """:func:`claim_out` for the length of a ``with`` block (for a folder a library function derives itself,
    such as RUN/encoder/): unlocked at the end; after a failure, removed again if the claim created it and
    nothing was written."""
    path = Path(path)
    created = claim_out(path, kind, arg, legacy)
    try:
        yield path
    except BaseException:
        release_claim(path, created)
        raise
    unlock_out(path)


def release_claim(path: str | os.PathLike, created: Path | None) -> None:
    """Unlock; a folder created by the claim (``created``: the topmost one it made) that holds nothing but
    the marker -- a refused or failed command -- is removed again, with the empty parents the claim made."""
    path = Path(path)
    unlock_out(path)
    if created is None or not path.is_dir() or not is_empty(path):
        return
    for name in OWN_FILES:
        (path / name).unlink(missing_ok=True)
    folder = path.absolute()
    try:
        while True:
            folder.rmdir()  # only ever an empty folder
            if folder == created or folder.parent == folder:
                break
            folder = folder.parent
    except OSError:
        return


def sweep_temp(path: str | os.PathLike) -> list[Path]:
    """Remove what a killed write left behind: names starting with :data:`TEMP_PREFIX`, anywhere below
    ``path`` -- and only in a marked folder (nothing at all is removed from an unmarked one)."""
    path = Path(path)
    if not is_marked(path):
        return []
    removed: list[Path] = []
    for p in list(path.rglob(TEMP_PREFIX + "*")):
        if p.is_symlink() or not p.exists():
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)  # ranks may race here
        removed.append(p)
    return removed


def holder_pid(path: str | os.PathLike) -> str:
    try:
        return (Path(path) / LOCK).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def lock_out(path: str | os.PathLike, arg: str | None = "out") -> None:
    """Take the exclusive lock of folder ``path`` (which must exist) for this process; nested calls count."""
    import fcntl

    path = Path(path)
    key = str(path.resolve())
    if key in _HELD:
        fd, n = _HELD[key]
        _HELD[key] = (fd, n + 1)
        return
    lock_file = path / LOCK
    for _ in range(5):  # the holder may unlink the file as it releases it: retry on a fresh file
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                where = f"{arg} {path}" if arg else str(path)
                raise MedxganError(f"{where}: in use by another medxgan process (PID {holder_pid(path)}); wait for it to finish "
                                   f"or choose another {arg or 'folder'}", arg=arg) from None
            raise
        try:
            same = os.stat(lock_file).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            _HELD[key] = (fd, 1)
            return
        os.close(fd)
    raise MedxganError(f"{arg} {path}: could not take its lock ({LOCK} kept changing)", arg=arg)


def unlock_out(path: str | os.PathLike) -> None:
    """Release the lock taken by :func:`lock_out` (the lock file is removed while still held)."""
    path = Path(path)
    key = str(path.resolve())
    if key not in _HELD:
        return
    fd, n = _HELD[key]
    if n > 1:
        _HELD[key] = (fd, n - 1)
        return
    del _HELD[key]
    try:
        os.unlink(path / LOCK)
    except OSError:
        pass
    os.close(fd)  # closing drops the flock


def check_out_not_input(out: str | os.PathLike, inputs: Iterable[str | os.PathLike], arg: str = "out") -> None:
    """Refuse an output folder that is one of the input folders or holds an input file (its outputs could
    replace them): outputs never overwrite inputs. A new folder inside an input folder is fine."""
    out_r = Path(out).resolve()
    for item in inputs:
        p = Path(item).resolve()
        if p == out_r or (p.is_file() and p.parent == out_r):
            raise MedxganError(f"{arg} {out}: would write among the inputs ({item}); outputs never overwrite inputs -- "
                               f"choose another {arg}", arg=arg)
