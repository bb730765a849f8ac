"""Latent inversion on a tiny generator (CPU, seconds)."""

from __future__ import annotations

import pytest
import torch
from helpers import NZ1, NZ2, known_images, tiny_models

from medxgan.gan.inversion import invert, psnr


pytestmark = pytest.mark.usefixtures("one_thread")


def test_inversion_recovers_known_codes_image():
    g, clf = tiny_models()
    x, _, _ = known_images(3)
    r = invert(g, clf, x, steps=200, lr=0.1, restarts=2)
    assert r.z1.shape == (3, NZ1) and r.z2.shape == (3, NZ2) and r.reconstructions.shape == x.shape
    assert (r.psnr > 35).all(), r.psnr
    assert torch.allclose(r.psnr, psnr(r.reconstructions, x), atol=1e-3)
    assert (r.prob_gap < 0.02).all()
    assert (r.steps_run <= 200).all() and torch.isfinite(r.loss).all()


def test_batch_equals_single():
    g, clf = tiny_models()
    x, _, _ = known_images(3, seed=2)
    kw = dict(steps=60, lr=0.05, restarts=2, early_stop_patience=10)
    batch = invert(g, clf, x, **kw)
    singles = [invert(g, clf, x[i : i + 1], **kw) for i in range(3)]
    assert torch.allclose(batch.z1, torch.cat([s.z1 for s in singles]), atol=1e-4)
    assert torch.allclose(batch.z2, torch.cat([s.z2 for s in singles]), atol=1e-4)
    assert torch.allclose(batch.psnr, torch.cat([s.psnr for s in singles]), atol=1e-2)
    assert torch.equal(batch.steps_run, torch.cat([s.steps_run for s in singles]))


def test_early_stop_and_restarts_keep_best():
    g, clf = tiny_models()
    x, _, _ = known_images(2, seed=3)
    one = invert(g, clf, x, steps=300, lr=0.1, restarts=1, early_stop_patience=5, min_rel_improvement=0.05)
    assert (one.steps_run < 300).all()  # frozen early
    more = invert(g, clf, x, steps=40, lr=0.1, restarts=3, early_stop_patience=None)
    base = invert(g, clf, x, steps=40, lr=0.1, restarts=1, early_stop_patience=None)
    assert (more.loss <= base.loss + 1e-6).all()  # restart 0 is the same start in both
    assert (more.steps_run == 40).all()


def test_inversion_leaves_models_untouched():
    g, clf = tiny_models()
    g.train()
    before = {k: v.clone() for k, v in g.state_dict().items()}
    x, _, _ = known_images(1)
    invert(g, clf, x, steps=5)
    assert g.training  # mode restored
    assert all(p.requires_grad for p in g.parameters())
    assert all(torch.equal(before[k], v) for k, v in g.state_dict().items())  # BN stats not updated
    g.eval()
    with torch.no_grad():  # a caller's no_grad() does not break the optimisation
        assert invert(g, clf, x, steps=3, restarts=1).steps_run.item() == 3


def test_pivotal_tuning_improves_reconstruction_and_keeps_original():
    g, clf = tiny_models()
    # an image the generator cannot produce exactly: a generated one with a bright square pasted in
    x, _, _ = known_images(1, seed=4)
    x = x.clone()
    x[..., 4:9, 5:10] = 0.8
    before = {k: v.clone() for k, v in g.state_dict().items()}
    plain = invert(g, clf, x, steps=80, lr=0.1, restarts=1)
    tuned = invert(g, clf, x, steps=80, lr=0.1, restarts=1, tune_generator=True, tune_steps=60, tune_lr=1e-3)
    assert tuned.generators is not None and len(tuned.generators) == 1
    assert float(tuned.psnr[0]) > float(plain.psnr[0]) + 2.0
    assert all(torch.equal(before[k], v) for k, v in g.state_dict().items())
    # locality: the tuned copy stays close to G elsewhere in latent space
    z1, z2 = torch.randn(32, NZ1), torch.randn(32, NZ2)
    with torch.no_grad():
        drift = (tuned.generators[0](z1, z2) - g(z1, z2)).abs().mean()
        change_at_x = (tuned.reconstructions - plain.reconstructions).abs().mean()
    assert drift < change_at_x


def test_bad_arguments():
    from medxgan.runtime.errors import MedxganError

    g, clf = tiny_models()
    x, _, _ = known_images(1)
    with pytest.raises(MedxganError):
        invert(g, clf, x, z1_init="ones")
    with pytest.raises(MedxganError):
        invert(g, clf, x, restarts=0)
