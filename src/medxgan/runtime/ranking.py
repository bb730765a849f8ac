"""Ranking metrics of scores against binary labels, from scikit-learn: ROC AUC and average precision.

The one place that calls scikit-learn for them: classifier training (test/validation AUC) and the
pixel AUROC / AUPRC of an attribution map (``evaluate.localisation``). The convention kept around the
library: where scikit-learn raises or warns (ROC AUC with one class, average precision without
positives) we return NaN, so aggregation can count it as invalid.
"""

from __future__ import annotations

import numpy as np

__all__ = ["roc_auc", "average_precision"]


def _prep(scores, labels, need_negatives: bool = True) -> tuple[np.ndarray, np.ndarray] | None:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    n_pos = int(y.sum())
    if not np.isfinite(s).all():  # NaN/inf scores: no ranking (counted as invalid, like one class)
        return None
    return (s, y) if n_pos > 0 and (n_pos < y.size or not need_negatives) else None


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``; tied scores count one half, i.e. the
    Mann-Whitney U / (n_pos n_neg)). NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score  # lazy: a slow import

    p = _prep(scores, labels)
    return float("nan") if p is None else float(roc_auc_score(p[1], p[0]))


def average_precision(scores, labels) -> float:
    """Average precision, sum over thresholds of (R_k - R_{k-1}) P_k, step-wise without interpolation,
    tied scores entering together as one threshold (``sklearn.metrics.average_precision_score``).
    NaN without positives; 1.0 when every label is positive."""
    from sklearn.metrics import average_precision_score  # lazy: a slow import

    p = _prep(scores, labels, need_negatives=False)
    return float("nan") if p is None else float(average_precision_score(p[1], p[0]))
