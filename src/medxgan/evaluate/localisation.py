"""Localisation metrics: how well an attribution map points at a ground-truth mask.

Conventions (shared by every function here)
-------------------------------------------
* A map is H x W (numpy or torch; leading singleton dims such as 1 x H x W or 1 x 1 x H x W are
  squeezed). Everything is computed in numpy float64. Higher = more important.
* The metrics take a **score map** S, i.e. an attribution map already reduced by :func:`score_map`.
  The default reduction is ``"abs"`` (S = |A|): the medXGAN difference map is unsigned in meaning
  (both brightening and darkening of the lesion are evidence) and Grad-CAM is ReLU'd anyway, so |A|
  treats all methods alike. ``"positive"`` (S = max(A, 0)) is available for evidence *for* the class.
* The mask M is a bool H x W array (any numeric array is read as ``M > 0.5``), same shape as S, and
  must be non-empty; a mask covering the whole image makes the AUROC undefined (NaN).

Ordering and ties (the one rule used everywhere a "top-k" is taken)
------------------------------------------------------------------
Pixels are ranked by value, descending; equal values keep raster (row-major) order, i.e. the
first pixel in raster order wins (``np.argsort(-S, kind="stable")``). This is deterministic, but on
plateaus it favours the top of the image; :func:`localisation_metrics` reports ``constant_map`` so
that callers can see the degenerate case.

Invalid and degenerate maps
---------------------------
* NaN or +/-inf anywhere: every metric returns NaN; :func:`localisation_metrics` sets
  ``invalid_map=True``. Aggregation (``stats.aggregate``) skips NaN and counts them as invalid.
* Constant map (including all-zero): pointing game = 0 (no unique peak, counted as a miss);
  area-matched IoU and relevance rank use the raster tie rule above; Otsu IoU = 0 (nothing to
  threshold: the foreground is empty); AUROC = 0.5; AUPRC = mask prevalence |M| / (H W);
  relevance mass = NaN for an all-zero map (0/0), |M| / (H W) for a constant non-zero map.
* Pointing game with several tied maxima: a hit only if **all** tied maxima lie in M (dilated by
  ``tolerance``) -- conservative and independent of position; a constant map is always a miss.
  ``pointing_game_frac`` gives fractional credit (the share of tied maxima in M, no tolerance); Quantus's
  ``PointingGame`` counts a hit when *any* tied maximum is in M (checked in tests/test_quantus_crosscheck.py).
"""

from __future__ import annotations

import numpy as np

from medxgan.runtime.errors import MedxganError
from medxgan.runtime.ranking import average_precision, roc_auc

LOCALISATION_KEYS = (
    "pointing_game",
    "pointing_game_frac",
    "iou_area_matched",
    "iou_otsu",
    "relevance_mass",
    "relevance_rank",
    "pixel_auroc",
    "pixel_auprc",
)

__all__ = ["score_map", *LOCALISATION_KEYS, "localisation_metrics", "LOCALISATION_KEYS"]  # each key is its metric's function

_MODES = ("abs", "positive", "raw")


# ----------------------------------------------------------------------------------------------
# helpers (also used by faithfulness / robustness)
# ----------------------------------------------------------------------------------------------
def as_map(a, name: str = "map") -> np.ndarray:
    """Any H x W (or 1 x H x W, 1 x 1 x H x W) numpy/torch array -> float64 numpy H x W (a copy)."""
    if hasattr(a, "detach"):  # torch tensor, without importing torch here
        a = a.detach().cpu().double().numpy()
    a = np.array(a, dtype=np.float64)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"{name}: expected an H x W map, got shape {a.shape}")
    return a


def as_mask(m, shape=None, name: str = "mask") -> np.ndarray:
    """Mask -> bool H x W (numeric masks are read as ``> 0.5``); checks shape and non-emptiness."""
    if hasattr(m, "detach"):
        m = m.detach().cpu().numpy()
    m = np.asarray(m)
    while m.ndim > 2 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise MedxganError(f"{name}: expected an H x W mask, got shape {m.shape}")
    m = m.astype(bool) if m.dtype == bool else (m.astype(np.float64) > 0.5)
    if shape is not None and m.shape != tuple(shape):
        raise MedxganError(f"{name}: shape {m.shape} does not match the map's shape {tuple(shape)}")
    if not m.any():
        raise MedxganError(f"{name}: the mask is empty; localisation needs a non-empty mask")
    return m


