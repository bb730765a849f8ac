"""A small learned inpainter: the in-fill of the minimal mask that sees the scan's own context (issue 31, item 2e).

The residual counterfactual is ``x_cf = x + M (F - x)``; the in-fill F decides how faithful x_cf is to the scan's
lesion-free twin. The generator's anatomy B(z1*) does not render real cortex, a blur or a biharmonic inpainting
smooths the region away; this network fills a hidden region of a scan from the scan around it, trained on the
classifier's negative training scans with random holes shaped like the regions it is asked to fill (blobs,
ellipses of varied size, free-form strokes). Two variants:

=================  ===============================================================================================
``context``         input: the scan with the region blanked (set to 0), the region's mask; a context encoder
                    (Pathak et al., CVPR 2016) in U-Net form with the mask as an input channel (as LaMa and
                    gated-convolution inpainters take it) rather than partial convolutions: same information,
                    plain layers, no custom autograd.
``context+gan``     the same, plus the GAN's anatomy of the scan (B(z1) = G(z1, 0)) as an extra input channel: the
                    network may take the generator's structure and correct its texture/intensity from the context.
                    Trained with B(E(x)) of the GAN run's encoder (inversion's starting point; explain/evaluate
                    give it B(z1*) after the full inversion).
=================  ===============================================================================================

The output is composited: ``F = x (1 - R) + net(...) R`` for the region R, so F equals the scan exactly outside R
and the counterfactual never changes a pixel there. A run is a directory (runtime.runs.RunDir, kind
``medxgan-inpainter``): config.json, ``inpainter.safetensors``, metrics.jsonl, checkpoints/ (trainer:
gan/inpainter_train.py). Nothing here ever sees a lesion-free twin.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medxgan.runtime.errors import MedxganError
from medxgan.runtime.runs import RunDir

__all__ = ["INPAINTER_KIND", "INPAINTER_WEIGHTS", "VARIANTS", "InpaintNet", "Inpainter", "random_holes", "load_inpainter", "check_inpainter_run"]

INPAINTER_KIND = "medxgan-inpainter"
INPAINTER_WEIGHTS = "inpainter"
VARIANTS = ("context", "context+gan")


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2), nn.Conv2d(cout, cout, 3, 1, 1), nn.LeakyReLU(0.2))


class InpaintNet(nn.Module):
    """U-Net ``[x (1 - R), R, (B)] -> image in [-1, 1]`` (N x C x H x W; H, W even).

    The input is folded 2 x 2 into channels (pixel unshuffle) and unfolded at the output (pixel shuffle), so that the
    U-Net runs at half resolution (4x cheaper on a CPU; the composited fill keeps every pixel outside the region).
    Then ``depth`` stride-2 stages (64 px -> 32 -> 2 px: every output pixel sees the whole scan, so a hole 30 px wide is
    filled from its far side too), widths w, 2w, 4w, 4w, ..., nearest upsampling with skip connections; no
    normalisation layer (batch statistics would make a fill depend on the other scans of its batch)."""

    def __init__(self, channels: int, width: int = 12, gan_channel: bool = False, depth: int = 4):
        super().__init__()
        self.channels, self.width, self.gan_channel, self.depth = channels, width, gan_channel, depth
        cin = 4 * (channels + 1 + (channels if gan_channel else 0))
        widths = [width * min(2**i, 4) for i in range(depth + 1)]
        self.inc = _block(cin, widths[0])
        self.downs = nn.ModuleList(_block(widths[i], widths[i + 1], stride=2) for i in range(depth))
        self.ups = nn.ModuleList(_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth)))
        self.out = nn.Conv2d(widths[0], 4 * channels, 1)

    def forward(self, images: Tensor, region: Tensor, anatomy: Tensor | None = None) -> Tensor:
        """``images`` N x C x H x W (the region's pixels are ignored: blanked here), ``region`` N x 1 x H x W in {0, 1},
        ``anatomy``: N x C x H x W (the ``context+gan`` variant only). Returns the raw prediction, not composited."""
        if images.shape[-1] % 2 or images.shape[-2] % 2:
            raise MedxganError(f"inpainter: scans of even height and width only, given {tuple(images.shape[-2:])}", arg="infill")
        parts = [images * (1 - region), region]
        if self.gan_channel:
            if anatomy is None:
                raise MedxganError("inpainter (context+gan): needs the GAN's anatomy of the scans", arg="infill")
            parts.append(anatomy)
        h = self.inc(F.pixel_unshuffle(torch.cat(parts, 1), 2))
        skips = [h]
        for down in self.downs:
            h = down(h)
            skips.append(h)
        skips.pop()
        for up in self.ups:
            skip = skips.pop()
            h = up(torch.cat([F.interpolate(h, size=skip.shape[-2:], mode="nearest"), skip], 1))
        return torch.tanh(F.pixel_shuffle(self.out(h), 2))


def _ellipse(yy: Tensor, xx: Tensor, cy: float, cx: float, a: float, b: float, theta: float) -> Tensor:
    dy, dx = yy - cy, xx - cx
    u = dx * math.cos(theta) + dy * math.sin(theta)
    v = -dx * math.sin(theta) + dy * math.cos(theta)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _stroke(yy: Tensor, xx: Tensor, points: list[tuple[float, float]], half_width: float) -> Tensor:
    """Pixels within ``half_width`` of the polyline through ``points`` (distance to each segment)."""
    out = torch.zeros_like(yy, dtype=torch.bool)
    for (y0, x0), (y1, x1) in zip(points[:-1], points[1:]):
        vy, vx = y1 - y0, x1 - x0
        t = (((yy - y0) * vy + (xx - x0) * vx) / max(vy * vy + vx * vx, 1e-9)).clamp(0, 1)
        out |= (yy - (y0 + t * vy)) ** 2 + (xx - (x0 + t * vx)) ** 2 <= half_width**2
    return out


def random_holes(n: int, size: int, generator: torch.Generator) -> Tensor:
    """N x 1 x size x size random regions in {0, 1}, like those the in-fill is asked to fill (the generator's mask
    grown, the minimal mask: smooth blobs): 1-3 ellipses, semi-axes size/32 to size/4 (2-16 px at 64 px), at any
    angle, centred in the middle 80 % of the scan; with probability 0.3 also a free-form stroke (a 3-6 point polyline,
    2-5 px wide at 64 px). Seeded by ``generator`` only."""
    def u(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=generator))

    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    masks = torch.zeros(n, 1, size, size)
    for i in range(n):
        m = torch.zeros(size, size, dtype=torch.bool)
        for _ in range(int(torch.randint(1, 4, (), generator=generator))):
            m |= _ellipse(yy, xx, u(0.1, 0.9) * size, u(0.1, 0.9) * size, u(size / 32, size / 4), u(size / 32, size / 4), u(0, math.pi))
        if float(torch.rand((), generator=generator)) < 0.3:
            pts = [(u(0.1, 0.9) * size, u(0.1, 0.9) * size) for _ in range(int(torch.randint(3, 7, (), generator=generator)))]
            m |= _stroke(yy, xx, pts, u(size / 64, size / 26))
        masks[i, 0] = m.float()
    return masks


@dataclass
class Inpainter:
    """A trained inpainter: the network (eval mode, frozen) and what it was trained for."""

    net: InpaintNet
    variant: str
    size: int
    channels: int
    gan_fingerprint: str | None
    path: Path

    @property
    def uses_gan(self) -> bool:
        return self.variant == "context+gan"

    @torch.no_grad()
    def fill(self, images: Tensor, region: Tensor, anatomy: Tensor | None = None, batch_size: int = 64) -> Tensor:
        """The in-fill: ``images`` outside ``region`` (exactly), the network's prediction inside. N x C x H x W."""
        if tuple(images.shape[1:]) != (self.channels, self.size, self.size):
            raise MedxganError(f"inpainter {self.path}: trained on {self.channels} x {self.size} x {self.size} scans, "
                               f"given {tuple(images.shape[1:])}", arg="inpainter")
        dev = next(self.net.parameters()).device
        region = (region > 0.5).to(images.dtype)
        out = []
        for s in range(0, images.shape[0], batch_size):
            x, r = images[s : s + batch_size].to(dev), region[s : s + batch_size].to(dev)
            b = anatomy[s : s + batch_size].to(dev) if (self.uses_gan and anatomy is not None) else None
            pred = self.net(x, r, b)
            out.append((x * (1 - r) + pred * r).to(images.device, images.dtype))
        return torch.cat(out)


def check_inpainter_run(path: str | os.PathLike, arg: str = "inpainter") -> dict[str, Any]:
    """The run's config.json, checked cheaply (before any work): a finished inpainter run with its weights."""
    rd = RunDir(path)
    if not rd.path.is_dir():
        raise MedxganError(f"{arg} {path}: not a directory (a run of `medxgan train-inpainter`)", arg=arg)
    try:
        cfg = rd.read_config(expect_kind=INPAINTER_KIND)
    except MedxganError as exc:
        raise MedxganError(f"{arg} {path}: {exc}", arg=arg) from None
    if cfg.get("variant") not in VARIANTS or not isinstance(cfg.get("size"), int) or cfg.get("channels") not in (1, 3):
        raise MedxganError(f"{arg} {rd.config_path}: variant/size/channels missing or wrong", arg=arg)
    if not rd.has_weights(INPAINTER_WEIGHTS):
        raise MedxganError(f"{arg} {path}: no {INPAINTER_WEIGHTS}.safetensors (training not finished; resume it with "
                           "`medxgan train-inpainter ... --resume`)", arg=arg)
    return cfg


def load_inpainter(path: str | os.PathLike, device: str | torch.device = "cpu", arg: str = "inpainter") -> Inpainter:
    """Load a run written by :func:`medxgan.gan.inpainter_train.train_inpainter` (safetensors, no pickle)."""
    cfg = check_inpainter_run(path, arg)
    net = InpaintNet(int(cfg["channels"]), width=int(cfg.get("width", 12)), gan_channel=cfg["variant"] == "context+gan")
    try:
        net.load_state_dict(RunDir(path).load_weights(INPAINTER_WEIGHTS))
    except RuntimeError as exc:
        raise MedxganError(f"{arg} {path}: weights do not match config.json ({str(exc).splitlines()[0]})", arg=arg) from None
    net.to(device).eval().requires_grad_(False)
    return Inpainter(net, cfg["variant"], int(cfg["size"]), int(cfg["channels"]), cfg.get("gan_fingerprint"), Path(path))
