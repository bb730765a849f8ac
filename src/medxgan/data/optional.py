"""The optional readers' libraries (pydicom for DICOM, nibabel for NIfTI), imported when a file first needs them."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from medxgan.runtime.errors import MedxganError

__all__ = ["import_reader"]


def import_reader(module: str, path: str | os.PathLike, reading: str, extra: str) -> ModuleType:
    """``module``, or a one-line error naming the file, what reading it needs and the extra to install: e.g.
    ``import_reader("pydicom", path, "DICOM files", "dicom")``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MedxganError(f"{path}: reading {reading} needs {module}: pip install 'medxgan[{extra}]'") from None
