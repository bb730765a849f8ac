"""`medxgan evaluate` with the demo's evaluation settings, before / after issue 32's exact speed-ups, with timers around
its pieces (where the time goes), and the two runs' numbers compared (issue 32).

    OMP_NUM_THREADS=1 python benchmarks/performance/evaluate_ab.py run GAN DATA OUT [--n 30] [--variant before|after]
        [--demo-methods] [--threads 1] [--allocator default|tuned]
    python benchmarks/performance/evaluate_ab.py compare OUT_BEFORE OUT_AFTER [OUT_BEFORE2 ...] --name evaluate_ab

``run``: ``evaluate`` exactly as the demo's eval stage calls it (30 predicted positives of the test split, every method
+ the twin row, noise 0.02/0.05/0.1, max-sensitivity 3 x 10, batch 8, 1000 resamples, sanity on 10 images, the run's
inversion with 75 steps x 1 start), with inclusive timers around the inversion, the minimal-mask search, LIG, the
interpolation, every explainer's ``explain`` (count = images explained, sanity and perturbed copies included), the
sanity check, realism and the deletion scoring; written to OUT.timing.json. ``--variant before`` puts the code back
as it was before the speed-ups (aten's NCHW max-pool in the paper-cnn classifier; B(z1*) re-rendered by the generator
at every point of the minimal-mask path); ``after`` is today's code. ``compare``: wall times, timers and the largest
per-image difference of every metric group between the first run and each other one -> benchmarks/results/NAME.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_result  # noqa: E402


def _timers() -> tuple[dict[str, float], dict[str, int]]:
    """Wrap the pieces with inclusive timers (module attributes, looked up at call time by the library)."""
    import medxgan.evaluate.pairs as pairs
    import medxgan.evaluate.review as rv
    import medxgan.explain.base as base
    import medxgan.explain.counterfactual as cfm
    import medxgan.explain.lig as lig
    import medxgan.explain.minimal_mask as mm

    seconds: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)

    def wrap(obj: Any, attr: str, label: str) -> None:
        f = getattr(obj, attr)

        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                seconds[label] += time.perf_counter() - t0
                counts[label] += 1
        setattr(obj, attr, timed)

    wrap(cfm, "invert", "inversion")
    wrap(mm, "refine_mask", "minimal_mask")
    wrap(lig, "latent_integrated_gradients", "lig")
    wrap(cfm.CounterfactualEngine, "interpolation", "interpolation")
    wrap(rv, "model_randomisation", "sanity")
    wrap(rv, "counterfactual_realism", "realism")
    wrap(pairs, "deletion_scores", "deletion")
    explain: Callable[..., Any] = base.Explainer.explain

    def timed_explain(self: Any, x: Any, *a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return explain(self, x, *a, **k)
        finally:
            seconds["explain:" + self.name] += time.perf_counter() - t0
            counts["explain:" + self.name] += int(x.shape[0])
    base.Explainer.explain = timed_explain
    return seconds, counts


def _before(model: Any) -> None:
    """The code before issue 32's exact speed-ups (same numbers, see ``compare``)."""
    import torch.nn as nn

    import medxgan.explain.counterfactual as cfm

    for block in model.classifier.model.features:  # the paper-cnn's pools: aten's NCHW max-pool
        block[3] = nn.MaxPool2d(2)

    def old_paths(self: Any, cf: Any) -> list[Any]:  # B(z1*) re-rendered at every point of the minimal-mask path
        gens = cf.generators or [self.generator] * len(cf)
        return [cfm.MaskPath(g, cf.images[i], cf.z2[i], cf.masks[i], None if cf.fills is None else cf.fills[i]) for i, g in enumerate(gens)]
    cfm.CounterfactualEngine.path_generators = old_paths


