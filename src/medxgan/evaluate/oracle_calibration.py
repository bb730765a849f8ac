"""The judge calibrated on validation data (issue 31): the independent oracle's decision threshold chosen so that it
accepts (calls negative) at least 90 % of the *validation* split's lesion-free twins, and its specificity on the
evaluated split's twins reported next to every oracle-validity figure.

Why: oracle validity ("the independent oracle also calls the counterfactual healthy") measures the counterfactual only
if the oracle calls truly healthy scans healthy. On a held-out phantom family an oracle called 17 % of the true
lesion-free twins negative, so its "validity 0.37" measured the oracle. The twins of the validation split (phantom
data, ``DATA/twins/val/``) are the oracle's held-out healthy references: neither the classifier, the GAN nor the oracle
trains on them, and the evaluated (test) split's twins stay untouched for reporting.

The rule (:func:`select_threshold`): the oracle accepts a counterfactual when its positive-class logit is below ``t``.
``t`` is the oracle's own decision level (logit 0, p = 0.5) when that already accepts enough validation twins (never
made stricter); otherwise the lowest level that does, placed half way between the k-th smallest twin logit and the next
larger one, so that the k smallest are accepted strictly. "Enough" is a confidence bound, not the point estimate
(since 2026-12-07, thirteenth session): k is the least number of accepted twins whose one-sided 95 % Clopper-Pearson
lower bound on the acceptance rate reaches ``target`` (k = 71 of 73 twins, 142 of 150 for 0.9). Why: with the point
rule (k = ceil(target n)) a judge set on Colin27's 73 validation twins accepted 0.904 of them and only 0.810
[0.741, 0.871] of the 147 test twins, i.e. it was stricter on unseen healthy scans than the target it was set to; a
lower bound makes ">= 0.9 of the twins" hold on unseen twins with 95 % confidence for exchangeable scans (the same
oracle then accepted 0.966 of the test twins). Where even all n twins cannot reach the bound (n < 29 for 0.9), ``t``
accepts every validation twin and the record says the bound was not reached. Evaluation folders started under the
point rule keep it on resume (``calibrate_oracle(confidence=None)``; their run.json has no ``oracle_rule``). Raising ``t`` is not
free: the oracle then also accepts more lesioned scans, so the validation positives it still calls positive (its
sensitivity at ``t``) are recorded with it. Logits, not probabilities, are compared: an oracle sure of itself saturates
float32 probabilities at 1.0, where no probability threshold separates anything.

Without an oracle, a validation split or twins in it, the threshold stays at logit 0 and the record says why.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from medxgan.evaluate.stats import aggregate
from medxgan.runtime.errors import MedxganError

__all__ = ["TWIN_ACCEPT_TARGET", "TWIN_ACCEPT_CONFIDENCE", "ORACLE_RULE", "CALIBRATION_SPLIT", "twins_to_accept",
           "acceptance_lower_bound", "select_threshold", "calibrate_oracle", "twin_specificity", "oracle_logits",
           "calibrated_oracle_prob", "judge_summary"]

TWIN_ACCEPT_TARGET = 0.9
TWIN_ACCEPT_CONFIDENCE = 0.95
ORACLE_RULE = "clopper-pearson-0.95"  # run.json's name for the rule above (absent: the point rule of older folders)
CALIBRATION_SPLIT = "val"


def twins_to_accept(n: int, target: float = TWIN_ACCEPT_TARGET, confidence: float | None = TWIN_ACCEPT_CONFIDENCE) -> int:
    """How many of ``n`` validation twins the threshold must accept: ceil(target n) without ``confidence`` (the point
    rule); else the least k whose one-sided Clopper-Pearson lower bound (beta quantile 1 - confidence of k, n - k + 1)
    is >= target, or n when none is (too few twins for the bound: the caller records it)."""
    point = max(1, math.ceil(target * n - 1e-9))
    if confidence is None:
        return point
    return next((k for k in range(point, n + 1) if acceptance_lower_bound(k, n, confidence) >= target), n)


def acceptance_lower_bound(k: int, n: int, confidence: float = TWIN_ACCEPT_CONFIDENCE) -> float:
    """The one-sided Clopper-Pearson lower bound on the acceptance rate when k of n twins are accepted."""
    from scipy.stats import beta  # lazy: a slow import; the exact binomial bound, not hand-written

    return float(beta.ppf(1.0 - confidence, k, n - k + 1)) if k > 0 else 0.0


def select_threshold(twin_logits: Sequence[float], target: float = TWIN_ACCEPT_TARGET, default: float = 0.0,
                     confidence: float | None = TWIN_ACCEPT_CONFIDENCE) -> float:
    """The logit threshold ``t`` (accept when logit < t) of the module docstring, from the validation twins' logits;
    ``confidence`` None: the point rule (older evaluation folders)."""
    if not 0.0 < target <= 1.0:
        raise MedxganError(f"oracle twin target {target!r}: must be in (0, 1]", arg="oracle_twin_target")
    v = np.sort(np.asarray(twin_logits, dtype=np.float64))
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError("select_threshold: needs at least one finite twin logit")
    k = twins_to_accept(int(v.size), target, confidence)  # the k smallest logits must be accepted
    if int(np.sum(v < default)) >= k:
        return float(default)
    kth = v[k - 1]
    above = v[v > kth]
    return float((kth + above[0]) / 2.0) if above.size else float(np.nextafter(kth, np.inf))


@torch.no_grad()
def oracle_logits(oracle: Any, images: torch.Tensor, device: torch.device | str = "cpu", batch: int = 128) -> torch.Tensor:
    """The oracle's positive-class logits (N,) float64 on the CPU, in batches."""
    return torch.cat([oracle.logit(images[i : i + batch].to(device)).double().cpu() for i in range(0, len(images), batch)]) \
        if len(images) else torch.zeros(0, dtype=torch.float64)


