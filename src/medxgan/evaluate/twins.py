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

import math

import numpy as np
import torch

from medxgan.evaluate.robustness import spearman

__all__ = ["twin_fidelity", "twin_agreement", "twin_effect_map", "normalised_cross_correlation"]


def _img(t) -> torch.Tensor:
    t = torch.as_tensor(t).detach().double().cpu()
    return t[0] if t.dim() == 4 else t


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a - b).pow(2).mean())
    return 10.0 * math.log10(4.0 / max(mse, 1e-12))


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
