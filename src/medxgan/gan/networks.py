"""medXGAN generator and discriminator.

Shapes
------
``Generator(z1, z2) -> images``: z1 is N x nz1 (anatomy), z2 is N x nz2 (pathology; all zeros for the
negative class), output N x C x size x size in [-1, 1] (tanh).

``Discriminator(x, y=None) -> logits``: x is N x C x size x size in [-1, 1]; returns N raw logits
(real vs fake). The paper ends D in a sigmoid and trains with BCE; we return logits and train with
``BCEWithLogitsLoss``, which is mathematically the same loss computed in a numerically stable way
(log-sum-exp instead of log(sigmoid)). With ``d_projection`` the discriminator is class-conditional,
D(x, y) = psi(phi(x)) + <embed(y), phi(x)> (projection discriminator, Miyato & Koyama 2018), and y
(N, long, 0/1) is required.

Architectures
-------------
``arch="paper"``: the published networks (see /work/shared/reference/medxgan.md), exact layer for layer:
64 px: Linear(nz1+nz2 -> 768) -> 768x1x1 -> ConvT k5 s2 (384, 256, 192) + BN + ReLU -> ConvT(192 -> C, k8 s2)
+ tanh. 128 px adds ConvT(192 -> 64, k5 s2) + BN + ReLU before the last layer. D: six 3x3 convs without
bias (16..512), strides 2 (pad 1) / 1 (pad 0) alternating, BN on all but the first, LeakyReLU(0.2),
Dropout(0.5) after each, flatten -> Linear(5*5*512 -> 1) (13*13*512 at 128 px).

``arch="dcgan"``: a much cheaper DCGAN-style pair: Linear -> (8w)x4x4 -> ConvT(k4 s2 p1) + BN + ReLU
doubling the size down to w channels -> ConvT(w -> C) + tanh; D mirrors it with Conv(k4 s2 p1) +
LeakyReLU(0.2) (+ BN when ``d_batchnorm``), flatten -> Linear -> 1.

Initialisation (both): DCGAN, conv weights N(0, 0.02), BN weight N(1, 0.02) and bias 0, Linear layers
keep PyTorch's default; spectral norm (if on) is applied after initialisation.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from medxgan.gan.presets import NetConfig
from medxgan.runtime.errors import MedxganError


def dcgan_init(module: nn.Module) -> None:
    """Conv/ConvT weights N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0; Linear left at default."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _apply_spectral_norm(module: nn.Module) -> None:
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            spectral_norm(m)


class ConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` (same parameters, same state_dict) with two CPU fast paths.

    PyTorch's CPU kernel for transposed convolutions is slow in two shapes the paper's generator uses
    (measured on 1 CPU thread, batch 32, forward + backward, benchmarks/performance/RESULTS.md):
    a 1 x 1 input (768 -> 384, k5: 196 ms, while it is just one matrix product: 27 ms) and very few
    output channels (192 -> 1, k8: 130 ms; as a matrix product followed by ``F.fold`` (col2im): 64 ms).
    Both rewrites compute the same sums (tests compare values and gradients with ``F.conv_transpose2d``).
    Everywhere else, and on GPUs, the native kernel is used.
    """

    def _fast_path(self, x: torch.Tensor) -> str | None:
        if x.device.type != "cpu" or x.dim() != 4 or self.groups != 1 or self.dilation != (1, 1) or self.output_padding != (0, 0):
            return None
        if x.shape[-2:] == (1, 1):
            return "matmul"
        if self.out_channels <= 3:
            return "fold"
        return None

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        path = None if output_size is not None else self._fast_path(x)
        if path is None:
            return super().forward(x, output_size)
        n, cin, h, w = x.shape
        cout, (kh, kw), (sh, sw), (ph, pw) = self.out_channels, self.kernel_size, self.stride, self.padding
        if path == "matmul":  # 1 x 1 input: out[n, co, i, j] = sum_ci x[n, ci] W[ci, co, i, j]
            out = (x.reshape(n, cin) @ self.weight.reshape(cin, cout * kh * kw)).view(n, cout, kh, kw)
            out = out[:, :, ph : kh - ph, pw : kw - pw]
        else:  # columns W^T x, then col2im adds the overlapping kernel footprints
            cols = torch.matmul(self.weight.reshape(cin, cout * kh * kw).t(), x.reshape(n, cin, h * w))
            ho, wo = (h - 1) * sh - 2 * ph + kh, (w - 1) * sw - 2 * pw + kw
            out = torch.nn.functional.fold(cols, (ho, wo), (kh, kw), stride=(sh, sw), padding=(ph, pw))
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out


def _check_channels(cfg: NetConfig) -> None:
    if cfg.channels not in (1, 3):
        raise MedxganError(f"network config: channels must be 1 or 3, got {cfg.channels}")
    if cfg.nz1 < 1 or cfg.nz2 < 1:
        raise MedxganError(f"network config: nz1 and nz2 must be >= 1, got {cfg.nz1}, {cfg.nz2}")
    if cfg.mask_scale < 1 or cfg.size % cfg.mask_scale:
        raise MedxganError(f"network config: mask_scale must be >= 1 and divide the size {cfg.size}, got {cfg.mask_scale}")


def _decoder(cfg: NetConfig, nz: int, out_channels: int, tanh: bool) -> tuple[nn.Linear, nn.Sequential, tuple[int, int, int]]:
    """(fc, body, start_shape) of one generator decoder: ``body(fc(z).view(start_shape))``."""
    last: list[nn.Module] = [nn.Tanh()] if tanh else []
    if cfg.arch == "paper":
        if cfg.size not in (64, 128):
            raise MedxganError(f"network config: the paper generator exists for 64 and 128 px, not {cfg.size}")
        fc = nn.Linear(nz, 768)  # with bias, no activation (authors' code)
        widths = [768, 384, 256, 192] + ([64] if cfg.size == 128 else [])
        layers: list[nn.Module] = []
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [ConvTranspose2d(cin, cout, 5, 2, 0, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        layers += [ConvTranspose2d(widths[-1], out_channels, 8, 2, 0, bias=False), *last]
        return fc, nn.Sequential(*layers), (768, 1, 1)
    if cfg.arch == "dcgan":
        n_up = _n_halvings(cfg.size)
        w0 = cfg.g_width * 2 ** (n_up - 1)
        fc = nn.Linear(nz, w0 * 16, bias=False)
        layers = [nn.BatchNorm2d(w0), nn.ReLU(True)]
        ch = w0
        for _ in range(n_up - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, out_channels, 4, 2, 1, bias=False), *last]
        return fc, nn.Sequential(*layers), (w0, 4, 4)
    raise MedxganError(f"network config: unknown arch {cfg.arch!r} (paper or dcgan)")


PATHOLOGY_MODES = ("joint", "mask")
MASK_LOGIT_OFFSET = -3.0  # the pathology mask starts nearly empty (sigmoid(-3) = 0.05)
GATE_SCALE = 0.1  # gate(z2) = 1 - exp(-mean(z2^2) / GATE_SCALE): ~1 on the prior, exactly 0 at z2 = 0


class Generator(nn.Module):
    """G(z1, z2) -> N x C x size x size images in [-1, 1]. Attributes: nz1, nz2, channels, size, config.

    ``pathology="joint"`` (the paper): one decoder of concat(z1, z2).
    ``pathology="mask"``: the pathology is an explicit local layer over a z1-only anatomy,
    ``G(z1, z2) = B(z1) (1 - g M) + g M R`` with B(z1) the anatomy decoder, M(z1, z2) in [0, 1] a
    pathology mask and R(z1, z2) in [-1, 1] its content (one second decoder of concat(z1, z2)), and the
    gate g(z2) = 1 - exp(-mean(z2^2) / GATE_SCALE), exactly 0 at z2 = 0. So G(z1, 0) = B(z1) exactly,
    z2 can only change the pixels where M is on, and the training losses can ask M to be small (the
    VA-GAN idea of an additive/masked change map, Baumgartner et al. 2018, in medXGAN's split latent).
    """

    def __init__(self, cfg: NetConfig):
        super().__init__()
        cfg = NetConfig.from_dict(cfg)
        _check_channels(cfg)
        if cfg.pathology not in PATHOLOGY_MODES:
            raise MedxganError(f"network config: pathology must be one of {', '.join(PATHOLOGY_MODES)}, got {cfg.pathology!r}")
        self.config = cfg
        self.nz1, self.nz2, self.channels, self.size = cfg.nz1, cfg.nz2, cfg.channels, cfg.size
        self.masked = cfg.pathology == "mask"
        if self.masked:
            self.fc, self.body, self.start_shape = _decoder(cfg, cfg.nz1, cfg.channels, tanh=True)
            self.path_fc, self.path_body, _ = _decoder(cfg, cfg.nz1 + cfg.nz2, cfg.channels + 1, tanh=False)
        else:
            self.fc, self.body, self.start_shape = _decoder(cfg, cfg.nz1 + cfg.nz2, cfg.channels, tanh=True)
        dcgan_init(self)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, return_parts: bool = False) -> Any:
        """The images; with ``return_parts`` (masked generators) the tuple of :meth:`parts` (a keyword of
        forward, so that DistributedDataParallel and torch.compile wrappers pass it through)."""
        if self.masked:
            out = self.parts(z1, z2)
            return out if return_parts else out[0]
        if return_parts:
            raise MedxganError("Generator: return_parts only for pathology='mask' generators")
        h = self.fc(torch.cat([z1, z2], dim=1))
        return self.body(h.view(h.shape[0], *self.start_shape))

    def parts(self, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image, anatomy B(z1), effective mask g(z2) M(z1, z2) N x 1 x H x W) of the masked generator."""
        if not self.masked:
            raise MedxganError("Generator.parts: only for pathology='mask' generators")
        h = self.fc(z1)
        base = self.body(h.view(h.shape[0], *self.start_shape))
        p = self.path_fc(torch.cat([z1, z2], dim=1))
        p = self.path_body(p.view(p.shape[0], *self.start_shape))
        gate = 1.0 - torch.exp(-z2.pow(2).mean(1) / GATE_SCALE)
        mask = torch.sigmoid(_smooth(p[:, :1], self.config.mask_scale) + MASK_LOGIT_OFFSET) * gate.view(-1, 1, 1, 1)
        content = torch.tanh(p[:, 1:])
        return base + mask * (content - base), base, mask


def _smooth(logits: torch.Tensor, scale: int) -> torch.Tensor:
    """Mask logits averaged over scale x scale cells, upsampled bilinearly back to full size: a region
    prior. With a full-resolution mask the classifier can be flipped by a few isolated pixels (an
    adversarial example, not a lesion removal); a smooth mask has to cover a region."""
    if scale <= 1:
        return logits
    return F.interpolate(F.avg_pool2d(logits, scale), size=logits.shape[-2:], mode="bilinear", align_corners=False)


def _n_halvings(size: int) -> int:
    n = int(round(math.log2(size / 4))) if size >= 8 else 0
    if n < 1 or 4 * 2**n != size:
        raise MedxganError(f"network config: the dcgan networks need a power-of-two size >= 8, got {size}")
    return n


class Discriminator(nn.Module):
    """D(x[, y]) -> N real/fake logits (no sigmoid; see module docstring).

    Attributes: channels, size, conditional (True for the projection discriminator), config.
    """

    def __init__(self, cfg: NetConfig):
        super().__init__()
        cfg = NetConfig.from_dict(cfg)
        _check_channels(cfg)
        self.config = cfg
        self.channels, self.size = cfg.channels, cfg.size
        self.conditional = bool(cfg.d_projection)
        layers: list[nn.Module] = []

        def block(cin: int, cout: int, k: int, s: int, p: int, bn: bool) -> None:
            layers.append(nn.Conv2d(cin, cout, k, s, p, bias=False))
            if bn:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            if cfg.d_dropout > 0:
                layers.append(nn.Dropout(cfg.d_dropout))

        if cfg.arch == "paper":
            widths = [cfg.channels, 16, 32, 64, 128, 256, 512]
            spatial = cfg.size
            for i in range(6):
                stride, pad = (2, 1) if i % 2 == 0 else (1, 0)
                block(widths[i], widths[i + 1], 3, stride, pad, bn=cfg.d_batchnorm and i > 0)
                spatial = (spatial + 2 * pad - 3) // stride + 1
            feat = 512 * spatial * spatial  # 5*5*512 at 64 px, 13*13*512 at 128 px
            last_channels = 512
        elif cfg.arch == "dcgan":
            n_down = _n_halvings(cfg.size)
            ch_in, ch = cfg.channels, cfg.d_width
            for i in range(n_down):
                block(ch_in, ch, 4, 2, 1, bn=cfg.d_batchnorm and i > 0)
                ch_in, ch = ch, ch * 2
            feat = ch_in * 16
            last_channels = ch_in
        else:
            raise MedxganError(f"network config: unknown arch {cfg.arch!r} (paper or dcgan)")
        self.features = nn.Sequential(*layers)
        self.mbstd = bool(cfg.d_mbstd)
        if self.mbstd:
            feat += feat // last_channels  # one extra feature map
        self.psi = nn.Linear(feat, 1)
        self.embed = nn.Embedding(2, feat) if self.conditional else None
        dcgan_init(self)
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, 0.0, 0.02)
        if cfg.d_spectral_norm:
            _apply_spectral_norm(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)
        if self.mbstd:
            h = torch.cat([h, minibatch_std(h)], dim=1)
        phi = h.flatten(1)
        out = self.psi(phi).squeeze(1)
        if self.embed is not None:
            if y is None:
                raise ValueError("the projection discriminator needs class labels y")
            out = out + (self.embed(y.long()) * phi).sum(1)
        return out


def minibatch_std(h: torch.Tensor, group: int = 4) -> torch.Tensor:
    """N x 1 x H x W: the feature-wise std over groups of samples, averaged, as one extra feature map."""
    n = h.shape[0]
    g = max(d for d in range(1, min(group, n) + 1) if n % d == 0)
    if g < 2:
        return torch.zeros_like(h[:, :1])
    y = h.view(g, n // g, *h.shape[1:])
    y = (y - y.mean(0)).pow(2).mean(0).add(1e-8).sqrt().mean(dim=[1, 2, 3])  # (n/g,)
    return y.repeat(g).view(n, 1, 1, 1).expand(n, 1, *h.shape[2:])


def build_generator(net_cfg: NetConfig | dict[str, Any]) -> Generator:
    return Generator(NetConfig.from_dict(net_cfg))


def build_discriminator(net_cfg: NetConfig | dict[str, Any]) -> Discriminator:
    return Discriminator(NetConfig.from_dict(net_cfg))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def sample_latents(
    labels: torch.Tensor, nz1: int, nz2: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The medXGAN latent rule: z1 ~ N(0, I); z2 = 0 for class 0 and z2 ~ N(0, I) for class 1.

    Always draws N x nz2 normals (then zeroes the negatives) so that the random stream does not
    depend on the labels."""
    n = labels.shape[0]
    device = labels.device
    z1 = torch.randn(n, nz1, generator=generator, device=device)
    z2 = torch.randn(n, nz2, generator=generator, device=device) * (labels.view(-1, 1) == 1).float()
    return z1, z2
