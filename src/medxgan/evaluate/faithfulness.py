"""Faithfulness metrics: does removing what the map flags change the classifier's decision?

The classifier is a callable ``prob_fn(x) -> p`` with x a float tensor N x C x H x W in [-1, 1]
and p a tensor of shape (N,) with p(positive) (e.g. ``ClassifierAdapter.prob``). It is always
called under ``torch.no_grad()``.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from medxgan.evaluate.localisation import is_valid, ranking, score_map

__all__ = ["deletion_curve", "deletion_inputs", "deletion_scores", "counterfactual_metrics", "gaussian_blur", "DEFAULT_FRACTIONS"]

DEFAULT_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


def _as_image(x) -> torch.Tensor:
    """C x H x W or 1 x C x H x W (numpy or torch) -> float32 tensor C x H x W."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    x = x.detach()
    if x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if x.dim() == 2:
        x = x[None]
    if x.dim() != 3:
        raise ValueError(f"image: expected C x H x W (or 1 x C x H x W), got shape {tuple(x.shape)}")
    return x.float()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of C x H x W (or N x C x H x W) with a separable conv, replicate padding.

    Kernel radius ceil(3 sigma). Replicate padding works for any image size (reflect does not).
    """
    squeeze = x.dim() == 3
    xb = x[None] if squeeze else x
    if sigma <= 0:
        return x.clone()
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = (g / g.sum()).to(dtype=xb.dtype, device=xb.device)
    c = xb.shape[1]
    y = torch.nn.functional.pad(xb, (r, r, r, r), mode="replicate")
    y = torch.nn.functional.conv2d(y, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = torch.nn.functional.conv2d(y, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return y[0] if squeeze else y


def deletion_curve(
    prob_fn: Callable[[torch.Tensor], torch.Tensor],
    x,
    attribution,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    replacement: str = "mean",
    blur_sigma: float | None = None,
    mode: str = "abs",
) -> dict:
    """Deletion curve: replace the top-k fraction of pixels and re-classify.

    Args:
        prob_fn: classifier, N x C x H x W -> (N,) p(positive).
        x: one image, C x H x W (or 1 x C x H x W) in [-1, 1].
        attribution: H x W map (numpy/torch); ranked by ``score_map(attribution, mode)``, ties in
            raster order. A pixel is removed in all channels at once.
        fractions: increasing fractions in (0, 1]; k = 0 (the original image) is prepended.
        replacement: ``"mean"`` = the image's own per-channel mean; ``"blur"`` = a Gaussian-blurred
            copy of the image (fewer out-of-distribution edges).
        blur_sigma: sigma of the blur in px; default max(H, W) / 16.
        mode: score-map reduction (``"abs"`` default, ``"positive"``).

    Returns:
        dict with ``fractions`` ([0, *fractions]), ``probs`` (p(pos) per fraction, probs[0] =
        original), ``auc`` (trapezoid of probs over the fractions divided by the fraction range,
        i.e. the mean p over [0, max fraction]; lower = more faithful), ``flipped`` (p < 0.5 per
        fraction), ``invalid_map``. A NaN/inf map gives NaN probs (except k = 0), NaN auc and None
        flips for k > 0, and ``invalid_map=True``. All pixel counts are round(f H W). The images of
        all fractions go through ``prob_fn`` as one batch.
    """
    xb, ks, valid = deletion_inputs(x, attribution, fractions, replacement, blur_sigma, mode)
    with torch.no_grad():
        p = prob_fn(xb)
    return deletion_scores(p, ks, valid)


def deletion_inputs(x, attribution, fractions: Sequence[float] = DEFAULT_FRACTIONS, replacement: str = "mean",
                    blur_sigma: float | None = None, mode: str = "abs") -> tuple[torch.Tensor, list[float], bool]:
    """The images a deletion curve classifies (the first half of :func:`deletion_curve`, same arguments):
    ``(xb, ks, valid)`` with ``xb`` (1 + len(fractions)) x C x H x W (just the image for an invalid map),
    ``ks`` = [0, *fractions] and ``valid`` whether the map is finite. Lets a caller classify the images of
    many curves in one batch and score each with :func:`deletion_scores`."""
    fr = [float(f) for f in fractions]
    if not fr or any(not (0 < f <= 1) for f in fr) or any(b <= a for a, b in zip(fr, fr[1:])):
        raise ValueError(f"fractions: expected strictly increasing values in (0, 1], got {fractions}")
    img = _as_image(x)
    c, h, w = img.shape
    s = score_map(attribution, mode)
    if s.shape != (h, w):
        raise ValueError(f"attribution: shape {s.shape} does not match the image's {(h, w)}")
    ks = [0.0] + fr
    valid = is_valid(s)

    if replacement == "mean":
        repl = img.mean(dim=(1, 2), keepdim=True).expand_as(img)
    elif replacement == "blur":
        repl = gaussian_blur(img, blur_sigma if blur_sigma is not None else max(h, w) / 16.0)
    else:
        raise ValueError(f"replacement: expected 'mean' or 'blur', got {replacement!r}")

    if valid:
        order = torch.as_tensor(ranking(s), device=img.device)
        batch = []
        for f in ks:
            n = int(round(f * h * w))
            sel = torch.zeros(h * w, dtype=torch.bool, device=img.device)
            sel[order[:n]] = True
            batch.append(torch.where(sel.view(1, h, w), repl, img))
        xb = torch.stack(batch)
    else:
        xb = img[None]
    return xb, ks, valid


def deletion_scores(p, ks: list[float], valid: bool) -> dict:
    """The curve's dict (see :func:`deletion_curve`) from the classifier's p(pos) of ``deletion_inputs``' images."""
    fr = ks[1:]
    n_expected = len(ks) if valid else 1
    p = torch.as_tensor(p).detach().reshape(-1).double().cpu().numpy()
    if p.shape[0] != n_expected:
        raise ValueError(f"prob_fn: expected {n_expected} probabilities, got {p.shape[0]}")

    if not valid:
        probs = [float(p[0])] + [float("nan")] * len(fr)
        return dict(fractions=ks, probs=probs, auc=float("nan"),
                    flipped=[bool(p[0] < 0.5)] + [None] * len(fr), invalid_map=True)
    probs = [float(v) for v in p]
    kk = np.asarray(ks)
    auc = float(np.sum(np.diff(kk) * (p[1:] + p[:-1]) / 2.0) / (kk[-1] - kk[0]))  # trapezoid rule
    return dict(fractions=ks, probs=probs, auc=auc, flipped=[bool(v < 0.5) for v in p],
                invalid_map=False)


