"""Test helpers shared between test modules (tests import this module, never each other)."""

from __future__ import annotations

import functools
import json

import numpy as np
import torch
from PIL import Image
from torch import nn

from medxgan.classifiers import ClassifierAdapter
from medxgan.gan.networks import Generator
from medxgan.gan.presets import NetConfig

NZ1, NZ2, SIZE = 8, 4, 16


def tiny_generator(channels: int = 1, seed: int = 0) -> Generator:
    """A random 16 px DCGAN generator whose BatchNorm running statistics are calibrated on random codes
    (fresh running stats make the output almost constant)."""
    torch.manual_seed(seed)
    g = Generator(NetConfig(arch="dcgan", size=SIZE, channels=channels, nz1=NZ1, nz2=NZ2, g_width=8))
    for m in g.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average
    g.train()
    with torch.no_grad():
        for _ in range(4):
            g(torch.randn(64, NZ1), torch.randn(64, NZ2))
    return g.eval()


def tiny_classifier(generator: Generator, steps: int = 40, seed: int = 0) -> ClassifierAdapter:
    """A tiny CNN trained for a few steps to tell G(z1, 0) (negative) from G(z1, z2) (positive)."""
    torch.manual_seed(seed)
    c = generator.channels
    net = nn.Sequential(nn.Conv2d(c, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        z1 = torch.randn(32, NZ1)
        z2 = torch.randn(32, NZ2) * (torch.arange(32) % 2).view(-1, 1)
        with torch.no_grad():
            x = generator(z1, z2)
        y = (torch.arange(32) % 2).float()
        loss = nn.functional.binary_cross_entropy_with_logits(net(x).squeeze(1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ClassifierAdapter(net, output="logit1")


@functools.lru_cache(maxsize=2)
def tiny_models(channels: int = 1) -> tuple[Generator, ClassifierAdapter]:
    g = tiny_generator(channels)
    return g, tiny_classifier(g)


def known_images(n: int = 3, seed: int = 1, channels: int = 1):
    g, _ = tiny_models(channels)
    gen = torch.Generator().manual_seed(seed)
    z1, z2 = torch.randn(n, NZ1, generator=gen), torch.randn(n, NZ2, generator=gen)
    with torch.no_grad():
        return g(z1, z2), z1, z2


def write_dataset(root, n_per_class=8, size=64):
    """A tiny two-class PNG data set in the project layout (train/val/test, a bright square = positive)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_per_class), ("val", 4), ("test", 4)):
        for cls in ("negative", "positive"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                a = (rng.random((size, size)) * 60 + 20).astype(np.uint8)
                if cls == "positive":
                    a[20:30, 20:30] = 230
                Image.fromarray(a).save(d / f"{i:03d}.png")
    (root / "dataset.json").write_text(json.dumps({"positive": ["positive"], "negative": ["negative"]}))
