"""Reliability, second pass (issue 33), part 1: nothing the project did not write is ever deleted or
overwritten, outputs never overwrite inputs, one writer per output folder.

Every case is a real command on tiny data: exit 2 with one error line (no traceback) naming the culprit,
and every file the user had is still there, byte for byte.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import one_error_line as _one_error_line, snapshot_files as _snapshot
from medxgan.cli import main
from medxgan.runtime import outdir
from medxgan.runtime.errors import MedxganError

pytestmark = pytest.mark.usefixtures("one_thread")


def _user_folder(root: Path) -> Path:
    """A folder of the user's, with the kinds of names a careless sweep matches."""
    (root / "data").mkdir(parents=True)
    (root / "data" / "important.txt").write_text("results of a year")
    (root / "report").mkdir()
    (root / "report" / "thesis.tex").write_text("\\chapter{}")
    (root / ".backup.v2").mkdir()
    (root / ".backup.v2" / "keep.txt").write_text("keep")
    (root / ".draft.notes.tmp").write_text("draft")
    (root / "step_000000001").mkdir()
    (root / "step_000000001" / "mine.txt").write_text("mine")
    return root


def _png(path: Path, size: int = 32, value: int = 128, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size, size) if mode == "L" else (size, size, 3)
    Image.fromarray(np.full(shape, value, np.uint8), mode).save(path, format="PNG")
    return path


# ---- --restart / --overwrite / --resume on a folder medxgan did not make: refused, nothing touched ----------


@pytest.mark.parametrize("argv", [
    ["demo", "--out", "USER", "--restart"],
    ["demo", "--out", "USER"],
    ["synth", "brain-mri", "--out", "USER", "--overwrite", "--n", "4"],
    ["explain", "x.png", "--gan", "GAN", "--out", "USER"],
    ["evaluate", "DATA", "--gan", "GAN", "--out", "USER", "--overwrite"],
    ["train", "DATA", "--classifier", "GAN", "--out", "USER", "--resume"],
    ["train-classifier", "DATA", "--out", "USER", "--resume"],
    ["translate", "train", "DATA", "--out", "USER", "--resume"],
    ["translate", "apply", "x.png", "--run", "GAN", "--direction", "fundus2angio", "--out", "USER"],
], ids=lambda a: " ".join(a[:2]) + (" " + a[-1] if a[-1].startswith("--") else ""))
def test_a_users_folder_is_refused_and_left_untouched(tmp_path, capsys, argv):
    user = _user_folder(tmp_path / "proj2")
    before = _snapshot(user)
    _png(tmp_path / "x.png")
    names = {"USER": str(user), "x.png": str(tmp_path / "x.png"), "GAN": str(tmp_path / "nogan"), "DATA": str(tmp_path / "nodata")}
    assert main([names.get(a, a) for a in argv]) == 2
    line = _one_error_line(capsys)
    assert f"--out {user}" in line and "not made by medxgan" in line
    assert _snapshot(user) == before and sorted(p.name for p in user.iterdir()) == sorted(
        [".backup.v2", ".draft.notes.tmp", "data", "report", "step_000000001"])


def test_demo_restart_needs_a_demo_that_medxgan_made(tmp_path, capsys):
    """A folder that looks like a demo (demo.json) but was not made by medxgan: --restart discards nothing."""
    user = _user_folder(tmp_path / "proj2")
    (user / "demo.json").write_text(json.dumps({"settings": {"mode": "default"}}))
    before = _snapshot(user)
    assert main(["demo", "--out", str(user), "--quick", "--restart", "--device", "cpu"]) == 2
    line = _one_error_line(capsys)
    assert f"--out {user}: --restart only acts on a folder medxgan made" in line
    assert _snapshot(user) == before


def test_restart_of_a_marked_folder_of_another_command_is_refused(tmp_path):
    from medxgan.runtime.outdir import mark, require_ours

    (tmp_path / "ex" / "data").mkdir(parents=True)
    mark(tmp_path / "ex", "explain")
    with pytest.raises(MedxganError, match="acts only on a folder made by `medxgan demo`; this one was made by `medxgan explain`"):
        require_ours(tmp_path / "ex", "out", "--restart", kind="demo")


def test_the_temp_sweep_takes_only_the_projects_names_and_only_in_a_marked_folder(tmp_path):
    user = _user_folder(tmp_path / "u")
    (user / ".medxgan-tmp-config.json.x1.tmp").write_text("half")
    before = _snapshot(user)
    assert outdir.sweep_temp(user) == []  # unmarked: nothing at all is removed
    assert _snapshot(user) == before
    outdir.mark(user, "train")
    assert outdir.sweep_temp(user) == [user / ".medxgan-tmp-config.json.x1.tmp"]
    del before[".medxgan-tmp-config.json.x1.tmp"]
    assert {k: v for k, v in _snapshot(user).items() if k != outdir.MARKER} == before


def test_synth_overwrite_replaces_only_its_own_data_set(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["synth", "brain-mri", "--out", str(out), "--n", "4", "--size", "32", "--quiet"]) == 0
    capsys.readouterr()
    assert outdir.marked_kind(out) == "synth"
    assert main(["synth", "brain-mri", "--out", str(out), "--n", "4", "--size", "32", "--quiet"]) == 2
    assert "--overwrite" in _one_error_line(capsys)
    assert main(["synth", "brain-mri", "--out", str(out), "--n", "4", "--size", "32", "--quiet", "--overwrite", "--seed", "1"]) == 0
    assert json.loads((out / "dataset.json").read_text())["seed"] == 1 and outdir.is_marked(out)
    assert not (out / outdir.LOCK).exists()  # the lock goes with the command
    # no temp folder left next to it, and nothing else created in the user's parent folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


# ---- outputs never overwrite inputs --------------------------------------------------------------------


