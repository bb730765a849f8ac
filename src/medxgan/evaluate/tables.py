"""Benchmark tables: ``results.csv`` (one row per method x metric) and ``results.md`` (methods as rows,
main metrics as columns, each cell "mean [lo, hi]" = mean and 95% percentile-bootstrap interval)."""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Mapping, Sequence

from medxgan.evaluate.oracle_calibration import judge_summary
from medxgan.evaluate.sanity import prior_note
from medxgan.evaluate.twins import oracle_twin_specificity

__all__ = ["LOCALISATION_COLUMNS", "FAITHFULNESS_COLUMNS", "COUNTERFACTUAL_COLUMNS", "SHORTCUT_COLUMNS", "TWIN_COLUMNS",
           "TWIN_AGREEMENT_COLUMNS",
           "main_columns", "bar_groups", "format_ci", "format_number", "finite", "results_csv", "results_markdown", "sanity_markdown", "realism_markdown"]

# (column label, metric key, lower is better)
LOCALISATION_COLUMNS = [
    ("Pointing game", "localisation.pointing_game", False),
    ("IoU (area-matched)", "localisation.iou_area_matched", False),
    ("IoU (Otsu)", "localisation.iou_otsu", False),
    ("Relevance mass", "localisation.relevance_mass", False),
    ("Relevance rank", "localisation.relevance_rank", False),
    ("Pixel AUROC", "localisation.pixel_auroc", False),
    ("Pixel AUPRC", "localisation.pixel_auprc", False),
]
POINTING_TIE_COLUMNS = [
    ("Pointing game (strict: all tied maxima in M)", "localisation.pointing_game", False),
    ("Pointing game (fractional: share of tied maxima in M)", "localisation.pointing_game_frac", False),
]
FAITHFULNESS_COLUMNS = [
    ("Deletion AUC, mean (↓)", "deletion_mean.auc", True),
    ("Deletion AUC, blur (↓)", "deletion_blur.auc", True),
]
COUNTERFACTUAL_COLUMNS = [
    ("Valid (classifier)", "counterfactual.valid_classifier", False),
    ("Valid (oracle)", "counterfactual.valid_oracle", False),
    ("Mean abs(x - x_neg)", "counterfactual.proximity_l1", True),
    ("Pixels changed > 0.1", "counterfactual.frac_changed", True),
    ("Flipped within the mask", "flip.flipped", False),
]
COUNTERFACTUAL_COLUMNS += [
    ("Residual valid (classifier)", "counterfactual_residual.valid_classifier", False),
    ("Residual valid (oracle)", "counterfactual_residual.valid_oracle", False),
    ("Mean abs(x - x_res)", "counterfactual_residual.proximity_l1", True),
]
TWIN_COLUMNS = [
    ("PSNR(x, twin) dB", "twin_fidelity.negative.psnr_input", False),
    ("PSNR(x_neg, twin) dB", "twin_fidelity.negative.psnr", False),
    ("PSNR(x_res, twin) dB", "twin_fidelity.residual.psnr", False),
    ("Gain x_neg (dB)", "twin_fidelity.negative.psnr_gain", False),
    ("Gain x_res (dB)", "twin_fidelity.residual.psnr_gain", False),
    ("MAE(x_res, twin)", "twin_fidelity.residual.mae", True),
]
TWIN_AGREEMENT_COLUMNS = [
    ("Spearman vs twin effect", "twin_agreement.spearman", False),
    ("NCC vs twin effect", "twin_agreement.ncc", False),
]
SHORTCUT_COLUMNS = [
    ("Marker present", "shortcut.marker_present", False),
    ("Mass on marker", "shortcut.mass_marker", False),
    ("Mass on lesion (same images)", "shortcut.mass_lesion_with_marker", False),
    ("Mass on lesion (all)", "shortcut.mass_lesion", False),
]


