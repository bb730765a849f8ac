"""The target table of a real-anatomy run from `medxgan evaluate`'s results.csv (one or more evaluation folders).

    python benchmarks/real_anatomy/summary.py EVAL_DIR [EVAL_DIR ...]

Per folder: area-matched IoU [95 % CI] of every method, pointing game, counterfactual validity (classifier / oracle;
of the residual counterfactual, which both medXGAN maps explain), twin gain of the residual
counterfactual (PSNR(x_res, twin) - PSNR(x, twin), dB), and whether the best medXGAN map's interval lies above every
baseline's.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

MEDXGAN = ("medxgan-diff", "medxgan-lig")


def load(eval_dir: Path) -> dict[tuple[str, str], dict[str, float]]:
    out = {}
    for r in csv.DictReader(open(eval_dir / "results.csv")):
        try:
            out[(r["method"], r["metric"])] = {k: float(r[k]) for k in ("mean", "lo", "hi", "n")}
        except ValueError:
            continue
    return out


def cell(res, method: str, metric: str, digits: int = 3) -> str:
    v = res.get((method, metric))
    return "–" if v is None else f"{v['mean']:.{digits}f} [{v['lo']:.{digits}f}, {v['hi']:.{digits}f}]"


def summary(eval_dir: Path) -> str:
    res = load(eval_dir)
    methods = sorted({m for m, _ in res}, key=lambda m: (m not in MEDXGAN, m == "twin", m))
    iou = "localisation.iou_area_matched"
    lines = [f"### {eval_dir}", "", "| method | IoU (area-matched) | pointing | valid clf / oracle | twin gain (dB) |", "|---|---|---|---|---|"]
    for m in methods:
        if (m, iou) not in res:
            continue
        # both medXGAN maps explain one counterfactual, the residual one (LIG integrates from it); the runner stores its
        # validity on the difference map's row
        pre = ("medxgan-diff", "counterfactual_residual")
        valid = (f"{cell(res, pre[0], pre[1] + '.valid_classifier')} / {cell(res, pre[0], pre[1] + '.valid_oracle')}"
                 if m in MEDXGAN else "–")
        gain = cell(res, m, "twin_fidelity.residual.psnr_gain", 2) if m == "medxgan-diff" else "–"
        lines.append(f"| `{m}` | {cell(res, m, iou)} | {cell(res, m, 'localisation.pointing_game', 2)} | {valid} | {gain} |")
    base = [m for m in methods if m not in MEDXGAN and m != "twin" and (m, iou) in res]
    best = max((m for m in MEDXGAN if (m, iou) in res), key=lambda m: res[(m, iou)]["mean"], default=None)
    if best and base:
        top = max(base, key=lambda m: res[(m, iou)]["hi"])
        apart = res[(best, iou)]["lo"] > res[(top, iou)]["hi"]
        best_base = max(base, key=lambda m: res[(m, iou)]["mean"])
        lines += ["", f"best medXGAN map: `{best}` {res[(best, iou)]['mean']:.3f}; its interval "
                  + ("lies above every baseline's" if apart else "does not lie above every baseline's")
                  + f" (highest upper bound: `{top}` {res[(top, iou)]['hi']:.3f}; best baseline mean: `{best_base}` "
                  f"{res[(best_base, iou)]['mean']:.3f})"]
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("evals", type=Path, nargs="+", metavar="EVAL_DIR", help="`medxgan evaluate` output folders (results.csv)")
    print("\n\n".join(summary(d) for d in ap.parse_args().evals))
