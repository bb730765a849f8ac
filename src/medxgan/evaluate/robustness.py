"""Robustness metrics: how much does a map change when the input changes a little?

Map-vs-map comparisons (:func:`ssim`, :func:`spearman`, :func:`topk_overlap`) first reduce both
maps with ``localisation.score_map(., mode)`` (default ``"abs"``, as for localisation; ``"raw"``
compares signed maps). Any NaN/inf in either map -> NaN.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from medxgan.evaluate.localisation import (
    is_constant,
    is_valid,
    score_map,
    top_k_mask,
)
from medxgan.runtime import quality

__all__ = ["ssim", "spearman", "topk_overlap", "max_sensitivity"]


def _normalise01(s: np.ndarray) -> np.ndarray:
    m = np.abs(s).max()
    return s / m if m > 0 else s


def ssim(a, b, mode: str = "abs", sigma: float = 1.5) -> float:
    """Mean SSIM between two H x W maps (Wang et al. 2004), via :func:`medxgan.runtime.quality.ssim`
    (torchmetrics; the one SSIM of the package, shared with the CycleGAN evaluation).

    Each map is reduced with ``score_map(., mode)`` and divided by its own max |.|, so both lie in
    [0, 1] (in [-1, 1] for ``mode="raw"``) and only the map's *shape* is compared, not its scale; an
    all-zero map stays zero. Gaussian window sigma 1.5 (11 x 11); constants C1 = (0.01 L)^2,
    C2 = (0.03 L)^2 with data range L = 1 (2 for ``mode="raw"``); population (weighted) statistics;
    mean over the 'valid' positions only (no padding), as in the original MATLAB code. Maps must be
    at least 11 px on each side (ValueError otherwise).
    """
    x, y = score_map(a, mode), score_map(b, mode)
    if x.shape != y.shape:
        raise ValueError(f"ssim: map shapes differ: {x.shape} vs {y.shape}")
    if not (is_valid(x) and is_valid(y)):
        return float("nan")
    x, y = (torch.from_numpy(_normalise01(t))[None, None] for t in (x, y))
    return float(quality.ssim(x, y, data_range=2.0 if mode == "raw" else 1.0, sigma=sigma)[0])


def spearman(a, b, mode: str = "abs") -> float:
    """Spearman rank correlation of two maps over all pixels (``scipy.stats.spearmanr``: average ranks
    for ties).

    A constant map has no ranking: NaN (documented; aggregation counts it as invalid). We test for it
    before SciPy, which would return NaN too but with a ``ConstantInputWarning``.
    """
    x, y = score_map(a, mode), score_map(b, mode)
    if x.shape != y.shape:
        raise ValueError(f"spearman: map shapes differ: {x.shape} vs {y.shape}")
    if not (is_valid(x) and is_valid(y)) or is_constant(x) or is_constant(y):
        return float("nan")
    from scipy import stats  # lazy: a slow import

    return float(stats.spearmanr(x.ravel(), y.ravel()).statistic)


def topk_overlap(a, b, frac: float = 0.1, mode: str = "abs") -> float:
    """|top(a) ∩ top(b)| / |top(a)| with top = the round(frac H W) highest pixels (at least 1).

    Ties in raster order (the rule of ``localisation``), so two constant maps overlap fully.
    """
    if not 0 < frac <= 1:
        raise ValueError(f"topk_overlap: frac must be in (0, 1], got {frac}")
    x, y = score_map(a, mode), score_map(b, mode)
    if x.shape != y.shape:
        raise ValueError(f"topk_overlap: map shapes differ: {x.shape} vs {y.shape}")
    if not (is_valid(x) and is_valid(y)):
        return float("nan")
    k = max(1, int(round(frac * x.size)))
    return float(np.logical_and(top_k_mask(x, k), top_k_mask(y, k)).sum() / k)


def max_sensitivity(
    explain_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    radius: float = 0.02,
    n_perturb: int = 10,
    seed: int | None = None,
    norm_ord: str = "fro",
    max_examples_per_batch: int | None = None,
) -> np.ndarray:
    """Max-sensitivity (Yeh et al. 2019) via ``captum.metrics.sensitivity_max``.

    For each image, ``n_perturb`` copies get uniform noise in the L-inf ball of ``radius``
    ([-1, 1] units); the result is max ||E(x + d) - E(x)|| / ||E(x)|| (Captum divides by the norm
    of the clean explanation, or by 1 when that is zero).

    Args:
        explain_fn: N x C x H x W -> maps (N x 1 x H x W or N x H x W), e.g. ``Explainer.explain``.
            Captum runs it under ``torch.no_grad()``; we re-enable gradients around it so that
            gradient-based explainers work.
        x: N x C x H x W images.
        seed: if given, the perturbations come from a seeded generator (reproducible); otherwise
            from torch's global RNG (Captum's default).

    Returns:
        float64 numpy array (N,).
    """
    from captum.metrics import sensitivity_max  # lazy: captum import is slow

    def _explain(inp, *args, **kwargs):
        # Captum passes a 1-tuple on the clean call and expects the same structure back.
        was_tuple = isinstance(inp, tuple)
        t = inp[0] if was_tuple else inp
        with torch.enable_grad():
            out = torch.as_tensor(explain_fn(t)).detach().to(t.device)
        return (out,) if was_tuple else out

    kw = {}
    if seed is not None:
        gen = torch.Generator(device="cpu").manual_seed(int(seed))

        def _perturb(inputs, perturb_radius=radius):
            t = inputs[0] if isinstance(inputs, tuple) else inputs
            noise = torch.rand(t.shape, generator=gen, dtype=t.dtype) * 2 - 1
            return t + noise.to(t.device) * perturb_radius

        kw["perturb_func"] = _perturb
    res = sensitivity_max(
        _explain,
        x,
        perturb_radius=radius,
        n_perturb_samples=n_perturb,
        norm_ord=norm_ord,
        max_examples_per_batch=max_examples_per_batch,
        **kw,
    )
    return res.detach().double().cpu().numpy().reshape(-1)
