"""Training throughput (real images per second) of medXGAN's training step against a reference loop
written the way the authors' code trains, in the same process on the same networks and data.

    python benchmarks/performance/throughput.py [--presets paper-64 fast default] [--rounds 3] [--steps 3]

Reference loop (DCGAN-tutorial style, as the authors' script): batch 32; D step: BCE on the sigmoid of
D(real) with its own backward, G(z) for uniformly drawn fake classes built with autograd recording and
detached for BCE(sigmoid(D(fake)), 0) with a second backward; G step: BCE(sigmoid(D(G(z))), 1) +
lambda * classifier CE on the real batch's labels, D's weight gradients computed and thrown away;
plain `nn.ConvTranspose2d` layers. Our step: `GANTrainer.step` of the preset (for paper-64 / fast the
same recipe; default adds projection D, R1, DiffAugment and EMA). Both start from the same weights.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_times, machine, median, write_result  # noqa: E402

from medxgan.classifiers.adapter import wrap_classifier  # noqa: E402
from medxgan.classifiers.architectures import build_architecture  # noqa: E402
from medxgan.gan.networks import ConvTranspose2d, sample_latents  # noqa: E402
from medxgan.gan.presets import get_preset  # noqa: E402
from medxgan.gan.train import GANTrainer  # noqa: E402


def plain_copy(module: nn.Module) -> nn.Module:
    """A copy whose transposed convolutions are PyTorch's own layers (the authors' networks)."""
    m = copy.deepcopy(module)
    for name, child in list(m.named_modules()):
        for cname, c in list(child.named_children()):
            if isinstance(c, ConvTranspose2d):
                plain = nn.ConvTranspose2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, bias=c.bias is not None)
                plain.load_state_dict(c.state_dict())
                setattr(child, cname, plain)
    return m


class ReferenceLoop:
    """One D step and one G step, written the way the authors' training script does it."""

    def __init__(self, G: nn.Module, D: nn.Module, classifier: nn.Module, lam: float, lr: float = 2e-4, projection: bool = False):
        self.G, self.D, self.C, self.lam, self.projection = G, D, classifier, lam, projection
        self.opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
        self.bce = nn.BCELoss()

    def _d(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.D(x, y) if self.projection else self.D(x)).view(-1)  # the paper's D ends in a sigmoid

    def step(self, real: torch.Tensor, labels: torch.Tensor) -> None:
        G, D, n = self.G, self.D, real.shape[0]
        G.train()
        D.train()
        ones, zeros = torch.ones(n, device=real.device), torch.zeros(n, device=real.device)
        D.zero_grad()
        err_real = self.bce(self._d(real, labels), ones)
        err_real.backward()
        y_fake = torch.randint(0, 2, (n,), device=real.device)
        z1, z2 = sample_latents(y_fake, G.nz1, G.nz2)
        fake = G(z1, z2)
        err_fake = self.bce(self._d(fake.detach(), y_fake), zeros)
        err_fake.backward()
        self.opt_d.step()
        G.zero_grad()
        z1, z2 = sample_latents(labels, G.nz1, G.nz2)
        fake = G(z1, z2)
        err_g = self.bce(self._d(fake, labels), ones) + self.lam * F.binary_cross_entropy_with_logits(self.C.logit(fake), labels.float())
        err_g.backward()
        self.opt_g.step()


def measure(preset_name: str, batch: int, rounds: int, steps: int, device: torch.device, channels: int = 1) -> dict:
    torch.manual_seed(0)
    preset = get_preset(preset_name, channels=channels)
    size = preset.net.size
    clf = wrap_classifier(build_architecture("paper-cnn", in_channels=channels, image_size=size), output="logits2").to(device).eval()
    clf.requires_grad_(False)
    trainer = GANTrainer(preset, clf, device)
    ref = ReferenceLoop(plain_copy(trainer.G).to(device), plain_copy(trainer.D).to(device), clf, trainer.lambda_cls,
                        projection=preset.net.d_projection)
    # ablation: the reference loop on our networks (fast transposed convolutions) separates the gain
    # of the layers from that of the step (no autograd graph for the D step's fakes, one D backward)
    ref_fast = ReferenceLoop(copy.deepcopy(trainer.G), copy.deepcopy(trainer.D), clf, trainer.lambda_cls, projection=preset.net.d_projection)
    real = torch.rand(batch, channels, size, size, device=device) * 2 - 1
    labels = torch.arange(batch, device=device) % 2
    loops = {"medxgan": trainer.step, "reference": ref.step, "reference_fast_layers": ref_fast.step}
    for _ in range(2):  # warm-up (allocator, oneDNN primitive caches)
        for fn in loops.values():
            fn(real, labels)
    times = interleaved_times({k: (lambda fn=fn: fn(real, labels)) for k, fn in loops.items()}, rounds, steps, device)
    t = {k: median(v) for k, v in times.items()}
    return {"preset": preset_name, "size": size, "batch": batch, "steps_timed": len(times["medxgan"]),
            "seconds_per_step": t, "images_per_second": {k: batch / v for k, v in t.items()},
            "speedup_vs_reference": t["reference"] / t["medxgan"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=["paper-64", "fast", "default"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3, help="steps per round and loop")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", help="results folder (default benchmarks/results)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    rows = [measure(p, args.batch, args.rounds, args.steps, dev) for p in args.presets]
    for r in rows:
        print(f"{r['preset']:9s} {r['images_per_second']['medxgan']:8.1f} img/s  reference {r['images_per_second']['reference']:8.1f} img/s"
              f"  ratio {r['speedup_vs_reference']:.2f}x", flush=True)
    print(write_result("throughput", {"machine": machine(), "device": str(dev), "results": rows}, args.out and Path(args.out)))


if __name__ == "__main__":
    main()
