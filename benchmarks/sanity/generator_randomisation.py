"""Model randomisation for medXGAN, two forms (issue 31, item 3).

    python benchmarks/sanity/generator_randomisation.py stages  --gan RUN --data DATA --out OUT.json [--n 10] [--steps 75]
    python benchmarks/sanity/generator_randomisation.py retrain --classifier CLF --data DATA --work DIR --out OUT.json
        [--train-steps 300] [--preset default] [--set KEY=VALUE ...] [--n 10] [--steps 75]

``stages`` -- the fixed-generator check of ``medxgan evaluate --sanity`` (:mod:`medxgan.evaluate.sanity`), taken apart:
which stage carries the medXGAN map through when the classifier's top two blocks are randomised. The scans are inverted
once under the trained classifier (the trained generator's codes z1*, z2*, its mask gM and anatomy B(z1*)); then, under
the trained (T) and the randomised (R) classifier, the maps of each stage are computed and the R map compared with the T
map by SSIM and Spearman (:mod:`medxgan.evaluate.robustness`, as sanity.py does):

* ``prior``: |gM (B - x)|, the generator's own mask and anatomy, no classifier at all (the generator's prior);
* ``mask_from_gM``: the minimal mask searched from gM (the library's default, what sanity.py re-refines);
* ``mask_from_scan``: the same search started from the whole scan (a mask of ones) instead of gM;
* ``lig_fixed_path``: LIG along the trained classifier's minimal-mask path with the randomised classifier's gradients
  (sanity.py's LIG); ``lig_rerefined_path``: LIG along the path of the mask re-refined under R (from gM);
  ``lig_scan_path``: LIG along the path of the mask searched from the whole scan under the same classifier.

Per stage it also records whether the counterfactual crossed the classifier's decision level (logit < 0) within
the mask (``flipped``), and the Spearman of each R map with the ``prior`` map (does the map under R just show the
generator's prior?).

``retrain`` -- the form fair to a generative method: a generator trained against the randomised classifier (top two
blocks re-initialised with sanity.py's ``randomised``, seed 0) compared with a generator trained for the same budget and
seed against the real classifier; each explains the same scans with its own classifier. A second generator against
the real classifier with another seed gives the retraining noise floor (how much two honest generators differ).
Verdict as sanity.py's: pass when both SSIM and Spearman of (random vs real) fall below 0.5 with their intervals.

Runs on the CPU, one thread (OMP_NUM_THREADS=1 recommended on a shared machine); writes only ``--work`` and ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medxgan.classifiers import as_classifier
from medxgan.data import load_dataset
from medxgan.evaluate.localisation import iou_area_matched, pointing_game
from medxgan.evaluate.robustness import spearman, ssim
from medxgan.evaluate.sanity import SANITY_THRESHOLD, randomisation_blocks, randomised, verdict
from medxgan.evaluate.selection import select_images
from medxgan.evaluate.stats import aggregate
from medxgan.explain.baselines import MEDXGAN_METHODS, build_explainers
from medxgan.explain.counterfactual import difference_maps
from medxgan.explain.minimal_mask import refine_mask
from medxgan.explain.model import as_medxgan

K_RANDOMISED = 2  # the verdict's step of sanity.py: the classifier's top two blocks


def _images(data: Path, clf: Any, size: int | None, channels: int | None, n: int, masks: bool = False) -> tuple:
    """The first n predicted positives of the test split in evaluate's seeded order (the demo's selection): (images, ids[,
    lesion masks H x W bool, None where a scan has no mask])."""
    ds = load_dataset(data, split="test", size=size, channels=channels)
    sel = select_images(ds, clf, torch.device("cpu"), data, split="test", subset="pred-pos", n=n, seed=0)
    x, ids = sel.images[sel.selected], [sel.ids[i] for i in sel.selected]
    if not masks:
        return x, ids
    m = [sel.masks[i, 0].numpy() > 0.5 if bool(sel.has_mask[i]) and sel.slice_of[i] == "TP" and bool(sel.masks[i].any()) else None
         for i in sel.selected]
    return x, ids, m


def _similarity(ref: np.ndarray, maps: np.ndarray) -> dict[str, Any]:
    rows = [{"ssim": ssim(np.abs(a), np.abs(b)), "spearman": spearman(a, b)} for a, b in zip(ref, maps)]
    agg = aggregate(rows, n_resamples=1000, seed=0)
    return {k: {kk: (round(v, 3) if isinstance(v, float) else v) for kk, v in agg[k].items()} for k in ("ssim", "spearman")}


def _verdict(sim: dict[str, Any]) -> tuple[str, str]:
    return verdict([{"k": K_RANDOMISED, "randomised": ["top two blocks"], **sim}], 1, SANITY_THRESHOLD)


def _diff(x: torch.Tensor, fill: torch.Tensor, mask: torch.Tensor, reduce: str) -> np.ndarray:
    return difference_maps(x, x + mask * (fill - x), reduce)[0][:, 0].detach().float().numpy()


def _stage_maps(model: Any, lig: Any, cf: Any, gm: torch.Tensor, trained_masks: torch.Tensor) -> tuple[dict[str, np.ndarray], dict]:
    """Every stage's maps under the classifier's current weights (see the module docstring), and the final logits."""
    eng, clf = model.engine, model.classifier
    m = eng.minimal_mask
    x, fill = cf.images, cf.x_neg  # the "gan" in-fill: the anatomy B(z1*) (engine._minimal_masks)
    kw = dict(steps=m.steps, w_area=float(m.area), w_tv=float(m.tv), scale=m.scale, floor=m.effective_floor)
    masks = {"mask_from_gM": refine_mask(clf, x, fill, gm, **kw), "mask_from_scan": refine_mask(clf, x, fill, torch.ones_like(gm), **kw)}
    maps = {"prior": _diff(x, fill, gm, eng.reduce), **{k: _diff(x, fill, v, eng.reduce) for k, v in masks.items()}}
    for name, mk in (("lig_fixed_path", trained_masks), ("lig_rerefined_path", masks["mask_from_gM"]), ("lig_scan_path", masks["mask_from_scan"])):
        maps[name] = lig.from_counterfactuals(dataclasses.replace(cf, masks=mk)).maps[:, 0].detach().float().numpy()
    with torch.no_grad():
        logits = {k: clf.logit(x + v * (fill - x)).float() for k, v in {"prior": gm, **masks}.items()}
        logits["input"] = clf.logit(x).float()
    return maps, {k: {"mean_logit": round(float(v.mean()), 3), "flipped_share": round(float((v < 0).float().mean()), 3),
                      "mask_area": round(float(({"prior": gm, **masks}.get(k, torch.ones_like(gm))).mean()), 3)}
                  for k, v in logits.items()}


def stages(a: argparse.Namespace) -> dict[str, Any]:
    model = as_medxgan(str(a.gan), device="cpu", inversion={"steps": a.steps})
    eng = model.engine
    if not eng.refines_mask:
        raise SystemExit(f"{a.gan}: the run does not use the minimal mask (nothing to take apart)")
    x, ids = _images(Path(a.data), model.classifier, model.size, model.channels, a.n)
    lig = build_explainers(["medxgan-lig"], model.classifier, gan=model)[0]
    t0 = time.perf_counter()
    cf = eng.counterfactuals(x)  # inverted once, under the trained classifier
    with torch.no_grad():
        gm = model.generator(cf.z1, cf.z2, return_parts=True)[2]
    t_inv = time.perf_counter() - t0
    clf_model = model.classifier.model
    clf_model.eval()
    ref, ref_logits = _stage_maps(model, lig, cf, gm, cf.masks)
    blocks = randomisation_blocks(clf_model)
    with randomised(clf_model, K_RANDOMISED, seed=0, blocks=blocks) as names:
        rnd, rnd_logits = _stage_maps(model, lig, cf, gm, cf.masks)
    out = {"randomised_blocks": names, "n_images": len(ids), "image_ids": ids, "inversion_s": round(t_inv, 1), "stages": {}}
    for k in ref:
        sim = _similarity(ref[k], rnd[k])
        v, why = _verdict(sim)
        out["stages"][k] = {"trained_vs_randomised": sim, "verdict": v, "reason": why,
                            "randomised_vs_prior_spearman": _similarity(rnd["prior"], rnd[k])["spearman"],
                            "trained_vs_prior_spearman": _similarity(ref["prior"], ref[k])["spearman"]}
    out["logits"] = {"trained": ref_logits, "randomised": rnd_logits}
    return out


def _train(data: Path, clf: Any, run: Path, steps: int, preset: str, seed: int, overrides: dict[str, Any]) -> dict[str, Any]:
    from medxgan.gan.train import train_gan  # the public API (the benchmark never edits the trainer)

    t0 = time.perf_counter()
    r = train_gan(str(data), clf, run, preset=preset, preset_overrides=overrides or None, steps=steps, seed=seed, oracle=False,
                  log_every=steps, ckpt_every=steps,
                  monitor_samples=64, quiet=False, device="cpu", resume=(run / "config.json").exists())
    m = r.get("metrics") or {}
    return {"run": str(run), "steps": r["steps"], "train_s": round(time.perf_counter() - t0, 1),
            **{k: (round(m[k], 3) if isinstance(m.get(k), float) else m.get(k)) for k in ("disent", "cls_neg", "cls_pos", "diversity") if k in m}}


def _explain(run: Path, clf: Any, x: torch.Tensor, steps: int, masks: list) -> dict[str, Any]:
    """The medXGAN maps of ``x`` with the GAN ``run`` and the classifier ``clf`` (its own), their localisation of the
    true lesions (area-matched IoU, pointing game, on the scans with a mask) and the share flipped within the mask."""
    model = as_medxgan(str(run), classifier=clf, device="cpu", inversion={"steps": steps})
    explainers = build_explainers(list(MEDXGAN_METHODS), clf, gan=model)  # difference, LIG and the minimal mask (one inversion)
    cf = model.engine.counterfactuals(x)
    out: dict[str, Any] = {e.name: e.explain(x).maps[:, 0].numpy() for e in explainers}
    out.update(flipped_share=float(cf.flipped.float().mean()), scans_called_positive=float((cf.prob_input >= 0.5).float().mean()))
    for m in MEDXGAN_METHODS:
        pairs = [(np.abs(a), k) for a, k in zip(out[m], masks) if k is not None]
        loc = aggregate([{"iou": iou_area_matched(a, k), "pointing": pointing_game(a, k)} for a, k in pairs], n_resamples=1000, seed=0)
        out[f"{m}.localisation"] = {k: {kk: (round(v, 3) if isinstance(v, float) else v) for kk, v in loc[k].items()} for k in ("iou", "pointing")}
    return out


def _overrides(pairs: list[str]) -> dict[str, Any]:
    """--set KEY=VALUE pairs (a preset field, as `medxgan train --set`): numbers parsed, the rest kept as text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def retrain(a: argparse.Namespace) -> dict[str, Any]:
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    clf = as_classifier(str(a.classifier), device="cpu")
    clf.eval()
    x, ids, masks = _images(Path(a.data), clf, None, None, a.n, masks=True)  # the data's own size (the preset's must match it)
    overrides = _overrides(a.set)
    out: dict[str, Any] = {"train_steps": a.train_steps, "preset": a.preset, "preset_overrides": overrides, "n_images": len(ids),
                           "image_ids": ids, "runs": {}}
    real = {}
    for seed in (0, 1):
        run = work / f"gan_real_seed{seed}"
        out["runs"][run.name] = _train(Path(a.data), clf, run, a.train_steps, a.preset, seed, overrides)
        real[seed] = _explain(run, clf, x, a.steps, masks)
    blocks = randomisation_blocks(clf.model)
    with randomised(clf.model, K_RANDOMISED, seed=0, blocks=blocks) as names:
        run = work / "gan_random_seed0"
        out["runs"][run.name] = _train(Path(a.data), clf, run, a.train_steps, a.preset, 0, overrides)
        rnd = _explain(run, clf, x, a.steps, masks)
    out["randomised_blocks"] = names
    by_run = {"real_seed0": real[0], "real_seed1": real[1], "random_seed0": rnd}
    for key in ("flipped_share", "scans_called_positive", *(f"{m}.localisation" for m in MEDXGAN_METHODS)):
        out[key] = {name: r[key] for name, r in by_run.items()}
    out["methods"] = {}
    for m in MEDXGAN_METHODS:
        sim = _similarity(real[0][m], rnd[m])
        v, why = _verdict(sim)
        out["methods"][m] = {"real_vs_random": sim, "verdict": v, "reason": why, "real_seed0_vs_real_seed1": _similarity(real[0][m], real[1][m])}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stages")
    s.add_argument("--gan", required=True)
    r = sub.add_parser("retrain")
    r.add_argument("--classifier", required=True)
    r.add_argument("--work", required=True)
    r.add_argument("--train-steps", type=int, default=300)
    r.add_argument("--preset", default="default")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a preset field for all three generators, e.g. gan_labels=classifier (repeatable)")
    for q in (s, r):
        q.add_argument("--data", required=True)
        q.add_argument("--out", required=True)
        q.add_argument("--n", type=int, default=10)
        q.add_argument("--steps", type=int, default=75, help="inversion steps (the demo's evaluation uses 75)")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    res = stages(a) if a.cmd == "stages" else retrain(a)
    res.update(command=" ".join(["python", *sys.argv]), date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
               machine=f"{platform.machine()} CPU, torch {torch.__version__}, threads {torch.get_num_threads()}",
               wall_s=round(time.perf_counter() - t0, 1))
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
