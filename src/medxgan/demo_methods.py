"""Which methods the demo evaluates, with which settings, and whether an evaluation folder already has them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: the perturbation baselines the demo evaluates next to the gradient ones (issue 31), light: explained once per scan (no
#: noisy copies, no max-sensitivity, EvaluateConfig.light_methods); Extremal Perturbation with DEMO_METHOD_OPTIONS
#: (100 iterations instead of 300: IoU 0.608 vs 0.587 on 8 brain scans, map Spearman 0.96 with the default's, a third of
#: the cost; benchmarks/perturbation/RESULTS.md, "The demo's setting of the perturbation baselines")
DEMO_PERTURBATION = ("rise", "meaningful-perturbation", "extremal-perturbation")
DEMO_METHOD_OPTIONS = {"extremal-perturbation": {"max_iter": 100}}


def all_methods(minimal_mask: bool = True) -> list[str]:
    """Every baseline, the perturbation baselines and the medXGAN maps (the mask map only for a GAN with the minimal mask)."""
    from medxgan.explain.baselines import BASELINE_METHODS, MEDXGAN_METHODS, MINIMAL_MASK_METHODS

    mx = [m for m in MEDXGAN_METHODS if minimal_mask or m not in MINIMAL_MASK_METHODS]
    return list(BASELINE_METHODS) + list(DEMO_PERTURBATION) + mx


def method_settings(methods: Any = None, model: Any = None) -> dict[str, Any]:
    """evaluate's method list (``methods``, or all of them for ``model``) and the perturbation baselines' light evaluation
    and settings (see DEMO_PERTURBATION)."""
    names = list(methods or all_methods(model is None or bool(model.engine.refines_mask)))
    return {"methods": names, "light_methods": tuple(m for m in DEMO_PERTURBATION if m in names),
            "method_options": {m: o for m, o in DEMO_METHOD_OPTIONS.items() if m in names} or None}


def eval_done(d: Path, n: int, methods: Any = None) -> bool:
    """Whether the evaluation folder ``d`` holds ``methods`` (default: all of them, the mask map only if its explanations
    used a minimal mask) on ``n`` images."""
    from medxgan.evaluate.store import RESULTS_JSON
    from medxgan.report.markup import read_json

    res = read_json(d / RESULTS_JSON)
    if not isinstance(res, dict):
        return False
    cfg = res.get("config") or {}
    inv = cfg.get("inversion") or {}
    minimal_mask = inv.get("counterfactual") == "residual" and int(inv.get("minimal_mask_steps") or 0) > 0
    if not set(methods or all_methods(minimal_mask)) <= set(cfg.get("methods") or []):
        return False
    # covers n: the selection was made with this n (or at least as many images were evaluated)
    sel = int(cfg.get("n_selected") or 0)
    return (cfg.get("n") == n or sel >= n) and int((res.get("slices") or {}).get("evaluated") or 0) >= min(n, sel)
