"""A classifier that calls every scan of a mixed set one class is warned about (and recorded), never
carried on silently: the check by hand, and `evaluate` with a classifier that calls everything positive."""

from __future__ import annotations

import pytest
import torch
from helpers import make_eval_data, tiny_eval_clf

from medxgan.classifiers.checks import prediction_check

pytestmark = pytest.mark.usefixtures("one_thread")


def test_prediction_check_by_hand():
    labels = torch.tensor([1, 1, 0, 0, 0])
    with pytest.warns(UserWarning, match="calls every one of 5 test scans positive .2 positive and 3 negative in truth; p 0.51-0.73"):
        rec = prediction_check(torch.tensor([0.51, 0.73, 0.6, 0.55, 0.52]), labels, "5 test scans")
    assert rec["one_class"] and rec["predicted_positive"] == 5 and rec["accuracy"] == pytest.approx(0.4)
    rec = prediction_check(torch.tensor([0.9, 0.2, 0.1, 0.6, 0.3]), labels, "5 test scans")  # mixed calls: no warning
    assert not rec["one_class"] and rec["accuracy"] == pytest.approx(0.6)
    rec = prediction_check(torch.tensor([0.9, 0.8]), torch.tensor([1, 1]), "2 positives")  # one class in truth: nothing to say
    assert not rec["one_class"]


def test_evaluate_warns_and_records_a_one_class_classifier(tmp_path):
    from medxgan.evaluate.runner import evaluate

    data = make_eval_data(tmp_path / "data")  # 3 positives, 2 negatives; tiny_eval_clf calls all of them positive
    with pytest.warns(UserWarning, match="calls every one of the 5 scans .* positive"):
        res = evaluate(data, tmp_path / "ev", classifier=tiny_eval_clf(), methods=["saliency"], noise_sigmas=[], max_sensitivity=False,
                       save_maps=False, device="cpu", show_progress=False)
    assert res["slices"]["FP"] == 2 and res["slices"]["TN"] == 0
    assert res["config"]["classifier_check"]["one_class"] is True
    assert any(n.startswith("WARNING: classifier tiny calls every one") for n in res["notes"])
