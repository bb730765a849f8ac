"""Every user mistake is one line + exit 2 before any work (runtime.checks, cli.check_options); errors
in the user's own classifier code are one line naming the classifier (``--traceback`` shows the trace);
a non-finite model is never finished or measured; `explain` is resumable (issue 12)."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
import torch
from helpers import write_dataset

from helpers import one_error_line as _one_error_line
from medxgan.cli import main
from medxgan.runtime.errors import MedxganError, UserCodeError

pytestmark = pytest.mark.usefixtures("one_thread")

USER_MODULE = '''
import torch
from torch import nn

class Raiser(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3)
    def forward(self, x):
        raise ValueError("boom in forward")

class NaNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
    def forward(self, x):
        return self.conv(x).mean((2, 3)) * float("nan")

class Ignorer(nn.Module):  # its output is a parameter: no gradient w.r.t. the input
    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([0.0, 1.0]))
    def forward(self, x):
        return self.bias.expand(x.shape[0], 2)

class Detacher(nn.Module):  # depends on the input, but cuts the graph
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
    def forward(self, x):
        return self.conv(x).mean((2, 3)).detach()

class Five(nn.Module):  # five classes: not a binary classifier
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 5, 3)
    def forward(self, x):
        return self.conv(x).mean((2, 3))

class Scalar(Five):  # one number for the whole batch
    def forward(self, x):
        return self.conv(x).mean()

class Words(nn.Module):
    def forward(self, x):
        return ["positive"] * x.shape[0]

class EmptyDict(nn.Module):
    def forward(self, x):
        return {}

class Exits(nn.Module):
    def forward(self, x):
        raise SystemExit(3)

def raiser():
    return Raiser()

def five():
    return Five()

def scalar():
    return Scalar()

def words():
    return Words()

def empty_dict():
    return EmptyDict()

def exits():
    return Exits()

def ignorer():
    return Ignorer()

def detacher():
    return Detacher()

def nan():
    return NaNNet()

def broken_factory():
    raise RuntimeError("factory broke")
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    d = tmp_path / "usermods"
    d.mkdir()
    (d / "rel12mods.py").write_text(USER_MODULE)
    (d / "rel12broken.py").write_text('raise ValueError("module broke at import")\n')
    monkeypatch.syspath_prepend(str(d))
    yield "rel12mods"
    for m in ("rel12mods", "rel12broken"):
        sys.modules.pop(m, None)


# ---- options: ranges, finiteness, sizes, seeds (checked before anything is read or written) -------

BIG_SEED = str(2**70)
OPTION_CASES = [
    (["train-classifier", "DATA", "--out", "OUT", "--lr", "-1"], "--lr -1"),
    (["train-classifier", "DATA", "--out", "OUT", "--lr", "nan"], "--lr nan"),
    (["train-classifier", "DATA", "--out", "OUT", "--lr", "inf"], "--lr inf"),
    (["train-classifier", "DATA", "--out", "OUT", "--size", "0"], "--size 0"),
    (["train-classifier", "DATA", "--out", "OUT", "--seed", BIG_SEED], f"--seed {BIG_SEED}"),
    (["train-classifier", "DATA", "--out", "OUT", "--max-minutes", "nan"], "--max-minutes nan"),
    (["train", "DATA", "--classifier", "CLF", "--out", "OUT", "--lambda-cls", "nan"], "--lambda-cls nan"),
    (["train", "DATA", "--classifier", "CLF", "--out", "OUT", "--monitor-samples", "0"], "--monitor-samples 0"),
    (["train", "DATA", "--classifier", "CLF", "--out", "OUT", "--keep-last", "0"], "--keep-last 0"),
    (["train", "DATA", "--classifier", "CLF", "--out", "OUT", "--size", "0"], "--size 0"),
    (["explain", "x.png", "--gan", "RUN", "--out", "OUT", "--lig-steps", "0"], "--lig-steps 0"),
    (["explain", "x.png", "--gan", "RUN", "--out", "OUT", "--lr", "nan"], "--lr nan"),
    (["explain", "x.png", "--gan", "RUN", "--out", "OUT", "--lr", "-1"], "--lr -1"),
    (["evaluate", "DATA", "--gan", "RUN", "--out", "OUT", "--fractions", "2.0"], "--fractions 2.0"),
    (["evaluate", "DATA", "--gan", "RUN", "--out", "OUT", "--noise-sigmas", "inf"], "--noise-sigmas inf"),
    (["train-encoder", "RUN", "--lr", "nan"], "--lr nan"),
    (["train-encoder", "RUN", "--lr", "-1"], "--lr -1"),
    (["translate", "train", "DATA", "--out", "OUT", "--pool-size", "-1"], "--pool-size -1"),
    (["translate", "train", "DATA", "--out", "OUT", "--lr", "nan"], "--lr nan"),
    (["synth", "brain-mri", "--out", "OUT", "--size", "100000"], "--size 100000"),
    (["synth", "brain-mri", "--out", "OUT", "--seed", BIG_SEED], f"--seed {BIG_SEED}"),
    (["synth", "brain-mri", "--out", "OUT", "--size", "8000"], "--size 8000: procedural phantoms are at most 1024 px"),  # fits memory, takes days
    (["synth", "chest-xray", "--out", "OUT", "--size", "10"], "--size: need an integer of at least 32 pixels, got 10"),
    (["synth", "brain-mri", "--out", "OUT", "--n", "1"], "--n: need an integer of at least 2 images, got 1"),
    (["synth", "brain-mri", "--out", "OUT", "--shortcut", "2"], "--shortcut: need a probability in [0, 1], got 2.0"),
    (["synth", "brain-mri", "--out", "OUT", "--n", str(10**12), "--size", "1024"], f"--n {10**12} / --size 1024: the images need about"),
    (["report", "DIR", "--max-rows", "-1"], "--max-rows -1"),
]


@pytest.mark.parametrize("argv, named", OPTION_CASES, ids=[f"{a[0]}:{n}" for a, n in OPTION_CASES])
def test_bad_option_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, argv, named):
    out = tmp_path / "out"
    argv = [str(out) if a == "OUT" else str(tmp_path / a) if a in ("DATA", "RUN", "CLF", "DIR") else a for a in argv]
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert named in line
    assert not out.exists()


# ---- --out that cannot be written: one line naming the path ----------------------------------------


def _out_cases():
    cmds = {
        "train-classifier": ["train-classifier", "DATA", "--out"],
        "train": ["train", "DATA", "--classifier", "CLF", "--out"],
        "explain": ["explain", "x.png", "--gan", "RUN", "--out"],
        "evaluate": ["evaluate", "DATA", "--gan", "RUN", "--out"],
        "synth": ["synth", "brain-mri", "--out"],
        "translate": ["translate", "train", "DATA", "--out"],
    }
    for cmd, argv in cmds.items():
        for where in ("proc", "file", "below-file"):
            yield cmd, argv, where


@pytest.mark.parametrize("cmd, argv, where", list(_out_cases()))
def test_unwritable_out_is_one_line_exit_2(tmp_path, capsys, cmd, argv, where):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    out = {"proc": "/proc/medxgan-out", "file": str(afile), "below-file": str(afile / "sub")}[where]
    argv = [str(tmp_path / a) if a in ("DATA", "RUN", "CLF") else a for a in argv] + [out]
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert f"--out {out}" in line
    assert afile.read_text() == "keep me"


def test_os_error_on_a_user_path_is_one_line(tmp_path, capsys):
    """An OSError the checks could not foresee (here: a report target below a file) still gives one line naming the path."""
    from medxgan.cli import _one_line_os_error

    err = PermissionError(13, "Permission denied", str(tmp_path / "x"))
    assert _one_line_os_error(err) == f"{tmp_path / 'x'}: Permission denied"


def test_set_value_of_the_wrong_type_is_one_line(tmp_path, capsys):
    write_dataset(tmp_path / "data", n_per_class=2, size=64)
    (tmp_path / "clf").mkdir()
    argv = ["train", str(tmp_path / "data"), "--classifier", str(tmp_path / "clf"), "--out", str(tmp_path / "out"),
            "--preset", "fast", "--no-oracle", "--set", "ema_decay=abc", "--quiet"]
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert "--set ema_decay='abc'" in line and "a finite number" in line
    assert not (tmp_path / "out").exists()


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train-classifier", "DATA", "--out", "x", "--epochs", "many"])
    assert exc.value.code == 2
    _one_error_line(capsys)


# ---- the user's own classifier code -------------------------------------------------------------


@pytest.mark.parametrize("spec, what", [("rel12mods:broken_factory", "factory raised RuntimeError: factory broke"),
                                        ("rel12broken:net", "raised ValueError: module broke at import")])
def test_user_factory_or_module_that_raises_is_one_line(tmp_path, capsys, user_module, spec, what):
    argv = ["train", str(tmp_path / "data"), "--classifier", spec, "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert f"--classifier {spec}" in line and what in line and "--traceback" in line
    assert main(["--traceback", *argv]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_user_forward_that_raises_is_one_line(tmp_path, capsys, user_module, gan_run):
    from PIL import Image

    Image.fromarray(np.full((32, 32), 128, np.uint8)).save(tmp_path / "x.png")
    argv = ["explain", str(tmp_path / "x.png"), "--gan", str(gan_run), "--out", str(tmp_path / "out"), "--classifier",
            f"{user_module}:raiser", "--steps", "1", "--restarts", "1", "--frames", "2", "--quiet"]
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert f"classifier {user_module}:raiser raised ValueError: boom in forward while scoring a batch of 1" in line
    assert not (tmp_path / "out" / "x").exists()


def test_adapter_names_the_classifier_and_the_exception(user_module):
    import importlib

    from medxgan.classifiers import ClassifierAdapter

    ad = ClassifierAdapter(importlib.import_module(user_module).Raiser(), output="logit1", name="mine:net")
    with pytest.raises(UserCodeError, match=r"^classifier mine:net raised ValueError: boom in forward while scoring a batch of 2$"):
        ad.logit(torch.zeros(2, 1, 8, 8))


NO_GRADIENT = "its output does not depend on its input (no gradient)"


@pytest.mark.parametrize("factory", ["ignorer", "detacher"])
def test_classifier_without_input_gradient_is_refused_by_explain(tmp_path, capsys, user_module, gan_run, factory):
    from PIL import Image

    Image.fromarray(np.full((32, 32), 128, np.uint8)).save(tmp_path / "x.png")
    argv = ["explain", str(tmp_path / "x.png"), "--gan", str(gan_run), "--out", str(tmp_path / "out"), "--classifier",
            f"{user_module}:{factory}", "--steps", "1", "--restarts", "1", "--frames", "2", "--quiet"]
    assert main(argv) == 2
    assert f"--classifier {user_module}:{factory}: {NO_GRADIENT}" in _one_error_line(capsys)
    assert not (tmp_path / "out" / "x").exists()


def test_classifier_without_input_gradient_is_refused_by_gan_training(tmp_path, capsys, user_module):
    write_dataset(tmp_path / "data", n_per_class=2, size=64)
    argv = ["train", str(tmp_path / "data"), "--classifier", f"{user_module}:ignorer", "--out", str(tmp_path / "out"),
            "--preset", "fast", "--steps", "1", "--no-oracle", "--quiet"]
    assert main(argv) == 2
    assert f"--classifier {user_module}:ignorer: {NO_GRADIENT}" in _one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_classifier_without_input_gradient_is_refused_by_evaluate_before_any_output(tmp_path, capsys, user_module):
    from helpers import make_eval_data

    make_eval_data(tmp_path / "data", n_pos=2, n_neg=1)
    argv = ["evaluate", str(tmp_path / "data"), "--classifier", f"{user_module}:ignorer", "--out", str(tmp_path / "out"),
            "--methods", "saliency", "--no-max-sensitivity", "--no-plots", "--subset", "all"]
    assert main(argv) == 2
    assert f"--classifier {user_module}:ignorer: {NO_GRADIENT}" in _one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_no_gradient_guard_at_first_use_and_only_where_a_gradient_is_asked_for(user_module):
    import importlib

    from medxgan.classifiers import ClassifierAdapter

    ad = ClassifierAdapter(importlib.import_module(user_module).Ignorer(), output="logits2", name="mine:ign")
    x = torch.zeros(2, 1, 8, 8)
    assert torch.allclose(ad.logit(x), torch.ones(2))  # scoring without gradients is fine
    with torch.no_grad():
        ad.logit(x.clone().requires_grad_(True))
    with pytest.raises(MedxganError, match=rf"^classifier mine:ign: {re.escape(NO_GRADIENT)}"):
        ad.logit(x.clone().requires_grad_(True))
    ad.check_finite(x, grad=False)
    with pytest.raises(MedxganError, match=re.escape(NO_GRADIENT)):
        ad.check_finite(x)


def test_mean_of_the_wrong_length_is_one_line():
    from medxgan.classifiers import ClassifierAdapter, Preprocessing
    from medxgan.cli import flagged

    ad = ClassifierAdapter(torch.nn.Conv2d(1, 1, 1), output="logit1", preprocessing=Preprocessing(mean=[0.5, 0.5, 0.5], std=[1, 1, 1]))
    with pytest.raises(MedxganError) as exc:
        ad.logit(torch.zeros(2, 1, 8, 8))
    assert flagged(exc.value).startswith("--classifier-mean 0.5 0.5 0.5: 3 values for the 1-channel input")


# ---- non-finite models: never finished, never measured --------------------------------------------


def test_classifier_training_that_diverges_is_failed_with_its_last_checkpoint(tmp_path):
    from medxgan.classifiers.training import train_classifier
    from medxgan.runtime.loop import TrainingFailed, nonfinite_tensors
    from medxgan.runtime.runs import RunDir

    write_dataset(tmp_path / "data", n_per_class=4, size=64)
    with pytest.raises(TrainingFailed, match="the run is marked failed"):
        train_classifier(tmp_path / "data", tmp_path / "c", epochs=3, batch_size=4, lr=1e30, quiet=True)
    run = RunDir(tmp_path / "c")
    cfg = run.read_config()
    assert cfg["status"] == "failed" and "non-finite" in cfg["failure"]
    assert not (tmp_path / "c" / "model.safetensors").exists() and "test" not in cfg
    if run.latest_checkpoint() is not None:  # whatever was checkpointed before is intact and finite
        assert not nonfinite_tensors(run.load_checkpoint()["trainer"]["model"])


def test_loop_refuses_to_checkpoint_non_finite_weights(tmp_path):
    """A step whose own stats are finite but which poisoned the weights: failed, the last good checkpoint kept."""
    from medxgan.runtime.loop import Cadence, LoopOptions, TrainingFailed, train_loop
    from medxgan.runtime.runs import RunDir

    class Poisoned:
        def __init__(self):
            self.w, self.n = torch.zeros(2), 0

        def step(self):
            self.n += 1
            if self.n == 3:
                self.w += float("nan")
            return {"loss": 1.0}

        def state_dict(self):
            return {"w": self.w.clone(), "n": self.n}

        def load_state_dict(self, st):
            self.w, self.n = st["w"], st["n"]

    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.write_config("toy", status="running")
    with pytest.raises(TrainingFailed, match=r"non-finite weights/state \(w\) at step 4"):
        train_loop(Poisoned(), run, LoopOptions(total=6, cadence=Cadence(log_every=2, ckpt_every=2), quiet=True))
    assert run.read_config()["status"] == "failed"
    assert run.load_checkpoint_step() == 2 and torch.isfinite(run.load_checkpoint()["trainer"]["w"]).all()


def test_gan_training_refuses_a_classifier_with_nan_outputs(tmp_path, user_module):
    import importlib

    from medxgan.classifiers import ClassifierAdapter
    from medxgan.gan.train import train_gan

    write_dataset(tmp_path / "data", n_per_class=2, size=64)
    nan_clf = ClassifierAdapter(importlib.import_module(user_module).nan(), output="logits2", name="nanclf")
    with pytest.raises(MedxganError, match=r"^classifier nanclf: \d+ of \d+ outputs are not finite"):
        train_gan(tmp_path / "data", nan_clf, tmp_path / "g", preset="fast", steps=2, oracle=False, quiet=True, device="cpu")
    assert not (tmp_path / "g" / "generator.safetensors").exists()
    cfg = tmp_path / "g" / "config.json"
    assert not cfg.exists() or json.loads(cfg.read_text()).get("status") != "finished"


def test_explain_refuses_a_classifier_with_nan_outputs(tmp_path, capsys, user_module, gan_run):
    from PIL import Image

    Image.fromarray(np.full((32, 32), 128, np.uint8)).save(tmp_path / "x.png")
    argv = ["explain", str(tmp_path / "x.png"), "--gan", str(gan_run), "--out", str(tmp_path / "out"), "--classifier",
            f"{user_module}:nan", "--steps", "1", "--restarts", "1", "--frames", "2", "--quiet"]
    assert main(argv) == 2
    assert "outputs are not finite" in _one_error_line(capsys)


def test_roc_auc_of_non_finite_scores_is_nan():
    from medxgan.runtime.ranking import roc_auc

    assert np.isnan(roc_auc([0.1, float("nan"), 0.9, 0.2], [0, 1, 1, 0]))


# ---- resumable explain ------------------------------------------------------------------------------


def _files(root):
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "summary.json":
            rel = str(p.relative_to(root))
            if p.suffix == ".npz":
                with np.load(p) as z:
                    out[rel] = {k: z[k].tobytes() for k in z.files}
            elif p.suffix == ".json":
                d = json.loads(p.read_text())
                d.pop("dir", None)
                out[rel] = d
            else:
                out[rel] = p.read_bytes()
    return out


def test_killed_explain_continues_and_equals_an_uninterrupted_run(tmp_path, gan_run, monkeypatch):
    import medxgan.pipeline as pl
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(tmp_path / f"im{i}.png")
    files = [str(tmp_path / f"im{i}.png") for i in range(3)]
    mx = pl.MedXGAN.load(gan_run, device="cpu", steps=2, restarts=1)
    kw = dict(batch_size=1, frames=2, show_progress=False)
    mx.explain_files(files, tmp_path / "a", **kw)

    real = pl.write_explanation
    calls = {"n": 0}

    def dies_on_the_second(res, out_dir, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            real(res, out_dir, **k)  # the folder's files are written, but the run is killed before it is complete
            raise KeyboardInterrupt
        return real(res, out_dir, **k)

    monkeypatch.setattr(pl, "write_explanation", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        mx.explain_files(files, tmp_path / "b", **kw)
    assert (tmp_path / "b" / "im0").is_dir() and not (tmp_path / "b" / "im1").exists()  # complete or absent
    monkeypatch.setattr(pl, "write_explanation", real)
    summary = mx.explain_files(files, tmp_path / "b", **kw)
    assert summary["resumed"] == 1 and summary["n_images"] == 3
    # the killed temp folder is gone (medxgan's own marker stays: runtime.outdir)
    assert not [p for p in (tmp_path / "b").iterdir() if p.name.startswith(".") and p.name != ".medxgan-output.json"]
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    # other settings: recomputed, not kept
    assert mx.explain_files(files, tmp_path / "b", batch_size=1, frames=3, show_progress=False)["resumed"] == 0


# ---- malformed runs, newer runs, skipped files, missing masks ---------------------------------------


@pytest.mark.parametrize("config, named", [("[1, 2]", "holds a JSON list, not an object"),
                                           ('{"kind": "classifier"}', "field arch: missing (expected a string)"),
                                           ('{"kind": "classifier", "arch": "nope"}', "cannot build classifier architecture 'nope'"),
                                           ('{"kind": "classifier", "arch": "paper-cnn", "arch_kwargs": {"bogus": 1}}',
                                            "field arch_kwargs.bogus: unknown key")])
def test_malformed_classifier_run_is_one_line(tmp_path, capsys, config, named):
    (tmp_path / "clf").mkdir()
    (tmp_path / "clf" / "config.json").write_text(config)
    argv = ["evaluate", str(tmp_path / "data"), "--classifier", str(tmp_path / "clf"), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert str(tmp_path / "clf" / "config.json") in line and named in line
    assert not (tmp_path / "out").exists()


def test_run_from_a_newer_medxgan_warns_once(tmp_path):
    from medxgan.runtime.runs import RunDir

    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.config_path.write_text(json.dumps({"kind": "toy", "medxgan_version": "99.1.0"}))
    with pytest.warns(UserWarning, match="written by medxgan 99.1.0, newer than this medxgan"):
        run.read_config()


def test_skip_bad_and_missing_masks_are_reported(tmp_path):
    from medxgan.data import load_dataset

    write_dataset(tmp_path / "d", n_per_class=3, size=32)
    (tmp_path / "d" / "train" / "positive" / "bad.png").write_bytes(b"not a png")
    mdir = tmp_path / "d" / "masks" / "train" / "positive"
    mdir.mkdir(parents=True)
    from PIL import Image

    for i in range(2):  # positive 002 has no mask file
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(mdir / f"{i:03d}.png")
    with pytest.warns(UserWarning) as rec:
        ds = load_dataset(tmp_path / "d", split="train", skip_bad=True)
    msgs = [str(w.message) for w in rec]
    assert len(ds.skipped) == 1
    assert any("skipped 1 unreadable file(s)" in m and "bad.png" in m for m in msgs)
    assert any("1 positive image(s) have no mask file" in m and "002.png" in m for m in msgs)


# ---- resume with other settings: refused in one line naming each difference, the run untouched -----


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """Tiny finished runs to resume: a classifier (batch 4, no augmentation), a second classifier, a GAN
    (preset fast, 2 steps, batch 4) and its encoder; two data sets (about 30 s in all)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    write_dataset(root / "data", n_per_class=4, size=64)
    write_dataset(root / "data2", n_per_class=5, size=64)
    quiet = ["--epochs", "1", "--batch-size", "4", "--no-augment"]
    assert main(["train-classifier", str(root / "data"), "--out", str(root / "clf"), *quiet]) == 0
    assert main(["train-classifier", str(root / "data"), "--out", str(root / "clf2"), *quiet, "--seed", "1"]) == 0
    assert main(["train", str(root / "data"), "--classifier", str(root / "clf"), "--out", str(root / "gan"), "--preset", "fast",
                 "--steps", "2", "--batch-size", "4", "--no-oracle", "--log-every", "1", "--ckpt-every", "1", "--monitor-samples", "2",
                 "--quiet"]) == 0
    assert main(["train-encoder", str(root / "gan"), "--steps", "2", "--batch-size", "4", "--eval-images", "2", "--log-every", "1",
                 "--ckpt-every", "1", "--quiet"]) == 0
    return root