def run(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.allocator == "tuned":  # what the medxgan command does at start (runtime/allocator.py)
        from medxgan.runtime.allocator import tune_allocator

        print("allocator:", tune_allocator())
    seconds, counts = _timers()
    from medxgan.evaluate.runner import evaluate
    from medxgan.pipeline import MedXGAN

    load0, t0 = os.getloadavg(), time.perf_counter()
    model = MedXGAN.load(args.gan, device="cpu", steps=75, restarts=1)
    model.config["out"] = args.gan
    if args.variant == "before":
        _before(model)
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    methods = {}
    if args.demo_methods:  # the demo's eval stage: every method, the perturbation baselines light (medxgan.demo_methods)
        from medxgan.demo_methods import method_settings

        methods = method_settings(None, model)
    evaluate(args.data, args.out, gan=model, **methods, n=args.n, split="test", subset="pred-pos", noise_sigmas=(0.02, 0.05, 0.1), seed=0, device="cpu",
             batch_size=8, max_sensitivity=True, max_sensitivity_n=3, n_resamples=1000, inversion={"steps": 75, "restarts": 1},
             show_progress=False, sanity=True, sanity_n=min(10, args.n))
    summary = {"variant": args.variant, "demo_methods": args.demo_methods, "allocator": args.allocator,
               "wall_s": time.perf_counter() - t0, "load_start": load0, "load_end": os.getloadavg(),
               "machine": machine(), "timers_s": dict(seconds), "counts": dict(counts)}
    Path(args.out + ".timing.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


def _flat(d: Any, p: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flat(v, f"{p}.{k}" if p else k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out.update(_flat(v, f"{p}[{i}]"))
    elif isinstance(d, (int, float)) and not isinstance(d, bool):
        out[p] = float(d)
    return out


def differences(a_dir: str, b_dir: str) -> dict[str, Any]:
    """Largest |a - b| per (method, metric group) over the per-image rows (timings excluded), the number of aggregate
    means that differ by > 1e-6, and the largest difference in the sanity and realism sections."""
    a, b = (json.loads((Path(d) / "results.json").read_text()) for d in (a_dir, b_dir))
    rows_b = {(r["image_id"], r["method"]): _flat(r["metrics"]) for r in b["per_image"]}
    worst: dict[str, float] = defaultdict(float)
    for r in a["per_image"]:
        other = rows_b[(r["image_id"], r["method"])]
        for k, v in _flat(r["metrics"]).items():
            if k.startswith("cost"):
                continue
            key, w = f"{r['method']}:{k.split('.')[0]}", other.get(k)
            if w is None or math.isnan(v) != math.isnan(w):
                worst[key] = math.inf
            elif not math.isnan(v):
                worst[key] = max(worst[key], abs(v - w))
    means = [(m, k) for m, d in a["methods"].items() for k, s in d["metrics"].items() if not k.startswith("cost")
             and s["mean"] is not None and b["methods"][m]["metrics"][k]["mean"] is not None
             and abs(s["mean"] - b["methods"][m]["metrics"][k]["mean"]) > 1e-6]
    sections = {}
    for key in ("sanity", "realism"):
        fa, fb = _flat(a.get(key) or {}), _flat(b.get(key) or {})
        sections[key] = max((abs(fa[k] - fb[k]) for k in fa if k in fb and not (math.isnan(fa[k]) or math.isnan(fb[k]))), default=0.0)
    return {"per_image_max_abs": {k: v for k, v in sorted(worst.items()) if v > 0}, "rows": len(a["per_image"]),
            "aggregate_means_differing": means, "sections_max_abs": sections}


def compare(args: argparse.Namespace) -> None:
    runs = {d: json.loads(Path(d + ".timing.json").read_text()) for d in args.outs}
    first = args.outs[0]
    payload = {"machine": machine(), "runs": runs, "differences_vs_first": {d: differences(first, d) for d in args.outs[1:]}}
    for d, t in runs.items():
        print(f"{d}: {t['variant']} wall {t['wall_s']:.1f} s, load {t['load_start'][0]:.1f} -> {t['load_end'][0]:.1f}")
    for d, diff in payload["differences_vs_first"].items():
        print(d, "per-image differences:", diff["per_image_max_abs"] or "none", "| means differing:", len(diff["aggregate_means_differing"]),
              "| sections:", diff["sections_max_abs"])
    print(write_result(args.name, payload))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("gan")
    r.add_argument("data")
    r.add_argument("out")
    r.add_argument("--n", type=int, default=30)
    r.add_argument("--variant", choices=["before", "after"], default="after")
    r.add_argument("--allocator", choices=["default", "tuned"], default="default", help="glibc's malloc defaults, or the medxgan "
                   "command's settings (runtime/allocator.py; the library alone keeps the defaults)")
    r.add_argument("--threads", type=int, default=1, help="torch threads (the demo uses torch's default: the machine's cores)")
    r.add_argument("--demo-methods", action="store_true", help="the demo's method set: + RISE, Meaningful and Extremal Perturbation (light)")
    c = sub.add_parser("compare")
    c.add_argument("outs", nargs="+")
    c.add_argument("--name", required=True)
    args = ap.parse_args()
    run(args) if args.cmd == "run" else compare(args)


if __name__ == "__main__":
    main()
