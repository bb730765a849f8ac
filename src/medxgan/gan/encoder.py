"""Latent encoder E(x) -> (z1, z2) that anchors the generator to real images during training.

Why beyond the paper: on a CPU budget the paper's purely adversarial recipe collapses (one anatomy for
every z1) and learns "positives" that differ from negatives only by texture that fools the classifier
(benchmarks/gan/RESULTS.md). Training G also to reconstruct real scans through E -- negatives as
G(E1(x), 0), positives as G(E1(x), E2(x)) -- gives G the data's anatomical diversity and forces z2 to
carry the real lesions; a KL term keeps E's codes on the N(0, I) prior that the paper's sampling rule
uses, and the classifier loss on G(E1(x_pos), 0) teaches z2 = 0 to remove exactly the lesion of a real
positive (the counterfactual that `explain` produces). This is the VAE-GAN / BicycleGAN idea
(Larsen et al. 2016; Zhu et al. 2017) applied to medXGAN's split latent. The encoder also gives
inversion a starting point (`invert(..., encoder=E)`).
"""

from __future__ import annotations

import torch
from torch import nn

from medxgan.gan.presets import NetConfig


class LatentEncoder(nn.Module):
    """Conv(k4 s2) + BN + LeakyReLU down to 4 x 4, then a linear head giving the mean and log-variance
    of z1 (nz1) and z2 (nz2). `forward(x) -> (mu1, logvar1, mu2, logvar2)`."""

    def __init__(self, cfg: NetConfig | dict, width: int | None = None):
        super().__init__()
        cfg = NetConfig.from_dict(cfg)
        self.nz1, self.nz2 = cfg.nz1, cfg.nz2
        w = width or cfg.d_width
        layers: list[nn.Module] = []
        ch, size = cfg.channels, cfg.size
        out = w
        while size > 4:
            layers += [nn.Conv2d(ch, out, 4, 2, 1), nn.BatchNorm2d(out) if ch != cfg.channels else nn.Identity(), nn.LeakyReLU(0.2, True)]
            ch, size, out = out, size // 2, min(out * 2, 8 * w)
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(ch * 16, 2 * (cfg.nz1 + cfg.nz2))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.head(self.features(x).flatten(1))
        mu1, lv1, mu2, lv2 = h.split([self.nz1, self.nz1, self.nz2, self.nz2], dim=1)
        return mu1, lv1.clamp(-10, 5), mu2, lv2.clamp(-10, 5)

    @torch.no_grad()
    def encode_mean(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Deterministic codes (the means) for inversion's starting point."""
        was = self.training
        self.eval()
        mu1, _, mu2, _ = self(x)
        self.train(was)
        return mu1, mu2


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample, summed over dimensions."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)