def _snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


RESUME_CASES = [
    (["train-classifier", "DATA", "--out", "CLF", "--resume", "--seed", "1"], "CLF", ["seed 1 (the run has 0)"]),
    (["train-classifier", "DATA", "--out", "CLF", "--resume", "--batch-size", "8"], "CLF", ["batch_size 8 (the run has 4)"]),
    (["train-classifier", "DATA", "--out", "CLF", "--resume", "--seed", "2", "--lr", "0.01"], "CLF",
     ["seed 2 (the run has 0)", "lr 0.01 (the run has 0.001)"]),
    (["train-classifier", "DATA2", "--out", "CLF", "--resume"], "CLF", ["data '"]),
    (["train", "DATA", "--classifier", "CLF", "--out", "GAN", "--resume", "--seed", "1"], "GAN", ["seed 1 (the run has 0)"]),
    (["train", "DATA", "--classifier", "CLF", "--out", "GAN", "--resume", "--batch-size", "8"], "GAN", ["batch_size 8 (the run has 4)"]),
    # the parser's default preset, given explicitly: a change too (it used to be dropped as "a default")
    (["train", "DATA", "--classifier", "CLF", "--out", "GAN", "--resume", "--preset", "default"], "GAN",
     ["preset.name 'default' (the run has 'fast')"]),
    (["train", "DATA", "--classifier", "CLF", "--out", "GAN", "--resume", "--set", "ema_decay=0.5"], "GAN",
     ["preset.name 'fast+ema_decay=0.5' (the run has 'fast')"]),
    (["train", "DATA2", "--classifier", "CLF", "--out", "GAN", "--resume"], "GAN", ["data '"]),
    (["train", "DATA", "--classifier", "CLF2", "--out", "GAN", "--resume"], "GAN", ["classifier '"]),
    (["train-encoder", "GAN", "--resume", "--seed", "1"], "GAN", ["seed 1 (the run has 0)"]),
    (["train-encoder", "GAN", "--resume", "--batch-size", "32"], "GAN", ["batch_size 32 (the run has 4)"]),
    (["train-encoder", "GAN", "--resume", "--data", "DATA2"], "GAN", ["data '"]),
]


