"""Quality guards (gan.gates): the monitor gates and the PSNR floor by hand, and the flags they put on the
explain gallery and on the report's training section."""

from __future__ import annotations

import json

from medxgan.gan.gates import monitor_shortfalls, psnr_floor, run_quality


def _run(tmp_path, metrics, encoder_psnr=None):
    run = tmp_path / "gan"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"kind": "medxgan", "steps": 71, "steps_done": 71, "status": "finished", "metrics": metrics,
                                                 "classifier": {"source": "myclf:binary", "fingerprint": "abc",
                                                                "adapter": {"target_description": "class 2 vs rest"}}}))
    if encoder_psnr is not None:
        (run / "encoder").mkdir()
        (run / "encoder" / "config.json").write_text(json.dumps({"metrics": {"psnr_inversion": encoder_psnr}}))
    return run


def test_gates_by_hand(tmp_path):
    assert monitor_shortfalls({"metrics": {"disent": 0.16, "oracle_neg": 1.0, "diversity": 0.3}}) == ["disent 0.16 < 0.9", "diversity 0.30 < 0.5"]
    assert monitor_shortfalls({"metrics": {"disent": 0.95, "diversity": 0.8}}) == []  # no oracle measured: not a shortfall
    run = _run(tmp_path, {"disent": 0.16})
    assert psnr_floor(run)[0] == 18.0  # no encoder: the 24 dB target minus 6 dB
    (run / "encoder").mkdir()
    (run / "encoder" / "config.json").write_text(json.dumps({"metrics": {"psnr_inversion": 26.5}}))
    assert psnr_floor(run)[0] == 20.5 and "26.5 dB" in psnr_floor(run)[1]
    assert run_quality(run)["steps_done"] == 71


def test_gallery_and_report_flag_a_poor_run(tmp_path):
    from medxgan.report.gallery import write_gallery
    from medxgan.report.training import training_html as _training_html

    run = _run(tmp_path, {"disent": 0.16, "diversity": 0.9})
    out = tmp_path / "expl"
    out.mkdir()
    summary = {"gan": str(run), "classifier": "abc", "classifier_name": "myclf:binary", "classifier_target": "class 2 vs rest", "images": [
        {"name": "a", "psnr": 14.0}, {"name": "b", "psnr": 25.0}]}
    for name, psnr in (("a", 14.0), ("b", 25.0)):
        (out / name).mkdir()
        (out / name / "explanation.json").write_text(json.dumps({"psnr": psnr, "prob_input": 0.9}))
    page = write_gallery(out, summary).read_text()
    assert "Quality warning" in page and "disent 0.16 &lt; 0.9" in page and "1 reconstruction(s) below 18.0 dB" in page
    assert "myclf:binary" in page and "class 2 vs rest" in page and "71 training steps" in page and "⚠ 14.0 dB" in page
    html = _training_html({"gan": run}, tmp_path / "img", "img")
    assert "Below the training gates" in html and "disent 0.16 &lt; 0.9" in html
    (tmp_path / "g2").mkdir()
    good = _run(tmp_path / "g2", {"disent": 0.95, "diversity": 0.8})
    assert "Below the training gates" not in _training_html({"gan": good}, tmp_path / "img", "img")
