"""Built-in binary classifiers. Both output 2 logits (no softmax: the authors' code applied softmax
and then CrossEntropyLoss on top, a double softmax we do not copy)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from medxgan.runtime.errors import MedxganError


class PaperCNN(nn.Module):
    """The medXGAN paper's brain-MRI classifier for 64x64 inputs: three conv blocks (16/32/32 channels;
    conv -> ReLU -> BN -> max-pool -> dropout 0.2), then a linear head on the 32x4x4 features."""

    def __init__(self, in_channels: int = 1, image_size: int = 64, dropout: float = 0.2):
        super().__init__()
        if image_size != 64:
            raise MedxganError(f"arch paper-cnn: built for 64x64 inputs, got image size {image_size} (use resnet-small)")

        def block(cin: int, cout: int, k: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, k), nn.ReLU(inplace=True), nn.BatchNorm2d(cout), nn.MaxPool2d(2), nn.Dropout(dropout))

        self.features = nn.Sequential(block(in_channels, 16, 3), block(16, 32, 6), block(32, 32, 6))
        self.head = nn.Linear(32 * 4 * 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.skip(x))


class SmallResNet(nn.Module):
    """A small ResNet-style network for 64-256 px: a 3x3 stem (stride 2 from 64 px, plus a max-pool
    from 160 px), four stages of one basic block
    (widths w, 2w, 4w, 8w; stride 2 from the second stage on), global average pooling, linear head."""

    def __init__(self, in_channels: int = 1, image_size: int = 128, width: int = 16):
        super().__init__()
        # Downsample early so that the cost stays small at 64-256 px (laptop CPUs).
        stem_stride = 2 if image_size >= 64 else 1
        stem = [nn.Conv2d(in_channels, width, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        if image_size >= 160:
            stem.append(nn.MaxPool2d(2))
        self.stem = nn.Sequential(*stem)
        widths = [width, 2 * width, 4 * width, 8 * width]
        layers, cin = [], width
        for i, w in enumerate(widths):
            layers.append(_BasicBlock(cin, w, 1 if i == 0 else 2))
            cin = w
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(cin, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)).mean(dim=(2, 3)))


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"paper-cnn": PaperCNN, "resnet-small": SmallResNet}


def build_architecture(name: str, **kwargs: Any) -> nn.Module:
    if name not in ARCHITECTURES:
        raise MedxganError(f"--arch {name}: unknown architecture (choose from {', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[name](**kwargs)


def last_conv_layer(model: nn.Module) -> nn.Module:
    """The last Conv2d of a model: the usual Grad-CAM target layer."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise MedxganError("classifier has no Conv2d layer: Grad-CAM needs one (pass a layer explicitly)")
    return convs[-1]
