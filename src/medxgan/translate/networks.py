"""CycleGAN networks: ResNet generator and 70x70 PatchGAN discriminator (Zhu et al. 2017).

Shapes: generators map N x C_in x H x W -> N x C_out x H x W in [-1, 1] (tanh) for any H, W that are
multiples of 4 (two stride-2 downsamplings); the apply code pads by reflection to reach that.
Discriminators map N x C x H x W -> N x 1 x H' x W' patch scores (raw, LSGAN: no sigmoid); each output
unit sees a 70x70 receptive field with 3 layers.
"""

from __future__ import annotations

import torch
from torch import nn


def _norm(ch: int) -> nn.Module:
    # affine=False, no running stats: the reference implementation's `instance` norm
    return nn.InstanceNorm2d(ch, affine=False, track_running_stats=False)


class ResidualBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=True), _norm(ch), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=True), _norm(ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """c7s1-ngf, d2ngf, d4ngf, R4ngf x blocks, u2ngf, ungf, c7s1-out, tanh.

    upsample="transpose" (default): ConvTranspose2d(3, stride 2) as in the paper.
    upsample="resize": nearest-neighbour x2 followed by a 3x3 conv (Odena et al. 2016), which cannot
    produce the checkerboard artefacts that uneven kernel overlap of transposed convs gives; on the
    fundus phantoms it left a grey surround where the angiogram must be black (benchmarks/translate/RESULTS.md).
    """

    def __init__(self, in_ch: int, out_ch: int, ngf: int = 64, blocks: int = 6, upsample: str = "transpose"):
        super().__init__()
        if upsample not in ("transpose", "resize"):
            raise ValueError(f"upsample must be 'transpose' or 'resize', got {upsample!r}")
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_ch, ngf, 7), _norm(ngf), nn.ReLU(True)]
        ch = ngf
        for _ in range(2):
            layers += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1), _norm(ch * 2), nn.ReLU(True)]
            ch *= 2
        layers += [ResidualBlock(ch) for _ in range(blocks)]
        for _ in range(2):
            if upsample == "transpose":
                layers += [nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1)]
            else:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1), nn.Conv2d(ch, ch // 2, 3)]
            layers += [_norm(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, out_ch, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.in_ch, self.out_ch = in_ch, out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """70x70 PatchGAN: C64 (no norm) - C128 - C256 - C512 (stride 1) - 1, LeakyReLU 0.2."""

    def __init__(self, in_ch: int, ndf: int = 64, layers: int = 3):
        super().__init__()
        seq: list[nn.Module] = [nn.Conv2d(in_ch, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, layers):
            prev, mult = mult, min(2**n, 8)
            seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1), _norm(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2**layers, 8)
        seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1), _norm(ndf * mult), nn.LeakyReLU(0.2, True)]
        seq += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(module: nn.Module, gain: float = 0.02) -> None:
    """N(0, 0.02) for conv weights, zero biases (the reference `normal` init)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
