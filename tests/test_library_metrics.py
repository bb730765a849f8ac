"""The library-backed metrics (torchmetrics, SciPy, scikit-learn, scikit-image) against hand-computed values
on tiny inputs, against the libraries' reference functions on random inputs, and against the hand-written
implementations they replaced (kept here as references, verbatim in their arithmetic), so that any change
of a reported number shows up as a failing pin."""

import math

import numpy as np
import pytest
import torch

from medxgan.evaluate import bootstrap_ci, iou_otsu, pixel_auprc, pixel_auroc, spearman, ssim
from medxgan.evaluate.localisation import otsu_threshold_bin
from medxgan.runtime import quality
from medxgan.runtime.ranking import roc_auc
from medxgan.runtime.tensors import psnr as psnr_pm1
from medxgan.translate import psnr as psnr01
from medxgan.translate import ssim as ssim01


# ------------------------------------------------------------------------------------------------
# the replaced hand-written versions (commit 31b95b1), as references
# ------------------------------------------------------------------------------------------------
def _old_otsu_bin(v, nbins=256):
    idx = np.minimum((v * nbins).astype(np.int64), nbins - 1)
    hist = np.bincount(idx, minlength=nbins).astype(np.float64)
    centers = (np.arange(nbins) + 0.5) / nbins
    w0 = np.cumsum(hist)[:-1]
    w1 = hist.sum() - w0
    s0 = np.cumsum(hist * centers)[:-1]
    s1 = (hist * centers).sum() - s0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (s0 / w0 - s1 / w1) ** 2
    between = np.where((w0 > 0) & (w1 > 0), between, -1.0)
    return idx, int(np.argmax(between))


def _old_ranks(x):
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]
    ranks = np.empty(x.size)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def _old_auroc(s, m):
    pos = m.ravel()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    r = _old_ranks(s.ravel())
    return (r[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _old_auprc(s, m):
    order = np.argsort(-s.ravel(), kind="stable")
    v, pos = s.ravel()[order], m.ravel()[order]
    tp, fp = np.cumsum(pos), np.cumsum(~pos)
    last = np.r_[v[1:] != v[:-1], True]
    tp, fp = tp[last].astype(float), fp[last].astype(float)
    return float(np.sum(np.diff(np.r_[0.0, tp / pos.sum()]) * tp / (tp + fp)))


def _old_spearman(a, b):
    rx, ry = _old_ranks(np.abs(a)), _old_ranks(np.abs(b))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx @ ry) / np.sqrt((rx @ rx) * (ry @ ry)))


def _old_bootstrap(v, n_resamples=1000, confidence=0.95, seed=0):
    v = np.asarray(v, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, v.size, size=(n_resamples, v.size))
    alpha = (1 - confidence) / 2
    return tuple(np.percentile(v[idx].mean(axis=1), [100 * alpha, 100 * (1 - alpha)]))


def _old_ssim_nchw(x, y, data_range=1.0, window=11, sigma=1.5):
    c = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-(c ** 2) / (2 * sigma ** 2))
    g = (g / g.sum()).float().double()  # the old code rounded the window through float32
    ch = x.shape[1]
    gh, gv = g.view(1, 1, 1, -1).repeat(ch, 1, 1, 1), g.view(1, 1, -1, 1).repeat(ch, 1, 1, 1)
    f = lambda t: torch.nn.functional.conv2d(torch.nn.functional.conv2d(t, gh, groups=ch), gv, groups=ch)  # noqa: E731
    x, y = x.double(), y.double()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
    return (((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))).mean(dim=(1, 2, 3))


