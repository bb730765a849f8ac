"""`medxgan demo` at a tiny scale: every stage runs, a second call reuses them, other settings are refused."""

from __future__ import annotations

import dataclasses
import json
from html.parser import HTMLParser

import pytest

from medxgan.demo import DemoConfig, run_demo
from medxgan.runtime.errors import MedxganError

TINY = DemoConfig(
    mode="custom", n_images=40, classifier_epochs=1, gan_steps=5, gan_batch_size=8, gan_log_every=5, gan_ckpt_every=5,
    gan_max_minutes=None, gan_monitor_samples=16, gan_overrides=(("g_width", 4), ("d_width", 4), ("nz1", 8), ("nz2", 4)),
    oracle_epochs=1, methods=("medxgan-diff", "medxgan-lig", "gradcam", "saliency"), eval_n=2, eval_batch_size=2, inversion_steps=3,
    inversion_restarts=1, noise_sigmas=(0.05,),
    max_sensitivity=False, max_sensitivity_n=0, n_resamples=50, report_rows=2, frames=3,
)


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def test_configs_are_in_one_place():
    q, d = DemoConfig.quick(), DemoConfig.default()
    assert q.mode == "quick" and d.mode == "default"
    assert q.n_images < d.n_images and q.gan_steps < d.gan_steps and q.eval_n < d.eval_n and not q.max_sensitivity
    assert json.loads(json.dumps(q.to_dict())) == q.to_dict()


def test_demo_stages_reuse_and_settings_check(tmp_path):
    out = tmp_path / "demo"
    ran: list[str] = []
    r1 = run_demo(out, device="cpu", config=TINY, show_progress=False, _stage_hook=ran.append)
    assert ran == ["data", "classifier", "gan", "eval", "frames"] and r1["reused"] == []
    index = out / "report" / "index.html"
    assert index.is_file() and r1["report"] == str(out / "report" / "index.html")
    for name in ("data/dataset.json", "classifier/config.json", "gan/generator.safetensors", "gan/oracle/config.json",
                 "eval/results.json", "demo.json"):
        assert (out / name).exists(), name
    assert json.loads((out / "classifier" / "config.json").read_text())["status"] == "finished"
    res = json.loads((out / "eval" / "results.json").read_text())
    assert res["slices"]["evaluated"] == 2 and set(res["methods"]) == set(TINY.methods) | {"twin"}  # + the ground-truth twin row (phantoms)
    assert len(list((out / "eval" / "frames").glob("*.npz"))) >= 1
    demo = json.loads((out / "demo.json").read_text())
    assert demo["settings"]["mode"] == "custom" and demo["stages"]["gan"]["seconds"] > 0 and demo["total_s"] > 0
    # the report is self-contained and has the training sections
    p = _Refs()
    p.feed(index.read_text())
    for ref in p.refs:
        assert not ref.startswith(("http:", "https:")) and (ref.startswith("#") or (index.parent / ref).is_file()), ref
    text = index.read_text()
    assert "train_gan.png" in text and "train_classifier.png" in text and "gan_samples.png" in text
    assert "quick mode" not in text

    # second call: every stage reused
    ran.clear()
    r2 = run_demo(out, device="cpu", config=TINY, show_progress=False, _stage_hook=ran.append)
    assert ran == [] and r2["reused"] == ["data", "classifier", "gan", "eval", "frames"]
    assert all(r2["timings"][s] == 0.0 for s in r2["reused"])
    assert json.loads((out / "demo.json").read_text())["stages"]["gan"]["seconds"] == demo["stages"]["gan"]["seconds"]

    # an evaluation that lost its results.json is redone, but resumed per image (nothing recomputed)
    (out / "eval" / "results.json").unlink()
    ran.clear()
    run_demo(out, device="cpu", config=TINY, show_progress=False, _stage_hook=ran.append)
    assert ran == ["eval"]
    assert json.loads((out / "eval" / "results.json").read_text())["run"]["computed"] == 0

    # quick vs default (or any other setting): refused with a clear message, nothing touched
    with pytest.raises(MedxganError, match="other settings.*--restart"):
        run_demo(out, quick=True, device="cpu", show_progress=False)
    with pytest.raises(MedxganError, match="custom mode, this call asks for default mode"):
        run_demo(out, device="cpu", show_progress=False)
    with pytest.raises(MedxganError, match="seed"):
        run_demo(out, device="cpu", config=TINY, seed=1, show_progress=False)
    assert (out / "gan" / "generator.safetensors").exists()


