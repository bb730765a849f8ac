"""Plot the training curves of one or more medXGAN runs (RUN/metrics.jsonl) into one PNG.

    python benchmarks/gan/plot_metrics.py RUN [RUN ...] --labels default paper-64 --out benchmarks/gan/figures/curves.png

Panels: D/G losses, mean D(real) / D(fake) (sigmoid), the authors' disentanglement rate, oracle agreement
(negative / positive realizations), diversity of G(z1, 0) relative to the real negatives. x = training step.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(run: str) -> list[dict]:
    rows = []
    for line in (Path(run) / "metrics.jsonl").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--labels", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    labels = args.labels or [Path(r).name for r in args.runs]
    panels = [
        ("losses", [("d_loss", "D loss", "-"), ("g_adv", "G adversarial", "--"), ("g_cls", "G classifier CE", ":")]),
        ("D outputs", [("d_real", "D(real)", "-"), ("d_fake", "D(G(z))", "--")]),
        ("disentanglement (classifier)", [("disent", "disent", "-"), ("cls_neg", "cls neg", "--"), ("cls_pos", "cls pos", ":")]),
        ("oracle agreement", [("oracle_neg", "oracle neg", "-"), ("oracle_pos", "oracle pos", "--")]),
        ("diversity / real negatives", [("diversity", "diversity", "-")]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ri, (run, lab) in enumerate(zip(args.runs, labels)):
        rows = read(run)
        steps = [r["step"] for r in rows]
        for ax, (title, keys) in zip(axes, panels):
            for key, name, ls in keys:
                ys = [r.get(key, float("nan")) for r in rows]
                ax.plot(steps, ys, ls, color=colors[ri % len(colors)], label=f"{lab}: {name}")
            ax.set_title(title)
            ax.set_xlabel("step")
    for ax, (title, _) in zip(axes, panels):
        if title not in ("losses", "D outputs"):
            ax.set_ylim(-0.02, 1.1 if "diversity" not in title else None)
        if "diversity" in title:
            ax.axhline(0.5, color="gray", lw=0.8, ls=":")
        elif "agreement" in title:
            ax.axhline(0.8, color="gray", lw=0.8, ls=":")
        elif "disent" in title:
            ax.axhline(0.9, color="gray", lw=0.8, ls=":")
        ax.legend(fontsize=6)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
