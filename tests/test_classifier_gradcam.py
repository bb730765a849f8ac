"""Grad-CAM's automatic layer is the last block's output (not a shortcut BatchNorm or an inner conv), on a
torchvision-style ResNet built here, MONAI ResNet / DenseNet, and a torch.export program; a layer can be
named; TorchScript is refused in one line (no forward hooks) and skipped by evaluate's default set."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medxgan.classifiers import wrap_classifier
from medxgan.classifiers.architectures import find_gradcam_layer
from medxgan.explain.baselines import GradCAMExplainer, build_explainers, gradcam_unavailable
from medxgan.runtime.errors import MedxganError

pytestmark = pytest.mark.usefixtures("one_thread")


class BasicBlock(nn.Module):
    """torchvision's BasicBlock, written out (no torchvision import): the shortcut's conv + BatchNorm come last."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) if stride != 1 or cin != cout else None

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TVResNet(nn.Module):
    def __init__(self, classes=2):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(8, 8, 1))
        self.layer2 = nn.Sequential(BasicBlock(8, 8, 2))
        self.layer3 = nn.Sequential(BasicBlock(8, 8, 2))
        self.layer4 = nn.Sequential(BasicBlock(8, 16, 2), BasicBlock(16, 16, 1))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _auto_layer(model, size=64):
    ad = wrap_classifier(model.eval(), output="logits2")
    x = torch.rand(2, 1, size, size) * 2 - 1
    ex = GradCAMExplainer(ad)
    name = ex.resolve_layer(x)
    maps = ex.explain(x).maps
    assert maps.shape == (2, 1, size, size) and torch.isfinite(maps).all()
    return name


def test_torchvision_style_resnet_takes_layer4_not_the_shortcut_batchnorm():
    # the earlier rule (last Conv2d, extended over BN/ReLU) gave layer4.0.downsample.1 -- the same defect as on MONAI
    assert _auto_layer(TVResNet()) == "layer4"
    ex = GradCAMExplainer(wrap_classifier(TVResNet().eval(), output="logits2"))
    ex.resolve_layer(torch.zeros(1, 1, 64, 64))
    assert "a 2 x 2 map at this input" in ex.layer_choice  # a coarse map is said, with the way to a finer one


def test_a_named_layer_and_a_missing_one():
    ad = wrap_classifier(TVResNet().eval(), output="logits2")
    ex = GradCAMExplainer(ad, layer="layer3")
    assert ex.resolve_layer(torch.zeros(1, 1, 64, 64)) == "layer3" and ex.layer is ad.model.layer3
    with pytest.raises(MedxganError, match="gradcam_layer layer9: the classifier has no such module.*layer4"):
        GradCAMExplainer(ad, layer="layer9")
    (ex,) = build_explainers(["gradcam"], ad, gradcam_layer="layer2.0")
    assert ex.layer is ad.model.layer2[0]


def test_find_gradcam_layer_skips_pooling_and_maps_of_one_pixel():
    seq = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, 4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    name, layer = find_gradcam_layer(seq, lambda: seq(torch.zeros(1, 1, 16, 16)))
    assert name == "3" and layer is seq[3]  # the activated last conv, not the pooled 1 x 1 map


def test_torchscript_is_refused_in_one_line_and_skipped_by_default():
    ad = wrap_classifier(torch.jit.script(TVResNet().eval()), output="logits2")
    assert "TorchScript" in gradcam_unavailable(ad)
    with pytest.raises(MedxganError, match="TorchScript modules take no forward hooks"):
        GradCAMExplainer(ad)


def test_torch_export_program_is_searched_like_the_module(tmp_path):
    from medxgan.classifiers import load_classifier

    model = TVResNet().eval()
    program = torch.export.export(model, (torch.zeros(2, 1, 64, 64),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(tmp_path / "m.pt2"))
    ad = load_classifier(tmp_path / "m.pt2", output="logits2")
    ex = GradCAMExplainer(ad)
    assert ex.resolve_layer(torch.zeros(2, 1, 64, 64)) == "layer4"
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    ref = GradCAMExplainer(wrap_classifier(model, output="logits2"), layer="layer4").explain(x).maps
    torch.testing.assert_close(ex.explain(x).maps, ref, atol=1e-5, rtol=1e-4)


monai_nets = pytest.importorskip("monai.networks.nets", reason="MONAI is not installed (pip install '.[monai]')")


def test_monai_resnet_takes_layer4():
    m = monai_nets.ResNet(block="basic", layers=[1, 1, 1, 1], block_inplanes=[4, 8, 8, 8], spatial_dims=2, n_input_channels=1, num_classes=2)
    assert _auto_layer(m) == "layer4"


def test_monai_densenet_takes_the_activated_features_output():
    m = monai_nets.DenseNet(spatial_dims=2, in_channels=1, out_channels=2, init_features=8, growth_rate=4, block_config=(2, 2))
    # features.norm5 followed by class_layers.relu: Grad-CAM on the activated map the head pools (not a conv inside a dense layer)
    assert _auto_layer(m) == "class_layers.relu"
