"""The medXGAN maps on an evaluation's 30 scans with today's judge (the confidence-bound oracle threshold).

    OMP_NUM_THREADS=1 python benchmarks/perturbation/judge_eval.py DATA GAN OUT INFILL
"""

from __future__ import annotations

import json
import sys
import time

from medxgan.evaluate.runner import evaluate


def main() -> None:
    data, gan, out, infill = sys.argv[1:5]
    t = time.time()
    r = evaluate(data, out, gan=gan, methods=["medxgan-diff", "medxgan-lig", "medxgan-mask"], n=30, split="test", subset="pred-pos",
                 noise_sigmas=(), max_sensitivity=False, batch_size=8, seed=0, sanity=False, show_progress=False,
                 inversion={"steps": 75, "restarts": 1, "minimal_mask_infill": infill})
    cal, m = r["oracle_calibration"], r["methods"]["medxgan-diff"]["metrics"]
    key = "counterfactual_residual" if "counterfactual_residual.valid_oracle" in m else "counterfactual"
    print(json.dumps({"out": out, "threshold_logit": cal["threshold_logit"], "val_twins": cal.get("twin_specificity"),
                      "bound": cal.get("twin_specificity_lower_bound"), "sensitivity": cal.get("sensitivity"),
                      "sensitivity_default": cal.get("sensitivity_default"), "test_twins": cal.get("test_twins"),
                      "valid_oracle": m[f"{key}.valid_oracle"], "valid_classifier": m[f"{key}.valid_classifier"],
                      "iou": {k: v["metrics"]["localisation.iou_area_matched"]["mean"] for k, v in r["methods"].items()},
                      "s": round(time.time() - t)}))


if __name__ == "__main__":
    main()
