"""Captum-backed baselines: shapes, finiteness, and independent checks on a linear classifier."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medxgan.classifiers import ClassifierAdapter, PaperCNN, Preprocessing
from medxgan.explain.baselines import (
    BASELINE_METHODS,
    EXPLAINERS,
    GradCAMExplainer,
    IntegratedGradientsExplainer,
    build_explainers,
)
from medxgan.runtime.errors import MedxganError


def _cnn(size: int = 64, channels: int = 1) -> ClassifierAdapter:
    torch.manual_seed(0)
    return ClassifierAdapter(PaperCNN(in_channels=channels), output="logits2",
                             preprocessing=Preprocessing(input_size=(64, 64), input_channels=channels))


class _Linear(nn.Module):
    """f(x) = w . x + b, output N x 1 (one logit)."""

    def __init__(self, c: int, h: int, w: int):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.w = nn.Parameter(torch.randn(1, c, h, w, generator=g))
        self.b = nn.Parameter(torch.tensor(0.3))

    def forward(self, x):
        return ((x * self.w).flatten(1).sum(1) + self.b).unsqueeze(1)


def _images(n=3, c=1, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, size, size, generator=g) * 2 - 1


def test_registry_names():
    assert list(EXPLAINERS) == ["saliency", "gradcam", "ig-black", "ig-grey", "smoothgrad", "occlusion",
                                "extremal-perturbation", "meaningful-perturbation", "rise", "medxgan-diff", "medxgan-lig", "medxgan-mask"]
    with pytest.raises(MedxganError, match="unknown"):
        build_explainers(["nope"], _cnn())
    with pytest.raises(MedxganError, match="GAN"):
        build_explainers(["medxgan-diff"], _cnn())


@pytest.mark.parametrize("channels,size", [(1, 48), (3, 32)])
def test_every_baseline_shape_and_finite(channels, size):
    clf = _cnn(channels=channels)
    x = _images(2, channels, size)
    kw = dict(batch_size=2)
    for ex in build_explainers(list(BASELINE_METHODS), clf, **kw):
        if ex.name == "smoothgrad":
            ex.nt_samples = 4
        if ex.name.startswith("ig"):
            ex.n_steps = 8
        e = ex.explain(x)
        assert e.method == ex.name
        assert tuple(e.maps.shape) == (2, 1, size, size), ex.name
        assert torch.isfinite(e.maps).all(), ex.name


def test_gradcam_input_size_and_nonnegative():
    clf = _cnn()
    x = _images(2, 1, 40)  # the adapter resizes to 64, the map comes back at 40
    m = GradCAMExplainer(clf).explain(x).maps
    assert m.shape == (2, 1, 40, 40)
    assert (m >= 0).all()


def test_ig_completeness_on_cnn():
    clf = _cnn()
    x = _images(2, 1, 64)
    ex = IntegratedGradientsExplainer(clf, baseline=-1.0, n_steps=50)
    e = ex.explain(x)
    with torch.no_grad():
        diff = clf.logit(x) - clf.logit(torch.full_like(x, -1.0))
    total = e.maps.flatten(1).sum(1)
    delta = e.extras["convergence_delta"]
    assert torch.allclose(total - diff, delta, atol=1e-3)
    assert (delta.abs() <= 0.05 * diff.abs().clamp(min=1.0)).all()


def test_linear_classifier_saliency_and_ig_exact():
    c, h, w = 1, 16, 16
    lin = _Linear(c, h, w)
    clf = ClassifierAdapter(lin, output="logit1")
    x = _images(3, c, h)
    weights = lin.w.detach()
    sal = EXPLAINERS["saliency"](clf).explain(x).maps
    assert torch.allclose(sal, weights.expand(3, -1, -1, -1).sum(1, keepdim=True), atol=1e-6)
    ig = EXPLAINERS["ig-black"](clf).explain(x).maps
    assert torch.allclose(ig, (weights * (x + 1)).sum(1, keepdim=True), atol=1e-5)
    ig0 = EXPLAINERS["ig-grey"](clf).explain(x).maps
    assert torch.allclose(ig0, (weights * x).sum(1, keepdim=True), atol=1e-5)
    # smoothgrad of a linear function is the gradient itself
    sg = EXPLAINERS["smoothgrad"](clf).explain(x).maps
    assert torch.allclose(sg, sal, atol=1e-5)
    # occlusion with a 1x1 window: logit(x) - logit(x with pixel set to 0) = w * x
    occ = build_explainers(["occlusion"], clf)[0]
    occ.window, occ.stride = 1, 1
    assert torch.allclose(occ.explain(x).maps, weights * x, atol=1e-4)


def test_smoothgrad_deterministic_and_rng_untouched():
    clf = _cnn()
    x = _images(1, 1, 64)
    ex = build_explainers(["smoothgrad"], clf)[0]
    ex.nt_samples = 3
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    a = ex.explain(x).maps
    after = torch.rand(1)
    b = ex.explain(x).maps
    assert torch.equal(a, b)
    assert torch.equal(before, after)
