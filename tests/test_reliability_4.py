"""Reliability, second pass (issue 33), part 4: every stored file medxgan reads back is checked on load
(runtime.records) and refused in one line naming the file and the field, before anything is written; a
full disk names the operation and the path; --oracle is checked before --out exists; train-encoder holds
the lock of RUN/encoder; a classifier that learned nothing says so."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from helpers import cli_runs
from PIL import Image

from helpers import one_error_line as _one_error_line
from medxgan.cli import main
from medxgan.runtime import atomic, outdir
from medxgan.runtime.errors import MedxganError, StorageError
from medxgan.runtime.records import check_record, integer, obj, text
from medxgan.runtime.runs import RunDir

pytestmark = pytest.mark.usefixtures("one_thread")


def _edited(src: Path, dst: Path, rel: str, edit) -> Path:
    """A copy of run ``src`` whose JSON file ``rel`` is changed by ``edit(record)`` (in place)."""
    shutil.copytree(src, dst)
    record = json.loads((dst / rel).read_text())
    edit(record)
    (dst / rel).write_text(json.dumps(record))
    return dst


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny data set, a 1-epoch classifier run, a 1-step GAN run and an image to explain."""
    root = cli_runs(tmp_path_factory.mktemp("rel4"), epochs=1, steps=1)
    Image.fromarray(np.full((64, 64), 90, np.uint8)).save(root / "x.png")
    return root


# ---- the schema helper itself ------------------------------------------------------------------------


def test_check_record_names_the_file_and_the_dotted_field(tmp_path):
    schema = {"net": obj({"width": integer(min=1), "kind": text(("a", "b"))}, closed=True, required=True)}
    where = tmp_path / "config.json"
    assert check_record({"net": {"width": 3}, "extra": 1}, schema, where) == {"net": {"width": 3}, "extra": 1}
    cases = [({"net": {"width": 0}}, "field net.width: 0 is too small (at least 1)"),
             ({"net": {"width": "3"}}, 'field net.width: "3" is a string, expected an integer'),
             ({"net": {"width": True}}, "field net.width: true is true or false, expected an integer"),
             ({"net": {"kind": "c"}}, 'field net.kind: "c" is not one of a, b'),
             ({"net": {"depth": 2}}, "field net.depth: unknown key (known: width, kind)"),
             ({}, "field net: missing (expected an object)"),
             ([1], "holds a list ([1]), expected a JSON object")]
    for record, says in cases:
        with pytest.raises(MedxganError) as info:
            check_record(record, schema, where)
        assert str(info.value) == f"{where}: {says}"


# ---- classifier run config.json ----------------------------------------------------------------------

CLASSIFIER_EDITS = {
    "negative width": (lambda c: c["arch_kwargs"].update(image_size=-4), "field arch_kwargs.image_size: -4 is too small"),
    "zero channels": (lambda c: c["arch_kwargs"].update(in_channels=0), "field arch_kwargs.in_channels: 0 is too small"),
    "string positive_index": (lambda c: c["adapter"].update(positive_index="one"),
                              'field adapter.positive_index: "one" is a string, expected an integer or null'),
    "negative preprocessing": (lambda c: c["adapter"].update(preprocessing=-1),
                               "field adapter.preprocessing: -1 is an integer, expected an object or null"),
    "list preprocessing": (lambda c: c["adapter"].update(preprocessing=[1, 2]), "field adapter.preprocessing: [1, 2] is a list"),
    "negative input size": (lambda c: c["adapter"]["preprocessing"].update(input_size=[-3, 64]),
                            "field adapter.preprocessing.input_size[0]: -3 is too small"),
    "unknown preprocessing key": (lambda c: c["adapter"]["preprocessing"].update(foo=1),
                                  "field adapter.preprocessing.foo: unknown key"),
    "unknown architecture argument": (lambda c: c["arch_kwargs"].update(bogus=1), "field arch_kwargs.bogus: unknown key"),
    "adapter a list": (lambda c: c.update(adapter=[1]), "field adapter: [1] is a list"),
}


