"""GPU check: is medXGAN training and inversion correct on a CUDA GPU, and how fast is it?

    benchmarks/gpu_check.sh                 # one CUDA GPU, PyTorch, this repo; no network; <= 5 minutes
    benchmarks/gpu_check.sh --cpu-smoke     # the whole script on the CPU with tiny sizes (< 60 s)

Everything is built in memory: brain phantoms from medxgan.data.phantoms (correctness), random tensors
(throughput), randomly initialised networks and classifiers (no trained weights needed).

1. Correctness (printed as PASS/FAIL; the exit status is 1 when one fails)

   a. One GANTrainer step, preset ``default`` at 64 px with R1 on that step (r1_every=1), fixed seed,
      amp off, GPU vs CPU from identical weights and batch. Every random draw of a step comes from the
      CPU generator, so both devices see the same fake classes, latents and augmentation offsets.
      TF32 is switched off for this check (true float32), so the devices differ only in the order of
      float sums (and cuDNN's choice of algorithm). Tolerances: (i) gradients (recovered from Adam's
      first moment) agree per tensor to ||g_gpu - g_cpu|| / ||g_cpu|| <= 1e-3 (float32 reduction-order
      noise is ~1e-6; Winograd/FFT convolution algorithms ~1e-5); (ii) max |parameter
      difference| <= 1e-3: Adam's first step moves every weight by about lr = 1e-3 whatever the size of
      its gradient, so a larger difference means some weight moved the wrong way -- only weights whose
      gradient is within noise of zero may differ, and then by a fraction of a step.
   b. One inversion (50 steps, 8 phantom images, 2 restarts), GPU vs CPU: PSNR per image within 0.1 dB.
   c. The same with ``--amp bf16`` against float32, both on the GPU. bfloat16 keeps ~3 significant
      digits, but BatchNorm's backward subtracts the gradient's projections on the batch mean and on
      the normalised input, and at random initialisation what remains is small: the generator's
      gradients differ by ~20% in norm (measured on the CPU, 64 px; the discriminator's by ~3%).
      Tolerances: per-tensor gradient norm difference <= 0.5; mean |parameter difference| <= 0.25 lr
      (what matters for training: Adam's steps agree on average; a few small gradients change sign
      and move their weight the other way, by up to ~2 lr); PSNR within 0.5 dB.

2. Throughput: training images/s (global batch x steps / second, after warm-up) at 64 px (paper-64,
   fast, default) and 128 px (paper-128) for fp32 (PyTorch defaults, i.e. TF32 convolutions on),
   bf16, bf16 + channels_last, and bf16 + channels_last + torch.compile (default preset only, while the
   time budget allows); inversion images/s (400 steps x 2 restarts, extrapolated from 50 steps).

3. A Markdown table at the end, also written with the raw numbers to
   benchmarks/results/gpu_check_<hostname>.{json,md} (``_cpu-smoke`` added in smoke mode).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # works without `pip install -e .` too
    sys.path.insert(0, str(ROOT / "src"))

from medxgan.classifiers import PaperCNN, SmallResNet, wrap_classifier  # noqa: E402
from medxgan.data.phantoms import render_brain  # noqa: E402
from medxgan.gan import build_generator, get_preset  # noqa: E402
from medxgan.gan.inversion import invert  # noqa: E402
from medxgan.gan.train import GANTrainer  # noqa: E402
from medxgan.runtime.seeding import seed_everything  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TOL = {"grad_rel": 1e-3, "param_max": 1e-3, "psnr_db": 0.1,
       "bf16_grad_rel": 0.5, "bf16_param_mean_lr": 0.25, "bf16_psnr_db": 0.5}


# ---- inputs ---------------------------------------------------------------------------------------
def phantoms(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n brain phantoms (half positive) as N x 1 x size x size in [-1, 1], labels."""
    imgs, labels = [], []
    for i in range(n):
        img, _, _ = render_brain(np.random.default_rng([seed, i]), size, positive=bool(i % 2))
        imgs.append(torch.from_numpy(np.asarray(img, np.float32)))
        labels.append(i % 2)
    return torch.stack(imgs).unsqueeze(1) * 2 - 1, torch.tensor(labels)


def classifier(size: int, seed: int = 0) -> nn.Module:
    """A randomly initialised built-in classifier behind the adapter (eval mode)."""
    torch.manual_seed(seed)
    net = PaperCNN(1, 64) if size == 64 else SmallResNet(1, size, width=16)
    return wrap_classifier(net, output="logits2").eval()


