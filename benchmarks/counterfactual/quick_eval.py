"""Fast side-by-side check of medXGAN counterfactuals on phantoms with lesion-free twins.

For the first N test positives that the classifier calls positive (sorted by path): invert, then score
the difference map |G(z1*, z2*) - G(z1*, 0)|, LIG, and two baselines (IG-black, saliency) with the
area-matched IoU and the pointing game, and the counterfactuals G(z1*, 0) and the residual
x - (G(z1*, z2*) - G(z1*, 0)) against the twin (PSNR gain over the input) and for validity (classifier,
oracle). A development tool for comparing GAN variants quickly; the benchmark of record is
`medxgan evaluate` / `medxgan demo`.

    python benchmarks/counterfactual/quick_eval.py RUN DATA [--n 30] [--steps 200] [--w-cf 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from medxgan.data import load_dataset, load_image_tensor
from medxgan.evaluate.localisation import iou_area_matched, pointing_game, score_map
from medxgan.explain.baselines import EXPLAINERS
from medxgan.explain.lig import latent_integrated_gradients
from medxgan.gan.inversion import invert, psnr
from medxgan.gan.run import load_gan_run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("data")
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--restarts", type=int, default=1)
    ap.add_argument("--w-cf", type=float, default=0.0)
    ap.add_argument("--w-prior", type=float, default=0.0)
    ap.add_argument("--w-min", type=float, default=0.0)
    ap.add_argument("--counterfactual", default="generator")
    ap.add_argument("--w-real", type=float, default=0.0, help="inversion realism term: the counterfactual must pass the run's D as a real negative")
    ap.add_argument("--baselines", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--from-checkpoint", action="store_true", help="evaluate the run's latest checkpoint (training still going)")
    ap.add_argument("--checkpoint-step", type=int, help="evaluate the run's checkpoint of this step (implies --from-checkpoint)")
    ap.add_argument("--png", help="a grid of the first 8 images: input, twin, x_pos, x_neg, residual, |difference|, LIG")
    a = ap.parse_args()
    torch.manual_seed(0)
    from_ckpt = a.from_checkpoint or a.checkpoint_step is not None
    run = load_gan_run(_snapshot(a.run, a.checkpoint_step) if from_ckpt else a.run, device="cpu")
    G, clf, oracle = run.generator, run.classifier, run.oracle
    ds = load_dataset(a.data, split="test", size=G.size, channels=G.channels)
    x, y, m, has = ds.tensors()
    paths = ds.paths
    order = sorted(range(len(paths)), key=lambda i: paths[i])
    with torch.no_grad():
        p = clf.prob(x).float()
    sel = [i for i in order if int(y[i]) == 1 and bool(has[i]) and float(p[i]) >= 0.5 and m[i].sum() > 0][: a.n]
    x, m = x[sel], m[sel]
    twins = torch.cat([load_image_tensor(_twin(a.data, paths[i]), size=G.size, channels=G.channels) for i in sel])
    res = invert(G, clf, x, steps=a.steps, restarts=a.restarts, w_cf=a.w_cf, w_prior=a.w_prior, w_min=a.w_min,
                 counterfactual=a.counterfactual, w_real=a.w_real, discriminator=_discriminator(a.run, run.config) if a.w_real else None)
    with torch.no_grad():
        z1, z2 = res.z1, res.z2
        x_pos, x_neg = res.reconstructions, G(z1, torch.zeros_like(z2))
        x_res = (x - (x_pos - x_neg)).clamp(-1, 1)
        cfs = [("neg", x_neg), ("residual", x_res)]
        extra_maps = {}
        if getattr(G, "masked", False):
            _, base, gm = G(z1, z2, return_parts=True)
            x_inp = (1 - gm) * x + gm * base  # the scan with the pathology mask filled by the anatomy
            cfs.append(("inpaint", x_inp))
            extra_maps = {"mask": gm, "inpaint": (x - x_inp).abs().mean(1, keepdim=True)}
        val = {}
        for name, im in cfs:
            val[f"valid_{name}_clf"] = float((clf.prob(im) < 0.5).float().mean())
            val[f"valid_{name}_oracle"] = float((oracle.prob(im) < 0.5).float().mean()) if oracle is not None else None
    lig = latent_integrated_gradients(G, clf, z1, z2).maps
    maps = {"difference": (x_pos - x_neg).abs().mean(1, keepdim=True), "lig": lig, **extra_maps}
    if a.baselines:
        for name in ("ig-black", "saliency"):
            maps[name] = EXPLAINERS[name](clf).explain(x).maps
    out: dict = {"run": a.run, "n": len(sel), "psnr_rec": float(res.psnr.mean()), **val}
    base = psnr(x, twins)
    out["psnr_input_twin"] = float(base.mean())
    for name, im in cfs:
        out[f"psnr_gain_{name}"] = float((psnr(im, twins) - base).mean())
    for name, mp in maps.items():
        sc = [score_map(mp[i, 0].numpy(), "abs") for i in range(len(sel))]  # |A|, as the benchmark scores
        iou = [iou_area_matched(sc[i], m[i, 0].numpy() > 0.5) for i in range(len(sel))]
        pg = [pointing_game(sc[i], m[i, 0].numpy() > 0.5) for i in range(len(sel))]
        out[f"{name}_iou"], out[f"{name}_pointing"] = float(np.mean(iou)), float(np.mean(pg))
    # where the lesion goes: mean |image - twin| inside the mask, as a share of the input's
    lesion = _excess(x - twins, m).clamp(min=1e-6)
    out["lesion_kept_pos"] = float((_excess(x_pos - twins, m) / lesion).mean())
    out["lesion_kept_neg"] = float((_excess(x_neg - twins, m) / lesion).mean())
    for name, im in cfs[1:]:
        out[f"lesion_kept_{name}"] = float((_excess(im - twins, m) / lesion).mean())
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()}))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    if a.png:
        _grid(a.png, [x, twins, x_pos, x_neg, cfs[-1][1], maps["difference"], maps["lig"]] + ([maps["inpaint"]] if "inpaint" in maps else []), m)


def _grid(path: str, rows: list, m: torch.Tensor, k: int = 8) -> None:
    from PIL import Image

    tiles = []
    for j, t in enumerate(rows):
        t = t[:k].mean(1).numpy()
        if j >= 5:  # maps: |A| scaled per image
            t = np.abs(t) / (np.abs(t).reshape(len(t), -1).max(1)[:, None, None] + 1e-12) * 2 - 1
        tiles.append(np.concatenate(list((t + 1) * 127.5), axis=1))
    img = np.concatenate(tiles, axis=0).clip(0, 255).astype(np.uint8)
    Image.fromarray(img).resize((img.shape[1] * 2, img.shape[0] * 2), Image.NEAREST).save(path)


def _snapshot(run: str, step: int | None = None) -> str:
    """A run directory next to RUN holding the generator (EMA copy if any) and encoder of its latest checkpoint
    (or of the checkpoint of `step`)."""
    import shutil

    from safetensors.torch import save_file

    from medxgan.runtime.runs import RunDir

    rd = RunDir(run)
    ckpt = None
    if step is not None:
        ckpt = next((c for c in rd.list_checkpoints() if int(c.name.split("_")[1]) == step), None)
        if ckpt is None:
            raise SystemExit(f"{run}: no checkpoint of step {step}")
    st = rd.load_checkpoint(ckpt)["trainer"]
    snap = Path(str(run).rstrip("/") + (f".snapshot{step}" if step is not None else ".snapshot"))
    shutil.rmtree(snap, ignore_errors=True)
    snap.mkdir()
    for name in ("config.json", "classifier", "oracle"):
        if (rd.path / name).exists():
            (snap / name).symlink_to((rd.path / name).resolve())
    save_file({k: v.contiguous() for k, v in st.get("G_ema", st["G"]).items()}, str(snap / "generator.safetensors"))
    if "E" in st:
        save_file({k: v.contiguous() for k, v in st["E"].items()}, str(snap / "encoder.safetensors"))
    return str(snap)


def _discriminator(run: str, config: dict):
    from medxgan.gan.networks import build_discriminator
    from medxgan.runtime.runs import RunDir

    rd = RunDir(run)
    D = build_discriminator(config["net"])
    D.load_state_dict(rd.load_weights("discriminator") if rd.has_weights("discriminator") else rd.load_checkpoint()["trainer"]["D"])
    return D.eval()


def _twin(root: str, path: str) -> Path:
    rel = Path(path).resolve().relative_to(Path(root).resolve())
    return Path(root) / "twins" / rel


def _excess(d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return (d.abs() * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp(min=1)


if __name__ == "__main__":
    main()