@pytest.mark.parametrize("case", list(CLASSIFIER_EDITS))
def test_a_wrong_classifier_run_config_is_one_line_naming_file_and_field(runs, tmp_path, capsys, case):
    edit, says = CLASSIFIER_EDITS[case]
    clf = _edited(runs / "clf", tmp_path / "clf", "config.json", edit)
    out = tmp_path / "out"
    assert main(["train", str(runs / "data"), "--classifier", str(clf), "--out", str(out), "--steps", "1", "--batch-size", "4",
                 "--no-oracle", "--quiet"]) == 2
    line = _one_error_line(capsys)
    assert f"{clf / 'config.json'}: {says}" in line, line
    assert not out.exists()


def test_an_unedited_copy_of_the_classifier_run_loads(runs, tmp_path):
    """The control of the cases above: the copy itself is fine, only the edited field is refused."""
    from medxgan.classifiers import load_classifier

    clf = _edited(runs / "clf", tmp_path / "clf", "config.json", lambda c: c.update(note="a newer medxgan's key is accepted"))
    assert load_classifier(clf).fingerprint == load_classifier(runs / "clf").fingerprint


# ---- GAN run config.json and its encoder sub-run -------------------------------------------------------

GAN_EDITS = {
    "negative width": (lambda c: c["net"].update(g_width=-3), "field net.g_width: -3 is too small (at least 1)"),
    "string size": (lambda c: c["net"].update(size="64"), 'field net.size: "64" is a string, expected an integer'),
    "unknown net key": (lambda c: c["net"].update(foo=1), "field net.foo: unknown key"),
    "classifier record a list": (lambda c: c.update(classifier=[1]), "field classifier: [1] is a list"),
    "string positive_index": (lambda c: c["classifier"]["adapter"].update(positive_index="x"),
                              'field classifier.adapter.positive_index: "x" is a string'),
    "negative preprocessing": (lambda c: c["classifier"]["adapter"].update(preprocessing=-1),
                               "field classifier.adapter.preprocessing: -1 is an integer"),
    "oracle a string": (lambda c: c.update(oracle="zzz"), 'field oracle: "zzz" is a string, expected an object or null'),
    "inversion a list": (lambda c: c["preset"].update(inversion=[1]), "field preset.inversion: [1] is a list"),
    "local a number": (lambda c: c["classifier"].update(local=5), "field classifier.local: 5 is an integer"),
}


def _explain(runs: Path, gan: Path, out: Path) -> list[str]:
    return ["explain", str(runs / "x.png"), "--gan", str(gan), "--out", str(out), "--steps", "1", "--restarts", "1",
            "--frames", "2", "--lig-steps", "2", "--quiet"]


@pytest.mark.parametrize("case", list(GAN_EDITS))
def test_a_wrong_gan_run_config_is_one_line_naming_file_and_field(runs, tmp_path, capsys, case):
    edit, says = GAN_EDITS[case]
    gan = _edited(runs / "gan", tmp_path / "gan", "config.json", edit)
    out = tmp_path / "ex"
    assert main(_explain(runs, gan, out)) == 2
    line = _one_error_line(capsys)
    assert f"{gan / 'config.json'}: {says}" in line, line
    assert not out.exists()


RESUME_EDITS = {
    "train_config a list": (lambda c: c.update(train_config=[1]), "field train_config: [1] is a list, expected an object or null"),
    "string steps": (lambda c: c["train_config"].update(steps="x"), 'field train_config.steps: "x" is a string, expected an integer'),
    "preset without name": (lambda c: c["train_config"].update(preset={"foo": 1}), "field train_config.preset.name: missing"),
    "settings a list": (lambda c: c.update(settings=[1]), "field settings: [1] is a list, expected an object or null"),
    "resumes a number": (lambda c: c.update(resumes=5), "field resumes: 5 is an integer, expected a list or null"),
}


