"""The interactive latent slider: one explained image's stored interpolation frames as a page element.

Dragging alpha from 0 to 1 shows the frame at alpha (``G(z1*, alpha z2*)``, or the residual
counterfactual at alpha: from x_res to the scan), the classifier's p(pos) at that alpha (text and a
small curve) and the accumulated change map ``sum_{i < k} |x_{i+1} - x_i|`` up to that frame, drawn on
one colour scale for the whole path (so it grows as alpha moves). Plain HTML + a few lines of vanilla
JS (:data:`SLIDER_JS`, inline in the page); the frames are PNG files beside the page, so a report or
gallery stays one self-contained folder. Nothing is recomputed: the frames are those the run stored.

    names = write_slider_images(frames, img_dir, "brain_0001")      # F frame + F change PNGs
    html = slider_html(names, probs, alphas, counterfactual="generator", rel="img")
    page = "<style>" + SLIDER_CSS + "</style>" + html + "<script>" + SLIDER_JS + "</script>"
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from medxgan.report.figures import save_png, tensor_to_pil

__all__ = ["change_maps", "write_slider_images", "slider_html", "path_label", "SLIDER_CSS", "SLIDER_JS", "PAGE_CSS"]

# the plain page style of the per-image page and the explain gallery (the report has its own)
PAGE_CSS = """
*,*::before,*::after{box-sizing:border-box}
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;background:#fafafa;color:#222;line-height:1.45}
.wrap{max-width:1500px;margin:0 auto;padding:16px 20px 60px}
h1{font-size:1.5em;margin:.3em 0;overflow-wrap:anywhere}h2{font-size:1.2em;margin-top:1.4em;border-bottom:1px solid #ddd}
.muted{color:#666;font-size:.9em;overflow-wrap:anywhere}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,136px);gap:8px}
figure.t{margin:0;width:136px;text-align:center;font-size:.75em;line-height:1.25}
figure.t img{width:136px;height:136px;object-fit:contain;image-rendering:pixelated;display:block;background:#eee}
figure.t figcaption{overflow-wrap:anywhere}
table{border-collapse:collapse;font-size:.85em;width:100%;background:#fff}
th,td{border:1px solid #e3e3e3;padding:4px 6px;text-align:left;vertical-align:top}
thead th{background:#f1f1f1;position:sticky;top:0;z-index:1}
th.sort{cursor:pointer;user-select:none}th.sort::after{content:" ⇅";color:#999}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td img.th{width:96px;height:96px;image-rendering:pixelated;display:block;background:#eee}
td.name{overflow-wrap:anywhere;max-width:14em}
@media print{.slider input{display:none}thead th{position:static}tr{break-inside:avoid}}
"""

_LUMA = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)

SLIDER_CSS = """
.slider{--s:128px;display:inline-grid;grid-template-columns:var(--s) var(--s);gap:4px 10px;align-items:start;background:#fff;border:1px solid #ddd;
padding:6px 8px;border-radius:4px;font-size:.8em;max-width:100%;box-sizing:border-box}
.slider figure{margin:0;text-align:center}
.slider img{width:var(--s);height:var(--s);image-rendering:pixelated;image-rendering:crisp-edges;display:block}
.slider .sl-ctl{grid-column:1/3;display:flex;align-items:center;gap:4px 8px;flex-wrap:wrap}
.slider input[type=range]{width:100%;margin:0}
.slider .sl-p{font-weight:bold;font-variant-numeric:tabular-nums}
.slider .sl-what{grid-column:1/3;color:#555;white-space:normal;line-height:1.25}
.slider svg{display:block}
"""

# Wires every .slider of the page: the range input picks frame k; the frame, the change map, the alpha
# and p(pos) texts and the marker on the p(pos) curve follow it. Frames are preloaded.
SLIDER_JS = """
(function(){
function setup(el){
  var d=JSON.parse(el.getAttribute('data-slider'));
  var r=el.querySelector('input[type=range]'),f=el.querySelector('img.sl-frame'),c=el.querySelector('img.sl-change');
  var a=el.querySelector('.sl-alpha'),p=el.querySelector('.sl-p'),m=el.querySelector('.sl-mark');
  d.frames.concat(d.changes).forEach(function(s){var i=new Image();i.src=s;});
  function show(){
    var k=parseInt(r.value,10);
    f.src=d.frames[k];c.src=d.changes[k];
    a.textContent=d.alphas[k].toFixed(2);
    p.textContent=d.probs[k]===null?'?':d.probs[k].toFixed(3);
    if(m&&d.probs[k]!==null){m.setAttribute('cx',(4+112*d.alphas[k]).toFixed(1));m.setAttribute('cy',(30-26*d.probs[k]).toFixed(1));}
    el.setAttribute('data-frame',k);
  }
  r.addEventListener('input',show);r.addEventListener('change',show);show();
}
function all(){var s=document.querySelectorAll('.slider[data-slider]');for(var i=0;i<s.length;i++){setup(s[i]);}}
if(document.readyState==='loading'){document.addEventListener('DOMContentLoaded',all);}else{all();}
})();
"""


def _luma(frames: np.ndarray) -> np.ndarray:
    """F x C x H x W -> F x H x W (one channel kept, three combined with the luminance weights)."""
    f = np.asarray(frames, dtype=np.float32)
    if f.ndim == 3:
        return f
    if f.shape[1] == 3:
        return np.einsum("fchw,c->fhw", f, _LUMA)
    return f[:, 0]


def change_maps(frames: Any) -> np.ndarray:
    """Accumulated absolute change along the path, F x H x W: map k = sum_{i < k} |x_{i+1} - x_i|
    (per-channel absolute differences combined with the luminance weights for RGB); map 0 is zero."""
    f = np.asarray(frames.numpy() if hasattr(frames, "numpy") else frames, dtype=np.float32)
    if f.ndim == 4 and f.shape[1] == 3:
        steps = np.einsum("fchw,c->fhw", np.abs(np.diff(f, axis=0)), _LUMA)
    else:
        steps = np.abs(np.diff(_luma(f), axis=0))
    return np.concatenate([np.zeros_like(steps[:1]), np.cumsum(steps, axis=0)], axis=0)


def _heat(a: np.ndarray, scale: float, base: Image.Image) -> Image.Image:
    """``a`` / scale (clipped to [0, 1]) through the inferno colour map, blended over ``base`` with an
    opacity that grows with the value."""
    from matplotlib import colormaps

    v = np.clip(np.nan_to_num(a) / scale, 0.0, 1.0) if scale > 0 else np.zeros_like(a)
    rgb = colormaps["inferno"](v)[..., :3]
    b = np.asarray(base.convert("RGB"), dtype=np.float32) / 255.0
    w = (0.25 + 0.75 * v)[..., None]
    return Image.fromarray((255 * ((1 - w) * b * 0.6 + w * rgb)).clip(0, 255).astype(np.uint8), "RGB")


def write_slider_images(frames: Any, out_dir: str | os.PathLike, prefix: str) -> dict[str, list[str]]:
    """Write frame k (``<prefix>_f<k>.png``, native resolution) and its accumulated change map
    (``<prefix>_c<k>.png``, one colour scale for the whole path: the 99.5th percentile of the final
    map) for every frame of ``frames`` (F x C x H x W in [-1, 1]). Returns {"frames", "changes"}: the
    file names (relative to ``out_dir``)."""
    out = Path(out_dir)
    f = np.asarray(frames.numpy() if hasattr(frames, "numpy") else frames, dtype=np.float32)
    acc = change_maps(f)
    scale = float(np.percentile(acc[-1], 99.5)) if acc.size else 0.0
    base = tensor_to_pil(f[-1])
    names: dict[str, list[str]] = {"frames": [], "changes": []}
    for k in range(len(f)):
        fn, cn = f"{prefix}_f{k:02d}.png", f"{prefix}_c{k:02d}.png"
        save_png(out / fn, tensor_to_pil(f[k]))
        save_png(out / cn, _heat(acc[k], scale, base))
        names["frames"].append(fn)
        names["changes"].append(cn)
    return names


def path_label(counterfactual: str) -> str:
    """What the slider's path is, by the counterfactual the run explained."""
    if counterfactual == "residual":
        return ("residual counterfactual at α: the scan with the latent change (1 − α) z2* removed "
                "(α = 0: x_res, the counterfactual used; α = 1: the scan)")
    return "G(z1*, α z2*): α = 0: negative realization G(z1*, 0), the counterfactual used; α = 1: reconstruction"


def _curve(probs: Sequence[float | None], alphas: Sequence[float]) -> str:
    pts = [(4 + 112 * float(a), 30 - 26 * float(p)) for a, p in zip(alphas, probs) if p is not None]
    if not pts:
        return ""
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
    return ("<svg width='120' height='34' viewBox='0 0 120 34' role='img' aria-label='p(pos) along the path'>"
            "<rect x='4' y='4' width='112' height='26' fill='#f6f6f6' stroke='#ccc'/>"
            "<line x1='4' y1='17' x2='116' y2='17' stroke='#ccc' stroke-dasharray='2,2'/>"
            f"<polyline points='{line}' fill='none' stroke='#1f5fa8' stroke-width='1.5'/>"
            f"<circle class='sl-mark' cx='{pts[-1][0]:.1f}' cy='{pts[-1][1]:.1f}' r='3' fill='#c00'/></svg>")


def slider_html(names: dict[str, list[str]], probs: Sequence[float] | None, alphas: Sequence[float] | None, *,
                counterfactual: str = "generator", rel: str = "", start: int | None = None) -> str:
    """The slider element for the files of :func:`write_slider_images` (``rel``: their folder,
    relative to the page). ``probs``: p(pos) per frame (None: unknown); ``alphas`` default 0..1."""
    n = len(names["frames"])
    if n == 0:
        return ""
    al = [float(a) for a in alphas] if alphas is not None and len(alphas) == n else [k / max(1, n - 1) for k in range(n)]
    pr: list[float | None] = [None if p is None or not np.isfinite(float(p)) else round(float(p), 4) for p in probs] \
        if probs is not None and len(probs) == n else [None] * n
    pre = f"{rel.rstrip('/')}/" if rel else ""
    data = {"frames": [pre + s for s in names["frames"]], "changes": [pre + s for s in names["changes"]], "alphas": al, "probs": pr}
    k = n - 1 if start is None else max(0, min(n - 1, int(start)))
    attr = json.dumps(data).replace("&", "&amp;").replace("'", "&#39;")
    p_txt = "?" if pr[k] is None else f"{pr[k]:.3f}"
    return (f"<div class='slider' data-slider='{attr}' data-frame='{k}'>"
            f"<figure><img class='sl-frame' src='{data['frames'][k]}' alt='frame at alpha'><figcaption>frame</figcaption></figure>"
            f"<figure><img class='sl-change' src='{data['changes'][k]}' alt='accumulated change'><figcaption>accumulated change</figcaption></figure>"
            f"<div class='sl-ctl'><input type='range' min='0' max='{n - 1}' step='1' value='{k}' aria-label='alpha'>"
            f"<span>α = <span class='sl-alpha'>{al[k]:.2f}</span> · p(pos) = <span class='sl-p'>{p_txt}</span></span>{_curve(pr, al)}</div>"
            f"<div class='sl-what'>{path_label(counterfactual)}</div></div>")
