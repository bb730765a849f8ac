"""In-fills of the minimal mask (explain/infill.py): each against a hand-checkable answer, and no in-fill but ``twin``
ever reads the lesion-free twins."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import torch
from helpers import masked_setup

from medxgan.explain.counterfactual import image_key
from medxgan.explain.infill import INFILLS, InfillInputs, blur_infill, healthy_mean, inpaint_infill, make_infill
from medxgan.explain.minimal_mask import refine_mask
from medxgan.runtime.errors import MedxganError


class TwinTrap(Mapping):
    """A twin lookup that fails the test when anything reads it."""

    def __getitem__(self, key):
        raise AssertionError("an in-fill other than 'twin' read the twins")

    def __iter__(self):
        raise AssertionError("an in-fill other than 'twin' read the twins")

    def __len__(self):
        raise AssertionError("an in-fill other than 'twin' read the twins")

    def get(self, key, default=None):
        raise AssertionError("an in-fill other than 'twin' read the twins")

    def __contains__(self, key):
        raise AssertionError("an in-fill other than 'twin' read the twins")


def _inputs(twins=None) -> InfillInputs:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 16, 16, generator=g) * 2 - 1
    gm = torch.zeros(2, 1, 16, 16)
    gm[:, :, 5:9, 6:10] = 1.0
    return InfillInputs(images=x, gan_fill=torch.zeros_like(x) - 0.5, gan_mask=gm, healthy_mean=torch.full((1, 16, 16), 0.25),
                        twins=twins, key=image_key)


def _inpainter(name: str):
    """An untrained inpainter of the variant in-fill ``name`` needs (the learned in-fills, gan/inpainter.py)."""
    from pathlib import Path

    from medxgan.explain.infill import LEARNED_INFILLS
    from medxgan.gan.inpainter import Inpainter, InpaintNet

    variant = LEARNED_INFILLS.get(name, "context")
    torch.manual_seed(0)
    return Inpainter(InpaintNet(1, width=4, gan_channel=variant == "context+gan").eval(), variant, 16, 1, None, Path("mem"))


def test_no_infill_but_twin_reads_the_twins():
    inputs = _inputs(TwinTrap())
    for name in INFILLS:
        inputs.inpainter = _inpainter(name)  # the learned in-fills get their network; it is given no twin either
        if name == "twin":
            with pytest.raises(AssertionError, match="read the twins"):  # the trap works: 'twin' does read it
                make_infill(name, inputs)
        else:
            out = make_infill(name, inputs)
            assert out.shape == inputs.images.shape and torch.isfinite(out).all()


def test_each_infill_by_hand():
    inputs = _inputs()
    assert torch.equal(make_infill("gan", inputs), inputs.gan_fill)
    assert torch.equal(make_infill("mean", inputs), torch.full((2, 1, 16, 16), 0.25))
    const = torch.full((1, 1, 12, 12), 0.3)
    assert torch.allclose(blur_infill(const), const, atol=1e-6)  # a constant scan blurs to itself (replicate padding)
    # a linear ramp is biharmonic: inpainting any hole in it gives the ramp back; outside the hole nothing changes
    ramp = torch.linspace(-0.8, 0.8, 16).view(1, 1, 1, 16).expand(1, 1, 16, 16).clone()
    holed = ramp.clone()
    holed[:, :, 5:9, 6:10] = 1.0  # a "lesion"
    filled = inpaint_infill(holed, inputs.gan_mask[:1])
    assert torch.allclose(filled, ramp, atol=1e-4)
    twins = {image_key(x): x * 0 + i for i, x in enumerate(inputs.images)}
    out = make_infill("twin", _inputs(twins))
    assert float(out[0].abs().max()) == 0.0 and float(out[1].min()) == 1.0
    assert torch.allclose(healthy_mean(torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)])), torch.full((1, 4, 4), 0.5))


def test_missing_inputs_are_one_line_errors():
    inputs = _inputs()
    with pytest.raises(MedxganError, match="twin"):
        make_infill("twin", inputs)
    with pytest.raises(MedxganError, match="choose"):
        make_infill("noise", inputs)
    inputs.healthy_mean = None
    with pytest.raises(MedxganError, match="mean"):
        make_infill("mean", inputs)


def test_minimal_mask_with_a_plain_infill_finds_the_region():
    """The minimal-mask search with the blur in-fill on a classifier that reads one bright square: the mask covers
    the square and little else."""

    class Reader(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.s = torch.nn.Parameter(torch.tensor(6.0))

        def logit(self, x):
            return self.s * (x[:, :, 4:8, 4:8].mean((1, 2, 3)) - 0.0)

    x = torch.full((1, 1, 16, 16), -0.6)
    x[:, :, 4:8, 4:8] = 0.9
    inputs = InfillInputs(images=x, gan_fill=x, gan_mask=torch.full((1, 1, 16, 16), 0.6))
    fill = make_infill("inpaint", InfillInputs(images=x, gan_fill=x, gan_mask=(torch.arange(16).view(1, 1, 16, 1) < 10).float().expand(1, 1, 16, 16)))
    assert float(fill[0, 0, 4:8, 4:8].mean()) < 0.0  # the square inpainted from its dark surroundings
    m = refine_mask(Reader(), x, fill, inputs.gan_mask, steps=150, w_tv=0.1, floor=None)
    inside, outside = float(m[0, 0, 4:8, 4:8].mean()), float(m[0, 0, 10:, :].mean())
    assert inside > 0.5 > outside


def test_engine_searches_and_explains_with_the_chosen_infill():
    """--infill blur: the counterfactual is x + M (blur(x) - x), the LIG path runs from it to the scan (completeness)."""
    from medxgan import MedXGAN

    G, clf, x = masked_setup()
    mx = MedXGAN(G, clf, inversion=dict(steps=3, restarts=1, counterfactual="residual", minimal_mask_steps=10, minimal_mask_infill="blur"))
    cf = mx.engine.counterfactuals(x)
    assert cf.fills is not None and torch.allclose(cf.fills, blur_infill(x), atol=1e-6)
    assert torch.allclose(cf.x_res, x + cf.masks * (blur_infill(x) - x), atol=1e-6)
    res = mx.explain(x, frames=3, lig_steps=64, lig_tol=None)
    for i, r in enumerate(res):
        assert torch.allclose(r.frames[0], r.residual, atol=1e-6) and torch.allclose(r.frames[-1], x[i], atol=1e-6)
        with torch.no_grad():
            delta = float(clf.logit(x[i : i + 1]) - clf.logit(r.residual[None]))
        assert float(r.lig.sum()) == pytest.approx(delta, abs=0.02 * abs(delta) + 1e-3)
    gan = MedXGAN(G, clf, inversion=dict(steps=3, restarts=1, counterfactual="residual", minimal_mask_steps=10))
    assert gan.engine.counterfactuals(x).fills is None  # the default in-fill: B(z1*), nothing extra stored
    with pytest.raises(MedxganError, match="minimal_mask_infill"):
        MedXGAN(G, clf, inversion=dict(counterfactual="residual", minimal_mask_infill="noise"))


def test_engine_twin_infill_only_with_twins_and_no_other_reads_them():
    from medxgan import MedXGAN
    from medxgan.evaluate.twins import prepare_twin_infill

    G, clf, x = masked_setup()
    twins = x.clamp(max=0.0)
    for name in ("gan", "blur", "inpaint"):
        mx = MedXGAN(G, clf, inversion=dict(steps=2, restarts=1, counterfactual="residual", minimal_mask_steps=3, minimal_mask_infill=name))
        prepare_twin_infill(mx.engine, x, twins, torch.ones(2, dtype=torch.bool))
        assert mx.engine.infill_twins is None  # evaluate hands the twins to the twin in-fill only
        mx.engine.infill_twins = TwinTrap()  # and the engine does not pass them to any other in-fill
        mx.engine.counterfactuals(x)
    mx = MedXGAN(G, clf, inversion=dict(steps=2, restarts=1, counterfactual="residual", minimal_mask_steps=3, minimal_mask_infill="twin"))
    with pytest.raises(MedxganError, match="no lesion-free twins"):
        prepare_twin_infill(mx.engine, x, None, None)
    prepare_twin_infill(mx.engine, x, twins, torch.ones(2, dtype=torch.bool))
    cf = mx.engine.counterfactuals(x)
    assert torch.allclose(cf.x_res, x + cf.masks * (twins - x), atol=1e-6)


def test_cli_infill_option_reaches_the_options():
    import argparse

    from medxgan.cli.common import add_minimal_mask_options, minimal_mask_options

    p = argparse.ArgumentParser()
    add_minimal_mask_options(p)
    assert minimal_mask_options(p.parse_args(["--infill", "inpaint"])) == {"minimal_mask_infill": "inpaint"}
    with pytest.raises(SystemExit):
        p.parse_args(["--infill", "noise"])


def test_results_report_the_oracles_specificity_on_the_twins_next_to_validity():
    from medxgan.evaluate.tables import results_markdown
    from medxgan.evaluate.twins import oracle_twin_specificity

    cell = lambda v: {"mean": v, "lo": v - 0.1, "hi": v + 0.1, "n": 30, "n_invalid": 0}  # noqa: E731
    methods = {"medxgan-diff": {"metrics": {"counterfactual.valid_oracle": cell(0.9), "counterfactual.valid_classifier": cell(1.0)}},
               "twin": {"metrics": {"counterfactual.valid_oracle": cell(0.2), "counterfactual.valid_classifier": cell(1.0)}}}
    assert oracle_twin_specificity(methods) == {"mean": 0.2, "lo": pytest.approx(0.1), "hi": pytest.approx(0.3), "n": 30}
    md = results_markdown({"config": {}, "methods": methods})
    assert "specificity on the lesion-free twins" in md and "0.200 [0.100, 0.300], n 30" in md
    del methods["twin"]  # no twins (users' data): nothing is claimed
    assert oracle_twin_specificity(methods) is None and "specificity on the lesion-free twins" not in results_markdown({"config": {}, "methods": methods})


def test_cli_explain_refuses_the_twin_infill_before_any_work(tmp_path, capsys):
    from medxgan.cli import main

    rc = main(["explain", str(tmp_path), "--gan", str(tmp_path), "--out", str(tmp_path / "o"), "--infill", "twin"])
    assert rc == 2 and "--infill twin: the lesion-free twin is ground truth of phantom data, for evaluate only" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
