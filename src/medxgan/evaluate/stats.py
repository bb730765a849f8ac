"""Aggregation over images: mean with a percentile-bootstrap confidence interval (SciPy), NaN-skipping."""

from __future__ import annotations

import numbers
from typing import Iterable

import numpy as np

__all__ = ["bootstrap_ci", "aggregate"]


def _to_float(v) -> float:
    """Scalar (bool/int/float/numpy/1-element torch) -> float; None and non-numbers -> NaN."""
    if v is None:
        return float("nan")
    if isinstance(v, (bool, np.bool_, numbers.Real)):
        return float(v)
    if isinstance(v, np.ndarray) and v.size == 1:
        return float(v.reshape(-1)[0])
    if hasattr(v, "numel") and v.numel() == 1:
        return float(v.item())
    return float("nan")


def bootstrap_ci(
    values: Iterable,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float, int]:
    """Mean of the finite values and a percentile-bootstrap interval of the mean.

    NaN/inf/None are skipped. The interval is ``scipy.stats.bootstrap(method="percentile")`` of the mean
    with ``rng = np.random.default_rng(seed)``: SciPy draws ``rng.integers(0, n, (n_resamples, n))`` and
    takes the ((1 - confidence)/2, (1 + confidence)/2) percentiles (numpy's default linear
    interpolation) of the resampled means. Deterministic for a seed.

    Returns (mean, lo, hi, n_valid); n_valid = 0 -> (nan, nan, nan, 0); n_valid = 1 -> (v, v, v, 1)
    (SciPy needs two values); all values equal -> (v, v, v, n) (SciPy would warn about the degenerate
    distribution).
    """
    v = np.array([_to_float(x) for x in values], dtype=np.float64)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return (float("nan"), float("nan"), float("nan"), 0)
    mean = float(v.mean())
    if n == 1 or bool(np.all(v == v[0])):
        return (mean, mean, mean, n)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    from scipy import stats  # lazy: a slow import

    ci = stats.bootstrap((v,), np.mean, n_resamples=int(n_resamples), confidence_level=confidence,
                         method="percentile", rng=np.random.default_rng(seed)).confidence_interval
    return (mean, float(ci.low), float(ci.high), n)


def _flatten(d: dict) -> dict:
    """Lists/tuples of scalars become ``key[i]`` entries; dicts ``key.sub``; other values kept."""
    out = {}
    for k, v in d.items():
        if isinstance(v, (list, tuple)):
            for i, e in enumerate(v):
                out[f"{k}[{i}]"] = e
        elif isinstance(v, dict):
            for kk, e in _flatten(v).items():
                out[f"{k}.{kk}"] = e
        else:
            out[k] = v
    return out


def aggregate(
    per_image: list[dict],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, dict]:
    """Aggregate per-image metric dicts into ``{metric: {"mean", "lo", "hi", "n", "n_invalid"}}``.

    Every key seen in any dict is a metric (first-seen order). Numbers and bools count (a bool
    aggregates into a rate, e.g. ``invalid_map`` -> fraction of invalid maps); lists/tuples are
    split into ``key[i]`` (e.g. deletion ``probs[3]``) and nested dicts into ``key.sub``. NaN, inf,
    None, non-numbers and a missing key count as invalid: skipped, and counted in ``n_invalid``
    (so n + n_invalid = len(per_image)). Metrics with no valid value get NaN mean/lo/hi.
    The same ``seed`` is used for every metric.
    """
    flat = [_flatten(d) for d in per_image]
    keys: list[str] = []
    seen = set()
    for d in flat:
        for k in d:
            if k not in seen:
                seen.add(k)
                keys.append(k)
    out: dict[str, dict] = {}
    for k in keys:
        vals = [_to_float(d.get(k)) for d in flat]
        mean, lo, hi, n = bootstrap_ci(vals, n_resamples=n_resamples, confidence=confidence, seed=seed)
        out[k] = {"mean": mean, "lo": lo, "hi": hi, "n": n, "n_invalid": len(flat) - n}
    return out

