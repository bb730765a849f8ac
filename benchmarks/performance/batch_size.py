"""Per-image cost of the default medXGAN explanation at batch 8 (evaluate's chunks) vs batch 30 (the demo's 30 images at
once), against Captum IG-50, side by side in one process (issue 32: does batching across images pay on a CPU?).

    OMP_NUM_THREADS=1 python benchmarks/performance/batch_size.py --gan GAN_RUN --data DATA [--n 30] [--rounds 2] [--name batch_size]

The first ``--n`` true positives of DATA's test split (evaluate's selection, seed 0). Per round, in alternating order:
the difference explanation (inversion with the run's demo schedule + minimal mask + map; a fresh cache every time) of
all images as one batch and in chunks of 8, then IG-50 (black) the same two ways. Also the largest difference
between the two batchings' maps and masks (the same per-image optimisation; only the convolution kernels' rounding
depends on the batch size, and 150 Adam steps amplify it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median, write_result  # noqa: E402

from medxgan.data import load_dataset  # noqa: E402
from medxgan.evaluate.selection import select_images  # noqa: E402
from medxgan.explain.baselines import EXPLAINERS  # noqa: E402
from medxgan.pipeline import MedXGAN  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gan", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    mx = MedXGAN.load(args.gan, device="cpu", steps=75, restarts=1)
    clf, eng = mx.classifier, mx.engine
    ds = load_dataset(args.data, split="test", size=mx.size, channels=mx.channels)
    sel = select_images(ds, clf, torch.device("cpu"), Path(args.data), split="test", subset="tp", n=args.n, seed=0)
    x = sel.images[sel.selected]
    n = x.shape[0]
    diff = mx.difference_explainer(batch_size=n)
    ig = EXPLAINERS["ig-black"](clf, batch_size=8)

    def medxgan(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        eng.clear_cache()
        maps = torch.cat([diff.explain(x[i : i + batch]).maps for i in range(0, n, batch)])
        return maps, eng.counterfactuals(x).masks  # cached: no new work

    def ig50(batch: int) -> tuple[torch.Tensor, None]:
        ig.batch_size = batch
        return ig.explain(x).maps, None

    pieces = {"medxgan_batch_all": lambda: medxgan(n), "medxgan_batch_8": lambda: medxgan(8),
              "ig50_batch_all": lambda: ig50(n), "ig50_batch_8": lambda: ig50(8)}
    diff.explain(x[:2])  # warm-up: first-call costs are not the method's
    ig.explain(x[:2])
    times: dict[str, list[float]] = {k: [] for k in pieces}
    outs: dict[str, tuple] = {}
    for r in range(args.rounds):
        for name in (list(pieces) if r % 2 == 0 else list(reversed(pieces))):
            t0 = time.perf_counter()
            outs[name] = pieces[name]()
            times[name].append(time.perf_counter() - t0)
            print(f"round {r + 1} {name}: {times[name][-1] / n:.3f} s/image", flush=True)
    per = {k: median(v) / n for k, v in times.items()}
    rows = {k: {"seconds_per_image": per[k], "x_ig50_batch_8": per[k] / per["ig50_batch_8"]} for k in per}
    diffs = {"medxgan_map_max_abs": float((outs["medxgan_batch_all"][0] - outs["medxgan_batch_8"][0]).abs().max()),
             "medxgan_mask_max_abs": float((outs["medxgan_batch_all"][1] - outs["medxgan_batch_8"][1]).abs().max()),
             "ig_map_max_abs": float((outs["ig50_batch_all"][0] - outs["ig50_batch_8"][0]).abs().max())}
    for k, v in rows.items():
        print(f"{k:20s} {v['seconds_per_image']:.3f} s/image  {v['x_ig50_batch_8']:.2f}x IG-50 (batch 8)")
    print(diffs)
    if args.name:
        print(write_result(args.name, {"machine": machine(), "gan": args.gan, "data": args.data, "n_images": n, "rounds": args.rounds,
                                       "inversion": eng.inversion, "rows": rows, "differences": diffs, "times": times}))


if __name__ == "__main__":
    main()
