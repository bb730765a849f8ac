"""The verdict block of the HTML report: the paper's claims checked on one evaluation's results.json (computed,
never hard-coded) and drawn as a headline table with every comparison behind it."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from medxgan.evaluate.oracle_calibration import judge_summary
from medxgan.evaluate.tables import finite, format_number
from medxgan.evaluate.twins import oracle_twin_specificity
from medxgan.report.markup import ci_cell, ci_text, esc, method_label, method_stat
from medxgan.report.metric_tables import row_label

__all__ = ["compare", "verdicts", "verdict_html", "COMPETITORS", "VERDICT_METRICS", "CF_TARGETS", "TWIN_GAIN_TARGET"]

# the perturbation baselines (explain/perturbation.py) count as competitors whenever they were evaluated (issue 31)
COMPETITORS = ("gradcam", "ig-black", "ig-grey", "smoothgrad", "saliency", "occlusion", "extremal-perturbation", "meaningful-perturbation", "rise")
VERDICT_METRICS = (("localisation.pointing_game", "pointing game"), ("localisation.iou_area_matched", "area-matched IoU"))
# counterfactual targets checked by the verdict (fixed before any result was seen, issue 10)
CF_TARGETS = (("valid_classifier", "classifier", 0.95), ("valid_oracle", "independent oracle", 0.80))
TWIN_GAIN_TARGET = 3.0

_num, _fmt = finite, format_number


def compare(a: dict | None, b: dict | None) -> str:
    """One method's stat against another's (higher is better): ``"lead"`` (means a > b and the
    intervals do not overlap), ``"ahead"`` (a > b, intervals overlap), ``"no"`` or ``"na"``."""
    if a is None or b is None:
        return "na"
    ma, mb = _num(a.get("mean")), _num(b.get("mean"))
    if ma is None or mb is None:
        return "na"
    if ma <= mb:
        return "no"
    la, hb = _num(a.get("lo")), _num(b.get("hi"))
    if la is not None and hb is not None and la > hb:
        return "lead"
    return "ahead"


_VERDICT_TEXT = {"lead": "leads (CIs do not overlap)", "ahead": "ahead but CIs overlap", "no": "does not lead",
                 "na": "not available"}
_VERDICT_CLASS = {"lead": "lead", "ahead": "ahead", "no": "nolead", "na": "na"}


def _combine(states: Sequence[str]) -> str:
    s = [x for x in states if x != "na"]
    if not s:
        return "na"
    if "no" in s:
        return "no"
    if all(x == "lead" for x in s):
        return "lead"
    return "ahead"


def verdicts(results: Mapping[str, Any]) -> list[dict]:
    """The claims of the paper checked on these results, computed from results.json (never
    hard-coded): medXGAN difference and LIG vs Grad-CAM and IG (black and grey baselines) on the
    pointing game and area-matched IoU, and LIG's noise SSIM at sigma = 0.05 vs IG's.

    Each item: {"claim", "method", "metric", "state" (lead/ahead/no/na), "text", "vs": [{"method",
    "state", "mine", "theirs"}]}. ``state`` is "lead" only when it leads every competitor present with
    non-overlapping intervals, "no" when it does not have the higher mean against at least one.
    """
    methods = (results.get("methods") or {})
    out = []

    def item(method: str, key: str, metric_label: str, comps: Sequence[str], claim: str) -> dict:
        mine = method_stat(results, method, key)
        vs = []
        for c in comps:
            if c not in methods:
                continue
            theirs = method_stat(results, c, key)
            vs.append({"method": c, "state": compare(mine, theirs), "mine": mine, "theirs": theirs})
        state = "na" if mine is None or method not in methods else _combine([v["state"] for v in vs])
        return {"claim": claim, "method": method, "metric": metric_label, "key": key, "state": state,
                "text": _VERDICT_TEXT[state], "vs": vs}

    for key, label in VERDICT_METRICS:
        # the medXGAN rows of another in-fill (``<method>@<infill>``, report.metric_tables.with_infill_rows) are judged alike
        for m in [v for b in ("medxgan-diff", "medxgan-lig", "medxgan-mask") for v in [b] + [v for v in methods if v.startswith(b + "@")]]:
            named = ", ".join(method_label(c) for c in COMPETITORS if c in methods) or "none evaluated"
            out.append(item(m, key, label, COMPETITORS, f"{row_label(results, m)} vs the baselines ({named}) on {label}"))
    sig = [float(s) for s in ((results.get("config") or {}).get("noise_sigmas") or [])]
    key = "robustness.noise_0.05.ssim"
    it = item("medxgan-lig", key, "noise SSIM at sigma 0.05", ("ig-black", "ig-grey"), "LIG's noise SSIM exceeds IG's at sigma = 0.05")
    if not any(abs(s - 0.05) < 1e-12 for s in sig):
        it.update(state="na", text="not measured (sigma 0.05 not among the noise levels)")
    out.append(it)
    out += _counterfactual_verdicts(results)
    return out


def _threshold_item(claim: str, stat: dict | None, target: float, unit: str = "", method: str = "medxgan-diff") -> dict:
    """A verdict that a mean reaches a fixed target: "lead" when the whole interval is at or above it,
    "ahead" when only the mean is, "no" otherwise."""
    mean, lo = (_num(stat.get("mean")), _num(stat.get("lo"))) if stat else (None, None)
    state = "na" if mean is None else "no" if mean < target else "lead" if lo is not None and lo >= target else "ahead"
    text = {"lead": f"meets the target {target:g}{unit} (whole interval)", "ahead": f"mean meets the target {target:g}{unit}, interval does not",
            "no": f"misses the target {target:g}{unit}", "na": "not available"}[state]
    return {"claim": claim, "method": method, "metric": claim, "key": "counterfactual", "state": state, "text": text,
            "vs": [], "mine": stat}


def _counterfactual_verdicts(results: Mapping[str, Any]) -> list[dict]:
    """Validity of the counterfactual the maps explain (residual when the run used it) and, with twins,
    its closeness to the lesion-free twin compared with the input's."""
    inv = (results.get("config") or {}).get("inversion") or {}
    group, name = (("counterfactual_residual", "residual counterfactual x_res") if inv.get("counterfactual") == "residual"
                   else ("counterfactual", "negative realization G(z1*, 0)"))
    out = []
    for m in [m for m in (results.get("methods") or {}) if m.split("@")[0] == "medxgan-diff"]:  # + rows of another in-fill
        named = f"{name} ({row_label(results, m).split(' — ', 1)[1]})" if results.get("method_labels") else name
        out += _cf_items(results, m, group, named)
    return out


