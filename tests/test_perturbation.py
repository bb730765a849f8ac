"""Perturbation baselines (explain/perturbation.py): each finds the one region a tiny classifier reads; RISE equals
its expectation computed by hand on fixed masks; seeded; registered like the Captum baselines."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medxgan.explain.baselines import EXPLAINERS, build_explainers
from medxgan.explain.perturbation import (
    ExtremalPerturbationExplainer,
    MeaningfulPerturbationExplainer,
    RISEExplainer,
    SmoothMaskGenerator,
    apply_pyramid,
    blur_pyramid,
    gaussian_smooth,
    rise_masks,
)
from medxgan.runtime.errors import MedxganError

SIZE = 32
REGION = (slice(8, 16), slice(16, 24))  # 8 x 8 px = 6.25 % of the image, aligned with an 8 px grid


class RegionReader(nn.Module):
    """Positive logit = 4 (mean of the pixels in REGION - 0.2): the classifier reads that region only."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(4.0))

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (x[:, :, REGION[0], REGION[1]].mean((1, 2, 3)) - 0.2)

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(x))


def _scene(n: int = 2) -> torch.Tensor:
    """Dark scans with a faint texture, bright in REGION (the classifier's evidence) and one bright decoy blob that
    the classifier ignores (a map that follows brightness alone would point at it)."""
    g = torch.Generator().manual_seed(0)
    x = -0.8 + 0.1 * torch.rand(n, 1, SIZE, SIZE, generator=g)
    x[:, :, REGION[0], REGION[1]] = 0.9
    x[:, :, 22:30, 2:10] = 0.9
    return x


def _region_mask() -> torch.Tensor:
    m = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    m[REGION[0], REGION[1]] = True
    return m


def _check_finds_region(maps: torch.Tensor) -> None:
    region = _region_mask()
    k = int(region.sum())
    for m in maps[:, 0]:
        flat = m.flatten()
        assert region.flatten()[int(flat.argmax())], "pointing game: the map's maximum is outside the region"
        top = torch.zeros_like(flat, dtype=torch.bool)
        top[flat.topk(k).indices] = True
        iou = float((top & region.flatten()).sum()) / float((top | region.flatten()).sum())
        assert iou >= 0.5, f"area-matched IoU {iou:.3f} with the region the classifier reads"


def test_extremal_perturbation_finds_the_region():
    clf = RegionReader()
    ex = ExtremalPerturbationExplainer(clf, areas=(0.03, 0.05), max_iter=200, step=2, sigma=4.0, max_blur=8.0)
    out = ex.explain(_scene(1))
    assert out.maps.shape == (1, 1, SIZE, SIZE) and out.extras["masks"].shape == (1, 2, SIZE, SIZE)
    _check_finds_region(out.maps)
    # the area constraint holds on the mask with its margin (TorchRay's): a of that larger grid, so a x its size in the image
    margin = SmoothMaskGenerator((SIZE, SIZE), 2, 4.0).shape_out
    for j, a in enumerate((0.03, 0.05)):
        expected = a * margin[0] * margin[1] / SIZE**2
        assert abs(float((out.extras["masks"][:, j] > 0.5).float().mean()) - expected) < 0.04


def test_meaningful_perturbation_finds_the_region():
    clf = RegionReader()
    clf.scale.data.fill_(2.0)  # p(pos) 0.80: the published objective (a probability) barely moves off a saturated one
    ex = MeaningfulPerturbationExplainer(clf, steps=150, blur_sigma=8.0)
    out = ex.explain(_scene())
    _check_finds_region(out.maps)
    assert bool((out.extras["prob_deleted"] < 0.5).all()), "the deletion must remove the decision"
    assert bool((clf.prob(_scene()) > 0.5).all())


def test_rise_finds_the_region_and_is_seeded():
    clf = RegionReader()
    a = RISEExplainer(clf, n_masks=400, cells=4, seed=3).explain(_scene()).maps
    b = RISEExplainer(clf, n_masks=400, cells=4, seed=3).explain(_scene()).maps
    assert torch.equal(a, b)
    _check_finds_region(a)
    c = RISEExplainer(clf, n_masks=400, cells=4, seed=4).explain(_scene()).maps
    assert not torch.equal(a, c)


def test_rise_equals_its_expectation_by_hand():
    """Two complementary half masks, p = 1/2, a classifier that reads the top-left pixel: the map is
    sigmoid(2 * 0.5) on the kept-left half (the pixel survives) and sigmoid(0) = 1/2 on the right half."""

    class TopLeft(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(2.0))

        def logit(self, x):
            return self.w * x[:, 0, 0, 0]

        def prob(self, x):
            return torch.sigmoid(self.logit(x))

    left = torch.zeros(1, 1, 4, 4)
    left[..., :2] = 1
    masks = torch.cat([left, 1 - left])
    x = torch.full((1, 1, 4, 4), 0.5)
    m = RISEExplainer(TopLeft(), masks=masks, p=0.5).explain(x).maps[0, 0]
    s1 = 1 / (1 + math.exp(-1.0))  # (s1 * left + 0.5 * right) / (2 masks * p 0.5)
    assert torch.allclose(m[:, :2], torch.full((4, 2), s1), atol=1e-6)
    assert torch.allclose(m[:, 2:], torch.full((4, 2), 0.5), atol=1e-6)


def test_rise_masks_statistics():
    m = rise_masks(500, (24, 20), cells=6, p=0.3, seed=0)
    assert m.shape == (500, 1, 24, 20) and float(m.min()) >= 0 and float(m.max()) <= 1
    assert abs(float(m.mean()) - 0.3) < 0.03
    assert torch.equal(m, rise_masks(500, (24, 20), cells=6, p=0.3, seed=0))


