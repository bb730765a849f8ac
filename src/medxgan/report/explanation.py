"""The files of one explained image (what `medxgan explain` writes per input): figures, maps, JSON."""

from __future__ import annotations

import html
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from medxgan.explain.model import ExplanationResult
from medxgan.report import figures as fig
from medxgan.report.slider import PAGE_CSS, SLIDER_CSS, SLIDER_JS, slider_html, write_slider_images
from medxgan.runtime.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text, to_jsonable

OUTPUT_FILES = dict(
    input="input.png", reconstruction="reconstruction.png", negative="negative.png", residual="residual.png",
    difference="difference.png", difference_overlay="difference_overlay.png", lig_overlay="lig_overlay.png",
    accumulated_change_overlay="accumulated_change_overlay.png", interpolation_strip="interpolation.png",
    interpolation_gif="interpolation.gif", panel="panel.png", maps="maps.npz", json="explanation.json", page="index.html",
)
#: written only when the minimal mask was used (the ``medxgan-mask`` map: the region the residual counterfactual replaced)
MASK_OVERLAY = "minimal_mask_overlay.png"
SLIDER_DIR = "slider"  # the frames and accumulated-change maps of the latent slider (index.html and the gallery)


def write_explanation(res: ExplanationResult, out_dir: str | os.PathLike, *, source: str | os.PathLike | None = None, display_size: int = 192,
                      name: str | None = None) -> dict[str, Any]:
    """Write one image's figures, maps and JSON into ``out_dir`` (atomically) and return the JSON record.

    Files (see ``OUTPUT_FILES``): input / reconstruction / negative at native resolution; the difference
    heatmap; overlays of the difference, LIG (signed, blue-white-red) and accumulated change on the
    input; the interpolation strip with p(pos) under each frame and its GIF; a panel of all of these;
    ``maps.npz`` (float arrays: difference, signed_difference, lig, accumulated_change, and residual_mask
    when the minimal mask was used); ``slider/``
    (each interpolation frame and its accumulated change map as PNG) and ``index.html``, a page with the
    figures and the interactive latent slider over those frames (:mod:`medxgan.report.slider`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    F = OUTPUT_FILES

    def big(im):
        return fig.upscale(im, display_size)

    residual = res.residual if res.residual is not None else res.negative
    inp, rec, neg, resid = (fig.tensor_to_pil(t) for t in (res.input, res.reconstruction, res.negative, residual))
    for key, im in (("input", inp), ("reconstruction", rec), ("negative", neg), ("residual", resid)):
        fig.save_png(out / F[key], im)
    is_residual = res.counterfactual == "residual"
    big_in = big(inp)
    diff_heat = big(fig.colorize(res.difference, "inferno", signed=False))
    diff_ov = fig.overlay_heatmap(big_in, res.difference, signed=False, cmap="jet")
    lig_ov = fig.overlay_heatmap(big_in, res.lig, signed=True, cmap="bwr")
    acc_ov = fig.overlay_heatmap(big_in, res.accumulated_change, signed=False, cmap="jet")
    fig.save_png(out / F["difference"], diff_heat)
    fig.save_png(out / F["difference_overlay"], diff_ov)
    fig.save_png(out / F["lig_overlay"], lig_ov)
    fig.save_png(out / F["accumulated_change_overlay"], acc_ov)
    mask_ov = None
    if res.residual_mask is not None:
        mask_ov = fig.overlay_heatmap(big_in, res.residual_mask, signed=False, cmap="jet")
        fig.save_png(out / MASK_OVERLAY, mask_ov)

    frames = [fig.tensor_to_pil(f) for f in res.frames]
    caps = [f"a={a:.2f}\np={p:.2f}" for a, p in zip(res.alphas, res.frame_probs)]
    title = ("x_res -> x (the latent change applied to the scan): p(positive) per frame" if is_residual
             else "G(z1*, a z2*): p(positive) per frame")
    fig.save_png(out / F["interpolation_strip"], fig.captioned_strip(frames, caps, min_size=96, title=title))
    fig.save_gif(out / F["interpolation_gif"], [fig.captioned_strip([f], [c.replace("\n", "  ")], min_size=display_size) for f, c in zip(frames, caps)])
    images = [inp, rec, neg] + ([resid] if is_residual else []) + [diff_ov, lig_ov] + ([mask_ov] if mask_ov is not None else [])
    captions = ([f"input\np={res.prob_input:.3f}", f"reconstruction\np={res.prob_reconstruction:.3f}\nPSNR {res.psnr:.1f} dB",
                 f"negative G(z1*,0)\np={res.prob_negative:.3f}"]
                + ([f"residual cf (used)\np={res.prob_residual:.3f}"] if is_residual else [])
                + ["|x - x_res|" if is_residual else "|x_pos - x_neg|",
                   f"LIG ({res.settings.get('lig_form', 'path')})\ncompl. err {100 * res.completeness_error_rel:.1f}%"]
                + (["minimal mask M\n(x_res replaced it)"] if mask_ov is not None else []))
    panel = fig.captioned_strip(images, captions, min_size=display_size)
    fig.save_png(out / F["panel"], panel)
    buf = io.BytesIO()
    arrays = {k: getattr(res, k).squeeze(0).numpy().astype(np.float32) for k in ("difference", "signed_difference", "lig", "accumulated_change")}
    if res.residual_mask is not None:  # the minimal mask the residual counterfactual replaced
        arrays["residual_mask"] = res.residual_mask.squeeze(0).numpy().astype(np.float32)
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(out / F["maps"], buf.getvalue())

    slider = write_slider_images(res.frames, out / SLIDER_DIR, "frame")
    record = dict(
        name=name or out.name, input=str(source) if source is not None else None, dir=str(out),
        **res.summary(), settings=to_jsonable(res.settings),
        files={**F, **({"minimal_mask_overlay": MASK_OVERLAY} if mask_ov is not None else {})},
        slider={k: [f"{SLIDER_DIR}/{n}" for n in v] for k, v in slider.items()},
    )
    atomic_write_text(out / F["page"], _page(record, slider))
    atomic_write_json(out / F["json"], record)
    return record


def _page(record: dict[str, Any], slider: dict[str, list[str]]) -> str:
    """One explained image as a page: the panel's figures, its numbers and the latent slider."""
    F = OUTPUT_FILES
    e = html.escape
    resid = record.get("counterfactual") == "residual"
    tiles = [("input", F["input"], f"p(pos) {record['prob_input']:.3f}"),
             ("reconstruction", F["reconstruction"], f"p(pos) {record['prob_reconstruction']:.3f} · PSNR {record['psnr']:.1f} dB"),
             ("negative G(z1*, 0)" + ("" if resid else " (used)"), F["negative"], f"p(pos) {record['prob_negative']:.3f}")]
    if resid:
        tiles.append(("residual x_res (used)", F["residual"], f"p(pos) {record['prob_residual']:.3f}"))
    tiles += [("|x − x_res|" if resid else "|x_pos − x_neg|", F["difference_overlay"], ""),
              ("LIG", F["lig_overlay"], f"completeness error {100 * record['lig']['completeness_error_rel']:.1f} %"),
              ("accumulated change", F["accumulated_change_overlay"], "")]
    if "minimal_mask_overlay" in record.get("files", {}):
        tiles.append(("minimal mask M (the region x_res replaced)", MASK_OVERLAY, ""))
    figs = "".join(f"<figure class='t'><img src='{e(src)}' alt='{e(t)}'><figcaption>{e(t)}<br>{e(c)}</figcaption></figure>" for t, src, c in tiles)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<title>{e(record['name'])}: medXGAN explanation</title><style>{PAGE_CSS}{SLIDER_CSS}</style></head><body><div class='wrap'>"
            f"<p><a href='../index.html'>← all explanations</a></p><h1>{e(record['name'])}</h1>"
            f"<p class='muted'>{e(record.get('input') or '')} · counterfactual: <b>{e(record.get('counterfactual', 'generator'))}</b></p>"
            f"<div class='tiles'>{figs}</div><h2>Latent slider</h2>"
            + slider_html(slider, record.get("frame_probs"), record.get("alphas"), counterfactual=record.get("counterfactual", "generator"), rel=SLIDER_DIR)
            + f"<p class='muted'>Files: <a href='{F['json']}'>{F['json']}</a> · <a href='{F['maps']}'>{F['maps']}</a> · "
            f"<a href='{F['panel']}'>{F['panel']}</a> · <a href='{F['interpolation_gif']}'>{F['interpolation_gif']}</a></p>"
            f"</div><script>{SLIDER_JS}</script></body></html>")
