"""The judge calibrated on validation data (issue 31): the oracle's threshold chosen on the validation twins, applied to
oracle validity, and its specificity on the evaluated split's twins reported next to every validity figure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from medxgan.evaluate.oracle_calibration import (acceptance_lower_bound, calibrate_oracle, judge_summary, select_threshold, twin_specificity,
                                                 twins_to_accept)
from medxgan.evaluate.pairs import _oracle_probs
from medxgan.evaluate.tables import results_csv, results_markdown
from medxgan.runtime.errors import MedxganError


class GrayLevelOracle(torch.nn.Module):
    """An oracle whose logit is the scan's mean 8-bit gray level minus 100: a PNG of constant level v has logit v - 100."""

    def logit(self, x):
        return ((x + 1.0) * 127.5).flatten(1).mean(1) - 100.0

    def prob(self, x):
        return torch.sigmoid(self.logit(x))


def _png(path, level: int, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), level, dtype=np.uint8)).save(path)


def _data(root, val_twin_levels, test_twin_levels=(95, 99, 103)):
    """Split folders; each positive has a twin (DATA/twins/<split>/positive/...) at the given gray level."""
    for split, levels in (("val", val_twin_levels), ("test", test_twin_levels)):
        for i, lv in enumerate(levels):
            _png(root / split / "positive" / f"p{i}.png", 200)  # lesioned scans: logit 100, always positive
            _png(root / "twins" / split / "positive" / f"p{i}.png", lv)
            _png(root / split / "negative" / f"n{i}.png", 90)
    for i in range(2):
        _png(root / "train" / "positive" / f"p{i}.png", 200)
        _png(root / "train" / "negative" / f"n{i}.png", 90)
    return root


def test_threshold_by_hand():
    # the point rule (folders begun before the confidence bound): 10 twin logits -3..6: at logit 0 the oracle accepts
    # 3 of 10; the 9 smallest must be accepted: half way 5 -> 6
    point = dict(confidence=None)
    assert select_threshold([-3, -2, -1, 0.5, 1, 2, 3, 4, 5, 6], **point) == 5.5
    assert select_threshold([-5] * 9 + [3], **point) == 0.0  # already 0.9 at the oracle's own level: kept, never made stricter
    t = select_threshold([1.0, 1.0, 1.0], **point)  # ties at the top: just above them
    assert t > 1.0 and t - 1.0 < 1e-12
    assert select_threshold([-1.0, 2.0, 4.0, 8.0], target=0.5, **point) == 3.0
    # the confidence bound: 10 twins can never show 0.9 with 95 % confidence, so every one is accepted (just above the top)
    t = select_threshold([-3, -2, -1, 0.5, 1, 2, 3, 4, 5, 6])
    assert t > 6.0 and t - 6.0 < 1e-12
    assert twins_to_accept(10) == 10 and acceptance_lower_bound(10, 10) < 0.9


