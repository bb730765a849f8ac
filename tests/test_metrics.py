"""Explanation-evaluation metrics: hand-computed values on tiny maps and masks."""

import math

import numpy as np
import pytest
import torch

from medxgan.evaluate import (
    LOCALISATION_KEYS,
    aggregate,
    bootstrap_ci,
    counterfactual_metrics,
    deletion_curve,
    gaussian_blur,
    iou_area_matched,
    iou_otsu,
    localisation_metrics,
    max_sensitivity,
    pixel_auprc,
    pixel_auroc,
    pointing_game,
    relevance_mass,
    relevance_rank,
    score_map,
    spearman,
    ssim,
    topk_overlap,
)
from medxgan.runtime.errors import MedxganError


def _blob_mask(h=8, w=8, r0=2, r1=5, c0=3, c1=6):
    m = np.zeros((h, w), bool)
    m[r0:r1, c0:c1] = True
    return m


# ------------------------------------------------------------------------------------------------
# localisation
# ------------------------------------------------------------------------------------------------
def test_3x3_hand_computed():
    s = np.array([[0.9, 0.1, 0.2],
                  [0.8, 0.7, 0.3],
                  [0.0, 0.6, 0.4]])
    m = np.array([[1, 1, 0],
                  [1, 0, 0],
                  [0, 0, 0]], bool)
    # Top-3 = {0.9, 0.8, 0.7}; in M: 0.9, 0.8 -> intersection 2, union 3 + 3 - 2 = 4 -> IoU 0.5.
    assert iou_area_matched(s, m) == pytest.approx(0.5)
    assert relevance_rank(s, m) == pytest.approx(2 / 3)
    # AUROC: positives {0.9, 0.8, 0.1}, negatives {0.2, 0.7, 0.3, 0.0, 0.6, 0.4}:
    # 0.9 beats 6, 0.8 beats 6, 0.1 beats 1 (0.0) -> 13 / 18.
    assert pixel_auroc(s, m) == pytest.approx(13 / 18)
    # AP: ranked 0.9 P, 0.8 P, 0.7 N, 0.6 N, 0.4 N, 0.3 N, 0.2 N, 0.1 P, 0.0 N
    # = 1/3 * 1/1 + 1/3 * 2/2 + 1/3 * 3/8.
    assert pixel_auprc(s, m) == pytest.approx(1 / 3 + 1 / 3 + 1 / 8)
    # mass: (0.9 + 0.1 + 0.8) / 4.0
    assert relevance_mass(s, m) == pytest.approx(0.45)
    assert pointing_game(s, m) == 1.0
    # Otsu on s / 0.9: the largest between-class variance splits {0..0.44} | {0.67..1} (checked by
    # hand: 20 * 0.611^2 = 7.47 vs 6.94 and 6.32 for the neighbouring splits), so the foreground is
    # {0.9, 0.8, 0.7, 0.6}: intersection 2, union 4 + 3 - 2 = 5 -> IoU 0.4.
    assert iou_otsu(s, m) == pytest.approx(0.4)
    d = localisation_metrics(s, m)
    assert set(LOCALISATION_KEYS) <= set(d) and d["invalid_map"] is False and d["constant_map"] is False


def test_perfect_and_inverted_maps():
    m = _blob_mask()
    s = m.astype(float)
    d = localisation_metrics(s, m)
    for k in LOCALISATION_KEYS:
        assert d[k] == pytest.approx(1.0), k
    # bimodal noisy map: Otsu separates the two modes
    rng = np.random.default_rng(0)
    noisy = np.where(m, 0.8, 0.2) + 0.05 * rng.normal(size=m.shape)
    assert iou_otsu(noisy, m) == pytest.approx(1.0)
    inv = 1.0 - s
    assert pixel_auroc(inv, m) == pytest.approx(0.0)
    assert iou_area_matched(inv, m) == 0.0
    assert pointing_game(inv, m) == 0.0


def test_pointing_game_hit_miss_tolerance_and_ties():
    m = np.zeros((7, 7), bool)
    m[3, 3] = True
    s = np.zeros((7, 7))
    s[3, 3] = 1.0
    assert pointing_game(s, m) == 1.0
    s = np.zeros((7, 7))
    s[3, 5] = 1.0  # distance 2 from the mask
    assert pointing_game(s, m) == 0.0
    assert pointing_game(s, m, tolerance=1) == 0.0
    assert pointing_game(s, m, tolerance=2) == 1.0
    s = np.zeros((7, 7))
    s[4, 4] = 1.0  # diagonal neighbour: distance sqrt(2) (Euclidean disk)
    assert pointing_game(s, m, tolerance=1) == 0.0
    assert pointing_game(s, m, tolerance=1.5) == 1.0
    # tied maxima: a hit only if all of them are inside
    m2 = np.zeros((5, 5), bool)
    m2[0, :2] = True
    s = np.zeros((5, 5))
    s[0, 0] = s[0, 1] = 1.0
    assert pointing_game(s, m2) == 1.0
    s[4, 4] = 1.0
    assert pointing_game(s, m2) == 0.0