def _scalar(v) -> float:
    if v is None:
        return float("nan")
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise ValueError(f"expected one probability, got a tensor of shape {tuple(v.shape)}")
        return float(v.item())
    return float(v)


def counterfactual_metrics(
    x,
    x_neg,
    prob_neg_classifier,
    prob_neg_oracle=None,
    threshold: float = 0.1,
    decision_threshold: float = 0.5,
) -> dict:
    """Validity and proximity of a counterfactual ``x_neg`` of image ``x``.

    Args:
        x, x_neg: C x H x W (or 1 x C x H x W) images in [-1, 1].
        prob_neg_classifier: p(positive) that the explained classifier gives ``x_neg``.
        prob_neg_oracle: p(positive) that an independent oracle classifier gives ``x_neg``, or None.
        threshold: a pixel counts as changed if max over channels |x - x_neg| > threshold
            ([-1, 1] units).
        decision_threshold: a counterfactual is valid if its p(positive) < this.

    Returns:
        dict ``valid_classifier`` (float 1/0), ``valid_oracle`` (1/0, NaN without oracle),
        ``proximity_l1`` (mean |x - x_neg| over all pixels and channels), ``frac_changed``.
        Validity is a float so that it aggregates into a rate; NaN probabilities give NaN.
    """
    a, b = _as_image(x), _as_image(x_neg)
    if a.shape != b.shape:
        raise ValueError(f"x_neg: shape {tuple(b.shape)} does not match x's {tuple(a.shape)}")
    d = (a.double() - b.double()).abs()
    pc, po = _scalar(prob_neg_classifier), _scalar(prob_neg_oracle)
    return dict(
        valid_classifier=float(pc < decision_threshold) if not math.isnan(pc) else float("nan"),
        valid_oracle=float(po < decision_threshold) if not math.isnan(po) else float("nan"),
        proximity_l1=float(d.mean()),
        frac_changed=float((d.amax(dim=0) > threshold).double().mean()),
    )
