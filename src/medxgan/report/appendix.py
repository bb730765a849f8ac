"""The closing sections of the HTML report: the evaluation's benchmark plots (copied beside the page) and the
configuration behind it: run times per stage and per method, package versions, machine, the run configs."""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any, Mapping

from medxgan.evaluate.store import PLOTS_DIR
from medxgan.evaluate.tables import format_number
from medxgan.report.markup import esc, read_json
from medxgan.runtime.version import __version__

__all__ = ["plots_html", "config_html"]

_fmt = format_number


def _versions(results: Mapping[str, Any]) -> dict[str, str]:
    v = dict(results.get("versions") or {})
    for mod in ("torch", "numpy", "captum", "matplotlib"):
        if mod not in v:
            try:
                v[mod] = __import__(mod).__version__
            except Exception:
                v[mod] = "not installed"
    v.setdefault("medxgan", __version__)
    v.setdefault("python", platform.python_version())
    return v


def _machine(results: Mapping[str, Any], demo: Mapping[str, Any] | None) -> dict[str, Any]:
    m = dict((demo or {}).get("machine") or {})
    m.setdefault("platform", platform.platform())
    m.setdefault("cpu_count", os.cpu_count())
    m.setdefault("device", (results.get("config") or {}).get("device"))
    return m


def _kv_table(d: Mapping[str, Any]) -> str:
    return "<div class='scroll'><table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in d.items()) + "</table></div>"


def _json_block(title: str, obj: Any, open_: bool = False) -> str:
    return f"<details{' open' if open_ else ''}><summary>{esc(title)}</summary><pre>{esc(json.dumps(obj, indent=2, default=str))}</pre></details>"


def _trim_config(cfg: Mapping[str, Any] | None) -> dict:
    return {k: v for k, v in (cfg or {}).items() if k not in ("metrics",)}


def plots_html(ev: Path, img_dir: Path, rel: str) -> str:
    """The evaluation's plots (OUT/plots/*.png), copied beside the page."""
    h: list[str] = []
    h.append("<h2 id='plots'>Benchmark plots</h2>")
    plots = sorted((ev / PLOTS_DIR).glob("*.png")) if (ev / PLOTS_DIR).is_dir() else []
    order = {"deletion_mean.png": 0, "deletion_blur.png": 1, "noise_ssim.png": 2, "noise_spearman.png": 3, "noise_top10.png": 4}
    plots.sort(key=lambda p: (order.get(p.name, 10), p.name))
    if plots:
        (img_dir / "plots").mkdir(exist_ok=True)
        h.append("<div class='grid'>")
        for p in plots:
            shutil.copyfile(p, img_dir / "plots" / p.name)
            h.append(f"<div><img class='plot' src='{rel}/plots/{esc(p.name)}' alt='{esc(p.stem)}'></div>")
        h.append("</div>")
    else:
        h.append("<p class='muted'>no plots in the evaluation directory (run with plots on).</p>")
    return "\n".join(h)


def config_html(results: Mapping[str, Any], demo: Mapping[str, Any] | None, dirs: Mapping[str, Any]) -> str:
    """Run times, versions, machine and the configurations behind the page."""
    cfg = results.get("config") or {}
    h: list[str] = ["<h2 id='config'>Configuration, versions, machine</h2>"]
    if demo is not None and demo.get("stages"):
        rows = []
        for name, st in demo["stages"].items():
            rows.append(f"<tr><td>{esc(name)}</td><td class='num'>{_fmt(st.get('seconds'), 1)}</td>"
                        f"<td>{'reused from an earlier run' if st.get('reused') else ''}</td></tr>")
        total = demo.get("total_s")
        h.append("<h3>Run times per stage (s)</h3><div class='scroll'><table><tr><th>stage</th><th>seconds</th><th></th></tr>"
                 + "".join(rows)
                 + (f"<tr><th>total of the last call (before the report)</th><td class='num'>{_fmt(total, 1)}</td><td></td></tr>"
                    if total is not None else "")
                 + "</table></div>")
    tm = results.get("timings") or {}
    if tm:
        h.append("<h3>Evaluation time per method</h3><div class='scroll'><table><tr><th>method</th><th>s / image</th><th>total s</th></tr>"
                 + "".join(f"<tr><td>{esc(m)}</td><td class='num'>{_fmt((t or {}).get('s_per_image'))}</td>"
                           f"<td class='num'>{_fmt((t or {}).get('total_s'), 1)}</td></tr>"
                           for m, t in tm.items()) + "</table></div>")
    h.append("<h3>Package versions</h3>" + _kv_table(_versions(results)))
    h.append("<h3>Machine</h3>" + _kv_table(_machine(results, demo)))
    if demo is not None:
        h.append(_json_block("demo.json", demo))
    h.append(_json_block("evaluation config (results.json)", cfg))
    for key in ("classifier", "gan"):
        d = dirs.get(key)
        if d is not None:
            h.append(_json_block(f"{key} run config ({d.name}/config.json)", _trim_config(read_json(d / "config.json"))))
    return "\n".join(h)