def is_valid(s: np.ndarray) -> bool:
    """True if the map contains only finite values."""
    return bool(np.isfinite(s).all())


def is_constant(s: np.ndarray) -> bool:
    """True if every value equals the first (all-zero maps included). Assumes a finite map."""
    return bool(s.size == 0 or np.all(s == s.flat[0]))


def ranking(s: np.ndarray) -> np.ndarray:
    """Flat pixel indices sorted by value descending; ties in raster order (stable)."""
    return np.argsort(-s.ravel(), kind="stable")


def top_k_mask(s: np.ndarray, k: int) -> np.ndarray:
    """Bool mask of the k highest pixels of ``s`` (ties in raster order)."""
    sel = np.zeros(s.size, dtype=bool)
    sel[ranking(s)[: max(0, int(k))]] = True
    return sel.reshape(s.shape)


def _iou(sel: np.ndarray, m: np.ndarray) -> float:
    inter = np.logical_and(sel, m).sum()
    union = np.logical_or(sel, m).sum()
    return float(inter / union) if union else float("nan")


def _prep(s, m):
    s = as_map(s, "score map")
    m = as_mask(m, s.shape)
    return s, m


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------
def score_map(a, mode: str = "abs") -> np.ndarray:
    """Reduce an attribution map to a score map (float64 H x W).

    ``mode="abs"`` (default): |A| -- see the module docstring for why.
    ``mode="positive"``: max(A, 0), evidence for the positive class only.
    ``mode="raw"``: A unchanged (signed), for robustness comparisons of raw attributions.
    NaN / inf are passed through (the metrics then return NaN).
    """
    a = as_map(a, "attribution map")
    if mode == "abs":
        return np.abs(a)
    if mode == "positive":
        return np.where(np.isnan(a), a, np.maximum(a, 0.0))
    if mode == "raw":
        return a
    raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")


def pointing_game(s, m, tolerance: float = 0) -> float:
    """1.0 if the peak of ``s`` lies in ``m`` (or within ``tolerance`` px, Euclidean), else 0.0.

    Equivalent to testing the peak against ``m`` dilated by a disk of radius ``tolerance``.
    Tied maxima: a hit only if all of them are within tolerance. A constant map is a miss.
    NaN/inf map -> NaN.
    """
    s, m = _prep(s, m)
    if not is_valid(s):
        return float("nan")
    if is_constant(s):
        return 0.0
    peaks = np.argwhere(s == s.max())  # (P, 2) row, col
    if tolerance <= 0:
        return float(all(m[r, c] for r, c in peaks))
    inside = np.argwhere(m)  # (Q, 2)
    # squared distance from each peak to the nearest mask pixel
    d2 = ((peaks[:, None, :] - inside[None, :, :]) ** 2).sum(-1).min(1)
    return float(np.all(d2 <= float(tolerance) ** 2))


def pointing_game_frac(s, m) -> float:
    """Fractional pointing game: the share of the tied maxima of ``s`` that lie in ``m`` (1 peak: 0 or 1, as
    :func:`pointing_game`). Between our strict rule (all tied maxima inside) and Quantus's "any tied maximum
    inside". A constant map is a miss (0). NaN/inf map -> NaN."""
    s, m = _prep(s, m)
    if not is_valid(s):
        return float("nan")
    if is_constant(s):
        return 0.0
    peaks = np.argwhere(s == s.max())
    return float(np.mean([m[r, c] for r, c in peaks]))


def iou_area_matched(s, m) -> float:
    """IoU of the top-|M| pixels of ``s`` with ``m`` (ties in raster order). NaN map -> NaN."""
    s, m = _prep(s, m)
    if not is_valid(s):
        return float("nan")
    return _iou(top_k_mask(s, int(m.sum())), m)


def otsu_threshold_bin(values01: np.ndarray, nbins: int = 256) -> tuple[np.ndarray, int]:
    """Otsu's method (``skimage.filters.threshold_otsu``) on a ``nbins`` histogram of values in [0, 1]
    (min 0 and max 1, as :func:`iou_otsu` normalises them).

    Returns (bin index of every value, k*): k* maximises the between-class variance w0 w1 (mu0 - mu1)^2
    over splits "bins <= k | bins > k" (first maximum on ties), and the foreground is
    ``bin index > k*``. scikit-image returns the *centre* of bin k* as the threshold and its foreground
    is ``value > threshold``, which would also count the upper half of bin k*; we keep our documented
    class boundary (whole bins: the split Otsu's criterion actually scored), so we map its threshold
    back to k* and compare bins, not values.
    """
    from skimage.filters import threshold_otsu  # lazy: a slow import

    v = np.asarray(values01, dtype=np.float64).ravel()
    idx = np.minimum((v * nbins).astype(np.int64), nbins - 1)  # = np.histogram's bins on [0, 1]
    t = threshold_otsu(v, nbins=nbins)  # (k* + 0.5) / nbins, exact in binary floating point
    return idx, int(np.floor(t * nbins))


