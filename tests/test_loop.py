"""The training-loop skeleton and the one resume policy (runtime.loop), on a toy trainer.

Each real trainer's "resumed == uninterrupted" test lives with it: test_classifier_training,
test_gan_train, test_encoder_train, test_translate.
"""

from __future__ import annotations

import json

import pytest
import torch

from medxgan.cli import flagged
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.loop import Cadence, LoopOptions, TrainingFailed, open_run, remove_temp_files, train_loop
from medxgan.runtime.runs import RunDir

KIND = "toy"


class Toy:
    """w <- w - 0.1 * (w - noise): a step with optimiser-free state and a random draw per step."""

    def __init__(self, seed: int = 0, blow_up_at: int | None = None):
        self.w = torch.zeros(3)
        self.gen = torch.Generator().manual_seed(seed)
        self.n, self.blow_up_at = 0, blow_up_at

    def step(self):
        self.n += 1
        noise = torch.randn(3, generator=self.gen) + torch.randn(3)  # own stream + the global one (restored by the loop)
        self.w -= 0.1 * (self.w - noise)
        loss = float("nan") if self.n == self.blow_up_at else float(self.w.pow(2).sum())
        return {"loss": loss}

    def state_dict(self):
        return {"w": self.w.clone(), "gen": self.gen.get_state(), "n": self.n}

    def load_state_dict(self, st):
        self.w, self.n = st["w"].clone(), int(st["n"])
        self.gen.set_state(st["gen"].to(torch.uint8))


def _run(path, steps, resume=False, settings=None, **kw):
    run = RunDir(path)
    settings = {"seed": 0, "batch_size": 4, "steps": steps, **(settings or {})}
    start = open_run(run, resume=resume, kind=KIND, settings=settings, may_change=("steps",))
    torch.manual_seed(0)
    toy = Toy(blow_up_at=kw.pop("blow_up_at", None))
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_config(KIND, settings=settings, resumes=start.resumes, status="running")
    res = train_loop(toy, run, LoopOptions(total=steps, cadence=Cadence(log_every=2, ckpt_every=kw.pop("ckpt_every", 3)),
                                           resume=start.resumed, quiet=True, **kw))
    run.update_config(status="finished")
    return toy, res


def test_resumed_equals_uninterrupted(tmp_path):
    a, _ = _run(tmp_path / "a", 8)
    _run(tmp_path / "b", 4)  # checkpoints at 3 and 4 (the last step)
    b, res = _run(tmp_path / "b", 8, resume=True)
    assert torch.equal(a.w, b.w) and res.step == 8 and not res.stopped_early
    ma, mb = RunDir(tmp_path / "a").read_metrics(), RunDir(tmp_path / "b").read_metrics()
    assert [r["step"] for r in mb] == [2, 4, 6, 8]
    assert [r["loss"] for r in ma] == [r["loss"] for r in mb]
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    assert cfg["resumes"] == [{"from_step": 4, "changed": {"steps": [4, 8]}}]  # the allowed change is recorded


def test_resume_without_checkpoint_is_refused(tmp_path):
    with pytest.raises(MedxganError, match=r"nothing to resume \(no checkpoint\); drop --resume"):
        open_run(RunDir(tmp_path / "new"), resume=True, kind=KIND, settings={})


def test_existing_run_without_resume_is_refused(tmp_path):
    _run(tmp_path / "r", 2)
    with pytest.raises(MedxganError, match="^out .*already holds a run .*finished.*choose another out directory") as exc:
        _run(tmp_path / "r", 2)
    assert flagged(exc.value).startswith("--out ")  # what the CLI prints
    RunDir(tmp_path / "r").update_config(status="running")  # e.g. killed
    with pytest.raises(MedxganError, match="not finished.*continue it with --resume or choose another out directory") as exc:
        _run(tmp_path / "r", 2)
    assert "\n" not in str(exc.value)


def test_resume_with_other_settings_names_each_difference(tmp_path):
    _run(tmp_path / "r", 2)
    with pytest.raises(MedxganError) as exc:
        _run(tmp_path / "r", 4, resume=True, settings={"seed": 1, "batch_size": 8})
    msg = str(exc.value)
    assert "seed 1 (the run has 0)" in msg and "batch_size 8 (the run has 4)" in msg and "only steps may change" in msg
    assert "\n" not in msg


def test_temp_files_of_a_killed_write_are_removed(tmp_path):
    _run(tmp_path / "r", 2)
    run = RunDir(tmp_path / "r")
    junk = [run.path / ".medxgan-tmp-config.json.abc123.tmp", run.checkpoint_root / ".medxgan-tmp-step_xyz",
            run.path / ".medxgan-tmp-classifier.k2j3"]
    junk[0].write_text("half")
    junk[1].mkdir()
    junk[2].mkdir()
    # names the project never writes (a user's backup, draft) are not temp files, whatever they look like (issue 33)
    users = [run.path / ".config.json.abc123.tmp", run.path / ".backup.v2", run.path / ".draft.notes.tmp"]
    users[0].write_text("mine")
    users[1].mkdir()
    (users[1] / "keep.txt").write_text("mine")
    users[2].write_text("mine")
    _run(tmp_path / "r", 3, resume=True)
    assert not any(p.exists() for p in junk)
    assert all(p.exists() for p in users) and (users[1] / "keep.txt").read_text() == "mine"
    assert remove_temp_files(run.path) == []


def test_non_finite_loss_marks_the_run_failed(tmp_path):
    with pytest.raises(TrainingFailed, match="non-finite loss at step 3; the run is marked failed"):
        _run(tmp_path / "r", 6, blow_up_at=3)
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["status"] == "failed" and cfg["failed_at_step"] == 3


def test_max_minutes_stops_early(tmp_path):
    _, res = _run(tmp_path / "r", 50, max_minutes=0.0)
    assert res.step == 1 and res.stopped_early
    assert RunDir(tmp_path / "r").load_checkpoint_step() == 1  # the last step is always checkpointed
