"""The minimal mask's target and grid, side by side on one trained demo (a development tool).

Inverts the 30 held-out predicted positives that `medxgan evaluate` explains in `medxgan demo` (same
selection, seed 0; 200 Adam steps x 1 start as in the demo), once, then refines the generator's mask
with each variant (:func:`medxgan.explain.minimal_mask.refine_mask`, 150 steps) and scores the
difference map M |x - B| and LIG along the straight path from the counterfactual to the scan
(area-matched IoU, pointing game), the counterfactual's validity (classifier, oracle), its PSNR gain
over the input against the lesion-free twin, and the mask's area (> 0.5) over the lesion's. The floor
of the "healthy" target is the classifier's 5th percentile on the train split's negatives, as
`medxgan train` stores it.

    python benchmarks/counterfactual/mask_grid.py DEMO_DIR [--targets match healthy] [--scales 1 2 4] [--areas 1] [--json out.jsonl]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("demo", type=Path, help="a `medxgan demo` output folder (data/, gan/)")
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--targets", nargs="+", default=["match", "healthy"], choices=["match", "healthy"])
    ap.add_argument("--areas", type=float, nargs="+", default=[1.0], help="minimal_mask_area weights (the default preset: 1)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    torch.manual_seed(0)
    mx = MedXGANModel.load(a.demo / "gan", device="cpu", steps=200, restarts=1, minimal_mask_steps=0)
    clf, oracle, G = mx.classifier, mx.oracle, mx.engine.generator
    test = load_dataset(a.demo / "data", split="test", size=mx.size, channels=mx.channels)
    sel = select_images(test, clf, torch.device("cpu"), a.demo / "data", split="test", subset="pred-pos", n=30, seed=0)
    x, m, twin = sel.images[sel.selected], sel.masks[sel.selected].float(), sel.twins[sel.selected]
    train = load_dataset(a.demo / "data", split="train", size=mx.size, channels=mx.channels)
    xt, yt, _, _ = train.tensors()
    floor = negative_logit_reference(clf, xt[yt == 0])["negative_logit_q05"]
    cf = mx.engine.counterfactuals(x)
    with torch.no_grad():
        _, fill, gm = G(cf.z1, cf.z2, return_parts=True)
    rows = []
    has_lesion = m.flatten(1).amax(1) > 0.5  # localisation and twin gain: images with a lesion only
    variants = [(t, sc, w) for t in a.targets for sc in a.scales for w in a.areas]
    for target, scale, w_area in variants:
        M = refine_mask(clf, x, fill, gm, floor=floor if target == "healthy" else None, scale=scale, w_area=w_area)
        x_cf = x + M * (fill - x)
        diff = M * (x - fill).abs().mean(1, keepdim=True)
        lig = latent_integrated_gradients([MaskPath(G, x[i], cf.z2[i], M[i]) for i in range(len(x))], clf, cf.z1, cf.z2).maps
        with torch.no_grad():
            row = dict(target=target, scale=scale, w_area=w_area, floor=round(floor, 3), diff_iou=_mean(iou_area_matched, diff, m, has_lesion), lig_iou=_mean(iou_area_matched, lig, m, has_lesion),
                       diff_pointing=_mean(pointing_game, diff, m, has_lesion), lig_pointing=_mean(pointing_game, lig, m, has_lesion),
                       valid_classifier=round(float((clf.prob(x_cf) < 0.5).float().mean()), 3),
                       valid_oracle=round(float((oracle.prob(x_cf) < 0.5).float().mean()), 3),
                       twin_gain_db=round(float((psnr(x_cf, twin) - psnr(x, twin))[has_lesion].mean()), 2),
                       area_over_lesion=round(float((M > 0.5).float().sum() / m.sum()), 2))
        print(json.dumps(row), flush=True)
        rows.append(row)
    if a.json:
        a.json.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