@pytest.mark.parametrize("case", list(RESUME_EDITS))
def test_a_wrong_gan_run_config_on_resume_is_one_line_and_touches_nothing(runs, tmp_path, capsys, case):
    edit, says = RESUME_EDITS[case]
    gan = _edited(runs / "gan", tmp_path / "gan", "config.json", edit)
    before = {str(p): p.read_bytes() for p in sorted(gan.rglob("*")) if p.is_file()}
    assert main(["train", str(runs / "data"), "--classifier", str(runs / "clf"), "--out", str(gan), "--resume", "--quiet"]) == 2
    line = _one_error_line(capsys)
    assert f"{gan / 'config.json'}: {says}" in line, line
    assert {str(p): p.read_bytes() for p in sorted(gan.rglob("*")) if p.is_file()} == before


def _with_encoder(runs: Path, dst: Path, **config) -> Path:
    """A copy of the GAN run with an encoder sub-run (RUN/encoder/: config.json + weights, as train-encoder writes)."""
    from medxgan.gan.encoder import LatentEncoder
    from medxgan.gan.run import ENCODER_KIND, ENCODER_WEIGHTS, encoder_dir

    shutil.copytree(runs / "gan", dst)
    net = json.loads((dst / "config.json").read_text())["net"]
    rd = RunDir(encoder_dir(dst))
    rd.write_config(ENCODER_KIND, **config)
    rd.save_weights(ENCODER_WEIGHTS, LatentEncoder(net, width=4))
    return dst


@pytest.mark.parametrize("config, says", [({"width": "wide"}, 'field width: "wide" is a string, expected an integer'),
                                          ({"width": -2}, "field width: -2 is too small (at least 1)"),
                                          ({"foo": 1}, "field width: missing (expected an integer)")])
def test_a_wrong_encoder_sub_run_is_one_line_naming_file_and_field(runs, tmp_path, capsys, config, says):
    gan = _with_encoder(runs, tmp_path / "gan", **config)
    assert main(_explain(runs, gan, tmp_path / "ex")) == 2
    line = _one_error_line(capsys)
    assert f"{gan / 'encoder' / 'config.json'}: {says}" in line, line
    assert not (tmp_path / "ex").exists()


@pytest.mark.parametrize("edit, says", [(lambda c: c["settings"].update(width="wide"), 'field settings.width: "wide" is a string'),
                                        (lambda c: c["settings"].update(batch_size=-1), "field settings.batch_size: -1 is too small"),
                                        (lambda c: c.update(lr_decay_steps="x"), 'field lr_decay_steps: "x" is a string'),
                                        (lambda c: c.update(data=5), "field data: 5 is an integer, expected a string or null")])
def test_a_wrong_encoder_sub_run_on_resume_is_named_in_its_file_not_as_a_flag(runs, tmp_path, capsys, edit, says):
    gan = _with_encoder(runs, tmp_path / "gan", width=4, data=str(runs / "data"), lr_decay_steps=2,
                        settings={"width": 4, "batch_size": 4, "lr": 1e-3, "seed": 0, "steps": 2, "lr_decay_steps": 2})
    RunDir(gan / "encoder").save_checkpoint(1, {"note": "a checkpoint to resume from"})
    _edited(gan, tmp_path / "gan2", "encoder/config.json", edit)
    assert main(["train-encoder", str(tmp_path / "gan2"), "--resume", "--quiet"]) == 2
    line = _one_error_line(capsys)
    assert f"{tmp_path / 'gan2' / 'encoder' / 'config.json'}: {says}" in line, line


@pytest.mark.parametrize("edit, says", [(lambda c: c["settings"].update(batch_size="x"), 'field settings.batch_size: "x" is a string'),
                                        (lambda c: c["settings"].update(arch=5), "field settings.arch: 5 is an integer"),
                                        (lambda c: c.update(resumes=5), "field resumes: 5 is an integer")])
