"""Probe (issue 15 part 2): does a ReStyle-style residual encoder close the encoder's quality gap?

    OMP_NUM_THREADS=1 python benchmarks/performance/restyle_probe.py --gan RUN --out REFINER.safetensors \
        --steps 1500 --passes 2

RUN must hold an encoder from `medxgan train-encoder` (E0). A second network Er sees the scan and the current
reconstruction side by side and predicts a correction of the codes (Alaluf et al., ReStyle, ICCV 2021, with the
one-shot encoder as the first pass, as in their encoder-based-initialisation variant)::

    z_0 = E0(x),    z_{t+1} = z_t + Er([x, G(z_t)])    for t < passes

Er has E0's architecture with 2C input channels and a zero-initialised head, so before training the passes
return E0's codes exactly and training can only move away from them where the loss falls. E0, G and the
classifier are frozen. Loss per pass, summed over the passes (the codes fed to the next pass are detached, as
in ReStyle): the `train-encoder` objective -- code MSE on generated images with known codes (half the batch),
``w_pix`` MSE(G(z), x) + ``w_cls`` BCE(p(G(z)), p(x)) on real training scans (the other half).

This is a benchmark-side prototype (weights in one safetensors file, no run format); the measurement of what it
buys is ``encoder_path.py --refiner FILE --refiner-passes N`` (variant start ``iterative``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))


class IterativeEncoder(nn.Module):
    """E0 followed by ``passes`` residual corrections by Er; the call shape of
    :class:`medxgan.gan.encoder.LatentEncoder` that `invert(encoder=...)` uses: ``forward(x) -> (mu1, None, mu2, None)``.
    The generator is held outside the registered submodules (its weights are not this module's)."""

    def __init__(self, e0: nn.Module, er: nn.Module, generator: nn.Module, passes: int):
        super().__init__()
        self.e0, self.er, self.passes = e0, er, int(passes)
        self.__dict__["generator"] = generator

    def codes(self, x: torch.Tensor, passes: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """[(z1_t, z2_t) for t = 0..passes] (gradients flow into Er through the last correction of each pass only)."""
        with torch.no_grad():
            mu1, _, mu2, _ = self.e0(x)
        out = [(mu1, mu2)]
        for _ in range(self.passes if passes is None else passes):
            z1, z2 = out[-1]
            with torch.no_grad():
                rec = self.generator(z1.detach(), z2.detach())
            d1, _, d2, _ = self.er(torch.cat([x, rec], 1))
            out.append((z1.detach() + d1, z2.detach() + d2))
        return out

    def forward(self, x: torch.Tensor):
        z1, z2 = self.codes(x)[-1]
        return z1, None, z2, None


def build_refiner(net: dict[str, Any], width: int) -> nn.Module:
    from medxgan.gan.encoder import LatentEncoder

    er = LatentEncoder({**net, "channels": 2 * int(net["channels"])}, width=width)
    nn.init.zeros_(er.head.weight)
    nn.init.zeros_(er.head.bias)
    return er


def load_iterative(run: str, refiner: str, passes: int, device: torch.device) -> IterativeEncoder:
    from safetensors.torch import load_file

    from medxgan.gan.run import load_gan_run, load_trained_encoder

    plain = load_gan_run(run, device=device, load_oracle=False, attach_encoder=False)
    e0 = load_trained_encoder(run, plain.config["net"], device)
    state = load_file(refiner)
    width = int(state["features.0.weight"].shape[0])
    er = build_refiner(plain.config["net"], width)
    er.load_state_dict(state)
    return IterativeEncoder(e0, er.to(device).eval().requires_grad_(False), plain.generator, passes).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gan", required=True)
    ap.add_argument("--out", required=True, help="safetensors file for Er")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--w-pix", type=float, default=10.0)
    ap.add_argument("--w-cls", type=float, default=1.0)
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import os

    from safetensors.torch import save_file

    from medxgan.data import load_dataset
    from medxgan.gan.encoder_train import cosine_lr
    from medxgan.gan.networks import sample_latents
    from medxgan.gan.run import load_gan_run, load_trained_encoder
    from medxgan.runtime.tensors import frozen, psnr

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.manual_seed(args.seed)
    dev = torch.device("cpu")
    gan = load_gan_run(args.gan, device=dev, load_oracle=False, attach_encoder=False)
    G, clf, net = gan.generator, gan.classifier, gan.config["net"]
    e0 = load_trained_encoder(args.gan, net, dev)
    if e0 is None:
        raise SystemExit(f"{args.gan}: train the one-shot encoder first (medxgan train-encoder)")
    data = gan.config["data"]
    x_train = load_dataset(data, split="train", size=int(G.size), channels=int(G.channels)).tensors()[0].float()
    x_val = load_dataset(data, split="val", size=int(G.size), channels=int(G.channels)).tensors()[0].float()[:64]
    er = build_refiner(net, args.width).train()
    enc = IterativeEncoder(e0, er, G, args.passes)
    opt = torch.optim.Adam(er.parameters(), lr=args.lr, betas=(0.5, 0.999))
    sampler = torch.Generator().manual_seed(args.seed)
    n_real, n_gen = args.batch_size - args.batch_size // 2, args.batch_size // 2

    def val() -> list[float]:
        er.eval()
        with torch.no_grad():
            zs = enc.codes(x_val)
            out = [float(psnr(G(z1, z2), x_val).mean()) for z1, z2 in zs]
        er.train()
        return out

    print(f"val PSNR per pass before training: {[round(v, 2) for v in val()]}", flush=True)
    t0 = time.perf_counter()
    log = []
    with frozen(G, clf, e0):
        for step in range(args.steps):
            for g in opt.param_groups:
                g["lr"] = cosine_lr(step, args.steps, args.lr)
            idx = torch.randint(0, x_train.shape[0], (n_real,), generator=sampler)
            y = torch.randint(0, 2, (n_gen,), generator=sampler)
            z1g, z2g = sample_latents(y, G.nz1, G.nz2, generator=sampler)
            with torch.no_grad():
                x = torch.cat([G(z1g, z2g), x_train[idx]])
                p_real = clf.prob(x[n_gen:]).float()
            loss = torch.zeros(())
            for z1, z2 in enc.codes(x)[1:]:
                out = G(z1[n_gen:], z2[n_gen:])
                loss = loss + F.mse_loss(z1[:n_gen], z1g) + F.mse_loss(z2[:n_gen], z2g) + args.w_pix * F.mse_loss(out, x[n_gen:]) \
                    + args.w_cls * F.binary_cross_entropy_with_logits(clf.logit(out).float(), p_real)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if (step + 1) % 250 == 0 or step + 1 == args.steps:
                v = val()
                log.append({"step": step + 1, "loss": float(loss.detach()), "val_psnr_per_pass": v, "seconds": time.perf_counter() - t0})
                print(f"step {step + 1}: loss {float(loss.detach()):.4f}, val PSNR per pass {[round(a, 2) for a in v]}, {time.perf_counter() - t0:.0f} s", flush=True)
            if args.max_minutes and time.perf_counter() - t0 > 60 * args.max_minutes:
                print(f"stopped at step {step + 1} (--max-minutes)", flush=True)
                break
    save_file({k: v.contiguous() for k, v in er.state_dict().items()}, args.out)
    print(f"written {args.out}; {time.perf_counter() - t0:.0f} s, {(time.perf_counter() - t0) / max(1, step + 1):.3f} s/step", flush=True)


if __name__ == "__main__":
    main()