@pytest.mark.parametrize("cmd", ["translate", "explain"])
def test_output_folder_among_the_inputs_is_refused(tmp_path, capsys, cmd):
    scans = tmp_path / "scans"
    _png(scans / "a.png")
    _png(scans / "sub" / "b.png")
    before = _snapshot(scans)
    # the input folder itself; the folder of an input file
    for given, out in ((scans, scans), (scans / "sub" / "b.png", scans / "sub")):
        argv = (["translate", "apply", str(given), "--run", str(tmp_path / "run"), "--direction", "angio2fundus", "--out", str(out)]
                if cmd == "translate" else ["explain", str(given), "--gan", str(tmp_path / "run"), "--out", str(out)])
        assert main(argv) == 2
        line = _one_error_line(capsys)
        assert f"--out {out}: would write among the inputs" in line, line
        assert _snapshot(scans) == before


# ---- explain: unique folder names, ..png accepted, no temp folder after a failure -------------------------


def test_unique_names_never_collide():
    from medxgan.pipeline import _unique_names

    names = _unique_names([Path("a/x.png"), Path("b/x.png"), Path("c/x-2.png"), Path("d/X.png"), Path("..png"), Path("...png"),
                           Path("summary.json.png"), Path("index.html.png")])
    assert names == ["x", "x-2", "x-2-2", "X-3", "image", "image-2", "summary.json-2", "index.html-2"]
    assert len({n.lower() for n in names}) == len(names)


EXPLAIN = ["--steps", "1", "--restarts", "1", "--frames", "2", "--lig-steps", "2", "--minimal-mask-steps", "0", "--quiet"]


def test_explain_gives_every_input_its_own_folder(tmp_path, gan_run):
    files = [_png(tmp_path / d / n, value=v) for d, n, v in (("a", "x.png", 60), ("b", "x.png", 120), ("c", "x-2.png", 180),
                                                          ("d", "..png", 200), ("d", "...png", 220))]
    out = tmp_path / "ex"
    assert main(["explain", *map(str, files), "--gan", str(gan_run), "--out", str(out), *EXPLAIN]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [(Path(i["input"]).name, i["name"]) for i in summary["images"]] == [
        ("x.png", "x"), ("x.png", "x-2"), ("x-2.png", "x-2-2"), ("..png", "image"), ("...png", "image-2")]
    for item in summary["images"]:  # each folder holds the explanation of its own input
        assert json.loads((out / item["name"] / "explanation.json").read_text())["input"] == item["input"]
    assert outdir.marked_kind(out) == "explain" and not list(out.rglob(outdir.TEMP_PREFIX + "*"))


def test_a_failed_explain_leaves_no_temp_folder(tmp_path, gan_run, monkeypatch, capsys):
    import medxgan.pipeline as pipeline

    def broken(res, folder, **kw):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "half.png").write_bytes(b"x")
        raise OSError(28, "No space left on device", str(Path(folder) / "half.png"))

    monkeypatch.setattr(pipeline, "write_explanation", broken)
    out = tmp_path / "ex"
    assert main(["explain", str(_png(tmp_path / "x.png")), "--gan", str(gan_run), "--out", str(out), *EXPLAIN]) == 2
    line = _one_error_line(capsys)
    assert "half.png" in line and "No space left on device" in line
    assert not list(tmp_path.rglob(outdir.TEMP_PREFIX + "*"))


# ---- one writer per output folder ----------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from medxgan.runtime.outdir import claim_out
    claim_out(sys.argv[1], "synth", "out")
    print("locked", flush=True)
    time.sleep(60)
""")


def _holder(out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_on_the_same_out_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "ds"
    holder = _holder(out)
    try:
        assert main(["synth", "brain-mri", "--out", str(out), "--n", "4", "--size", "32", "--quiet"]) == 2
        line = _one_error_line(capsys)
        assert f"--out {out}: in use by another medxgan process (PID {holder.pid})" in line
        assert not (out / "dataset.json").exists()
    finally:
        holder.kill()  # kill -9: the OS drops the lock with the process
        holder.wait()
    assert main(["synth", "brain-mri", "--out", str(out), "--n", "4", "--size", "32", "--quiet"]) == 0
    assert (out / "dataset.json").is_file() and not (out / outdir.LOCK).exists()


def test_two_concurrent_synth_commands_one_wins_one_is_refused(tmp_path):
    """Two real CLI processes started together on one --out: exactly one writes, the other is refused."""
    out = tmp_path / "ds"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "medxgan", "synth", "brain-mri", "--out", str(out), "--n", "40", "--size", "64", "--quiet"]
    procs = [subprocess.Popen(argv + ["--seed", str(s)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
             for s in (1, 2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    if codes == [0, 0]:  # the second started after the first had finished (a slow machine): then it must have been refused
        pytest.fail("both wrote the same --out")
    assert codes == [0, 2], results
    refused = next(err for rc, err in results if rc == 2)
    assert "in use by another medxgan process (PID" in refused or "exists and is not empty" in refused, refused
    assert "Traceback" not in refused


def test_the_lock_is_reentrant_in_one_process_and_released(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    outdir.lock_out(out)
    outdir.lock_out(out)  # a library call inside a command that holds it
    assert outdir.holder_pid(out) == str(os.getpid())
    outdir.unlock_out(out)
    assert (out / outdir.LOCK).exists()
    outdir.unlock_out(out)
    assert not (out / outdir.LOCK).exists()


def test_a_refused_command_leaves_no_folder_behind(tmp_path, capsys):
    out = tmp_path / "new" / "deeper"
    assert main(["train-classifier", str(tmp_path / "nodata"), "--out", str(out)]) == 2
    _one_error_line(capsys)
    assert not (tmp_path / "new").exists()
