"""Training speed of the CycleGAN step at the reference recipe, side by side in one process: 6-block ResNet G,
ngf/ndf 32, 70x70 PatchGAN, LSGAN, pools of 50, crop 64 from 128 px phantoms, one CPU thread.

    OMP_NUM_THREADS=1 python benchmarks/translate/speed.py [--images 24 --rounds 3 --variants base,cl,bf16,...]
    OMP_NUM_THREADS=1 python benchmarks/translate/speed.py --reference GIT_DIR_OR_CHECKOUT --variants reference,base,bf16

``--reference``: a checkout (or a bare git directory, archived into a temp dir) of junyanz's
pytorch-CycleGAN-and-pix2pix, fetched for the measurement only -- none of its code is in this project. Its
``CycleGANModel`` is built in this process with the same recipe (``resnet_6blocks``, ngf/ndf 32, ``basic``
D with 3 layers, instance norm, no dropout, normal init 0.02, LSGAN, pool 50, lr 2e-4, beta1 0.5, 3 -> 1
channels, so identity loss off as in ours) and the variant ``reference`` times ``set_input`` +
``optimize_parameters()`` on crops drawn by the same in-memory sampler as ours (inside the timed region, as
in our step; the reference's own PIL/torchvision data loader is not used, which can only favour it). Only its
``models``/``util`` packages are imported; they do not import torchvision (its ``data`` package does, and
is not used), so no stand-in module is needed.

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
was the ratio against the reference; with ``--reference`` the ratio against the reference is measured
in the same run (column ``vs reference``). Prints a markdown table and writes JSON to --json.
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
    "reference": None,  # junyanz's CycleGANModel (needs --reference)
}


def _reference_model(ref: Path, tmp: Path, a_u8, b_u8, cfg):
    """Build the reference's CycleGANModel at the recipe; returns (step function, parameter count, commit)."""
    import subprocess as sp
    import sys
    from types import SimpleNamespace

    import torch

    commit = ""
    if not (ref / "models" / "cycle_gan_model.py").is_file():  # a git directory: archive what is imported
        src = tmp / "reference"
        src.mkdir()
        commit = sp.run(["git", "--git-dir", str(ref), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        tar = sp.run(["git", "--git-dir", str(ref), "archive", "HEAD", "models", "util"], capture_output=True, check=True).stdout
        sp.run(["tar", "-x", "-C", str(src)], input=tar, check=True)
        ref = src
    sys.path.insert(0, str(ref))
    from models.cycle_gan_model import CycleGANModel  # noqa: E402  (the reference, on sys.path for this run only)

    from medxgan.translate.images import Sampler as _Sampler

    opt = SimpleNamespace(isTrain=True, gpu_ids=[], checkpoints_dir=str(tmp / "ref_ckpt"), name="speed", preprocess="resize_and_crop",
                          input_nc=cfg.channels_a, output_nc=cfg.channels_b, ngf=cfg.ngf, ndf=cfg.ndf, netG=f"resnet_{cfg.blocks}blocks",
                          netD="basic", n_layers_D=3, norm="instance", no_dropout=True, init_type="normal", init_gain=0.02,
                          pool_size=cfg.pool_size, gan_mode="lsgan", lr=cfg.lr, beta1=cfg.beta1, lambda_A=cfg.lambda_cycle,
                          lambda_B=cfg.lambda_cycle, lambda_identity=0.0, direction="AtoB")
    torch.manual_seed(0)
    model = CycleGANModel(opt)
    nparams = sum(p.numel() for n in ("G_A", "G_B", "D_A", "D_B") for p in getattr(model, "net" + n).parameters())
    sa, sb = _Sampler(a_u8, cfg), _Sampler(b_u8, cfg)
    gen = torch.Generator().manual_seed(0)
    state = {"i": 0}

    def step():
        i = state["i"]
        state["i"] += 1
        ia, ib = torch.tensor([i % len(sa)]), torch.tensor([(i * 7 + 3) % len(sb)])
        model.set_input({"A": sa.batch(ia, gen), "B": sb.batch(ib, gen), "A_paths": [], "B_paths": []})
        model.optimize_parameters()

    return step, nparams, commit or str(ref)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=24, help="images per variant per round (steps = images / batch)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=4, help="warm-up steps per variant (compile: compilation happens here)")
    ap.add_argument("--variants", default=None, help="comma list (default: all; 'reference' only with --reference)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--reference", default=None, help="checkout or git directory of the reference (variant 'reference')")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from medxgan.data.phantoms.fundus import synthesize_fundus_angio
    from medxgan.translate.images import Sampler as _Sampler, load_domain as _load_domain
    from medxgan.translate.run import TranslateConfig
    from medxgan.translate.trainer import CycleGANTrainer

    names = args.variants.split(",") if args.variants else [n for n in VARIANTS if n != "reference" or args.reference]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    tmp = Path(tempfile.mkdtemp(prefix="medxgan-speed-"))
    synthesize_fundus_angio(tmp, n=40, size=128, seed=0, preview=False)
    a_u8 = _load_domain(tmp / "trainA", 3, 128, "fundus")[0]
    b_u8 = _load_domain(tmp / "trainB", 1, 128, "angiograms")[0]
    dev = torch.device("cpu")
    steppers, batch, warm, params, ref_commit = {}, {}, {}, {}, None
    for n in names:
        if n == "reference":
            if not args.reference:
                ap.error("variant 'reference' needs --reference")
            cfg = TranslateConfig(size=128, crop=64, ngf=32, ndf=32, blocks=6, seed=0).finalise()
            fn, params[n], ref_commit = _reference_model(Path(args.reference), tmp, a_u8, b_u8, cfg)
            batch[n] = 1
        else:
            cfg = TranslateConfig(size=128, crop=64, ngf=32, ndf=32, blocks=6, seed=0, **VARIANTS[n]).finalise()
            torch.manual_seed(0)
            tr = CycleGANTrainer(cfg, _Sampler(a_u8, cfg), _Sampler(b_u8, cfg), dev)
            fn, batch[n] = tr.step, cfg.batch_size
            params[n] = sum(p.numel() for net in tr.nets.values() for p in net.parameters())
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(args.warmup):
            fn()
        warm[n] = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
        steppers[n] = fn
        print(f"[speed] {n}: warm-up {args.warmup} steps {warm[n]['wall_s']:.1f} s wall", flush=True)
    per: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for r in range(args.rounds):
        for n in names:
            fn = steppers[n]
            steps = max(1, args.images // batch[n])
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                fn()
            imgs = steps * batch[n]
            per[n].append(((time.process_time() - c0) / imgs, (time.perf_counter() - t0) / imgs))
        print(f"[speed] round {r + 1}/{args.rounds} done", flush=True)
    base = statistics.median(c for c, _ in per["base"]) if "base" in per else None
    refc = statistics.median(c for c, _ in per["reference"]) if "reference" in per else None
    rows = []
    for n in names:
        cpu = statistics.median(c for c, _ in per[n])
        wall = statistics.median(w for _, w in per[n])
        rows.append({"variant": n, "options": VARIANTS[n], "cpu_s_per_image": cpu, "wall_s_per_image": wall,
                     "ratio_vs_base_cpu": (base / cpu) if base else None,
                     "ratio_vs_reference_cpu": (refc / cpu) if refc else None, "parameters": params[n],
                     "warmup": warm[n], "rounds": per[n]})
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "git_head": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
            "machine": f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread",
            "load_end": os.getloadavg()[0], "images_per_round": args.images, "rounds": args.rounds,
            "warmup_steps": args.warmup, "reference": ref_commit}
    fmt = lambda v: f"{v:.2f}" if v is not None else "-"  # noqa: E731
    print("| variant | options | parameters | CPU s / image | wall s / image | vs base (CPU) | vs reference (CPU) | warm-up wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        opts = "junyanz CycleGANModel" if r["options"] is None else " ".join(
            f"--{k.replace('_', '-')} {v}" if not isinstance(v, bool) else f"--{k.replace('_', '-')}"
            for k, v in r["options"].items()) or "(none)"
        print(f"| {r['variant']} | {opts} | {r['parameters']} | {r['cpu_s_per_image']:.3f} | {r['wall_s_per_image']:.3f} | "
              f"{fmt(r['ratio_vs_base_cpu'])} | {fmt(r['ratio_vs_reference_cpu'])} | {r['warmup']['wall_s']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
