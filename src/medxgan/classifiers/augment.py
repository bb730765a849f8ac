"""Batch augmentation on tensors (so it runs on the GPU too): flips, a small random affine, intensity."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment_batch(
    x: torch.Tensor,
    gen: torch.Generator,
    flips: bool = True,
    max_rotation_deg: float = 10.0,
    max_translate: float = 0.05,
    scale_range: tuple[float, float] = (0.92, 1.08),
    gain_range: tuple[float, float] = (0.9, 1.1),
    max_bias: float = 0.05,
) -> torch.Tensor:
    """Random horizontal/vertical flips, rotation/scale/translation (bilinear, border padding), and a
    brightness gain/bias; the output stays in [-1, 1]. Random numbers come from `gen` (CPU generator)."""
    n = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(n, generator=gen)).to(x.device)

    if flips:
        fh = torch.rand(n, generator=gen).to(x.device) < 0.5
        fv = torch.rand(n, generator=gen).to(x.device) < 0.5
        x = torch.where(fh.view(-1, 1, 1, 1), x.flip(-1), x)
        x = torch.where(fv.view(-1, 1, 1, 1), x.flip(-2), x)
    angle = uniform(-max_rotation_deg, max_rotation_deg) * math.pi / 180
    scale = uniform(*scale_range)
    tx, ty = uniform(-max_translate, max_translate) * 2, uniform(-max_translate, max_translate) * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    gain = uniform(*gain_range).view(-1, 1, 1, 1)
    bias = uniform(-max_bias, max_bias).view(-1, 1, 1, 1)
    return ((x + 1) * gain - 1 + bias).clamp(-1, 1)
