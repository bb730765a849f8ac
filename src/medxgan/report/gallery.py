"""The gallery page of an explained batch (what `medxgan explain` writes beside the image folders).

    from medxgan.report.gallery import write_gallery
    write_gallery("explanations/")     # -> explanations/index.html, from summary.json + each explanation.json

One row per scan: input, the counterfactual the run used (negative realization G(z1*, 0) or the
residual x_res), the difference and LIG overlays, the latent slider over the stored frames
(:mod:`medxgan.report.slider`), p(pos) of the input and of the counterfactual, reconstruction PSNR and
the LIG completeness error; the columns with numbers sort by a click on their header. Each name links
to the image's own page (``<name>/index.html``). Nothing is recomputed and nothing is fetched: the page
is plain HTML with a few lines of inline JS over the files of the folder.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from medxgan.evaluate.tables import finite
from medxgan.gan.gates import read_run_config, run_quality
from medxgan.report.explanation import OUTPUT_FILES
from medxgan.report.slider import PAGE_CSS, SLIDER_CSS, SLIDER_JS, slider_html
from medxgan.runtime.atomic import atomic_write_text
from medxgan.runtime.errors import MedxganError

__all__ = ["write_gallery", "GALLERY_FILE"]

GALLERY_FILE = "index.html"

# sorts the rows of table.sortable by the data-v of the clicked column (numbers; empty last)
_SORT_JS = """
(function(){
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th.sort').forEach(function(th){
    th.addEventListener('click',function(){
      var col=th.cellIndex,asc=th.getAttribute('data-dir')!=='asc',body=t.tBodies[0];
      t.querySelectorAll('th.sort').forEach(function(h){h.removeAttribute('data-dir');h.removeAttribute('aria-sort');});
      th.setAttribute('data-dir',asc?'asc':'desc');th.setAttribute('aria-sort',asc?'ascending':'descending');
      var rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){
        var x=parseFloat(a.cells[col].getAttribute('data-v')),y=parseFloat(b.cells[col].getAttribute('data-v'));
        if(isNaN(x))return 1;if(isNaN(y))return -1;return asc?x-y:y-x;});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
})();
"""


_num = finite


def _cell(v: Any, fmt: str, unit: str = "") -> str:
    f = _num(v)
    return f"<td class='num' data-v='{'' if f is None else repr(f)}'>{'–' if f is None else format(f, fmt) + unit}</td>"


def _record(out: Path, item: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        r = json.loads((out / str(item["name"]) / OUTPUT_FILES["json"]).read_text())
    except (OSError, ValueError, KeyError):
        return None
    return r if isinstance(r, dict) else None


def write_gallery(out_dir: str | os.PathLike, summary: Mapping[str, Any] | None = None) -> Path:
    """Write ``OUT/index.html`` for an explained batch (``summary``: the dict of ``OUT/summary.json``,
    read from disk when None). Returns its path."""
    out = Path(out_dir)
    if summary is None:
        try:
            summary = json.loads((out / "summary.json").read_text())
        except (OSError, ValueError) as exc:
            raise MedxganError(f"{out / 'summary.json'}: no readable summary of an explained batch ({exc})") from None
    e = html.escape
    F = OUTPUT_FILES
    quality = run_quality(summary.get("gan"))
    floor = quality["psnr_floor_db"]
    low_psnr: list[str] = []
    not_flipped: list[str] = []  # the classifier was not flipped within the mask: the map shows the generator's prior (issue 31)
    rows = []
    cfs = set()
    for item in summary.get("images") or []:
        r = _record(out, item)
        name = str(item.get("name"))
        if r is None:
            rows.append(f"<tr><td class='name'>{e(name)}</td><td colspan='9' class='muted'>explanation.json missing or unreadable</td></tr>")
            continue
        resid = r.get("counterfactual") == "residual"
        cfs.add("residual" if resid else "generator")
        q = name + "/"
        p_cf = r.get("prob_residual") if resid else r.get("prob_negative")
        slider = r.get("slider") or {}
        sl = (slider_html({k: [q + s for s in v] for k, v in slider.items()}, r.get("frame_probs"), r.get("alphas"),
                          counterfactual=r.get("counterfactual", "generator")) if slider.get("frames") else "<span class='muted'>no frames</span>")
        cf_img = F["residual"] if resid else F["negative"]
        rows.append(
            f"<tr><td class='name'><a href='{e(q + F['page'])}'><b>{e(name)}</b></a><br><span class='muted'>{e(r.get('input') or '')}</span></td>"
            f"<td><img class='th' src='{e(q + F['input'])}' alt='input'></td>"
            f"<td><img class='th' src='{e(q + cf_img)}' alt='counterfactual'><span class='muted'>{'x_res' if resid else 'G(z1*, 0)'}</span></td>"
            f"<td><img class='th' src='{e(q + F['difference_overlay'])}' alt='difference'></td>"
            f"<td><img class='th' src='{e(q + F['lig_overlay'])}' alt='LIG'></td>"
            f"<td>{sl}</td>"
            + _cell(r.get("prob_input"), ".3f") + _cf_cell(p_cf, r, name, not_flipped) + _psnr_cell(r.get("psnr"), floor, name, low_psnr)
            + _cell(100 * (_num((r.get("lig") or {}).get("completeness_error_rel")) or float("nan")), ".1f", " %") + "</tr>")
    used = ", ".join(sorted(cfs)) or str(summary.get("counterfactual", "generator"))
    n = len(summary.get("images") or [])
    head = ("<thead><tr><th>scan</th><th>input</th><th>counterfactual (used)</th><th>difference</th><th>LIG</th><th>latent slider</th>"
            "<th class='sort' title='sort'>p(pos) input</th><th class='sort' title='sort'>p(pos) counterfactual</th>"
            "<th class='sort' title='sort'>PSNR</th><th class='sort' title='sort'>completeness error</th></tr></thead>")
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<title>medXGAN explanations ({n})</title><style>{PAGE_CSS}{SLIDER_CSS}"
            ".gal td:nth-child(6){min-width:240px}.gal td img.th{width:84px;height:84px}.gal .slider{--s:100px}</style></head><body><div class='wrap'>"
            f"<h1>medXGAN explanations: {n} scan(s)</h1>"
            f"{_provenance(summary, quality)}{_flags(quality, low_psnr, not_flipped)}"
            f"<p class='muted'>{e(str(summary.get('inversion', '')))} · counterfactual used: "
            f"<b>{e(used)}</b> · mean PSNR {_fmt(summary.get('mean_psnr'), '.1f')} dB · mean LIG completeness error "
            f"{_fmt(100 * (_num(summary.get('mean_completeness_error_rel')) or float('nan')), '.1f')} %</p>"
            "<p class='muted'>Click a numeric column header to sort by it; drag a slider to move along the explained path "
            "(the frame, the classifier's p(pos) there and the change accumulated so far). A name opens that scan's page.</p>"
            f"<div style='overflow-x:auto'><table class='sortable gal'>{head}<tbody>{''.join(rows)}</tbody></table></div>"
            f"</div><script>{SLIDER_JS}{_SORT_JS}</script></body></html>")
    return atomic_write_text(out / GALLERY_FILE, page)


def _cf_cell(p_cf: Any, record: Mapping[str, Any], name: str, not_flipped: list[str]) -> str:
    """The counterfactual's p(pos), flagged when the classifier was not flipped within the mask (record ``flipped`` False)."""
    if record.get("flipped") is not False:
        return _cell(p_cf, ".3f")
    not_flipped.append(name)
    f = _num(p_cf)
    return (f"<td class='num flag' data-v='{f!r}' title='{html.escape(str(record.get('prior_note') or 'not flipped'))}'>"
            f"<b>⚠ {_fmt(p_cf, '.3f')}</b><br><span class='muted'>not flipped: the map shows the generator's prior</span></td>")


