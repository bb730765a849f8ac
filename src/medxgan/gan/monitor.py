"""What a medXGAN run is judged by, beyond its losses.

Losses and the classifier's own verdict can look perfect while the generator has failed: a prototype
of the faithful recipe reached the authors' disentanglement rate while producing nearly one anatomy
for every z1, with "positives" that differed from negatives only by a faint texture that fools the
classifier. So the monitor measures, on a fixed set of latents (drawn once from its own seeded
torch.Generator; the training random stream is never touched):

``disent``      the authors' check: fraction of the 256 z1 for which the classifier calls G(z1, 0)
                negative and G(z1, e_k) positive for each of 3 z2 draws e_k (fixed per z1).
``cls_neg``     fraction of G(z1, 0) the classifier calls negative (p < 0.5).
``cls_pos``     fraction of all G(z1, e_k) the classifier calls positive.
``oracle_neg``  the same as cls_neg judged by the oracle: a second classifier trained independently
``oracle_pos``  (another seed and architecture) and never used to train the GAN. Adversarial
                "classifier-only" features do not transfer to it; a real lesion does.
``diversity``   mean pairwise L1 distance per pixel (mean |a - b| over C x H x W, images in [-1, 1])
                between G(z1_i, 0) for 128 different z1, divided by the same for 128 real negatives:
                1.0 = as diverse as the data, ~0 = collapsed to one image.
``diversity_lowres``  the same after 4x4 average pooling (16 x 16 for 64 px images): anatomy rather than
                pixel noise (real scans carry independent noise, which alone makes two real images differ
                per pixel; a generator that renders smooth images scores lower on ``diversity`` for that
                reason). Diagnostic only; ``diversity`` is the gated number.
``delta``       mean |G(z1, e) - G(z1, 0)| per pixel: how much a positive realization changes the image.

The generator is evaluated in eval mode (as it is used for explanations) and put back in its mode.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from medxgan.runtime.atomic import atomic_save_image

N_Z1 = 256
N_Z2 = 3
N_DIVERSITY = 128


def mean_pairwise_l1(x: torch.Tensor) -> float:
    """Mean over pairs i != j of mean_pixels |x_i - x_j| (x: N x C x H x W)."""
    n = x.shape[0]
    if n < 2:
        return float("nan")
    flat = x.reshape(n, -1).float()
    d = torch.cdist(flat, flat, p=1) / flat.shape[1]
    return float(d.sum() / (n * (n - 1)))


def _lowres(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.avg_pool2d(x.float(), 4) if min(x.shape[-2:]) >= 8 else x.float()


def _batched(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor, batch: int = 128) -> torch.Tensor:
    out = [fn(*(t[i : i + batch] for t in tensors)) for i in range(0, tensors[0].shape[0], batch)]
    return torch.cat(out)


class Monitor:
    """Fixed latents + reference statistics; `evaluate(G)` -> dict of the metrics above."""

    def __init__(
        self,
        classifier: nn.Module,
        nz1: int,
        nz2: int,
        real_negatives: torch.Tensor | None = None,
        oracle: nn.Module | None = None,
        n_z1: int = N_Z1,
        n_z2: int = N_Z2,
        n_diversity: int = N_DIVERSITY,
        seed: int = 1234,
    ):
        self.classifier = classifier
        self.oracle = oracle
        g = torch.Generator().manual_seed(seed)
        self.z1 = torch.randn(n_z1, nz1, generator=g)
        self.z2 = torch.randn(n_z1, n_z2, nz2, generator=g)
        self.n_diversity = min(n_diversity, n_z1)
        self.real_diversity = self.real_diversity_lowres = float("nan")
        if real_negatives is not None and real_negatives.shape[0] >= 2:
            idx = torch.randperm(real_negatives.shape[0], generator=g)[:n_diversity]
            self.real_diversity = mean_pairwise_l1(real_negatives[idx].cpu())
            self.real_diversity_lowres = mean_pairwise_l1(_lowres(real_negatives[idx].cpu()))

    @torch.no_grad()
    def generate(self, G: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """neg: n_z1 x C x H x W = G(z1, 0); pos: n_z1 x n_z2 x C x H x W = G(z1, e_k). G in eval mode."""
        was_training = G.training
        G.eval()
        try:
            dev = next(G.parameters()).device
            z1 = self.z1.to(dev)
            neg = _batched(lambda a: G(a, torch.zeros(a.shape[0], self.z2.shape[2], device=dev)), z1)
            n, k, nz2 = self.z2.shape
            z1_rep = z1.repeat_interleave(k, dim=0)
            pos = _batched(G, z1_rep, self.z2.reshape(n * k, nz2).to(dev))
            pos = pos.view(n, k, *pos.shape[1:])
        finally:
            G.train(was_training)
        return neg, pos

    @torch.no_grad()
    def evaluate(self, G: nn.Module) -> dict[str, float]:
        neg, pos = self.generate(G)
        n, k = pos.shape[:2]
        pos_flat = pos.reshape(n * k, *pos.shape[2:])
        p_neg = _batched(self.classifier.prob, neg)
        p_pos = _batched(self.classifier.prob, pos_flat).view(n, k)
        ok = (p_neg < 0.5) & (p_pos > 0.5).all(dim=1)
        out: dict[str, float] = {
            "disent": float(ok.float().mean()),
            "cls_neg": float((p_neg < 0.5).float().mean()),
            "cls_pos": float((p_pos > 0.5).float().mean()),
        }
        if self.oracle is not None:
            o_neg = _batched(self.oracle.prob, neg)
            o_pos = _batched(self.oracle.prob, pos_flat)
            out["oracle_neg"] = float((o_neg < 0.5).float().mean())
            out["oracle_pos"] = float((o_pos > 0.5).float().mean())
        gen_div = mean_pairwise_l1(neg[: self.n_diversity].cpu())
        out["diversity"] = gen_div / self.real_diversity if self.real_diversity > 0 else float("nan")
        gen_low = mean_pairwise_l1(_lowres(neg[: self.n_diversity].cpu()))
        out["diversity_lowres"] = gen_low / self.real_diversity_lowres if self.real_diversity_lowres > 0 else float("nan")
        out["delta"] = float((pos - neg.unsqueeze(1)).abs().mean())
        return out

    @torch.no_grad()
    def sample_grid(self, G: nn.Module, path: str | os.PathLike, rows: int = 8, title: str = "") -> None:
        """PNG: one row per fixed z1, columns G(z1, 0) | G(z1, e1) | G(z1, e2) | G(z1, e3), with the
        classifier's p(pos) written under each tile."""
        sub = Monitor.__new__(Monitor)
        sub.__dict__.update(self.__dict__)
        sub.z1, sub.z2 = self.z1[:rows], self.z2[:rows]
        neg, pos = sub.generate(G)
        tiles = torch.cat([neg.unsqueeze(1), pos], dim=1)  # rows x (1 + k) x C x H x W
        r, c = tiles.shape[:2]
        probs = _batched(self.classifier.prob, tiles.reshape(r * c, *tiles.shape[2:])).view(r, c)
        save_image_grid(path, tiles.cpu(), [[f"p={float(p):.2f}" for p in row] for row in probs.cpu()],
                        title=title, col_titles=["z2 = 0"] + [f"z2 = e{i + 1}" for i in range(c - 1)])


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """C x H x W in [-1, 1] -> H x W (C = 1) or H x W x 3 uint8."""
    a = ((img.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()
    return a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))


