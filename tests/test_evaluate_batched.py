"""The batched evaluation (issue 15) gives the rows of the reference per-image loops.

``evaluate(implementation="reference")`` runs :func:`medxgan.evaluate.pairs.evaluate_pairs_reference`, the
runner's loops before the batching (one explainer call per noise level, Captum's ``sensitivity_max`` per
image, two classifier calls per image for the deletion curves); the default runs
:func:`medxgan.evaluate.pairs.evaluate_pairs`. On a fixed small set (tiny classifier and GAN, every
method, two noise levels, max-sensitivity, chunks of 2 images) every per-image number must agree.

Tolerance: 1e-4 absolute on every metric (NaN/None in the same places, the same keys). Batching changes
only the floating-point order of the work: the inversion optimises each image's codes on its own (per-image
loss, element-wise Adam) whatever else is in the batch, and the baselines' gradients are per sample, so the
two runs differ by float32 rounding (~1e-7 on the maps; after the inversion's Adam steps up to ~1e-5 on the
codes). The largest difference seen here is printed by the test (``-s``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import EVAL_SIZE, make_eval_data, tiny_eval_clf

from medxgan.evaluate import pairs
from medxgan.evaluate.faithfulness import deletion_curve, deletion_inputs, deletion_scores
from medxgan.evaluate.robustness import max_sensitivity
from medxgan.evaluate.runner import evaluate
from medxgan.evaluate.store import read_per_image
from medxgan.explain.baselines import BASELINE_METHODS, SaliencyExplainer

pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-4
METHODS = list(BASELINE_METHODS) + ["medxgan-diff", "medxgan-lig"]


def _flat(d, prefix=""):
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else k))
        return out
    if isinstance(d, list):
        out = {}
        for i, v in enumerate(d):
            out.update(_flat(v, f"{prefix}[{i}]"))
        return out
    return {prefix: d}


def _model():
    from medxgan.gan.networks import build_generator
    from medxgan.pipeline import MedXGAN

    torch.manual_seed(0)
    G = build_generator(dict(arch="dcgan", size=EVAL_SIZE, channels=1, nz1=8, nz2=4, g_width=8))
    return MedXGAN(G, tiny_eval_clf(), inversion={"steps": 8, "restarts": 2})


class Counting(SaliencyExplainer):
    name = "counting"

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.batches = []
        self.engine = object()  # looks like a medXGAN explainer: the runner raises its batch size

    def attribute(self, images):
        self.batches.append(int(images.shape[0]))
        return super().attribute(images)


def test_batched_rows_equal_reference(tmp_path):
    data = make_eval_data(tmp_path / "data", n_pos=3, n_neg=2)
    kw = dict(methods=METHODS, split="test", noise_sigmas=(0.05, 0.1), max_sensitivity=True, max_sensitivity_n=3,
              max_sensitivity_samples=3, batch_size=2, device="cpu", n_resamples=100, show_progress=False)
    rows = {}
    for impl in ("reference", "batched"):
        evaluate(data, tmp_path / impl, gan=_model(), implementation=impl, **kw)
        rows[impl] = read_per_image(tmp_path / impl / "per_image.jsonl")[0]
    assert rows["reference"].keys() == rows["batched"].keys() and len(rows["reference"]) == 5 * len(METHODS)
    worst, n_values = 0.0, 0
    for key, ref in rows["reference"].items():
        new = rows["batched"][key]
        assert new["invalid_map"] == ref["invalid_map"]
        fa, fb = _flat(ref["metrics"]), _flat(new["metrics"])
        fa = {k: v for k, v in fa.items() if not k.startswith("cost.")}
        fb = {k: v for k, v in fb.items() if not k.startswith("cost.")}
        assert fa.keys() == fb.keys(), key
        for m, va in fa.items():
            vb = fb[m]
            if va is None or vb is None or (isinstance(va, float) and math.isnan(va)):
                assert va is None and vb is None or (isinstance(va, float) and isinstance(vb, float) and math.isnan(va) and math.isnan(vb)), (key, m, va, vb)
                continue
            n_values += 1
            d = abs(float(va) - float(vb))
            worst = max(worst, d)
            assert d <= ATOL, (key, m, va, vb)
    assert any("sensitivity" in r["metrics"] for r in rows["batched"].values())
    print(f"\n{n_values} per-image values compared, largest |reference - batched| = {worst:.3g} (tolerance {ATOL:g})")
    # the saved maps agree too
    for (image_id, method) in list(rows["reference"])[:: 7]:
        a = np.load(tmp_path / "reference" / "maps" / image_id / f"{method}.npz")["map"]
        b = np.load(tmp_path / "batched" / "maps" / image_id / f"{method}.npz")["map"]
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(a).max())))


def test_batched_calls_explainer_once_per_stage(tmp_path):
    """Noisy copies of all sigmas in one call, perturbed copies of all max-sensitivity images in one call."""
    data = make_eval_data(tmp_path / "data", n_pos=2, n_neg=2)
    clf = tiny_eval_clf()
    ex = Counting(clf, batch_size=4)
    evaluate(data, tmp_path / "eval", classifier=clf, explainers=[ex], split="test", noise_sigmas=(0.02, 0.05, 0.1),
             max_sensitivity=True, max_sensitivity_n=2, max_sensitivity_samples=5, batch_size=4, device="cpu",
             n_resamples=50, show_progress=False)
    assert ex.batches == [4, 12, 10]  # clean, 3 sigmas x 4 images, 2 images x 5 perturbations
    assert ex.batch_size == 4  # restored


def test_deletion_parts_and_sensitivity_match_the_library_functions():
    torch.manual_seed(0)
    clf = tiny_eval_clf()
    x = torch.rand(1, EVAL_SIZE, EVAL_SIZE) * 2 - 1
    a = np.random.default_rng(0).normal(size=(EVAL_SIZE, EVAL_SIZE)).astype(np.float32)
    prob = lambda t: clf.prob(t)  # noqa: E731
    for rep in ("mean", "blur"):
        ref = deletion_curve(prob, x, a, replacement=rep)
        xb, ks, valid = deletion_inputs(x, a, replacement=rep)
        with torch.no_grad():
            assert deletion_scores(prob(xb), ks, valid) == ref
    ex = SaliencyExplainer(clf, batch_size=16)
    clean = ex.explain(x[None]).maps[0, 0].numpy()
    pert = pairs._perturbations(x[None], seed=123, radius=0.02, n_perturb=6)
    ours = pairs._sensitivity(clean, [m[0].numpy() for m in ex.explain(pert).maps])
    theirs = float(max_sensitivity(lambda t: ex.explain(t.clamp(-1, 1)).maps, x[None], radius=0.02, n_perturb=6, seed=123,
                                   max_examples_per_batch=6)[0])
    assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-7)


def test_noisy_inversion_option_is_explicit_and_only_touches_medxgan_noise_metrics(tmp_path):
    """``noisy_inversion={"start": "clean", ...}`` (off by default) changes how the noisy copies of the medXGAN
    methods are inverted, nothing else; with 0 steps from the clean codes the noisy maps are the clean ones."""
    from medxgan.runtime.errors import MedxganError

    data = make_eval_data(tmp_path / "data", n_pos=2, n_neg=1)
    kw = dict(methods=["saliency", "medxgan-diff", "medxgan-lig"], split="test", noise_sigmas=(0.1,), max_sensitivity=True,
              max_sensitivity_n=1, max_sensitivity_samples=2, batch_size=2, device="cpu", n_resamples=50, show_progress=False)
    evaluate(data, tmp_path / "default", gan=_model(), **kw)
    res = evaluate(data, tmp_path / "warm", gan=_model(), noisy_inversion={"start": "clean", "steps": 0, "restarts": 1}, **kw)
    assert any("noisy copies were inverted with" in n for n in res["notes"])
    a = read_per_image(tmp_path / "default" / "per_image.jsonl")[0]
    b = read_per_image(tmp_path / "warm" / "per_image.jsonl")[0]
    for key, ra in a.items():
        ma, mb = ra["metrics"], b[key]["metrics"]
        same = [g for g in ma if g not in ("cost", "robustness", "sensitivity")]
        if key[1] == "saliency":
            same += ["robustness"] + (["sensitivity"] if "sensitivity" in ma else [])
        for g in same:
            assert ma[g] == mb[g], (key, g)
        if key[1] == "medxgan-diff":  # the noisy copy kept its clean image's codes: the same map
            assert mb["robustness"]["noise_0.1"]["ssim"] == pytest.approx(1.0, abs=1e-5)
            assert mb["robustness"]["noise_0.1"]["top10"] == 1.0
    with pytest.raises(MedxganError):
        evaluate(data, tmp_path / "bad", gan=_model(), noisy_inversion={"start": "somewhere"}, **kw)
    with pytest.raises(MedxganError):
        evaluate(data, tmp_path / "bad2", gan=_model(), implementation="reference", noisy_inversion={"start": "clean"}, **kw)
