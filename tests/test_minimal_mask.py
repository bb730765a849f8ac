"""The minimal mask of the residual counterfactual (medxgan.explain.minimal_mask): hand-checked
objective terms, what the refinement finds on a classifier whose evidence is known, batch = one by one,
the path and LIG completeness through the explainers, and option errors."""

from __future__ import annotations

import pytest
import torch
from helpers import masked_setup
from torch import nn

from medxgan.classifiers import wrap_classifier
from medxgan.classifiers.reference import negative_logit_reference
from medxgan.explain.minimal_mask import mask_objective, refine_mask, target_logits, total_variation
from medxgan.runtime.errors import MedxganError

pytestmark = pytest.mark.usefixtures("one_thread")


class _RegionLogit(nn.Module):
    """logit = 4 * mean of the pixels in the top-left 2 x 2 block of an 8 x 8 image - 1: the evidence is there only."""

    def forward(self, x):
        return (4 * x[:, :, :2, :2].mean((1, 2, 3)) - 1).unsqueeze(1)


def test_total_variation_and_objective_hand_values():
    m = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # rows: |0 - 1|, |0 - 0| -> mean 0.5; columns: the same -> 1.0
    assert total_variation(m).tolist() == [1.0]
    clf = wrap_classifier(_Lin(), output="logit1")
    x = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]]])
    fill = torch.zeros_like(x)
    # x + m (fill - x) = [[0, 1], [1, 1]]: logit = sum - 1 = 2 > target 0 -> hinge 2; area 0.25; TV 1.0
    obj = mask_objective(clf, x, fill, m, torch.tensor([0.0]), w_area=2.0, w_tv=0.5)
    assert obj.tolist() == [pytest.approx(2.0 + 2.0 * 0.25 + 0.5 * 1.0)]
    # below the target the hinge is 0: only the size terms are left
    obj = mask_objective(clf, x, fill, torch.ones_like(m), torch.tensor([0.0]), w_area=1.0, w_tv=1.0)
    assert obj.tolist() == [pytest.approx(1.0)]  # logit -1 <= 0, area 1, TV 0


class _Lin(nn.Module):
    def forward(self, x):
        return (x.flatten(1).sum(1) - 1).unsqueeze(1)


def test_refinement_keeps_the_evidence_region_and_drops_the_rest():
    torch.manual_seed(0)
    clf = wrap_classifier(_RegionLogit(), output="logit1")
    x = torch.full((2, 1, 8, 8), 0.8)
    fill = torch.full_like(x, -0.5)
    gm = torch.full((2, 1, 8, 8), 0.9)  # the generator's mask covers everything
    with torch.no_grad():
        target = clf.logit(x + gm * (fill - x)).clamp(max=0)
    m = refine_mask(clf, x, fill, gm, steps=300, lr=0.1, stop_tol=None)  # the optimum of the full search (no early stop)
    with torch.no_grad():
        refined = clf.logit(x + m * (fill - x))
    assert bool((refined <= target + 0.05).all())  # as negative as the generator's counterfactual
    inside, outside = m[:, :, :2, :2].mean(), m[:, :, 2:, 2:].mean()
    assert float(inside) > 0.8 and float(outside) < 0.1  # only where the classifier looks
    one = refine_mask(clf, x[:1], fill[:1], gm[:1], steps=300, lr=0.1, stop_tol=None)
    assert torch.allclose(one, m[:1], atol=1e-6)  # a batch equals its images one by one
    assert torch.equal(refine_mask(clf, x, fill, gm, steps=0), gm)


def test_target_floor_hand_values():
    clf = wrap_classifier(_Lin(), output="logit1")
    x = torch.ones(3, 1, 2, 2)  # logit of x + m (fill - x) with fill 0 and m = gM: sum(1 - gM) - 1
    gm = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1, 1).expand(3, 1, 2, 2)
    fill = torch.zeros_like(x)
    # generator counterfactual logits 3, 1, -1 -> match target min(., 0) = 0, 0, -1
    assert target_logits(clf, x, fill, gm).tolist() == [0.0, 0.0, -1.0]
    # a floor at -0.5 lifts the third (no more negative than the floor), a positive floor counts as 0
    assert target_logits(clf, x, fill, gm, floor=-0.5).tolist() == [0.0, 0.0, -0.5]
    assert target_logits(clf, x, fill, gm, floor=2.0).tolist() == [0.0, 0.0, 0.0]
    assert target_logits(clf, x, fill, gm, floor=-5.0).tolist() == [0.0, 0.0, -1.0]