def _demo_like_maps(n=240, size=64, seed=0):
    """Maps of the kinds the benchmark scores: smooth blobs plus noise, coarse upsampled (Grad-CAM-like)
    maps with plateaus, occlusion-like patch maps, quantised maps with many ties; random lesion masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for i in range(n):
        cy, cx, r = rng.integers(12, size - 12, 2).tolist() + [int(rng.integers(4, 10))]
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        blob = np.exp(-((yy - cy - rng.normal(0, 3)) ** 2 + (xx - cx - rng.normal(0, 3)) ** 2) / (2 * (r + 2) ** 2))
        kind = i % 4
        if kind == 0:
            a = blob + 0.3 * rng.normal(size=(size, size))
        elif kind == 1:
            a = np.kron(blob[::8, ::8] + 0.2 * rng.random((size // 8, size // 8)), np.ones((8, 8)))
        elif kind == 2:
            a = np.kron(np.round(blob[::4, ::4] * 5) / 5, np.ones((4, 4)))
        else:
            a = np.round((blob + 0.1 * rng.random((size, size))) * 20)
        out.append((a, m))
    return out


# ------------------------------------------------------------------------------------------------
# SSIM / PSNR (torchmetrics, runtime.quality)
# ------------------------------------------------------------------------------------------------
def test_ssim_psnr_hand_values():
    one, zero = torch.ones(1, 1, 11, 11), torch.zeros(1, 1, 11, 11)
    assert float(quality.ssim(one, zero)) == pytest.approx(1e-4 / (1 + 1e-4))  # C1 / (1 + C1)
    assert float(quality.ssim(one, one)) == pytest.approx(1.0)
    x = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    y = x + torch.tensor([0.1, 0.5], dtype=torch.float64).view(2, 1, 1, 1)  # MSE 0.01 and 0.25
    # torchmetrics scales by 10 / ln(10) computed in float32: 5e-8 relative (< 2e-6 dB) off the exact value
    np.testing.assert_allclose(quality.psnr(x, y, 1.0).numpy(), [20.0, 10 * math.log10(4)], rtol=1e-7)
    np.testing.assert_allclose(quality.psnr(x, y).numpy(), [10 * math.log10(400), 10 * math.log10(16)], rtol=1e-7)
    assert float(quality.psnr(x[:1], x[:1])[0]) == pytest.approx(10 * math.log10(4e12), rel=1e-7)  # MSE floor 1e-12
    with pytest.raises(ValueError, match="smaller than"):
        quality.ssim(torch.rand(1, 1, 10, 20), torch.rand(1, 1, 10, 20))


def test_ssim_matches_skimage_and_the_replaced_code():
    metrics = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 40, 33, generator=g)
    y = (x + 0.3 * torch.rand(3, 3, 40, 33, generator=g)).clamp(0, 1)
    new = quality.ssim(x, y)
    for i in range(3):  # scikit-image with Wang et al.'s settings (it crops to the valid region too)
        ref = metrics.structural_similarity(x[i].double().numpy(), y[i].double().numpy(), channel_axis=0, data_range=1.0,
                                            gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert float(new[i]) == pytest.approx(ref, abs=1e-7)
    np.testing.assert_allclose(new.numpy(), _old_ssim_nchw(x, y).numpy(), atol=1e-7)  # old window was float32
    np.testing.assert_array_equal(ssim01(x, y).numpy(), new.float().numpy())
    mask = (torch.rand(3, 1, 40, 33, generator=g) > 0.4).float()
    s_full = quality.ssim_map(x, y).mean(1, keepdim=True)
    m = mask[..., 5:-5, 5:-5]
    np.testing.assert_allclose(quality.ssim(x, y, mask=mask).numpy(), ((s_full * m).sum((1, 2, 3)) / m.sum((1, 2, 3))).numpy())


def test_psnr_wrappers_match_the_replaced_code():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(5, 3, 16, 16, generator=g) * 2 - 1
    b = (a + 0.1 * torch.randn(5, 3, 16, 16, generator=g)).clamp(-1, 1)
    old_pm1 = 10.0 * torch.log10(4.0 / (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-12))  # float32 arithmetic
    new = psnr_pm1(a, b)
    assert new.dtype == torch.float32
    assert (new - old_pm1).abs().max() < 1e-4  # now float64 inside: differences are float32 rounding only
    a01, b01 = (a + 1) / 2, (b + 1) / 2
    old01 = (10 * torch.log10(1 / ((a01.double() - b01.double()) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-12))).float()
    np.testing.assert_allclose(psnr01(a01, b01).numpy(), old01.numpy(), rtol=1e-6)


def test_map_ssim_matches_the_replaced_numpy_code():
    def old(a, b, L=1.0):
        x, y = a / np.abs(a).max(), b / np.abs(b).max()
        t = np.arange(11) - 5.0
        g = np.exp(-0.5 * (t / 1.5) ** 2)
        g /= g.sum()
        f = lambda z: np.lib.stride_tricks.sliding_window_view(  # noqa: E731
            np.lib.stride_tricks.sliding_window_view(z, 11, axis=0) @ g, 11, axis=1) @ g
        mx, my = f(x), f(y)
        vxx, vyy, vxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
        c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
        return float((((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vxx + vyy + c2))).mean())

    for a, _ in _demo_like_maps(24, seed=5):
        b = a + 0.2 * np.random.default_rng(0).normal(size=a.shape)
        assert ssim(a, b) == pytest.approx(old(np.abs(a), np.abs(b)), abs=1e-12)
        assert ssim(a, b, mode="raw") == pytest.approx(old(a, b, 2.0), abs=1e-12)


# ------------------------------------------------------------------------------------------------
# FID / KID (torchmetrics with a custom feature extractor: nothing downloaded)
# ------------------------------------------------------------------------------------------------
def _flat(x):
    return x.flatten(1)


def test_fid_matches_the_frechet_formula():
    linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(0)
    real = torch.rand(60, 1, 2, 2, generator=g)
    fake = torch.rand(50, 1, 2, 2, generator=g) * 0.8 + 0.1
    f1, f2 = _flat(real).double().numpy(), _flat(fake).double().numpy()
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert quality.fid(_flat, 4, real, fake, batch_size=16) == pytest.approx(ref, rel=1e-6)
    assert quality.fid(_flat, 4, real, real) == pytest.approx(0.0, abs=1e-6)


def test_kid_matches_the_unbiased_mmd():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand(30, 1, 2, 2, generator=g), torch.rand(20, 1, 2, 2, generator=g) + 0.2
    x, y = _flat(real).double().numpy(), _flat(fake).double().numpy()
    m = 20  # subset_size capped at the smaller sample; one subset of size 20 of each
    k = lambda a, b: (a @ b.T / a.shape[1] + 1) ** 3  # noqa: E731  (torchmetrics' polynomial kernel)
    state = torch.get_rng_state()
    mean, std = quality.kid(_flat, 4, real, fake, subsets=1, subset_size=1000, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    # reproduce the one subset torchmetrics draws (randperm of the real then of the fake features)
    torch.manual_seed(3)
    xs, ys = x[torch.randperm(30)[:m].numpy()], y[torch.randperm(20)[:m].numpy()]
    kxx, kyy, kxy = k(xs, xs), k(ys, ys), k(xs, ys)
    ref = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
    assert mean == pytest.approx(ref, rel=1e-6) and std == pytest.approx(0.0, abs=1e-9)
    assert quality.kid(_flat, 4, real, fake, subsets=5, subset_size=10, seed=3) == quality.kid(
        _flat, 4, real, fake, subsets=5, subset_size=10, seed=3)


# ------------------------------------------------------------------------------------------------
# ranking (scikit-learn), Spearman and bootstrap (SciPy), Otsu (scikit-image)
# ------------------------------------------------------------------------------------------------
def test_ranking_and_otsu_match_the_replaced_code_on_demo_like_maps():
    for a, m in _demo_like_maps():
        s = np.abs(a)
        assert pixel_auroc(s, m) == pytest.approx(_old_auroc(s, m), abs=1e-12)
        assert pixel_auprc(s, m) == pytest.approx(_old_auprc(s, m), abs=1e-12)
        v = ((s - s.min()) / (s.max() - s.min())).ravel()
        idx, k = otsu_threshold_bin(v)
        old_idx, old_k = _old_otsu_bin(v)
        assert k == old_k and np.array_equal(idx, old_idx)
    rng = np.random.default_rng(7)
    scores, labels = rng.integers(0, 4, 300).astype(float), rng.random(300) < 0.4
    assert roc_auc(scores, labels) == pytest.approx(_old_auroc(scores, labels), abs=1e-12)


def test_otsu_keeps_the_whole_bin_class_boundary():
    # values: 0 (x3), 0.5 (bin 128, x1) and 1 (x3): Otsu splits at bin 127 or 128; the foreground is whole
    # bins above k*, never "value > bin centre" (scikit-image's own rule).
    s = np.array([[0.0, 0.0, 0.0, 0.5005, 1.0, 1.0, 1.0]])
    m = np.array([[0, 0, 0, 0, 1, 1, 1]], bool)
    idx, k = otsu_threshold_bin(s.ravel())
    assert idx.tolist() == [0, 0, 0, 128, 255, 255, 255]
    fg = idx > k
    assert fg.tolist() == (idx > _old_otsu_bin(s.ravel())[1]).tolist()
    assert iou_otsu(s, m) == pytest.approx(_iou(fg, m.ravel()))


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_spearman_and_bootstrap_match_the_replaced_code():
    for a, _ in _demo_like_maps(40, seed=2):
        b = a + np.random.default_rng(1).normal(size=a.shape)
        assert spearman(a, b) == pytest.approx(_old_spearman(a, b), abs=1e-12)
    rng = np.random.default_rng(0)
    for n in (2, 3, 17, 240):
        v = rng.random(n)
        _, lo, hi, k = bootstrap_ci(v, seed=n)
        assert k == n and (lo, hi) == pytest.approx(_old_bootstrap(v, seed=n), rel=1e-12, abs=1e-15)