def save_image_grid(
    path: str | os.PathLike,
    tiles: torch.Tensor,
    labels: list[list[str]] | None = None,
    title: str = "",
    col_titles: list[str] | None = None,
) -> None:
    """tiles: rows x cols x C x H x W in [-1, 1]; labels[r][c] is written under each tile. Atomic PNG."""
    from PIL import Image, ImageDraw

    rows, cols, _, h, w = tiles.shape
    scale = max(1, 96 // max(h, w))
    th, tw = h * scale, w * scale
    pad, text_h = 4, 12
    top = (text_h if title else 0) + (text_h if col_titles else 0) + pad
    canvas = Image.new("RGB", (cols * (tw + pad) + pad, top + rows * (th + text_h + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    y0 = pad
    if title:
        draw.text((pad, 0), title, fill="black")
        y0 += text_h
    if col_titles:
        for j, t in enumerate(col_titles):
            draw.text((pad + j * (tw + pad), y0 - pad + 2), t, fill="black")
    for i in range(rows):
        for j in range(cols):
            im = Image.fromarray(to_uint8(tiles[i, j])).convert("RGB").resize((tw, th), Image.NEAREST)
            x, y = pad + j * (tw + pad), top + i * (th + text_h + pad)
            canvas.paste(im, (x, y))
            if labels is not None:
                draw.text((x, y + th), labels[i][j], fill="black")
    atomic_save_image(path, canvas)


def summarize(metrics: dict[str, Any]) -> str:
    keys = ["disent", "oracle_neg", "oracle_pos", "diversity"]
    return " ".join(f"{k}={metrics[k]:.3f}" for k in keys if k in metrics)