def test_negative_logit_reference_hand_values():
    clf = wrap_classifier(_Lin(), output="logit1")
    negs = torch.arange(21, dtype=torch.float32).view(21, 1, 1, 1)  # logits -1, 0, ..., 19
    ref = negative_logit_reference(clf, negs, batch_size=4)
    # float32 tolerances: the quantile of float32 logits lands 1.5e-8 off 0.0 on torch 2.14 (exactly 0.0 on 2.13)
    f32 = dict(rel=1e-6, abs=1e-6)
    assert ref == {"negative_logit_q05": pytest.approx(0.0, **f32), "negative_logit_median": pytest.approx(9.0, **f32), "n_negatives": 21}
    assert negative_logit_reference(clf, negs[:0]) == {}


def test_a_floor_above_the_generator_target_gives_a_smaller_mask():
    clf = wrap_classifier(_RegionLogit(), output="logit1")
    x = torch.full((1, 1, 8, 8), 0.8)
    fill = torch.full_like(x, -0.5)
    gm = torch.full((1, 1, 8, 8), 0.9)
    full = refine_mask(clf, x, fill, gm, steps=300, lr=0.1, stop_tol=None)  # the optimum of the full search (no early stop)
    floored = refine_mask(clf, x, fill, gm, steps=300, lr=0.1, floor=-1.5, stop_tol=None)  # the generator's: 4 (0.8 - 0.9 * 1.3) - 1 = -2.48
    with torch.no_grad():
        assert float(clf.logit(x + floored * (fill - x))) <= -1.5 + 0.05
    assert float(floored.sum()) < 0.8 * float(full.sum())


def test_a_coarse_mask_is_the_upsampled_grid_and_keeps_the_evidence():
    import torch.nn.functional as F

    clf = wrap_classifier(_RegionLogit(), output="logit1")
    x = torch.full((2, 1, 8, 8), 0.8)
    fill = torch.full_like(x, -0.5)
    gm = torch.full((2, 1, 8, 8), 0.9)
    m = refine_mask(clf, x, fill, gm, steps=300, lr=0.1, scale=2)
    assert m.shape == (2, 1, 8, 8)
    assert float(m[:, :, :2, :2].mean()) > 0.6 and float(m[:, :, 4:, 4:].mean()) < 0.1
    coarse = F.adaptive_avg_pool2d(m, 4)  # not a free per-pixel mask: bilinear between 4 x 4 cells
    assert torch.allclose(F.interpolate(coarse, size=8, mode="bilinear", align_corners=False), m, atol=0.15)
    one = refine_mask(clf, x[:1], fill[:1], gm[:1], steps=300, lr=0.1, scale=2)
    assert torch.allclose(one, m[:1], atol=1e-6)


def test_minimal_mask_path_runs_from_its_counterfactual_to_the_scan():
    from medxgan import MedXGAN

    G, clf, x = masked_setup()
    mx = MedXGAN(G, clf, inversion=dict(steps=5, restarts=1, counterfactual="residual", w_cf=1.0, w_min=1.0, minimal_mask_steps=20))
    assert mx.engine.refines_mask
    cf = mx.engine.counterfactuals(x)
    assert cf.masks is not None and cf.masks.shape == (2, 1, 16, 16)
    assert torch.allclose(cf.x_res, x + cf.masks * (cf.x_neg - x), atol=1e-6)  # x_neg = B(z1*) for a masked G
    res = mx.explain(x, frames=5, lig_steps=64, lig_tol=None)
    for i, r in enumerate(res):
        assert torch.allclose(r.frames[0], r.residual, atol=1e-6) and torch.allclose(r.frames[-1], x[i], atol=1e-6)
        assert torch.allclose(r.difference, (x[i] - r.residual).abs(), atol=1e-6)
        with torch.no_grad():
            delta = float(clf.logit(x[i : i + 1]) - clf.logit(r.residual[None]))
        assert r.lig_delta == pytest.approx(delta, abs=1e-5)
        assert float(r.lig.sum()) == pytest.approx(delta, abs=0.02 * abs(delta) + 1e-3)  # completeness on the straight path


