"""Small pieces every section of the HTML report (:mod:`medxgan.report.html`) shares: escaping, a mean with
its 95 % interval, method labels and their order on the page, tolerant JSON readers and the page's CSS."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from medxgan.evaluate.tables import finite, format_number

__all__ = ["METHOD_ORDER", "METHOD_LABEL", "REPORT_CSS", "esc", "ci_text", "ci_cell", "read_json", "read_jsonl", "method_label",
           "ordered_methods", "method_stat"]


METHOD_ORDER = ("medxgan-diff", "medxgan-lig", "medxgan-mask", "gradcam", "ig-black", "ig-grey", "smoothgrad", "occlusion", "saliency",
                "extremal-perturbation", "meaningful-perturbation", "rise", "twin")
METHOD_LABEL = {"medxgan-diff": "medXGAN difference", "medxgan-lig": "medXGAN LIG", "medxgan-mask": "medXGAN minimal mask", "gradcam": "Grad-CAM",
                "ig-black": "IG (black)", "ig-grey": "IG (grey)", "smoothgrad": "SmoothGrad", "occlusion": "Occlusion",
                "saliency": "Saliency", "extremal-perturbation": "Extremal Perturbation", "meaningful-perturbation": "Meaningful Perturbation",
                "rise": "RISE", "twin": "twin (ground truth)"}


REPORT_CSS = """
*,*::before,*::after{box-sizing:border-box}
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;background:#fafafa;color:#222;line-height:1.45}
.wrap{max-width:1500px;margin:0 auto;padding:16px 20px 60px}
h1{font-size:1.6em;margin:.3em 0}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h3{font-size:1.05em;margin-top:1.2em}
p,li,summary{overflow-wrap:anywhere}
code{overflow-wrap:anywhere}
.banner{background:#fff3cd;border:2px solid #e0a800;padding:10px 14px;font-weight:bold;font-size:1.1em;margin:12px 0}
.verdict{background:#eef6ff;border:1px solid #9cc3ef;padding:10px 14px;margin:12px 0}
.verdict li{margin:.25em 0}.lead{color:#0a6e0a;font-weight:bold}.ahead{color:#8a6d00;font-weight:bold}.nolead{color:#a11;font-weight:bold}
.na{color:#666}
.scroll{overflow-x:auto;max-width:100%;margin:8px 0;border:1px solid #e3e3e3;background:#fff}
table{border-collapse:collapse;font-size:.85em}
th,td{border:1px solid #e3e3e3;padding:3px 6px;text-align:left;vertical-align:top}
thead th{background:#f1f1f1;white-space:normal;overflow-wrap:break-word;hyphens:auto;vertical-align:bottom}
table.metrics{width:100%;table-layout:auto}
table.metrics thead th{min-width:4.5em;max-width:9em;font-size:.92em}
table.metrics th.m{position:sticky;left:0;z-index:1;background:#f7f7f7;min-width:8.5em;max-width:11em;white-space:normal}
table.metrics thead th.m{z-index:2;background:#ececec}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.best{background:#e7f5e7;font-weight:bold}
.ci{color:#666;font-size:.85em;font-weight:normal}
table.headline{width:100%;background:#fff;margin:8px 0;font-size:.88em}
table.headline td:first-child{width:46%}
.imgrow{background:#fff;border:1px solid #e3e3e3;margin:10px 0;padding:6px 10px}
.imgrow h3.rowhead{margin:.2em 0 .4em;font-size:.95em;overflow-wrap:anywhere}
.rowbody{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,120px);gap:8px;flex:1 1 520px;min-width:0}
figure.t{margin:0;width:120px;text-align:center;font-size:.72em;line-height:1.25}
figure.t img,figure.t .blank{width:120px;height:120px;object-fit:contain;image-rendering:pixelated;image-rendering:crisp-edges;
display:block;background:#eee}
figure.t figcaption{margin-top:2px;overflow-wrap:anywhere;min-height:2.6em}
.sliderbox{flex:0 0 auto}
img.plot{max-width:100%;height:auto;border:1px solid #ddd;background:#fff;margin:4px 0}
.muted{color:#666;font-size:.9em}.note{background:#f4f4f4;padding:6px 10px;border-left:3px solid #bbb;margin:6px 0;overflow-wrap:anywhere}
pre{background:#f4f4f4;padding:8px;overflow-x:auto;font-size:.8em;max-height:420px;white-space:pre-wrap;overflow-wrap:anywhere}
details{margin:6px 0}summary{cursor:pointer;font-weight:bold}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,460px),1fr));gap:10px}
@media print{body{background:#fff}.wrap{max-width:none;padding:0}.scroll{overflow:visible;border:none}
table.metrics th.m{position:static}.imgrow,.verdict,table{break-inside:avoid}.slider input{display:none}details{display:block}
h2{break-before:auto}}
"""


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


_num, _fmt = finite, format_number


def ci_text(stat: Mapping[str, Any] | None) -> str:
    if not stat or _num(stat.get("mean")) is None:
        return "–"
    return f"{_fmt(stat['mean'])} [{_fmt(stat.get('lo'))}, {_fmt(stat.get('hi'))}]"


def ci_cell(stat: Mapping[str, Any] | None) -> str:
    """A mean over its interval, for narrow table cells."""
    if not stat or _num(stat.get("mean")) is None:
        return "–"
    return f"{_fmt(stat['mean'])}<br><span class='ci'>[{_fmt(stat.get('lo'))}, {_fmt(stat.get('hi'))}]</span>"


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    try:
        text = path.read_text()
    except OSError:
        return rows
    for line in text.splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict):
            rows.append(r)
    return rows


def method_label(m: str) -> str:
    return METHOD_LABEL.get(m, m)


def ordered_methods(methods: Iterable[str]) -> list[str]:
    ms = list(methods)
    return [m for m in METHOD_ORDER if m in ms] + [m for m in ms if m not in METHOD_ORDER]


def method_stat(results: Mapping[str, Any], method: str, key: str) -> dict | None:
    s = (((results.get("methods") or {}).get(method) or {}).get("metrics") or {}).get(key)
    if not isinstance(s, dict) or _num(s.get("mean")) is None:
        return None
    return s