def finite(v: Any) -> float | None:
    """``float(v)`` when it is a finite number, else None."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def format_number(v: Any, digits: int = 3) -> str:
    """A metric value for tables and pages: fixed ``digits``, scientific for tiny/huge values, "–" for none."""
    f = finite(v)
    if f is None:
        return "–"
    if f != 0 and (abs(f) < 10 ** -digits or abs(f) >= 1e4):
        return f"{f:.2e}"
    return f"{f:.{digits}f}"


_fmt = format_number


def format_ci(stat: Mapping[str, Any] | None, digits: int = 3) -> str:
    """``"mean [lo, hi]"``; "–" when there is no valid value."""
    if not stat or stat.get("n", 0) == 0:
        return "–"
    return f"{_fmt(stat['mean'], digits)} [{_fmt(stat['lo'], digits)}, {_fmt(stat['hi'], digits)}]"


def robustness_columns(sigmas: Sequence[float]) -> list[tuple[str, str, bool]]:
    cols = [(f"SSIM σ={s:g}", f"robustness.noise_{s:g}.ssim", False) for s in sigmas]
    cols += [(f"Spearman σ={s:g}", f"robustness.noise_{s:g}.spearman", False) for s in sigmas]
    return cols


def main_columns(config: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """The columns of the faithfulness / robustness / cost table."""
    cols = list(FAITHFULNESS_COLUMNS) + robustness_columns(config.get("noise_sigmas") or [])
    cols += [("Max-sensitivity (↓)", "sensitivity.max", True), ("Constant maps (↓)", "map.constant", True),
             ("Seconds / image", "cost.time_s", True)]
    return cols


def bar_groups(config: Mapping[str, Any]) -> dict[str, list[tuple[str, str, bool]]]:
    """Plot groups ``{group: [(key, title, lower_is_better)]}`` for :func:`medxgan.report.plots.write_plots`."""
    def conv(cols):
        return [(k, label, lower) for label, k, lower in cols]

    return {"localisation": conv(LOCALISATION_COLUMNS), "faithfulness_robustness_cost": conv(main_columns(config)),
            "counterfactual": conv(COUNTERFACTUAL_COLUMNS), "twins": conv(TWIN_COLUMNS + TWIN_AGREEMENT_COLUMNS),
            "shortcut": conv(SHORTCUT_COLUMNS)}


def results_csv(methods: Mapping[str, Any], calibration: Mapping[str, Any] | None = None) -> str:
    """CSV text: method,metric,mean,lo,hi,n,n_invalid (every aggregated metric of every method); after every oracle
    validity row, the oracle's specificity on the lesion-free twins (``<group>.oracle_twin_specificity``, issue 31)."""
    spec = oracle_twin_specificity(dict(methods), dict(calibration) if calibration else None)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "metric", "mean", "lo", "hi", "n", "n_invalid"])
    for m, res in methods.items():
        for key, s in res.get("metrics", {}).items():
            w.writerow([m, key, _csv_num(s.get("mean")), _csv_num(s.get("lo")), _csv_num(s.get("hi")), s.get("n", 0), s.get("n_invalid", 0)])
            if spec is not None and key.endswith(".valid_oracle") and s.get("n", 0):
                w.writerow([m, key[: -len("valid_oracle")] + "oracle_twin_specificity", _csv_num(spec.get("mean")), _csv_num(spec.get("lo")),
                            _csv_num(spec.get("hi")), spec.get("n", 0), 0])
    return buf.getvalue()


