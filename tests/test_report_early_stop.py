"""The report says first, in words, when a training stage stopped at its time limit (issue 32)."""

from __future__ import annotations

import json
from pathlib import Path

from medxgan.report.html import early_stops


def _config(run: Path, **cfg) -> None:
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(cfg))


def test_early_stops_names_each_stopped_stage(tmp_path):
    _config(tmp_path / "classifier", epochs=30, epochs_done=30, stopped_early=False)
    _config(tmp_path / "gan", steps=2000, steps_done=238, stopped_early=True)
    _config(tmp_path / "gan" / "encoder", steps=800, steps_done=100, stopped_early=True)
    dirs = {"classifier": tmp_path / "classifier", "gan": tmp_path / "gan"}
    assert early_stops(dirs, {}) == [
        "the GAN stopped at its time limit after 238 of 2000 steps",
        "the inversion encoder stopped at its time limit after 100 of 800 steps",
    ]


def test_bare_evaluation_finds_its_gan_through_results(tmp_path):
    _config(tmp_path / "gan", steps=500, steps_done=500, stopped_early=False)
    assert early_stops({"gan": None}, {"config": {"gan": str(tmp_path / "gan")}}) == []
    _config(tmp_path / "gan2", steps=500, steps_done=80, stopped_early=True)
    assert early_stops({"gan": None}, {"config": {"gan": str(tmp_path / "gan2")}}) == [
        "the GAN stopped at its time limit after 80 of 500 steps"]
    assert early_stops({}, {"config": {"gan": str(tmp_path / "missing")}}) == []
