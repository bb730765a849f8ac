"""Short benchmark: decoder upsampling (resize vs transpose) of the unpaired CycleGAN, same recipe as run.py
(128 px phantoms, crop 64, ngf/ndf 32, 6 blocks, batch 1, one torch thread) but a SHORT budget (default
2 + 1 epochs = 405 steps), per seed. Records fundus -> FA SSIM / PSNR on the 30 paired test subjects and
the mean of the synthesised FA outside the field of view (fundus pixels <= 10/255 in every channel; the
real angiograms are black there).

    python benchmarks/translate/upsample.py --upsample resize --seed 0 --out WORKDIR
    python benchmarks/translate/upsample.py --summarize --out WORKDIR   # table of all runs
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="work folder: the phantom data and one run folder per setting")
    ap.add_argument("--upsample", choices=["resize", "transpose"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--epochs-decay", type=int, default=1)
    ap.add_argument("--paired", action="store_true", help="paired mode on paired phantoms (same subjects in trainA/trainB)")
    ap.add_argument("--summarize", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    if args.summarize:
        rows = [json.loads(p.read_text()) for p in sorted(out.glob("*/result.json"))]
        print("| mode | upsample | seed | steps | fundus->FA SSIM | PSNR dB | FA outside FoV (/255) | train CPU s |")
        print("|---|---|---|---|---|---|---|---|")
        for r in sorted(rows, key=lambda r: (r.get("paired", False), r["upsample"], r["seed"])):
            print(f"| {'paired' if r.get('paired') else 'unpaired'} | {r['upsample']} | {r['seed']} | {r['steps']} | {r['ssim']:.3f} | {r['psnr']:.2f} | {r['surround']:.1f} | {r['cpu_s']:.0f} |")
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from medxgan.data.phantoms.fundus import synthesize_fundus_angio
    from medxgan.translate import evaluate_translation, load_generator, train_cyclegan, translate
    from medxgan.translate.images import load_paired_split

    data = out / ("data_paired" if args.paired else "data")  # same 30 test subjects either way
    if not (data / "dataset.json").is_file():
        synthesize_fundus_angio(data, n=300, size=128, seed=0, abnormal_frac=0.3, preview=False, paired=args.paired)
    run = out / f"{'paired_' if args.paired else ''}{args.upsample}_s{args.seed}"
    cpu0 = time.process_time()
    summary = train_cyclegan(data, run, device="cpu", quiet=True, size=128, crop=64, ngf=32, ndf=32, blocks=6, seed=args.seed,
                             epochs=args.epochs, epochs_decay=args.epochs_decay, upsample=args.upsample,
                             paired=args.paired or None)
    cpu = time.process_time() - cpu0
    res = evaluate_translation(data, run, run / "eval", device="cpu")
    g, _ = load_generator(run, "fundus2angio", "cpu")
    _, a, _ = load_paired_split(data, "test", 128)  # the 30 paired test subjects
    with torch.no_grad():
        fb = translate(g, a)
    outside = ((a + 1) * 127.5 <= 10).all(1, keepdim=True)
    surround = float(((fb + 1) * 127.5)[outside].mean())
    f2a = res["metrics"]["fundus2angio"]
    rec = {"paired": args.paired, "upsample": args.upsample, "seed": args.seed, "steps": summary["steps"], "ssim": f2a["ssim"]["mean"],
           "psnr": f2a["psnr"]["mean"], "surround": surround, "cpu_s": cpu, "n_test": res["n_pairs"]}
    (run / "result.json").write_text(json.dumps(rec, indent=1) + "\n")
    print(json.dumps(rec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
