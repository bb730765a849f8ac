"""What today's default medXGAN explanation costs, stage by stage, against IG-50, SmoothGrad and Grad-CAM,
and what cheaper minimal-mask settings give up, on the same images in one process (issue 32).

    python benchmarks/performance/stage_cost.py --family chest GAN_RUN DATA --family brain GAN_RUN DATA \\
        [--n 30] [--batch 8] [--inversion-steps 75] [--name stage_cost]

Per family: the classifier's true positives of DATA's test split (evaluate's selection: subset ``tp``, seed 0,
first ``--n``), in batches of ``--batch``. Per batch, in turn (so a change of the machine's load hits every method
alike; the figures are ratios measured side by side):

* ``ig-black`` (Captum IG, 50 steps, black baseline), ``smoothgrad``, ``gradcam``: ``Explainer.explain``;
* ``medxgan_default``: the run's default explanation end to end through ``MedXGAN.load`` (the demo's inversion
  schedule: ``--inversion-steps`` Adam steps from the run's anchor encoder, 1 start; the run preset's minimal mask):
  ``DifferenceExplainer.explain`` (inversion + minimal mask + |x - x_res|), then on the cached counterfactual the
  interpolation (11 frames) and ``LIGExplainer.explain`` (LIG only: the inversion is cached);
* the stages on their own: the inversion (a ``CounterfactualEngine`` with the same inversion and no minimal mask),
  then the minimal-mask search (``refine_mask`` with the default settings, from the generator's mask with the
  anatomy in-fill: the same inputs the default engine uses; its masks are checked against the default's);
* the minimal-mask variants (``--variants``): ``refine_mask`` on the same inversion with fewer steps / a larger lr /
  the early stop; the explanation is then the difference map of x and x + M (fill - x);
* ``--combos STEPS:MASK``: fewer inversion steps from the anchor (0 = the encoder's codes), then a minimal-mask
  setting, timed together as one explanation.

Quality on the same images: area-matched IoU and the pointing game (|map| against the lesion mask), the
counterfactual's validity for the classifier (and the run's oracle) and the twin gain (PSNR(x_cf, twin) -
PSNR(x, twin), dB) where the data has lesion-free twins. Writes benchmarks/results/<name>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_result  # noqa: E402

from medxgan.data import load_dataset  # noqa: E402
from medxgan.evaluate import localisation_metrics  # noqa: E402
from medxgan.evaluate.selection import select_images  # noqa: E402
from medxgan.evaluate.twins import twin_fidelity  # noqa: E402
from medxgan.explain import CounterfactualEngine, DifferenceExplainer, LIGExplainer, difference_maps  # noqa: E402
from medxgan.explain.baselines import EXPLAINERS  # noqa: E402
from medxgan.explain.counterfactual import MinimalMaskConfig  # noqa: E402
from medxgan.explain.minimal_mask import refine_mask  # noqa: E402
from medxgan.pipeline import MedXGAN  # noqa: E402

BASELINES = ("ig-black", "smoothgrad", "gradcam")
# name -> refine_mask overrides (on top of the run's minimal-mask settings)
DEFAULT_VARIANTS = {
    "steps150_lr0.1_nostop": dict(lr=0.1, stop_tol=None),  # the default before issue 32
    "steps150_lr0.1_stop": dict(stop_tol=0.01),
    "steps150_lr0.3_stop": dict(lr=0.3, stop_tol=0.01),
    "steps150_lr0.2": dict(lr=0.2),
    "steps100_lr0.15": dict(steps=100, lr=0.15),
    "steps75_lr0.2": dict(steps=75, lr=0.2),
    "steps50_lr0.3": dict(steps=50, lr=0.3),
    "steps50_lr0.3_stop": dict(steps=50, lr=0.3, stop_tol=0.01),
    "steps25_lr0.5": dict(steps=25, lr=0.5),
}


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def map_quality(maps: torch.Tensor, lesion: torch.Tensor) -> list[dict[str, float]]:
    """Area-matched IoU and pointing game of each N x 1 x H x W map against its N x 1 x H x W lesion mask."""
    out = []
    for a, m in zip(maps, lesion):
        met = localisation_metrics(a[0].numpy(), m[0].numpy() > 0.5, mode="abs")
        out.append({"iou_area_matched": met["iou_area_matched"], "pointing_game": met["pointing_game"]})
    return out


def cf_quality(x: torch.Tensor, x_res: torch.Tensor, clf: Any, oracle: Any, twins: torch.Tensor | None) -> list[dict[str, float]]:
    """Per image: validity of x_res for the classifier (and the oracle) and the twin gain (dB)."""
    with torch.no_grad():
        pc = clf.prob(x_res).float()
        po = oracle.prob(x_res).float() if oracle is not None else None
    rows = []
    for i in range(x.shape[0]):
        r = {"valid_classifier": float(pc[i] < 0.5), "valid_oracle": float(po[i] < 0.5) if po is not None else float("nan")}
        r["twin_gain_db"] = twin_fidelity(x[i], x_res[i], twins[i])["psnr_gain"] if twins is not None else float("nan")
        rows.append(r)
    return rows


class Family:
    """One GAN run + its test positives, and every method's accumulated seconds and per-image quality."""

    def __init__(self, name: str, gan: str, data: str, args: argparse.Namespace):
        self.name, self.gan, self.data = name, gan, data
        self.mx = MedXGAN.load(gan, device="cpu", steps=args.inversion_steps, restarts=1)
        clf, dev = self.mx.classifier, torch.device("cpu")
        ds = load_dataset(data, split="test", size=self.mx.size, channels=self.mx.channels)
        sel = select_images(ds, clf, dev, Path(data), split="test", subset="tp", n=None, seed=0)
        keep = [i for i in sel.selected if bool(sel.has_mask[i]) and bool(sel.masks[i].gt(0.5).any())][: args.n]
        self.x, self.lesion = sel.images[keep], sel.masks[keep]
        self.twins = sel.twins[keep] if sel.twins is not None and bool(sel.has_twin[keep].all()) else None
        self.ids = [sel.ids[i] for i in keep]
        self.mask_cfg: MinimalMaskConfig = self.mx.engine.minimal_mask
        self.inv_engine = CounterfactualEngine(self.mx.generator, clf, inversion=self.mx.engine.inversion_config,
                                               minimal_mask=MinimalMaskConfig(steps=0), encoder=self.mx.engine.encoder,
                                               discriminator=self.mx.engine.discriminator)
        inv = self.mx.engine.inversion_config
        # "K:MASK" -> (an inversion-only engine of K steps from the anchor, the minimal-mask overrides after it)
        self.combos = {c: (CounterfactualEngine(self.mx.generator, clf, inversion=inv.replace(steps=int(c.split(":")[0])),
                                                minimal_mask=MinimalMaskConfig(steps=0), encoder=self.mx.engine.encoder,
                                                discriminator=self.mx.engine.discriminator),
                           {} if c.split(":")[1] == "default" else DEFAULT_VARIANTS[c.split(":")[1]]) for c in args.combos}
        self.baselines = {n: EXPLAINERS[n](clf, batch_size=args.batch) for n in BASELINES}
        for ex in self.baselines.values():  # warm-up (first-call costs are not the method's)
            ex.explain(self.x[:1])
        self.mx.engine.counterfactuals(self.x[:1])
        self.mx.engine.clear_cache()
        self.seconds: dict[str, float] = {}
        self.quality: dict[str, list[dict[str, float]]] = {}
        self.mask_mismatch = 0.0

    def add(self, key: str, seconds: float, rows: list[dict[str, float]] | None = None) -> None:
        self.seconds[key] = self.seconds.get(key, 0.0) + seconds
        if rows is not None:
            self.quality.setdefault(key, []).extend(rows)

    def mask_kwargs(self, **over: Any) -> dict[str, Any]:
        m = self.mask_cfg
        kw = dict(steps=m.steps, w_area=float(m.area), w_tv=float(m.tv), scale=m.scale, floor=m.effective_floor)
        kw.update(over)
        return kw

    def run_batch(self, lo: int, hi: int, variants: dict[str, dict[str, Any]]) -> None:
        x, lesion = self.x[lo:hi], self.lesion[lo:hi]
        twins = None if self.twins is None else self.twins[lo:hi]
        clf, oracle, eng = self.mx.classifier, self.mx.oracle, self.mx.engine
        for n, ex in self.baselines.items():
            e, s = timed(lambda: ex.explain(x))
            self.add(n, s, map_quality(e.maps, lesion))
        # the default explanation end to end (a fresh cache: nothing of this batch is known)
        eng.clear_cache()
        d, s = timed(lambda: DifferenceExplainer(eng).explain(x))
        self.add("medxgan_default", s, [{**q, **c} for q, c in zip(map_quality(d.maps, lesion), cf_quality(x, d.extras["x_res"], clf, oracle, twins))])
        cf = eng.counterfactuals(x)  # cached
        _, s = timed(lambda: eng.interpolation(cf, 11))
        self.add("stage_interpolation_11", s)
        g, s = timed(lambda: LIGExplainer(eng).explain(x))
        self.add("medxgan_lig_on_top", s, map_quality(g.maps, lesion))
        # the stages one by one, through the public objects
        self.inv_engine.clear_cache()
        cf0, s = timed(lambda: self.inv_engine.counterfactuals(x))
        self.add("stage_inversion", s)
        with torch.no_grad():
            gm = self.mx.generator(cf0.z1, cf0.z2, return_parts=True)[2]
        fill = cf0.x_neg  # the anatomy B(z1*): the default "gan" in-fill
        masks, s = timed(lambda: refine_mask(clf, x, fill, gm, **self.mask_kwargs()))
        self.add("stage_minimal_mask", s)
        self.mask_mismatch = max(self.mask_mismatch, float((masks - cf.masks).abs().max()))
        _, s = timed(lambda: difference_maps(x, x + masks * (fill - x)))
        self.add("stage_difference_map", s)
        for name, over in variants.items():
            mv, s = timed(lambda: refine_mask(clf, x, fill, gm, **self.mask_kwargs(**over)))
            x_res = x + mv * (fill - x)
            self.add(f"mask_{name}", s, [{**q, **c} for q, c in zip(map_quality(difference_maps(x, x_res)[0], lesion),
                                                                    cf_quality(x, x_res, clf, oracle, twins))])
        self.inversion_variants(x, lesion, twins)

    def inversion_variants(self, x: torch.Tensor, lesion: torch.Tensor, twins: torch.Tensor | None) -> None:
        """Fewer inversion steps from the anchor, then a minimal-mask setting and the map, timed as one explanation."""
        clf, oracle = self.mx.classifier, self.mx.oracle
        for name, (engine, over) in self.combos.items():
            engine.clear_cache()
            t = time.perf_counter()
            cf0 = engine.counterfactuals(x)
            with torch.no_grad():
                gm = self.mx.generator(cf0.z1, cf0.z2, return_parts=True)[2]
            mv = refine_mask(clf, x, cf0.x_neg, gm, **self.mask_kwargs(**over))
            x_res = x + mv * (cf0.x_neg - x)
            maps = difference_maps(x, x_res)[0]
            rows = [{**q, **c} for q, c in zip(map_quality(maps, lesion), cf_quality(x, x_res, clf, oracle, twins))]
            self.add(f"combo_{name}", time.perf_counter() - t, rows)

    def summary(self, variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
        n = int(self.x.shape[0])
        per = {k: v / n for k, v in self.seconds.items()}
        ig = per["ig-black"]

        def qual(key: str) -> dict[str, float]:
            rows = self.quality.get(key) or []
            return {k: float(np.nanmean([r[k] for r in rows])) if rows and not all(np.isnan(r[k]) for r in rows) else None
                    for k in (rows[0] if rows else {})}

        methods = {k: {"seconds_per_image": per[k], "x_ig50": per[k] / ig, **qual(k)} for k in (*BASELINES, "medxgan_default", "medxgan_lig_on_top")}
        stages = {k: per[k] for k in ("stage_inversion", "stage_minimal_mask", "stage_difference_map", "stage_interpolation_11")}
        base_q = qual("medxgan_default")
        base_rows = self.quality["medxgan_default"]
        var = {}
        for name in variants:
            key = f"mask_{name}"
            explanation = per["stage_inversion"] + per[key] + per["stage_difference_map"]
            q = qual(key)
            paired = {f"delta_{k}": float(np.nanmean([r[k] - b[k] for r, b in zip(self.quality[key], base_rows)]))
                      for k in ("iou_area_matched", "twin_gain_db") if q.get(k) is not None}
            var[name] = {"settings": self.mask_kwargs(**variants[name]), "mask_seconds_per_image": per[key],
                         "explanation_seconds_per_image": explanation, "x_ig50": explanation / ig, **q, **paired}
        for c in self.combos:
            q = qual(f"combo_{c}")
            paired = {f"delta_{k}": float(np.nanmean([r[k] - b[k] for r, b in zip(self.quality[f"combo_{c}"], base_rows)]))
                      for k in ("iou_area_matched", "twin_gain_db") if q.get(k) is not None}
            var[f"inversion{c.replace(':', '+mask_')}"] = {"explanation_seconds_per_image": per[f"combo_{c}"], "x_ig50": per[f"combo_{c}"] / ig,
                                                           **q, **paired}
        return {"gan": self.gan, "data": self.data, "n_images": n, "image_ids": self.ids,
                "inversion": self.mx.engine.inversion, "minimal_mask": self.mask_cfg.flat(changed_only=False),
                "has_oracle": self.mx.oracle is not None, "has_twins": self.twins is not None,
                "default_from_stages_seconds_per_image": stages["stage_inversion"] + stages["stage_minimal_mask"] + stages["stage_difference_map"],
                "stage_masks_max_abs_diff_vs_default": self.mask_mismatch, "methods": methods, "stages_seconds_per_image": stages,
                "default_quality": base_q, "mask_variants": var}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", nargs=3, action="append", metavar=("NAME", "GAN_RUN", "DATA"), required=True)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--inversion-steps", type=int, default=75, help="the demo's schedule from the anchor encoder (1 start)")
    ap.add_argument("--variants", nargs="*", default=list(DEFAULT_VARIANTS), help=f"of {', '.join(DEFAULT_VARIANTS)}")
    ap.add_argument("--combos", nargs="*", default=["0:default", "10:default", "25:default", "0:steps50_lr0.3", "10:steps50_lr0.3", "25:steps50_lr0.3"],
                    help="STEPS:MASK: inversion steps from the anchor, then a minimal-mask setting (default or a --variants name)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="stage_cost")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = {k: DEFAULT_VARIANTS[k] for k in args.variants}
    info = machine()
    fams = [Family(name, gan, data, args) for name, gan, data in args.family]
    start = time.perf_counter()
    # the families' batches alternate too, so both see the same spread of machine load
    for lo in range(0, max(int(f.x.shape[0]) for f in fams), args.batch):
        for f in fams:
            if lo < f.x.shape[0]:
                f.run_batch(lo, min(lo + args.batch, int(f.x.shape[0])), variants)
                print(f"{f.name}: images {lo}-{min(lo + args.batch, int(f.x.shape[0]))} done, {time.perf_counter() - start:.0f} s", flush=True)
    info["load_average_end"] = [round(v, 2) for v in __import__("os").getloadavg()]
    payload = {"machine": info, "batch": args.batch, "threads": args.threads, "wall_s": time.perf_counter() - start,
               "families": {f.name: f.summary(variants) for f in fams}}
    print(write_result(args.name, payload))
    for f in fams:
        s = payload["families"][f.name]
        print(f"\n{f.name} ({s['n_images']} TP)  stages s/img: " + ", ".join(f"{k[6:]} {v:.3f}" for k, v in s["stages_seconds_per_image"].items()))
        for k, r in {**s["methods"], **s["mask_variants"]}.items():
            print(f"  {k:24s} " + " ".join(f"{c}={r[c]:.3f}" if isinstance(r.get(c), float) else f"{c}=-" for c in
                                             ("seconds_per_image", "explanation_seconds_per_image", "x_ig50", "iou_area_matched", "pointing_game",
                                              "valid_classifier", "valid_oracle", "twin_gain_db", "delta_iou_area_matched", "delta_twin_gain_db")
                                             if c in r))


if __name__ == "__main__":
    main()
