"""The demo's method set (the perturbation baselines, light, Extremal Perturbation's demo setting) and its printed summary:
every method's IoU, the counterfactual's validity with the oracle's specificity on the twins next to it (issue 31)."""

from __future__ import annotations

import json

from medxgan.demo import DEMO_METHOD_OPTIONS, DEMO_PERTURBATION, DemoConfig, summary_lines
from medxgan.demo_methods import eval_done, method_settings


def test_the_default_demo_evaluates_the_perturbation_baselines_light():
    s = method_settings(DemoConfig.default().methods)
    assert set(DEMO_PERTURBATION) <= set(s["methods"]) and {"medxgan-diff", "medxgan-lig", "medxgan-mask", "ig-black"} <= set(s["methods"])
    assert s["light_methods"] == DEMO_PERTURBATION and s["method_options"] == DEMO_METHOD_OPTIONS
    mine = method_settings(DemoConfig(methods=("saliency", "medxgan-diff")).methods)  # an explicit set: nothing added
    assert mine == {"methods": ["saliency", "medxgan-diff"], "light_methods": (), "method_options": None}


class _Model:  # what method_settings reads of a MedXGANModel
    def __init__(self, refines_mask):
        self.engine = type("E", (), {"refines_mask": refines_mask})()


def test_the_mask_map_is_evaluated_only_for_a_gan_with_the_minimal_mask(tmp_path):
    assert "medxgan-mask" in method_settings(None, _Model(True))["methods"]
    assert "medxgan-mask" not in method_settings(None, _Model(False))["methods"]
    # an evaluation folder made before the mask map existed is not done; one without a minimal mask does not need it
    for inv, done in (({"counterfactual": "residual", "minimal_mask_steps": 150}, False), ({"counterfactual": "generator"}, True)):
        methods = method_settings(None, _Model(False))["methods"]
        (tmp_path / "results.json").write_text(json.dumps({"config": {"methods": methods, "n": 3, "n_selected": 3, "inversion": inv},
                                                           "slices": {"evaluated": 3}}))
        assert eval_done(tmp_path, 3) is done


def _st(v):
    return {"mean": v, "lo": v - 0.05, "hi": v + 0.05, "n": 30, "n_invalid": 0}


def test_summary_lines(tmp_path):
    assert summary_lines(tmp_path) == []
    res = {"config": {"inversion": {"counterfactual": "residual"}},
           "oracle_calibration": {"threshold_logit": 0.0, "threshold_prob": 0.5, "calibrated": True, "target": 0.9, "split": "val",
                                  "n_twins": 150, "twin_specificity": 1.0, "sensitivity": 0.97, "test_split": "test",
                                  "test_twins": _st(0.95)},
           "methods": {"rise": {"metrics": {"localisation.iou_area_matched": _st(0.4)}},
                       "medxgan-diff": {"metrics": {"localisation.iou_area_matched": _st(0.6), "counterfactual_residual.valid_classifier": _st(0.9),
                                                    "counterfactual_residual.valid_oracle": _st(0.8), "flip.flipped": _st(0.9)}},
                       "twin": {"metrics": {"localisation.iou_area_matched": _st(0.9)}}}}
    (tmp_path / "results.json").write_text(json.dumps(res))
    lines = summary_lines(tmp_path)
    assert lines[0] == "area-matched IoU, mean [95 % CI]: medxgan-diff 0.600 [0.550, 0.650], rise 0.400 [0.350, 0.450]"  # no twin row
    assert "for the oracle 0.800 [0.750, 0.850]; flipped within the mask 0.900" in lines[1]
    assert lines[2].startswith("Oracle specificity on the test split's lesion-free twins: 0.950 [0.900, 1.000], n 30")

