"""Atomic writes: write to a temporary file in the same directory, then rename over the target.

A crash (or kill -9) leaves either the old file or the new one, never a half-written file.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from medxgan.runtime.errors import StorageError
from medxgan.runtime.outdir import LOCK, TEMP_PREFIX


def _atomic(path: str | os.PathLike, write: Callable[[Any], None], mode: str) -> Path:
    """Every OSError (a full disk, a read-only folder) becomes a StorageError naming the operation and the
    path, ``writing runs/gan/config.json: No space left on device``; the temp file is removed."""
    path = Path(path)
    operation, tmp = "creating folder", None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        operation = "writing"
        # the project's temp prefix: a sweep after a kill removes it, and nothing of the user's (outdir)
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # the last step of writing: still "writing PATH" to the user
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, StorageError):
            raise StorageError.of(operation, path.parent if operation == "creating folder" else path, exc) from exc
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return _atomic(path, lambda fh: fh.write(data), "wb")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return _atomic(path, lambda fh: fh.write(text), "w")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_jsonable(obj: Any) -> Any:
    """A JSON-able copy of settings: dict keys as strings, tuples as lists, tensors as lists, other
    objects by their str()."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "tolist"):  # tensors, arrays
        return obj.tolist()
    return str(obj)


def atomic_save_image(path: str | os.PathLike, image: "Any", format: str | None = None, **kwargs: Any) -> Path:
    """Save a PIL image atomically; the format comes from the suffix unless given."""
    path = Path(path)
    fmt = format or {".jpg": "JPEG", ".jpeg": "JPEG", ".gif": "GIF", ".tif": "TIFF", ".tiff": "TIFF"}.get(
        path.suffix.lower(), "PNG"
    )
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_replace_dir(tmp_dir: str | os.PathLike, final_dir: str | os.PathLike) -> Path:
    """Move a fully written temporary directory into place (replacing an older one). The lock file of
    the folder being replaced is carried over as a hard link (the same inode, so the lock holds on)."""
    final_dir = Path(final_dir)
    try:
        if final_dir.exists():
            lock = final_dir / LOCK
            if lock.exists() and not (Path(tmp_dir) / LOCK).exists():
                os.link(lock, Path(tmp_dir) / LOCK)
            old = final_dir.with_name(f"{TEMP_PREFIX}old-{final_dir.name}")
            if old.exists():
                shutil.rmtree(old)
            os.replace(final_dir, old)
            os.replace(tmp_dir, final_dir)
            shutil.rmtree(old)
        else:
            os.replace(tmp_dir, final_dir)
    except OSError as exc:  # the operation and the folder, one line (StorageError)
        raise StorageError.of("writing folder", final_dir, exc) from exc
    return final_dir