def test_constant_map_documented_ties():
    m = _blob_mask()
    prev = m.mean()
    for c in (0.0, 0.3):
        s = np.full(m.shape, c)
        d = localisation_metrics(s, m)
        assert d["constant_map"] is True and d["invalid_map"] is False
        assert d["pointing_game"] == 0.0
        assert d["pixel_auroc"] == pytest.approx(0.5)
        assert d["pixel_auprc"] == pytest.approx(prev)
        assert d["iou_otsu"] == 0.0
    assert math.isnan(localisation_metrics(np.zeros(m.shape), m)["relevance_mass"])
    assert localisation_metrics(np.full(m.shape, 0.3), m)["relevance_mass"] == pytest.approx(prev)
    # area-matched ties: the first |M| pixels in raster order are selected
    top = np.zeros((4, 4), bool)
    top[0, :3] = True
    assert iou_area_matched(np.ones((4, 4)), top) == 1.0
    bottom = np.zeros((4, 4), bool)
    bottom[3, :3] = True
    assert iou_area_matched(np.ones((4, 4)), bottom) == 0.0


def test_nan_and_inf_maps_are_flagged_not_crashing():
    m = _blob_mask()
    for bad in (np.nan, np.inf, -np.inf):
        s = np.random.default_rng(0).random(m.shape)
        s[0, 0] = bad
        d = localisation_metrics(s, m)
        assert d["invalid_map"] is True
        assert all(math.isnan(d[k]) for k in LOCALISATION_KEYS)
        assert math.isnan(pointing_game(s, m)) and math.isnan(pixel_auprc(s, m))
    good = localisation_metrics(m.astype(float), m)
    agg = aggregate([good, d, localisation_metrics(np.zeros(m.shape), m)])
    assert agg["pixel_auroc"]["n"] == 2 and agg["pixel_auroc"]["n_invalid"] == 1
    assert agg["pixel_auroc"]["mean"] == pytest.approx(0.75)
    assert agg["relevance_mass"]["n"] == 1 and agg["relevance_mass"]["n_invalid"] == 2
    assert agg["invalid_map"]["mean"] == pytest.approx(1 / 3)


