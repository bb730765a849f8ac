"""What ``--infill auto`` measures and chooses, for one or more GAN runs (issue 29/31).

    python benchmarks/perturbation/infill_fidelity.py RUN [RUN ...] [--inpainter RUN] [--n 32] [--steps 75] [--seeds 0 1 2]
        [--json out.json]

For each RUN (a `medxgan train` run whose data folder is still where it was trained), the library's selection
(:mod:`medxgan.explain.infill_selection`): lesion patterns of the validation positives (gM (x - B)) implanted into
validation negatives, each candidate in-fill (gan, blur, mean, and the learned in-fill of ``--inpainter``) scored by
its PSNR against the untouched negative weighted by the pattern, and the choice (``gan`` unless another beats it by
0.5 dB). Inversion as the demo's evaluation: ``--steps`` Adam steps x 1 start from the run's anchor encoder.
Nothing is written into RUN (the choice is computed afresh, not read from RUN/infill_selection.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from medxgan.explain.infill_selection import select_infill_for_run
from medxgan.explain.model import MedXGANModel
from medxgan.gan.inpainter import load_inpainter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--inpainter", help="an inpainter run (`medxgan train-inpainter`, with --gan on the first RUN for learned-gan)")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--steps", type=int, default=75)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="draws of the validation pairs (the library's is seed 0)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    rows = []
    for run in a.runs:
        mx = MedXGANModel.load(run, device="cpu", steps=a.steps, restarts=1)
        mx.run_path = None  # no cache: measured afresh, RUN left untouched
        inp = load_inpainter(a.inpainter) if a.inpainter else None
        for seed in a.seeds:
            t0 = time.perf_counter()
            sel = select_infill_for_run(mx, mx.config.get("data") or "", inpainter=inp, n=a.n, seed=seed)
            row = {"run": str(run), "seed": seed, **sel.to_dict(), "seconds": round(time.perf_counter() - t0, 1)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"rows": rows, "inversion_steps": a.steps, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
                                     indent=1))


if __name__ == "__main__":
    main()
