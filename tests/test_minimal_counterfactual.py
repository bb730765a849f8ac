"""Minimal counterfactuals: lesion-free twins, the masked generator, the minimality terms, the
counterfactual term of inversion, and exact resume with every new training term switched on."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from helpers import small_conv_classifier, square_lesion_data
from medxgan.classifiers import wrap_classifier
from medxgan.data import load_dataset
from medxgan.data.phantoms import synthesize
from medxgan.gan import get_preset, train_gan
from medxgan.gan.inversion import InversionConfig, _per_image_loss
from medxgan.gan.networks import build_generator
from medxgan.gan.train import minimality_terms
from medxgan.runtime.runs import RunDir
from medxgan.runtime.state import load_weights

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = dict(g_width=4, d_width=4, nz1=8, nz2=4)


def test_minimality_terms_hand_values():
    image = torch.tensor([[[[0.5, 0.0], [0.0, 0.0]]]])
    base = torch.zeros_like(image)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    t = minimality_terms(image, base, mask)
    assert t["prox"].tolist() == [0.125]  # |0.5| / 4 pixels
    assert t["mask"].tolist() == [0.25]
    # rows: |0 - 1|, |0 - 0| -> mean 0.5; columns: the same -> TV 1.0
    assert t["tv"].tolist() == [1.0]
    assert set(minimality_terms(image, base, None)) == {"prox"}


def test_masked_generator_counterfactual_is_the_anatomy():
    torch.manual_seed(0)
    G = build_generator(get_preset("default", channels=1, pathology="mask", **TINY).net).eval()
    z1, z2 = torch.randn(5, 8), torch.randn(5, 4)
    with torch.no_grad():
        x, base, mask = G(z1, z2, return_parts=True)
        assert torch.equal(G(z1, torch.zeros_like(z2)), G.parts(z1, z2)[1])  # G(z1, 0) == B(z1) exactly
        assert torch.equal(G(z1, z2), x)
        assert float(x.abs().max()) <= 1.0 and float(mask.min()) >= 0 and float(mask.max()) <= 1
        # z2 changes a pixel by at most 2 * mask there (content and anatomy both lie in [-1, 1])
        assert bool(((x - base).abs() <= 2 * mask + 1e-6).all())
        assert float(G.parts(z1, torch.zeros_like(z2))[2].abs().max()) == 0.0
    joint = build_generator(get_preset("joint", channels=1, **TINY).net)
    assert not any(k.startswith("path_") for k in joint.state_dict())  # the paper layout is unchanged


def test_smooth_mask_cannot_switch_on_single_pixels():
    from medxgan.gan.networks import _smooth
    from medxgan.runtime.errors import MedxganError

    flat = torch.full((1, 1, 8, 8), 2.5)
    assert torch.allclose(_smooth(flat, 4), flat)  # a constant map is kept
    spike = torch.zeros(1, 1, 8, 8)
    spike[0, 0, 1, 1] = 16.0
    s = _smooth(spike, 4)
    assert float(s.max()) <= 16.0 / 16 + 1e-6  # one pixel's logit is shared with its 4 x 4 cell: at most 1/16 of it
    assert float(s[0, 0, 6, 6]) < float(s[0, 0, 1, 1])  # and stays near its cell
    assert torch.equal(_smooth(spike, 1), spike)  # mask_scale 1: the full-resolution mask (older runs)
    torch.manual_seed(0)
    G = build_generator(get_preset("default", channels=1, mask_scale=4, **TINY).net).eval()
    with torch.no_grad():
        z1, z2 = torch.randn(3, 8), torch.randn(3, 4)
        assert torch.equal(G(z1, torch.zeros_like(z2)), G.parts(z1, z2)[1])  # still G(z1, 0) == B(z1) exactly
    with pytest.raises(MedxganError, match="mask_scale"):
        build_generator(get_preset("default", channels=1, mask_scale=3, **TINY).net)  # 64 px: 3 does not divide it


@pytest.mark.parametrize("kind", ["brain-mri", "chest-xray"])
def test_twins_match_positives_outside_the_lesion(tmp_path, kind):
    out = tmp_path / kind
    synthesize(kind, out, n=8, size=32, seed=3, show_progress=False)
    twins = sorted((out / "twins").rglob("*.png"))
    positives = sorted(p for p in out.rglob("positive/*.png") if p.parts[-4] not in ("masks", "twins"))
    assert [t.relative_to(out / "twins") for t in twins] == [p.relative_to(out) for p in positives]
    assert not list((out / "twins").rglob("negative/*.png"))
    for p in positives:
        rel = p.relative_to(out)
        a = np.asarray(Image.open(p)).astype(int)
        t = np.asarray(Image.open(out / "twins" / rel)).astype(int)
        m = np.asarray(Image.open(out / "masks" / rel)) > 0
        assert m.any()
        assert np.array_equal(a[~m], t[~m])  # the same subject, pixel for pixel (8-bit PNGs of the same floats)
        assert np.abs(a - t)[m].max() > 0  # only the lesion is missing
    ds = load_dataset(out, size=32)
    x, y, _, _ = ds.tensors()
    tw, has = ds.twins()
    assert ds.has_twins and has.tolist() == (y == 1).tolist()
    assert float((tw[has] - x[has]).abs().max()) > 0 and float(tw[~has].abs().max()) == 0


def test_dataset_without_twins(tmp_path):
    out = tmp_path / "b"
    synthesize("brain-mri", out, n=4, size=32, show_progress=False)
    shutil.rmtree(out / "twins")
    ds = load_dataset(out, size=32)
    assert not ds.has_twins and not ds.twins()[1].any()


def test_inversion_counterfactual_term_hand_computed():
    torch.manual_seed(0)
    G = build_generator(get_preset("default", channels=1, size=32, pathology="mask", **TINY).net).eval()
    clf = wrap_classifier(nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 1)), output="logit1")
    z1, z2, x = torch.randn(3, 8), torch.randn(3, 4), torch.rand(3, 1, 32, 32) * 2 - 1
    p = torch.full((3,), 0.7)
    with torch.no_grad():
        plain, _ = _per_image_loss(G, clf, z1, z2, x, p, InversionConfig(w_pix=10.0, w_cls=1.0))
        with_cf, _ = _per_image_loss(G, clf, z1, z2, x, p, InversionConfig(w_pix=10.0, w_cls=1.0, w_cf=2.5))
        logit_cf = clf.logit(G(z1, torch.zeros_like(z2)))
        expected = 2.5 * torch.log1p(torch.exp(logit_cf))  # BCE(sigmoid(l), 0) = log(1 + e^l)
    assert torch.allclose(with_cf - plain, expected, atol=1e-5)


def test_inversion_realism_term_hand_computed():
    from medxgan.gan.inversion import counterfactual_images, invert
    from medxgan.gan.networks import build_discriminator
    from medxgan.runtime.errors import MedxganError

    torch.manual_seed(0)
    net = get_preset("default", channels=1, size=32, **TINY).net
    G, D = build_generator(net).eval(), build_discriminator(net).eval()
    clf = wrap_classifier(nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 1)), output="logit1")
    z1, z2, x = torch.randn(3, 8), torch.randn(3, 4), torch.rand(3, 1, 32, 32) * 2 - 1
    p = torch.full((3,), 0.7)
    with torch.no_grad():
        plain, _ = _per_image_loss(G, clf, z1, z2, x, p, InversionConfig(w_pix=10.0, w_cls=1.0, counterfactual="residual"))
        with_real, _ = _per_image_loss(G, clf, z1, z2, x, p, InversionConfig(w_pix=10.0, w_cls=1.0, counterfactual="residual", w_real=0.5),
                                       disc=D)
        d = D(counterfactual_images(G, z1, z2, x)[2], torch.zeros(3, dtype=torch.long))  # the negative class
        expected = 0.5 * torch.log1p(torch.exp(-d))  # BCE(sigmoid(d), 1) = log(1 + e^-d)
    assert torch.allclose(with_real - plain, expected, atol=1e-5)
    with pytest.raises(MedxganError, match="discriminator"):
        invert(G, clf, x, steps=1, w_real=1.0)


def _tiny_data(n=32, size=32, channels=1, seed=0):
    return square_lesion_data(n, size, channels, seed)


def _tiny_classifier(seed=0):
    return small_conv_classifier(1, seed)


def _train(out, steps, preset_name, **kw):
    extra = {"anchored": {"cf_adv_weight": 1.0}, "residual": {"cf_mode": "residual", "mask_scale": 4}}.get(preset_name, {})
    preset = get_preset("default" if preset_name == "residual" else preset_name, channels=1, size=32, pathology="mask", mask_weight=1.0,
                        tv_weight=0.5, prox_weight=0.5, **extra, **TINY)
    return train_gan(_tiny_data(), _tiny_classifier(), out, preset=preset, steps=steps, batch_size=8,
                     oracle=_tiny_classifier(seed=1), device="cpu", quiet=True, monitor_samples=16, log_every=2, ckpt_every=3, **kw)


@pytest.mark.parametrize("preset_name", ["default", "anchored", "residual"])
def test_resume_is_exact_with_the_minimality_terms(tmp_path, preset_name):
    a, b = tmp_path / "a", tmp_path / "b"
    _train(a, 6, preset_name)
    _train(b, 3, preset_name)
    _train(b, 6, preset_name, resume=True)
    wa, wb = load_weights(a / "generator.safetensors"), load_weights(b / "generator.safetensors")
    assert any(k.startswith("path_") for k in wa)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    rows = RunDir(a).read_metrics()
    assert "g_mask" in rows[-1] and "g_prox" in rows[-1]
    if preset_name != "default":
        assert "rec_mask" in rows[-1] and "g_cf_adv" in rows[-1]
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert strip(rows[-1]) == strip(RunDir(b).read_metrics()[-1])


def test_training_residual_counterfactual_is_the_one_explanations_show():
    from medxgan.gan.inversion import counterfactual_images
    from medxgan.gan.train import GANTrainer

    preset = get_preset("default", channels=1, size=32, cf_mode="residual", mask_scale=4, **TINY)
    torch.manual_seed(0)
    tr = GANTrainer(preset, _tiny_classifier(), device="cpu")
    torch.manual_seed(0)
    real, labels = torch.rand(4, 1, 32, 32) * 2 - 1, torch.tensor([1, 0, 1, 0])
    z1, z2 = torch.randn(4, 8), torch.randn(4, 4) * (labels == 1).float().view(-1, 1)
    with torch.no_grad():
        _, base, mask = tr.G(z1, z2, return_parts=True)
        tr._parts = (base, mask)
        cf = tr._counterfactuals(real, labels, z1, z2)
        _, _, x_res = counterfactual_images(tr.G, z1, z2, real)
    assert torch.allclose(cf[labels == 1], x_res[labels == 1], atol=1e-6)  # positives: (1 - gM) x + gM B(z1)
    assert torch.equal(cf[labels == 0], base[labels == 0])  # negatives: B(z1), never the real scan itself
    with pytest.raises(Exception, match="cf_mode"):
        get_preset("default", channels=1, cf_mode="other")


def test_twin_metrics_hand_values():
    from medxgan.evaluate.twins import normalised_cross_correlation, twin_agreement, twin_effect_map, twin_fidelity

    twin = torch.zeros(1, 2, 2)
    x = torch.tensor([[[0.4, 0.0], [0.0, 0.0]]])  # the lesion: one pixel of +0.4
    cf = torch.tensor([[[0.2, 0.0], [0.0, 0.0]]])  # removes half of it
    f = twin_fidelity(x, cf, twin)
    assert f["mae"] == pytest.approx(0.05) and f["mae_input"] == pytest.approx(0.1)
    assert f["psnr_input"] == pytest.approx(10 * np.log10(4 / 0.04))  # MSE 0.16 / 4
    assert f["psnr_gain"] == pytest.approx(10 * np.log10(4.0))  # a quarter of the squared error: +6.02 dB
    assert torch.equal(twin_effect_map(x, twin), x.abs())
    agree = twin_agreement(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), x, twin)
    assert agree["ncc"] == pytest.approx(1.0) and agree["spearman"] == pytest.approx(1.0)
    assert normalised_cross_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(normalised_cross_correlation([1, 1, 1], [3, 2, 1]))


class _TableGenerator(nn.Module):
    """G(z1, z2): a fixed anatomy plus z2[0] times a fixed change in the bottom row (2 x 2 images)."""

    nz1, nz2 = 1, 1

    def forward(self, z1, z2):
        base = torch.tensor([[[[0.1, 0.3], [0.2, -0.9]]]]).expand(z1.shape[0], 1, 2, 2)
        change = torch.tensor([[[[0.0, 0.0], [0.6, 0.9]]]])
        return base + z2.view(-1, 1, 1, 1) * change


def test_residual_counterfactual_keeps_what_the_generator_did_not_change():
    from medxgan.gan.inversion import counterfactual_images

    x = torch.tensor([[[[0.5, -0.2], [0.9, 0.0]]]])
    x_pos, x_neg, x_res = counterfactual_images(_TableGenerator(), torch.zeros(1, 1), torch.ones(1, 1), x)
    assert torch.allclose(x_pos, torch.tensor([[[[0.1, 0.3], [0.8, 0.0]]]]))
    # only the bottom row changed between x_neg and x_pos: x keeps its top row; clamped to [-1, 1]
    assert torch.allclose(x_res, torch.tensor([[[[0.5, -0.2], [0.3, -0.9]]]]))


def test_residual_counterfactual_of_a_masked_generator_inpaints_the_mask():
    from medxgan.gan.inversion import counterfactual_images

    torch.manual_seed(0)
    G = build_generator(get_preset("default", channels=1, size=32, pathology="mask", **TINY).net).eval()
    z1, z2, x = torch.randn(2, 8), torch.randn(2, 4), torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        _, base, gm = G(z1, z2, return_parts=True)
        x_pos, x_neg, x_res = counterfactual_images(G, z1, z2, x)
        assert torch.equal(x_neg, base)
        assert torch.allclose(x_res, (1 - gm) * x + gm * base)


@pytest.mark.parametrize("pathology", ["joint", "mask"])
def test_residual_mode_explains_the_path_from_x_res_to_the_scan(pathology):
    """With counterfactual="residual" the frames run from x_res to the scan itself, the difference map is
    |x - x_res| and LIG's completeness reads sum(LIG) ~ f(x) - f(x_res)."""
    from medxgan import MedXGAN

    torch.manual_seed(0)
    G = build_generator(get_preset("default", channels=1, size=16, pathology=pathology, nz1=8, nz2=4, g_width=8).net).eval()
    clf = wrap_classifier(nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 64, 1)), output="logit1")
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    mx = MedXGAN(G, clf, inversion=dict(steps=5, restarts=1, counterfactual="residual", w_cf=1.0, w_min=1.0))
    res = mx.explain(x, frames=5, lig_steps=64, lig_tol=None)
    for i, r in enumerate(res):
        assert r.counterfactual == "residual"
        assert torch.allclose(r.frames[0], r.residual, atol=1e-6) and torch.allclose(r.frames[-1], x[i], atol=1e-6)
        assert torch.allclose(r.difference, (x[i] - r.residual).abs(), atol=1e-6)
        with torch.no_grad():
            delta = float(clf.logit(x[i : i + 1]) - clf.logit(r.residual[None]))
        assert r.lig_delta == pytest.approx(delta, abs=1e-5)
        assert float(r.lig.sum()) == pytest.approx(delta, abs=0.02 * abs(delta) + 1e-3)