def test_a_wrong_classifier_run_on_resume_is_named_in_its_file_not_as_a_flag(runs, tmp_path, capsys, edit, says):
    clf = _edited(runs / "clf", tmp_path / "clf", "config.json", edit)
    before = {str(p): p.read_bytes() for p in sorted(clf.rglob("*")) if p.is_file()}
    assert main(["train-classifier", str(runs / "data"), "--out", str(clf), "--resume", "--epochs", "2"]) == 2
    line = _one_error_line(capsys)
    assert f"{clf / 'config.json'}: {says}" in line, line
    assert {str(p): p.read_bytes() for p in sorted(clf.rglob("*")) if p.is_file()} == before


def test_a_good_encoder_sub_run_loads(runs, tmp_path):
    from medxgan.gan.run import load_gan_run

    gan = _with_encoder(runs, tmp_path / "gan", width=4)
    loaded = load_gan_run(gan, load_oracle=False)
    assert loaded.encoder_info["kind"] == "trained" and loaded.encoder.head.in_features == 4 * 8 * 16


# ---- translate run config, --pairs CSV, dataset.json ---------------------------------------------------


@pytest.fixture(scope="module")
def translate_run(tmp_path_factory):
    """A translate run as `translate train` writes it (config.json with its train record + both generators), tiny."""
    from medxgan.translate.run import DIRECTIONS, RUN_KIND, TranslateConfig, build_generators

    root = tmp_path_factory.mktemp("tr4")
    cfg = TranslateConfig(size=32, ngf=4, ndf=4, blocks=1, epochs=1, epochs_decay=0).finalise()
    rd = RunDir(root / "run")
    rd.write_config(RUN_KIND, size=cfg.size, train=asdict(cfg), status="finished")
    for name, g in zip((DIRECTIONS["fundus2angio"], DIRECTIONS["angio2fundus"]), build_generators(cfg)):
        rd.save_weights(name, g)
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(root / "fundus.png")
    return root


def _apply(root: Path, run: Path, out: Path) -> list[str]:
    return ["translate", "apply", str(root / "fundus.png"), "--run", str(run), "--direction", "fundus2angio", "--out", str(out)]


def test_the_translate_run_fixture_applies(translate_run, tmp_path):
    assert main(_apply(translate_run, translate_run / "run", tmp_path / "out")) == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 1


@pytest.mark.parametrize("edit, says", [(lambda c: c.pop("train"), "field train: missing (expected an object)"),
                                        (lambda c: c.pop("size"), "field size: missing (expected an integer)"),
                                        (lambda c: c.update(train=[1]), "field train: [1] is a list, expected an object"),
                                        (lambda c: c["train"].update(ngf=-4), "field train.ngf: -4 is too small (at least 1)"),
                                        (lambda c: c["train"].update(upsample="magic"), 'field train.upsample: "magic" is not one of')])
def test_a_wrong_translate_run_config_is_one_line_naming_file_and_field(translate_run, tmp_path, capsys, edit, says):
    run = _edited(translate_run / "run", tmp_path / "run", "config.json", edit)
    assert main(_apply(translate_run, run, tmp_path / "out")) == 2
    line = _one_error_line(capsys)
    assert f"{run / 'config.json'}: {says}" in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, says", [(bytes(range(256)) * 4, "'utf-8' codec can't decode byte 0x80"),
                                           (b"a\x00b,c\n", "it holds NUL bytes: a binary file")])
def test_a_binary_pairs_file_is_one_line(tmp_path, capsys, content, says):
    for side in ("trainA", "trainB"):
        (tmp_path / "data" / side).mkdir(parents=True)
    (tmp_path / "pairs.csv").write_bytes(content)
    out = tmp_path / "out"
    assert main(["translate", "train", str(tmp_path / "data"), "--out", str(out), "--paired", "--pairs", str(tmp_path / "pairs.csv"),
                 "--size", "32", "--ngf", "4", "--ndf", "4", "--blocks", "1", "--epochs", "1", "--epochs-decay", "0"]) == 2
    line = _one_error_line(capsys)
    assert f"--pairs {tmp_path / 'pairs.csv'}: not a text CSV of fundus,angiogram rows" in line and says in line, line
    assert not out.exists()