def test_minimal_mask_is_off_for_the_generator_counterfactual_and_options_are_checked():
    from medxgan import MedXGAN

    G, clf, x = masked_setup()
    mx = MedXGAN(G, clf, inversion=dict(steps=2, restarts=1, counterfactual="generator", minimal_mask_steps=20))
    assert not mx.engine.refines_mask and mx.engine.counterfactuals(x).masks is None
    for bad in (dict(minimal_mask_steps=-1), dict(minimal_mask_steps=1.5), dict(minimal_mask_area=float("nan")), dict(minimal_mask_tv=-2.0),
                dict(minimal_mask_scale=0), dict(minimal_mask_scale=1.5), dict(minimal_mask_target="lowest"), dict(minimal_mask_floor=float("inf"))):
        with pytest.raises(MedxganError):
            MedXGAN(G, clf, inversion=dict(counterfactual="residual", **bad))


def test_cli_rejects_a_negative_minimal_mask_steps(tmp_path, capsys):
    from medxgan.cli import main

    rc = main(["explain", str(tmp_path), "--gan", str(tmp_path), "--out", str(tmp_path / "o"), "--minimal-mask-steps", "-3"])
    assert rc == 2
    assert "--minimal-mask-steps -3" in capsys.readouterr().err


def test_sanity_check_re_refines_the_minimal_mask_under_the_randomised_classifier():
    """With the minimal mask the difference map reads the classifier at explanation time, so the cascading
    randomisation covers it: same inversion, the mask refined again under the randomised weights."""
    from medxgan import MedXGAN
    from medxgan.evaluate.sanity import classifier_based, model_randomisation

    G, clf, x = masked_setup()
    mx = MedXGAN(G, clf, inversion=dict(steps=3, restarts=1, counterfactual="residual", minimal_mask_steps=10))
    diff = mx.difference_explainer()
    assert classifier_based(diff)
    res = model_randomisation([diff], clf, x, n_resamples=50)
    curve = res["methods"][diff.name]["curve"]
    assert curve and all(c["ssim"]["n"] == 2 for c in curve)
    off = MedXGAN(G, clf, inversion=dict(steps=3, restarts=1, counterfactual="residual", minimal_mask_steps=0))
    assert not classifier_based(off.difference_explainer())


def test_explain_files_saves_the_minimal_mask(tmp_path):
    import numpy as np
    from PIL import Image

    from medxgan import MedXGAN

    G, clf, x = masked_setup()
    src = tmp_path / "scan.png"
    Image.fromarray(((x[0, 0].numpy() + 1) * 127.5).round().astype(np.uint8)).save(src)
    mx = MedXGAN(G, clf, inversion=dict(steps=2, restarts=1, counterfactual="residual", minimal_mask_steps=5))
    mx.explain_files([src], tmp_path / "out", show_progress=False, frames=3)
    maps = np.load(tmp_path / "out" / "scan" / "maps.npz")
    m = maps["residual_mask"]
    assert m.shape == (16, 16) and 0.0 <= m.min() and m.max() <= 1.0
    import json

    rec = json.loads((tmp_path / "out" / "scan" / "explanation.json").read_text())  # the mask map's overlay, on the page too
    assert rec["files"]["minimal_mask_overlay"] == "minimal_mask_overlay.png"
    with Image.open(tmp_path / "out" / "scan" / "minimal_mask_overlay.png") as im:
        im.verify()
    assert "minimal_mask_overlay.png" in (tmp_path / "out" / "scan" / "index.html").read_text()
    r = mx.explain(x[:1], frames=3)[0]
    assert r.residual_mask is not None and torch.allclose(r.residual, x[0] + r.residual_mask * (r.negative - x[0]), atol=1e-6)


def test_the_healthy_target_takes_its_floor_from_the_run_and_only_for_the_runs_own_classifier():
    import dataclasses
    from pathlib import Path

    from medxgan import MedXGAN
    from medxgan.gan.run import GanRun

    G, clf, x = masked_setup()
    inv = dict(counterfactual="residual", minimal_mask_steps=5, minimal_mask_target="healthy")
    config = {"preset": {"inversion": inv}, "classifier_reference": {"negative_logit_q05": -1.25}}
    run = GanRun(G, clf, None, config, Path("."))
    mx = MedXGAN.from_run(run, steps=2, restarts=1)
    assert mx.engine.mask_floor == -1.25 and "logit -1.25" in mx.inversion_note()
    other = MedXGAN.from_run(run, classifier=clf, steps=2, restarts=1)  # another classifier: the run's reference does not apply
    assert other.engine.mask_floor is None
    old = MedXGAN.from_run(dataclasses.replace(run, config={"preset": {"inversion": inv}}), steps=2, restarts=1)
    assert old.engine.mask_floor is None  # a run trained before the reference existed: the "match" target
    match = MedXGAN(G, clf, inversion=dict(inv, minimal_mask_target="match", minimal_mask_floor=-1.0))
    assert match.engine.mask_floor is None


