"""What the generator adds: medXGAN's minimal mask with each in-fill, next to the perturbation and gradient baselines,
on the 30 held-out predicted positives that `medxgan demo` explains (same selection: test split, seed 0).

    python benchmarks/perturbation/infill_ablation.py RUN --data DATA [--checkpoint-step N] [--infills gan blur mean inpaint twin]
        [--inpainter RUN (for learned)] [--inpainter-gan RUN (for learned-gan)]
        [--baselines ig-black smoothgrad saliency occlusion gradcam extremal-perturbation meaningful-perturbation rise]
        [--n 30] [--steps 75] [--json out.json]

RUN: a `medxgan train` run (the demo's gan/ folder). Each scan is inverted once (``--steps`` Adam steps x 1 start from
the run's anchor encoder, the demo's schedule); then, per in-fill (:mod:`medxgan.explain.infill`), the same minimal-mask
search as the library (:func:`medxgan.explain.minimal_mask.refine_mask` with the run preset's settings: steps, area,
TV, grid, "healthy" floor) from the generator's mask gM; the difference map M |x - F| and LIG along the straight path
from the counterfactual to the scan are scored (area-matched IoU, pointing game, on the scans with a lesion), the
counterfactual's validity for the classifier and the oracle, its PSNR gain against the lesion-free twin, and the seconds
per image of the in-fill + mask search (the shared inversion's cost is reported once). This is the library's
computation (the engine calls the same make_infill and refine_mask) with the inversion shared across in-fills.

The judge: the oracle's specificity on the lesion-free twins of the scored scans (the share it calls negative) is
reported next to every validity figure; the oracle is also re-thresholded on the validation split's twins (the
logit below which it accepts 90 % of them, never below its 0.5 threshold) and validity is given at that threshold
too, with the oracle's sensitivity on the validation positives at it (so the re-threshold is not free).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from medxgan.data import load_dataset
from medxgan.evaluate.localisation import iou_area_matched, pointing_game
from medxgan.evaluate.selection import select_images
from medxgan.evaluate.stats import bootstrap_ci
from medxgan.explain.baselines import build_explainers
from medxgan.explain.counterfactual import MaskPath, image_key
from medxgan.explain.infill import InfillInputs, check_inpainter_for, healthy_mean_from_data, infill_region, learned_grow, make_infill
from medxgan.explain.lig import latent_integrated_gradients
from medxgan.explain.minimal_mask import refine_mask
from medxgan.explain.model import MedXGANModel
from medxgan.gan.inpainter import load_inpainter
from medxgan.gan.inversion import psnr
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.runs import fingerprint_module

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "counterfactual"))
from quick_eval import _snapshot  # noqa: E402  (the checkpoint snapshot of the development tools)


def _ci(values: list[float]) -> dict:
    mean, lo, hi, n = bootstrap_ci(values, n_resamples=1000, seed=0)
    return {"mean": round(mean, 3), "lo": round(lo, 3), "hi": round(hi, 3), "n": n}


def _loc(maps: torch.Tensor, masks: torch.Tensor, scored: list[int]) -> dict:
    iou = [iou_area_matched(maps[i, 0].abs().numpy(), masks[i, 0].numpy() > 0.5) for i in scored]
    pt = [pointing_game(maps[i, 0].abs().numpy(), masks[i, 0].numpy() > 0.5) for i in scored]
    return {"iou": _ci(iou), "pointing": round(float(np.mean(pt)), 3)}


def _oracle_calibration(oracle, data: Path, size: int, channels: int) -> dict:
    """The oracle's logit threshold at which it accepts 90 % of the validation twins (not below logit 0), and its
    sensitivity on the validation positives at 0 and at that threshold."""
    try:
        val = load_dataset(data, split="val", size=size, channels=channels)
    except MedxganError:  # a test-only set (the cross-brain ICBM152 data): no calibration, the oracle's own threshold
        return {"threshold_logit": 0.0, "note": "no validation split: threshold logit 0"}
    twins, has = val.twins()
    xv, yv, _, _ = val.tensors()
    with torch.no_grad():
        lt = oracle.logit(twins[has]).float()
        lp = oracle.logit(xv[yv == 1]).float()
    thr = max(0.0, float(torch.quantile(lt, 0.9)))
    return {"threshold_logit": round(thr, 3), "val_twin_specificity_at_0": round(float((lt < 0).float().mean()), 3),
            "val_twin_specificity_at_threshold": round(float((lt < thr).float().mean()), 3),
            "val_sensitivity_at_0": round(float((lp >= 0).float().mean()), 3), "val_sensitivity_at_threshold": round(float((lp >= thr).float().mean()), 3),
            "n_val_twins": int(has.sum()), "n_val_positives": int((yv == 1).sum())}


def _validity(clf, oracle, x_cf: torch.Tensor, thr: float) -> dict:
    with torch.no_grad():
        lo = oracle.logit(x_cf).float()
        return {"valid_classifier": round(float((clf.prob(x_cf) < 0.5).float().mean()), 3), "valid_oracle": round(float((lo < 0).float().mean()), 3),
                "valid_oracle_calibrated": round(float((lo < thr).float().mean()), 3)}


def _infill_rows(a, mx, x, masks, twins, has_lesion, cal) -> list[dict]:
    clf, oracle, G, engine = mx.classifier, mx.oracle, mx.engine.generator, mx.engine
    m_cfg = engine.minimal_mask
    steps = m_cfg.steps
    engine.minimal_mask = type(m_cfg)(**{**m_cfg.__dict__, "steps": 0})  # invert only: the masks are searched below, once per in-fill
    t0 = time.perf_counter()
    cf = engine.counterfactuals(x)
    inversion_s = (time.perf_counter() - t0) / len(x)
    engine.minimal_mask = m_cfg
    with torch.no_grad():
        _, base, gm = G(cf.z1, cf.z2, return_parts=True)
    # the classifier's healthy training scans: the run's data, as in the library (the cross-brain test set has no train split)
    mean_scan = healthy_mean_from_data(mx.config.get("data") or a.data, mx.size, mx.channels) if "mean" in a.infills else None
    twin_table = {image_key(x[i]): twins[i] for i in range(len(x))}
    scored = has_lesion.nonzero().flatten().tolist()
    inpainters = {"learned": a.inpainter, "learned-gan": a.inpainter_gan}
    inpainters = {k: check_inpainter_for(k, load_inpainter(v), fingerprint_module(G) if k == "learned-gan" else None)
                  for k, v in inpainters.items() if v and k in a.infills}
    # the regions the context in-fills fill (inpaint: gM grown 1 px; learned*: grown H/16 px): how much of each lesion
    # they hold, and their size
    les = masks[has_lesion] > 0.5
    regions = {}
    for label, grow in (("inpaint", 1), ("learned", learned_grow(x.shape[-2]))):
        region = infill_region(gm, grow=grow)[has_lesion] > 0.5
        covered = (region & les).flatten(1).sum(1) / les.flatten(1).sum(1).clamp(min=1)
        regions[label] = {"grow_px": grow, "lesion_covered": _ci(covered.tolist()), "area_over_lesion": round(float(region.sum() / les.sum()), 2)}
    print(json.dumps({"context_infill_regions": regions}), flush=True)
    a.regions = regions  # recorded in the JSON
    rows = []
    for start, name in [(st, nm) for st in a.starts for nm in a.infills]:
        m0 = gm if start == "gm" else torch.ones_like(gm)  # ones: no generator in the mask search at all (FIDO-style from the full scan)
        t0 = time.perf_counter()
        fill = make_infill(name, InfillInputs(images=x, gan_fill=base, gan_mask=gm, healthy_mean=mean_scan,
                                              twins=twin_table if name == "twin" else None, key=image_key, inpainter=inpainters.get(name)))
        infill_s = (time.perf_counter() - t0) / len(x)
        M = refine_mask(clf, x, fill, m0, steps=steps, w_area=float(m_cfg.area), w_tv=float(m_cfg.tv), scale=m_cfg.scale,
                        floor=m_cfg.effective_floor)
        mask_s = (time.perf_counter() - t0) / len(x) - infill_s
        x_cf = x + M * (fill - x)
        diff = M * (x - fill).abs().mean(1, keepdim=True)
        paths = [MaskPath(G, x[i], cf.z2[i], M[i], None if name == "gan" else fill[i]) for i in range(len(x))]
        lig = latent_integrated_gradients(paths, clf, cf.z1, cf.z2).maps
        gain = (psnr(x_cf, twins) - psnr(x, twins))[has_lesion].tolist()
        row = {"method": f"medxgan-{name}" + ("" if start == "gm" else "-start-ones"), "infill": name, "start": start,
               "diff": _loc(diff, masks, scored), "lig": _loc(lig, masks, scored),
               **_validity(clf, oracle, x_cf, cal["threshold_logit"]), "twin_gain_db": _ci(gain),
               "mask_area_over_lesion": round(float((M > 0.5).float().sum() / masks.sum()), 2),
               "s_per_image": round(infill_s + mask_s, 3), "s_infill": round(infill_s, 3), "s_inversion_shared": round(inversion_s, 3)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _baseline_rows(a, clf, x, masks, has_lesion) -> list[dict]:
    scored = has_lesion.nonzero().flatten().tolist()
    rows = []
    for name in a.baselines:
        ex = build_explainers([name], clf, batch_size=8)[0]
        t0 = time.perf_counter()
        maps = ex.explain(x).maps
        row = {"method": name, "map": _loc(maps, masks, scored), "s_per_image": round((time.perf_counter() - t0) / len(x), 3)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", help="a `medxgan train` run (the demo's gan/)")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--checkpoint-step", type=int, help="use this checkpoint's generator (a run still training)")
    ap.add_argument("--infills", nargs="*", default=["gan", "blur", "mean", "inpaint", "twin"])
    ap.add_argument("--baselines", nargs="*", default=["ig-black", "smoothgrad", "saliency", "occlusion", "gradcam",
                                                       "extremal-perturbation", "meaningful-perturbation", "rise"])
    ap.add_argument("--starts", nargs="+", default=["gm"], choices=["gm", "ones"],
                    help="the mask search's start: gm = the generator's mask (the library's), ones = the whole scan (no generator)")
    ap.add_argument("--inpainter", help="inpainter run (`medxgan train-inpainter DATA`) for the learned in-fill")
    ap.add_argument("--inpainter-gan", help="inpainter run trained with --gan on this generator, for the learned-gan in-fill")
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--steps", type=int, default=75, help="inversion Adam steps (the demo's 75)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    torch.manual_seed(0)
    run = _snapshot(a.run, a.checkpoint_step) if a.checkpoint_step is not None else a.run
    mx = MedXGANModel.load(run, device="cpu", steps=a.steps, restarts=1)
    clf, oracle = mx.classifier, mx.oracle
    test = load_dataset(a.data, split="test", size=mx.size, channels=mx.channels)
    sel = select_images(test, clf, torch.device("cpu"), a.data, split="test", subset="pred-pos", n=a.n, seed=0)
    x, masks, twins = sel.images[sel.selected], sel.masks[sel.selected].float(), sel.twins[sel.selected]
    has_lesion = masks.flatten(1).amax(1) > 0.5
    cal = _oracle_calibration(oracle, a.data, mx.size, mx.channels)
    with torch.no_grad():  # the judge on the ground truth: how often it calls the true lesion-free twins negative
        lt = oracle.logit(twins[has_lesion]).float()
    judge = {"oracle_twin_specificity": round(float((lt < 0).float().mean()), 3),
             "oracle_twin_specificity_calibrated": round(float((lt < cal["threshold_logit"]).float().mean()), 3), **cal}
    print(json.dumps(judge), flush=True)
    rows = _infill_rows(a, mx, x, masks, twins, has_lesion, cal) + _baseline_rows(a, clf, x, masks, has_lesion)
    out = {"run": str(a.run), "checkpoint_step": a.checkpoint_step, "data": str(a.data), "n": len(x), "n_lesion": int(has_lesion.sum()),
           "inversion_steps": a.steps, "minimal_mask": {k: getattr(mx.engine.minimal_mask, k) for k in ("steps", "area", "tv", "scale", "floor", "target")},
           "judge": judge, "context_infill_regions": getattr(a, "regions", None), "rows": rows, "inpainter": a.inpainter, "inpainter_gan": a.inpainter_gan,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
