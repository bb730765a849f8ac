"""Each medXGAN explanation records whether the classifier was flipped within the (minimal) mask (issue 31): the final
logit of the explained counterfactual, flipped = logit < 0; when not, every output says the map shows the generator's prior."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class ConstantLogit(nn.Module):
    """A classifier whose logit is ``c`` whatever the scan (the graph still reaches the input)."""

    def __init__(self, c: float):
        super().__init__()
        self.c = nn.Parameter(torch.tensor(float(c)))

    def forward(self, x):
        return (x.flatten(1).sum(1, keepdim=True) * 0.0) + self.c


def _mx(c: float):
    from medxgan import MedXGAN
    from medxgan.classifiers import wrap_classifier
    from medxgan.gan import get_preset
    from medxgan.gan.networks import build_generator

    torch.manual_seed(0)
    G = build_generator(get_preset("default", channels=1, size=16, pathology="mask", nz1=8, nz2=4, g_width=8).net).eval()
    clf = wrap_classifier(ConstantLogit(c), output="logit1")
    return MedXGAN(G, clf, inversion=dict(steps=2, restarts=1, counterfactual="residual", minimal_mask_steps=3)), torch.rand(2, 1, 16, 16) * 2 - 1


@pytest.mark.parametrize("c, flipped", [(4.0, False), (-3.0, True)])
def test_flip_is_recorded_with_the_final_logit(c, flipped):
    mx, x = _mx(c)
    cf = mx.engine.counterfactuals(x)
    assert cf.logit_cf.tolist() == pytest.approx([c, c]) and cf.flipped.tolist() == [flipped, flipped]
    d = mx.difference_explainer().explain(x)
    assert d.extras["flipped"].tolist() == [float(flipped)] * 2 and d.extras["logit_cf"].tolist() == pytest.approx([c, c])
    r = mx.explain(x[:1], frames=2, lig_steps=4, lig_tol=None)[0]
    s = r.summary()
    assert s["flipped"] is flipped and s["logit_counterfactual"] == pytest.approx(c)
    if flipped:
        assert s["prior_note"] is None
    else:
        assert "generator's prior" in s["prior_note"] and "logit 4.00" in s["prior_note"]


def test_evaluate_rows_and_tables_report_the_share_flipped():
    from medxgan.evaluate.tables import results_markdown

    st = {"mean": 0.75, "lo": 0.5, "hi": 1.0, "n": 4, "n_invalid": 0}
    md = results_markdown({"config": {}, "methods": {"medxgan-diff": {"metrics": {"counterfactual.valid_classifier": st, "flip.flipped": st}}}})
    assert "Flipped within the mask" in md and "0.750 [0.500, 1.000]" in md


def test_gallery_flags_the_scans_not_flipped(tmp_path):
    from medxgan.report.gallery import _cf_cell, _flags

    names: list[str] = []
    ok = _cf_cell(0.2, {"flipped": True}, "a", names)
    bad = _cf_cell(0.9, {"flipped": False, "prior_note": "not flipped: ..."}, "b", names)
    old = _cf_cell(0.2, {}, "c", names)  # an explanation written before the record: no flag
    assert names == ["b"] and "⚠" in bad and "generator's prior" in bad and "⚠" not in ok and "⚠" not in old
    assert "1 scan(s) where the classifier could not be flipped" in _flags({}, [], names)