def test_score_map_modes_and_torch_input():
    m = np.zeros((5, 5), bool)
    m[1, 1] = True
    a = np.zeros((5, 5))
    a[1, 1] = 0.5
    a[3, 3] = -1.0  # strongest, but negative evidence
    assert pointing_game(score_map(a, "abs"), m) == 0.0
    assert pointing_game(score_map(a, "positive"), m) == 1.0
    d = localisation_metrics(torch.tensor(a, dtype=torch.float32)[None, None], torch.tensor(m)[None],
                             mode="positive")
    assert d["pointing_game"] == 1.0 and d["relevance_mass"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        score_map(a, "square")


def test_mask_errors():
    with pytest.raises(MedxganError):
        iou_area_matched(np.ones((4, 4)), np.zeros((4, 4)))  # empty mask
    with pytest.raises(MedxganError):
        iou_area_matched(np.ones((4, 4)), np.ones((3, 4)))  # shape mismatch
    assert math.isnan(pixel_auroc(np.random.rand(4, 4), np.ones((4, 4))))  # no negatives


def test_auroc_auprc_against_brute_force_with_ties():
    rng = np.random.default_rng(3)
    s = rng.integers(0, 5, size=(6, 7)).astype(float)  # many ties
    m = rng.random((6, 7)) < 0.3
    pos, neg = s[m], s[~m]
    pairs = [(p > q) + 0.5 * (p == q) for p in pos for q in neg]
    assert pixel_auroc(s, m) == pytest.approx(np.mean(pairs))
    ap, prev_r = 0.0, 0.0
    for t in sorted(set(s.ravel()), reverse=True):
        sel = s >= t
        p_, r_ = (sel & m).sum() / sel.sum(), (sel & m).sum() / m.sum()
        ap += (r_ - prev_r) * p_
        prev_r = r_
    assert pixel_auprc(s, m) == pytest.approx(ap)


# ------------------------------------------------------------------------------------------------
# faithfulness
# ------------------------------------------------------------------------------------------------
def _region_classifier(calls):
    def prob_fn(x):  # p = sigmoid(sum of the 4 x 4 top-left region - 8)
        calls.append(x.shape[0])
        return torch.sigmoid(x[:, 0, :4, :4].sum(dim=(1, 2)) - 8.0)
    return prob_fn


def test_deletion_curve_removing_the_evidence_drops_p():
    x = torch.zeros(1, 16, 16)
    x[0, :4, :4] = 1.0  # evidence: sum = 16 -> p = sigmoid(8)
    right = torch.zeros(16, 16)
    right[:4, :4] = 1.0
    wrong = torch.ones(16, 16)
    wrong[:4, :4] = 0.0  # everything but the evidence (ranked last)
    calls = []
    d = deletion_curve(_region_classifier(calls), x, right)
    assert calls == [7]  # one batch: k = 0 plus six fractions
    assert d["fractions"] == [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5]
    mean = 16 / 256
    # k=1%: round(2.56) = 3 region pixels replaced by the mean; k>=10%: the whole region
    assert d["probs"][0] == pytest.approx(1 / (1 + math.exp(-8)))
    assert d["probs"][1] == pytest.approx(torch.sigmoid(torch.tensor(13 + 3 * mean - 8)).item(), rel=1e-5)
    assert d["probs"][4] == pytest.approx(torch.sigmoid(torch.tensor(16 * mean - 8)).item(), rel=1e-5)
    assert d["flipped"][0] is False and d["flipped"][-1] is True
    assert all(b <= a + 1e-12 for a, b in zip(d["probs"], d["probs"][1:]))
    w = deletion_curve(_region_classifier([]), x, wrong)
    assert w["auc"] > d["auc"] + 0.3
    assert not any(w["flipped"])
    # auc = trapezoid / range: a constant curve has auc = that constant
    assert w["auc"] == pytest.approx(w["probs"][0], rel=1e-6)
    b = deletion_curve(_region_classifier([]), x, right, replacement="blur")
    assert b["probs"][-1] < b["probs"][0] and b["auc"] < w["auc"]


def test_deletion_curve_invalid_map_and_blur():
    x = torch.zeros(1, 8, 8)
    a = np.zeros((8, 8))
    a[0, 0] = np.nan
    d = deletion_curve(lambda t: torch.full((t.shape[0],), 0.9), x, a)
    assert d["invalid_map"] is True and math.isnan(d["auc"])
    assert d["probs"][0] == pytest.approx(0.9) and d["flipped"][1] is None
    c = torch.full((2, 5, 7), 0.3)
    assert torch.allclose(gaussian_blur(c, 2.0), c)
    noisy = torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(0))
    assert gaussian_blur(noisy, 1.0).std() < noisy.std()
    with pytest.raises(ValueError):
        deletion_curve(lambda t: t.mean((1, 2, 3)), x, np.ones((8, 8)), fractions=(0.2, 0.1))


def test_counterfactual_metrics():
    x = torch.zeros(3, 4, 4)
    xn = x.clone()
    xn[0, 0, 0] = 0.5
    xn[2, 1, 1] = -0.5
    xn[1, 2, 2] = 0.05  # below the 0.1 threshold
    d = counterfactual_metrics(x, xn, prob_neg_classifier=torch.tensor(0.2), prob_neg_oracle=0.7)
    assert d["valid_classifier"] == 1.0 and d["valid_oracle"] == 0.0
    assert d["proximity_l1"] == pytest.approx((0.5 + 0.5 + 0.05) / 48)
    assert d["frac_changed"] == pytest.approx(2 / 16)
    assert math.isnan(counterfactual_metrics(x, xn, 0.6)["valid_oracle"])


# ------------------------------------------------------------------------------------------------
# robustness
# ------------------------------------------------------------------------------------------------
def _ssim_loop(a, b, win=11, sigma=1.5):
    """Straightforward reference: loop over every valid window position."""
    a = np.abs(a) / np.abs(a).max()
    b = np.abs(b) / np.abs(b).max()
    t = np.arange(win) - (win - 1) / 2
    g = np.exp(-t ** 2 / (2 * sigma ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    vals = []
    for i in range(a.shape[0] - win + 1):
        for j in range(a.shape[1] - win + 1):
            pa, pb = a[i:i + win, j:j + win], b[i:i + win, j:j + win]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(13, 14))
    b = a + 0.3 * rng.normal(size=(13, 14))
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, 5 * a) == pytest.approx(1.0)  # scale-free: each map divided by its own max
    assert ssim(a, b) == pytest.approx(_ssim_loop(a, b), rel=1e-9)
    assert ssim(a, b) < 0.99
    # hand-checkable: ones vs zeros -> mu_x = 1, mu_y = 0, no variance: C1 / (1 + C1)
    assert ssim(np.ones((11, 11)), np.zeros((11, 11))) == pytest.approx(1e-4 / (1 + 1e-4))
    assert ssim(np.zeros((11, 11)), np.zeros((11, 11))) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="smaller than the 11 x 11 window"):  # torchmetrics' window is fixed
        ssim(rng.random((5, 5)), rng.random((5, 5)))
    assert math.isnan(ssim(np.full((12, 12), np.nan), a[:12, :12]))


