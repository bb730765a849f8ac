"""The explained-images section of the HTML report: one row of equal tiles per image (input with the lesion
outline, reconstruction, counterfactuals, each method's |A| over the input) and, where interpolation frames
were stored, the latent slider beside the row."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from medxgan.evaluate.store import frames_file, input_maps_file, method_maps_file, safe_method
from medxgan.evaluate.tables import finite, format_number
from medxgan.report.figures import draw_mask_outline, overlay_heatmap, save_png, tensor_to_pil
from medxgan.report.markup import esc, method_label, ordered_methods
from medxgan.report.slider import slider_html, write_slider_images

__all__ = ["select_rows", "image_rows_html"]

_num, _fmt = finite, format_number


def select_rows(results: Mapping[str, Any], max_rows: int = 12) -> list[dict]:
    """The images shown one per row: true positives first (those are scored for localisation),
    then the other explained images, in the runner's order; at most ``max_rows``. Each item is the
    first per-image row of the image (``image_id``, ``slice``, ``prob``, ...)."""
    first: dict[str, dict] = {}
    for r in results.get("per_image") or []:
        if isinstance(r, dict) and r.get("image_id") is not None:
            first.setdefault(str(r["image_id"]), r)
    rows = list(first.values())
    rows.sort(key=lambda r: (0 if r.get("slice") == "TP" else 1))  # stable: keeps the runner's order within a group
    return rows[: max(0, int(max_rows))]


def _npz(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception:  # a corrupt file must not stop the report
        return None


def _fig(src: str | None, caption: str, alt: str, cls: str = "") -> str:
    """One tile of an image strip: a fixed-size image (or an empty square) with its caption under it."""
    if src is None:
        return f"<figure class='t'><div class='blank'></div><figcaption>{caption}</figcaption></figure>"
    c = f" class='{cls}'" if cls else ""
    return f"<figure class='t'><img{c} src='{esc(src)}' alt='{esc(alt)}'><figcaption>{caption}</figcaption></figure>"


def _row_metrics(results: Mapping[str, Any], image_id: str) -> dict[str, dict]:
    return {r["method"]: r for r in results.get("per_image") or [] if r.get("image_id") == image_id and "method" in r}


def _map_caption(row: dict | None) -> str:
    if not row:
        return ""
    met = row.get("metrics") or {}
    bits = []
    loc = met.get("localisation") or {}
    if _num(loc.get("pointing_game")) is not None:
        bits.append("hit" if loc["pointing_game"] else "miss")
    if _num(loc.get("iou_area_matched")) is not None:
        bits.append(f"IoU {_fmt(loc['iou_area_matched'], 2)}")
    d = (met.get("deletion_mean") or {}).get("auc")
    if _num(d) is not None:
        bits.append(f"del {_fmt(d, 2)}")
    if row.get("invalid_map"):
        bits.append("invalid map")
    return " · ".join(bits)


def _mask_target_label(inv: Mapping[str, Any]) -> str:
    """How negative the minimal mask's counterfactual had to be, and its grid (empty for the old settings)."""
    bits = []
    floor = inv.get("minimal_mask_floor")
    if inv.get("minimal_mask_target") == "healthy" and floor is not None:
        bits.append(f"target: the generator's counterfactual or logit {float(floor):.2f} (95 % of real negatives), whichever is less negative")
    if int(inv.get("minimal_mask_scale") or 1) > 1:
        bits.append(f"mask grid {int(inv['minimal_mask_scale'])}x coarser")
    return "; " + "; ".join(bits) if bits else ""