def test_demo_refuses_foreign_dir(tmp_path):
    (tmp_path / "x.txt").write_text("mine")
    with pytest.raises(MedxganError, match="not a demo directory"):
        run_demo(tmp_path, device="cpu", config=TINY, show_progress=False)


def test_quick_banner_and_restart(tmp_path, monkeypatch):
    """Stages stubbed: the quick banner reaches the report and --restart wipes a demo with other settings."""
    import medxgan.demo as demo

    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo.json").write_text(json.dumps({"settings": {**TINY.to_dict(), "seed": 0}}))
    (out / "gan").mkdir()
    (out / "gan" / "old.txt").write_text("old")
    quick_tiny = dataclasses.replace(TINY, mode="quick")
    with pytest.raises(MedxganError, match="made in custom mode"):
        demo._check_settings(out, {**quick_tiny.to_dict(), "seed": 0}, restart=False)
    assert demo._check_settings(out, {**quick_tiny.to_dict(), "seed": 0}, restart=True) is None
    demo._wipe(out)
    assert not (out / "gan").exists() and not (out / "demo.json").exists()

    from medxgan.report import html

    monkeypatch.setattr(html, "read_json", lambda p: {"settings": {"mode": "quick"}} if p.name == "demo.json" else json.loads(p.read_text()))
    ev = out / "eval"
    ev.mkdir()
    (ev / "results.json").write_text(json.dumps({"config": {}, "methods": {}, "per_image": []}))
    (out / "demo.json").write_text("{}")
    text = html.write_report(out).read_text()
    assert html.QUICK_BANNER in text and "no per-image rows" in text


def test_redone_stage_invalidates_later_ones(tmp_path, monkeypatch):
    """Heavy stages stubbed: a stage that must run again removes the stages built on it."""
    import medxgan.classifiers.training as ct
    import medxgan.data.phantoms as ph
    import medxgan.evaluate.runner as er
    import medxgan.gan.train as gt
    import medxgan.pipeline as gm
    import medxgan.report.html as rh
    import medxgan.report.plots as rp

    def done_run(out, files=("config.json",)):
        from pathlib import Path

        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "config.json").write_text(json.dumps({"status": "finished"}))
        for f in files:
            if f != "config.json":
                (Path(out) / f).write_text("w")

    monkeypatch.setattr(ph, "synthesize", lambda kind, out, **kw: done_run(out) or (out / "dataset.json").write_text("{}"))
    monkeypatch.setattr(ct, "train_classifier", lambda data, out, **kw: done_run(out, ("model.safetensors",)) or {})
    monkeypatch.setattr(ct, "format_test_report", lambda r: "test: stub")
    monkeypatch.setattr(gt, "train_gan", lambda data, clf, out, **kw: done_run(out, ("generator.safetensors",)))
    monkeypatch.setattr(gm.MedXGAN, "load", classmethod(lambda cls, *a, **kw: type("M", (), {"config": {}})()))

    def fake_eval(data, out, n=None, methods=None, **kw):
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps({"config": {"n": n, "n_selected": n, "methods": methods},
                                                      "slices": {"evaluated": n}, "per_image": []}))

    monkeypatch.setattr(er, "evaluate", fake_eval)
    monkeypatch.setattr(rh, "write_report", lambda out, **kw: None)
    monkeypatch.setattr(rp, "write_plots", lambda results, out, **kw: [])
    out = tmp_path / "demo"
    ran: list[str] = []
    run_demo(out, device="cpu", config=TINY, show_progress=False, _stage_hook=ran.append)
    assert ran == ["data", "classifier", "gan", "eval"]  # no medXGAN rows: no frames to compute
    (out / "gan" / "stale.txt").write_text("from the old classifier")
    (out / "classifier" / "config.json").write_text(json.dumps({"status": "running"}))  # e.g. an interrupted retraining
    ran.clear()
    run_demo(out, device="cpu", config=TINY, show_progress=False, _stage_hook=ran.append)
    assert ran == ["classifier", "gan", "eval"]
    assert not (out / "gan" / "stale.txt").exists()