@pytest.mark.parametrize("argv, run, named", RESUME_CASES, ids=[" ".join(a[:1] + a[4:]) for a, _, _ in RESUME_CASES])
def test_resume_with_other_settings_is_refused_and_leaves_the_run_untouched(trained_runs, capsys, argv, run, named):
    names = {"DATA": "data", "DATA2": "data2", "CLF": "clf", "CLF2": "clf2", "GAN": "gan"}
    argv = [str(trained_runs / names[a]) if a in names else a for a in argv]
    run_dir = trained_runs / names[run]
    before = _snapshot(run_dir)
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert "--resume " in line and "cannot resume with other settings" in line
    assert all(n in line for n in named), line
    assert _snapshot(run_dir) == before


def test_plain_resume_continues_a_run_started_with_other_than_the_default_options(trained_runs, tmp_path, capsys):
    """--resume alone takes the run's own settings (batch 4, no augmentation), it does not compare the parser's defaults."""
    import shutil

    shutil.copytree(trained_runs / "clf", tmp_path / "clf")
    assert main(["train-classifier", str(trained_runs / "data"), "--out", str(tmp_path / "clf"), "--resume", "--epochs", "2"]) == 0
    cfg = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert cfg["status"] == "finished" and cfg["settings"]["batch_size"] == 4 and cfg["resumes"][-1]["changed"] == {"epochs": [1, 2]}


