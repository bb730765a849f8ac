"""The training section of the HTML report (the classifier's and the GAN's curves, final figures and latest
sample grid, read from their run directories) and the early-stop warning at the top of the page."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from medxgan.evaluate.tables import finite, format_number
from medxgan.gan.gates import monitor_shortfalls
from medxgan.report.markup import esc, read_json, read_jsonl
from medxgan.report.plots import new_figure, save_figure

__all__ = ["early_stops", "training_html"]

_num, _fmt = finite, format_number


def early_stops(dirs: Mapping[str, Any], results: Mapping[str, Any]) -> list[str]:
    """One sentence per training stage that stopped before its budget (its time cap), read from the runs'
    ``config.json``: the classifier (epochs), the GAN and its encoder (steps). A bare evaluation directory
    finds its GAN run through ``results.json``'s config."""
    gan = dirs.get("gan")
    if gan is None:
        g = (results.get("config") or {}).get("gan")
        gan = Path(g) if isinstance(g, str) and (Path(g) / "config.json").is_file() else None
    stages = [("classifier", dirs.get("classifier"), "epochs_done", "epochs", "epochs"),
              ("GAN", gan, "steps_done", "steps", "steps"),
              ("inversion encoder", Path(gan) / "encoder" if gan is not None else None, "steps_done", "steps", "steps")]
    out = []
    for name, run, done_key, total_key, unit in stages:
        cfg = read_json(Path(run) / "config.json") if run is not None and (Path(run) / "config.json").is_file() else None
        if isinstance(cfg, dict) and cfg.get("stopped_early"):
            out.append(f"the {name} stopped at its time limit after {cfg.get(done_key, '?')} of {cfg.get(total_key, '?')} {unit}")
    return out


def _curve_panels(rows: list[dict], x_key: str, panels: Sequence[tuple[str, Sequence[str]]], path: Path, title: str) -> Path | None:
    panels = [(t, [k for k in keys if any(_num(r.get(k)) is not None for r in rows)]) for t, keys in panels]
    panels = [(t, keys) for t, keys in panels if keys]
    if not rows or not panels:
        return None
    ncol = min(3, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    fig = new_figure(4.0 * ncol, 2.8 * nrow + 0.4, dpi=100)
    for j, (t, keys) in enumerate(panels):
        ax = fig.add_subplot(nrow, ncol, j + 1)
        for k in keys:
            pts = [(r.get(x_key), _num(r.get(k))) for r in rows if _num(r.get(x_key)) is not None and _num(r.get(k)) is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=2.5, lw=1.2, label=k)
        ax.set_title(t, fontsize=9)
        ax.set_xlabel(x_key, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def training_html(dirs: Mapping[str, Path | None], img_dir: Path, rel: str) -> str:
    parts = []
    clf = dirs.get("classifier")
    if clf is not None:
        cfg = read_json(clf / "config.json") or {}
        rows = read_jsonl(clf / "metrics.jsonl")
        p = _curve_panels(rows, "epoch", [("training loss", ["train_loss"]), ("validation", ["val_auc", "val_accuracy"])],
                          img_dir / "train_classifier.png", f"classifier ({cfg.get('arch', '?')})")
        t = cfg.get("test") or {}
        parts.append(f"<h3>Classifier</h3><p>{esc(cfg.get('arch', '?'))}, {esc(cfg.get('epochs', '?'))} epoch(s), best epoch "
                     f"{esc(cfg.get('best_epoch', '?'))} (val AUC {_fmt(cfg.get('best_val_auc'))}); test: accuracy {_fmt(t.get('accuracy'))}, "
                     f"AUC {_fmt(t.get('auc'))}, sensitivity {_fmt(t.get('sensitivity'))}, specificity {_fmt(t.get('specificity'))} "
                     f"(n = {esc(t.get('n', '?'))}); status {esc(cfg.get('status', '?'))}.</p>")
        if p is not None:
            parts.append(f"<img class='plot' src='{rel}/train_classifier.png' alt='classifier training curves'>")
    gan = dirs.get("gan")
    if gan is not None:
        cfg = read_json(gan / "config.json") or {}
        rows = read_jsonl(gan / "metrics.jsonl")
        panels = [("losses", ["d_loss", "g_loss", "g_adv", "g_cls"]), ("discriminator outputs", ["d_real", "d_fake"]),
                  ("disentanglement (classifier)", ["disent", "cls_neg", "cls_pos", "cls_agree"]),
                  ("oracle agreement", ["oracle_neg", "oracle_pos"]), ("diversity / change", ["diversity", "delta"])]
        p = _curve_panels(rows, "step", panels, img_dir / "train_gan.png", f"medXGAN ({cfg.get('preset_name', '?')})")
        fm = cfg.get("metrics") or {}
        o = cfg.get("oracle") or {}
        early = " — <b>stopped early at the time limit</b>" if cfg.get("stopped_early") else ""
        parts.append(f"<h3>medXGAN</h3><p>preset {esc(cfg.get('preset_name', '?'))}, {esc(cfg.get('steps_done', cfg.get('steps', '?')))} of "
                     f"{esc(cfg.get('steps', '?'))} steps (batch {esc(cfg.get('batch_size', '?'))}) in {_fmt(cfg.get('train_seconds'), 1)} s{early}; "
                     f"status {esc(cfg.get('status', '?'))}. Final: disentanglement {_fmt(fm.get('disent'))}, oracle neg/pos "
                     f"{_fmt(fm.get('oracle_neg'))} / {_fmt(fm.get('oracle_pos'))}, diversity {_fmt(fm.get('diversity'))} "
                     f"(1 = as diverse as the data). Oracle: {esc(o.get('arch', 'none'))}.</p>")
        short = monitor_shortfalls(cfg)  # gan.gates: a GAN below its training gates explains badly however good its pictures look
        if short:
            parts.append(f"<p class='flag' style='border:2px solid #c33;padding:6px 10px;background:#fff4f4'><b>⚠ Below the training "
                         f"gates</b>: {esc(', '.join(short))}; its counterfactuals may change other things than what the classifier uses.</p>")
        if p is not None:
            parts.append(f"<img class='plot' src='{rel}/train_gan.png' alt='GAN training curves'>")
        samples = sorted((gan / "samples").glob("*.png")) if (gan / "samples").is_dir() else []
        if samples:
            shutil.copyfile(samples[-1], img_dir / "gan_samples.png")
            parts.append(f"<p>Latest sample grid (<code>{esc(samples[-1].name)}</code>): rows = fixed z1, negative then positive realizations.</p>"
                         f"<img class='plot' src='{rel}/gan_samples.png' alt='GAN samples' style='image-rendering:pixelated'>")
    return "".join(parts)
