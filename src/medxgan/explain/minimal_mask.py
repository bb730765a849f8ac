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
compact a mask as possible.

Two options bound what "as negative as needed" means and how fine the mask may be:

* ``floor`` (a logit): t = max(min(f(x + gM (B - x)), 0), min(floor, 0)). The generator's anatomy B
  can look *more* healthy to the classifier than real healthy scans do (measured on the chest phantoms:
  generator counterfactuals at logit -5.1, real negatives at a median of -2.2), and matching that level
  made the mask rewrite healthy tissue far beyond the lesion. With the floor at the classifier's 5th
  percentile on the real negatives of the GAN's training split (``classifier_reference`` of a GAN run,
  :func:`medxgan.classifiers.reference.negative_logit_reference`), the counterfactual must be as negative as 95 % of real healthy
  scans, and no more negative than the generator's own. A floor at the median (or at the threshold)
  flipped the classifier with a partial removal that an independent oracle still called positive.
* ``scale``: the mask is optimised on a grid ``scale`` times coarser than the image and upsampled
  bilinearly, as Fong & Vedaldi do against masks that flip the classifier through scattered pixels. It is the mask-optimisation explanation of Fong & Vedaldi (ICCV 2017) with
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

from medxgan.runtime.progress import progress
from medxgan.runtime.tensors import frozen

DEFAULT_STEPS = 150
# lr 0.1 for every step stays the default (issue 32, benchmarks/performance/RESULTS.md): the early stop below (an image
# leaves the search once its counterfactual meets the target and its mask moved < stop_tol over STOP_WINDOW steps) is
# an option; with lr 0.3 it kept the quality on the chest and brain demo GANs but stopped too rarely to save time.
DEFAULT_LR = 0.1
DEFAULT_STOP_TOL = 0.01
STOP_WINDOW = 10
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


def target_logits(classifier: Any, x: Tensor, fill: Tensor, mask: Tensor, floor: float | None = None) -> Tensor:
    """The logit t (N,) the refined counterfactual must reach: min(f(x + gM (B - x)), 0), raised to
    ``min(floor, 0)`` when a floor is given."""
    with frozen(classifier), torch.no_grad():
        target = classifier.logit(x + mask * (fill - x)).float().clamp(max=0.0)
    if floor is not None:
        target = target.clamp(min=min(float(floor), 0.0))
    return target


def _upsample(mask_logits: Tensor, size: tuple[int, int]) -> Tensor:
    m = torch.sigmoid(mask_logits)
    return m if tuple(m.shape[-2:]) == tuple(size) else F.interpolate(m, size=size, mode="bilinear", align_corners=False)


def refine_mask(classifier: Any, x: Tensor, fill: Tensor, mask: Tensor, *, steps: int = DEFAULT_STEPS, lr: float = DEFAULT_LR,
                w_area: float = DEFAULT_W_AREA, w_tv: float = DEFAULT_W_TV, floor: float | None = None, scale: int = 1,
                stop_tol: float | None = None, start: Tensor | None = None) -> Tensor:
    """The minimal mask (N x 1 x H x W in (0, 1)) for scans x, in-fill ``fill`` (both N x C x H x W) and
    the generator's mask ``mask`` (the start and the reference for the target logit). ``floor``: the
    least negative logit that suffices (see the module docstring); ``scale``: optimise the mask on a grid
    ``scale`` times coarser than the image (1 = per pixel). ``stop_tol``: early stop per image: an image whose
    counterfactual meets its target and whose mask moved by less than ``stop_tol`` (max over pixels) over the last
    ``STOP_WINDOW`` steps is frozen at that mask and leaves the batch (None, the default: all ``steps`` for every image;
    ``DEFAULT_STOP_TOL`` = 0.01 was measured). ``start``: where the search starts instead of ``mask`` (N x 1 x h x w in
    (0, 1), at any resolution: average-pooled to the grid; e.g. a predicted mask); the target stays ``mask``'s."""
    x, fill, mask = x.detach(), fill.detach(), mask.detach()
    target = target_logits(classifier, x, fill, mask, floor)
    size = tuple(x.shape[-2:])
    first = mask if start is None else start.detach()
    if steps <= 0:
        return first.clone() if tuple(first.shape[-2:]) == size else F.interpolate(first, size=size, mode="bilinear", align_corners=False)
    grid = (max(1, -(-size[0] // scale)), max(1, -(-size[1] // scale))) if scale > 1 else size
    start = first if tuple(first.shape[-2:]) == grid else F.adaptive_avg_pool2d(first, grid)
    logits = torch.logit(start.clamp(1e-3, 1 - 1e-3)).clone().requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=lr)
    active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    history: list[Tensor] = []  # the mask logits before each of the last STOP_WINDOW steps
    with frozen(classifier), torch.enable_grad():
        for _ in progress(range(steps), desc=f"minimal mask of {x.shape[0]} scan(s)"):  # never silent for long (runtime.progress)
            if stop_tol is None:
                loss = mask_objective(classifier, x, fill, _upsample(logits, size), target, w_area, w_tv)
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                opt.step()
                continue
            if not _early_stop_step(classifier, (x, fill, target), logits, opt, active, (size, w_area, w_tv, stop_tol), history):
                break
    return _upsample(logits, size).detach()


def _early_stop_step(classifier: Any, data: tuple[Tensor, Tensor, Tensor], logits: Tensor, opt: torch.optim.Optimizer, active: Tensor,
                     opts: tuple[tuple[int, int], float, float, float], history: list[Tensor]) -> bool:
    """One Adam step of :func:`refine_mask` on the images still ``active`` (updated in place); False when none is left.
    An image leaves when the mask it had before this step meets the target and differs by < ``stop_tol`` from its mask
    ``STOP_WINDOW`` steps earlier (the net change over a window: Adam moves a saturated mask by little per step while it
    still drifts). Each image's loss involves only its own mask, so leaving the batch changes nothing for the others;
    a frozen image's logits are restored after every step (Adam's momentum would otherwise still move them)."""
    x, fill, target = data
    size, w_area, w_tv, stop_tol = opts
    idx = active.nonzero().flatten()
    before = logits.detach().clone()
    m = _upsample(logits[idx], size)
    xa, fa = x[idx], fill[idx]
    logit = classifier.logit(xa + m * (fa - xa)).float()
    loss = F.relu(logit - target[idx]) + w_area * m.flatten(1).mean(1) + w_tv * total_variation(m)
    opt.zero_grad(set_to_none=True)
    loss.sum().backward()
    opt.step()
    with torch.no_grad():
        done = torch.zeros_like(idx, dtype=torch.bool)
        if len(history) == STOP_WINDOW:
            moved = (m.detach() - _upsample(history[0][idx], size)).abs().flatten(1).amax(1)
            done = (logit.detach() <= target[idx]) & (moved < stop_tol)
        history.append(before)
        del history[:-STOP_WINDOW]
        frozen_now = ~active.clone()
        frozen_now[idx[done]] = True  # met the target at ``before``: keep that mask
        logits.data[frozen_now] = before[frozen_now]
        active[idx[done]] = False
    return bool(active.any())