def calibrated_oracle_prob(logits: torch.Tensor, threshold_logit: float) -> torch.Tensor:
    """sigmoid(logit - t) in float64: the oracle's p(pos) re-centred at the calibrated threshold, so that the usual
    "valid when p < 0.5" (:func:`medxgan.evaluate.faithfulness.counterfactual_metrics`) reads "logit < t"."""
    return torch.sigmoid(logits.double() - float(threshold_logit))


def _rate(flags: torch.Tensor) -> float | None:
    return float(flags.double().mean()) if flags.numel() else None


def calibrate_oracle(oracle: Any, data: str | os.PathLike, *, size: int | None, channels: int | None, device: torch.device | str = "cpu",
                     target: float = TWIN_ACCEPT_TARGET, split: str = CALIBRATION_SPLIT,
                     confidence: float | None = TWIN_ACCEPT_CONFIDENCE, **load_options: Any) -> dict[str, Any]:
    """The calibration record (stored in results.json ``oracle_calibration`` and shown next to every validity figure):

    ``threshold_logit`` / ``threshold_prob`` (what validity uses), ``calibrated`` (True when chosen on twins),
    ``status`` (one sentence), ``target``, ``split``, ``n_twins`` / ``n_positives`` of the validation split,
    ``twin_specificity`` / ``sensitivity`` at the threshold and ``*_default`` at logit 0, ``confidence`` and
    ``twin_specificity_lower_bound`` (the Clopper-Pearson bound at the threshold; None under the point rule).
    ``load_options``: :func:`medxgan.data.load_dataset`'s ``positive``, ``negative``, ``csv``, ``skip_bad``."""
    from medxgan.data import load_dataset

    rec: dict[str, Any] = {"threshold_logit": 0.0, "threshold_prob": 0.5, "calibrated": False, "target": float(target), "split": split,
                           "confidence": confidence}
    select_threshold([0.0], target)  # the target checked before any work
    try:
        ds = load_dataset(Path(data), split=split, size=size, channels=channels, **load_options)
        empty = len(ds) == 0
    except MedxganError:
        empty = True
    if empty:
        return {**rec, "status": f"not calibrated: the data has no '{split}' split; the oracle's own threshold (p 0.5) is used"}
    if not getattr(ds, "has_twins", False):
        return {**rec, "status": f"not calibrated: the '{split}' split has no lesion-free twins (phantom data only); "
                                 "the oracle's own threshold (p 0.5) is used"}
    images, labels, _, _ = ds.tensors()
    twins, has_twin = ds.twins()
    lt = oracle_logits(oracle, twins[has_twin.bool()], device)
    if lt.numel() == 0:
        return {**rec, "status": f"not calibrated: no lesion-free twin in the '{split}' split; the oracle's own threshold (p 0.5) is used"}
    lp = oracle_logits(oracle, images[labels == 1], device)
    t = select_threshold(lt.tolist(), target, confidence=confidence)
    n, accepted = int(lt.numel()), int((lt < t).sum())
    bound = acceptance_lower_bound(accepted, n, confidence) if confidence is not None else None
    rec.update(threshold_logit=t, threshold_prob=float(torch.sigmoid(torch.tensor(t, dtype=torch.float64))), calibrated=True,
               n_twins=n, n_positives=int(lp.numel()),
               twin_specificity=_rate(lt < t), twin_specificity_default=_rate(lt < 0), sensitivity=_rate(lp >= t), sensitivity_default=_rate(lp >= 0),
               twin_specificity_lower_bound=bound)
    kept = t == 0.0
    need = (f"target {target:g}" if confidence is None else
            f"target {target:g} with {confidence:.0%} confidence: lower bound {bound:.3f}"
            + ("" if bound >= target else f", short of it: {n} twins are too few for the bound"))
    rec["status"] = (f"calibrated on the {n} lesion-free twins of the '{split}' split: "
                     + (f"the oracle's own threshold (p 0.5) already accepts {rec['twin_specificity']:.3f} of them ({need}); kept"
                        if kept else f"threshold raised to logit {t:.3f} (p {rec['threshold_prob']:.4f}), accepting {rec['twin_specificity']:.3f} "
                        f"of them ({need}; at p 0.5: {rec['twin_specificity_default']:.3f}); the oracle's sensitivity on the {rec['n_positives']} "
                        f"'{split}' positives falls from {rec['sensitivity_default']:.3f} to {rec['sensitivity']:.3f}"))
    return rec


