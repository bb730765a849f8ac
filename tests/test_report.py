"""HTML report: built from a real (tiny) evaluation; self-contained; robust to NaN metrics and missing methods."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from helpers import EVAL_SIZE, make_eval_data, tiny_eval_clf
from PIL import Image

from medxgan.report.html import compare, select_rows, verdicts, write_report

class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.tags: list[str] = []
        self.sliders: list[dict] = []
        self.script_src = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href") and v is not None:
                self.refs.append(v)
            if tag == "script" and k == "src":
                self.script_src = True
            if k == "data-slider":  # the slider's frames are files too
                d = json.loads(v)
                self.sliders.append(d)
                self.refs.extend(d["frames"] + d["changes"])


def _check_self_contained(index: Path) -> _Refs:
    p = _Refs()
    p.feed(index.read_text())
    assert not p.script_src and "link" not in p.tags  # inline JS only (the slider), no external files
    for ref in p.refs:
        assert not ref.lower().startswith(("http:", "https:", "//")), ref
        if ref.startswith("#"):
            continue
        assert (index.parent / ref).is_file(), ref
    assert "http://" not in index.read_text() and "https://" not in index.read_text()
    return p


@pytest.fixture(scope="module")
def tiny_eval(tmp_path_factory):
    from medxgan.demo import interpolation_frames
    from medxgan.evaluate.runner import evaluate
    from medxgan.gan.networks import build_generator
    from medxgan.pipeline import MedXGAN
    from medxgan.report.plots import write_plots

    tmp = tmp_path_factory.mktemp("report")
    torch.manual_seed(0)
    G = build_generator(dict(arch="dcgan", size=EVAL_SIZE, channels=1, nz1=8, nz2=4, g_width=8))
    model = MedXGAN(G, tiny_eval_clf(), inversion={"steps": 3, "restarts": 1})
    data = make_eval_data(tmp / "data", n_pos=2, n_neg=1, marker_on=(), markers=False)
    ev = tmp / "eval"
    res = evaluate(data, ev, gan=model, methods=["medxgan-diff", "medxgan-lig", "gradcam", "ig-black", "saliency"], split="test",
                   noise_sigmas=(0.05,), max_sensitivity=False, device="cpu", n_resamples=50, show_progress=False)
    write_plots(res, ev / "plots")
    written = interpolation_frames(ev, model, frames=4)
    assert len(written) == 3  # every explained image is a row here
    assert model.engine.inversions_run == 3 * 2  # clean + one noise level; the frames reuse the cached inversions
    return ev


def test_report_from_eval_dir_is_self_contained(tiny_eval, tmp_path):
    ev = tmp_path / "eval"
    shutil.copytree(tiny_eval, ev)
    index = write_report(ev)
    assert index == ev / "report" / "index.html"
    p = _check_self_contained(index)
    text = index.read_text()
    srcs = [r for r in p.refs if not r.startswith("#")]
    assert len(p.sliders) == 3  # one latent slider per row with stored frames
    sl = p.sliders[0]
    assert len(sl["frames"]) == len(sl["changes"]) == len(sl["probs"]) == 4 and sl["alphas"][0] == 0.0 and sl["alphas"][-1] == 1.0
    assert "negative realization G(z1*, 0), the counterfactual used" in text  # the generator counterfactual here
    assert any(r.endswith("deletion_mean.png") for r in srcs)
    assert any("__gradcam.png" in r for r in srcs) and any("__input.png" in r for r in srcs)
    assert "training curves and sample grids are omitted" in text
    assert "area-matched IoU" in text and "Verdict" in text
    assert "<table class='headline'>" in text and "th class='m'" in text  # compact verdict table; sticky method column
    assert Image.open(index.parent / sl["frames"][0]).size == (EVAL_SIZE, EVAL_SIZE)
    # rows: true positives first
    res = json.loads((ev / "results.json").read_text())
    rows = select_rows(res, 12)
    assert [r["slice"] for r in rows] == ["TP", "TP", "FP"]
    assert len(select_rows(res, 1)) == 1


def test_report_survives_nan_and_missing_methods(tiny_eval, tmp_path):
    ev = tmp_path / "eval"
    shutil.copytree(tiny_eval, ev)
    res = json.loads((ev / "results.json").read_text())
    del res["methods"]["gradcam"]  # a missing method (its per-image rows and maps stay)
    for st in res["methods"]["medxgan-lig"]["metrics"].values():
        st.update(mean=None, lo=None, hi=None)  # NaN is written as null
    res["methods"]["ig-black"]["metrics"]["localisation.pointing_game"]["mean"] = float("nan")
    shutil.rmtree(ev / "frames")
    shutil.rmtree(ev / "plots")
    (ev / "results.json").write_text(json.dumps(res))  # NaN token, as Python writes it
    index = write_report(ev, tmp_path / "rep", max_rows=2)
    _check_self_contained(index)
    text = index.read_text()
    assert "no interpolation frames" in text
    v = {(x["method"], x["key"]): x for x in verdicts(json.loads((ev / "results.json").read_text()))}
    assert v[("medxgan-lig", "localisation.pointing_game")]["state"] == "na"
    assert v[("medxgan-lig", "robustness.noise_0.05.ssim")]["state"] == "na"


def test_verdict_wording():
    a = {"mean": 0.8, "lo": 0.7, "hi": 0.9}
    assert compare(a, {"mean": 0.5, "lo": 0.4, "hi": 0.6}) == "lead"
    assert compare(a, {"mean": 0.75, "lo": 0.6, "hi": 0.85}) == "ahead"
    assert compare(a, {"mean": 0.85, "lo": 0.8, "hi": 0.9}) == "no"
    assert compare(a, None) == "na"

    def st(m, lo, hi):
        return {"mean": m, "lo": lo, "hi": hi, "n": 10}

    res = {"config": {"noise_sigmas": [0.05]}, "methods": {
        "medxgan-diff": {"metrics": {"localisation.pointing_game": st(0.9, 0.8, 1.0), "localisation.iou_area_matched": st(0.5, 0.3, 0.6)}},
        "medxgan-lig": {"metrics": {"localisation.pointing_game": st(0.7, 0.5, 0.8), "robustness.noise_0.05.ssim": st(0.9, 0.85, 0.95)}},
        "gradcam": {"metrics": {"localisation.pointing_game": st(0.5, 0.4, 0.6), "localisation.iou_area_matched": st(0.4, 0.3, 0.5)}},
        "ig-black": {"metrics": {"localisation.pointing_game": st(0.6, 0.5, 0.7), "robustness.noise_0.05.ssim": st(0.5, 0.4, 0.6)}},
    }}
    v = {(x["method"], x["key"]): x for x in verdicts(res)}
    assert v[("medxgan-diff", "localisation.pointing_game")]["text"] == "leads (CIs do not overlap)"
    assert v[("medxgan-diff", "localisation.iou_area_matched")]["text"] == "ahead but CIs overlap"
    assert v[("medxgan-lig", "localisation.pointing_game")]["text"] == "ahead but CIs overlap"
    assert v[("medxgan-lig", "localisation.iou_area_matched")]["state"] == "na"
    assert v[("medxgan-lig", "robustness.noise_0.05.ssim")]["text"] == "leads (CIs do not overlap)"
    res["methods"]["gradcam"]["metrics"]["localisation.pointing_game"] = st(0.95, 0.9, 1.0)
    v = {(x["method"], x["key"]): x for x in verdicts(res)}
    assert v[("medxgan-diff", "localisation.pointing_game")]["text"] == "does not lead"


def test_cli_report(tiny_eval, tmp_path, capsys):
    from medxgan.cli import main

    ev = tmp_path / "eval"
    shutil.copytree(tiny_eval, ev)
    assert main(["report", str(ev), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "index.html").is_file()
    assert "report:" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert main(["report", str(ev), "--frames"]) == 2  # no GAN run for a bare eval dir


def test_progress_on_a_non_terminal_writes_a_few_lines(monkeypatch, capsys):
    """Progress to a log file or CI: a plain line every 10 %, no carriage-return updates."""
    from medxgan.runtime import progress as pg

    monkeypatch.delenv("MEDXGAN_PROGRESS", raising=False)
    for _ in pg.progress(range(5000), desc="synth"):
        pass
    bar = pg.progress(total=200, initial=100, desc="train")  # resumed half way
    for i in range(100):
        bar.update(1)
        bar.set_postfix_str(f"loss={i}")
    bar.close()
    err = capsys.readouterr().err  # pytest's capture is not a terminal
    lines = err.splitlines()
    assert "\r" not in err and len(lines) == 10 + 5
    assert lines[0] == lines[0].split(" ")[0] + " 500/5000 (10%) " + lines[0].split(" ")[3] + " s"
    assert lines[-1].startswith("train: 200/200 (100%)") and lines[-1].endswith("loss=98")  # the postfix shown is the one set before the last update
    monkeypatch.setenv("MEDXGAN_PROGRESS", "off")
    for _ in pg.progress(range(10), desc="x"):
        pass
    pg.set_quiet(True)
    monkeypatch.setenv("MEDXGAN_PROGRESS", "lines")
    try:
        for _ in pg.progress(range(10), desc="x"):
            pass
    finally:
        pg.set_quiet(False)
    assert capsys.readouterr().err == ""


def test_validity_verdict_cautions_when_the_judge_rejects_the_twins():
    """A judge (classifier or oracle) that calls the ground-truth twins positive cannot certify a counterfactual:
    the verdict says so instead of blaming the counterfactual (a demo oracle with specificity 0.18 did this)."""
    from medxgan.report.verdict import verdict_html as _verdict_html

    def st(m, lo, hi):
        return {"mean": m, "lo": lo, "hi": hi, "n": 30}

    res = {"config": {"inversion": {"counterfactual": "residual"}}, "methods": {
        "medxgan-diff": {"metrics": {"counterfactual_residual.valid_classifier": st(1.0, 1.0, 1.0),
                                     "counterfactual_residual.valid_oracle": st(0.067, 0.0, 0.167)}},
        "twin": {"metrics": {"counterfactual.valid_classifier": st(1.0, 1.0, 1.0), "counterfactual.valid_oracle": st(0.2, 0.067, 0.367)}},
    }}
    v = {x["claim"]: x for x in verdicts(res)}
    oracle = v["residual counterfactual x_res valid for the independent oracle"]
    assert oracle["state"] == "no" and "0.20" in oracle["caution"] and "measures the independent oracle" in oracle["caution"]
    assert "caution" not in v["residual counterfactual x_res valid for the classifier"]  # the twins pass the classifier
    html = _verdict_html(res)
    assert html.count("caution:") == 2  # in the headline row and in the details
    # no twins (users' own data): no caution
    del res["methods"]["twin"]
    assert not any("caution" in x for x in verdicts(res))


def test_report_says_first_when_training_stopped_early(tiny_eval, tmp_path):
    ev = tmp_path / "eval"
    shutil.copytree(tiny_eval, ev)
    gan = tmp_path / "gan"
    gan.mkdir()
    (gan / "config.json").write_text(json.dumps({"steps": 2000, "steps_done": 238, "stopped_early": True}))
    res = json.loads((ev / "results.json").read_text())
    res["config"]["gan"] = str(gan)
    (ev / "results.json").write_text(json.dumps(res))
    text = write_report(ev).read_text()
    banner = text.index("the GAN stopped at its time limit after 238 of 2000 steps")
    assert banner < text.index("<b>Verdict</b>")  # said first, above the verdict