def preset(name: str, size: int, smoke: bool, **over: Any):
    if smoke and name in ("default", "fast", "anchored"):  # tiny DCGAN nets at 32 px
        return get_preset(name, channels=1, size=32, g_width=4, d_width=4, nz1=8, nz2=4, **over)
    return get_preset(name, channels=1, **over)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# ---- correctness ----------------------------------------------------------------------------------
def gan_step(p, x: torch.Tensor, y: torch.Tensor, init: dict[str, Any], dev: torch.device, amp: str) -> dict[str, Any]:
    """One trainer step from the state `init`; returns the new weights and the gradients (CPU)."""
    clf = classifier(x.shape[-1]).to(dev)
    seed_everything(0)
    t = GANTrainer(p, clf, dev, amp=amp)
    t.load_state_dict(init)
    seed_everything(1)
    stats = t.step(x.to(dev), y.to(dev))
    st = t.state_dict()
    out: dict[str, Any] = {"stats": stats, "lr": t.opts.lr, "params": {}, "grads": {}}
    for part, net, opt in (("G", t.G, t.opt_g), ("D", t.D, t.opt_d)):
        for k, v in st[part].items():
            out["params"][f"{part}.{k}"] = v.detach().float().cpu()
        b1 = opt.param_groups[0]["betas"][0]
        for name, p_ in net.named_parameters():
            out["grads"][f"{part}.{name}"] = (opt.state[p_]["exp_avg"] / (1 - b1)).float().cpu()  # m_1 = (1 - b1) g
    return out