def _binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed by hand."""
    return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))


def test_twins_to_accept_is_the_least_count_whose_exact_lower_bound_reaches_the_target():
    """Independent of scipy: the one-sided 95 % Clopper-Pearson lower bound of k / n reaches 0.9 exactly when seeing k or
    more accepted twins is at most 5 % likely if the true rate were 0.9."""
    for n in (29, 73, 150, 300):
        k = twins_to_accept(n)
        assert _binomial_tail(k, n, 0.9) <= 0.05 < _binomial_tail(k - 1, n, 0.9), n
        assert acceptance_lower_bound(k, n) >= 0.9 > acceptance_lower_bound(k - 1, n)
    assert (twins_to_accept(73), twins_to_accept(150)) == (71, 142)
    assert twins_to_accept(28) == 28 and acceptance_lower_bound(28, 28) < 0.9 <= acceptance_lower_bound(29, 29)  # too few below 29
    assert twins_to_accept(73, confidence=None) == 66  # ceil(0.9 x 73): the point rule
    # on 73 twins, 70 below the oracle's own level is not enough under the bound; 71 are
    logits = [-5.0] * 70 + [1.0, 2.0, 3.0]
    assert select_threshold(logits, confidence=None) == 0.0 and select_threshold(logits) == 1.5
    assert select_threshold([-5.0] * 71 + [1.0, 2.0]) == 0.0
    with pytest.raises(MedxganError, match="oracle twin target"):
        select_threshold([0.0], target=1.5)


def test_calibration_on_the_validation_twins(tmp_path):
    data = _data(tmp_path / "d", val_twin_levels=list(range(97, 107)))  # logits -3..6
    rec = calibrate_oracle(GrayLevelOracle(), data, size=8, channels=1, confidence=None)  # the point rule: 9 of 10
    assert rec["calibrated"] and rec["n_twins"] == 10 and rec["n_positives"] == 10
    assert rec["threshold_logit"] == pytest.approx(5.5, abs=1e-4)
    assert rec["threshold_prob"] == pytest.approx(1 / (1 + math.exp(-5.5)), abs=1e-6)
    assert rec["twin_specificity"] == pytest.approx(0.9) and rec["twin_specificity_default"] == pytest.approx(0.3)
    assert rec["sensitivity"] == 1.0 and "raised to logit 5.500" in rec["status"]
    # the test split's twins at that threshold: logits -5, -1, 3, all below 5.5 (at 0: 2 of 3)
    x_twins = torch.stack([torch.full((1, 8, 8), lv / 127.5 - 1.0) for lv in (95, 99, 103)])
    spec = twin_specificity(GrayLevelOracle(), x_twins, torch.ones(3, dtype=torch.bool), rec["threshold_logit"], n_resamples=50)
    assert spec["mean"] == 1.0 and spec["n"] == 3
    assert twin_specificity(GrayLevelOracle(), x_twins, torch.ones(3, dtype=torch.bool), 0.0, n_resamples=50)["mean"] == pytest.approx(2 / 3)


def test_no_twins_or_no_validation_split_says_so(tmp_path):
    data = _data(tmp_path / "d", val_twin_levels=[97, 98])
    import shutil

    shutil.rmtree(data / "twins" / "val")
    rec = calibrate_oracle(GrayLevelOracle(), data, size=8, channels=1)
    assert not rec["calibrated"] and rec["threshold_logit"] == 0.0 and "no lesion-free twins" in rec["status"]
    shutil.rmtree(data / "val")
    rec = calibrate_oracle(GrayLevelOracle(), data, size=8, channels=1)
    assert not rec["calibrated"] and "no 'val' split" in rec["status"]


def test_validity_uses_the_calibrated_threshold():
    # counterfactuals at logits 2 and 7: at the oracle's own level neither is valid; at 5.5 the first is
    extras = [{"x_neg": torch.full((1, 8, 8), lv / 127.5 - 1.0)} for lv in (102, 107)] + [{}]
    p0 = _oracle_probs(GrayLevelOracle(), extras, "x_neg", torch.device("cpu"))
    p1 = _oracle_probs(GrayLevelOracle(), extras, "x_neg", torch.device("cpu"), 5.5)
    assert [p < 0.5 for p in p0[:2]] == [False, False] and [p < 0.5 for p in p1[:2]] == [True, False] and p1[2] is None
    assert p1[0] == pytest.approx(1 / (1 + math.exp(3.5)), abs=1e-5)


def _cell(v):
    return {"mean": v, "lo": v - 0.1, "hi": min(1.0, v + 0.1), "n": 30, "n_invalid": 0}


def test_every_validity_figure_has_the_judges_specificity_next_to_it():
    methods = {"medxgan-diff": {"metrics": {"counterfactual.valid_oracle": _cell(0.8), "counterfactual_residual.valid_oracle": _cell(0.7),
                                            "counterfactual.valid_classifier": _cell(1.0)}}}
    cal = {"threshold_logit": 5.5, "threshold_prob": 0.9959, "calibrated": True, "target": 0.9, "split": "val", "n_twins": 10,
           "twin_specificity": 0.9, "sensitivity": 1.0, "test_split": "test", "test_twins": {"mean": 0.93, "lo": 0.83, "hi": 1.0, "n": 30}}
    rows = results_csv(methods, cal).splitlines()
    i = rows.index(next(r for r in rows if r.startswith("medxgan-diff,counterfactual.valid_oracle,")))
    assert rows[i + 1].startswith("medxgan-diff,counterfactual.oracle_twin_specificity,0.93,0.83,1.0,30")
    assert any(r.startswith("medxgan-diff,counterfactual_residual.oracle_twin_specificity,0.93") for r in rows)
    md = results_markdown({"config": {}, "methods": methods, "oracle_calibration": cal})
    assert "Oracle specificity on the test split's lesion-free twins: 0.930 [0.830, 1.000], n 30; oracle threshold logit 5.500" in md
    assert "accepting 0.900 of them" in md
    # an evaluation older than the calibration: the twin row's figure, said to be uncalibrated; none at all: no sentence
    old = dict(methods, twin={"metrics": {"counterfactual.valid_oracle": _cell(0.2)}})
    assert "not calibrated" in judge_summary(None, {"mean": 0.2, "lo": 0.1, "hi": 0.3, "n": 30})
    assert "0.200 [0.100, 0.300]" in results_markdown({"config": {}, "methods": old})
    assert judge_summary(None, None) is None and "oracle_twin_specificity" not in results_csv(methods)


def test_the_report_shows_the_judge_next_to_its_verdict_and_tables():
    from medxgan.report.metric_tables import metric_tables_html
    from medxgan.report.verdict import verdict_html, verdicts

    cal = {"threshold_logit": 0.0, "threshold_prob": 0.5, "calibrated": True, "target": 0.9, "split": "val", "n_twins": 150,
           "twin_specificity": 1.0, "sensitivity": 0.973, "test_split": "test", "test_twins": {"mean": 0.96, "lo": 0.93, "hi": 0.99, "n": 150}}
    res = {"config": {"inversion": {"counterfactual": "residual"}}, "oracle_calibration": cal,
           "methods": {"medxgan-diff": {"n_images": 30, "metrics": {"counterfactual_residual.valid_oracle": _cell(0.8),
                                                                    "counterfactual_residual.valid_classifier": _cell(1.0),
                                                                    "counterfactual.valid_oracle": _cell(0.5)}}}}
    v = {x["claim"]: x for x in verdicts(res)}
    judge = v["residual counterfactual x_res valid for the independent oracle"]["judge"]
    assert judge.startswith("Oracle specificity on the test split's lesion-free twins: 0.960 [0.930, 0.990], n 150")
    assert "judge" not in v["residual counterfactual x_res valid for the classifier"]
    assert "0.960 [0.930, 0.990]" in verdict_html(res) and "0.960 [0.930, 0.990]" in metric_tables_html(res)


def test_light_methods_skip_noise_and_max_sensitivity_only(tmp_path):
    """EvaluateConfig.light_methods: the costly perturbation baselines in the demo are explained once per image (no noisy
    copies, no max-sensitivity); the other methods keep every metric."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from helpers import make_eval_data, tiny_eval_clf

    from medxgan.evaluate.runner import evaluate

    data = make_eval_data(tmp_path / "data", n_pos=2, n_neg=1)
    r = evaluate(data, tmp_path / "eval", classifier=tiny_eval_clf(), methods=["saliency", "ig-black"], split="test", noise_sigmas=(0.05,),
                 max_sensitivity_n=1, max_sensitivity_samples=2, batch_size=3, device="cpu", n_resamples=50, show_progress=False,
                 light_methods="ig-black", sanity=True, sanity_n=2)
    sal, ig = r["methods"]["saliency"]["metrics"], r["methods"]["ig-black"]["metrics"]
    assert "robustness.noise_0.05.ssim" in sal and "sensitivity.max" in sal
    assert not any(k.startswith(("robustness.", "sensitivity.")) for k in ig) and "deletion_mean.auc" in ig
    assert r["config"]["light_methods"] == ["ig-black"] and any("not computed for ig-black" in n for n in r["notes"])
    assert set(r["sanity"]["methods"]) == {"saliency"}  # nor the sanity check's re-explanations