def twin_specificity(oracle: Any, twins: torch.Tensor | None, has_twin: torch.Tensor | None, threshold_logit: float, *,
                     device: torch.device | str = "cpu", n_resamples: int = 1000, seed: int = 0) -> dict[str, Any] | None:
    """The oracle's specificity at ``threshold_logit`` on the given (evaluated split's) lesion-free twins: the share it
    accepts, ``{"mean", "lo", "hi", "n"}`` with a 95 % bootstrap interval; None without twins or oracle."""
    if oracle is None or twins is None or has_twin is None or not bool(has_twin.any()):
        return None
    lt = oracle_logits(oracle, twins[has_twin.bool()], device)
    st = aggregate([{"v": float(v < threshold_logit)} for v in lt.tolist()], n_resamples=n_resamples, seed=seed)["v"]
    return {k: st.get(k) for k in ("mean", "lo", "hi", "n")}


def _num(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}"


def _ci(st: dict[str, Any]) -> str:
    return f"{st['mean']:.3f} [{st['lo']:.3f}, {st['hi']:.3f}], n {st['n']}"


def judge_summary(calibration: dict[str, Any] | None, fallback: dict[str, Any] | None = None) -> str | None:
    """One sentence for every place that shows an oracle-validity figure (results.md, the report, the demo's summary):
    the oracle's specificity on the evaluated split's lesion-free twins at the threshold in use, and where that threshold
    came from. ``calibration``: results.json ``oracle_calibration`` (None in evaluations older than it); ``fallback``:
    the ``twin`` row's oracle validity (:func:`medxgan.evaluate.twins.oracle_twin_specificity`), used without one.
    None when neither says anything."""
    spec = (calibration or {}).get("test_twins") or fallback
    if calibration is None:
        if not spec or spec.get("mean") is None:
            return None
        return (f"Oracle specificity on the lesion-free twins: {_ci(spec)} (oracle threshold p 0.5, not calibrated: an evaluation "
                "older than the calibration). Oracle validity is only as meaningful as this (wanted: >= 0.9).")
    thr = f"logit {calibration['threshold_logit']:.3f} (p {calibration['threshold_prob']:.4f})"
    bound = calibration.get("twin_specificity_lower_bound")
    aim = (f"target {calibration['target']:g}" if bound is None else
           f"target {calibration['target']:g} with {calibration.get('confidence', TWIN_ACCEPT_CONFIDENCE):.0%} confidence, lower bound {bound:.3f}")
    of = f" of the GAN run's own data ({calibration['data']})" if calibration.get("data") else ""
    where = (f"chosen on the '{calibration.get('split')}' split's {calibration.get('n_twins')} twins{of}, accepting "
             f"{calibration['twin_specificity']:.3f} of them ({aim}; oracle sensitivity on its positives "
             f"{_num(calibration.get('sensitivity'))})" if calibration.get("calibrated") else calibration.get("status", "not calibrated"))
    head = (f"Oracle specificity on the {calibration.get('test_split') or 'evaluated'} split's lesion-free twins: {_ci(spec)}"
            if spec and spec.get("mean") is not None else "Oracle specificity on the evaluated split's twins: not measured (no twins)")
    return f"{head}; oracle threshold {thr}, {where}. Oracle validity is only as meaningful as this (wanted: >= 0.9)."