def test_cli_minimal_mask_floor_implies_the_healthy_target_and_reaches_the_engine(tmp_path, capsys):
    import argparse
    from pathlib import Path

    from medxgan import MedXGAN
    from medxgan.gan.run import GanRun
    from medxgan.cli import main
    from medxgan.cli.common import add_minimal_mask_options, minimal_mask_options

    p = argparse.ArgumentParser()
    add_minimal_mask_options(p)
    assert minimal_mask_options(p.parse_args([])) == {}  # nothing given: the preset decides
    opts = minimal_mask_options(p.parse_args(["--minimal-mask-floor", "-1.5"]))
    assert opts == {"minimal_mask_target": "healthy", "minimal_mask_floor": -1.5}
    G, clf, _ = masked_setup()
    inv = dict(counterfactual="residual", minimal_mask_steps=5, minimal_mask_target="healthy")
    run = GanRun(G, clf, None, {"preset": {"inversion": inv}, "classifier_reference": {"negative_logit_q05": -1.25}}, Path("."))
    assert MedXGAN.from_run(run, steps=2, restarts=1, **opts).engine.mask_floor == -1.5  # the user's floor wins over the run's
    assert MedXGAN.from_run(run, classifier=clf, steps=2, restarts=1, **opts).engine.mask_floor == -1.5  # and serves another classifier
    for cmd in ("explain", "evaluate"):  # contradictory or non-finite: one line, exit 2, before any work
        rc = main([cmd, str(tmp_path), "--gan", str(tmp_path), "--out", str(tmp_path / "o"), "--minimal-mask-target", "match", "--minimal-mask-floor", "-2"])
        assert rc == 2 and "--minimal-mask-floor -2.0: applies to --minimal-mask-target healthy" in capsys.readouterr().err
        rc = main([cmd, str(tmp_path), "--gan", str(tmp_path), "--out", str(tmp_path / "o"), "--minimal-mask-floor", "nan"])
        assert rc == 2 and "--minimal-mask-floor nan: must be a finite number" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_early_stop_meets_the_target_and_batch_equals_one_by_one():
    clf = wrap_classifier(_RegionLogit(), output="logit1")
    x = torch.full((2, 1, 8, 8), 0.8)
    x[1] = 0.6  # a second scan that converges at another step
    fill = torch.full_like(x, -0.5)
    gm = torch.full((2, 1, 8, 8), 0.9)
    target = target_logits(clf, x, fill, gm)
    full = refine_mask(clf, x, fill, gm, steps=300, lr=0.1, stop_tol=None)
    # stop_tol 0 never stops: the same steps on the same numbers as without the option
    assert torch.allclose(refine_mask(clf, x, fill, gm, steps=300, lr=0.1, stop_tol=0.0), full, atol=1e-6)
    early = refine_mask(clf, x, fill, gm, steps=300, lr=0.1, stop_tol=1e-3)
    with torch.no_grad():
        assert bool((clf.logit(x + early * (fill - x)) <= target + 1e-6).all())  # frozen only where the target is met
    assert float(early[:, :, :2, :2].mean()) > 0.8 and float(early[:, :, 2:, 2:].mean()) < 0.1
    for i in range(2):  # freezing one image leaves the other's steps unchanged
        one = refine_mask(clf, x[i : i + 1], fill[i : i + 1], gm[i : i + 1], steps=300, lr=0.1, stop_tol=1e-3)
        assert torch.allclose(one, early[i : i + 1], atol=1e-6)


def test_frozen_restores_each_submodule_mode():
    from medxgan.runtime.tensors import frozen

    inner = nn.BatchNorm2d(1).eval()
    outer = nn.Sequential(inner)  # a wrapper in train mode around an eval-mode module (MaskPath around the generator)
    assert outer.training and not inner.training
    with frozen(outer, inner):
        assert not outer.training and not inner.training
    assert outer.training and not inner.training  # the old restore, outer.train(True), put inner in train mode


