"""Latent Integrated Gradients: exactness on a linear classifier, completeness at the defaults."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medxgan.classifiers import ClassifierAdapter
from medxgan.explain import CounterfactualEngine, DifferenceExplainer, LIGExplainer, latent_integrated_gradients
from medxgan.explain.lig import DEFAULT_LIG_STEPS, DEFAULT_TOL
from helpers import NZ1, NZ2, SIZE, known_images, tiny_models


pytestmark = pytest.mark.usefixtures("one_thread")


def _codes(n: int = 4, seed: int = 7):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, NZ1, generator=gen), torch.randn(n, NZ2, generator=gen)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("rule", ["trapezoid", "left"])
def test_lig_equals_w_times_difference_for_a_linear_classifier(channels, rule):
    g, _ = tiny_models(channels)
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(channels * SIZE * SIZE, 1))
    clf = ClassifierAdapter(lin, output="logit1")
    z1, z2 = _codes(3)
    r = latent_integrated_gradients(g, clf, z1, z2, steps=5, rule=rule, tol=None)
    with torch.no_grad():
        x_pos, x_neg = g(z1, z2), g(z1, torch.zeros_like(z2))
    w = lin[1].weight.view(1, channels, SIZE, SIZE)
    expected = (w * (x_pos - x_neg)).sum(1, keepdim=True)  # any path: the gradient is constant
    assert r.maps.shape == (3, 1, SIZE, SIZE)
    assert torch.allclose(r.maps, expected, atol=1e-5)
    assert torch.allclose(r.total, r.delta, atol=1e-4)  # completeness, exactly


def test_completeness_at_default_steps_on_a_small_model():
    g, clf = tiny_models()
    z1, z2 = _codes(6)
    r = latent_integrated_gradients(g, clf, z1, z2, tol=None)  # the default number of steps, no refinement
    assert (r.steps == DEFAULT_LIG_STEPS).all()
    assert (r.delta.abs() > 0.5).sum() >= 3, r.delta  # the path really changes the classifier's output
    assert (r.completeness_rel <= DEFAULT_TOL).all(), r.completeness_rel
    assert torch.allclose(r.total, r.maps.flatten(1).sum(1), atol=1e-4)


def test_trapezoid_beats_left_riemann_and_refinement_meets_tolerance():
    g, clf = tiny_models()
    z1, z2 = _codes(4, seed=8)
    left = latent_integrated_gradients(g, clf, z1, z2, steps=8, rule="left", tol=None)
    trap = latent_integrated_gradients(g, clf, z1, z2, steps=8, rule="trapezoid", tol=None)
    assert trap.completeness_error.mean() < left.completeness_error.mean()
    refined = latent_integrated_gradients(g, clf, z1, z2, steps=2, tol=0.01, max_steps=512)
    assert ((refined.completeness_rel <= 0.01) | (refined.steps == 512)).all()
    assert (refined.steps >= 2).all()


def test_prob_output_and_authors_form():
    g, clf = tiny_models()
    z1, z2 = _codes(2)
    rp = latent_integrated_gradients(g, clf, z1, z2, output="prob", tol=None)
    with torch.no_grad():
        dp = clf.prob(g(z1, z2)) - clf.prob(g(z1, torch.zeros_like(z2)))
    assert torch.allclose(rp.delta, dp, atol=1e-5)
    assert (rp.completeness_rel <= DEFAULT_TOL).all()
    ra = latent_integrated_gradients(g, clf, z1, z2, form="authors")
    assert ra.maps.shape == (2, 1, SIZE, SIZE) and torch.isfinite(ra.maps).all()
    assert (ra.steps == 100).all()  # 101 points as in the authors' code, never refined
    assert torch.isfinite(ra.completeness_error).all()  # reported, not guaranteed small


def test_lig_and_difference_explainers_share_one_inversion():
    g, clf = tiny_models()
    x, _, _ = known_images(3, seed=9)
    engine = CounterfactualEngine(g, clf, inversion=dict(steps=30, restarts=1))
    lig = LIGExplainer(engine, batch_size=2).explain(x)
    diff = DifferenceExplainer(engine).explain(x)
    assert engine.inversions_run == 3
    assert lig.maps.shape == diff.maps.shape == (3, 1, SIZE, SIZE)
    assert lig.extras["completeness_rel"].shape == (3,)
    assert torch.equal(lig.extras["x_neg"], diff.extras["x_neg"])
    assert lig.method == "medxgan-lig" and diff.method == "medxgan-difference"
