"""Real brains that can be had without a download, made into lesion benchmarks (`medxgan demo --real-brain`).

* Colin27 (one real person's T1 MRI, 27 scans averaged; Debian package ``mricron-data``, BSD-3):
  ``/usr/share/mricron/templates/ch2bet.nii.gz`` (skull-stripped, 1 mm).
* ICBM152 2009a symmetric (the average of 152 brains; inside the ``nilearn`` wheel):
  ``nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz`` (brain only, 1 mm): the other brain
  of the cross-brain test.

Both are used the same way: axial slices, lesions inside the foreground (the brain), the options of
:class:`~medxgan.data.lesion_dataset.LesionDatasetConfig` (nothing tuned to either brain).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from medxgan.runtime.errors import MedxganError

COLIN27 = Path(os.environ.get("MEDXGAN_COLIN27", "/usr/share/mricron/templates/ch2bet.nii.gz"))
ICBM152_NAME = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


def colin27() -> Path:
    """The Colin27 volume, or MedxganError saying in one line what to install."""
    if not COLIN27.is_file():
        raise MedxganError(f"real-brain: Colin27 ({COLIN27}) is not installed: apt-get install mricron-data "
                           "(Debian/Ubuntu; or set MEDXGAN_COLIN27 to a copy of ch2bet.nii.gz)", arg="real_brain")
    return COLIN27


def icbm152() -> Path | None:
    """The ICBM152 T1 template: ``MEDXGAN_ICBM152`` when set (a copy, or another brain standing in for it), else the one
    shipped inside nilearn's wheel (found without importing nilearn), else None."""
    override = os.environ.get("MEDXGAN_ICBM152")
    if override:
        return Path(override) if Path(override).is_file() else None
    try:
        spec = importlib.util.find_spec("nilearn")
    except (ImportError, ValueError):
        return None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = Path(loc) / "datasets" / "data" / ICBM152_NAME
        if p.is_file():
            return p
    return None


def require_icbm152() -> Path:
    """The ICBM152 volume, or MedxganError saying in one line what to install."""
    p = icbm152()
    if p is None:
        where = os.environ.get("MEDXGAN_ICBM152")
        raise MedxganError(f"cross-brain: MEDXGAN_ICBM152 ({where}) is not a file" if where else
                           f"cross-brain: the ICBM152 template ({ICBM152_NAME}) was not found: pip install nilearn "
                           "(its wheel ships it; or set MEDXGAN_ICBM152 to a copy)", arg="real_brain")
    return p


def synth_real_brain(out: str | os.PathLike, n: int = 2000, size: int = 64, seed: int = 0, show_progress: bool = True,
                     preview: bool = True) -> dict[str, Any]:
    """Colin27 axial slices with inserted lesions, split by slab (train/val/test), with masks and twins."""
    from medxgan.data.lesion_dataset import LesionDatasetConfig, synthesize_lesions

    return synthesize_lesions([colin27()], out, LesionDatasetConfig(n=n, size=size, seed=seed), preview=preview,
                              overwrite=True, show_progress=show_progress)


def synth_cross_brain(out: str | os.PathLike, n: int = 300, size: int = 64, seed: int = 0, show_progress: bool = True) -> dict[str, Any]:
    """ICBM152 axial slices with inserted lesions, every image in the test split (a test set from another brain)."""
    from medxgan.data.lesion_dataset import LesionDatasetConfig, synthesize_lesions

    return synthesize_lesions([require_icbm152()], out, LesionDatasetConfig(n=n, size=size, seed=seed, split="test"), preview=True,
                              overwrite=True, show_progress=show_progress)
