"""Paired evaluation of a fundus <-> angiogram CycleGAN run.

Metrics on images scaled to [0, 1] (data range 1), per image, then mean and standard deviation over
the test subjects:

* SSIM: Gaussian window 11x11, sigma 1.5, K1 = 0.01, K2 = 0.03 (Wang et al. 2004), valid region
  (no padding), averaged over channels (torchmetrics, through :mod:`medxgan.runtime.quality`);
* PSNR = 10 log10(1 / MSE) in dB (the same module); MAE = mean |x - y|;
* cycle reconstruction: L1 (MAE) and PSNR of G_fundus(G_fa(fundus)) vs fundus and of
  G_fa(G_fundus(FA)) vs FA.

* FID / KID (:mod:`medxgan.translate.fidelity`, torchmetrics): real test images of a domain vs the
  translations into it, with a local Inception-v3 file (``inception_weights``; skipped without one, never
  downloaded); and always the domain KID, in a fixed random conv-net feature space that is NOT Inception.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from medxgan.runtime.atomic import atomic_save_image, atomic_write_json, atomic_write_text
from medxgan.runtime import quality
from medxgan.runtime.device import pick_device
from medxgan.translate.apply import translate
from medxgan.translate.images import load_paired_split, to01
from medxgan.translate.run import check_weights, load_generator, weights_text


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean SSIM per image (:func:`medxgan.runtime.quality.ssim`, torchmetrics): x, y N x C x H x W in [0, 1]
    -> (N,) float32; images must be at least 11 px on each side. With `mask` (N x 1 x H x W, 0/1) the SSIM
    map is averaged over the masked pixels only (e.g. the fundus field of view)."""
    return quality.ssim(x, y, data_range, mask=mask).float()