def test_pyramid_and_blur_by_hand():
    x = torch.zeros(1, 1, 9, 9)
    x[..., 4, 4] = 1.0
    y = gaussian_smooth(x, 1.0)
    assert abs(float(y.sum()) - 1.0) < 1e-5  # normalised kernel, the impulse stays inside
    assert abs(float(y[0, 0, 4, 4]) - (1 / (2 * math.pi))) < 2e-3  # the 2-D Gaussian's peak 1 / (2 pi sigma^2)
    pyr = blur_pyramid(x, 3, 2.0)
    assert torch.equal(pyr[:, -1], x)  # the last level is the image
    # mask 1 = the image, 0 = the most blurred, 0.25 = halfway between levels 0 and 1
    assert torch.allclose(apply_pyramid(pyr, torch.ones(1, 1, 9, 9)), x)
    assert torch.allclose(apply_pyramid(pyr, torch.zeros(1, 1, 9, 9)), pyr[:, 0])
    assert torch.allclose(apply_pyramid(pyr, torch.full((1, 1, 9, 9), 0.25)), 0.5 * (pyr[:, 0] + pyr[:, 1]), atol=1e-6)


def test_smooth_mask_generator_all_ones_and_zeros():
    gen = SmoothMaskGenerator((20, 20), step=2, sigma=4.0)
    ones, _ = gen.generate(torch.ones(1, 1, *gen.shape_in))
    zeros, _ = gen.generate(torch.zeros(1, 1, *gen.shape_in))
    assert ones.shape == (1, 1, 20, 20)
    # all-one parameters: every pixel sits within half a radius of a bump of height 1 (the smooth max is a little below 1)
    assert float(ones.min()) > 0.98 and float(ones.max()) <= 1.0 and float(zeros.abs().max()) == 0.0


def test_registered_and_checked():
    for name in ("extremal-perturbation", "meaningful-perturbation", "rise"):
        assert name in EXPLAINERS
    exps = build_explainers(["rise"], RegionReader(), batch_size=1)
    assert exps[0].name == "rise" and exps[0].explain(_scene(2)).maps.shape == (2, 1, SIZE, SIZE)
    with pytest.raises(MedxganError, match="areas"):
        ExtremalPerturbationExplainer(RegionReader(), areas=(0.0,))
    with pytest.raises(MedxganError, match="n_masks"):
        RISEExplainer(RegionReader(), n_masks=0)


def test_batch_equals_one_by_one():
    clf = RegionReader()
    x = _scene(3)
    for ex in (ExtremalPerturbationExplainer(clf, areas=(0.1,), max_iter=20, step=2, sigma=4.0), MeaningfulPerturbationExplainer(clf, steps=20)):
        whole = ex.explain(x).maps
        ex.batch_size = 1
        assert torch.allclose(whole, ex.explain(x).maps, atol=1e-5)


def test_report_verdict_counts_an_evaluated_perturbation_baseline():
    from medxgan.report.html import verdicts

    cell = lambda v: {"mean": v, "lo": v - 0.02, "hi": v + 0.02, "n": 30}  # noqa: E731
    res = {"methods": {"medxgan-lig": {"metrics": {"localisation.iou_area_matched": cell(0.46)}},
                       "smoothgrad": {"metrics": {"localisation.iou_area_matched": cell(0.38)}},
                       "extremal-perturbation": {"metrics": {"localisation.iou_area_matched": cell(0.47)}}}}
    v = next(x for x in verdicts(res) if x["method"] == "medxgan-lig" and x["key"] == "localisation.iou_area_matched")
    assert v["state"] == "no" and "Extremal Perturbation" in v["claim"]  # ahead of SmoothGrad, not of Extremal Perturbation
    assert {c["method"] for c in v["vs"]} == {"smoothgrad", "extremal-perturbation"}


def test_extremal_perturbation_splits_a_cpu_batch_by_the_mask_generators_size(monkeypatch):
    """On a CPU the images are optimised in passes whose mask-generator intermediate stays within CPU_MASK_PASS_BYTES
    (a larger pass thrashes the caches); maps and masks equal those of one pass of all images."""
    import medxgan.explain.perturbation as pert

    clf = RegionReader()
    x = _scene(3)
    ex = ExtremalPerturbationExplainer(clf, areas=(0.05, 0.1), max_iter=20, step=2, sigma=4.0)
    gen = SmoothMaskGenerator((SIZE, SIZE), 2, 4.0)
    per_image = 2 * gen.weight.numel() * 4  # two areas, float32
    monkeypatch.setattr(pert, "CPU_MASK_PASS_BYTES", 2 * per_image + 1)
    assert ex.images_per_pass(gen, 3, torch.device("cpu")) == 2
    assert ex.images_per_pass(gen, 3, torch.device("cuda")) == 3  # a GPU takes the whole batch
    split = ex.explain(x)
    monkeypatch.setattr(pert, "CPU_MASK_PASS_BYTES", 1)
    assert ex.images_per_pass(gen, 3, torch.device("cpu")) == 1  # never 0
    monkeypatch.setattr(pert, "CPU_MASK_PASS_BYTES", 10**12)
    whole = ex.explain(x)
    assert torch.allclose(split.maps, whole.maps, atol=1e-6)
    assert torch.allclose(split.extras["masks"], whole.extras["masks"], atol=1e-6) and split.extras["areas"] == [0.05, 0.1]
