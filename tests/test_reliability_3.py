"""Reliability, second pass (issue 33), part 2: stored files read back are validated with one line naming
the file; a corrupt checkpoint names itself and the previous good one; a run killed before its first
checkpoint can be started again; translate apply checks every input before writing anything."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import cli_runs
from PIL import Image

from helpers import one_error_line as _one_error_line, snapshot_files as _snapshot
from medxgan.cli import main
from medxgan.runtime.runs import RunDir

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny data set, a 2-epoch classifier run and a 2-step GAN run (checkpoints at steps 1 and 2)."""
    return cli_runs(tmp_path_factory.mktemp("rel3"), epochs=2, steps=2, gan_args=("--ckpt-every", "1"))


# ---- corrupt checkpoints on --resume: named, with the previous good one ----------------------------------


def _corrupt(ckpt: Path, how: str) -> None:
    if how == "list":
        (ckpt / "state.json").write_text("[1, 2]")
    elif how == "missing-tensor":
        skel = json.loads((ckpt / "state.json").read_text())
        skel["extra"] = {"__tensor__": "no.such.tensor"}
        (ckpt / "state.json").write_text(json.dumps(skel))
    elif how == "truncated":
        data = (ckpt / "state.safetensors").read_bytes()
        (ckpt / "state.safetensors").write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("how", ["list", "missing-tensor", "truncated"])
def test_corrupt_latest_checkpoint_names_itself_and_the_previous_good_one(runs, tmp_path, capsys, how):
    run = tmp_path / "gan"
    shutil.copytree(runs / "gan", run)
    ckpts = RunDir(run).list_checkpoints()
    assert len(ckpts) == 2
    _corrupt(ckpts[-1], how)
    before = _snapshot(run)
    argv = ["train", str(runs / "data"), "--classifier", str(runs / "clf"), "--out", str(run), "--resume", "--steps", "3", "--quiet"]
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert f"checkpoint {ckpts[-1]}: corrupt" in line and f"the previous checkpoint {ckpts[0]} reads fine" in line, line
    assert _snapshot(run) == before
    shutil.move(str(ckpts[-1]), str(tmp_path / "bad"))  # as the message says: resume from the previous one
    assert main(argv) == 0
    assert RunDir(run).load_checkpoint_step() == 3


def test_a_step_folder_that_is_not_a_step_is_ignored(runs, tmp_path):
    run = tmp_path / "clf"
    shutil.copytree(runs / "clf", run)
    (run / "checkpoints" / "step_final").mkdir()
    assert RunDir(run).latest_checkpoint().name == RunDir(runs / "clf").latest_checkpoint().name
    assert RunDir(run).load_checkpoint_step() == RunDir(runs / "clf").load_checkpoint_step()


# ---- a GAN run killed after config.json, before its first checkpoint ----------------------------------


def test_gan_run_killed_before_its_first_checkpoint_is_restartable(runs, tmp_path, capsys):
    run = tmp_path / "gan"
    shutil.copytree(runs / "gan", run)
    shutil.rmtree(run / "checkpoints")
    for f in run.glob("*.safetensors"):
        f.unlink()
    RunDir(run).update_config(status="running")
    argv = ["train", str(runs / "data"), "--classifier", str(runs / "clf"), "--out", str(run), "--preset", "fast", "--steps", "2",
            "--batch-size", "4", "--no-oracle", "--monitor-samples", "2", "--quiet"]
    assert main(argv + ["--resume"]) == 2
    assert "nothing to resume (no checkpoint); drop --resume" in _one_error_line(capsys)
    assert main(argv) == 0  # nothing to continue: it starts afresh in place
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["status"] == "finished" and (run / "generator.safetensors").is_file()


# ---- translate apply: every input checked before the first output is written -------------------------


@pytest.fixture(scope="module")
def fa_run(tmp_path_factory):
    from medxgan.data.phantoms.fundus import synthesize_fundus_angio

    root = tmp_path_factory.mktemp("fa")
    synthesize_fundus_angio(root / "data", n=6, size=32, seed=3, abnormal_frac=0.5, test_frac=0.2, preview=False)
    assert main(["translate", "train", str(root / "data"), "--out", str(root / "run"), "--size", "32", "--ngf", "4", "--ndf", "4",
                 "--blocks", "1", "--pool-size", "2", "--epochs", "1", "--epochs-decay", "0", "--device", "cpu"]) == 0
    return root / "run"