def _csv_num(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return ""
    return repr(f) if math.isfinite(f) else ""


def _table(methods: Mapping[str, Any], cols: Sequence[tuple[str, str, bool]], first: str = "Method", extra: Sequence[tuple[str, Any]] = ()) -> str:
    present = [c for c in cols if any(res.get("metrics", {}).get(c[1], {}).get("n", 0) > 0 for res in methods.values())]
    if not present:
        return ""
    head = [first] + [lab for lab, _, _ in present]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, res in methods.items():
        met = res.get("metrics", {})
        if not any(met.get(k, {}).get("n", 0) > 0 for _, k, _ in present):
            continue
        cells = [f"`{m}`"] + [format_ci(met.get(k)) for _, k, _ in present]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def results_markdown(results: Mapping[str, Any]) -> str:
    """The Markdown summary written to ``results.md``."""
    cfg = results.get("config", {})
    methods = results.get("methods", {})
    sl = results.get("slices", {})
    out = ["# medxgan evaluate\n"]
    out.append(f"Data: `{cfg.get('data')}` (split `{cfg.get('split')}`), classifier `{cfg.get('classifier')}`"
               + (f", GAN `{cfg.get('gan')}`" if cfg.get("gan") else "") + ".\n")
    if sl:
        out.append("Slices (classifier threshold 0.5): "
                   + ", ".join(f"{k} {sl.get(k, 0)}" for k in ("TP", "FN", "FP", "TN"))
                   + f"; {sl.get('evaluated', 0)} images evaluated ({cfg.get('subset')}).\n")
    out.append("Cells: mean [95% percentile-bootstrap interval, "
               f"{cfg.get('n_resamples', 1000)} resamples]; n per cell in results.csv.\n")
    loc = _table(methods, LOCALISATION_COLUMNS)
    if loc:
        out.append("\n## Localisation (true-positive slice with masks; |A| scored)\n\n" + loc)
        ties = _table(methods, POINTING_TIE_COLUMNS)
        if ties and any(res.get("metrics", {}).get("localisation.pointing_game_frac", {}).get("n", 0) for res in methods.values()):
            out.append("\nPointing game tie rule: a map with several tied maxima is a hit only if all of them lie in the mask; "
                       "the fractional value gives the share of tied maxima inside (Quantus counts a hit when any is inside).\n\n" + ties)
    main = _table(methods, main_columns(cfg))
    if main:
        out.append("\n## Faithfulness, robustness, cost\n\n" + main)
    cf = _table(methods, COUNTERFACTUAL_COLUMNS)
    if cf:
        out.append("\n## Counterfactuals (medXGAN)\n\n" + cf)
        judge = judge_summary(results.get("oracle_calibration"), oracle_twin_specificity(methods))
        if judge:  # the judge's own error rate next to its verdicts (issue 31)
            out.append(f"\n{judge}\n")
    tw = _table(methods, TWIN_COLUMNS)
    if tw:
        out.append("\n## Counterfactuals vs the lesion-free twins (phantoms; gain = PSNR(cf, twin) - PSNR(x, twin))\n\n" + tw)
    ta = _table(methods, TWIN_AGREEMENT_COLUMNS)
    if ta:
        out.append("\n## Agreement of |A| with the true lesion effect |x - twin|\n\n" + ta)
    sc = _table(methods, SHORTCUT_COLUMNS)
    if sc:
        out.append("\n## Shortcut marker (relevance mass of |A|)\n\n" + sc)
    for section in (sanity_markdown(results.get("sanity")), realism_markdown(results.get("realism"))):
        if section:
            out.append("\n" + section)
    inv = {m: r.get("n_invalid_maps", 0) for m, r in methods.items() if r.get("n_invalid_maps", 0)}
    if inv:
        out.append("\nInvalid (non-finite) maps: " + ", ".join(f"`{m}` {k}" for m, k in inv.items()) + ".\n")
    notes = results.get("notes") or []
    if notes:
        out.append("\n## Notes\n\n" + "".join(f"- {n}\n" for n in notes))
    return "".join(out)


def sanity_markdown(sanity: Mapping[str, Any] | None) -> str:
    """The cascading-randomisation table: methods as rows, "SSIM / Spearman" after each randomised block
    (top first), then the verdict; "" without a sanity result."""
    if not sanity or not sanity.get("methods"):
        return ""
    blocks = sanity.get("blocks") or []
    head = ["Method"] + [f"+ {b}" for b in blocks] + ["Verdict"]
    lines = ["## Sanity check: cascading randomisation of the classifier (SSIM / Spearman of |A| vs the trained model)\n",
             f"Blocks re-initialised from the top, cumulatively; {sanity.get('n_images')} images; mean [95% CI]. "
             f"Pass: both below {sanity.get('threshold', 0.5):g} (interval too) once the top {sanity.get('verdict_blocks', 2)} "
             "block(s) are randomised.\n",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, r in sanity["methods"].items():
        cells = [f"`{m}`"] + [f"{format_ci(st.get('ssim'), 2)} / {format_ci(st.get('spearman'), 2)}" for st in r.get("curve", [])]
        cells += ["–"] * (len(blocks) + 1 - len(cells)) + [f"**{r.get('verdict')}**"]
        lines.append("| " + " | ".join(cells) + " |")
    if sanity.get("skipped"):
        lines.append(f"\nNot applicable (no classifier at explanation time): {', '.join(sanity['skipped'])}.")
    note = prior_note(dict(sanity))
    if note:
        lines.append(f"\n{note}")
    return "\n".join(lines) + "\n"


def realism_markdown(realism: Mapping[str, Any] | None) -> str:
    """The counterfactual realism / minimality table; "" without rows."""
    if not realism or not realism.get("rows"):
        return ""
    lines = ["## Counterfactual realism and minimality\n",
             f"FD and KID vs {realism.get('n_reference')} real negatives in the {realism.get('feature_space')}; "
             f"n = {realism.get('n')} images per row. Minimality: mean [95% CI] over the images; changed = max over "
             f"channels |x - x_cf| > {realism.get('threshold', 0.1):g}; regions 8-connected.\n",
             "| Compared set | Role | FD (↓) | KID (↓) | Mean abs change | Pixels changed | Changed regions |",
             "|---|---|---|---|---|---|---|"]
    for r in realism["rows"]:
        mn = r.get("minimality") or {}
        kid = f"{_fmt(r.get('kid'), 4)} ± {_fmt(r.get('kid_std'), 4)}"
        lines.append(f"| {r['label']} | {r['role']} | {_fmt(r.get('fd'))} | {kid} | {format_ci(mn.get('mean_abs_change'))} | "
                     f"{format_ci(mn.get('frac_changed'))} | {format_ci(mn.get('regions'), 1)} |")
    return "\n".join(lines) + "\n"
