"""Shortcut check: does an explanation reveal that the classifier looks at a spurious marker?

Phantoms written with ``medxgan synth ... --shortcut P`` put a corner marker on positives with
probability P (negatives: 0.05 P) and store its mask under ``ROOT/markers/<split>/<class>/<name>.png``
(the same relative path as the image; an all-zero PNG when the image has no marker). The lesion mask
never overlaps the marker.

Per image and method we report the relevance mass (share of sum |A|, the same |A| scoring as the
localisation metrics) that falls on the marker and on the lesion. A method that puts a large share on
the marker of images where the classifier has learnt the shortcut is *revealing* it; comparing methods
on the same images is the point (the ground truth of "what the classifier uses" is not known per image).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from medxgan.data import read_mask, resize_mask
from medxgan.data.imageio import normalize_size
from medxgan.evaluate.localisation import is_valid, score_map

__all__ = ["MARKER_DIR", "has_markers", "marker_path", "load_marker_masks", "shortcut_metrics"]

MARKER_DIR = "markers"


def has_markers(root: str | os.PathLike) -> bool:
    """True if ``root/markers/`` exists (the dataset was written with ``--shortcut``)."""
    return (Path(root) / MARKER_DIR).is_dir()


def marker_path(root: str | os.PathLike, rel: str) -> Path:
    """``root/markers/<rel>`` with a ``.png`` suffix (``rel``: the image path relative to ``root``)."""
    return (Path(root) / MARKER_DIR / rel).with_suffix(".png")


def load_marker_masks(root: str | os.PathLike, rels: Sequence[str], size) -> list[np.ndarray]:
    """Marker masks (bool H x W at ``size``, nearest-neighbour resized) for the images ``rels``.

    A missing marker file reads as an empty mask (no marker).
    """

    hw = normalize_size(size)
    out = []
    for rel in rels:
        p = marker_path(root, rel)
        if p.is_file():
            m = read_mask(p)
            out.append(resize_mask(m, hw) if hw is not None else m)
        else:
            out.append(np.zeros(hw, dtype=bool) if hw is not None else None)
    return out


def _mass(s: np.ndarray, region: np.ndarray, total: float) -> float:
    return float(s[region].sum() / total) if total > 0 else float("nan")


def shortcut_metrics(a, marker, lesion=None, mode: str = "abs") -> dict:
    """Relevance mass of map ``a`` on the marker and on the lesion.

    Args:
        a: H x W attribution map. marker: bool H x W marker mask (may be empty). lesion: H x W lesion
            mask or None (negatives / no mask).
        mode: score-map reduction (default |A|).

    Returns:
        ``marker_present`` (bool), ``mass_marker`` (NaN when no marker), ``mass_lesion`` (NaN without a
        non-empty lesion mask), ``mass_lesion_with_marker`` (= mass_lesion on images with a marker, NaN
        otherwise: compare it with ``mass_marker`` on the same images), ``marker_area`` (fraction of the
        image). An all-zero or NaN map gives NaN masses.
    """
    s = score_map(a, mode)
    mk = np.asarray(marker).astype(bool).reshape(s.shape)
    les = None if lesion is None else (np.asarray(lesion, dtype=np.float64).reshape(s.shape) > 0.5)
    present = bool(mk.any())
    nan = float("nan")
    total = float(s.sum()) if is_valid(s) else 0.0
    mass_marker = _mass(s, mk, total) if present and is_valid(s) else nan
    mass_lesion = _mass(s, les, total) if les is not None and les.any() and is_valid(s) else nan
    return {
        "marker_present": present,
        "mass_marker": mass_marker,
        "mass_lesion": mass_lesion,
        "mass_lesion_with_marker": mass_lesion if present else nan,
        "marker_area": float(mk.mean()),
    }
