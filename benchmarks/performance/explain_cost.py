"""Explanation cost per image, and what it buys: medXGAN with encoder-initialised inversion against
inversion from scratch, the authors' per-image inversion, Captum Integrated Gradients and Grad-CAM.

    python benchmarks/performance/explain_cost.py --gan RUN --data DATA [--n 32] [--authors-n 8]

RUN must hold an encoder (`medxgan train-encoder RUN`). On the first ``--n`` positives of DATA's test
split (the GAN's size), each method runs in the same process:

* ``medxgan_encoder``: `MedXGAN.explain` with the encoder start and its short schedule (inversion +
  difference map + interpolation + LIG), batches of ``--batch``;
* ``medxgan_scratch``: the same pipeline with inversion from scratch (library default: 400 steps x 2
  starts, early stop);
* ``authors_inversion``: inversion alone, one image at a time (batch size 1), the authors' demo recipe:
  z1, z2 ~ N(0, I), Adam(lr 0.001, betas 0.5/0.999), 1,000 steps, loss 10 MSE + BCE(p(G(z)), p(x)),
  G in eval mode (their demo's train mode is a bug we do not copy), on the first ``--authors-n`` images;
* ``integrated_gradients`` (Captum, 50 steps, black baseline) and ``gradcam`` (Captum LayerGradCam).

Quality for the inversion-based rows: reconstruction PSNR and counterfactual validity (p(pos) of
G(z1*, 0) < 0.5, for inputs the classifier calls positive), on the images each row ran on.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, sync, write_result  # noqa: E402

from medxgan.data import load_dataset  # noqa: E402
from medxgan.explain.baselines import build_explainers  # noqa: E402
from medxgan.runtime.tensors import frozen, psnr  # noqa: E402
from medxgan.pipeline import MedXGAN  # noqa: E402
from medxgan.gan.run import load_gan_run  # noqa: E402

AUTHORS_STEPS = 1000


def authors_inversion(G, clf, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One image (1 x C x H x W): the authors' demo inversion (G eval). Returns (z1, z2)."""
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(1, G.nz1, generator=g).to(x.device).requires_grad_(True)
    z2 = torch.randn(1, G.nz2, generator=g).to(x.device).requires_grad_(True)
    opt = torch.optim.Adam([z1, z2], lr=0.001, betas=(0.5, 0.999))
    with torch.no_grad():
        p_x = clf.prob(x).float()
    with frozen(G, clf), torch.enable_grad():
        for _ in range(AUTHORS_STEPS):
            out = G(z1, z2)
            loss = 10 * F.mse_loss(out, x) + F.binary_cross_entropy_with_logits(clf.logit(out).float(), p_x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return z1.detach(), z2.detach()


def quality(G, clf, x: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> dict[str, np.ndarray]:
    with torch.no_grad():
        rec, neg = G(z1, z2), G(z1, torch.zeros_like(z2))
        p_in, p_neg = clf.prob(x).float(), clf.prob(neg).float()
    return {"psnr": psnr(rec, x).cpu().numpy(), "valid": (p_neg < 0.5).float().cpu().numpy(), "called_positive": (p_in >= 0.5).cpu().numpy()}


def summarize(name: str, seconds: float, n: int, q: dict[str, np.ndarray] | None = None, **extra) -> dict:
    row = {"method": name, "n_images": n, "seconds_total": seconds, "seconds_per_image": seconds / n, **extra}
    if q is not None:
        pos = q["called_positive"].astype(bool)
        row.update(psnr_mean=float(q["psnr"].mean()), psnr_std=float(q["psnr"].std()),
                   validity=float(q["valid"][pos].mean()) if pos.any() else None, n_called_positive=int(pos.sum()))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gan", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--authors-n", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--sweep", type=int, nargs="*", default=[0, 20, 75, 150, 400], help="refinement steps for the quality sweep")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", help="results folder (default benchmarks/results)")
    args = ap.parse_args()
    dev = torch.device(args.device)

    mx = MedXGAN.load(args.gan, device=dev)
    info = mx.encoder_info
    if not info or info["kind"] != "trained":
        raise SystemExit(f"{args.gan}: no encoder from `medxgan train-encoder`; train one first")
    plain = load_gan_run(args.gan, device=dev, load_oracle=False, attach_encoder=False)
    mx_scratch = MedXGAN(plain.generator, plain.classifier, inversion={})
    G, clf = plain.generator, plain.classifier

    ds = load_dataset(args.data, split="test", size=mx.size)
    x_all, y_all = ds.tensors()[:2]
    x = x_all[(y_all == 1).nonzero().flatten()[: args.n]].to(dev)
    rows = []

    def run_medxgan(name: str, model: MedXGAN) -> None:
        model.explain(x[:2], batch_size=2)  # warm-up (allocator, oneDNN primitives), not timed
        model.engine.clear_cache()
        sync(dev)
        t = time.perf_counter()
        for s in range(0, len(x), args.batch):  # inversion (+ counterfactual), cached by the engine
            model.engine.counterfactuals(x[s : s + args.batch])
        sync(dev)
        t_inv = time.perf_counter() - t
        res = model.explain(x, batch_size=args.batch)  # difference map, interpolation and LIG on the cached codes
        sync(dev)
        secs = time.perf_counter() - t
        q = quality(G, clf, x, torch.stack([r.z1 for r in res]).to(dev), torch.stack([r.z2 for r in res]).to(dev))
        steps = float(np.mean([r.inversion_steps for r in res]))
        rows.append(summarize(name, secs, len(x), q, inversion=dict(model.engine.inversion), mean_adam_steps_run=steps,
                              inversion_seconds_per_image=t_inv / len(x), maps_seconds_per_image=(secs - t_inv) / len(x),
                              lig_completeness_rel_mean=float(np.mean([r.completeness_error_rel for r in res]))))
        print(f"{name:22s} {secs / len(x):7.3f} s/image (inversion {t_inv / len(x):.3f})  PSNR {rows[-1]['psnr_mean']:.2f} dB  "
              f"validity {rows[-1]['validity']}", flush=True)

    run_medxgan("medxgan_encoder", mx)
    run_medxgan("medxgan_scratch", mx_scratch)

    xa = x[: args.authors_n]
    zs = []
    sync(dev)
    t = time.perf_counter()
    for i in range(len(xa)):
        zs.append(authors_inversion(G, clf, xa[i : i + 1], seed=i))
    sync(dev)
    secs = time.perf_counter() - t
    z1, z2 = torch.cat([a for a, _ in zs]), torch.cat([b for _, b in zs])
    rows.append(summarize("authors_inversion", secs, len(xa), quality(G, clf, xa, z1, z2), steps=AUTHORS_STEPS, batch_size=1,
                          note="inversion only (no difference map, no LIG)"))
    print(f"{'authors_inversion':22s} {secs / len(xa):7.3f} s/image  PSNR {rows[-1]['psnr_mean']:.2f} dB  validity {rows[-1]['validity']}", flush=True)

    # quality against refinement steps from the encoder's start (inversion only, 1 start)
    from medxgan.gan.inversion import invert

    sweep = []
    for steps in args.sweep:
        sync(dev)
        t = time.perf_counter()
        r = invert(G, clf, x, steps=steps, restarts=1, encoder=mx.engine.encoder)
        sync(dev)
        q = quality(G, clf, x, r.z1.to(dev), r.z2.to(dev))
        sweep.append({"steps": steps, "psnr_mean": float(q["psnr"].mean()), "validity": float(q["valid"][q["called_positive"].astype(bool)].mean()),
                      "inversion_seconds_per_image": (time.perf_counter() - t) / len(x)})
        print(f"encoder start + {steps:4d} steps: PSNR {sweep[-1]['psnr_mean']:.2f} dB", flush=True)

    for name, method in (("integrated_gradients", "ig-black"), ("gradcam", "gradcam")):
        ex = build_explainers([method], clf)[0]
        ex.explain(x[:2])  # warm-up
        sync(dev)
        t = time.perf_counter()
        ex.explain(x)
        sync(dev)
        secs = time.perf_counter() - t
        rows.append(summarize(name, secs, len(x), None, captum=True))
        print(f"{name:22s} {secs / len(x):7.4f} s/image", flush=True)

    by = {r["method"]: r for r in rows}
    enc = by["medxgan_encoder"]
    ratios = {
        "authors_inversion_over_encoder_explanation": by["authors_inversion"]["seconds_per_image"] / enc["seconds_per_image"],
        "authors_inversion_over_encoder_inversion": by["authors_inversion"]["seconds_per_image"] / enc["inversion_seconds_per_image"],
        "scratch_over_encoder_inversion": by["medxgan_scratch"]["inversion_seconds_per_image"] / enc["inversion_seconds_per_image"],
        "scratch_over_encoder_explanation": by["medxgan_scratch"]["seconds_per_image"] / enc["seconds_per_image"],
        "scratch_over_encoder_adam_steps": (by["medxgan_scratch"]["mean_adam_steps_run"] * by["medxgan_scratch"]["inversion"].get("restarts", 2))
        / (enc["mean_adam_steps_run"] * enc["inversion"].get("restarts", 1)),
        "encoder_explanation_over_integrated_gradients": enc["seconds_per_image"] / by["integrated_gradients"]["seconds_per_image"],
        "encoder_explanation_over_gradcam": enc["seconds_per_image"] / by["gradcam"]["seconds_per_image"],
    }
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}x")
    print(write_result("explain_cost", {"machine": machine(), "device": str(dev), "gan": args.gan, "data": args.data,
                                        "encoder": info, "results": rows, "ratios": ratios, "encoder_steps_sweep": sweep}, args.out and Path(args.out)))


if __name__ == "__main__":
    main()
