"""A user's MONAI classifier package: 3 channels, 96 px, [0, 1] with ImageNet mean/std."""
import torch
from monai.networks.nets import ResNet
from torch import nn


def binary() -> nn.Module:
    """One output with the sigmoid inside (p(tumour))."""
    net = ResNet(block="basic", layers=[1, 1, 1, 1], block_inplanes=[16, 32, 64, 128], spatial_dims=2,
                 n_input_channels=3, num_classes=1)
    return nn.Sequential(net, nn.Sigmoid())
