"""Benchmark plots (matplotlib, Agg canvas, no pyplot state): metric bars with 95% intervals (one panel
per metric, one PNG per group of metrics), deletion curves, noise-robustness curves.

Every function takes the aggregated results of :func:`medxgan.evaluate.runner.evaluate`
(``methods = results["methods"]``: ``{method: {"metrics": {key: {"mean", "lo", "hi", "n", ...}}}}``)
and writes one PNG atomically; it returns the path, or None when there is nothing to plot.
"""

from __future__ import annotations

import io
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from medxgan.evaluate.tables import bar_groups as default_bar_groups
from medxgan.runtime.atomic import atomic_write_bytes

__all__ = ["metric_bars", "metric_bar_grid", "deletion_curves", "noise_curves", "write_plots", "safe_name", "new_figure", "save_figure"]

_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def safe_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_")


def new_figure(w: float = 6.0, h: float = 3.6, dpi: int = 110):
    """A matplotlib Figure on the Agg canvas, without pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | os.PathLike) -> Path:
    """The figure as a PNG, written atomically."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def _stat(methods: Mapping[str, Any], method: str, key: str) -> dict | None:
    s = (methods.get(method) or {}).get("metrics", {}).get(key)
    if not s or s.get("mean") is None or not math.isfinite(float(s["mean"])):
        return None
    return s


def _color(i: int) -> str:
    return _COLORS[i % len(_COLORS)]