# ---- the careless-user campaign's cases that were not one line + exit 2 (issue 12, second session) ------


def _campaign_files(tmp_path, gan_run):
    """The placeholders of CAMPAIGN_CASES -> paths (made here; each case takes well under a second)."""
    import shutil

    from PIL import Image

    Image.fromarray(np.full((32, 32), 128, np.uint8)).save(tmp_path / "x.png")
    write_dataset(tmp_path / "data", n_per_class=2, size=64)
    (tmp_path / "clfdir").mkdir()
    (tmp_path / "w.pt").write_bytes(b"")
    for name, edit in {"gan_netstr": lambda c: c.update(net="dcgan"),
                       "gan_badnet": lambda c: c["net"].update(size=-4),
                       "gan_noclf": lambda c: c.update(classifier={"source": str(tmp_path / "gone.pt")})}.items():
        shutil.copytree(gan_run, tmp_path / name)
        cfg = json.loads((tmp_path / name / "config.json").read_text())
        edit(cfg)
        (tmp_path / name / "config.json").write_text(json.dumps(cfg))
    paths = {n: tmp_path / n for n in ("x.png", "data", "clfdir", "w.pt", "gan_netstr", "gan_badnet", "gan_noclf")}
    return {**{k: str(v) for k, v in paths.items()}, "GAN": str(gan_run), "TS": str(gan_run.parent / "clf.pt")}


