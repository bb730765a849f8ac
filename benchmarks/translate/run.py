"""Benchmark: fundus -> angiogram CycleGAN on 128 px phantom retinas, CPU only, <= 20 minutes of training.

    python benchmarks/translate/run.py --out WORKDIR [--epochs N --epochs-decay M ...]

Steps: synthesise the phantom pairs (unpaired trainA/trainB, paired testA/testB) -> train (one torch
thread, so the benchmark does not starve other work on a shared machine) -> evaluate on the paired test
images (SSIM / PSNR / MAE both directions, cycle error) -> write benchmarks/translate/results.json and
RESULTS.md, copy the side-by-side figure to docs/images/fundus-angio-side-by-side.png.

Wall time and process CPU time of the training are both recorded, with the load average before and
after, because the machine may be shared: wall time alone says little under contention.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# the configuration that fits 20 minutes on 2 shared CPU cores (see RESULTS.md)
DEFAULTS = dict(size=128, crop=64, ngf=32, ndf=32, blocks=6, epochs=11, epochs_decay=5, seed=0)
TARGET = {"ssim": 0.75, "psnr": 20.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="work folder: the phantom data and the run are written here")
    ap.add_argument("--n", type=int, default=300, help="phantom subjects (10%% paired test, the rest split A/B)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-write", action="store_true", help="do not write RESULTS.md / results.json / the docs figure")
    for k, v in DEFAULTS.items():
        ap.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=v)
    args = ap.parse_args()

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from medxgan.data.phantoms.fundus import synthesize_fundus_angio
    from medxgan.translate import evaluate_translation, train_cyclegan

    out = Path(args.out)
    data, run = out / "data", out / "run"
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    if (data / "dataset.json").is_file() and json.loads((data / "dataset.json").read_text()).get("n") == args.n:
        print(f"[bench] reusing {data}")
    else:
        shutil.rmtree(data, ignore_errors=True)
        synthesize_fundus_angio(data, n=args.n, size=args.size, seed=0, abnormal_frac=0.3)
    synth_s = time.perf_counter() - t0
    shutil.rmtree(run, ignore_errors=True)

    cfg = {k: getattr(args, k) for k in DEFAULTS}
    load_before = os.getloadavg()
    cpu0, w0 = time.process_time(), time.perf_counter()
    summary = train_cyclegan(data, run, device="cpu", **cfg)
    train_wall, train_cpu = time.perf_counter() - w0, time.process_time() - cpu0
    load_after = os.getloadavg()
    res = evaluate_translation(data, run, out / "eval", device="cpu")
    m = res["metrics"]
    f2a = m["fundus2angio"]
    met = f2a["ssim"]["mean"] >= TARGET["ssim"] and f2a["psnr"]["mean"] >= TARGET["psnr"]

    record = {
        "date_utc": started.strftime("%Y-%m-%d %H:%M"),
        "command": " ".join([sys.executable.split("/")[-1], "benchmarks/translate/run.py", *sys.argv[1:]]),
        "machine": f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), no GPU, torch {torch.__version__}, "
                   f"{args.threads} torch thread(s)",
        "git_commit": _git_head(),
        "config": cfg, "n_subjects": args.n, "steps": summary["steps"],
        "synth_seconds": round(synth_s, 1), "train_wall_seconds": round(train_wall, 1),
        "train_cpu_seconds": round(train_cpu, 1), "loadavg_before": load_before, "loadavg_after": load_after,
        "metrics": m, "skipped": res["skipped"], "n_test_pairs": res["n_pairs"],
        "target": TARGET, "target_met": met, "within_20_minutes": train_wall <= 1200,
    }
    print(json.dumps({k: v for k, v in record.items() if k != "metrics"}, indent=1))
    print(f"fundus->FA SSIM {f2a['ssim']['mean']:.3f} PSNR {f2a['psnr']['mean']:.2f} dB; target met: {met}")
    if not args.no_write:
        (HERE / "results.json").write_text(json.dumps(record, indent=1) + "\n")
        (REPO / "docs" / "images").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "eval" / "side_by_side.png", REPO / "docs" / "images" / "fundus-angio-side-by-side.png")
        print(f"[bench] wrote {HERE / 'results.json'} and docs/images/fundus-angio-side-by-side.png")
    return 0


def _git_head() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


if __name__ == "__main__":
    raise SystemExit(main())