def test_lig_on_the_mask_path_leaves_the_generator_in_eval_mode():
    from medxgan import MedXGAN

    G, clf, x = masked_setup()
    mx = MedXGAN(G, clf, inversion=dict(steps=5, restarts=1, counterfactual="residual", w_cf=1.0, w_min=1.0, minimal_mask_steps=10))
    before = mx.engine.counterfactuals(x).x_res
    mx.lig_explainer(steps=8, tol=None).explain(x)  # LIG runs through MaskPath wrappers (train mode when built)
    assert not any(m.training for m in G.modules())  # train-mode BatchNorm would change every later inversion
    mx.engine.clear_cache()
    assert torch.equal(mx.engine.counterfactuals(x).x_res, before)  # the same image explained again: the same numbers


def test_a_given_start_replaces_the_generators_mask_as_start_but_not_as_target():
    clf = wrap_classifier(_RegionLogit(), output="logit1")
    x = torch.full((2, 1, 8, 8), 0.8)
    fill = torch.full_like(x, -0.5)
    gm = torch.full((2, 1, 8, 8), 0.9)
    # start = the generator's mask itself, at full resolution or on the grid: the same search
    assert torch.equal(refine_mask(clf, x, fill, gm, steps=20, scale=2, start=gm), refine_mask(clf, x, fill, gm, steps=20, scale=2))
    assert torch.equal(refine_mask(clf, x, fill, gm, steps=20, scale=2, start=torch.full((2, 1, 4, 4), 0.9)),
                       refine_mask(clf, x, fill, gm, steps=20, scale=2))
    # no steps: the start, upsampled to the image (a 4 x 4 grid of 0.3 -> 0.3 everywhere)
    assert torch.allclose(refine_mask(clf, x, fill, gm, steps=0, start=torch.full((2, 1, 4, 4), 0.3)), torch.full_like(x, 0.3))
    # a start that already is the answer (the evidence block only) stays near it; the target is still gM's (<= 0)
    good = torch.zeros(2, 1, 8, 8)
    good[:, :, :2, :2] = 1.0
    m = refine_mask(clf, x, fill, gm, steps=30, lr=0.1, start=good)
    assert float(m[:, :, :2, :2].mean()) > 0.8 and float(m[:, :, 2:, 2:].mean()) < 0.1



def test_the_mask_map_is_the_minimal_mask_and_the_difference_map_is_it_times_the_fill_change():
    """medxgan-mask returns the searched mask itself; |x - x_res| = M |x - fill| makes the difference map the mask times the
    in-fill's change (here the gan in-fill, fill = x_neg = B(z1*)); both rows share one counterfactual (no second search)."""
    from medxgan import MedXGAN
    from medxgan.explain.baselines import build_explainers

    G, clf, x = masked_setup()
    mx = MedXGAN(G, clf, inversion=dict(steps=3, restarts=1, counterfactual="residual", minimal_mask_steps=15))
    diff, mask = build_explainers(["medxgan-diff", "medxgan-mask"], clf, gan=mx)
    assert mask.name == "medxgan-mask" and mask.engine is diff.engine
    d, m = diff.explain(x), mask.explain(x)
    cf = mx.engine.counterfactuals(x)
    assert torch.equal(m.maps, cf.masks) and float(m.maps.min()) >= 0 and float(m.maps.max()) <= 1
    assert torch.allclose(d.maps, cf.masks * (x - cf.x_neg).abs(), atol=1e-6)
    assert torch.equal(m.extras["x_res"], d.extras["x_res"])  # the same counterfactual, so the same validity and twin figures


def test_the_mask_map_finds_the_region_a_classifier_reads():
    """A classifier whose evidence is one 4 x 4 block: the mask map's top pixels are that block."""
    from medxgan import MedXGAN
    from medxgan.evaluate.localisation import iou_area_matched

    G, _, x = masked_setup()

    class Block(nn.Module):
        def forward(self, t):
            return (3 * t[:, :, 4:8, 4:8].mean((1, 2, 3)) + 1).unsqueeze(1)

    clf = wrap_classifier(Block(), output="logit1", name="block")
    x = x.clone()
    x[:, :, 4:8, 4:8] = 1.0  # strong evidence where the classifier reads
    mx = MedXGAN(G, clf, inversion=dict(steps=2, restarts=1, counterfactual="residual", minimal_mask_steps=150, minimal_mask_scale=1,
                                        minimal_mask_floor=-1.0))
    maps = mx.mask_explainer().explain(x).maps
    truth = torch.zeros(16, 16, dtype=torch.bool)
    truth[4:8, 4:8] = True
    for i in range(len(x)):
        assert iou_area_matched(maps[i, 0].numpy(), truth.numpy()) >= 0.75