def _cf_items(results: Mapping[str, Any], m: str, group: str, name: str) -> list[dict]:
    out = []
    for key, who, target in CF_TARGETS:
        it = _threshold_item(f"{name} valid for the {who}", method_stat(results, m, f"{group}.{key}"), target, method=m)
        # the ground-truth twins judged by the same judge: if they miss the target too, the judge is what fails
        twin = method_stat(results, "twin", f"counterfactual.{key}")
        if twin is not None and _num(twin["mean"]) < target:
            it["caution"] = (f"the lesion-free twins themselves are judged negative only {_num(twin['mean']):.2f} of the time by the "
                             f"{who}: it rejects the ground truth, so this figure measures the {who}, not the counterfactual")
        if key == "valid_oracle":  # the judge's own specificity next to its verdict (issue 31)
            it["judge"] = judge_summary(results.get("oracle_calibration"), oracle_twin_specificity(dict(results.get("methods") or {})))
        out.append(it)
    fid = "twin_fidelity.residual.psnr_gain" if group == "counterfactual_residual" else "twin_fidelity.negative.psnr_gain"
    gain = method_stat(results, m, fid)
    if gain is not None:
        out.append(_threshold_item(f"{name} closer to the lesion-free twin than the input: PSNR gain", gain, TWIN_GAIN_TARGET, " dB", method=m))
    return out


def verdict_html(results: Mapping[str, Any]) -> str:
    items, heads = [], []
    for v in verdicts(results):
        detail = "; ".join(
            f"vs {esc(method_label(x['method']))}: {ci_text(x['mine'])} vs {ci_text(x['theirs'])} ({esc(_VERDICT_TEXT[x['state']])})"
            for x in v["vs"]) or "no competitor in the results"
        if v["key"].startswith("robustness."):
            const = [(m, method_stat(results, m, "map.constant")) for m in [v["method"]] + [x["method"] for x in v["vs"]]]
            const = [f"{esc(method_label(m))} {100 * _num(s['mean']):.0f} %" for m, s in const if s is not None and (_num(s["mean"]) or 0) > 0]
            if const:
                detail += ("<br>caution: constant (e.g. all-zero) maps, whose SSIM with another constant map is 1: "
                           + ", ".join(const) + " of the maps")
        if not v["vs"] and v.get("mine") is not None:
            detail = f"measured {ci_text(v['mine'])}"
        caution = f"<br><span class='nolead'>caution:</span> <span class='muted'>{esc(v['caution'])}</span>" if v.get("caution") else ""
        if v.get("judge"):
            caution += f"<br><span class='muted'>{esc(v['judge'])}</span>"
        detail += caution
        items.append(f"<li><b>{esc(v['claim'])}</b>: <span class='{_VERDICT_CLASS[v['state']]}'>{esc(v['text'])}</span>"
                     f"<br><span class='muted'>{detail}</span></li>")
        mine = v.get("mine") if not v["vs"] else (v["vs"][0]["mine"] if v["vs"] else None)
        rivals = [x for x in v["vs"] if x["theirs"] is not None]
        best = max(rivals, key=lambda x: _num(x["theirs"]["mean"])) if rivals else None
        rival = f"{esc(method_label(best['method']))}<br>{ci_cell(best['theirs'])}" if best else "<span class='na'>–</span>"
        heads.append(f"<tr><td>{esc(v['claim'])}</td><td><span class='{_VERDICT_CLASS[v['state']]}'>{esc(v['text'])}</span>{caution}</td>"
                     f"<td class='num'>{ci_cell(mine)}</td><td class='num'>{rival}</td></tr>")
    sl = results.get("slices") or {}
    n_loc = sl.get("localisation_images")
    return ("<div class='verdict'><b>Verdict</b> (computed from results.json; means with 95 % bootstrap intervals; "
            "“leads” = higher mean than every competitor with non-overlapping intervals; localisation on "
            f"{esc(n_loc if n_loc is not None else '?')} true-positive image(s) with a mask)"
            "<table class='headline'><thead><tr><th>claim</th><th>verdict</th><th>measured</th><th>strongest competitor</th></tr></thead><tbody>"
            + "".join(heads) + "</tbody></table>"
            "<details><summary>Every comparison behind the verdicts</summary><ul>" + "".join(items) + "</ul></details></div>")
