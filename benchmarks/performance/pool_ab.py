"""The paper-cnn's fast 2 x 2 max-pool (``MaxPool2x2``) against aten's ``nn.MaxPool2d(2)`` on the pieces of an explanation
and of ``evaluate`` (issue 32), side by side in one process: the same classifier object with its three pool modules
swapped between rounds (outputs are bit-identical, checked here on every piece).

    OMP_NUM_THREADS=1 python benchmarks/performance/pool_ab.py --gan GAN_RUN --data DATA [--rounds 4] [--name pool_ab]

Pieces, on the first 8 test true positives: the default difference explanation end to end (fresh cache), the inversion
(10 Adam steps of the run's schedule from its anchor encoder),
the minimal-mask search (20 steps), LIG (on the cached counterfactual), IG-50, SmoothGrad, occlusion (2 images), one
classifier forward/backward at batch 8 and 264. Per round every piece runs once with each pool (the order alternates).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median, write_result  # noqa: E402


def _swap_pools(model: nn.Module, fast: bool) -> None:
    from medxgan.classifiers.architectures import MaxPool2x2

    for block in model.features:
        block[3] = MaxPool2x2() if fast else nn.MaxPool2d(2)


def _pieces(gan: str, data: str) -> tuple[Any, dict[str, Callable[[], Any]]]:
    from medxgan.data import load_dataset
    from medxgan.evaluate.selection import select_images
    from medxgan.explain import minimal_mask as mm
    from medxgan.explain.baselines import build_explainers
    from medxgan.gan.inversion import invert
    from medxgan.pipeline import MedXGAN

    model = MedXGAN.load(gan, device="cpu", steps=75, restarts=1)
    clf, eng = model.classifier, model.engine
    ds = load_dataset(Path(data), split="test", size=model.size, channels=model.channels)
    sel = select_images(ds, clf, torch.device("cpu"), Path(data), split="test", subset="tp", n=8, seed=0)
    x = sel.images[sel.selected]
    cf = eng.counterfactuals(x)
    with torch.no_grad():
        _, base, gm = model.generator(cf.z1, cf.z2, return_parts=True)
    m = eng.minimal_mask
    ig, sg, occ = build_explainers(["ig-black", "smoothgrad", "occlusion"], clf, batch_size=8)
    lig = model.lig_explainer()
    xb = torch.rand(264, *x.shape[1:]) * 2 - 1

    def fb(t: torch.Tensor) -> torch.Tensor:
        t = t.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(clf.logit(t).sum(), t)
        return g

    diff = model.difference_explainer(batch_size=8)

    def explanation() -> torch.Tensor:
        eng.clear_cache()
        return diff.explain(x).maps

    pieces = {
        "default_explanation": explanation,  # the whole difference explanation: 75 inversion steps + 150 mask steps
        "inversion_10_steps": lambda: invert(model.generator, clf, x, eng.inversion_config.replace(steps=10), encoder=eng.encoder).z1,
        "minimal_mask_20_steps": lambda: mm.refine_mask(clf, x, base, gm, steps=20, w_area=float(m.area), w_tv=float(m.tv), scale=m.scale,
                                                        floor=m.effective_floor),
        "lig": lambda: lig.from_counterfactuals(cf).maps,
        "ig-black": lambda: ig.explain(x).maps,
        "smoothgrad": lambda: sg.explain(x).maps,
        "occlusion_2": lambda: occ.explain(x[:2]).maps,
        "clf_fwd_bwd_8": lambda: fb(x),
        "clf_fwd_bwd_264": lambda: fb(xb),
    }
    return clf, pieces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gan", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    clf, pieces = _pieces(args.gan, args.data)
    net = clf.model
    times: dict[str, dict[str, list[float]]] = {k: {"aten": [], "fast": []} for k in pieces}
    equal: dict[str, bool] = {}
    for r in range(args.rounds):
        for name, fn in pieces.items():
            outs = {}
            for kind in (("aten", "fast") if r % 2 == 0 else ("fast", "aten")):
                _swap_pools(net, kind == "fast")
                torch.manual_seed(1)  # SmoothGrad / occlusion draw nothing else; same seed for both
                t0 = time.perf_counter()
                outs[kind] = fn()
                times[name][kind].append(time.perf_counter() - t0)
            equal[name] = equal.get(name, True) and torch.equal(outs["aten"], outs["fast"])
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    _swap_pools(net, True)
    rows = {k: {"aten_s": median(v["aten"]), "fast_s": median(v["fast"]), "ratio": median(v["aten"]) / median(v["fast"]),
                "identical": equal[k]} for k, v in times.items()}
    for k, v in rows.items():
        print(f"{k:24s} aten {v['aten_s']:.3f} s  fast {v['fast_s']:.3f} s  x{v['ratio']:.2f}  identical {v['identical']}")
    if args.name:
        print(write_result(args.name, {"machine": machine(), "gan": args.gan, "data": args.data, "rounds": args.rounds, "rows": rows, "times": times}))


if __name__ == "__main__":
    main()
