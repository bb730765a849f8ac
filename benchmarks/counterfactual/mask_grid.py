"""The minimal mask's target and grid, side by side on one trained demo (a development tool).

Inverts the 30 held-out predicted positives that `medxgan evaluate` explains in `medxgan demo` (same
selection, seed 0; `--steps` Adam steps x 1 start, 200 by default as in the demo until 2026-12-06), once, then refines the generator's mask
with each variant (:func:`medxgan.explain.minimal_mask.refine_mask`, 150 steps) and scores the
difference map M |x - B| and LIG along the straight path from the counterfactual to the scan
(area-matched IoU, pointing game), the counterfactual's validity (classifier, oracle), its PSNR gain
over the input against the lesion-free twin, the mask's area (> 0.5) over the lesion's, the share of the lesion it
covers and the mask itself scored as a map (area-matched IoU). The floor
of the "healthy" target is the classifier's 5th percentile on the train split's negatives, as
`medxgan train` stores it.

    python benchmarks/counterfactual/mask_grid.py DEMO_DIR [--targets match healthy] [--scales 1 2 4] [--areas 1] [--tvs 1]
        [--fills anatomy additive texture:0.7] [--w-min 1] [--json out.jsonl]

``--fills`` (what the mask fills the scan with; the library's ``gan`` in-fill is ``anatomy``): ``anatomy`` -- B(z1*), the
generator's anatomy; ``blur`` -- the library's blur in-fill of the scan; ``additive`` -- x + (B - G(z1*, z2*)), the scan minus the generator's pathology change
(keeps the scan's noise and fine detail); ``texture:S`` -- B plus the fine detail of the reconstruction residual,
B + hp_S(x - G(z1*, z2*)) with hp_S the residual minus its Gaussian blur of sigma S pixels (keeps the scan's
noise, replaces the rest); ``twin`` -- the phantom's lesion-free twin (a what-if bound: the in-fill of a
generator that reproduced each scan exactly outside its lesion; not available for real data); ``blend:BETA`` --
(1 - BETA) B + BETA twin, the way from today's anatomy to that bound. ``--w-min``: the inversion's minimality weight
(the `default` preset: 1).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medxgan.classifiers.reference import negative_logit_reference
from medxgan.data import load_dataset
from medxgan.evaluate.localisation import iou_area_matched, pointing_game
from medxgan.evaluate.selection import select_images
from medxgan.explain.counterfactual import MaskPath
from medxgan.explain.lig import latent_integrated_gradients
from medxgan.explain.minimal_mask import refine_mask
from medxgan.explain.model import MedXGANModel
from medxgan.gan.inversion import psnr


def _mean(fn, maps: torch.Tensor, masks: torch.Tensor, scored: torch.Tensor) -> float:
    """Mean of ``fn`` over the ``scored`` images (those with a lesion: a classifier's false positives have an empty mask)."""
    idx = scored.nonzero().flatten().tolist()
    return round(float(np.mean([fn(maps[i, 0].abs().numpy(), masks[i, 0].numpy() > 0.5) for i in idx])), 3)


class FillPath(torch.nn.Module):
    """The straight path x + (1 - alpha) M (fill - x) for one scan, in the (z1, alpha z2*) form LIG takes."""

    def __init__(self, x: torch.Tensor, fill: torch.Tensor, mask: torch.Tensor, z2: torch.Tensor):
        super().__init__()
        self.x, self.fill, self.mask, self.z2 = x[None], fill[None], mask[None], z2.reshape(1, -1)

    def forward(self, z1: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        alpha = (w * self.z2).sum(1) / self.z2.pow(2).sum().clamp(min=1e-12)
        return self.x + (1 - alpha).view(-1, 1, 1, 1) * self.mask * (self.fill - self.x)


def gaussian_blur(t: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (radius 3 sigma, reflect padding) of N x C x H x W. In torch rather than
    scipy.ndimage (other truncation and edge mode) so that the recorded texture rows reproduce exactly."""
    r = max(1, int(round(3 * sigma)))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=t.dtype) ** 2 / (2 * sigma**2))
    k = k / k.sum()
    c = t.shape[1]
    t = F.pad(t, (r, r, r, r), mode="reflect")
    t = F.conv2d(t, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(t, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def make_fill(name: str, x: torch.Tensor, x_pos: torch.Tensor, base: torch.Tensor, twin: torch.Tensor | None = None) -> torch.Tensor:
    """The in-fill of ``--fills`` (see the module docstring)."""
    if name == "anatomy":
        return base
    if name == "twin" or name.startswith("blend:"):  # what-if bounds: the phantom's lesion-free twin as (part of) the in-fill
        if twin is None:
            raise SystemExit(f"--fills {name}: the data has no twins/")
        beta = 1.0 if name == "twin" else float(name.split(":", 1)[1])
        return (1 - beta) * base + beta * twin
    if name == "additive":
        return (x + (base - x_pos)).clamp(-1, 1)
    if name == "blur":  # the library's blur in-fill (what --infill auto chose on real MRI and on a brain-phantom GAN)
        from medxgan.explain.infill import blur_infill

        return blur_infill(x)
    if name.startswith("texture:"):
        res = x - x_pos
        return (base + res - gaussian_blur(res, float(name.split(":", 1)[1]))).clamp(-1, 1)
    raise SystemExit(f"--fills {name!r}: anatomy, blur, additive, texture:SIGMA, twin or blend:BETA")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("demo", type=Path, help="a `medxgan demo` output folder (data/, gan/)")
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--targets", nargs="+", default=["match", "healthy"], choices=["match", "healthy"])
    ap.add_argument("--areas", type=float, nargs="+", default=[1.0], help="minimal_mask_area weights (the default preset: 1)")
    ap.add_argument("--steps", type=int, default=200, help="inversion Adam steps (200: the demo's schedule until 2026-12-06, 75 since)")
    ap.add_argument("--tvs", type=float, nargs="+", default=None, help="minimal_mask_tv weights (default: the run's preset, 4 for "
                    "the default preset since 2026-12-06, 1 before)")
    ap.add_argument("--fills", nargs="+", default=["anatomy"], help="anatomy (the library's), additive, texture:SIGMA, twin, blend:BETA")
    ap.add_argument("--floors", nargs="+", default=["q05"], choices=["q05", "median"],
                    help="the healthy target's floor: the classifier's 5th percentile (the default preset) or median logit on the train negatives")
    ap.add_argument("--w-min", type=float, default=None, help="the inversion's w_min (default: the run's preset)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    torch.manual_seed(0)
    extra = {} if a.w_min is None else {"w_min": a.w_min}
    mx = MedXGANModel.load(a.demo / "gan", device="cpu", steps=a.steps, restarts=1, minimal_mask_steps=0, **extra)
    clf, oracle, G = mx.classifier, mx.oracle, mx.engine.generator
    test = load_dataset(a.demo / "data", split="test", size=mx.size, channels=mx.channels)
    sel = select_images(test, clf, torch.device("cpu"), a.demo / "data", split="test", subset="pred-pos", n=30, seed=0)
    x, m, twin = sel.images[sel.selected], sel.masks[sel.selected].float(), sel.twins[sel.selected]
    train = load_dataset(a.demo / "data", split="train", size=mx.size, channels=mx.channels)
    xt, yt, _, _ = train.tensors()
    reference = negative_logit_reference(clf, xt[yt == 0])
    cf = mx.engine.counterfactuals(x)
    with torch.no_grad():
        x_pos, base, gm = G(cf.z1, cf.z2, return_parts=True)
    tvs = a.tvs or [float(mx.engine.minimal_mask.tv)]
    fills = {name: make_fill(name, x, x_pos, base, twin) for name in a.fills}
    rows = []
    has_lesion = m.flatten(1).amax(1) > 0.5  # localisation and twin gain: images with a lesion only
    variants = [(fl, t, q, sc, w, tv) for fl in a.fills for t in a.targets for q in (a.floors if t == "healthy" else [None])
                for sc in a.scales for w in a.areas for tv in tvs]
    for fill_name, target, quantile, scale, w_area, w_tv in variants:
        floor = reference[f"negative_logit_{quantile}"] if quantile else None
        fill = fills[fill_name]
        M = refine_mask(clf, x, fill, gm, floor=floor, scale=scale, w_area=w_area, w_tv=w_tv)
        x_cf = x + M * (fill - x)
        diff = M * (x - fill).abs().mean(1, keepdim=True)
        paths = [MaskPath(G, x[i], cf.z2[i], M[i]) if fill_name == "anatomy" else FillPath(x[i], fill[i], M[i], cf.z2[i]) for i in range(len(x))]
        lig = latent_integrated_gradients(paths, clf, cf.z1, cf.z2).maps
        with torch.no_grad():
            row = dict(fill=fill_name, w_min=mx.engine.inversion_config.w_min, target=target, floor_quantile=quantile, scale=scale, w_area=w_area, w_tv=w_tv,
                       floor=None if floor is None else round(floor, 3), diff_iou=_mean(iou_area_matched, diff, m, has_lesion), lig_iou=_mean(iou_area_matched, lig, m, has_lesion),
                       diff_pointing=_mean(pointing_game, diff, m, has_lesion), lig_pointing=_mean(pointing_game, lig, m, has_lesion),
                       valid_classifier=round(float((clf.prob(x_cf) < 0.5).float().mean()), 3),
                       valid_oracle=round(float((oracle.prob(x_cf) < 0.5).float().mean()), 3),
                       twin_gain_db=round(float((psnr(x_cf, twin) - psnr(x, twin))[has_lesion].mean()), 2),
                       area_over_lesion=round(float((M > 0.5).float().sum() / m.sum()), 2),
                       mask_iou=_mean(iou_area_matched, M, m, has_lesion),  # the mask itself scored as a map
                       lesion_covered=round(float(((M > 0.5) & (m > 0.5)).float().sum() / m.sum()), 3))
        print(json.dumps(row), flush=True)
        rows.append(row)
    if a.json:
        a.json.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