def test_the_mask_map_needs_the_minimal_mask_and_the_default_set_skips_it_without_one():
    from medxgan import MedXGAN
    from medxgan.explain.baselines import build_explainers

    G, clf, x = masked_setup()
    off = MedXGAN(G, clf, inversion=dict(steps=2, restarts=1, counterfactual="generator"))
    with pytest.raises(MedxganError, match="medxgan-mask"):
        off.mask_explainer()
    with pytest.raises(MedxganError, match="minimal mask"):
        build_explainers(["medxgan-mask"], clf, gan=off)


def test_sanity_check_re_searches_the_mask_map_under_the_randomised_classifier():
    from medxgan import MedXGAN
    from medxgan.evaluate.sanity import _map_function, classifier_based, model_randomisation

    G, clf, x = masked_setup()
    mx = MedXGAN(G, clf, inversion=dict(steps=3, restarts=1, counterfactual="residual", minimal_mask_steps=10))
    mask = mx.mask_explainer()
    assert classifier_based(mask)
    assert torch.allclose(torch.from_numpy(_map_function(mask, x)()), mask.explain(x).maps[:, 0], atol=1e-6)  # trained weights: same map
    curve = model_randomisation([mask], clf, x, n_resamples=50)["methods"]["medxgan-mask"]["curve"]
    assert curve and all(c["ssim"]["n"] == 2 for c in curve)


def test_cli_minimal_mask_tv_reaches_the_engine_and_bad_values_are_one_line(tmp_path, capsys):
    import argparse
    from pathlib import Path

    from medxgan import MedXGAN
    from medxgan.cli import main
    from medxgan.cli.common import add_minimal_mask_options, minimal_mask_options
    from medxgan.gan.run import GanRun

    p = argparse.ArgumentParser()
    add_minimal_mask_options(p)
    opts = minimal_mask_options(p.parse_args(["--minimal-mask-tv", "16"]))
    assert opts == {"minimal_mask_tv": 16.0}
    G, clf, _ = masked_setup()
    run = GanRun(G, clf, None, {"preset": {"inversion": dict(counterfactual="residual", minimal_mask_steps=5, minimal_mask_tv=4.0)}}, Path("."))
    assert MedXGAN.from_run(run, steps=2, restarts=1).engine.minimal_mask.tv == 4.0  # the run's own
    assert MedXGAN.from_run(run, steps=2, restarts=1, **opts).engine.minimal_mask.tv == 16.0  # the user's wins
    for bad in ("nan", "-1", "inf"):
        for cmd in ("explain", "evaluate"):
            rc = main([cmd, str(tmp_path), "--gan", str(tmp_path), "--out", str(tmp_path / "o"), "--minimal-mask-tv", bad])
            err = capsys.readouterr().err
            assert rc == 2 and err.startswith("medxgan: error: --minimal-mask-tv ") and len(err.strip().splitlines()) == 1
            assert "must be a finite number" in err
    assert not (tmp_path / "o").exists()


def test_sanity_check_searches_the_mask_once_per_step_for_the_difference_and_the_mask_map():
    """The difference map and the mask map of one engine need the same minimal-mask search at each cascade step: it runs
    once per step, and both curves equal those each method gets alone."""
    from medxgan import MedXGAN
    from medxgan.evaluate.sanity import model_randomisation, randomisation_blocks
    from medxgan.explain.baselines import build_explainers

    G, clf, x = masked_setup()
    mx = MedXGAN(G, clf, inversion=dict(steps=3, restarts=1, counterfactual="residual", minimal_mask_steps=10))
    diff, mask = build_explainers(["medxgan-diff", "medxgan-mask"], clf, gan=mx)
    assert diff.engine is mask.engine
    alone = {e.name: model_randomisation([e], clf, x, n_resamples=50)["methods"][e.name] for e in (diff, mask)}
    calls = []
    search = diff.engine.refine_masks
    diff.engine.refine_masks = lambda cf: calls.append(1) or search(cf)
    both = model_randomisation([diff, mask], clf, x, n_resamples=50)["methods"]
    assert both == alone
    assert len(calls) == len(randomisation_blocks(clf.model)) + 1  # the trained model and every step, once each
