"""Ground truth for counterfactuals: scores against a positive scan's lesion-free twin.

The phantoms (``medxgan synth``) write, for every positive x, its twin t: the same subject rendered
without the lesion (``DATA/twins/``, mirroring the images). The twin is the ideal negative
counterfactual of x, and |x - t| is exactly the lesion's effect (the ceiling for any map). Users' own
data has no twins; then none of this is computed.

* :func:`twin_fidelity` -- how close a counterfactual is to the twin: MAE and PSNR (dB, peak-to-peak 2
  for [-1, 1] images, as :func:`medxgan.runtime.tensors.psnr`), next to the same figures for the input
  itself (the do-nothing counterfactual) and their difference ``psnr_gain`` (> 0: closer than x).
* :func:`twin_agreement` -- how well a map's |A| agrees with |x - t| (channel mean): pixel Spearman
  correlation and normalised cross-correlation.
* :func:`twin_effect_map` -- |x - t| as a 1 x H x W map, scored by the localisation metrics like any
  method (the "twin" row of the benchmark).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medxgan.evaluate.robustness import spearman
from medxgan.explain.base import Explanation
from medxgan.explain.counterfactual import image_key
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.quality import psnr

__all__ = ["twin_fidelity", "twin_agreement", "twin_effect_map", "normalised_cross_correlation", "TwinEffect", "prepare_twin_infill",
           "oracle_twin_specificity"]


def _img(t) -> torch.Tensor:
    t = torch.as_tensor(t).detach().double().cpu()
    return t[0] if t.dim() == 4 else t


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(psnr(a[None], b[None])[0])


def twin_fidelity(x, x_cf, twin) -> dict:
    """C x H x W images in [-1, 1] -> ``mae``, ``psnr`` (x_cf vs twin), ``mae_input``, ``psnr_input`` (x vs
    twin) and ``psnr_gain`` = psnr - psnr_input."""
    a, c, t = _img(x), _img(x_cf), _img(twin)
    if not (a.shape == c.shape == t.shape):
        raise ValueError(f"twin_fidelity: shapes differ: {tuple(a.shape)}, {tuple(c.shape)}, {tuple(t.shape)}")
    p, p0 = _psnr(c, t), _psnr(a, t)
    return dict(mae=float((c - t).abs().mean()), psnr=p, mae_input=float((a - t).abs().mean()), psnr_input=p0, psnr_gain=p - p0)


def twin_effect_map(x, twin) -> torch.Tensor:
    """|x - twin| averaged over channels: 1 x H x W float32."""
    return (_img(x) - _img(twin)).abs().mean(0, keepdim=True).float()


def normalised_cross_correlation(a, b) -> float:
    """Pearson correlation of the pixels of two maps (NaN when either is constant)."""
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def twin_agreement(attribution, x, twin) -> dict:
    """``spearman`` and ``ncc`` between |A| (H x W or 1 x H x W) and |x - twin|."""
    a = np.abs(np.asarray(torch.as_tensor(attribution).detach().double().cpu()).squeeze())
    e = twin_effect_map(x, twin)[0].double().numpy()
    if a.shape != e.shape:
        raise ValueError(f"twin_agreement: map {a.shape} and images {e.shape} differ in size")
    return dict(spearman=spearman(a, e, mode="abs"), ncc=normalised_cross_correlation(a, e))


class TwinEffect:
    """The ground-truth "method" of a benchmark with twins: map |x - twin| for each known scan (looked up
    by its exact pixels; any other image, e.g. a noisy copy, gets a NaN map, which the runner counts as
    invalid), extras ``x_neg`` = the twin and its ``prob_neg``, so its row reports the localisation
    ceiling and how often the true lesion-free twin is negative for the classifier and the oracle.

    It has the :class:`~medxgan.explain.base.Explainer` call shape (``name``, ``explain``) without being
    one: it explains no classifier."""

    name = "twin"
    ground_truth = True

    def __init__(self, classifier: Any, images: torch.Tensor, twins: torch.Tensor, has_twin: torch.Tensor):
        self.classifier = classifier
        self._table = {image_key(images[i]): twins[i] for i in range(len(images)) if bool(has_twin[i])}

    def explain(self, images: torch.Tensor) -> Any:
        maps, negs = [], []
        for x in images:
            t = self._table.get(image_key(x))
            maps.append(twin_effect_map(x, t) if t is not None else torch.full((1, *x.shape[-2:]), float("nan")))
            negs.append(t if t is not None else torch.full_like(x, float("nan")))
        x_neg = torch.stack(negs).float()
        dev = next(self.classifier.parameters()).device if hasattr(self.classifier, "parameters") else "cpu"
        with torch.no_grad():
            p = self.classifier.prob(x_neg.nan_to_num(0.0).to(dev)).float().cpu()
        return Explanation(maps=torch.stack(maps), extras={"x_neg": x_neg, "prob_neg": p})



def prepare_twin_infill(engine: Any, images: torch.Tensor, twins: torch.Tensor | None, has_twin: torch.Tensor | None) -> None:
    """For the in-fill ablation's ceiling (``--infill twin``): hand the engine the lesion-free twin of each evaluated scan,
    looked up by its exact pixels. Every other in-fill is left without them (explain/infill.py never passes them on);
    without twins in the data the ``twin`` in-fill is a one-line error."""
    if engine is None or getattr(getattr(engine, "minimal_mask", None), "infill", "gan") != "twin":
        return
    if twins is None or has_twin is None or not bool(has_twin.any()):
        raise MedxganError("--infill twin: the data has no lesion-free twins (DATA/twins/, phantom data only)", arg="infill")
    engine.infill_twins = {image_key(images[i]): twins[i] for i in range(len(images)) if bool(has_twin[i])}


def oracle_twin_specificity(methods: dict[str, Any], calibration: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The independent oracle's specificity on the lesion-free twins: the share of true healthy twins it calls negative
    (the ``twin`` row's oracle validity), ``{"mean", "lo", "hi", "n"}``; None without twins or without an oracle. Every
    oracle-validity figure is only as meaningful as this (on a held-out phantom family an oracle called 17 % of the
    twins negative, issue 31). With ``calibration`` (results.json ``oracle_calibration``) its ``test_twins`` figure (every twin of
    the evaluated split, at the calibrated threshold, :mod:`medxgan.evaluate.oracle_calibration`) is returned instead."""
    if calibration and (calibration.get("test_twins") or {}).get("mean") is not None:
        return {k: calibration["test_twins"].get(k) for k in ("mean", "lo", "hi", "n")}
    st = ((methods.get("twin") or {}).get("metrics") or {}).get("counterfactual.valid_oracle")
    if not st or st.get("mean") is None or st.get("n", 0) == 0:
        return None
    return {k: st.get(k) for k in ("mean", "lo", "hi", "n")}