def test_spearman_and_topk_on_permutations():
    rng = np.random.default_rng(2)
    a = (np.arange(100, dtype=float) + 1).reshape(10, 10)
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, 101 - a) == pytest.approx(-1.0)
    perm = rng.permutation(100)
    b = a.ravel()[perm].reshape(10, 10)
    stats = pytest.importorskip("scipy.stats")
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a.ravel(), b.ravel())[0])
    assert math.isnan(spearman(a, np.ones((10, 10))))
    assert topk_overlap(a, a) == 1.0
    assert topk_overlap(a, 101 - a) == 0.0  # top 10 of a = 91..100, of the reverse = 1..10
    c = a.copy()
    c.flat[[99, 0]] = c.flat[[0, 99]]  # swap the best and the worst pixel
    assert topk_overlap(a, c) == pytest.approx(0.9)
    assert topk_overlap(a, c, frac=0.5) == pytest.approx(49 / 50)


def test_max_sensitivity_seeded_and_gradient_explainer():
    x = torch.ones(2, 1, 4, 4)

    def grad_explain(inp):  # d/dx sum(x^2) = 2x: needs autograd although Captum runs no_grad
        inp = inp.detach().requires_grad_(True)
        (g,) = torch.autograd.grad((inp ** 2).sum(), inp)
        return g

    s1 = max_sensitivity(grad_explain, x, radius=0.02, n_perturb=5, seed=0)
    s2 = max_sensitivity(grad_explain, x, radius=0.02, n_perturb=5, seed=0)
    assert s1.shape == (2,) and s1.dtype == np.float64
    np.testing.assert_array_equal(s1, s2)
    # ||2d|| / ||2x|| with |d| <= 0.02 elementwise and ||x|| = 4 -> in (0, 0.02]
    assert np.all(s1 > 0) and np.all(s1 <= 0.02 + 1e-6)
    s0 = max_sensitivity(lambda t: torch.zeros_like(t), x, n_perturb=3, seed=1)
    assert np.all(s0 == 0)


# ------------------------------------------------------------------------------------------------
# stats
# ------------------------------------------------------------------------------------------------
def test_bootstrap_ci():
    mean, lo, hi, n = bootstrap_ci([0.7] * 20)
    assert n == 20 and lo == hi and mean == pytest.approx(0.7) and lo == pytest.approx(0.7)
    v = np.random.default_rng(1).random(200)
    mean, lo, hi, n = bootstrap_ci(v, seed=0)
    assert abs(mean - 0.5) < 0.06 and lo < mean < hi and lo < 0.5 < hi and hi - lo < 0.2
    assert bootstrap_ci(v, seed=0) == (mean, lo, hi, n)
    assert bootstrap_ci(v, seed=1) != (mean, lo, hi, n)
    # same as a direct percentile bootstrap with the same RNG stream
    rng = np.random.default_rng(0)
    means = [v[rng.integers(0, v.size, size=v.size)].mean() for _ in range(1000)]
    assert (lo, hi) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])), rel=1e-12)
    m2 = bootstrap_ci([1.0, float("nan"), 3.0, None, float("inf")])
    assert m2[0] == 2.0 and m2[3] == 2
    assert bootstrap_ci([0.4, float("nan")]) == (0.4, 0.4, 0.4, 1)
    assert all(math.isnan(t) for t in bootstrap_ci([float("nan")])[:3]) and bootstrap_ci([])[3] == 0


def test_aggregate_flattens_and_counts_invalid():
    rows = [
        {"auc": 0.2, "flipped": [False, True], "valid": True},
        {"auc": float("nan"), "flipped": [False, None], "valid": False},
        {"flipped": [True, True], "valid": True},
    ]
    agg = aggregate(rows, n_resamples=200)
    assert list(agg) == ["auc", "flipped[0]", "flipped[1]", "valid"]
    assert agg["auc"] == {"mean": 0.2, "lo": 0.2, "hi": 0.2, "n": 1, "n_invalid": 2}
    assert agg["flipped[1]"]["n"] == 2 and agg["flipped[1]"]["mean"] == 1.0
    assert agg["valid"]["mean"] == pytest.approx(2 / 3) and agg["valid"]["n_invalid"] == 0
