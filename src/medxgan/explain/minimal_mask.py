"""Minimal mask: the least of the scan that has to be replaced by its anatomy to remove the decision.

A masked generator's residual counterfactual is ``x_res = x + gM (B - x)``: the scan with its
pathology mask gM filled by the anatomy B(z1*). The generator's mask is trained for images in
general and over-covers a given scan (measured on the demo phantoms: 5-7x the lesion's area, so the
counterfactual also rewrites healthy tissue with the generator's blurrier rendering).
:func:`refine_mask` asks the classifier how little suffices: starting from gM, it finds a mask M
(per pixel in [0, 1], sigmoid-parametrised) minimising::

    relu(f(x + M (B - x)) - t) + w_area mean(M) + w_tv TV(M)

with f the classifier's positive logit and t = min(f(x + gM (B - x)), 0): the refined
counterfactual must be at least as negative as the generator's (and negative), with as small and as
compact a mask as possible. It is the mask-optimisation explanation of Fong & Vedaldi (ICCV 2017) with
a generative in-fill (FIDO, Chang et al., ICLR 2019), the in-fill here being the scan's own anatomy
from the medXGAN inversion, so the removed region is replaced by healthy tissue of the same scan and
not by blur or noise. Hand-written: it is a short Adam loop over the mask, which no library offers
for a given in-fill. Deterministic (no random start), batched (each image's loss involves only its own
mask, so a batch equals its images one by one).

Measured: benchmarks/counterfactual/RESULTS.md (fourth session).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from medxgan.runtime.tensors import frozen

DEFAULT_STEPS = 150
DEFAULT_LR = 0.1
DEFAULT_W_AREA = 1.0
DEFAULT_W_TV = 1.0


def total_variation(mask: Tensor) -> Tensor:
    """Anisotropic TV per image: mean |dM/dy| + mean |dM/dx| (N x 1 x H x W -> N)."""
    dy = (mask[..., 1:, :] - mask[..., :-1, :]).abs().flatten(1).mean(1)
    dx = (mask[..., :, 1:] - mask[..., :, :-1]).abs().flatten(1).mean(1)
    return dy + dx


def mask_objective(classifier: Any, x: Tensor, fill: Tensor, mask: Tensor, target: Tensor, w_area: float, w_tv: float) -> Tensor:
    """Per-image objective of :func:`refine_mask` (N,)."""
    logit = classifier.logit(x + mask * (fill - x)).float()
    return F.relu(logit - target) + w_area * mask.flatten(1).mean(1) + w_tv * total_variation(mask)


def refine_mask(classifier: Any, x: Tensor, fill: Tensor, mask: Tensor, *, steps: int = DEFAULT_STEPS, lr: float = DEFAULT_LR,
                w_area: float = DEFAULT_W_AREA, w_tv: float = DEFAULT_W_TV) -> Tensor:
    """The minimal mask (N x 1 x H x W in (0, 1)) for scans x, in-fill ``fill`` (both N x C x H x W) and
    the generator's mask ``mask`` (the start and the reference for the target logit)."""
    x, fill, mask = x.detach(), fill.detach(), mask.detach()
    with frozen(classifier), torch.no_grad():
        target = classifier.logit(x + mask * (fill - x)).float().clamp(max=0.0)
    if steps <= 0:
        return mask.clone()
    logits = torch.logit(mask.clamp(1e-3, 1 - 1e-3)).clone().requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=lr)
    with frozen(classifier), torch.enable_grad():
        for _ in range(steps):
            loss = mask_objective(classifier, x, fill, torch.sigmoid(logits), target, w_area, w_tv)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
    return torch.sigmoid(logits).detach()