EXPLAIN = ["explain", "x.png", "--gan", "GAN", "--out", "OUT", "--steps", "1", "--restarts", "1", "--frames", "2", "--quiet"]
TRAIN = ["train", "data", "--classifier", "clfdir", "--out", "OUT", "--preset", "fast", "--steps", "1", "--no-oracle", "--quiet"]
CAMPAIGN_CASES = [
    # --set values out of range (ema_decay 2 trained on; lr -1 was the optimiser's traceback)
    (TRAIN + ["--set", "ema_decay=2"], ["--set ema_decay=2.0: ema_decay must be a finite number in [0, 1)"]),
    (TRAIN + ["--set", "lr=-1"], ["--set lr=-1.0: lr must be a finite number > 0"]),
    (TRAIN + ["--set", "r1_every=0"], ["--set r1_every=0: r1_every must be an integer >= 1"]),
    # classifier flags the given kind of classifier would silently ignore
    (TRAIN + ["--classifier-weights", "w.pt"], ["--classifier-weights", "only for a package.module:factory classifier"]),
    (TRAIN + ["--classifier-size", "32"], ["--classifier-size: not for a classifier run directory"]),
    (EXPLAIN + ["--classifier", "clfdir", "--classifier-mean", "0.5"], ["--classifier-mean: not for a classifier run directory"]),
    (EXPLAIN + ["--classifier", "TS", "--classifier-weights", "w.pt"], ["--classifier-weights", "TorchScript file"]),
    # sizes: paper-cnn's one size, a training batch that cannot fit (it hung)
    (["train-classifier", "data", "--out", "OUT", "--size", "32"], ["--size 32: architecture paper-cnn is built for 64x64"]),
    (["train-classifier", "data", "--out", "OUT", "--arch", "resnet-small", "--size", "8000"], ["--size 8000: needs about"]),
    # things found only after RUN was written, or named with a library name
    (TRAIN[:-2] + ["--quiet", "--oracle", "nope"], ["--oracle nope: not found"]),
    (["evaluate", "data", "--classifier", "TS", "--out", "OUT", "--split", "nope", "--methods", "saliency"], ["--split: unknown split 'nope'"]),
    # GAN runs with a malformed config / a classifier that is gone (were a bare 'network config: unknown keys [a, c, ...]')
    ([*EXPLAIN[:3], "gan_netstr", *EXPLAIN[4:]], ['gan_netstr/config.json: field net: "dcgan" is a string, expected an object']),
    ([*EXPLAIN[:3], "gan_badnet", *EXPLAIN[4:]], ["gan_badnet/config.json: field net.size: -4 is too small (at least 4)"]),
    ([*EXPLAIN[:3], "gan_noclf", *EXPLAIN[4:]], ["gan_noclf: the classifier it was trained against", "gone.pt", "pass the classifier with --classifier"]),
    # user classifiers of the wrong shape: the line names the classifier
    (EXPLAIN + ["--classifier", "rel12mods:five"], ["--classifier rel12mods:five: its output has shape (1, 5) for a batch of 1"]),
    (EXPLAIN + ["--classifier", "rel12mods:scalar"], ["--classifier rel12mods:scalar: its output has shape ()"]),
    (EXPLAIN + ["--classifier", "rel12mods:words"], ["--classifier rel12mods:words: unsupported output type str"]),
    (EXPLAIN + ["--classifier", "rel12mods:empty_dict"], ["--classifier rel12mods:empty_dict: returned an empty dict"]),
    (EXPLAIN + ["--classifier", "rel12mods:exits"], ["classifier rel12mods:exits raised SystemExit: 3", "--traceback"]),  # was exit code 3
]


