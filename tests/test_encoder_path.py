"""The encoder path (issue 15 part 3): a GAN run with an encoder from `train-encoder` is inverted with the
encoder's short schedule by `evaluate` and by the demo, which can train one as a stage of its own."""

from __future__ import annotations

import dataclasses
import json

import pytest

from medxgan.demo import DemoConfig, _check_settings, run_demo
from medxgan.gan.run import ENCODER_INVERSION_RESTARTS, ENCODER_INVERSION_STEPS
from medxgan.runtime.errors import MedxganError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = DemoConfig(
    mode="custom", n_images=40, classifier_epochs=1, gan_steps=5, gan_batch_size=8, gan_log_every=5, gan_ckpt_every=5,
    gan_max_minutes=None, gan_monitor_samples=16, gan_overrides=(("g_width", 4), ("d_width", 4), ("nz1", 8), ("nz2", 4)),
    oracle_epochs=1, methods=("medxgan-diff", "gradcam"), eval_n=2, eval_batch_size=2, inversion_steps=3, inversion_restarts=1,
    noise_sigmas=(), max_sensitivity=False, max_sensitivity_n=0, n_resamples=50, report_rows=2, frames=3,
)


def test_inversion_schedule_of_the_demo():
    cfg = DemoConfig.default()
    assert cfg.encoder_steps == 0  # measured not to pay for itself within the demo (benchmarks/performance/RESULTS.md)
    assert cfg.inversion() == {"steps": cfg.inversion_steps, "restarts": cfg.inversion_restarts}
    assert cfg.inversion(encoder=True) is None  # the run's encoder brings its own schedule


def test_demo_trains_the_encoder_and_evaluates_on_its_schedule(tmp_path):
    out = tmp_path / "demo"
    cfg = dataclasses.replace(TINY, encoder_steps=3)
    ran: list[str] = []
    r = run_demo(out, device="cpu", config=cfg, show_progress=False, _stage_hook=ran.append)
    assert ran == ["data", "classifier", "gan", "encoder", "eval", "frames"] and r["stages"]["encoder"]["seconds"] > 0
    enc = json.loads((out / "gan" / "encoder" / "config.json").read_text())
    assert enc["status"] == "finished" and enc["steps_done"] == 3
    res = json.loads((out / "eval" / "results.json").read_text())
    inv = res["config"]["inversion"]
    assert (inv["steps"], inv["restarts"]) == (ENCODER_INVERSION_STEPS, ENCODER_INVERSION_RESTARTS)  # not the demo's 3 x 1
    assert res["config"]["inversion_encoder"] == "trained"
    assert any("encoder trained by train-encoder" in n for n in res["notes"])

    ran.clear()
    r2 = run_demo(out, device="cpu", config=cfg, show_progress=False, _stage_hook=ran.append)
    assert ran == [] and r2["reused"] == ["data", "classifier", "gan", "encoder", "eval", "frames"]


def test_a_redone_encoder_makes_the_evaluation_stale():
    """(The removal itself is run_stage's, tested with stubs in test_demo.) Redoing the GAN redoes the encoder too."""
    from medxgan.demo import _DOWNSTREAM

    assert "eval" in _DOWNSTREAM["encoder"] and "encoder" in _DOWNSTREAM["gan"]


def test_demo_json_without_the_encoder_settings_still_matches(tmp_path):
    """A demo made before the encoder settings existed is continued, not refused (they default to off)."""
    out = tmp_path / "demo"
    out.mkdir()
    settings = {**TINY.to_dict(), "seed": 0}
    old = {k: v for k, v in settings.items() if k not in ("encoder_steps", "encoder_max_minutes")}
    (out / "demo.json").write_text(json.dumps({"settings": old}))
    assert _check_settings(out, settings, restart=False) is not None
    with pytest.raises(MedxganError, match="encoder_steps"):
        _check_settings(out, {**settings, "encoder_steps": 5}, restart=False)
