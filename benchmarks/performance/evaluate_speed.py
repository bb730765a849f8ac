"""`medxgan evaluate`: where the time goes (``--profile``) and old vs new wall time on the same inputs (issue 15).

    # a GAN run, its classifier and phantom data (e.g. the demo's medxgan-demo/{gan,data})
    OMP_NUM_THREADS=1 python benchmarks/performance/evaluate_speed.py --data DATA --gan GAN --n 30
    OMP_NUM_THREADS=1 python benchmarks/performance/evaluate_speed.py --data DATA --gan GAN --n 8 --profile

Settings default to the demo's evaluation stage (``medxgan.demo.DemoConfig``): all methods, noise sigmas
(0.02, 0.05, 0.1), max-sensitivity on the first 3 images (10 perturbations), inversion 200 steps x 1
restart, batch size 8, 1000 bootstrap resamples.

Comparison (default): ``evaluate(implementation="reference")`` (the per-image loops of the runner before
issue 15) and ``evaluate(implementation="batched")`` each run in a fresh subprocess on the same inputs, one
after the other (``--order`` alternates them over ``--rounds``), reporting wall time, peak RSS (the child's
``ru_maxrss``) and the largest difference between the two runs' per-image metrics. The ratio is measured in
one run of this script; on the shared 2-core machine the load changes during a run, so read it with the
load averages printed next to it.

The encoder path (``--variants batched encoder --encoder-gan RUN2``, RUN2 a copy of the GAN run with an
encoder from `medxgan train-encoder`): the batched evaluation on RUN2 with the encoder's own schedule (75 steps x
1 start from E(x), ``--encoder-steps`` to change it) against the demo's schedule on the run without it. Every
image, noisy copy and perturbed copy is inverted alike (from its own E(x)), so the metrics stay comparable in
kind but are other numbers (another inversion); the differences are reported as measured, not as a tolerance.

Profile (``--profile``): one reference run with timers around the pieces of
:func:`medxgan.evaluate.pairs.evaluate_pairs_reference` (inclusive wall time per phase and method; the
inversion and LIG time inside each phase separately).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_result  # noqa: E402

DEMO = dict(noise_sigmas=(0.02, 0.05, 0.1), max_sensitivity=True, max_sensitivity_n=3, max_sensitivity_samples=10, batch_size=8,
            n_resamples=1000, inversion={"steps": 200, "restarts": 1})


def _evaluate_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw = dict(DEMO)
    kw["noise_sigmas"] = tuple(args.sigmas)
    kw["max_sensitivity_n"] = args.ms_n
    kw["max_sensitivity"] = args.ms_n > 0
    kw["inversion"] = {"steps": args.steps, "restarts": args.restarts}
    kw["batch_size"] = args.batch_size
    kw["subset"] = args.subset
    return kw


def run_one(args: argparse.Namespace, implementation: str, out: Path) -> dict[str, Any]:
    """One evaluation in this process (a child of the comparison); writes OUT and returns its timing."""
    import torch

    from medxgan.evaluate.runner import evaluate

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    extra: dict[str, Any] = {}
    gan = args.gan
    kw = _evaluate_kwargs(args)
    if implementation == "warm":  # the batched code with the explicit noisy-copy option (changes numbers)
        extra = {"implementation": "batched", "noisy_inversion": {"start": "clean", "steps": args.warm_steps}}
    if implementation == "encoder":  # the encoder path: the run with a trained encoder, on the encoder's own schedule
        if args.encoder_gan is None:
            raise SystemExit("variant encoder: pass --encoder-gan (a copy of --gan with RUN/encoder from `medxgan train-encoder`)")
        extra = {"implementation": "batched"}
        gan = args.encoder_gan
        kw["inversion"] = {"steps": args.encoder_steps, "restarts": 1} if args.encoder_steps else None
    t = time.perf_counter()
    res = evaluate(args.data, out, gan=gan, methods=args.methods, n=args.n, split="test", seed=0, device="cpu",
                   show_progress=False, overwrite=True, **{"implementation": implementation, **extra}, **kw)
    wall = time.perf_counter() - t
    return {"implementation": implementation, "wall_s": wall, "inversion": res["config"].get("inversion"),
            "inversion_encoder": res["config"].get("inversion_encoder"), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "n_images": res["slices"]["evaluated"], "methods": res["config"]["methods"], "load_after": list(os.getloadavg())}


def _flatten(d: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out.update(_flatten(v, f"{prefix}[{i}]"))
    elif isinstance(d, bool):
        out[prefix] = float(d)
    elif isinstance(d, (int, float)):
        out[prefix] = float(d)
    elif d is None:
        out[prefix] = math.nan
    return out


def compare_rows(a_dir: Path, b_dir: Path) -> dict[str, Any]:
    """Largest |a - b| per metric group over all (image, method) rows of two runs (cost.* excluded), and
    whether NaN/None sit in the same places."""
    from medxgan.evaluate.store import read_per_image

    ka, kb = read_per_image(a_dir / "per_image.jsonl")[0], read_per_image(b_dir / "per_image.jsonl")[0]
    worst: dict[str, float] = defaultdict(float)
    nan_mismatch = 0
    for key in ka.keys() & kb.keys():
        fa, fb = _flatten(ka[key]["metrics"]), _flatten(kb[key]["metrics"])
        for m in fa.keys() | fb.keys():
            if m.startswith("cost."):
                continue
            x, y = fa.get(m, math.nan), fb.get(m, math.nan)
            if math.isnan(x) or math.isnan(y):
                nan_mismatch += int(math.isnan(x) != math.isnan(y))
                continue
            g = m.split(".")[0] if not m.startswith("robustness") else ".".join(m.split(".")[:3])
            worst[g] = max(worst[g], abs(x - y))
    return {"pairs": len(ka.keys() & kb.keys()), "pairs_only_in_one": len(ka.keys() ^ kb.keys()), "nan_mismatch": nan_mismatch,
            "max_abs_diff": dict(sorted(worst.items()))}


def compare_aggregates(a_dir: Path, b_dir: Path) -> dict[str, dict[str, list]]:
    """Per method, the metrics whose aggregated mean differs between two runs' results.json:
    {method: {metric: [mean a, lo a, hi a, mean b, lo b, hi b]}} (cost.* excluded)."""
    a = json.loads((a_dir / "results.json").read_text())["methods"]
    b = json.loads((b_dir / "results.json").read_text())["methods"]
    out: dict[str, dict[str, list]] = {}
    for m in a.keys() & b.keys():
        for k, x in a[m]["metrics"].items():
            y = b[m]["metrics"].get(k)
            if k.startswith("cost.") or y is None or x.get("mean") is None or y.get("mean") is None or x["mean"] == y["mean"]:
                continue
            out.setdefault(m, {})[k] = [x["mean"], x["lo"], x["hi"], y["mean"], y["lo"], y["hi"]]
    return dict(sorted(out.items()))


def compare(args: argparse.Namespace) -> None:
    tmp = Path(args.workdir or tempfile.mkdtemp(prefix="evaluate_speed_"))
    runs: list[dict[str, Any]] = []
    load_before = list(os.getloadavg())
    order = list(args.variants) if args.order == "reference-first" else list(args.variants)[::-1]
    for r in range(args.rounds):
        for impl in (order if r % 2 == 0 else order[::-1]):
            out = tmp / f"{impl}-{r}"
            cmd = [sys.executable, __file__, "--child", impl, "--child-out", str(out)] + _passthrough(args)
            t = time.perf_counter()
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                sys.exit(f"{impl} failed:\n{p.stdout}\n{p.stderr}")
            res = json.loads(p.stdout.strip().splitlines()[-1])
            res["process_s"] = time.perf_counter() - t
            res["round"] = r
            runs.append(res)
            print(f"{impl:9s} round {r}: {res['wall_s']:.1f} s evaluate, peak RSS {res['peak_rss_mb']:.0f} MB, load {res['load_after']}", flush=True)
    by = {impl: [x["wall_s"] for x in runs if x["implementation"] == impl] for impl in args.variants}
    base = args.baseline or ("reference" if "reference" in by else args.variants[0])
    ratios = {f"{base}/{v}": sum(by[base]) / sum(by[v]) for v in args.variants if v != base}
    diffs = {f"{base} vs {v}": compare_rows(tmp / f"{base}-0", tmp / f"{v}-0") for v in args.variants if v != base}
    aggregates = {f"{base} vs {v}": compare_aggregates(tmp / f"{base}-0", tmp / f"{v}-0") for v in args.variants if v != base}
    payload = {"machine": {**machine(), "load_before": load_before}, "settings": {**_evaluate_kwargs(args), "n": args.n, "methods": args.methods,
               "data": str(args.data), "gan": str(args.gan), "warm_steps": args.warm_steps,
               "encoder_gan": str(args.encoder_gan) if args.encoder_gan else None, "encoder_steps": args.encoder_steps}, "runs": runs, "ratios": ratios, "differences": diffs,
               "aggregate_differences": aggregates}
    if "reference/batched" in ratios:
        payload["ratio_reference_over_batched"] = ratios["reference/batched"]
    print(json.dumps({"ratios": {k: round(v, 2) for k, v in ratios.items()}, "differences": diffs}, indent=2))
    if args.result:
        print("written", write_result(args.result, payload))


def memory(args: argparse.Namespace) -> None:
    """Peak RSS of the batched evaluation (a fresh child each) for several numbers of images: it must stay
    flat (images are processed in chunks of ``--batch-size``)."""
    tmp = Path(args.workdir or tempfile.mkdtemp(prefix="evaluate_memory_"))
    rows = []
    for n in args.memory:
        a = argparse.Namespace(**{**vars(args), "n": n})
        cmd = [sys.executable, __file__, "--child", "batched", "--child-out", str(tmp / f"n{n}")] + _passthrough(a)
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"n={n} failed:\n{p.stdout}\n{p.stderr}")
        res = json.loads(p.stdout.strip().splitlines()[-1])
        rows.append(res)
        print(f"n={res['n_images']:3d}: peak RSS {res['peak_rss_mb']:.0f} MB, {res['wall_s']:.1f} s", flush=True)
    if args.result:
        print("written", write_result(args.result, {"machine": machine(), "settings": {**_evaluate_kwargs(args), "methods": args.methods},
                                                    "runs": rows}))


def _passthrough(args: argparse.Namespace) -> list[str]:
    out = ["--data", str(args.data), "--gan", str(args.gan), "--n", str(args.n), "--steps", str(args.steps), "--restarts", str(args.restarts),
           "--ms-n", str(args.ms_n), "--subset", args.subset, "--warm-steps", str(args.warm_steps), "--batch-size", str(args.batch_size), "--sigmas", *map(str, args.sigmas)]
    if args.methods:
        out += ["--methods", *args.methods]
    if args.encoder_gan:
        out += ["--encoder-gan", str(args.encoder_gan), "--encoder-steps", str(args.encoder_steps)]
    return out


# ---- profile ------------------------------------------------------------------------------------
class _Timers:
    def __init__(self) -> None:
        self.phase: list[str] = []
        self.method = ""
        self.incl: dict[tuple[str, str], float] = defaultdict(float)  # (phase, method) -> s
        self.inner: dict[tuple[str, str], float] = defaultdict(float)  # (phase, inner name) -> s
        self.calls: dict[tuple[str, str], int] = defaultdict(int)
        self.inv_images: dict[str, int] = defaultdict(int)

    def wrap(self, obj: Any, attr: str, phase: str | None = None, inner: str | None = None, counter=None) -> None:
        fn = getattr(obj, attr)
        timers = self

        def wrapped(*a, **k):
            name = phase(a, k) if callable(phase) else phase
            top = not timers.phase
            if name is not None and top:
                timers.phase.append(name)
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                dt = time.perf_counter() - t
                cur = timers.phase[0] if timers.phase else "other"
                if name is not None and top:
                    timers.incl[(name, timers.method)] += dt
                    timers.calls[(name, timers.method)] += 1
                    timers.phase.pop()
                if inner is not None:
                    timers.inner[(cur, inner)] += dt
                    if counter is not None:
                        timers.inv_images[cur] += counter(a, k)

        setattr(obj, attr, wrapped)


def profile(args: argparse.Namespace) -> None:
    import torch

    import medxgan.evaluate.pairs as pairs
    import medxgan.evaluate.runner as runner
    import medxgan.explain.counterfactual as cfm
    import medxgan.explain.lig as ligm

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    T = _Timers()
    ref = pairs.evaluate_pairs_reference
    n_explain = {"k": 0}

    def pairs_fn(ex, todo, *a, **kw):
        T.method = ex.name
        n_explain["k"] = 0
        return ref(ex, todo, *a, **kw)

    def explain_phase(a, k):
        n_explain["k"] += 1
        return "explain: clean" if n_explain["k"] == 1 else "explain: noisy copies"

    T.wrap(pairs, "_explain_safe", explain_phase)
    T.wrap(pairs, "_max_sens", "max-sensitivity")
    T.wrap(pairs, "deletion_curve", "deletion curves")
    for f in ("localisation_metrics", "ssim", "spearman", "topk_overlap", "counterfactual_metrics", "_twin_metrics", "shortcut_metrics", "is_constant"):
        T.wrap(pairs, f, "metrics (localisation, SSIM/Spearman/top-k, ...)")
    T.wrap(pairs, "_oracle_probs", "oracle")
    T.wrap(pairs, "_save_maps", "saving maps (npz)")
    T.wrap(cfm, "invert", None, inner="inversion", counter=lambda a, k: int(a[2].shape[0]))
    T.wrap(ligm, "latent_integrated_gradients", None, inner="LIG")
    T.method = ""
    T.wrap(runner, "select_images", "selection (classifier on the split)")
    T.wrap(runner, "_results", "aggregation (bootstrap)")
    T.wrap(runner, "review_sections", "review sections (realism, sanity)")
    T.wrap(runner, "_write_results", "writing results")
    runner_run = runner._run_methods

    def run_methods(*a, **k):
        runner.IMPLEMENTATIONS["reference"] = pairs_fn  # the runner picks the rows' function from this table
        try:
            out = runner_run(*a, **k)
        finally:
            runner.IMPLEMENTATIONS["reference"] = ref
        T.method = ""
        return out

    runner._run_methods = run_methods
    from medxgan.evaluate.runner import evaluate

    out = Path(args.workdir or tempfile.mkdtemp(prefix="evaluate_profile_"))
    load_before = list(os.getloadavg())
    t = time.perf_counter()
    res = evaluate(args.data, out, gan=args.gan, methods=args.methods, n=args.n, split="test", seed=0, device="cpu",
                   show_progress=False, overwrite=True, implementation="reference", **_evaluate_kwargs(args))
    wall = time.perf_counter() - t
    phases: dict[str, float] = defaultdict(float)
    for (ph, _), v in T.incl.items():
        phases[ph] += v
    lines = [f"evaluate wall {wall:.1f} s, {res['slices']['evaluated']} images, methods {', '.join(res['config']['methods'])}; "
             f"load {load_before} -> {list(os.getloadavg())}", "", "| phase | s | % of wall | of which inversion (images) | of which LIG |", "|---|---|---|---|---|"]
    for ph, v in sorted(phases.items(), key=lambda kv: -kv[1]):
        inv = T.inner.get((ph, "inversion"), 0.0)
        lg = T.inner.get((ph, "LIG"), 0.0)
        lines.append(f"| {ph} | {v:.1f} | {100 * v / wall:.0f} % | {inv:.1f} s ({T.inv_images.get(ph, 0)}) | {lg:.1f} s |")
    other = wall - sum(phases.values())
    lines.append(f"| everything else (loading models and data, store) | {other:.1f} | {100 * other / wall:.0f} % | | |")
    lines += ["", "| method | clean | noisy copies | max-sensitivity | deletion | metrics | saving |", "|---|---|---|---|---|---|---|"]
    for m in res["config"]["methods"]:
        g = lambda ph: T.incl.get((ph, m), 0.0)  # noqa: E731
        lines.append(f"| {m} | {g('explain: clean'):.1f} | {g('explain: noisy copies'):.1f} | {g('max-sensitivity'):.1f} | "
                     f"{g('deletion curves'):.1f} | {g('metrics (localisation, SSIM/Spearman/top-k, ...)'):.1f} | {g('saving maps (npz)'):.1f} |")
    print("\n".join(lines))
    if args.result:
        write_result(args.result, {"machine": {**machine(), "load_before": load_before}, "wall_s": wall, "settings": {**_evaluate_kwargs(args), "n": args.n},
                                   "phases": dict(phases), "per_method": {f"{p}|{m}": v for (p, m), v in T.incl.items()},
                                   "inner": {f"{p}|{m}": v for (p, m), v in T.inner.items()}, "inverted_images": dict(T.inv_images),
                                   "table": lines})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--gan", required=True, type=Path)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--methods", nargs="+", default=None)
    ap.add_argument("--subset", default="pred-pos", help="pred-pos (the demo's), pos, tp or all")
    ap.add_argument("--sigmas", nargs="+", type=float, default=list(DEMO["noise_sigmas"]))
    ap.add_argument("--ms-n", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--restarts", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--order", choices=["reference-first", "batched-first"], default="reference-first",
                    help="reference-first: --variants in the given order; batched-first: reversed")
    ap.add_argument("--variants", nargs="+", choices=["reference", "batched", "warm", "encoder"], default=["reference", "batched"],
                    help="warm: batched with noisy_inversion={'start': 'clean', 'steps': --warm-steps} (changes the medXGAN noise numbers); "
                    "encoder: batched on --encoder-gan with the encoder's own schedule (the encoder path; other numbers)")
    ap.add_argument("--baseline", default=None, help="the variant the ratios and differences are taken against (default reference, "
                    "else the first variant)")
    ap.add_argument("--encoder-gan", type=Path, default=None, help="the --gan run with an encoder from `medxgan train-encoder` (a copy)")
    ap.add_argument("--encoder-steps", type=int, default=0, help="variant encoder: inversion steps from E(x) (0: the run's default, 75)")
    ap.add_argument("--warm-steps", type=int, default=50)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--memory", nargs="+", type=int, default=None, metavar="N", help="peak RSS of the batched run for these numbers of images")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--result", default=None, help="write benchmarks/results/RESULT.json")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_one(args, args.child, args.child_out)))
    elif args.profile:
        profile(args)
    elif args.memory:
        memory(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
