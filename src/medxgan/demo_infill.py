"""The learned in-fill stages of the real-anatomy demo (`medxgan demo --real-brain`, issue 29).

On real MRI the GAN does not render real cortex, so the GAN's own anatomy as the minimal mask's in-fill (``gan``, the
default before 2026-12-07) adds error where it removes the lesion (Colin27 difference IoU 0.30, twin gain +0.1 dB); the
learned in-fill ``learned-gan`` (a small U-Net that fills the region from the scan's context + the GAN's anatomy,
gan/inpainter*.py) meets the issue's targets there (benchmarks/real_anatomy/RESULTS.md), and so does the in-fill the
run's preset now chooses on its validation scans (``auto``: a blur on Colin27). The demo's main evaluation uses the run's
default in-fill and adds, after it:

=============  ==================================  =========================================================
stage          directory                           finished when
=============  ==================================  =========================================================
inpainter      ``DIR/inpainter``                   ``config.json`` status "finished" and ``inpainter.safetensors``
                                                   (`medxgan train-inpainter DATA --gan GAN`, InpainterConfig's defaults)
learned        ``DIR/eval-learned-gan``            ``results.json`` covers the medXGAN methods (``--infill learned-gan``)
cross-learned  ``DIR/eval-icbm152-learned-gan``    the same for the cross-brain (ICBM152) test set
=============  ==================================  =========================================================

Only the medXGAN methods are re-evaluated (the baselines do not use an in-fill: their rows are the main evaluation's),
on the same seeded selection of images, without noise levels, max-sensitivity and the sanity check (they are the main
evaluation's business and would re-invert every image once per noise level).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

__all__ = ["INFILL", "INFILL_LABEL", "inpainter_done", "train_demo_inpainter", "evaluate_learned", "learned_summary_lines", "main_infill_label",
           "run_learned_stages"]

INFILL = "learned-gan"
INFILL_LABEL = "learned from the scan's context + the GAN's anatomy"


def inpainter_done(d: Path) -> bool:
    from medxgan.gan.inpainter import INPAINTER_WEIGHTS

    try:
        cfg = json.loads((d / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and cfg.get("status") == "finished" and (d / f"{INPAINTER_WEIGHTS}.safetensors").is_file()


def train_demo_inpainter(data: Path, gan: Path, out: Path, steps: int, seed: int, show_progress: bool) -> None:
    """`medxgan train-inpainter DATA --gan GAN --out OUT --steps STEPS --seed SEED` (the CLI's other defaults)."""
    from medxgan.gan.inpainter_train import InpainterConfig, train_inpainter
    from medxgan.runtime.loop import resume_or_restart

    cfg = InpainterConfig(steps=steps, seed=seed, log_every=min(250, steps), ckpt_every=min(500, steps))
    train_inpainter(data, out, cfg, gan=gan, resume=resume_or_restart(out), quiet=not show_progress)  # prints its held-out error


def evaluate_learned(data: Path, out: Path, runs: tuple[Path, Path], cfg: Any, *, seed: int, dev: Any,
                     inversion: dict[str, Any] | None, show_progress: bool, main_report: Path | None = None) -> None:
    """The medXGAN methods with ``--infill learned-gan --inpainter INPAINTER`` on ``data``'s held-out predicted positives;
    ``runs``: the (GAN, inpainter) run folders (the GAN run is loaded afresh: the main evaluation's model explains with
    the default in-fill); ``cfg``: the DemoConfig (eval_n, eval_batch_size, n_resamples, report_rows). ``main_report``:
    an evaluation directory whose report is rewritten to show these rows next to its default ones (the cross-brain one)."""
    from medxgan.evaluate.runner import evaluate
    from medxgan.explain.baselines import MEDXGAN_METHODS
    from medxgan.report.html import write_report

    gan, inpainter = runs
    inv = {**(inversion or {}), "minimal_mask_infill": INFILL, "minimal_mask_inpainter": str(inpainter)}
    evaluate(data, out, gan=str(gan), methods=list(MEDXGAN_METHODS), n=cfg.eval_n, split="test", subset="pred-pos",
             noise_sigmas=(), seed=seed, device=dev, batch_size=cfg.eval_batch_size, max_sensitivity=False,
             n_resamples=cfg.n_resamples, inversion=inv, show_progress=show_progress)
    write_report(out, max_rows=cfg.report_rows)  # its own page (eval-learned-gan/report/)
    if main_report is not None:  # the demo's own report is written at its end (it finds OUT beside its eval/)
        write_report(main_report, max_rows=cfg.report_rows)


def main_infill_label(eval_dir: Path) -> str:
    """The summary's heading of the main evaluation: the in-fill it used, as its results.json records it (the run's
    preset may have chosen it with ``auto``)."""
    from medxgan.evaluate.store import RESULTS_JSON

    try:
        config = json.loads((Path(eval_dir) / RESULTS_JSON).read_text()).get("config") or {}
    except (OSError, ValueError, AttributeError):
        config = {}
    used = (config.get("inversion") or {}).get("minimal_mask_infill", "gan")
    how = "chosen by auto on the run's validation scans" if config.get("infill_selection") else "the run's in-fill"
    what = {"gan": "the GAN's anatomy", "blur": "a blur of the scan", "mean": "the mean healthy training scan"}.get(used, used)
    return f"main evaluation, in-fill {used} ({what}; {how}):"


def learned_summary_lines(eval_dir: Path) -> list[str]:
    """The printed summary of a learned-gan evaluation: IoU, counterfactual validity and twin gain of the medXGAN methods."""
    from medxgan.evaluate.store import RESULTS_JSON
    from medxgan.evaluate.tables import format_ci

    try:
        res = json.loads((Path(eval_dir) / RESULTS_JSON).read_text())
    except (OSError, ValueError):
        return []
    methods = res.get("methods") if isinstance(res, dict) else None
    if not methods:
        return []

    def stat(m: str, key: str) -> str:
        return format_ci(((methods.get(m) or {}).get("metrics") or {}).get(key))

    group = "counterfactual_residual" if ((res.get("config") or {}).get("inversion") or {}).get("counterfactual") == "residual" else "counterfactual"
    fid = "twin_fidelity.residual.psnr_gain" if group == "counterfactual_residual" else "twin_fidelity.negative.psnr_gain"
    iou = ", ".join(f"{m} {stat(m, 'localisation.iou_area_matched')}" for m in ("medxgan-diff", "medxgan-lig", "medxgan-mask") if m in methods)
    return [f"in-fill {INFILL} ({INFILL_LABEL}): area-matched IoU {iou}; counterfactual valid for the classifier "
            f"{stat('medxgan-diff', f'{group}.valid_classifier')}, for the oracle {stat('medxgan-diff', f'{group}.valid_oracle')}; "
            f"twin gain {stat('medxgan-diff', fid)} dB"]


def run_learned_stages(book: Any, work: Any, eval_done: Callable[..., bool]) -> None:
    """The stages above, through the demo's stage book (``book.run(name, done, work, label)``: reuse or run, demo.json) and
    stage work (``work.train_inpainter``, ``work.evaluate_learned(stage)``); ``eval_done``: the demo's test of a finished evaluation."""
    from medxgan.explain.baselines import MEDXGAN_METHODS

    cfg, paths = work.cfg, work.paths
    book.run("inpainter", lambda: inpainter_done(paths["inpainter"]), work.train_inpainter,
             f"train the learned in-fill ({cfg.inpainter_steps} steps, context + the GAN's anatomy)")
    for stage, where in (("learned", "Colin27"), ("cross-learned", "ICBM152")):
        book.run(stage, lambda s=stage: eval_done(paths[s], cfg.eval_n, MEDXGAN_METHODS), lambda s=stage: work.evaluate_learned(s),
                 f"the medXGAN methods with the in-fill {INFILL} on {cfg.eval_n} {where} positives")
