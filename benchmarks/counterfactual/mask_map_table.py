"""The medXGAN maps (difference, LIG, minimal mask) against the best baseline, from finished evaluations.

    python benchmarks/counterfactual/mask_map_table.py LABEL=EVAL_DIR[,BASELINE_EVAL_DIR] ... [--json OUT.json]

EVAL_DIR: an evaluation folder (``medxgan evaluate`` / a demo's ``eval/``). BASELINE_EVAL_DIR: where the baselines of the
same scans are when EVAL_DIR holds only the medXGAN methods (an evaluation with another in-fill; the scans must match,
checked by image id). Per row: area-matched IoU mean [95 % CI] of each medXGAN map, the best baseline by mean, whether each
map's interval is above every baseline's (the report's verdict rule, ``report.verdict.compare``), and the paired
difference mask - best baseline over the same scans (mean and a 95 % bootstrap interval, 10,000 resamples, seed 0).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from medxgan.report.verdict import COMPETITORS, compare

KEY = "localisation.iou_area_matched"
MAPS = ("medxgan-mask", "medxgan-diff", "medxgan-lig")


def _per_image(d: Path) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for line in (d / "per_image.jsonl").read_text().splitlines():
        r = json.loads(line)
        v = ((r.get("metrics") or {}).get("localisation") or {}).get("iou_area_matched")
        if v is not None:
            out.setdefault(r["method"], {})[r["image_id"]] = float(v)
    return out


def _paired(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    ids = sorted(set(a) & set(b))
    d = np.array([a[i] - b[i] for i in ids])
    rng = np.random.default_rng(0)
    boot = d[rng.integers(0, len(d), (10_000, len(d)))].mean(1)
    return {"mean": float(d.mean()), "lo": float(np.percentile(boot, 2.5)), "hi": float(np.percentile(boot, 97.5)), "n": len(ids)}


def row(label: str, eval_dir: Path, base_dir: Path | None) -> dict:
    res = json.loads((eval_dir / "results.json").read_text())
    base = json.loads((base_dir / "results.json").read_text()) if base_dir else res
    per, per_base = _per_image(eval_dir), _per_image(base_dir) if base_dir else None
    per_base = per_base or per
    mine = {m: res["methods"][m]["metrics"][KEY] for m in MAPS if m in res["methods"]}
    theirs = {m: base["methods"][m]["metrics"][KEY] for m in COMPETITORS if m in base["methods"]}
    if base_dir and set(per[MAPS[1]]) != set(per_base[next(iter(theirs))]):
        raise SystemExit(f"{label}: {eval_dir} and {base_dir} scored other scans")
    best = max(theirs, key=lambda m: theirs[m]["mean"])
    out = {"label": label, "eval": str(eval_dir), "baselines": str(base_dir or eval_dir),
           "infill": (res["config"].get("inversion") or {}).get("minimal_mask_infill", "gan"),
           "maps": mine, "best_baseline": {"method": best, **theirs[best]},
           "apart_from_every_baseline": {m: all(compare(s, t) == "lead" for t in theirs.values()) for m, s in mine.items()}}
    if "medxgan-mask" in per:
        out["paired_mask_minus_best"] = _paired(per["medxgan-mask"], per_base[best])
    return out


def _ci(s: dict) -> str:
    return f"{s['mean']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rows", nargs="+", help="LABEL=EVAL_DIR[,BASELINE_EVAL_DIR]")
    ap.add_argument("--json", type=Path, help="write the rows here")
    a = ap.parse_args()
    rows = []
    for spec in a.rows:
        label, dirs = spec.rsplit("=", 1)  # a label may hold "=", a path here does not
        ev, _, bd = dirs.partition(",")
        rows.append(row(label, Path(ev), Path(bd) if bd else None))
    print("| run | in-fill | minimal mask | difference | LIG | best baseline | mask apart from every baseline | paired mask - best |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        m, b = r["maps"], r["best_baseline"]
        p = r.get("paired_mask_minus_best")
        print(f"| {r['label']} | {r['infill']} | {_ci(m['medxgan-mask']) if 'medxgan-mask' in m else '–'} | {_ci(m['medxgan-diff'])} | "
              f"{_ci(m['medxgan-lig'])} | {b['method']} {_ci(b)} | {'yes' if r['apart_from_every_baseline'].get('medxgan-mask') else 'no'} | "
              f"{_ci(p) if p else '–'} |")
    if a.json:
        a.json.write_text(json.dumps({"rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
