"""A/B of the EMA generator's BatchNorm statistics on one finished demo: the same GAN weights, evaluated
with the statistics the run saved (copied from the raw generator, as `medxgan train` saves them) and with standing
statistics over prior latents (optionally half of them over the encoder's codes of training scans).

    python benchmarks/gan/standing_stats_ab.py DEMO_DIR OUT [--monitor-only]

Copies DEMO_DIR's data, classifier, GAN and demo.json into OUT, replaces OUT/gan/generator.safetensors by
the same weights with standing statistics (medxgan.runtime.batchnorm, over fixed seeded latents), prints the GAN monitor's metrics of both generators, and (unless --monitor-only) re-runs the
demo's evaluation and report in OUT with the demo's own settings: OUT/eval/results.md is then directly
comparable with DEMO_DIR/eval/results.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

import torch

from medxgan.classifiers.loading import load_classifier
from medxgan.data import load_dataset
from medxgan.demo import DemoConfig, run_demo
from medxgan.gan.monitor import Monitor
from medxgan.gan.run import load_gan_run
from medxgan.gan.networks import sample_latents
from medxgan.runtime.batchnorm import standing_batchnorm_stats
from medxgan.runtime.state import save_weights


def standing_stats_latents(nz1: int, nz2: int, batches: int = 16, batch_size: int = 64, seed: int = 4321) -> list:
    """Prior latents (z1 ~ N(0, I); z2 = 0 or N(0, I) with uniform classes) from a private seeded generator."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        labels = torch.randint(0, 2, (batch_size,), generator=g)
        out.append(sample_latents(labels, nz1, nz2, generator=g))
    return out


def encoder_code_latents(E, data: Path, size: int, batches: int = 8, batch_size: int = 64, seed: int = 4321) -> list:
    """(z1, z2) as the trainer's reconstruction passes draw them: reparameterised codes of the encoder for training
    scans (z2 zeroed for negatives), from a private seeded generator."""
    images, labels = load_dataset(data, split="train", size=size).tensors()[:2]
    g = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for _ in range(batches):
            idx = torch.randint(0, images.shape[0], (batch_size,), generator=g)
            mu1, lv1, mu2, lv2 = E(images[idx])
            z1 = mu1 + torch.randn(mu1.shape, generator=g) * (0.5 * lv1).exp()
            z2 = (mu2 + torch.randn(mu2.shape, generator=g) * (0.5 * lv2).exp()) * (labels[idx] == 1).float().view(-1, 1)
            out.append((z1, z2))
    return out


def monitor_row(G, run: Path, cfg: dict) -> dict:
    mon = Monitor(load_classifier(str(run / "classifier")), cfg["nz1"], cfg["nz2"], oracle=load_classifier(str(run / "oracle")))
    m = mon.evaluate(G)
    return {k: round(m[k], 3) for k in ("disent", "cls_neg", "cls_pos", "oracle_neg", "oracle_pos", "delta")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("demo", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--monitor-only", action="store_true")
    ap.add_argument("--with-encoder-codes", action="store_true",
                    help="half the standing-statistics batches from the encoder's codes of training scans (as training sees them)")
    args = ap.parse_args()
    src, out = args.demo, args.out
    out.mkdir(parents=True, exist_ok=False)
    for name in ("data", "classifier", "gan"):
        shutil.copytree(src / name, out / name)
    shutil.copy(src / "demo.json", out / "demo.json")
    cfg = json.loads((out / "gan" / "config.json").read_text())
    gan = load_gan_run(out / "gan", load_oracle=False)
    G = gan.generator
    before = monitor_row(G, out / "gan", cfg)
    if args.with_encoder_codes:
        batches = standing_stats_latents(cfg["nz1"], cfg["nz2"], batches=8) + encoder_code_latents(gan.encoder, out / "data", cfg["size"])
    else:
        batches = standing_stats_latents(cfg["nz1"], cfg["nz2"])
    standing_batchnorm_stats(G, batches)
    after = monitor_row(G, out / "gan", cfg)
    save_weights(out / "gan" / "generator.safetensors", G.state_dict())
    print(json.dumps({"demo": str(src), "saved_statistics": before, "standing_statistics": after}), flush=True)
    if args.monitor_only:
        return
    settings = json.loads((out / "demo.json").read_text())["settings"]
    seed = settings.pop("seed")
    fields = {f.name for f in dataclasses.fields(DemoConfig)}
    conf = DemoConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items() if k in fields})
    conf = dataclasses.replace(conf, gan_overrides=tuple(tuple(o) for o in conf.gan_overrides))
    run_demo(out, config=conf, seed=seed, device="cpu")


if __name__ == "__main__":
    main()
