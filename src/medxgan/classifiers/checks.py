"""Checks of a classifier's predictions on labelled data that catch silently wrong set-ups.

A classifier read with the wrong output decoding (a sigmoid inside read as a logit), the wrong target
class or the wrong preprocessing usually still gives finite numbers -- but it calls every scan of a
mixed set the same class. Every command that has labelled scans (``train``, ``evaluate``) runs
:func:`prediction_check` and warns; ``train`` records the result in the run so that ``explain`` warns
again on every later use of the run.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

THRESHOLD = 0.5


def prediction_check(probs: torch.Tensor, labels: torch.Tensor, what: str, name: str = "classifier") -> dict[str, Any]:
    """Summary of the classifier's calls on labelled images (``probs`` (N,) p(target), ``labels`` (N,) 0/1),
    with ``one_class`` True (and a warning issued) when the set holds both classes but every image is
    called the same one. ``what`` names the images in the warning."""
    probs = probs.detach().float().flatten().cpu()
    labels = labels.detach().flatten().cpu().long()
    pred = probs >= THRESHOLD
    n_pos, n_neg = int((labels == 1).sum()), int((labels == 0).sum())
    rec: dict[str, Any] = {
        "n": int(len(labels)), "n_positive": n_pos, "n_negative": n_neg,
        "predicted_positive": int(pred.sum()), "predicted_negative": int((~pred).sum()),
        "accuracy": float((pred.long() == labels).float().mean()) if len(labels) else None,
        "prob_min": float(probs.min()) if len(probs) else None, "prob_max": float(probs.max()) if len(probs) else None,
    }
    rec["one_class"] = bool(n_pos and n_neg and (rec["predicted_positive"] == 0 or rec["predicted_negative"] == 0))
    if rec["one_class"]:
        side = "positive" if rec["predicted_positive"] else "negative"
        rec["warning"] = (f"classifier {name} calls every one of {what} {side} ({n_pos} positive and {n_neg} negative in truth; p "
                          f"{rec['prob_min']:.2f}-{rec['prob_max']:.2f}): its output decoding (--classifier-output), target class or "
                          "preprocessing is probably wrong, and every result built on it is meaningless")
        warnings.warn(rec["warning"], stacklevel=2)
    return rec


def warn_recorded(check: dict[str, Any] | None, run: str) -> None:
    """Warn again about a one-class classifier recorded in a run (``train``'s :func:`prediction_check`)."""
    if check and check.get("one_class"):
        warnings.warn(f"{run}: recorded at training time: {check.get('warning') or 'the classifier called every training image the same class'}",
                      stacklevel=2)