def _psnr_cell(v: Any, floor: float, name: str, low: list[str]) -> str:
    """The PSNR cell, flagged when the reconstruction is far below the run's validation figure (gan.gates)."""
    f = _num(v)
    if f is None or f >= floor:
        return _cell(v, ".1f", " dB")
    low.append(name)
    return (f"<td class='num flag' data-v='{f!r}' title='below {floor:.1f} dB: the counterfactual explains a different image'>"
            f"<b>⚠ {f:.1f} dB</b></td>")


def _provenance(summary: Mapping[str, Any], quality: Mapping[str, Any]) -> str:
    """Which classifier (source, target, fingerprint) and which GAN run (steps) made these explanations."""
    e = html.escape
    rec = read_run_config(summary.get("gan")).get("classifier") or {}
    used_fp = summary.get("classifier")
    name = summary.get("classifier_name") or rec.get("source") or rec.get("local") or "?"
    target = summary.get("classifier_target") or ((rec.get("adapter") or {}).get("target_description"))
    other = rec.get("fingerprint") and used_fp and used_fp != rec.get("fingerprint")
    steps = quality.get("steps_done") if quality.get("steps_done") is not None else quality.get("steps")
    return (f"<p>Classifier <code>{e(str(name))}</code>" + (f" · target <b>{e(str(target))}</b>" if target else "")
            + f" · fingerprint <code>{e(str(used_fp))}</code>"
            + (f" <b>(not the classifier the GAN was trained against, {e(str(rec.get('fingerprint')))})</b>" if other else "")
            + f"<br>GAN run <code>{e(str(summary.get('gan')))}</code> · {e(str(steps if steps is not None else '?'))} training steps"
            + (f" · status {e(str(quality.get('status')))}" if quality.get("status") not in (None, "finished") else "") + "</p>")


def _flags(quality: Mapping[str, Any], low_psnr: list[str], not_flipped: Sequence[str] = ()) -> str:
    """Warnings that the pictures alone would not show (gan.gates): a GAN below its monitor gates, poor reconstructions."""
    e = html.escape
    items = []
    if quality.get("monitor_shortfalls"):
        items.append("the GAN is below its training gates (" + e(", ".join(quality["monitor_shortfalls"])) + "): its counterfactuals may "
                     "change other things than what the classifier uses, or not look like scans")
    if low_psnr:
        items.append(f"{len(low_psnr)} reconstruction(s) below {quality['psnr_floor_db']:.1f} dB ({e(quality['psnr_floor_reason'])}): "
                     + e(", ".join(low_psnr[:12])) + (" ..." if len(low_psnr) > 12 else "") + "; their counterfactuals explain a different image")
    if not_flipped:
        items.append(f"{len(not_flipped)} scan(s) where the classifier could not be flipped within the mask (it still calls the "
                     "counterfactual positive): their maps show the generator's prior, not what the classifier needs: "
                     + e(", ".join(not_flipped[:12])) + (" ..." if len(not_flipped) > 12 else ""))
    if not items:
        return ""
    return ("<div class='flag' style='border:2px solid #c33;padding:6px 10px;margin:8px 0;background:#fff4f4'><b>⚠ Quality warning</b><ul>"
            + "".join(f"<li>{i}</li>" for i in items) + "</ul></div>")


def _fmt(v: Any, fmt: str) -> str:
    f = _num(v)
    return "–" if f is None else format(f, fmt)