def compare_steps(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    grad_rel = max(float((a["grads"][k] - b["grads"][k]).norm() / b["grads"][k].norm().clamp_min(1e-12)) for k in b["grads"])
    diffs = torch.cat([(a["params"][k] - b["params"][k]).abs().flatten() for k in b["params"] if b["params"][k].is_floating_point()])
    return {"grad_rel": grad_rel, "param_max": float(diffs.max()), "param_mean_lr": float(diffs.mean()) / b["lr"]}


def calibrated_generator(p, dev: torch.device, seed: int = 0) -> nn.Module:
    """A random generator with BatchNorm running statistics from random codes (eval mode), as inversion needs."""
    torch.manual_seed(seed)
    g = build_generator(p.net).to(dev)
    for m in g.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    g.train()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(4):
            g(torch.randn(64, g.nz1, generator=gen).to(dev), torch.randn(64, g.nz2, generator=gen).to(dev))
    return g.eval()


def inversion_psnr(p, x: torch.Tensor, dev: torch.device, amp: str, steps: int = 50) -> torch.Tensor:
    g = calibrated_generator(p, torch.device("cpu")).to(dev)
    clf = classifier(x.shape[-1]).to(dev)
    return invert(g, clf, x.to(dev), steps=steps, amp=amp, seed=0).psnr


def correctness(dev: torch.device, smoke: bool) -> list[dict[str, Any]]:
    size = 32 if smoke else 64
    p = preset("default", size, smoke, r1_every=1)  # R1 (double backward) on the checked step
    x, y = phantoms(8, size)
    seed_everything(0)
    init = GANTrainer(p, classifier(size), "cpu").state_dict()
    ref_dev = torch.device("cpu")
    rows = []
    # a. GPU vs CPU, amp off, true float32
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        cpu = gan_step(p, x, y, init, ref_dev, "off")
        gpu = gan_step(p, x, y, init, dev, "off")
        c = compare_steps(gpu, cpu)
        rows.append(_row("GAN step GPU vs CPU (fp32)", "max rel. gradient norm diff", c["grad_rel"], TOL["grad_rel"]))
        rows.append(_row("GAN step GPU vs CPU (fp32)", "max abs parameter diff", c["param_max"], TOL["param_max"]))
        # b. inversion
        p_cpu = inversion_psnr(p, x, ref_dev, "off")
        p_gpu = inversion_psnr(p, x, dev, "off")
        rows.append(_row("inversion GPU vs CPU (fp32)", f"max abs PSNR diff, dB (CPU mean {float(p_cpu.mean()):.2f} dB)",
                         float((p_gpu - p_cpu).abs().max()), TOL["psnr_db"]))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    # c. bf16 vs fp32 on the device (fp32 with PyTorch's defaults)
    ref = gan_step(p, x, y, init, dev, "off")
    low = gan_step(p, x, y, init, dev, "bf16")
    c = compare_steps(low, ref)
    rows.append(_row("GAN step bf16 vs fp32", "max rel. gradient norm diff", c["grad_rel"], TOL["bf16_grad_rel"]))
    rows.append(_row("GAN step bf16 vs fp32", "mean abs parameter diff / lr", c["param_mean_lr"], TOL["bf16_param_mean_lr"]))
    p32, p16 = inversion_psnr(p, x, dev, "off"), inversion_psnr(p, x, dev, "bf16")
    rows.append(_row("inversion bf16 vs fp32", "max abs PSNR diff, dB", float((p16 - p32).abs().max()), TOL["bf16_psnr_db"]))
    return rows


def _row(check: str, metric: str, value: float, tol: float) -> dict[str, Any]:
    ok = bool(np.isfinite(value) and value <= tol)
    print(f"  {'PASS' if ok else 'FAIL'}  {check}: {metric} = {value:.3g} (tolerance {tol:g})", flush=True)
    return {"check": check, "metric": metric, "value": value, "tolerance": tol, "pass": ok}


# ---- throughput -----------------------------------------------------------------------------------
def timed(fn: Callable[[], None], dev: torch.device, seconds: float, warmup: int, max_iters: int) -> tuple[int, float]:
    for _ in range(warmup):
        fn()
    sync(dev)
    t0, n = time.perf_counter(), 0
    while n < max_iters and (n == 0 or time.perf_counter() - t0 < seconds):
        fn()
        n += 1
        if n % 5 == 0:
            sync(dev)
    sync(dev)
    return n, time.perf_counter() - t0


def train_throughput(name: str, size: int, batch: int, mode: str, dev: torch.device, smoke: bool, seconds: float) -> dict[str, Any]:
    amp = "off" if mode == "fp32" else "bf16"
    p = preset(name, size, smoke)
    x = torch.rand(batch, 1, p.net.size, p.net.size, device=dev) * 2 - 1
    y = (torch.arange(batch, device=dev) % 2)
    seed_everything(0)
    t = GANTrainer(p, classifier(p.net.size).to(dev), dev, amp=amp, channels_last="cl" in mode, compile="compile" in mode)
    t0 = time.perf_counter()
    t.step(x, y)  # first step: cuDNN autotuning / compilation
    sync(dev)
    first = time.perf_counter() - t0
    n, secs = timed(lambda: t.step(x, y), dev, seconds, warmup=2, max_iters=200)
    return {"images_per_s": batch * n / secs, "ms_per_step": 1000 * secs / n, "steps": n, "first_step_s": first}


def inversion_throughput(size: int, n_img: int, amp: str, dev: torch.device, smoke: bool, steps: int = 50) -> dict[str, Any]:
    p = preset("default", size, smoke)
    g = calibrated_generator(p, torch.device("cpu")).to(dev)
    clf = classifier(p.net.size).to(dev)
    x = torch.rand(n_img, 1, p.net.size, p.net.size, device=dev) * 2 - 1
    invert(g, clf, x[:2], steps=2, amp=amp)  # warm-up
    sync(dev)
    t0 = time.perf_counter()
    invert(g, clf, x, steps=steps, amp=amp, early_stop_patience=None)
    sync(dev)
    secs = time.perf_counter() - t0
    return {"images_per_s": n_img / (secs * 400 / steps), "seconds_50_steps": secs}


# ---- main -----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-smoke", action="store_true", help="run everything on the CPU with tiny sizes (< 60 s), to test this script")
    ap.add_argument("--budget-s", type=float, default=None, help="time budget for the whole script (default 280 s; smoke 50 s)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON and Markdown results")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurement")
    args = ap.parse_args(argv)
    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        print("no CUDA GPU: nothing to check")
        return 0
    t_start = time.perf_counter()
    budget = args.budget_s or (50.0 if smoke else 280.0)
    left = lambda: budget - (time.perf_counter() - t_start)  # noqa: E731
    dev = torch.device("cpu" if smoke else "cuda")
    if smoke:
        torch.set_num_threads(1)
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "host": platform.node(),
        "device": "cpu (smoke test: the 'GPU' side is the CPU)" if smoke else torch.cuda.get_device_name(0),
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(), "smoke": smoke,
    }
    print(f"[gpu_check] {info['device']}, torch {info['torch']}, CUDA {info['cuda']}", flush=True)

    print("[gpu_check] correctness", flush=True)
    checks = correctness(dev, smoke)

    print("[gpu_check] training throughput", flush=True)
    seconds = 0.3 if smoke else 3.0
    cases = [("paper-64", 64, 4 if smoke else 64), ("fast", 64, 8 if smoke else 128), ("default", 64, 8 if smoke else 128),
             ("paper-128", 128, 2 if smoke else 32)]
    modes = ["fp32", "bf16", "bf16+cl"]
    train: list[dict[str, Any]] = []
    for name, size, batch in cases:
        for mode in modes + (["bf16+cl+compile"] if name == "default" and not args.no_compile else []):
            rec: dict[str, Any] = {"preset": name, "size": 32 if smoke and name in ("fast", "default") else size, "batch": batch, "mode": mode}
            need = (150 if not smoke else 40) if "compile" in mode else (15 if not smoke else 2)
            if left() < need:
                rec["skipped"] = "time budget"
            else:
                try:
                    rec.update(train_throughput(name, size, batch, mode, dev, smoke, seconds))
                except Exception as exc:  # a mode that does not work here is reported, not fatal
                    rec["failed"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            train.append(rec)
            print("  " + json.dumps(rec), flush=True)

    print("[gpu_check] inversion throughput", flush=True)
    inv: list[dict[str, Any]] = []
    for amp in ("off", "bf16"):
        rec = {"size": 32 if smoke else 64, "images": 8 if smoke else 64, "amp": amp}
        if left() < (2 if smoke else 10):
            rec["skipped"] = "time budget"
        else:
            rec.update(inversion_throughput(64, rec["images"], amp, dev, smoke, steps=10 if smoke else 50))
        inv.append(rec)
        print("  " + json.dumps(rec), flush=True)

    info["seconds"] = round(time.perf_counter() - t_start, 1)
    result = {"machine": info, "tolerances": TOL, "correctness": checks, "train": train, "inversion": inv}
    md = markdown(result)
    print("\n" + md)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu_check_{platform.node() or 'host'}" + ("_cpu-smoke" if smoke else "")
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(md)
    print(f"[gpu_check] {info['seconds']} s; results in {args.out / stem}.json / .md")
    return 0 if all(c["pass"] for c in checks) else 1


def _cell(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return "-"
    if "images_per_s" in rec:
        return f"{rec['images_per_s']:.0f}" if rec["images_per_s"] >= 10 else f"{rec['images_per_s']:.2f}"
    return rec.get("skipped") or ("failed" if "failed" in rec else "-")


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [f"# GPU check: {m['device']}", "",
             f"{m['date']}, host {m['host']}, torch {m['torch']}, CUDA {m['cuda']}, {m['seconds']} s", "",
             "## Correctness", "", "| check | metric | value | tolerance | result |", "|---|---|---|---|---|"]
    for c in r["correctness"]:
        lines.append(f"| {c['check']} | {c['metric']} | {c['value']:.3g} | {c['tolerance']:g} | {'PASS' if c['pass'] else 'FAIL'} |")
    modes = ["fp32", "bf16", "bf16+cl", "bf16+cl+compile"]
    lines += ["", "## Training throughput (images/s; cl = channels_last)", "",
              "| preset | px | batch | " + " | ".join(modes) + " |", "|---|---|---|" + "---|" * len(modes)]
    seen = []
    for rec in r["train"]:
        key = (rec["preset"], rec["size"], rec["batch"])
        if key in seen:
            continue
        seen.append(key)
        cells = [_cell(next((q for q in r["train"] if (q["preset"], q["size"], q["batch"]) == key and q["mode"] == mo), None)) for mo in modes]
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    failed = [f"{q['preset']} {q['mode']}: {q['failed']}" for q in r["train"] if "failed" in q]
    if failed:
        lines += [""] + [f"- failed: {f}" for f in failed]
    lines += ["", "## Inversion throughput (images/s for 400 steps x 2 restarts, from a timed run of fewer steps)", "",
              "| px | images | fp32 | bf16 |", "|---|---|---|---|"]
    by = {q["amp"]: q for q in r["inversion"]}
    q0 = r["inversion"][0]
    lines.append(f"| {q0['size']} | {q0['images']} | {_cell(by.get('off'))} | {_cell(by.get('bf16'))} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
