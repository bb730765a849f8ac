"""Cost of one medXGAN training step (one D + one G update, batch 32, 64 x 64, 1 channel) per preset, on CPU.

The presets are timed interleaved (round-robin, several rounds, median per preset) in one process so
that the ratio to paper-64 is fair on a machine shared with other jobs. The classifier in the loop is
the built-in paper-cnn (random weights: its cost, not its accuracy, matters here).

    python benchmarks/gan/step_cost.py [--threads 2] [--rounds 5] [--steps 3] [--out benchmarks/gan/step_cost.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from medxgan.classifiers import build_architecture, wrap_classifier
from medxgan.gan import GANTrainer, count_parameters, get_preset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="steps per timing")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--presets", nargs="+", default=["paper-64", "fast", "default", "anchored"])
    ap.add_argument("--out", default=str(Path(__file__).with_name("step_cost.json")))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    clf = wrap_classifier(build_architecture("paper-cnn", in_channels=1, image_size=64), output="logits2")
    real = torch.rand(args.batch_size, 1, 64, 64) * 2 - 1
    labels = torch.arange(args.batch_size) % 2
    trainers = {p: GANTrainer(get_preset(p, channels=1), clf) for p in args.presets}
    for t in trainers.values():  # warm-up
        t.step(real, labels)
    times: dict[str, list[float]] = {p: [] for p in args.presets}
    for _ in range(args.rounds):
        for p, t in trainers.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                t.step(real, labels)
            times[p].append((time.perf_counter() - t0) / args.steps)
    base = statistics.median(times["paper-64"]) if "paper-64" in times else None
    rows = []
    for p, ts in times.items():
        med = statistics.median(ts)
        tr = trainers[p]
        rows.append({"preset": p, "seconds_per_step": round(med, 4), "min": round(min(ts), 4), "max": round(max(ts), 4),
                     "speedup_vs_paper64": round(base / med, 2) if base else None,
                     "G_params": count_parameters(tr.G), "D_params": count_parameters(tr.D)})
        print(f"{p:10s} {med * 1000:8.1f} ms/step  (min {min(ts) * 1000:.1f}, max {max(ts) * 1000:.1f})  "
              f"x{rows[-1]['speedup_vs_paper64']} cheaper than paper-64  G {rows[-1]['G_params']:,} D {rows[-1]['D_params']:,}")
    result = {"threads": args.threads, "batch_size": args.batch_size, "rounds": args.rounds, "steps": args.steps,
              "torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