def iou_otsu(s, m) -> float:
    """IoU of the Otsu foreground of ``s`` (min-max normalised to [0, 1], 256 bins) with ``m``.

    Constant map -> 0.0 (empty foreground). NaN map -> NaN.
    """
    s, m = _prep(s, m)
    if not is_valid(s):
        return float("nan")
    if is_constant(s):
        return 0.0
    lo, hi = s.min(), s.max()
    idx, k = otsu_threshold_bin((s - lo) / (hi - lo))
    return _iou((idx > k).reshape(s.shape), m)


def relevance_mass(s_pos, m) -> float:
    """Sum of ``s_pos`` inside ``m`` / total sum (``s_pos >= 0``). All-zero or NaN map -> NaN."""
    s, m = _prep(s_pos, m)
    if not is_valid(s):
        return float("nan")
    if (s < 0).any():
        raise ValueError("relevance_mass: the score map must be non-negative (use score_map first)")
    total = s.sum()
    return float(s[m].sum() / total) if total > 0 else float("nan")


def relevance_rank(s, m) -> float:
    """Fraction of the top-|M| pixels (ties in raster order) that lie in ``m`` (precision at |M|).

    Equals |top ∩ M| / |M|, i.e. the numerator of :func:`iou_area_matched` divided by |M|.
    """
    s, m = _prep(s, m)
    if not is_valid(s):
        return float("nan")
    n = int(m.sum())
    return float(np.logical_and(top_k_mask(s, n), m).sum() / n)


def pixel_auroc(s, m) -> float:
    """AUROC of ``s`` as a per-pixel score for ``m`` (:func:`medxgan.runtime.ranking.roc_auc`,
    scikit-learn: ties count one half). Constant map -> 0.5. Mask covering the whole image (no
    negatives) or NaN map -> NaN.
    """
    s, m = _prep(s, m)
    if not is_valid(s):
        return float("nan")
    return roc_auc(s, m)


def pixel_auprc(s, m) -> float:
    """Average precision of ``s`` for ``m`` (:func:`medxgan.runtime.ranking.average_precision`,
    scikit-learn): sum over thresholds of (R_k - R_{k-1}) P_k, step-wise (no interpolation); pixels with
    equal scores enter together as one threshold. Constant map -> prevalence |M| / (H W). NaN map -> NaN.
    """
    s, m = _prep(s, m)
    if not is_valid(s):
        return float("nan")
    return average_precision(s, m)


def localisation_metrics(a, m, mode: str = "abs", tolerance: float = 0) -> dict:
    """All localisation metrics of attribution map ``a`` against mask ``m``.

    ``a`` is reduced with :func:`score_map` (``mode``) first. Returns a dict with the keys
    :data:`LOCALISATION_KEYS` (floats, NaN when undefined) plus ``invalid_map`` (NaN/inf in the
    map: all metrics NaN) and ``constant_map`` (documented tie behaviour applied).
    ``relevance_mass`` is NaN when the score map has negative values (``mode="raw"``).
    """
    s = score_map(a, mode)
    mm = as_mask(m, s.shape)
    if not is_valid(s):
        out = {k: float("nan") for k in LOCALISATION_KEYS}
        out.update(invalid_map=True, constant_map=False)
        return out
    out = {
        "pointing_game": pointing_game(s, mm, tolerance=tolerance),
        "pointing_game_frac": pointing_game_frac(s, mm),
        "iou_area_matched": iou_area_matched(s, mm),
        "iou_otsu": iou_otsu(s, mm),
        "relevance_mass": relevance_mass(s, mm) if (s >= 0).all() else float("nan"),
        "relevance_rank": relevance_rank(s, mm),
        "pixel_auroc": pixel_auroc(s, mm),
        "pixel_auprc": pixel_auprc(s, mm),
        "invalid_map": False,
        "constant_map": is_constant(s),
    }
    return out

