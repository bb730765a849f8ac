"""Evaluation a reviewer trusts: cascading randomisation, counterfactual realism (FD / KID), minimality."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import EVAL_SIZE, tiny_eval_clf
from torch import nn

from medxgan.classifiers.architectures import PaperCNN, SmallResNet
from medxgan.evaluate.sanity import model_randomisation, randomisation_blocks, randomised, verdict
from medxgan.explain.baselines import build_explainers

pytestmark = pytest.mark.usefixtures("one_thread")


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_blocks_of_the_builtin_architectures():
    assert [n for n, _ in randomisation_blocks(PaperCNN())] == ["head", "features.2", "features.1", "features.0"]
    assert [n for n, _ in randomisation_blocks(SmallResNet(image_size=64))] == [
        "head", "layers.3", "layers.2", "layers.1", "layers.0", "stem"]


def test_randomisation_is_cascading_block_by_block_and_restored():
    model = PaperCNN()
    with torch.no_grad():  # trained-looking BatchNorm statistics, so that resetting them is visible
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.fill_(0.3), m.running_var.fill_(2.0), m.weight.fill_(1.5), m.bias.fill_(0.1)
    blocks = randomisation_blocks(model)
    orig = _params(model)
    prefixes = [n for n, _ in blocks]
    previous = None
    for k in range(1, len(blocks) + 1):
        with randomised(model, k, seed=3, blocks=blocks) as names:
            assert names == prefixes[:k]
            now = _params(model)
            for key, t in now.items():
                changed = not torch.equal(t, orig[key])
                in_top = any(key.startswith(p + ".") for p in prefixes[:k])
                if key.endswith("num_batches_tracked"):
                    continue
                assert changed == in_top, (k, key)
            if previous is not None:  # step k extends step k - 1: the blocks randomised before keep their random draw
                for key in previous:
                    if any(key.startswith(p + ".") for p in prefixes[: k - 1]):
                        assert torch.equal(now[key], previous[key]), key
            previous = now
        assert all(torch.equal(t, orig[key]) for key, t in _params(model).items())  # restored bit for bit
    with pytest.raises(ZeroDivisionError):  # restored after an error too
        with randomised(model, 2, blocks=blocks):
            1 / 0
    assert all(torch.equal(t, orig[key]) for key, t in _params(model).items())


def test_model_randomisation_curves_and_verdicts():
    clf = tiny_eval_clf()
    exps = build_explainers(["saliency", "gradcam", "occlusion"], clf)
    x = torch.rand(3, 1, EVAL_SIZE, EVAL_SIZE) * 2 - 1
    before = _params(clf.model)
    res = model_randomisation(exps, clf, x, seed=0, n_resamples=100)
    assert all(torch.equal(t, before[k]) for k, t in _params(clf.model).items())
    assert res["blocks"] == ["6", "2", "0"] and res["n_images"] == 3
    for m in ("saliency", "gradcam", "occlusion"):
        r = res["methods"][m]
        assert len(r["curve"]) == 3 and r["verdict"] in ("pass", "unclear", "fail", "n/a")
        assert r["curve"][-1]["randomised"] == ["6", "2", "0"]
        assert r["curve"][0]["ssim"]["n"] + r["curve"][0]["ssim"]["n_invalid"] == 3


def test_verdict_rule():
    def step(k, s, lo, hi):
        return {"k": k, "randomised": [str(i) for i in range(k)], "ssim": {"mean": s, "lo": lo, "hi": hi, "n": 5},
                "spearman": {"mean": s, "lo": lo, "hi": hi, "n": 5}}

    assert verdict([step(1, 0.9, 0.8, 1.0), step(2, 0.2, 0.1, 0.3)])[0] == "pass"
    assert verdict([step(1, 0.9, 0.8, 1.0), step(2, 0.4, 0.2, 0.6)])[0] == "unclear"
    assert verdict([step(1, 0.9, 0.8, 1.0), step(2, 0.7, 0.6, 0.8)])[0] == "fail"
    assert verdict([step(1, 0.2, 0.1, 0.3)])[0] == "pass"  # one block only: judged after it
    assert verdict([])[0] == "n/a"


def test_identity_explainer_fails_and_gradient_of_random_model_changes():
    """A map that ignores the model (the image itself) must fail; saliency of this model must change."""
    from medxgan.explain.base import Explainer

    class ImageItself(Explainer):
        name = "edge"

        def attribute(self, images):
            return images.sum(1, keepdim=True)

    clf = tiny_eval_clf()
    x = torch.rand(4, 1, EVAL_SIZE, EVAL_SIZE) * 2 - 1
    res = model_randomisation([ImageItself(clf)], clf, x, n_resamples=100)
    r = res["methods"]["edge"]
    assert r["verdict"] == "fail" and math.isclose(r["curve"][-1]["ssim"]["mean"], 1.0)


# ---- realism and minimality -------------------------------------------------------------------
from medxgan.evaluate.realism import feature_distances, minimality, penultimate_features  # noqa: E402


def test_fd_kid_hand_checked_1d():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 1, generator=g, dtype=torch.float64)
    b = torch.randn(400, 1, generator=g, dtype=torch.float64) * 1.5 + 2.0
    # 1-D Fréchet distance by hand: (mu_a - mu_b)^2 + var_a + var_b - 2 sqrt(var_a var_b), unbiased variances
    va, vb = float(a.var()), float(b.var())
    want = (float(a.mean()) - float(b.mean())) ** 2 + va + vb - 2 * math.sqrt(va * vb)
    d = feature_distances(a, b, seed=0)
    assert d["fd"] == pytest.approx(want, rel=1e-6)
    assert d["kid"] > 0.1
    same = feature_distances(a, torch.randn(400, 1, generator=g, dtype=torch.float64), seed=0)
    assert same["fd"] < 0.05 and abs(same["kid"]) < 1e-3 * d["kid"]  # the cubic kernel is large in 1-D: compare


def test_fd_kid_multivariate_same_vs_shifted():
    g = torch.Generator().manual_seed(1)
    a, b = (torch.randn(300, 6, generator=g, dtype=torch.float64) for _ in range(2))
    same = feature_distances(a, b)
    shifted = feature_distances(a, b + 1.0)  # mean shift of 1 in each of 6 dimensions: FD ~ 6
    assert same["fd"] < 0.3 and abs(same["kid"]) < 0.05
    assert shifted["fd"] == pytest.approx(6.0 + same["fd"], abs=0.5) and shifted["kid"] > 20 * abs(same["kid"])


def test_non_finite_counterfactuals_are_left_out_not_fed_to_eigvals(tmp_path):
    # A counterfactual with NaN (the twin row of a negative image, which has no twin) used to reach
    # torch.linalg.eigvals inside torchmetrics' FID, where MKL segfaults: it must be left out with a note.
    from medxgan.evaluate.realism import _counterfactual_sets
    from medxgan.evaluate.store import input_maps_file

    g = torch.Generator().manual_seed(2)
    a = torch.randn(20, 4, generator=g, dtype=torch.float64)
    bad = a.clone()
    bad[3, 1] = float("nan")
    assert all(math.isnan(v) for v in feature_distances(a, bad).values())
    rows = []
    for i, twin_ok in enumerate((True, False, True)):
        d = input_maps_file(tmp_path, f"img{i}").parent  # the evaluation folder's layout (medxgan.evaluate.store)
        d.mkdir(parents=True)
        x = np.zeros((1, 4, 4), np.float32)
        np.savez(d / "input.npz", image=x)
        np.savez(d / "twin.npz", x_neg=x + 0.5 if twin_ok else np.full_like(x, np.nan))
        rows.append({"image_id": f"img{i}", "method": "twin", "metrics": {"counterfactual": {}}})
    sets, notes = _counterfactual_sets(tmp_path, rows)
    assert sets["twin: x_neg"]["ids"] == ["img0", "img2"]
    assert any("1 image(s) without a finite counterfactual" in n for n in notes)


def test_minimality_counts_regions():
    x = torch.zeros(1, 16, 16)
    cf = x.clone()
    cf[0, 2:5, 2:5] = 0.5  # one 3 x 3 region
    cf[0, 10, 10] = -0.3  # a second region (one pixel)
    cf[0, 12, 0] = 0.05  # below the threshold: not a change
    m = minimality(x, cf)
    assert m["regions"] == 2 and m["frac_changed"] == pytest.approx(10 / 256)
    assert m["mean_abs_change"] == pytest.approx((9 * 0.5 + 0.3 + 0.05) / 256)
    cf[0, 5, 5] = 0.5  # diagonal neighbour of the square: 8-connected, the same region
    assert minimality(x, cf)["regions"] == 2


def test_penultimate_features_are_the_input_of_the_last_linear():
    clf = tiny_eval_clf()
    x = torch.rand(5, 1, EVAL_SIZE, EVAL_SIZE) * 2 - 1
    f = penultimate_features(clf, x, batch_size=2)
    with torch.no_grad():
        want = clf.model[:-1](x).double()
    assert f.shape == (5, 4) and torch.allclose(f, want)


# ---- wired into the runner --------------------------------------------------------------------
def test_evaluate_sanity_and_realism_sections(tmp_path):
    import json

    from helpers import make_eval_data

    from medxgan.evaluate.runner import evaluate
    from medxgan.gan.networks import build_generator
    from medxgan.pipeline import MedXGAN

    torch.manual_seed(0)
    G = build_generator(dict(arch="dcgan", size=EVAL_SIZE, channels=1, nz1=8, nz2=4, g_width=8))
    clf = tiny_eval_clf()
    model = MedXGAN(G, clf, inversion={"steps": 3, "restarts": 1}, oracle=tiny_eval_clf())
    data = make_eval_data(tmp_path / "data", n_pos=3, n_neg=5)
    kw = dict(gan=model, methods=["medxgan-diff", "medxgan-lig", "saliency"], split="test", noise_sigmas=(), max_sensitivity=False,
              device="cpu", n_resamples=100, show_progress=False, sanity=True, sanity_n=2)
    before = {k: v.clone() for k, v in clf.model.state_dict().items()}
    res = evaluate(data, tmp_path / "eval", **kw)
    assert all(torch.equal(v, before[k]) for k, v in clf.model.state_dict().items())  # the classifier is restored
    s = res["sanity"]
    assert set(s["methods"]) == {"medxgan-lig", "saliency"} and s["skipped"] == ["medxgan-diff"] and s["n_images"] == 2
    assert len(s["methods"]["saliency"]["curve"]) == len(s["blocks"]) == 3
    rz = res["realism"]
    roles = [r["role"] for r in rz["rows"]]
    assert roles[:2] == ["floor", "reference"] and "counterfactual" in roles
    assert any("identical" in n for n in rz["notes"])  # medxgan-lig's x_neg is medxgan-diff's (one inversion)
    cf = next(r for r in rz["rows"] if r["role"] == "counterfactual")
    assert cf["n"] == 3 and math.isfinite(cf["fd"]) and cf["minimality"]["regions"]["n"] == 8
    md = (tmp_path / "eval" / "results.md").read_text()
    assert "Sanity check" in md and "Counterfactual realism" in md
    saved = json.loads((tmp_path / "eval" / "sanity.json").read_text())
    assert saved["result"]["blocks"] == s["blocks"]
    res2 = evaluate(data, tmp_path / "eval", **kw)  # resumed: the sanity result comes from sanity.json
    assert res2["sanity"] == s


def test_report_section(tmp_path):
    from medxgan.report.review import review_html

    stat = {"mean": 0.3, "lo": 0.2, "hi": 0.4, "n": 3}
    res = {"sanity": {"blocks": ["head", "f.0"], "n_images": 3, "threshold": 0.5, "verdict_blocks": 2, "skipped": ["medxgan-diff"],
                      "methods": {"saliency": {"verdict": "pass", "reason": "r", "curve": [
                          {"k": 1, "ssim": stat, "spearman": stat}, {"k": 2, "ssim": stat, "spearman": stat}]}}},
           "realism": {"n": 3, "n_reference": 4, "feature_space": "oracle", "rows": [{"label": "x", "role": "floor", "fd": 1.0, "kid": 0.1}]}}
    h = review_html(res, tmp_path, "img")
    assert "id='sanity'" in h and "<b>pass</b>" in h and (tmp_path / "sanity.png").is_file() and "floor" in h
    assert review_html({}, tmp_path, "img") == ""


def test_shuffle_labels_keeps_counts_and_masks(tmp_path):
    import importlib.util
    from pathlib import Path

    from helpers import png

    spec = importlib.util.spec_from_file_location("datarand", Path(__file__).parent.parent / "benchmarks/sanity/data_randomisation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    src = tmp_path / "d"
    for k in range(8):
        cls = "positive" if k < 4 else "negative"
        png(src / "train" / cls / f"i{k}.png", np.full((4, 4), k * 10))
        png(src / "masks" / "train" / cls / f"i{k}.png", np.full((4, 4), k * 10))
    png(src / "test" / "positive" / "t.png", np.zeros((4, 4)))
    info = mod.shuffle_labels(src, tmp_path / "s", seed=1)
    dst = tmp_path / "s"
    assert info["n"] == 8 and info["changed"] > 0
    assert len(list((dst / "train" / "positive").iterdir())) == 4 and len(list((dst / "train" / "negative").iterdir())) == 4
    for f in (dst / "train").rglob("*.png"):  # each mask moved with its image
        assert (dst / "masks" / "train" / f.parent.name / f.name).is_file()
    assert (dst / "test" / "positive" / "t.png").is_file() and not (dst / ".train-shuffle").exists()