@pytest.mark.parametrize("meta, says", [({"positive": 1}, "field positive: 1 is an integer, expected a string, a list or null"),
                                        ({"positive": {"a": 1}}, 'field positive: {"a": 1} is an object'),
                                        ({"negative": [["x"]]}, 'field negative[0]: ["x"] is a list, expected a string'),
                                        ({"nifti": [1]}, "field nifti: [1] is a list, expected an object or null")])
def test_a_wrong_dataset_json_is_one_line_naming_file_and_field(runs, tmp_path, capsys, meta, says):
    data = tmp_path / "data"
    shutil.copytree(runs / "data", data)
    (data / "dataset.json").write_text(json.dumps(meta))
    out = tmp_path / "clf"
    assert main(["train-classifier", str(data), "--out", str(out), "--epochs", "1", "--batch-size", "4"]) == 2
    line = _one_error_line(capsys)
    assert f"{data / 'dataset.json'}: {says}" in line, line
    assert not out.exists()


# ---- a full disk: the operation and the path -----------------------------------------------------------


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_during_an_atomic_write_names_operation_and_path(tmp_path, monkeypatch):
    target = tmp_path / "config.json"
    target.write_text("old\n")
    monkeypatch.setattr(atomic.os, "fsync", _enospc)
    with pytest.raises(StorageError) as info:
        atomic.atomic_write_json(target, {"new": 1})
    assert str(info.value) == f"writing {target}: No space left on device"
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC  # `except OSError` callers still catch it
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]  # no temp file left


def test_a_full_disk_on_the_cli_is_one_line_naming_operation_and_path(runs, tmp_path, monkeypatch, capsys):
    real_replace = os.replace

    def replace(src, dst, *a, **kw):  # the disk fills up as the run's config.json is written
        if Path(dst).name == "config.json":
            _enospc()
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(atomic.os, "replace", replace)
    out = tmp_path / "clf"
    assert main(["train-classifier", str(runs / "data"), "--out", str(out), "--epochs", "1", "--batch-size", "4"]) == 2
    line = _one_error_line(capsys)
    assert line == f"medxgan: error: writing {out / 'config.json'}: No space left on device", line
    assert not list(tmp_path.rglob(outdir.TEMP_PREFIX + "*"))


def test_a_full_disk_while_moving_a_folder_into_place_names_it(tmp_path, monkeypatch):
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(atomic.os, "replace", _enospc)
    with pytest.raises(StorageError, match=f"^writing folder {tmp_path / 'final'}: No space left on device$"):
        atomic.atomic_replace_dir(tmp_path / "tmp", tmp_path / "final")


def test_appending_metrics_or_copying_a_classifier_on_a_full_disk_names_operation_and_path(tmp_path, monkeypatch):
    from medxgan.gan import run as gan_run

    rd = RunDir(tmp_path / "run")
    (rd.path / "metrics.jsonl").mkdir(parents=True)  # a folder where the file should be: open() refuses like a full disk
    with pytest.raises(StorageError, match=f"^appending to {rd.metrics_path}: Is a directory$"):
        rd.log_metrics({"step": 1})
    (tmp_path / "clf").mkdir()
    (tmp_path / "clf" / "config.json").write_text("{}")
    monkeypatch.setattr(gan_run.shutil, "copyfile", _enospc)  # copytree collects it into a shutil.Error
    with pytest.raises(StorageError, match=f"^copying {tmp_path / 'clf'} into {rd.path / 'classifier'}: No space left on device$"):
        gan_run.copy_into_run(str(tmp_path / "clf"), rd.path / "classifier")
    assert not list(rd.path.glob(outdir.TEMP_PREFIX + "*"))  # the half-made copy is gone


