"""Inversion starts and schedules compared on what the explanation delivers (issue 15 parts 2-3).

    OMP_NUM_THREADS=1 python benchmarks/performance/encoder_path.py --gan RUN --data DATA --n 30 \
        --variants anchor:200 trained:75 trained:20 scratch:400:2 --result encoder_path

RUN is a GAN run; ``trained`` variants need ``medxgan train-encoder RUN`` first, ``anchor`` variants a run
with an anchor encoder (the ``default`` and ``anchored`` presets). Each variant is ``START:STEPS[:RESTARTS]``:

* ``scratch``: no encoder (restart 0 at z1 = 0, as `invert` does without one);
* ``anchor``: restart 0 at the codes of the GAN's own anchor encoder (what the demo does today: 200 x 1);
* ``trained``: restart 0 at the codes of the encoder of `medxgan train-encoder` (RUN/encoder/);
* ``iterative``: restart 0 at the codes of that encoder followed by ``--refiner-passes`` corrections of the
  ReStyle-style residual encoder ``--refiner`` trained by ``restyle_probe.py``.

Every other inversion option is the run's preset's (e.g. the residual counterfactual, w_cf, w_min and the
minimal-mask refinement of the ``default`` preset), so a variant differs only in where the inversion starts
and how long it runs. On the first ``--n`` images of the test split that the classifier calls positive
(the evaluation's ``pred-pos`` subset, in file order), per variant:

* time per image of the inversion with the counterfactual and its minimal mask (batches of ``--batch``,
  as ``evaluate`` inverts a chunk), and with ``--explain`` of the whole `MedXGAN.explain` (inversion +
  difference map + 11 frames + LIG), next to Captum's IG-50 (black baseline) and Grad-CAM;
* reconstruction PSNR of G(z1*, z2*); counterfactual validity (p(pos) < 0.5 of the explained counterfactual
  x_res, for the classifier and for the run's oracle, and of G(z1*, 0)); proximity mean |x_res - x|;
* localisation of the difference map |x - x_res| (the ``medxgan-diff`` map) on the true positives with a
  lesion mask: IoU at the area-matched threshold, pointing game, relevance mass; and its agreement with the
  lesion-free twin (Spearman and NCC of the map with |x - twin|) where the data has twins.

Timing: ``--rounds`` rounds, the variants in alternating order, each from an empty inversion cache; the
figure is the median per image. On the shared machine read ratios between variants of one run only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, sync, write_result  # noqa: E402

from medxgan.data import load_dataset  # noqa: E402
from medxgan.evaluate.localisation import localisation_metrics  # noqa: E402
from medxgan.evaluate.twins import twin_agreement  # noqa: E402
from medxgan.explain.baselines import build_explainers  # noqa: E402
from medxgan.explain.counterfactual import difference_maps  # noqa: E402
from medxgan.gan.encoder import LatentEncoder  # noqa: E402
from medxgan.gan.run import ENCODER_NAME, load_gan_run, load_trained_encoder  # noqa: E402
from medxgan.pipeline import MedXGAN  # noqa: E402
from medxgan.runtime.runs import RunDir  # noqa: E402

STARTS = ("scratch", "anchor", "trained", "iterative")


def parse_variant(s: str) -> tuple[str, int, int]:
    parts = s.split(":")
    if len(parts) not in (2, 3) or parts[0] not in STARTS:
        raise SystemExit(f"variant {s!r}: START:STEPS[:RESTARTS] with START in {', '.join(STARTS)}")
    return parts[0], int(parts[1]), int(parts[2]) if len(parts) == 3 else 1


def encoders(run: str, net: dict[str, Any], dev: torch.device, refiner: str | None = None, passes: int = 2) -> dict[str, torch.nn.Module | None]:
    rd = RunDir(run)
    out: dict[str, torch.nn.Module | None] = {"scratch": None, "anchor": None, "trained": load_trained_encoder(run, net, dev), "iterative": None}
    if refiner:
        from restyle_probe import load_iterative

        out["iterative"] = load_iterative(run, refiner, passes, dev)
    if rd.has_weights(ENCODER_NAME):
        e = LatentEncoder(net)
        e.load_state_dict(rd.load_weights(ENCODER_NAME))
        out["anchor"] = e.to(dev).eval().requires_grad_(False)
    return out


def quality(model: MedXGAN, x: torch.Tensor, masks: torch.Tensor, has_mask: torch.Tensor, twins: torch.Tensor | None,
            has_twin: torch.Tensor | None, oracle: Any, batch: int) -> dict[str, Any]:
    eng = model.engine
    rows = []
    for s in range(0, len(x), batch):
        cf = eng.counterfactuals(x[s : s + batch])
        diff, _ = difference_maps(*eng.endpoints(cf), eng.reduce)
        with torch.no_grad():
            po = oracle.prob(cf.x_res.to(model.device)).float().cpu() if oracle is not None else None
        for j in range(len(cf)):
            i = s + j
            r = {"psnr": float(cf.psnr[j]), "valid_res": float(cf.prob_res[j] < 0.5), "valid_neg": float(cf.prob_neg[j] < 0.5),
                 "valid_res_oracle": float(po[j] < 0.5) if po is not None else float("nan"),
                 "proximity_l1": float((cf.x_res[j] - x[i].cpu()).abs().mean()), "steps_run": int(cf.steps_run[j])}
            a = diff[j, 0].numpy()
            m = masks[i, 0].numpy() > 0.5
            if bool(has_mask[i]) and m.any():
                lm = localisation_metrics(a, m, mode="abs")
                r.update(iou=lm["iou_area_matched"], pointing=lm["pointing_game"], mass=lm["relevance_mass"])
                if twins is not None and bool(has_twin[i]):
                    ta = twin_agreement(a, x[i].cpu(), twins[i])
                    r.update(twin_spearman=ta["spearman"], twin_ncc=ta["ncc"])
            rows.append(r)
    keys = sorted({k for r in rows for k in r})
    return {k: float(np.nanmean([r.get(k, np.nan) for r in rows])) for k in keys} | {"n_localisation": sum("iou" in r for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gan", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--variants", nargs="+", default=["anchor:200", "trained:75", "trained:20", "scratch:400:2"])
    ap.add_argument("--rounds", type=int, default=1, help="timing rounds (the variants alternate their order)")
    ap.add_argument("--explain", action="store_true", help="also time the whole MedXGAN.explain and Captum IG-50 / Grad-CAM")
    ap.add_argument("--authors-n", type=int, default=0, help="also time the authors' inversion (1,000 Adam steps, batch 1; "
                    "explain_cost.authors_inversion) on this many of the images")
    ap.add_argument("--refiner", default=None, help="Er of restyle_probe.py (start 'iterative')")
    ap.add_argument("--refiner-passes", type=int, default=2)
    ap.add_argument("--result", default=None, help="write benchmarks/results/RESULT.json")
    args = ap.parse_args()
    torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", "1")))
    dev = torch.device("cpu")

    plain = load_gan_run(args.gan, device=dev, load_oracle=True, attach_encoder=False)
    G, clf, oracle = plain.generator, plain.classifier, plain.oracle
    encs = encoders(args.gan, plain.config["net"], dev, args.refiner, args.refiner_passes)
    preset_inv = dict((plain.config.get("preset") or {}).get("inversion") or {})
    ds = load_dataset(args.data, split="test", size=int(G.size), channels=int(G.channels))
    x_all, y_all, m_all, hm_all = ds.tensors()
    tw_all, has_tw_all = ds.twins() if getattr(ds, "has_twins", False) else (None, None)
    with torch.no_grad():
        p = torch.cat([clf.prob(x_all[s : s + 64].to(dev)).float().cpu() for s in range(0, len(x_all), 64)])
    idx = (p >= 0.5).nonzero().flatten()[: args.n]
    x, masks, has_mask = x_all[idx].to(dev), m_all[idx], hm_all[idx] & (y_all[idx] == 1)
    tw, has_tw = (tw_all[idx], has_tw_all[idx]) if tw_all is not None else (None, None)

    variants = [parse_variant(v) for v in args.variants]
    models: dict[str, MedXGAN] = {}
    for start, steps, restarts in variants:
        if start != "scratch" and encs[start] is None:
            raise SystemExit(f"{args.gan}: no {start} encoder")
        inv = {**preset_inv, "steps": steps, "restarts": restarts, "encoder": encs[start]}
        models[f"{start}:{steps}:{restarts}"] = MedXGAN(G, clf, inversion=inv)
    names = list(models)

    models[names[0]].engine.counterfactuals(x[:2])  # warm-up (allocator, oneDNN primitives), not timed
    times: dict[str, list[float]] = {k: [] for k in names}
    explain_times: dict[str, list[float]] = {k: [] for k in names + ["ig-50", "gradcam"]}
    baselines = {"ig-50": build_explainers(["ig-black"], clf)[0], "gradcam": build_explainers(["gradcam"], clf)[0]} if args.explain else {}
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for k in order:
            eng = models[k].engine
            eng.clear_cache()
            sync(dev)
            t = time.perf_counter()
            for s in range(0, len(x), args.batch):
                eng.counterfactuals(x[s : s + args.batch])
            sync(dev)
            times[k].append((time.perf_counter() - t) / len(x))
            if args.explain:
                eng.clear_cache()
                t = time.perf_counter()
                models[k].explain(x, batch_size=args.batch)
                explain_times[k].append((time.perf_counter() - t) / len(x))
            print(f"round {r} {k:18s} inversion {times[k][-1]:.3f} s/image"
                  + (f", explain {explain_times[k][-1]:.3f} s/image" if args.explain else ""), flush=True)
        for b, ex in baselines.items():
            ex.explain(x[:2])
            t = time.perf_counter()
            ex.explain(x)
            explain_times[b].append((time.perf_counter() - t) / len(x))
            print(f"round {r} {b:18s} explain {explain_times[b][-1]:.4f} s/image", flush=True)

    authors = None
    if args.authors_n:
        from explain_cost import AUTHORS_STEPS, authors_inversion

        xa = x[: args.authors_n]
        t = time.perf_counter()
        zs = [authors_inversion(G, clf, xa[i : i + 1], seed=i) for i in range(len(xa))]
        secs = (time.perf_counter() - t) / len(xa)
        with torch.no_grad():
            from medxgan.runtime.tensors import psnr

            rec = G(torch.cat([a for a, _ in zs]), torch.cat([b for _, b in zs]))
        authors = {"n": len(xa), "steps": AUTHORS_STEPS, "inversion_s_per_image": secs, "psnr": float(psnr(rec, xa).mean())}
        print(f"authors' inversion: {secs:.2f} s/image, PSNR {authors['psnr']:.2f} dB", flush=True)

    rows = []
    for k in names:
        q = quality(models[k], x, masks, has_mask, tw, has_tw, oracle, args.batch)  # from the last round's cache
        row = {"variant": k, "inversion_s_per_image": statistics.median(times[k]), **q}
        if args.explain:
            row["explain_s_per_image"] = statistics.median(explain_times[k])
        rows.append(row)
        print(f"{k:18s} " + "  ".join(f"{a} {b:.3f}" for a, b in row.items() if isinstance(b, float)), flush=True)
    out: dict[str, Any] = {"machine": machine(), "gan": args.gan, "data": args.data, "n_images": int(len(x)), "batch": args.batch,
                           "preset_inversion": preset_inv, "rounds": args.rounds,
                           "refiner": args.refiner, "refiner_passes": args.refiner_passes, "results": rows, "times": times}
    if args.explain:
        out["baselines_s_per_image"] = {b: statistics.median(explain_times[b]) for b in baselines}
        out["explain_times"] = explain_times
        ig = out["baselines_s_per_image"]["ig-50"]
        out["explain_over_ig50"] = {r["variant"]: r["explain_s_per_image"] / ig for r in rows}
    if authors is not None:
        out["authors_inversion"] = authors
        if args.explain:
            out["authors_inversion_over_explain"] = {r["variant"]: authors["inversion_s_per_image"] / r["explain_s_per_image"] for r in rows}
    base = rows[0]
    out["inversion_speedup_vs_first"] = {r["variant"]: base["inversion_s_per_image"] / r["inversion_s_per_image"] for r in rows}
    if args.result:
        print("written", write_result(args.result, out))


if __name__ == "__main__":
    main()
