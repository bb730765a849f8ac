"""Markdown table of medXGAN runs: final monitor metrics (from config.json, or the last metrics.jsonl row
of an unfinished run), steps, training minutes, preset options.

    python benchmarks/gan/summarize.py RUN [RUN ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

KEYS = ["disent", "cls_neg", "cls_pos", "oracle_neg", "oracle_pos", "diversity", "diversity_lowres"]
TARGET = {"disent": 0.9, "oracle_neg": 0.8, "oracle_pos": 0.8, "diversity": 0.5}


def options(cfg: dict) -> str:
    n, t = cfg["preset"]["net"], cfg["preset"]["train"]
    opts = [f"{n['arch']} w{n['g_width']}" if n["arch"] == "dcgan" else "paper nets"]
    opts += [name for name, on in (("proj", n["d_projection"]), ("SN", n["d_spectral_norm"]), ("BN-D", n["d_batchnorm"]),
                                   ("mbstd", n.get("d_mbstd")), (f"dropout {n['d_dropout']}", n["d_dropout"] > 0)) if on]
    if t["ema_decay"]:
        opts.append(f"EMA {t['ema_decay']}")
    if t["r1_gamma"]:
        opts.append(f"R1 {t['r1_gamma']}/{t['r1_every']}")
    if t["diffaug"]:
        opts.append(f"DiffAug {t['diffaug']}")
    opts.append(f"lr {t['lr']:g}")
    opts.append(f"lambda {cfg['lambda_cls']:g}")
    return ", ".join(opts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="GAN run folders (config.json, metrics.jsonl)")
    runs = ap.parse_args().runs
    print("| run | options | steps | train min | " + " | ".join(KEYS) + " |")
    print("|---|---|---|---|" + "---|" * len(KEYS))
    for run in runs:
        cfg = json.loads((Path(run) / "config.json").read_text())
        rows = [json.loads(l) for l in (Path(run) / "metrics.jsonl").read_text().splitlines() if l.strip()]
        m = cfg.get("metrics") or rows[-1]
        steps = cfg.get("steps_done", rows[-1]["step"])
        minutes = cfg.get("train_seconds", rows[-1].get("seconds", 0)) / 60
        cells = []
        for k in KEYS:
            v = m.get(k)
            s = "-" if v is None else f"{v:.3f}"
            if k in TARGET and v is not None:
                s += " ✓" if v >= TARGET[k] else " ✗"
            cells.append(s)
        print(f"| {Path(run).name} | {options(cfg)} | {steps} | {minutes:.1f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