def field_of_view(fundus01: torch.Tensor, threshold: float = 10 / 255) -> torch.Tensor:
    """The fundus camera's circular field of view: N x 3 x H x W in [0, 1] -> N x 1 x H x W 0/1 mask of the
    pixels whose brightest channel exceeds `threshold` (the black surround is below it)."""
    return (fundus01.amax(1, keepdim=True) > threshold).float()


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR per image in dB (:func:`medxgan.runtime.quality.psnr`, torchmetrics) for [0, 1] images: (N,) float32."""
    return quality.psnr(x, y, data_range).float()


def mae(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x.double() - y.double()).abs().mean(dim=(1, 2, 3)).float()


def _summary(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "min": float(a.min()), "max": float(a.max())}


def _load_pairs(data: Path, size: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    return load_paired_split(Path(data), "test", size)


_to01 = to01


def evaluate_translation(
    data: str | Path,
    run: str | Path,
    out: str | Path | None = None,
    *,
    inception_weights: str | Path | None = None,
    figure_subjects: int = 4,
    device: str = "auto",
    batch_size: int = 8,
    weights: str = "last",
) -> dict[str, Any]:
    """Evaluate both directions on DATA/testA + DATA/testB (paired by file name) at the training size.

    ``weights``: which generators (last | ema | best, see :func:`medxgan.translate.run.load_generator`);
    the results say which. Writes `results.json`, `results.md` and `side_by_side.png` into `out` (default
    RUN/eval); returns the results dict.
    """
    from medxgan.translate.fidelity import DOMAIN_TEXT, fid_kid, load_inception

    data = Path(data)
    check_weights(run, weights)
    inception = load_inception(inception_weights) if inception_weights is not None else None  # mistakes before any work
    dev = pick_device(device)
    g_fa, cfg = load_generator(run, "fundus2angio", dev, weights)
    g_fundus, _ = load_generator(run, "angio2fundus", dev, weights)
    size = int(cfg["size"])
    names, a, b = _load_pairs(data, size)
    fake_b, rec_a, fake_a, rec_b = [], [], [], []
    for i in range(0, len(names), batch_size):
        xa, xb = a[i : i + batch_size].to(dev), b[i : i + batch_size].to(dev)
        fb = translate(g_fa, xa)
        fa_ = translate(g_fundus, xb)
        fake_b.append(fb.cpu())
        rec_a.append(translate(g_fundus, fb).cpu())
        fake_a.append(fa_.cpu())
        rec_b.append(translate(g_fa, fa_).cpu())
    fake_b, rec_a, fake_a, rec_b = (torch.cat(t) for t in (fake_b, rec_a, fake_a, rec_b))
    A, B = _to01(a), _to01(b)
    FB, RA, FA, RB = (_to01(t) for t in (fake_b, rec_a, fake_a, rec_b))
    fov = field_of_view(A)  # from the real fundus photo of each pair

    per_image = {
        "fundus2angio": {"ssim": ssim(FB, B).tolist(), "psnr": psnr(FB, B).tolist(), "mae": mae(FB, B).tolist(),
                         "ssim_fov": ssim(FB, B, mask=fov).tolist()},
        "angio2fundus": {"ssim": ssim(FA, A).tolist(), "psnr": psnr(FA, A).tolist(), "mae": mae(FA, A).tolist(),
                         "ssim_fov": ssim(FA, A, mask=fov).tolist()},
        "cycle_fundus": {"l1": mae(RA, A).tolist(), "psnr": psnr(RA, A).tolist()},
        "cycle_angio": {"l1": mae(RB, B).tolist(), "psnr": psnr(RB, B).tolist()},
    }
    skipped = {}
    if inception is None:
        skipped["fid"] = skipped["kid"] = ("skipped: needs a local Inception-v3 file (--inception-weights FILE: the TorchScript "
                                           "inception-2015-12-05.pt or pt_inception-2015-12-05-6726825d.pth); nothing is downloaded")
    fidelity = {
        "fundus2angio": fid_kid(B, FB, inception),  # real angiograms vs translated fundus photos
        "angio2fundus": fid_kid(A, FA, inception),
        "inception": inception.description if inception is not None else None,
        "domain_kid": DOMAIN_TEXT,
        "note": f"set-level distances over {len(names)} real vs {len(names)} translated test images; FID from so few "
                "images is biased upwards (compare only at equal counts); KID over 100 subsets of min(1000, N)",
    }
    results = {
        "run": str(run), "data": str(data), "n_pairs": len(names), "size": size,
        "weights": weights, "weights_used": weights_text(cfg, weights),
        "value_range": "[0, 1] (8-bit quantised, as saved PNGs); SSIM gaussian 11x11 sigma 1.5",
        "ssim_fov": "SSIM map averaged inside the field of view only (fundus pixels brighter than 10/255); "
                    "the headline SSIM is over the whole image, black surround included",
        "metrics": {d: {m: _summary(v) for m, v in ms.items()} for d, ms in per_image.items()},
        "fidelity": fidelity,
        "skipped": skipped,
        "per_image": {"names": names, **per_image},
    }
    out = Path(out) if out is not None else Path(run) / "eval"
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", results_markdown(results))
    k = min(figure_subjects, len(names))
    if k:
        side_by_side(out / "side_by_side.png", A[:k], FB[:k], B[:k], RA[:k], names[:k])
    return results


def results_markdown(results: dict[str, Any]) -> str:
    m = results["metrics"]
    f = lambda s, d=3: f"{s['mean']:.{d}f} ± {s['std']:.{d}f}"  # noqa: E731
    lines = [
        f"# CycleGAN evaluation ({results['n_pairs']} paired test images, {results['size']} px)",
        "",
        f"Weights: {results.get('weights_used', 'last')}.",
        "",
        "| direction | SSIM | PSNR (dB) | MAE | SSIM inside FoV |",
        "|---|---|---|---|---|",
        *(f"| {name} | {f(m[d]['ssim'])} | {f(m[d]['psnr'], 2)} | {f(m[d]['mae'])} | {f(m[d]['ssim_fov'])} |"
          for name, d in (("fundus -> angiogram", "fundus2angio"), ("angiogram -> fundus", "angio2fundus"))),
        "",
        "| cycle | L1 | PSNR (dB) |",
        "|---|---|---|",
        f"| fundus -> angiogram -> fundus | {f(m['cycle_fundus']['l1'])} | {f(m['cycle_fundus']['psnr'], 2)} |",
        f"| angiogram -> fundus -> angiogram | {f(m['cycle_angio']['l1'])} | {f(m['cycle_angio']['psnr'], 2)} |",
        "",
        f"Values: mean ± std over images; {results['value_range']}. SSIM inside FoV: {results['ssim_fov']}.",
        "",
    ]
    fid = results.get("fidelity")
    if fid:
        g = lambda d, k, p=2: "n/a" if k not in fid[d] else f"{fid[d][k]:.{p}f}"  # noqa: E731
        kid = lambda d, k: "n/a" if f"{k}_mean" not in fid[d] else f"{fid[d][f'{k}_mean']:.5f} ± {fid[d][f'{k}_std']:.5f}"  # noqa: E731
        lines += [
            "| direction | FID (Inception) | KID (Inception) | domain KID (not Inception) |",
            "|---|---|---|---|",
            f"| fundus -> angiogram | {g('fundus2angio', 'fid')} | {kid('fundus2angio', 'kid')} | {kid('fundus2angio', 'domain_kid')} |",
            f"| angiogram -> fundus | {g('angio2fundus', 'fid')} | {kid('angio2fundus', 'kid')} | {kid('angio2fundus', 'domain_kid')} |",
            "",
            f"Inception: {fid['inception'] or 'none given (FID/KID skipped)'}. Domain KID: {fid['domain_kid']}. {fid['note']}.",
            "",
        ]
    for k, v in results["skipped"].items():
        lines.append(f"- {k.upper()}: {v}")
    return "\n".join(lines) + "\n"


def side_by_side(path: Path, a: torch.Tensor, fake_b: torch.Tensor, b: torch.Tensor, rec_a: torch.Tensor, names: list[str]) -> None:
    """Columns: input fundus | synthesised angiogram | ground-truth angiogram | cycle reconstruction."""
    from PIL import Image, ImageDraw

    n, _, h, w = a.shape
    pad, head = 4, 16
    canvas = Image.new("RGB", (4 * (w + pad) + pad, n * (h + pad) + pad + head), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, title in enumerate(["fundus (input)", "synthesised FA", "real FA", "cycle fundus"]):
        draw.text((pad + j * (w + pad) + 2, 2), title, fill=(0, 0, 0))
    for i in range(n):
        for j, t in enumerate((a, fake_b, b, rec_a)):
            x = t[i].expand(3, -1, -1) if t.shape[1] == 1 else t[i]
            arr = (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
            canvas.paste(Image.fromarray(arr), (pad + j * (w + pad), head + pad + i * (h + pad)))
    atomic_save_image(path, canvas)
