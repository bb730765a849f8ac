"""How many rows one classifier pass of the occlusion, RISE and IG baselines, and how many images one pass of Extremal
Perturbation, should hold on this machine (issue 32).

    OMP_NUM_THREADS=1 python benchmarks/performance/pass_size.py CLASSIFIER DATA [--n 24] [--rounds 3] [--rise 256 128]
        [--extremal 8 4 2 0] [--name pass_size]

Captum's Occlusion evaluates ``images x perturbations_per_eval`` occluded copies per forward pass, RISE ``rows_per_pass``
masked copies, IG ``internal_batch_size`` rows (images x steps) per forward/backward pass. On a CPU a pass of a few
hundred 64-px rows no longer fits the caches (the paper-cnn's first feature map is 246 kB per row), so the per-row cost
grows with the pass. Extremal Perturbation (``--extremal``) optimises its masks through an 81-bump mask generator whose
intermediate is 1.8 MB per mask at 64 px: the setting is the number of images per pass (0: the library's rule). For each
setting: the median seconds of the whole explanation of ``n`` test images (evaluate's noisy batch is 24), measured in
alternating rounds in one process, and the largest difference of its maps from the first setting's (the rows of a pass
are independent: only the kernels' rounding may differ). Result: benchmarks/results/NAME.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_times, machine, median, write_result  # noqa: E402


def _extremal(clf, images_per_pass: int, max_iter: int):
    """Extremal Perturbation (the demo's areas) whose passes hold ``images_per_pass`` images (0: the library's rule)."""
    from medxgan.explain.perturbation import ExtremalPerturbationExplainer

    class Fixed(ExtremalPerturbationExplainer):
        def images_per_pass(self, gen, n, device):
            return min(n, images_per_pass) if images_per_pass else super().images_per_pass(gen, n, device)

    return Fixed(clf, max_iter=max_iter, batch_size=10**6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("classifier", help="classifier run directory (e.g. a demo's DIR/classifier)")
    ap.add_argument("data")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--occlusion", type=int, nargs="+", default=[64, 32, 16, 8, 4], help="perturbations_per_eval values")
    ap.add_argument("--ig", type=int, nargs="+", default=[64, 32, 16], help="internal_batch_size values")
    ap.add_argument("--rise", type=int, nargs="+", default=[], help="RISE rows per pass (rise_saliency's batch)")
    ap.add_argument("--extremal", type=int, nargs="+", default=[], help="Extremal Perturbation: images per pass (its CPU_MASK_PASS_BYTES "
                    "set to fit exactly that many); 0 = the library's default")
    ap.add_argument("--extremal-iter", type=int, default=20, help="Extremal Perturbation iterations (the demo: 100)")
    ap.add_argument("--name", default="pass_size")
    args = ap.parse_args()

    from medxgan.classifiers.loading import load_classifier
    from medxgan.data import load_dataset
    from medxgan.evaluate.selection import select_images
    from medxgan.explain.baselines import IntegratedGradientsExplainer, OcclusionExplainer
    from medxgan.explain.perturbation import RISEExplainer

    clf = load_classifier(args.classifier)
    ds = load_dataset(args.data, split="test")
    sel = select_images(ds, clf, torch.device("cpu"), Path(args.data), split="test", subset="pred-pos", n=args.n, seed=0)
    x = sel.images[sel.selected]
    explainers = {f"occlusion ppe={p} ({p * args.n} rows/pass)": OcclusionExplainer(clf, perturbations_per_eval=p) for p in args.occlusion}
    explainers.update({f"ig-black internal_batch_size={b}": IntegratedGradientsExplainer(clf, internal_batch_size=b) for b in args.ig})
    explainers.update({f"rise rows_per_pass={b}": RISEExplainer(clf, rows_per_pass=b) for b in args.rise})
    for p in args.extremal:
        explainers[f"extremal images_per_pass={p or 'default'}"] = _extremal(clf, p, args.extremal_iter)
    maps = {k: ex.explain(x).maps for k, ex in explainers.items()}  # warm-up and the maps compared below
    times = interleaved_times({k: (lambda ex=ex: ex.explain(x)) for k, ex in explainers.items()}, args.rounds, 1, torch.device("cpu"))
    refs = {p: next((k for k in maps if k.startswith(p)), None) for p in ("occlusion", "ig", "rise", "extremal")}
    rows = {}
    for k in explainers:
        ref = refs[k.split(" ")[0].split("-")[0]]
        rows[k] = {"median_s": median(times[k]), "s_per_image": median(times[k]) / args.n, "times_s": times[k],
                   "speed_vs_default": median(times[ref]) / median(times[k]), "max_abs_map_difference": float((maps[k] - maps[ref]).abs().max())}
        print(f"{k:45s} {rows[k]['s_per_image'] * 1000:7.1f} ms/image  x{rows[k]['speed_vs_default']:.2f}  max|diff| {rows[k]['max_abs_map_difference']:.1e}")
    print(write_result(args.name, {"machine": machine(), "n": args.n, "rows": rows}))


if __name__ == "__main__":
    main()