def _bars_on(ax, methods: Mapping[str, Any], key: str, title: str, lower_is_better: bool) -> bool:
    names, means, lo, hi, ns, cols = [], [], [], [], [], []
    for i, m in enumerate(methods):
        s = _stat(methods, m, key)
        if s is None:
            continue
        names.append(m)
        means.append(float(s["mean"]))
        lo.append(max(0.0, float(s["mean"]) - float(s["lo"])))
        hi.append(max(0.0, float(s["hi"]) - float(s["mean"])))
        ns.append(int(s.get("n", 0)))
        cols.append(_color(i))  # a method keeps its colour across panels
    if not names:
        return False
    xs = list(range(len(names)))
    ax.bar(xs, means, yerr=[lo, hi], capsize=3, color=cols, alpha=0.85)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{n}\n(n={k})" for n, k in zip(names, ns)], fontsize=7, rotation=30, ha="right")
    ax.set_title(title + (" (lower is better)" if lower_is_better else ""), fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    return True


def metric_bars(methods: Mapping[str, Any], key: str, path: str | os.PathLike, title: str | None = None, lower_is_better: bool = False) -> Path | None:
    """One bar per method (mean) with its 95% bootstrap interval as an error bar; n under each label."""
    fig = new_figure(max(4.0, 0.9 * len(methods) + 1.5), 3.4)
    if not _bars_on(fig.add_subplot(1, 1, 1), methods, key, title or key, lower_is_better):
        return None
    return save_figure(fig, path)


def metric_bar_grid(methods: Mapping[str, Any], keys: Sequence[tuple[str, str, bool]], path: str | os.PathLike, title: str | None = None) -> Path | None:
    """One panel per metric ``(key, title, lower_is_better)`` (metrics without values are left out),
    bars = methods with 95% intervals, in one PNG."""
    keys = [k for k in keys if any(_stat(methods, m, k[0]) is not None for m in methods)]
    if not keys:
        return None
    ncol = min(4, len(keys))
    nrow = math.ceil(len(keys) / ncol)
    fig = new_figure(ncol * max(2.6, 0.45 * len(methods) + 1.0), nrow * 2.9 + (0.3 if title else 0))
    for j, (key, t, lower) in enumerate(keys):
        _bars_on(fig.add_subplot(nrow, ncol, j + 1), methods, key, t, lower)
    if title:
        fig.suptitle(title + " (mean, 95% bootstrap CI)", fontsize=10)
    return save_figure(fig, path)


def deletion_curves(methods: Mapping[str, Any], fractions: Sequence[float], replacement: str, path: str | os.PathLike) -> Path | None:
    """Mean p(pos) after deleting the top-k fraction of pixels (k = 0 first), per method, with the
    95% interval as a band. ``replacement``: "mean" or "blur" (the ``deletion_<replacement>`` keys)."""
    ks = [0.0] + [float(f) for f in fractions]
    fig = new_figure(6.0, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    drawn = 0
    for i, m in enumerate(methods):
        stats = [_stat(methods, m, f"deletion_{replacement}.probs[{j}]") for j in range(len(ks))]
        pts = [(k, s) for k, s in zip(ks, stats) if s is not None]
        if len(pts) < 2:
            continue
        x = [100 * k for k, _ in pts]
        ax.plot(x, [s["mean"] for _, s in pts], marker="o", ms=3, color=_color(i), label=m)
        ax.fill_between(x, [s["lo"] for _, s in pts], [s["hi"] for _, s in pts], color=_color(i), alpha=0.15)
        drawn += 1
    if not drawn:
        return None
    ax.set_xscale("symlog", linthresh=1.0)
    ticks = [100 * k for k in ks]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks], fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("pixels removed (%)")
    ax.set_ylabel("p(positive)")
    ax.set_ylim(-0.02, 1.02)
    ax.axhline(0.5, color="k", lw=0.6, ls=":")
    ax.set_title(f"Deletion curves ({replacement} replacement; lower = more faithful)", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def noise_curves(methods: Mapping[str, Any], sigmas: Sequence[float], path: str | os.PathLike, metric: str = "ssim") -> Path | None:
    """Similarity between the clean and the noisy map (``metric``: ssim, spearman or top10) against
    the noise sigma ([-1, 1] units), per method, with 95% intervals."""
    fig = new_figure(6.0, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    drawn = 0
    for i, m in enumerate(methods):
        pts = [(s, _stat(methods, m, f"robustness.noise_{s:g}.{metric}")) for s in sigmas]
        pts = [(s, st) for s, st in pts if st is not None]
        if not pts:
            continue
        x = [s for s, _ in pts]
        y = [st["mean"] for _, st in pts]
        err = [[st["mean"] - st["lo"] for _, st in pts], [st["hi"] - st["mean"] for _, st in pts]]
        ax.errorbar(x, y, yerr=err, marker="o", ms=3, capsize=3, color=_color(i), label=m)
        drawn += 1
    if not drawn:
        return None
    ax.set_xlabel("noise sigma ([-1, 1] units)")
    ax.set_ylabel(f"{metric} (clean vs noisy map)")
    ax.set_title(f"Robustness to input noise: {metric} (higher = more stable)", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def write_plots(results: Mapping[str, Any], out_dir: str | os.PathLike, bar_groups: Mapping[str, Sequence[tuple[str, str, bool]]] | None = None) -> list[Path]:
    """All benchmark plots of the runner's ``results`` into ``out_dir``: ``bars_<group>.png`` (one panel
    per metric) for each ``group -> [(key, title, lower_is_better)]`` of ``bar_groups`` (default:
    :func:`medxgan.evaluate.tables.bar_groups` of the results' config), ``deletion_mean.png``,
    ``deletion_blur.png`` and ``noise_{ssim,spearman,top10}.png``."""
    out = Path(out_dir)
    methods = results.get("methods", {})
    cfg = results.get("config", {})
    if bar_groups is None:
        bar_groups = default_bar_groups(cfg)
    written: list[Path | None] = []
    for group, keys in bar_groups.items():
        written.append(metric_bar_grid(methods, keys, out / f"bars_{safe_name(group)}.png", group.replace("_", " ").capitalize()))
    fr = cfg.get("fractions") or []
    for rep in ("mean", "blur"):
        written.append(deletion_curves(methods, fr, rep, out / f"deletion_{rep}.png"))
    sig = cfg.get("noise_sigmas") or []
    for metric in ("ssim", "spearman", "top10"):
        written.append(noise_curves(methods, sig, out / f"noise_{metric}.png", metric))
    return [p for p in written if p is not None]
