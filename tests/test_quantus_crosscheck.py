"""Our localisation metrics against Quantus 0.6 (``abs=True, normalise=False``) on random maps and masks.

Quantus is an optional test dependency (the ``test`` extra); the module is skipped without it. Maps are
continuous random values, so there are no ties and both sides' tie rules agree; the pointing game is
also checked on maps with plateaus, where Quantus's "any tied maximum inside" equals our fractional
pointing game > 0 (our strict rule: all tied maxima inside).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

quantus = pytest.importorskip("quantus")

from medxgan.evaluate.localisation import localisation_metrics  # noqa: E402

N, H = 12, 16


def _batch(seed: int, plateau: bool = False):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(N, 1, H, H))
    s = np.zeros((N, 1, H, H))
    for i in range(N):
        r, c, h, w = rng.integers(0, H - 6, 2).tolist() + rng.integers(2, 7, 2).tolist()
        s[i, 0, r : r + h, c : c + w] = 1
        if plateau:  # two tied maxima: one inside the mask, one (for even i) outside
            a[i, 0] = np.clip(a[i, 0], -2, 2)
            a[i, 0, r, c] = 5.0
            rr, cc = np.argwhere(s[i, 0] == 0)[0] if i % 2 == 0 else (r + 1, c + 1)
            a[i, 0, rr, cc] = 5.0
    x = rng.uniform(-1, 1, size=(N, 1, H, H))
    return x, np.ones(N, dtype=int), a, s


def _quantus(metric, x, y, a, s):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(metric(model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s, channel_first=True), dtype=float)


def _ours(a, s, key):
    return np.array([localisation_metrics(a[i, 0], s[i, 0] > 0.5, mode="abs")[key] for i in range(len(a))])


@pytest.mark.parametrize("seed", [0, 1])
def test_localisation_agrees_with_quantus_on_random_maps(seed):
    x, y, a, s = _batch(seed)
    kw = dict(abs=True, normalise=False, disable_warnings=True)
    checks = {
        "pointing_game": quantus.PointingGame(**kw),
        "relevance_mass": quantus.RelevanceMassAccuracy(**kw),
        "relevance_rank": quantus.RelevanceRankAccuracy(**kw),
        "pixel_auroc": quantus.AUC(**kw),
    }
    for key, metric in checks.items():
        np.testing.assert_allclose(_ours(a, s, key), _quantus(metric, x, y, a, s), atol=1e-9, err_msg=key)


def test_pointing_game_tie_rules():
    x, y, a, s = _batch(3, plateau=True)
    q = _quantus(quantus.PointingGame(abs=True, normalise=False, disable_warnings=True), x, y, a, s)
    strict, frac = _ours(a, s, "pointing_game"), _ours(a, s, "pointing_game_frac")
    np.testing.assert_array_equal(q, (frac > 0).astype(float))  # Quantus: any tied maximum inside
    assert np.all(strict <= frac) and np.all(frac <= q)
    assert set(frac[::2]) == {0.5} and set(strict[::2]) == {0.0}  # one of two peaks inside: half credit, strict miss