def _gray(path: Path, side: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((side, side), 90, np.uint8), "L").save(path, format="PNG")
    return path


@pytest.mark.parametrize("side", [1, 4])
def test_translate_apply_refuses_too_small_inputs_before_writing(fa_run, tmp_path, capsys, side):
    good, small = _gray(tmp_path / "in" / "good.png", 16), _gray(tmp_path / "in" / "small.png", side)
    out = tmp_path / "out"
    assert main(["translate", "apply", str(good), str(small), "--run", str(fa_run), "--direction", "angio2fundus", "--out", str(out),
                 "--device", "cpu"]) == 2
    line = _one_error_line(capsys)
    assert f"{small}: {side}x{side} pixels is too small to translate (at least 5x5" in line
    assert not out.exists()


def test_translate_apply_validates_every_input_before_writing(fa_run, tmp_path, capsys):
    good = _gray(tmp_path / "in" / "good.png", 16)
    data = _gray(tmp_path / "in" / "trunc.png", 64).read_bytes()
    (tmp_path / "in" / "trunc.png").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    assert main(["translate", "apply", str(good), str(tmp_path / "in" / "trunc.png"), "--run", str(fa_run), "--direction",
                 "angio2fundus", "--out", str(out), "--device", "cpu"]) == 2
    assert "trunc.png" in _one_error_line(capsys)
    assert not out.exists()


def test_translate_apply_accepts_dot_names(fa_run, tmp_path):
    files = [_gray(tmp_path / "in" / n, 16) for n in ("..png", "...png")]
    out = tmp_path / "out"
    assert main(["translate", "apply", *map(str, files), "--run", str(fa_run), "--direction", "angio2fundus", "--out", str(out),
                 "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".png") == ["...png", "..png"]
    assert Image.open(out / "..png").size == (16, 16)


# ---- absurd sizes: one line naming the option, before anything is read or written -------------------------

SIZE_CASES = [
    (["explain", "x.png", "--gan", "RUN", "--out", "OUT", "--frames", "100000000"], "--frames 100000000: needs about"),
    (["explain", "x.png", "--gan", "RUN", "--out", "OUT", "--lig-steps", "1000000000"], "--lig-steps 1000000000: needs about"),
    (["evaluate", "DATA", "--gan", "RUN", "--out", "OUT", "--batch-size", "1000000000"], "--batch-size 1000000000: needs about"),
    (["train-classifier", "DATA", "--out", "OUT", "--batch-size", str(10**20)], f"--batch-size {10**20}: needs about"),
    (["train", "DATA", "--classifier", "CLF", "--out", "OUT", "--monitor-samples", "1000000000"], "--monitor-samples 1000000000: needs"),
    (["translate", "train", "DATA", "--out", "OUT", "--ngf", "1000000"], "--ngf 1000000: needs about"),
    (["train-encoder", "RUN", "--width", "1000000"], "--width 1000000: needs about"),
    (["train-classifier", "DATA", "--out", "OUT", "--arch", "resnet-small", "--size", "1"],
     "--size 1: architecture resnet-small needs inputs of at least 16x16 pixels"),
    (["train", "DATA", "--classifier", "CLF", "--out", "OUT", "--preset", "fast", "--no-oracle", "--set", "g_width=1000000"],
     "--set g_width=1000000: needs about"),
]


@pytest.mark.parametrize("argv, named", SIZE_CASES, ids=[n.split(":")[0] for _, n in SIZE_CASES])
def test_absurd_size_is_one_line_naming_the_option(runs, tmp_path, capsys, argv, named):
    names = {"DATA": str(runs / "data"), "CLF": str(runs / "clf"), "RUN": str(tmp_path / "run"), "OUT": str(tmp_path / "out")}
    assert main([names.get(a, a) for a in argv]) == 2
    line = _one_error_line(capsys)
    assert named in line, line
    assert not (tmp_path / "out").exists()
