"""The self-contained HTML report of a demo directory or of an evaluation directory.

    from medxgan.report.html import write_report
    write_report("medxgan-demo")        # -> medxgan-demo/report/index.html (finds eval/, classifier/, gan/)
    write_report("eval/")               # a bare `medxgan evaluate` output -> eval/report/index.html

What it reads (nothing is recomputed, no model is loaded):

* ``EVAL/results.json`` (:mod:`medxgan.evaluate.runner`): the verdict block, the metric tables with
  95 % bootstrap intervals, the slice counts, the notes, versions;
* ``EVAL/maps/<image_id>/{input,<method>}.npz``: one row of thumbnails per explained image (at most
  ``max_rows``, true positives first): input with the lesion outline, reconstruction ``x_pos`` and
  negative realization ``x_neg`` (medXGAN extras), and each method's |A| over the input;
* ``EVAL/frames/<image_id>.npz`` when present (``frames`` F x C x H x W, ``frame_probs``, ``alphas``,
  written by :func:`medxgan.demo.interpolation_frames`): the interactive latent slider of the row
  (:mod:`medxgan.report.slider`: frame, p(pos) and accumulated change at alpha; which counterfactual
  the path explains comes from ``config.inversion.counterfactual``). The evaluation runner does not
  store interpolation frames, so without this file the slider is omitted;
* ``EVAL/plots/*.png``: deletion / noise curves and metric bars (copied);
* demo directories only: ``demo.json`` (settings, stage times), ``classifier/`` and ``gan/`` run
  directories (``config.json``, ``metrics.jsonl`` -> training-curve plots, the latest sample grid).

Everything is written under the report directory (``index.html`` + ``img/``) and referenced with
relative paths: no network access is needed to view it (no CDN, fonts or external scripts; the
slider's few lines of JS are inline). The layout fits the viewport from about 1000 px up (metric tables
with a sticky method column and wrapped headers, image strips as a grid of equal tiles) and prints.

The page is put together here; each section is drawn by its own module: :mod:`medxgan.report.verdict`,
:mod:`medxgan.report.metric_tables`, :mod:`medxgan.report.image_rows`, :mod:`medxgan.report.review`,
:mod:`medxgan.report.training` and :mod:`medxgan.report.appendix` (shared pieces in :mod:`medxgan.report.markup`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from medxgan.evaluate.store import FRAMES_DIR, RESULTS_JSON
from medxgan.report.appendix import config_html, plots_html
from medxgan.report.image_rows import image_rows_html, select_rows
from medxgan.report.markup import REPORT_CSS, esc, read_json
from medxgan.report.metric_tables import metric_tables_html, slices_html, with_infill_rows
from medxgan.report.review import review_html
from medxgan.report.slider import SLIDER_CSS, SLIDER_JS
from medxgan.report.training import early_stops, training_html
from medxgan.report.verdict import compare, verdict_html, verdicts
from medxgan.runtime.atomic import atomic_write_text
from medxgan.runtime.errors import MedxganError

__all__ = ["write_report", "find_dirs", "select_rows", "verdicts", "compare", "early_stops", "QUICK_BANNER", "FRAMES_DIR"]

QUICK_BANNER = "quick mode: quality traded for time; numbers are not the benchmark"


def find_dirs(path: str | os.PathLike) -> dict[str, Path | None]:
    """{"root", "eval", "classifier", "gan", "demo_json", "report"} for a demo directory (holding
    ``eval/results.json`` or ``demo.json``) or a bare evaluation directory (``results.json``)."""
    p = Path(path)
    if (p / RESULTS_JSON).is_file():
        return {"root": p, "eval": p, "classifier": None, "gan": None, "demo_json": None, "report": p / "report"}
    if (p / "demo.json").is_file() or (p / "eval" / RESULTS_JSON).is_file():
        if not (p / "eval" / RESULTS_JSON).is_file():
            raise MedxganError(f"{p}: the demo has not been evaluated yet (no eval/results.json); run `medxgan demo --out {p}`")
        return {"root": p, "eval": p / "eval",
                "classifier": p / "classifier" if (p / "classifier" / "config.json").is_file() else None,
                "gan": p / "gan" if (p / "gan" / "config.json").is_file() else None,
                "demo_json": p / "demo.json" if (p / "demo.json").is_file() else None, "report": p / "report"}
    raise MedxganError(f"{p}: neither a demo directory (demo.json, eval/) nor an evaluation directory (results.json)")


def _load_results(ev: Path) -> dict:
    results = read_json(ev / RESULTS_JSON)
    if not isinstance(results, dict):
        raise MedxganError(f"{ev / RESULTS_JSON}: unreadable or not a JSON object")
    if not isinstance(results.get("methods"), dict) or not all(isinstance(r, dict) for r in results["methods"].values()):
        # an empty or foreign JSON object would make an empty page that looks like a report
        raise MedxganError(f"{ev / RESULTS_JSON}: not the results of `medxgan evaluate` (no 'methods' object of per-method results)")
    return results


def _what_html(dirs: Mapping[str, Any], results: Mapping[str, Any], demo: Mapping[str, Any] | None, quick: bool) -> str:
    """The opening paragraph: which command made the results, on what data, classifier and GAN."""
    cfg = results.get("config") or {}
    settings = (demo or {}).get("settings") or {}
    what = []
    if demo is not None:
        kind = settings.get("kind", "brain-mri")
        data_what = {"brain-mri": "brain-MRI phantoms", "chest-xray": "chest X-ray phantoms",
                     "real-brain": "real MRI: Colin27 slices with inserted lesions"}.get(kind, f"{kind} data")
        flags = (" --quick" if quick else "") + (" --real-brain" if kind == "real-brain" else "")
        what.append(f"<code>medxgan demo{flags}</code> in <code>{esc(Path(dirs['root']).resolve())}</code>: "
                    f"{esc(data_what)} ({esc(settings.get('n_images', '?'))} images), classifier {esc(settings.get('classifier_arch', '?'))}, "
                    f"medXGAN preset {esc(settings.get('gan_preset', '?'))}, explanations evaluated on held-out predicted positives.")
    what.append(f"Data <code>{esc(cfg.get('data', '?'))}</code> (split {esc(cfg.get('split'))}), "
                f"classifier <code>{esc(cfg.get('classifier', '?'))}</code>, "
                f"GAN <code>{esc(cfg.get('gan') or 'none')}</code>; {esc((results.get('slices') or {}).get('evaluated', '?'))} image(s) explained "
                f"by {esc(len(cfg.get('methods') or []))} method(s) on {esc(cfg.get('device', '?'))}.")
    return "<p>" + " ".join(what) + "</p>"


def write_report(path: str | os.PathLike, out_dir: str | os.PathLike | None = None, *, max_rows: int = 12) -> Path:
    """Write ``index.html`` (+ ``img/``) for a demo directory or an evaluation directory (see the
    module docstring) into ``out_dir`` (default: ``PATH/report``). Returns the path of index.html."""
    dirs = find_dirs(path)
    ev = dirs["eval"]
    results = _load_results(ev)
    report = Path(out_dir) if out_dir is not None else dirs["report"]
    img_dir = report / "img"  # files are overwritten, never deleted (out_dir may be a folder of the user's)
    img_dir.mkdir(parents=True, exist_ok=True)
    rel = "img"
    demo = read_json(dirs["demo_json"]) if dirs.get("demo_json") else None
    settings = (demo or {}).get("settings") or {}
    quick = settings.get("mode") == "quick" or bool(settings.get("quick"))

    h: list[str] = []
    title = "medXGAN demo report" if demo is not None else "medXGAN evaluation report"
    h.append(f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' content='width=device-width,initial-scale=1'>"
             f"<title>{esc(title)}</title><style>{REPORT_CSS}{SLIDER_CSS}</style></head><body><div class='wrap'>")
    h.append(f"<h1>{esc(title)}</h1>")
    if quick:
        h.append(f"<div class='banner'>{esc(QUICK_BANNER)}</div>")
    h.append(_what_html(dirs, results, demo, quick))
    early = early_stops(dirs, results)
    if early:  # first, before the verdict: the numbers below come from a stage that did not finish its budget
        h.append("<div class='banner'>Stopped early — the figures below come from shorter training than planned: "
                 + "; ".join(esc(e) for e in early) + ".</div>")
    # the medXGAN rows of the same images with the learned in-fill, when EVAL-learned-gan/ is beside EVAL/ (the real-brain demo)
    learned = ev.parent / f"{ev.name}-learned-gan" / RESULTS_JSON
    rows = with_infill_rows(results, read_json(learned) if learned.is_file() else None)
    h.append(verdict_html(rows))
    h.append("<p class='muted'>Sections: <a href='#metrics'>metrics</a> · <a href='#images'>images</a> · <a href='#plots'>plots</a> · "
             "<a href='#training'>training</a> · <a href='#config'>configuration</a></p>")

    h.append("<h2 id='metrics'>Metrics</h2>")
    h.append(slices_html(results))
    h.append(metric_tables_html(rows))
    notes = results.get("notes") or []
    if notes:
        h.append("<details open><summary>Notes from the evaluation</summary>" + "".join(f"<div class='note'>{esc(n)}</div>" for n in notes) + "</details>")

    h.append(f"<h2 id='images'>Explained images (up to {int(max_rows)}, true positives first)</h2>")
    h.append(image_rows_html(results, ev, img_dir, rel, max_rows))

    h.append(review_html(results, img_dir, rel))  # sanity checks, counterfactual realism (results['sanity'/'realism'])
    h.append(plots_html(ev, img_dir, rel))

    h.append("<h2 id='training'>Training</h2>")
    if dirs.get("classifier") is None and dirs.get("gan") is None:
        h.append("<p class='note'>This report was made from an evaluation directory alone: the training runs are not part of it, so the "
                 "training curves and sample grids are omitted.</p>")
    else:
        h.append(training_html(dirs, img_dir, rel))

    h.append(config_html(results, demo, dirs))
    h.append("<p class='muted'>Generated by medxgan; self-contained (images in img/ beside this file, no network access needed).</p>")
    h.append(f"</div><script>{SLIDER_JS}</script></body></html>")
    return atomic_write_text(report / "index.html", "\n".join(h))
