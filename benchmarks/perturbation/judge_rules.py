"""The oracle's threshold under the point rule and under the confidence bound, from an evaluation's saved counterfactuals.

    OMP_NUM_THREADS=1 python benchmarks/perturbation/judge_rules.py GAN DATA EVAL [EVAL_DATA]

DATA: the run's data (its 'val' twins and positives choose the threshold); EVAL: an evaluation folder (its saved residual
counterfactuals, maps/*/medxgan-diff.npz ``x_res``); EVAL_DATA: the evaluated data when it is not DATA (ICBM152). Per rule:
the threshold, the share of validation / test twins accepted, the oracle's sensitivity on validation / test positives,
and the share of the counterfactuals accepted. The last line recomputes the bound's threshold with scipy's beta quantile
independently of the library's loop (they must agree). 64 px, 1 channel (the demo's).
"""

from __future__ import annotations

import glob
import sys

import numpy as np
import torch
from scipy.stats import beta

from medxgan.data import load_dataset
from medxgan.evaluate.oracle_calibration import oracle_logits, select_threshold
from medxgan.gan.run import load_gan_run


def _logits(oracle, root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The oracle's logits on a split's lesion-free twins and on its positives."""
    ds = load_dataset(root, split=split, size=64, channels=1)
    x, y, _, _ = ds.tensors()
    twins, has_twin = ds.twins()
    return oracle_logits(oracle, twins[has_twin.bool()]).numpy(), oracle_logits(oracle, x[y == 1]).numpy()


def _bound_rule(v: np.ndarray, target: float = 0.9, conf: float = 0.95) -> tuple[float, int, float]:
    """Least k whose one-sided Clopper-Pearson bound reaches the target; the threshold half way above the k-th logit."""
    v, n = np.sort(v), v.size
    k, lb = n, 0.0
    for k in range(1, n + 1):
        lb = float(beta.ppf(1 - conf, k, n - k + 1))
        if lb >= target:
            break
    return max(0.0, select_threshold(v, k / n, confidence=None)), k, lb


def main() -> None:
    gan, data, ev = sys.argv[1:4]
    ev_data = sys.argv[4] if len(sys.argv) > 4 else data
    oracle = load_gan_run(gan).oracle
    val_twins, val_pos = _logits(oracle, data, "val")
    test_twins, test_pos = _logits(oracle, ev_data, "test")
    cfs = np.stack([np.load(f)["x_res"] for f in sorted(glob.glob(ev + "/maps/*/medxgan-diff.npz"))])
    cf = oracle_logits(oracle, torch.tensor(cfs).float().reshape(len(cfs), 1, 64, 64)).numpy()
    for name, t in [("p 0.5", 0.0), ("point rule", select_threshold(val_twins, 0.9, confidence=None)), ("bound (library)", select_threshold(val_twins))]:
        print(f"{name:16s} t={t:7.3f} | val twins accepted {np.mean(val_twins < t):.3f} (n {val_twins.size}), val sensitivity "
              f"{np.mean(val_pos >= t):.3f} | test twins accepted {np.mean(test_twins < t):.3f} (n {test_twins.size}), test sensitivity "
              f"{np.mean(test_pos >= t):.3f} | counterfactuals accepted {np.mean(cf < t):.3f} (n {cf.size})")
    print("the bound recomputed here (threshold, k, lower bound):", _bound_rule(val_twins))


if __name__ == "__main__":
    main()
