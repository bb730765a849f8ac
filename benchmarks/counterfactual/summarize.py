"""Markdown table of the quick_eval JSON files in benchmarks/counterfactual/results/ (one row per file).

    python benchmarks/counterfactual/summarize.py [RESULTS_DIR]   # default: the results/ folder next to this script
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLS = [("psnr_rec", "recon PSNR"), ("difference_iou", "diff IoU"), ("difference_pointing", "diff pointing"),
        ("inpaint_iou", "|x - x_res| IoU"), ("inpaint_pointing", "|x - x_res| pointing"), ("lig_iou", "LIG IoU*"),
        ("cf_valid_clf", "cf valid clf"), ("cf_valid_oracle", "cf valid oracle"), ("cf_gain", "cf PSNR gain vs twin (dB)"),
        ("cf_lesion_kept", "lesion kept by cf")]


def row(d: dict) -> dict:
    """The counterfactual the run explains: the inpainted residual for masked generators, the additive
    residual for joint ones in residual mode, else G(z1*, 0)."""
    name = Path(d["run"]).name
    if "inpaint_iou" in d:
        cf = "inpaint"
    elif d.get("counterfactual") == "residual" or "_residual" in d.get("_file", ""):
        cf = "residual"
    else:
        cf = "neg"
    out = dict(d)
    out.update(cf_valid_clf=d.get(f"valid_{cf}_clf"), cf_valid_oracle=d.get(f"valid_{cf}_oracle"), cf_gain=d.get(f"psnr_gain_{cf}"),
               cf_lesion_kept=d.get(f"lesion_kept_{cf}"), run=name)
    if cf != "inpaint":  # the scan-change map of a joint generator is the difference map itself
        out["inpaint_iou"], out["inpaint_pointing"] = None, None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, nargs="?", default=Path(__file__).parent / "results",
                    help="folder of quick_eval JSON files (default: benchmarks/counterfactual/results)")
    files = sorted(ap.parse_args().results.glob("*.json"))
    print("| variant (file) | " + " | ".join(c for _, c in COLS) + " |")
    print("|---|" + "---|" * len(COLS))
    for f in files:
        d = json.loads(f.read_text())
        d["_file"] = f.name
        r = row(d)
        cells = ["–" if r.get(k) is None else f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k, _ in COLS]
        print(f"| {f.stem} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
