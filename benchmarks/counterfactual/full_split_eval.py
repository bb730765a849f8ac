"""Every predicted-positive test scan instead of the demo's 30: the clean maps of every method with the demo's method
settings (no noisy copies, no max-sensitivity, no sanity check), 75 inversion steps x 1 start, the given in-fill.

    OMP_NUM_THREADS=1 python benchmarks/counterfactual/full_split_eval.py DATA GAN OUT INFILL

(2026-12-07, thirteenth session: chest phantoms 138 scans, Colin27 77, ICBM152 83; benchmarks/counterfactual/RESULTS.md.)
"""

from __future__ import annotations

import sys
import time

import torch

from medxgan.demo_methods import method_settings
from medxgan.evaluate.runner import evaluate
from medxgan.report.html import write_report


def main() -> None:
    data, gan, out, infill = sys.argv[1:5]
    torch.manual_seed(0)
    t = time.time()
    evaluate(data, out, gan=gan, **method_settings(None, None), n=None, split="test", subset="pred-pos", noise_sigmas=(),
             seed=0, device="cpu", batch_size=8, max_sensitivity=False, n_resamples=1000, sanity=False,
             inversion={"steps": 75, "restarts": 1, "minimal_mask_infill": infill}, show_progress=False)
    write_report(out, max_rows=12)
    print(f"done in {time.time() - t:.0f} s")


if __name__ == "__main__":
    main()