# ---- refused before --out exists; train-encoder's lock ---------------------------------------------------


@pytest.mark.parametrize("oracle, says", [("afile", "not a TorchScript file"), ("nothere", "not found"),
                                          ("clf_bad", "config.json: field arch_kwargs.image_size: -4 is too small")])
def test_an_oracle_that_is_no_classifier_is_refused_before_out_exists(runs, tmp_path, capsys, oracle, says):
    (tmp_path / "afile").write_text("not a classifier\n")
    _edited(runs / "clf", tmp_path / "clf_bad", "config.json", lambda c: c["arch_kwargs"].update(image_size=-4))
    out = tmp_path / "gan"
    assert main(["train", str(runs / "data"), "--classifier", str(runs / "clf"), "--oracle", str(tmp_path / oracle), "--out", str(out),
                 "--steps", "1", "--batch-size", "4", "--quiet"]) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"medxgan: error: --oracle {tmp_path / oracle}: ") and says in line, line
    assert not out.exists()


ENCODER_HOLDER = textwrap.dedent("""
    import sys, time
    from medxgan.runtime.outdir import claim_out
    claim_out(sys.argv[1], "medxgan-encoder", None)
    print("locked", flush=True)
    time.sleep(60)
""")


def test_train_encoder_holds_the_lock_of_run_encoder(runs, tmp_path, capsys):
    gan = tmp_path / "gan"
    shutil.copytree(runs / "gan", gan)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    holder = subprocess.Popen([sys.executable, "-c", ENCODER_HOLDER, str(gan / "encoder")], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["train-encoder", str(gan), "--steps", "1", "--batch-size", "4", "--quiet"]) == 2
        line = _one_error_line(capsys)
        assert f"{gan / 'encoder'}: in use by another medxgan process (PID {holder.pid})" in line, line
        assert not (gan / "encoder" / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_train_encoder_refused_later_leaves_no_encoder_folder(runs, tmp_path, capsys):
    """The claim of RUN/encoder is undone when the command is refused after it (here: no such data set)."""
    gan = tmp_path / "gan"
    shutil.copytree(runs / "gan", gan)
    assert main(["train-encoder", str(gan), "--data", str(tmp_path / "nodata"), "--steps", "1", "--batch-size", "4", "--quiet"]) == 2
    _one_error_line(capsys)
    assert not (gan / "encoder").exists()


# ---- classifier sizes and a classifier that learned nothing ---------------------------------------------


def test_resnet_small_at_one_pixel_is_refused_up_front(runs, tmp_path, capsys):
    out = tmp_path / "clf"
    assert main(["train-classifier", str(runs / "data"), "--arch", "resnet-small", "--size", "1", "--out", str(out)]) == 2
    assert "--size 1: architecture resnet-small needs inputs of at least 16x16 pixels" in _one_error_line(capsys)
    assert not out.exists()


def test_a_classifier_with_validation_auc_one_half_warns_and_records_it(tmp_path, capsys):
    """Every image the same grey: any network scores them all alike, so the validation AUC is exactly 0.5."""
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        for cls in ("negative", "positive"):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((16, 16), 100, np.uint8)).save(tmp_path / "data" / split / cls / f"{i}.png")
    out = tmp_path / "clf"
    # pytest records warnings itself (the CLI's one-line stderr form is not printed under it), so read the record
    with pytest.warns(UserWarning, match="validation AUC 0.500 at the end of training, no better than chance: it learned nothing"):
        assert main(["train-classifier", str(tmp_path / "data"), "--arch", "resnet-small", "--size", "16", "--out", str(out),
                     "--epochs", "1", "--batch-size", "4", "--no-augment"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["best_val_auc"] == 0.5 and len(config["warnings"]) == 1 and "learned nothing" in config["warnings"][0]
