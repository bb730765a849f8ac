"""Benchmark at the 20-minute CPU budget, with the checkpoint choice: train once (paired or unpaired) on the
128 px phantoms with a separate paired validation split, then evaluate the last, EMA and best weights on
the 30 paired test subjects.

    python benchmarks/translate/budget.py --paired --out WORKDIR      # paired (pix2pix-style)
    python benchmarks/translate/budget.py --out WORKDIR               # unpaired CycleGAN

Data: ``synthesize_fundus_angio(n=300, size=128, seed=0, abnormal_frac=0.3[, paired])`` (the 30 test subjects
of run.py), plus a validation split of 20 *other* subjects (seed 1, their paired test split copied to
DATA/valA + DATA/valB): "best" is selected on those, never on the test subjects.
Recipe: crop 64, ngf/ndf 32, 6 blocks, batch 1, LSGAN, transpose upsampling, one torch thread;
``--epochs``/``--epochs-decay`` set the schedule and ``--max-minutes`` (20) caps the training time.
Speed options (not library defaults): ``--amp bf16`` (autocast) and ``--compile`` (torch.compile; its
compile time, ~2 minutes on the 2-core CPU, counts as training time).
Writes RUN/budget.json (one record) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="work folder: the phantom data, the validation split and the run")
    ap.add_argument("--paired", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--epochs-decay", type=int, default=10)
    ap.add_argument("--max-minutes", type=float, default=20.0)
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--amp", choices=["off", "bf16"], default="off")
    ap.add_argument("--compile", action="store_true", help="torch.compile the networks (compile time counts as training time)")
    ap.add_argument("--tag", default="", help="suffix of the run folder")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from medxgan.data.phantoms.fundus import synthesize_fundus_angio
    from medxgan.translate import evaluate_translation, load_generator, train_cyclegan, translate
    from medxgan.translate.images import load_paired_split

    out = Path(args.out)
    data = out / ("data_paired" if args.paired else "data")
    if not (data / "valA").is_dir():
        shutil.rmtree(data, ignore_errors=True)
        synthesize_fundus_angio(data, n=300, size=128, seed=0, abnormal_frac=0.3, preview=False, paired=args.paired)
        val = out / "val_source"
        shutil.rmtree(val, ignore_errors=True)
        synthesize_fundus_angio(val, n=40, size=128, seed=1, abnormal_frac=0.3, test_frac=0.5, preview=False, paired=True)
        for s in ("A", "B"):
            shutil.copytree(val / f"test{s}", data / f"val{s}")
    run = out / f"{'paired' if args.paired else 'unpaired'}_s{args.seed}{args.tag}"
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load0 = os.getloadavg()[0]
    cpu0, t0 = time.process_time(), time.perf_counter()
    summary = train_cyclegan(data, run, device="cpu", quiet=True, size=128, crop=args.crop, ngf=32, ndf=32, blocks=6, seed=args.seed,
                             epochs=args.epochs, epochs_decay=args.epochs_decay, paired=args.paired or None,
                             max_minutes=args.max_minutes, checkpoint_every=500, amp=args.amp, compile=args.compile)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    rec = {"paired": args.paired, "seed": args.seed, "crop": args.crop, "amp": args.amp, "compile": args.compile, "schedule": [args.epochs, args.epochs_decay],
           "steps": summary["steps"], "finished": summary["finished"], "train_seconds": summary["seconds"], "wall_s": wall,
           "cpu_s": cpu, "started": started, "git_head": head, "load_start": load0, "load_end": os.getloadavg()[0],
           "machine": f"{os.cpu_count()} CPU cores ({platform.machine()}, {torch.backends.cpu.get_cpu_capability()}), torch {torch.__version__}, 1 thread", "weights": {}}
    if not summary["finished"]:
        print(json.dumps(rec))
        return 1
    _, a, _ = load_paired_split(data, "test", 128)  # the 30 paired test subjects
    outside = ((a + 1) * 127.5 <= 10).all(1, keepdim=True)
    for w in ("last", "ema", "best"):
        res = evaluate_translation(data, run, run / f"eval_{w}", device="cpu", weights=w)
        g, _ = load_generator(run, "fundus2angio", "cpu", w)
        with torch.no_grad():
            fb = translate(g, a)
        m = res["metrics"]
        rec["weights"][w] = {"used": res["weights_used"], "ssim": m["fundus2angio"]["ssim"]["mean"], "psnr": m["fundus2angio"]["psnr"]["mean"],
                             "ssim_fov": m["fundus2angio"]["ssim_fov"]["mean"], "surround": float(((fb + 1) * 127.5)[outside].mean()),
                             "a2f_ssim": m["angio2fundus"]["ssim"]["mean"], "a2f_psnr": m["angio2fundus"]["psnr"]["mean"],
                             "domain_kid_f2a": res["fidelity"]["fundus2angio"].get("domain_kid_mean")}
    (run / "budget.json").write_text(json.dumps(rec, indent=1) + "\n")
    print(json.dumps(rec, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