def test_method_options_set_a_baseline_and_are_recorded(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from helpers import make_eval_data, tiny_eval_clf

    from medxgan.evaluate.runner import evaluate

    data = make_eval_data(tmp_path / "data", n_pos=2, n_neg=1)
    kw = dict(classifier=tiny_eval_clf(), methods=["rise"], split="test", noise_sigmas=(), max_sensitivity=False, batch_size=3, device="cpu",
              n_resamples=50, show_progress=False)
    with pytest.raises(MedxganError, match="method_options rise"):
        evaluate(data, tmp_path / "bad", method_options={"rise": {"bogus": 4}}, **kw)
    r = evaluate(data, tmp_path / "eval", method_options={"rise": {"n_masks": 4}}, **kw)
    assert r["config"]["method_options"] == {"rise": {"n_masks": 4}} and any("rise: n_masks 4" in n for n in r["notes"])
    with pytest.raises(MedxganError, match="rows of rise were made with options"):  # a resumed run must share them
        evaluate(data, tmp_path / "eval", method_options={"rise": {"n_masks": 8}}, **kw)
    # a method added later may bring its own options; the rows made before (defaults) stay valid
    r2 = evaluate(data, tmp_path / "eval", methods=["rise", "saliency"], method_options={"rise": {"n_masks": 4}},
                  **{k: v for k, v in kw.items() if k != "methods"})
    assert set(r2["methods"]) == {"rise", "saliency"}


def test_the_confidence_bound_is_recorded_and_older_folders_keep_the_point_rule(tmp_path):
    """The default calibration records the bound it used and says when there are too few twins for it; an evaluation
    folder begun under the point rule (run.json without ``oracle_rule``) keeps that rule on resume, a new or overwritten
    one uses the bound."""
    import json

    from medxgan.evaluate.config import EvaluateConfig
    from medxgan.evaluate.runner import _started_under_point_rule

    data = _data(tmp_path / "d", val_twin_levels=list(range(97, 107)))  # logits -3..6: 10 twins
    rec = calibrate_oracle(GrayLevelOracle(), data, size=8, channels=1)
    assert rec["confidence"] == 0.95 and rec["twin_specificity"] == 1.0 and rec["threshold_logit"] > 6.0
    assert rec["twin_specificity_lower_bound"] == pytest.approx(0.05 ** (1 / 10))  # k = n: the bound is alpha^(1/n)
    assert "too few for the bound" in rec["status"]
    out = tmp_path / "eval"
    assert not _started_under_point_rule(out, EvaluateConfig())  # nothing there yet
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"seed": 0}))
    assert _started_under_point_rule(out, EvaluateConfig()) and not _started_under_point_rule(out, EvaluateConfig(overwrite=True))
    (out / "run.json").write_text(json.dumps({"seed": 0, "oracle_rule": "clopper-pearson-0.95"}))
    assert not _started_under_point_rule(out, EvaluateConfig())