def image_rows_html(results: Mapping[str, Any], eval_dir: Path, img_dir: Path, rel: str, max_rows: int) -> str:
    methods = ordered_methods((results.get("methods") or {}).keys())
    rows = select_rows(results, max_rows)
    if not rows:
        return "<p class='muted'>no per-image rows in results.json</p>"
    inv = (results.get("config") or {}).get("inversion") or {}
    cf_mode = inv.get("counterfactual") or "generator"
    cf_label = cf_mode + (f", within the minimal mask ({inv['minimal_mask_steps']} refinement steps per scan{_mask_target_label(inv)})"
                          if cf_mode == "residual" and inv.get("minimal_mask_steps") else "")
    has_frames = False
    out = []
    for r in rows:
        iid = str(r["image_id"])
        inp = _npz(input_maps_file(eval_dir, iid))
        per = _row_metrics(results, iid)
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in iid)
        figs = []
        prob_in = _num(inp.get("prob")) if inp is not None else _num(r.get("prob"))
        sl = str(inp["slice"]) if inp is not None and "slice" in inp else r.get("slice", "?")
        head = f"<h3 class='rowhead'>{esc(iid)} <span class='muted'>{esc(r.get('image', ''))}</span></h3>"
        if inp is None:
            out.append(f"<section class='imgrow'>{head}<p class='muted'>maps not saved (evaluation run with --no-maps?)</p></section>")
            continue
        image = inp["image"]
        mask = inp.get("mask")
        has_mask = mask is not None and bool(np.asarray(mask).any())

        def outline(im):
            return draw_mask_outline(im, mask) if has_mask else im

        save_png(img_dir / f"{safe}__input.png", outline(tensor_to_pil(image)))
        figs.append(_fig(f"{rel}/{safe}__input.png", f"input ({esc(sl)})<br>p(pos) {_fmt(prob_in, 2)}", "input"))
        fr = _npz(frames_file(eval_dir, iid))
        fprobs = fr.get("frame_probs") if fr is not None else None
        diff = _npz(method_maps_file(eval_dir, iid, "medxgan-diff")) or _npz(method_maps_file(eval_dir, iid, "medxgan-lig"))
        cfm = ((per.get("medxgan-diff") or {}).get("metrics") or {})
        if diff is not None and "x_pos" in diff:
            save_png(img_dir / f"{safe}__xpos.png", tensor_to_pil(diff["x_pos"]))
            p = f"p(pos) {_fmt(fprobs[-1], 2)}" if fprobs is not None and cf_mode != "residual" else ""
            figs.append(_fig(f"{rel}/{safe}__xpos.png", f"reconstruction<br>{p}", "reconstruction"))
        for key, label, group in (("x_neg", "negative G(z1*, 0)", "counterfactual"), ("x_res", "residual x_res", "counterfactual_residual")):
            if diff is None or key not in diff:
                continue
            save_png(img_dir / f"{safe}__{key}.png", tensor_to_pil(diff[key]))
            valid = (cfm.get(group) or {}).get("valid_classifier")
            used = (key == "x_res") == (cf_mode == "residual")
            if fprobs is not None and used:
                p = f"p(pos) {_fmt(fprobs[0], 2)}"
            elif _num(valid) is not None:
                p = "p(pos) < 0.5" if valid else "p(pos) ≥ 0.5"
            else:
                p = ""
            figs.append(_fig(f"{rel}/{safe}__{key}.png", f"{label}{' (used)' if used else ''}<br>{p}", label))
        for m in methods:
            z = _npz(method_maps_file(eval_dir, iid, m))
            if z is None or "map" not in z:
                figs.append(_fig(None, f"{esc(method_label(m))}<br>–", m))
                continue
            a = np.nan_to_num(np.abs(z["map"].astype(np.float32)))
            name = f"{safe}__{safe_method(m)}.png"
            save_png(img_dir / name, outline(overlay_heatmap(image, a, signed=False, alpha=0.6)))
            figs.append(_fig(f"{rel}/{name}", f"{esc(method_label(m))}<br>{esc(_map_caption(per.get(m)))}", m))
        slider = ""
        if fr is not None and "frames" in fr and len(fr["frames"]) >= 2:
            names = write_slider_images(fr["frames"], img_dir, f"{safe}__interp")
            slider = ("<div class='sliderbox'>" + slider_html(names, fprobs, fr.get("alphas"), counterfactual=cf_mode, rel=rel) + "</div>")
            has_frames = True
        out.append(f"<section class='imgrow'>{head}<div class='rowbody'><div class='tiles'>{''.join(figs)}</div>{slider}</div></section>")
    note = ("<p class='muted'>Every tile is the same size. Overlays show |A| (what the metrics score; jet colour map, opacity grows with |A|, "
            "each map scaled by its own 99.5th percentile) over the input; the green line is the lesion mask. Under each map: pointing-game "
            "hit/miss and area-matched IoU (true positives with a mask), deletion AUC (mean replacement, lower = more faithful). "
            "The slider beside a row walks the stored interpolation frames: drag α to see the frame, the classifier's p(pos) there "
            f"and the change accumulated so far (counterfactual used by this run: <b>{esc(cf_label)}</b>).")
    if not has_frames and any(method_maps_file(eval_dir, str(r["image_id"]), "medxgan-diff").is_file() for r in rows):
        note += (" The evaluation runner stores x_pos / x_neg but no interpolation frames, and none were computed for this report "
                 "(<code>medxgan report DIR --frames</code> computes them with the GAN run), so the slider is omitted.")
    return note + "</p>" + "".join(out)
