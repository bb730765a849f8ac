"""Training speed of the CycleGAN step at the reference recipe, side by side in one process: 6-block ResNet G,
ngf/ndf 32, 70x70 PatchGAN, LSGAN, pools of 50, crop 64 from 128 px phantoms, one CPU thread.

    OMP_NUM_THREADS=1 python benchmarks/translate/speed.py [--images 24 --rounds 3 --variants base,cl,bf16,...]

Variants (each a full ``CycleGANTrainer.step()`` -- sampling, both G and D updates, the EMA -- on the CPU):
base (float32, NCHW, batch 1 = our current step), cl (--channels-last), bf16 (--amp bf16: autocast of the
network forward passes), cl_bf16, compile (--compile: torch.compile, inductor), compile_bf16, b2 / b4
(--batch-size 2 / 4: more images per step; the recipe's instance norm keeps per-image statistics, but
fewer, larger updates change the optimisation, so this is a throughput figure only).

The variants run interleaved (round 1: every variant, round 2: every variant, ...) so that a shared
machine's load hits them alike; each variant first warms up (compilation happens there and is reported
separately). Figures: process CPU seconds and wall seconds per image, median over rounds, and the ratio of
base's CPU s/image to the variant's (> 1 = faster than our current step). Since our step measured equal
to the reference implementation's step (0.341 CPU s both, RESULTS.md, 2026-12-01), the ratio against base
is the ratio against the reference. Prints a markdown table and writes JSON to --json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

VARIANTS = {
    "base": {},
    "cl": {"channels_last": True},
    "bf16": {"amp": "bf16"},
    "cl_bf16": {"channels_last": True, "amp": "bf16"},
    "compile": {"compile": True},
    "compile_bf16": {"compile": True, "amp": "bf16"},
    "b2": {"batch_size": 2},
    "b4": {"batch_size": 4},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=24, help="images per variant per round (steps = images / batch)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=4, help="warm-up steps per variant (compile: compilation happens here)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from medxgan.data.phantoms.fundus import synthesize_fundus_angio
    from medxgan.translate.train import CycleGANTrainer, TranslateConfig, _load_domain, _Sampler

    names = args.variants.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="medxgan-speed-"))
    synthesize_fundus_angio(tmp, n=40, size=128, seed=0, preview=False)
    a_u8 = _load_domain(tmp / "trainA", 3, 128, "fundus")[0]
    b_u8 = _load_domain(tmp / "trainB", 1, 128, "angiograms")[0]
    dev = torch.device("cpu")
    trainers, warm = {}, {}
    for n in names:
        cfg = TranslateConfig(size=128, crop=64, ngf=32, ndf=32, blocks=6, seed=0, **VARIANTS[n]).finalise()
        torch.manual_seed(0)
        tr = CycleGANTrainer(cfg, _Sampler(a_u8, cfg), _Sampler(b_u8, cfg), dev)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(args.warmup):
            tr.step()
        warm[n] = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
        trainers[n] = tr
        print(f"[speed] {n}: warm-up {args.warmup} steps {warm[n]['wall_s']:.1f} s wall", flush=True)
    per: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for r in range(args.rounds):
        for n in names:
            tr = trainers[n]
            steps = max(1, args.images // tr.cfg.batch_size)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                tr.step()
            imgs = steps * tr.cfg.batch_size
            per[n].append(((time.process_time() - c0) / imgs, (time.perf_counter() - t0) / imgs))
        print(f"[speed] round {r + 1}/{args.rounds} done", flush=True)
    base = statistics.median(c for c, _ in per["base"]) if "base" in per else None
    rows = []
    for n in names:
        cpu = statistics.median(c for c, _ in per[n])
        wall = statistics.median(w for _, w in per[n])
        rows.append({"variant": n, "options": VARIANTS[n], "cpu_s_per_image": cpu, "wall_s_per_image": wall,
                     "ratio_vs_base_cpu": (base / cpu) if base else None, "warmup": warm[n], "rounds": per[n]})
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "git_head": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
            "machine": f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread",
            "load_end": os.getloadavg()[0], "images_per_round": args.images, "rounds": args.rounds}
    print("| variant | options | CPU s / image | wall s / image | speed-up vs base (CPU) | warm-up wall s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        opts = " ".join(f"--{k.replace('_', '-')} {v}" if not isinstance(v, bool) else f"--{k.replace('_', '-')}"
                        for k, v in r["options"].items()) or "(none)"
        print(f"| {r['variant']} | {opts} | {r['cpu_s_per_image']:.3f} | {r['wall_s_per_image']:.3f} | "
              f"{r['ratio_vs_base_cpu']:.2f} | {r['warmup']['wall_s']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
