"""What the demo can afford of the perturbation baselines: seconds per image and area-matched IoU of Extremal
Perturbation, Meaningful Perturbation and RISE at their full setting and at lighter ones, on the same scans.

    python benchmarks/perturbation/demo_setting.py --classifier CLF --data DATA [--n 8] [--json out.json]

The scans: the first ``n`` true positives with a lesion mask among the demo's selection (test split, predicted positives,
evaluate's seeded order). Per setting: seconds per image (the whole batch's wall time / n, one thread), area-matched IoU
and pointing game (mean and 95 % bootstrap interval over the scans), and the Spearman correlation of each map with the
full setting's map of the same scan (how much the lighter setting changes the map).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from medxgan.classifiers import as_classifier
from medxgan.data import load_dataset
from medxgan.evaluate.localisation import iou_area_matched, pointing_game
from medxgan.evaluate.robustness import spearman
from medxgan.evaluate.selection import select_images
from medxgan.evaluate.stats import bootstrap_ci
from medxgan.explain.perturbation import ExtremalPerturbationExplainer, MeaningfulPerturbationExplainer, RISEExplainer

# (method, setting label, factory); the first setting of each method is its full (library default) one
SETTINGS = [
    ("extremal-perturbation", "areas 0.025/0.05/0.1, 300 iterations (default)", lambda c: ExtremalPerturbationExplainer(c)),
    ("extremal-perturbation", "areas 0.025/0.05/0.1, 100 iterations", lambda c: ExtremalPerturbationExplainer(c, max_iter=100)),
    ("extremal-perturbation", "area 0.05, 300 iterations", lambda c: ExtremalPerturbationExplainer(c, areas=(0.05,))),
    ("extremal-perturbation", "area 0.05, 100 iterations", lambda c: ExtremalPerturbationExplainer(c, areas=(0.05,), max_iter=100)),
    ("meaningful-perturbation", "300 steps (default)", lambda c: MeaningfulPerturbationExplainer(c)),
    ("meaningful-perturbation", "100 steps", lambda c: MeaningfulPerturbationExplainer(c, steps=100)),
    ("rise", "1000 masks (default)", lambda c: RISEExplainer(c)),
    ("rise", "500 masks", lambda c: RISEExplainer(c, n_masks=500)),
]


def _ci(values: list[float]) -> dict:
    mean, lo, hi, n = bootstrap_ci(values, n_resamples=1000, seed=0)
    return {"mean": round(mean, 3), "lo": round(lo, 3), "hi": round(hi, 3), "n": n}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--classifier", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--json")
    a = p.parse_args(argv)
    clf = as_classifier(a.classifier, device="cpu")
    clf.eval()
    data = Path(a.data)
    ds = load_dataset(data, split="test")
    sel = select_images(ds, clf, torch.device("cpu"), data, split="test", subset="pred-pos", n=None, seed=0)
    idx = [i for i in sel.selected if sel.slice_of[i] == "TP" and bool(sel.has_mask[i]) and bool(sel.masks[i].any())][: a.n]
    x, masks = sel.images[idx], sel.masks[idx, 0].numpy() > 0.5
    rows, full = [], {}
    for method, label, make in SETTINGS:
        ex = make(clf)
        t0 = time.perf_counter()
        maps = ex.explain(x).maps[:, 0].numpy()
        secs = (time.perf_counter() - t0) / len(idx)
        ref = full.setdefault(method, maps)
        row = {"method": method, "setting": label, "s_per_image": round(secs, 2),
               "iou_area_matched": _ci([iou_area_matched(np.abs(m), k) for m, k in zip(maps, masks)]),
               "pointing": round(float(np.mean([pointing_game(np.abs(m), k) for m, k in zip(maps, masks)])), 3),
               "spearman_vs_default": _ci([spearman(m, r, mode="abs") for m, r in zip(maps, ref)])}
        rows.append(row)
        print(json.dumps(row), flush=True)
    res = {"rows": rows, "n_images": len(idx), "command": " ".join(["python", *sys.argv]),
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "machine": f"{platform.machine()} CPU, torch {torch.__version__}, threads {torch.get_num_threads()}"}
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
