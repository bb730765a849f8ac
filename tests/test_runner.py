"""Benchmark runner: outputs, resume, invalid maps, shortcut check, CLI, medXGAN methods on a tiny GAN."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import EVAL_SIZE, make_eval_data, strip_cost, tiny_eval_clf, tiny_eval_model

from medxgan.evaluate.runner import evaluate, image_id_for, read_per_image
from medxgan.evaluate.shortcut import shortcut_metrics
from medxgan.explain.baselines import SaliencyExplainer
from medxgan.report.plots import write_plots

class CountingSaliency(SaliencyExplainer):
    name = "counting"
    calls = 0

    def attribute(self, images):
        CountingSaliency.calls += images.shape[0]
        return super().attribute(images)


class NaNOnMarked(SaliencyExplainer):
    """Saliency, but NaN for images whose top-left pixel is white."""

    name = "nan-some"

    def attribute(self, images):
        m = super().attribute(images)
        bad = images[:, 0, 0, 0] > 0.9
        m[bad] = float("nan")
        return m


def test_runner_outputs_and_resume(tmp_path):
    data = make_eval_data(tmp_path / "data", n_pos=2, n_neg=2)
    clf = tiny_eval_clf()
    out = tmp_path / "eval"
    exps = lambda: [CountingSaliency(clf, batch_size=2), build("gradcam", clf), build("occlusion", clf)]  # noqa: E731
    kw = dict(classifier=clf, split="test", noise_sigmas=(0.05,), max_sensitivity=False, batch_size=2, device="cpu",
              n_resamples=200, show_progress=False)
    CountingSaliency.calls = 0
    r1 = evaluate(data, out, explainers=exps(), **kw)
    write_plots(r1, out / "plots")  # the runner returns results; its caller draws the plots
    assert CountingSaliency.calls == 4 * 2  # clean + one noise level, 4 images
    assert r1["slices"]["TP"] == 2 and r1["slices"]["FP"] == 2 and r1["slices"]["evaluated"] == 4
    for f in ("results.json", "results.csv", "results.md", "per_image.jsonl", "run.json"):
        assert (out / f).is_file(), f
    plots = {p.name for p in (out / "plots").iterdir()}
    assert {"deletion_mean.png", "deletion_blur.png", "noise_ssim.png", "bars_localisation.png", "bars_faithfulness_robustness_cost.png",
            "bars_shortcut.png"} <= plots
    md = (out / "results.md").read_text()
    assert "Pointing game" in md and "`gradcam`" in md and "[" in md
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0] == "method,metric,mean,lo,hi,n,n_invalid"
    assert any(l.startswith("occlusion,deletion_blur.auc,") for l in csv_lines)
    met = r1["methods"]["gradcam"]["metrics"]
    assert met["localisation.pointing_game"]["n"] == 2  # TPs only
    assert met["deletion_mean.auc"]["n"] == 4
    assert met["deletion_mean.probs[6]"]["n"] == 4 and "deletion_blur.flipped[3]" in met
    assert "robustness.noise_0.05.ssim" in met and "robustness.noise_0.05.top10" in met
    assert met["shortcut.marker_present"]["mean"] == pytest.approx(0.25)
    lo, hi, mean = (met["localisation.pixel_auroc"][k] for k in ("lo", "hi", "mean"))
    assert lo <= mean <= hi
    # maps saved per image and method
    row = r1["per_image"][0]
    z = np.load(out / "maps" / row["image_id"] / f"{row['method']}.npz")
    assert z["map"].shape == (EVAL_SIZE, EVAL_SIZE)
    zi = np.load(out / "maps" / row["image_id"] / "input.npz")
    assert zi["image"].shape == (1, EVAL_SIZE, EVAL_SIZE) and str(zi["path"]) == row["image"]
    assert row["image_id"] == image_id_for(row["image"])

    # kill simulation: drop the last 2 images' lines and leave a partial line behind
    per = out / "per_image.jsonl"
    rows = [json.loads(l) for l in per.read_text().splitlines()]
    order = list(dict.fromkeys(r["image_id"] for r in rows))
    last2 = set(order[-2:])
    kept = [l for l, r in zip(per.read_text().splitlines(), rows) if r["image_id"] not in last2]
    per.write_text("\n".join(kept) + "\n" + '{"image_id": "x", "meth')
    CountingSaliency.calls = 0
    r2 = evaluate(data, out, explainers=exps(), **kw)
    assert r2["run"]["computed"] == 2 * 3 and r2["run"]["skipped"] == 2 * 3
    assert CountingSaliency.calls == 2 * 2
    assert strip_cost(r2["methods"]) == strip_cost(r1["methods"])
    done, clean = read_per_image(per)
    assert clean and len(done) == 12

    # changed settings are refused
    from medxgan.runtime.errors import MedxganError

    with pytest.raises(MedxganError, match="other settings"):
        evaluate(data, out, explainers=exps(), **{**kw, "seed": 1})


def test_an_evaluation_resumes_where_its_data_moved_and_refuses_other_scans_at_the_same_path(tmp_path):
    """run.json names the data by its content, not its path: data and evaluation moved together (a laptop, another
    disk) resume without recomputing; other scans written to the same path are refused instead of mixed in; a folder
    written before the fingerprint (run.json with the data's path) resumes at that path and is upgraded."""
    import shutil

    from medxgan.runtime.errors import MedxganError

    data, out = make_eval_data(tmp_path / "data", n_pos=2, n_neg=2), tmp_path / "eval"
    clf = tiny_eval_clf()
    kw = dict(classifier=clf, split="test", noise_sigmas=(), max_sensitivity=False, batch_size=2, device="cpu",
              n_resamples=50, show_progress=False)
    first = evaluate(data, out, explainers=[CountingSaliency(clf, batch_size=2)], **kw)
    assert first["run"]["computed"] == 4 and "data_fingerprint" in json.loads((out / "run.json").read_text())

    (tmp_path / "moved").mkdir()
    shutil.move(data, tmp_path / "moved" / "data")
    shutil.move(out, tmp_path / "moved" / "eval")
    CountingSaliency.calls = 0
    again = evaluate(tmp_path / "moved" / "data", tmp_path / "moved" / "eval", explainers=[CountingSaliency(clf, batch_size=2)], **kw)
    assert (again["run"]["computed"], again["run"]["skipped"], CountingSaliency.calls) == (0, 4, 0)
    assert strip_cost(again["methods"]) == strip_cost(first["methods"])

    other = make_eval_data(tmp_path / "other", n_pos=2, n_neg=2, marker_on=(1,))  # same names, other pixels
    shutil.rmtree(tmp_path / "moved" / "data")
    shutil.copytree(other, tmp_path / "moved" / "data")
    with pytest.raises(MedxganError, match="other settings \\(data_fingerprint\\)"):
        evaluate(tmp_path / "moved" / "data", tmp_path / "moved" / "eval", explainers=[CountingSaliency(clf, batch_size=2)], **kw)

    legacy = tmp_path / "legacy"  # an evaluation folder of an older medxgan: run.json records the path
    evaluate(other, legacy, explainers=[CountingSaliency(clf, batch_size=2)], **kw)
    run = json.loads((legacy / "run.json").read_text())
    run["data"] = str(other.resolve())
    del run["data_fingerprint"]
    (legacy / "run.json").write_text(json.dumps(run))
    assert evaluate(other, legacy, explainers=[CountingSaliency(clf, batch_size=2)], **kw)["run"]["computed"] == 0
    assert "data_fingerprint" in json.loads((legacy / "run.json").read_text())
    run["data"] = str(tmp_path / "elsewhere")  # the old folder of data at another path: refused as before
    (legacy / "run.json").write_text(json.dumps({k: v for k, v in run.items() if k != "data_fingerprint"}))
    with pytest.raises(MedxganError, match="other settings"):
        evaluate(other, legacy, explainers=[CountingSaliency(clf, batch_size=2)], **kw)


def build(name, clf):
    from medxgan.explain.baselines import build_explainers

    ex = build_explainers([name], clf, batch_size=2)[0]
    if name == "occlusion":
        ex.window, ex.stride = 8, 8  # 16 windows: keeps the test fast
    return ex


def test_runner_nan_map_is_counted_invalid(tmp_path):
    data = make_eval_data(tmp_path / "data", n_pos=3, n_neg=1, nan_pixel=1)
    clf = tiny_eval_clf()
    res = evaluate(data, tmp_path / "eval", classifier=clf, explainers=[NaNOnMarked(clf, batch_size=4)], split="test",
                   noise_sigmas=(), max_sensitivity=False, device="cpu", n_resamples=100, show_progress=False)
    r = res["methods"]["nan-some"]
    assert r["n_images"] == 4 and r["n_invalid_maps"] == 1
    assert r["metrics"]["deletion_mean.auc"]["n"] == 3 and r["metrics"]["deletion_mean.auc"]["n_invalid"] == 1
    assert r["metrics"]["localisation.iou_otsu"]["n"] == 2
    bad = [row for row in res["per_image"] if row["invalid_map"]]
    assert len(bad) == 1 and bad[0]["metrics"]["deletion_mean"]["auc"] is None
    assert "Invalid (non-finite) maps" in (tmp_path / "eval" / "results.md").read_text()


def test_shortcut_metrics():
    a = np.zeros((8, 8))
    a[0, 0] = 3.0
    a[5, 5] = -1.0  # |A| is scored
    marker = np.zeros((8, 8), bool)
    marker[0, 0] = True
    lesion = np.zeros((8, 8))
    lesion[4:7, 4:7] = 1
    r = shortcut_metrics(a, marker, lesion)
    assert r["marker_present"] and r["mass_marker"] == pytest.approx(0.75) and r["mass_lesion"] == pytest.approx(0.25)
    assert r["mass_lesion_with_marker"] == pytest.approx(0.25)
    r = shortcut_metrics(a, np.zeros((8, 8), bool), None)
    assert not r["marker_present"] and math.isnan(r["mass_marker"]) and math.isnan(r["mass_lesion"])


def test_cli_evaluate_torchscript_classifier(tmp_path, capsys):
    from medxgan.cli import main

    data = make_eval_data(tmp_path / "data", n_pos=2, n_neg=1)
    ts = tmp_path / "clf.pt"
    torch.jit.trace(tiny_eval_model().eval(), torch.zeros(1, 1, EVAL_SIZE, EVAL_SIZE)).save(str(ts))
    out = tmp_path / "eval"
    rc = main(["evaluate", str(data), "--classifier", str(ts), "--classifier-output", "logit1", "--out", str(out),
               "--methods", "saliency", "ig-grey", "medxgan-diff", "--noise-sigmas", "0.1", "--max-sensitivity-n", "1",
               "--n", "2", "--device", "cpu", "--no-plots"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "medXGAN methods skipped" in text
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["methods"] == ["saliency", "ig-grey"]
    assert res["slices"]["evaluated"] == 2
    assert res["methods"]["ig-grey"]["metrics"]["sensitivity.max"]["n"] == 1
    assert any("first 1 of 2" in n for n in res["notes"])
    assert main(["evaluate", str(data), "--out", str(out)]) == 2  # neither --classifier nor --gan


def test_medxgan_methods_on_tiny_gan(tmp_path):
    from medxgan.pipeline import MedXGAN
    from medxgan.gan.networks import build_generator

    torch.manual_seed(0)
    G = build_generator(dict(arch="dcgan", size=EVAL_SIZE, channels=1, nz1=8, nz2=4, g_width=8))
    clf = tiny_eval_clf()
    model = MedXGAN(G, clf, inversion={"steps": 3, "restarts": 1})
    data = make_eval_data(tmp_path / "data", n_pos=2, n_neg=1)
    res = evaluate(data, tmp_path / "eval", gan=model, methods=["medxgan-diff", "medxgan-lig", "saliency"], split="test",
                   noise_sigmas=(), max_sensitivity=False, device="cpu", n_resamples=100, show_progress=False)
    assert res["config"]["methods"] == ["medxgan-diff", "medxgan-lig", "saliency"]
    for m in ("medxgan-diff", "medxgan-lig"):
        met = res["methods"][m]["metrics"]
        assert met["counterfactual.proximity_l1"]["n"] == 3
        assert met["counterfactual.valid_oracle"]["n"] == 0  # no oracle
        assert met["localisation.pixel_auroc"]["n"] == 2
    assert model.engine.inversions_run == 3  # each image inverted once, shared by both methods
    row = next(r for r in res["per_image"] if r["method"] == "medxgan-diff")
    z = np.load(tmp_path / "eval" / "maps" / row["image_id"] / "medxgan-diff.npz")
    assert {"map", "x_neg", "x_pos"} <= set(z.files)
