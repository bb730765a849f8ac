"""Small tensor/module helpers shared by the layers above: freezing modules, PSNR of [-1, 1] images."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import Tensor, nn

from medxgan.runtime import quality


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients for the duration; restores both afterwards, per submodule: a
    wrapper built in train mode (nn.Module's default) around an eval-mode generator must not leave the
    generator in train mode (``m.train(flag)`` would set every submodule to ``flag``)."""
    saved = []
    for m in modules:
        if m is None:
            continue
        saved.append(([(sub, sub.training) for sub in m.modules()], [(p, p.requires_grad) for p in m.parameters()]))
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    try:
        yield
    finally:
        for modes, flags in reversed(saved):
            for sub, training in modes:
                sub.training = training
            for p, rg in flags:
                p.requires_grad_(rg)


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """PSNR per image (dB) for images in [-1, 1] (peak-to-peak 2), in the inputs' dtype:
    :func:`medxgan.runtime.quality.psnr` (torchmetrics, computed in float64)."""
    return quality.psnr(a, b, data_range=2.0).to(a.dtype if a.is_floating_point() else torch.float32)
