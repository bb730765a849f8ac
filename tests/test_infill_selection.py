"""``infill="auto"`` (explain/infill_selection.py): the score by hand, the choice's margin, the implant-and-restore
measurement on a case with a known answer, and the run-level path (chosen once, cached, recorded, one-line errors)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import cli_runs, masked_setup, one_error_line

from medxgan.explain import infill_selection as sel_mod
from medxgan.explain.infill_selection import MARGIN_DB, _psnr_weighted, choose, score_infills
from medxgan.gan.inversion import InversionConfig
from medxgan.runtime.errors import MedxganError


def test_weighted_psnr_by_hand():
    truth = torch.zeros(1, 1, 2, 2)
    fill = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    w = torch.tensor([[[[1.0, 3.0], [0.0, 0.0]]]])
    # weighted MSE = (1 * 1 + 3 * 0) / 4 = 0.25; PSNR = 10 log10(4 / 0.25) = 12.04 dB
    assert _psnr_weighted(fill, truth, w) == pytest.approx(10 * math.log10(16), abs=1e-3)
    assert _psnr_weighted(fill, truth, torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])) > 100  # error only where the weight is 0


def test_choice_keeps_the_generators_infill_unless_another_pays_the_margin():
    assert choose({"gan": 20.0, "blur": 20.0 + MARGIN_DB / 2, "mean": 15.0}) == "gan"
    assert choose({"gan": 20.0, "blur": 20.0 + MARGIN_DB + 0.01, "mean": 15.0}) == "blur"
    assert choose({"gan": 14.0, "blur": 17.2, "learned-gan": 16.9}) == "blur"
    assert choose({"blur": 1.0, "mean": 2.0}) == "mean"  # no generator in-fill among the candidates: the best


def test_the_infill_that_restores_the_healthy_scan_scores_highest():
    """Known answer: the negatives are constant -0.5 (a blur of a constant scan is that scan), so wherever a pattern is
    implanted, the mean of four constant scans (also -0.5) restores it exactly, and a blur of the implanted scan
    keeps part of the pattern: mean must score far above blur, and both above the implanted scan itself."""
    G, clf, _ = masked_setup()
    torch.manual_seed(1)
    positives = torch.rand(4, 1, 16, 16) * 2 - 1
    negatives = torch.full((4, 1, 16, 16), -0.5)
    scores, implanted = score_infills(G, clf, positives, negatives, ["gan", "blur", "mean"],
                                      inversion=InversionConfig(steps=3, restarts=1, counterfactual="residual"),
                                      mean_scan=torch.full((1, 16, 16), -0.5))
    assert scores["mean"] > 100  # exact
    assert scores["mean"] > scores["blur"] and scores["blur"] > implanted
    assert set(scores) == {"gan", "blur", "mean"}


def test_score_needs_a_masked_generator_and_both_classes():
    G, clf, x = masked_setup()
    inv = InversionConfig(steps=1, restarts=1, counterfactual="residual")
    with pytest.raises(MedxganError, match="both classes"):
        score_infills(G, clf, x[:1], x, ["gan"], inversion=inv)
    G.masked = False
    with pytest.raises(MedxganError, match="pathology mask"):
        score_infills(G, clf, x, x, ["gan"], inversion=inv)


@pytest.fixture(scope="module")
def masked_runs(tmp_path_factory):
    """Tiny CLI runs (data with a val split, classifier, a fast-preset GAN with a pathology mask)."""
    return cli_runs(tmp_path_factory.mktemp("auto"), epochs=1, steps=2, gan_args=("--set", "pathology=mask"))


AUTO = dict(steps=2, restarts=1, counterfactual="residual", minimal_mask_steps=2, minimal_mask_infill="auto")


def test_auto_is_chosen_once_cached_and_recorded(masked_runs, monkeypatch):
    from medxgan import MedXGAN

    gan = masked_runs / "gan"
    mx = MedXGAN.load(gan, **AUTO)
    sel = mx.infill_selection
    assert sel is not None and sel.chosen in ("gan", "blur", "mean") and sel.chosen == choose(sel.scores_db)
    assert sel.n_pairs == 4 and set(sel.scores_db) == {"gan", "blur", "mean"}
    assert mx.engine.minimal_mask.infill == sel.chosen  # the engine runs with the chosen in-fill, never "auto"
    assert "chosen by --infill auto: " + sel.chosen in mx.inversion_note()
    stored = json.loads((gan / "infill_selection.json").read_text())["selection"]
    assert stored["chosen"] == sel.chosen and stored["scores_db"] == sel.scores_db

    calls = []
    monkeypatch.setattr(sel_mod, "score_infills", lambda *a, **k: calls.append(1) or ({"gan": 0.0}, 0.0))
    again = MedXGAN.load(gan, **AUTO).infill_selection
    assert calls == [] and again == sel  # read back, not recomputed
    MedXGAN.load(gan, **{**AUTO, "steps": 3})  # other inversion settings: another choice
    assert calls == [1]

    x = torch.rand(1, 1, 64, 64) * 2 - 1
    res = mx.explain(x, frames=2, lig_steps=4, lig_tol=None)
    assert res[0].settings["inversion"].get("minimal_mask_infill", "gan") == sel.chosen
    assert res[0].settings["infill_selection"]["chosen"] == sel.chosen


def test_auto_without_the_runs_data_is_one_line_before_any_work(masked_runs, tmp_path, capsys):
    import shutil

    from medxgan.cli import main

    gan = tmp_path / "gan"
    shutil.copytree(masked_runs / "gan", gan)
    (gan / "infill_selection.json").unlink(missing_ok=True)
    cfg = json.loads((gan / "config.json").read_text())
    cfg["data"] = str(tmp_path / "moved")
    (gan / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    rc = main(["explain", str(masked_runs / "data" / "test" / "positive"), "--gan", str(gan), "--out", str(out), "--infill", "auto",
               "--steps", "2", "--counterfactual", "residual", "--minimal-mask-steps", "2"])
    assert rc == 2 and "is not there (the in-fill is chosen on its validation scans)" in one_error_line(capsys)
    assert not out.exists()


def test_cli_auto_takes_an_inpainter_as_a_candidate():
    import argparse

    from medxgan.cli.common import add_minimal_mask_options, minimal_mask_options

    p = argparse.ArgumentParser()
    add_minimal_mask_options(p)
    assert minimal_mask_options(p.parse_args(["--infill", "auto"])) == {"minimal_mask_infill": "auto"}
    with pytest.raises(MedxganError, match="inpainter"):
        minimal_mask_options(p.parse_args(["--infill", "auto", "--inpainter", "/nonexistent/inpainter"]))


def test_a_presets_auto_falls_back_to_the_generators_infill_with_a_warning(masked_runs, tmp_path):
    """auto from the run's preset (not asked for): a run whose data is gone explains with gan and says why in one warning;
    asked for explicitly, the same run is a one-line error (test above)."""
    import shutil

    from medxgan import MedXGAN

    gan = tmp_path / "gan"
    shutil.copytree(masked_runs / "gan", gan)
    (gan / "infill_selection.json").unlink(missing_ok=True)
    cfg = json.loads((gan / "config.json").read_text())
    cfg["preset"]["inversion"] = {**(cfg["preset"].get("inversion") or {}), "minimal_mask_infill": "auto"}
    (gan / "config.json").write_text(json.dumps(cfg))
    opts = {k: v for k, v in AUTO.items() if k != "minimal_mask_infill"}
    chosen = MedXGAN.load(gan, **opts)  # the data is there: the preset's auto chooses
    assert chosen.infill_selection is not None and chosen.engine.minimal_mask.infill == chosen.infill_selection.chosen
    cfg["data"] = str(tmp_path / "moved")
    (gan / "config.json").write_text(json.dumps(cfg))
    (gan / "infill_selection.json").unlink()
    with pytest.warns(UserWarning, match="cannot choose .* the generator's anatomy \\(gan\\) fills the minimal mask"):
        mx = MedXGAN.load(gan, **opts)
    assert mx.infill_selection is None and mx.engine.minimal_mask.infill == "gan"
    with pytest.raises(MedxganError, match="is not there"):
        MedXGAN.load(gan, **AUTO)


def test_cli_explain_with_auto_prints_and_records_the_choice(masked_runs, tmp_path, capsys):
    from medxgan.cli import main

    out = tmp_path / "out"
    rc = main(["explain", str(masked_runs / "data" / "test" / "positive" / "000.png"), "--gan", str(masked_runs / "gan"), "--out", str(out),
               "--infill", "auto", "--steps", "2", "--counterfactual", "residual", "--minimal-mask-steps", "2", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    chosen = json.loads((masked_runs / "gan" / "infill_selection.json").read_text())["selection"]["chosen"]
    assert f"in-fill chosen by --infill auto: {chosen} (" in printed
    record = json.loads(next(out.glob("*/explanation.json")).read_text())
    assert record["settings"]["infill_selection"]["chosen"] == chosen


def test_the_demo_summary_names_the_infill_its_main_evaluation_used(tmp_path):
    from medxgan.demo_infill import main_infill_label

    (tmp_path / "results.json").write_text(json.dumps({"config": {"inversion": {"minimal_mask_infill": "blur"},
                                                                  "infill_selection": {"chosen": "blur"}}}))
    assert main_infill_label(tmp_path) == "main evaluation, in-fill blur (a blur of the scan; chosen by auto on the run's validation scans):"
    (tmp_path / "results.json").write_text(json.dumps({"config": {"inversion": {}}}))
    assert main_infill_label(tmp_path) == "main evaluation, in-fill gan (the GAN's anatomy; the run's in-fill):"


def test_a_run_moved_where_its_data_is_not_keeps_its_choice_and_its_mean(masked_runs, tmp_path):
    """Trained on one machine, explained on another: the data path recorded in the run does not exist there. The choice made
    for this GAN and classifier is kept (for other inversion settings too, saying so), and the mean healthy scan kept in
    the run serves the mean in-fill; with the data back, everything is computed again."""
    import shutil

    from medxgan import MedXGAN
    from medxgan.explain.infill import HEALTHY_MEAN_FILE, healthy_mean_for_run, healthy_mean_from_data

    gan, data = tmp_path / "gan", tmp_path / "data"
    shutil.copytree(masked_runs / "gan", gan)
    shutil.copytree(masked_runs / "data", data)
    (gan / "infill_selection.json").unlink(missing_ok=True)
    cfg = json.loads((gan / "config.json").read_text())
    cfg["data"] = str(data)
    (gan / "config.json").write_text(json.dumps(cfg))
    first = MedXGAN.load(gan, **AUTO).infill_selection
    assert first.model_key and not first.reused
    mean = MedXGAN.load(gan, **{**AUTO, "minimal_mask_infill": "mean"}).engine.infill_healthy_mean
    assert (gan / HEALTHY_MEAN_FILE).is_file() and torch.equal(mean, healthy_mean_from_data(data, 64, 1))

    data.rename(tmp_path / "elsewhere")  # the data is gone: same settings read back, other settings keep the choice
    assert MedXGAN.load(gan, **AUTO).infill_selection == first
    moved = MedXGAN.load(gan, **{**AUTO, "steps": 3})
    assert moved.infill_selection.reused and moved.infill_selection.chosen == first.chosen
    assert moved.engine.minimal_mask.infill == first.chosen and "chosen earlier for this GAN and classifier" in moved.inversion_note()
    assert json.loads((gan / "infill_selection.json").read_text())["selection"]["reused"] is False  # never stored as reused
    assert torch.equal(MedXGAN.load(gan, **{**AUTO, "minimal_mask_infill": "mean"}).engine.infill_healthy_mean, mean)
    with pytest.raises(MedxganError, match="is not there"):  # a kept mean of another size is not used
        healthy_mean_for_run(gan, data, 32, 1)
    (gan / HEALTHY_MEAN_FILE).write_bytes(b"damaged")
    with pytest.raises(MedxganError, match="is not there"):  # nor a damaged one
        healthy_mean_for_run(gan, data, 64, 1)
    other = MedXGAN.load(gan, **{**AUTO, "steps": 3}, classifier=masked_runs / "clf")  # same classifier, loaded again
    assert other.infill_selection.chosen == first.chosen


def test_train_settles_the_presets_auto_infill_in_the_run(masked_runs, tmp_path, capsys):
    """`medxgan train` with the default preset chooses the in-fill at the end, while the data is at hand, prints the choice
    and keeps it in the run (what a run explained elsewhere reads back)."""
    from medxgan.cli import main

    out = tmp_path / "gan"
    assert main(["train", str(masked_runs / "data"), "--classifier", str(masked_runs / "clf"), "--out", str(out), "--steps", "1",
                 "--batch-size", "4", "--no-oracle", "--monitor-samples", "2", "--set", "g_width=4", "--set", "d_width=4", "--set", "nz1=8",
                 "--set", "nz2=4", "--quiet"]) == 0
    printed = capsys.readouterr().out
    stored = json.loads((out / "infill_selection.json").read_text())["selection"]
    assert f"in-fill chosen by --infill auto: {stored['chosen']} (" in printed and stored["model_key"]


def test_settle_run_leaves_other_presets_alone_and_says_why_it_cannot_choose(masked_runs, tmp_path):
    import shutil

    from medxgan.pipeline import settle_run

    assert settle_run(masked_runs / "gan") is None  # the fast preset chooses nothing
    gan = tmp_path / "gan"
    shutil.copytree(masked_runs / "gan", gan)
    (gan / "infill_selection.json").unlink(missing_ok=True)
    cfg = json.loads((gan / "config.json").read_text())
    cfg["preset"]["inversion"] = {**(cfg["preset"].get("inversion") or {}), "minimal_mask_infill": "auto", "counterfactual": "residual",
                                "minimal_mask_steps": 2, "steps": 2}
    cfg["data"] = str(tmp_path / "gone")
    (gan / "config.json").write_text(json.dumps(cfg))
    assert "cannot choose" in settle_run(gan)


def test_the_mean_healthy_scan_reads_the_runs_class_mapping(tmp_path):
    """A user's class folders named otherwise (``--positive tumour --negative control``): the mean in-fill averages the
    scans the run trained as negative, as the in-fill choice's validation scans already did, not a guess from folder
    names; the kept mean records the mapping, and a run that records no data is an error, not the working directory."""
    import numpy as np
    from helpers import png

    from medxgan.explain.infill import HEALTHY_MEAN_FILE, healthy_mean_for_run, healthy_mean_from_data
    from medxgan.explain.model import training_class_mapping

    root = tmp_path / "data"
    for k, (cls, value) in enumerate([("control", 40), ("control", 80), ("tumour", 200), ("tumour", 250)]):
        png(root / "train" / cls / f"{cls}{k}.png", np.full((8, 8), value, dtype=np.float64))
    mapping = training_class_mapping({"train_config": {"positive": "tumour", "negative": "control", "csv": None, "steps": 3}})
    assert mapping == {"positive": "tumour", "negative": "control"}
    mean = healthy_mean_from_data(root, 8, 1, mapping)
    expected = ((40 + 80) / 2) / 255 * 2 - 1  # images are read to [-1, 1]
    assert mean.shape == (1, 8, 8) and torch.allclose(mean, torch.full_like(mean, expected), atol=1e-6)
    with pytest.raises(MedxganError):  # without the mapping, neither folder name says "negative"
        healthy_mean_from_data(root, 8, 1)

    run = tmp_path / "gan"
    run.mkdir()
    assert torch.equal(healthy_mean_for_run(run, root, 8, 1, mapping), mean)
    root.rename(tmp_path / "gone")  # the kept mean serves a moved run only for the same classes
    assert torch.equal(healthy_mean_for_run(run, root, 8, 1, mapping), mean)
    with pytest.raises(MedxganError, match="is not there"):
        healthy_mean_for_run(run, root, 8, 1, {"positive": "control", "negative": "tumour"})
    assert (run / HEALTHY_MEAN_FILE).is_file()
    with pytest.raises(MedxganError, match="none recorded"):
        healthy_mean_from_data("", 8, 1)