def test_evaluated_data_without_validation_twins_takes_the_threshold_from_the_runs_own_data(tmp_path):
    """Another brain, test split only (ICBM152 in the real-brain demo): the judge is calibrated on the GAN run's own
    validation twins, says so, and an older folder (point rule) keeps its uncalibrated judge."""
    import shutil
    from types import SimpleNamespace

    from medxgan.evaluate.config import EvaluateConfig
    from medxgan.evaluate.runner import _calibrate_oracle

    own = _data(tmp_path / "own", val_twin_levels=[90] * 29 + [120])  # 29 of 30 at logit -10, one at 20: 30 twins need all 30
    other = _data(tmp_path / "other", val_twin_levels=[97])
    shutil.rmtree(other / "val")
    sel = SimpleNamespace(images=torch.zeros(1, 1, 8, 8))
    notes: list[str] = []
    rec = _calibrate_oracle(GrayLevelOracle(), other, EvaluateConfig(), sel, torch.device("cpu"), notes, run_config={"data": str(own)})
    assert rec["calibrated"] and rec["data"] == str(own) and rec["n_twins"] == 30 and 20.0 < rec["threshold_logit"] < 20.0 + 1e-9
    assert "GAN run's own data" in rec["status"] and "GAN run's own data" in notes[-1]
    assert "of the GAN run's own data" in judge_summary({**rec, "test_twins": {"mean": 1.0, "lo": 1.0, "hi": 1.0, "n": 3}})
    old = _calibrate_oracle(GrayLevelOracle(), other, EvaluateConfig(), sel, torch.device("cpu"), [], point_rule=True,
                            run_config={"data": str(own)})
    assert not old["calibrated"] and "no 'val' split" in old["status"]
    alone = _calibrate_oracle(GrayLevelOracle(), other, EvaluateConfig(), sel, torch.device("cpu"), [], run_config={})
    assert not alone["calibrated"]