@pytest.mark.parametrize("argv, named", CAMPAIGN_CASES, ids=[" ".join(a[:1] + a[-2:]) for a, _ in CAMPAIGN_CASES])
def test_campaign_case_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, user_module, gan_run, argv, named):
    files = _campaign_files(tmp_path, gan_run)
    out = tmp_path / "out"
    argv = [str(out) if a == "OUT" else files.get(a, a) for a in argv]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert all(n in line for n in named), line
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("results, named", [
    ("{}", "not the results of `medxgan evaluate`"),  # was an empty page that looked like a report
    ('{"methods": {"gradcam": 1}}', "not the results of `medxgan evaluate`"),
    ('{"methods": {"gradcam": {"metrics": 5}}}', "not the structure `medxgan evaluate` writes (AttributeError"),  # was a traceback
    ('{"methods": {"gradcam": {}}, "config": [1], "slices": "a"}', "not the structure `medxgan evaluate` writes"),
])
def test_report_of_a_foreign_results_json_is_one_line_and_writes_no_report(tmp_path, capsys, results, named):
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "results.json").write_text(results)
    assert main(["report", str(tmp_path / "ev")]) == 2
    line = _one_error_line(capsys)
    assert str(tmp_path / "ev" / "results.json") in line and named in line
    assert not (tmp_path / "ev" / "report").exists()
