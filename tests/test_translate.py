"""CycleGAN fundus <-> angiogram: networks, schedule, image pool, resume, apply, evaluate, CLI errors.

Tiny models (ngf 8, one residual block, 32 px, a handful of images) so the file runs in well under a minute.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medxgan.cli import main
from medxgan.data.phantoms.fundus import synthesize_fundus_angio
from medxgan.runtime.runs import RunDir
from medxgan.translate import (
    ImagePool, PatchDiscriminator, ResnetGenerator, apply_translation, evaluate_translation, lr_at_epoch,
    schedule_text, ssim, train_cyclegan,
)
from medxgan.translate.run import TranslateConfig
from test_run_lifecycle import assert_common_shape

TINY = dict(size=32, ngf=8, ndf=8, blocks=1, pool_size=2, samples=2, log_every=1)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    import shutil

    root = tmp_path_factory.mktemp("fa")
    synthesize_fundus_angio(root, n=10, size=32, seed=3, abnormal_frac=0.5, test_frac=0.2, preview=False)
    for s in ("A", "B"):  # a paired validation split (here the test pairs: the tests only check the mechanics)
        shutil.copytree(root / f"test{s}", root / f"val{s}")
    return root


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    """A finished 2-epoch run trained through the CLI (also the reference for the resume test)."""
    out = tmp_path_factory.mktemp("run") / "straight"
    rc = main(["translate", "train", str(data), "--out", str(out), "--size", "32", "--ngf", "8", "--ndf", "8",
               "--blocks", "1", "--pool-size", "2", "--epochs", "1", "--epochs-decay", "1", "--device", "cpu"])
    assert rc == 0
    return out


# ---- networks ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("upsample", ["resize", "transpose"])
def test_generator_shapes_3_to_1_and_back(upsample):
    g_fa = ResnetGenerator(3, 1, ngf=8, blocks=1, upsample=upsample)
    g_fundus = ResnetGenerator(1, 3, ngf=8, blocks=1, upsample=upsample)
    x = torch.rand(2, 3, 36, 28) * 2 - 1
    y = g_fa(x)
    assert y.shape == (2, 1, 36, 28) and y.abs().max() <= 1
    assert g_fundus(y).shape == (2, 3, 36, 28)


def test_patch_discriminator_70px_receptive_field():
    d = PatchDiscriminator(1, ndf=8)
    assert d(torch.zeros(1, 1, 70, 70)).shape == (1, 1, 6, 6)
    assert d(torch.zeros(1, 1, 128, 128)).shape == (1, 1, 14, 14)
    # receptive field (instance norm's global statistics aside): one output sees a 70x70 window
    for i, m in enumerate(d.model):
        if isinstance(m, torch.nn.InstanceNorm2d):
            d.model[i] = torch.nn.Identity()
    x = torch.zeros(1, 1, 140, 140, requires_grad=True)
    d(x)[0, 0, 8, 8].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    cols = torch.nonzero(x.grad[0, 0].abs().sum(0)).flatten()
    assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70


def test_identity_loss_off_across_channels():
    assert not TranslateConfig(size=32).finalise().use_identity
    assert TranslateConfig(size=32, channels_b=3).finalise().use_identity


# ---- schedule ---------------------------------------------------------------------------------------
def test_lr_schedule_boundaries():
    lr = 2e-4
    assert lr_at_epoch(1, lr, 3, 3) == lr
    assert lr_at_epoch(3, lr, 3, 3) == lr  # last constant epoch
    assert lr_at_epoch(4, lr, 3, 3) == pytest.approx(lr * 3 / 4)  # first decay epoch
    assert lr_at_epoch(6, lr, 3, 3) == pytest.approx(lr / 4)  # last epoch
    assert lr_at_epoch(7, lr, 3, 3) == 0.0
    assert lr_at_epoch(5, lr, 5, 0) == lr
    text = schedule_text(TranslateConfig(size=32, epochs=100).finalise())
    assert text == "epochs 1-100 constant lr 0.0002, 101..200 linear decay to 0; total 200 epochs"
    assert text.count("total") == 1
    assert TranslateConfig(size=32, epochs=5).finalise().load_size == 36  # round(32 * 286 / 256)
    assert TranslateConfig(size=256).finalise().load_size == 286


# ---- image pool -------------------------------------------------------------------------------------
def test_pool_size_zero_passes_through():
    pool = ImagePool(0)
    x = torch.randn(3, 1, 4, 4)
    assert pool.query(x) is x and len(pool) == 0


def test_pool_fills_then_mixes_deterministically():
    imgs = [torch.full((1, 1, 1, 1), float(i)) for i in range(40)]
    p1, p2 = ImagePool(5, seed=7), ImagePool(5, seed=7)
    for i in range(5):  # before full: returns the input, stores it
        assert torch.equal(p1.query(imgs[i]), imgs[i])
        p2.query(imgs[i])
    assert len(p1) == 5
    outs1 = [p1.query(imgs[i]).item() for i in range(5, 40)]
    outs2 = [p2.query(imgs[i]).item() for i in range(5, 40)]
    assert outs1 == outs2  # same seed, same choices
    new = sum(o == i for o, i in zip(outs1, range(5, 40)))
    assert 5 < new < 30  # about half new, half from the history
    assert all(o <= i for o, i in zip(outs1, range(5, 40)))  # only images seen before
    # the state round-trips (buffer and RNG)
    p3 = ImagePool(5, seed=0)
    p3.load_state_dict(p1.state_dict())
    assert [p3.query(imgs[0]).item() for _ in range(10)] == [p1.query(imgs[0]).item() for _ in range(10)]


# ---- training and resume ----------------------------------------------------------------------------
def _weights(path: Path) -> dict[str, torch.Tensor]:
    state = RunDir(path).load_checkpoint()["trainer"]
    return {f"{n}.{k}": v for n, sd in state["nets"].items() for k, v in sd.items()}


def test_run_layout(run):
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["kind"] == "cyclegan" and cfg["channels"] == {"fundus": 3, "angiogram": 1}
    assert cfg["identity_loss"] is False and cfg["train"]["load_size"] == 36
    assert (run / "G_fa.safetensors").is_file() and (run / "G_fundus.safetensors").is_file()
    assert (run / "samples" / "epoch_001.png").is_file() and (run / "samples" / "epoch_002.png").is_file()
    rows = RunDir(run).read_metrics()
    assert rows and rows[-1]["epoch"] == 2 and rows[-1]["lr"] == pytest.approx(1e-4)
    # checkpoint choice: last, EMA and best weights side by side; validation scores logged per epoch
    for w in ("G_fa", "G_fundus", "G_fa_ema", "G_fundus_ema", "G_fa_best", "G_fundus_best"):
        assert (run / f"{w}.safetensors").is_file(), w
    epochs = [r for r in rows if "epoch_loss_G" in r]
    assert [r["step"] for r in epochs] == [4, 8]
    for r in epochs:
        assert {"val_ssim_fa", "val_psnr_fa", "val_ssim_fundus", "val_psnr_fundus", "val_ssim_fa_ema", "val_best_epoch"} <= set(r)
    best = max(epochs, key=lambda r: r["val_ssim_fa"])
    assert cfg["validation"]["pairs"] == 2 and cfg["weights_kept"] == ["last", "ema", "best"]
    done = json.loads((run / "config.json").read_text())
    assert done["weights"]["best"]["epoch"] == best["epoch"] and done["weights"]["best"]["val_ssim_fa"] == pytest.approx(best["val_ssim_fa"])
    assert done["weights"]["ema"]["updates"] == 8 and done["weights"]["last"]["step"] == 8
    assert_common_shape(done, "cyclegan")  # runtime.run's config.json shape
    assert set(done["fingerprints"]) == {"G_fa", "G_fundus", "G_fa_ema", "G_fundus_ema", "G_fa_best", "G_fundus_best"}
    assert done["steps_done"] == done["steps"] == 8 and {"loss_G", "val_ssim_fa"} <= set(done["metrics"])
    last, ema = RunDir(run).load_weights("G_fa"), RunDir(run).load_weights("G_fa_ema")
    assert last.keys() == ema.keys() and not all(torch.equal(last[k], ema[k]) for k in last)


def test_train_cyclegan_takes_a_config_object(data, tmp_path):
    """The library takes the TranslateConfig (keywords override its fields); config.json stores it as ``train``."""
    from dataclasses import asdict

    cfg = TranslateConfig(size=32, ngf=8, ndf=8, blocks=1, pool_size=2, epochs=1, epochs_decay=0, samples=0, ema_decay=0.0)
    res = train_cyclegan(data, tmp_path / "r", cfg, seed=4, device="cpu", quiet=True)
    stored = json.loads((tmp_path / "r" / "config.json").read_text())
    expected = asdict(TranslateConfig(**{**asdict(cfg), "seed": 4}).finalise())
    assert res["finished"] and stored["train"] == expected and stored["status"] == "finished"


def test_ema_warmup_follows_torch_ema_with_tf_rule():
    """The EMA is torch's AveragedModel; the decay of the n-th update is min(decay, (1 + n) / (10 + n))."""
    from torch.optim.swa_utils import AveragedModel

    from medxgan.translate.trainer import ema_multi_avg_fn

    net = torch.nn.Linear(1, 1, bias=False)
    avg = AveragedModel(net, multi_avg_fn=ema_multi_avg_fn(0.5))
    expect = None
    for n, w in enumerate([1.0, 2.0, 4.0, 8.0, 16.0]):
        net.weight.data.fill_(w)
        avg.update_parameters(net)
        d = min(0.5, (1 + n) / (10 + n))
        expect = w if expect is None else d * expect + (1 - d) * w  # n = 0: a copy
        assert avg.module.weight.item() == pytest.approx(expect)


@pytest.mark.parametrize("stop_at", [4, 3])  # 4 = end of epoch 1, 3 = mid-epoch (4 steps per epoch)
def test_resume_is_bitwise_identical(data, run, tmp_path, stop_at):
    out = tmp_path / "resumed"
    opts = dict(TINY, epochs=1, epochs_decay=1, device="cpu", quiet=True)
    opts.pop("samples"), opts.pop("log_every")
    first = train_cyclegan(data, out, stop_after_steps=stop_at, **opts)
    assert first["finished"] is False and first["steps"] == stop_at
    assert not (out / "G_fa.safetensors").exists()
    second = train_cyclegan(data, out, resume=True, device="cpu", quiet=True)
    assert second["finished"] and second["steps"] == 8
    a, b = _weights(run), _weights(out)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = RunDir(run).load_checkpoint()["trainer"], RunDir(out).load_checkpoint()["trainer"]
    assert torch.equal(ra["pool_fa"]["images"], rb["pool_fa"]["images"])
    # the EMA and the best-epoch generators resume exactly too (state and the written files)
    for k in ("G_fa", "G_fundus"):
        assert ra["ema"][k].keys() == rb["ema"][k].keys() and all(torch.equal(ra["ema"][k][n], rb["ema"][k][n]) for n in ra["ema"][k])
        assert all(torch.equal(ra["best"][k][n], rb["best"][k][n]) for n in ra["best"][k])
        for w in (k, f"{k}_ema", f"{k}_best"):
            wa, wb = RunDir(run).load_weights(w), RunDir(out).load_weights(w)
            assert all(torch.equal(wa[n], wb[n]) for n in wa), w
    assert (ra["best"]["epoch"], ra["best"]["val_ssim_fa"]) == (rb["best"]["epoch"], rb["best"]["val_ssim_fa"])
    va = [{k: v for k, v in r.items() if k.startswith("val_")} for r in RunDir(run).read_metrics() if "val_ssim_fa" in r]
    vb = [{k: v for k, v in r.items() if k.startswith("val_")} for r in RunDir(out).read_metrics() if "val_ssim_fa" in r]
    assert len(va) == 2 and va == vb
    for k in ra["opt_g"]["state"]:
        assert torch.equal(ra["opt_g"]["state"][k]["exp_avg_sq"], rb["opt_g"]["state"][k]["exp_avg_sq"])
    assert [r["step"] for r in RunDir(out).read_metrics() if "epoch_loss_G" in r] == [4, 8]


def test_existing_run_needs_resume_and_fixed_architecture(data, run):
    with pytest.raises(Exception, match="already holds a run"):
        train_cyclegan(data, run, device="cpu", quiet=True, **TINY)
    with pytest.raises(Exception, match=r"cannot resume with other settings: ngf 16 \(the run has 8\)"):
        train_cyclegan(data, run, resume=True, ngf=16, device="cpu", quiet=True)


# ---- apply ------------------------------------------------------------------------------------------
def test_apply_odd_size_keeps_size_and_writes_gray(run, tmp_path):
    rgb = (np.random.default_rng(0).random((37, 29, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "odd.png")
    (tmp_path / "folder" / "sub").mkdir(parents=True)
    Image.fromarray(rgb[:20, :24]).save(tmp_path / "folder" / "sub" / "b.jpg")
    written = apply_translation([tmp_path / "odd.png", tmp_path / "folder"], run, "fundus2angio", tmp_path / "out", device="cpu", quiet=True)
    assert [p.relative_to(tmp_path / "out").as_posix() for p in written] == ["odd.png", "sub/b.png"]
    with Image.open(written[0]) as im:
        assert im.mode == "L" and im.size == (29, 37)
    # tiled = same size; fundus direction gives RGB
    back = apply_translation([written[0]], run, "angio2fundus", tmp_path / "back", tile=16, device="cpu", quiet=True)
    with Image.open(back[0]) as im:
        assert im.mode == "RGB" and im.size == (29, 37)


def test_tiled_translation_matches_whole_image_for_pointwise_model():
    from medxgan.translate.apply import translate

    g = torch.nn.Conv2d(3, 1, 1)  # pointwise: tiling must not change the result at all
    x = torch.randn(1, 3, 50, 70)
    assert torch.allclose(translate(g, x, tile=24, overlap=8), translate(g, x), atol=1e-5)


def test_cli_errors_are_one_line_exit_2(run, tmp_path, capsys):
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "gray.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    for name, expect in [("gray.png", "expects 3-channel colour fundus, got 1 channel: "), ("broken.png", "broken.png")]:
        rc = main(["translate", "apply", str(tmp_path / name), "--run", str(run), "--direction", "fundus2angio",
                   "--out", str(tmp_path / "o"), "--device", "cpu"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and expect in err[0], err
    rc = main(["translate", "apply", str(tmp_path / "gray.png"), "--run", str(tmp_path / "nope"), "--direction",
               "fundus2angio", "--out", str(tmp_path / "o")])
    assert rc == 2


def test_weights_choice_in_apply_and_evaluate(data, run, paired_run, paired_data, tmp_path, capsys):
    """--weights last|ema|best picks the file and the output says which; a missing choice is one line, exit 2."""
    from medxgan.translate.run import load_generator

    for w in ("last", "ema", "best"):
        g, _ = load_generator(run, "fundus2angio", "cpu", w)
        want = RunDir(run).load_weights({"last": "G_fa", "ema": "G_fa_ema", "best": "G_fa_best"}[w])
        assert all(torch.equal(g.state_dict()[k], want[k]) for k in want)
    img = sorted((data / "testA").iterdir())[0]
    rc = main(["translate", "apply", str(img), "--run", str(run), "--direction", "fundus2angio", "--out", str(tmp_path / "o"),
               "--weights", "best", "--device", "cpu"])
    assert rc == 0 and "with the best (epoch " in capsys.readouterr().out
    res = evaluate_translation(data, run, tmp_path / "ev", device="cpu", weights="ema")
    assert res["weights"] == "ema" and res["weights_used"].startswith("ema (exponential moving average")
    assert "Weights: ema" in (tmp_path / "ev" / "results.md").read_text()
    # the paired test run had no valA/valB: no best weights
    for cmd in (["apply", str(img), "--run", str(paired_run), "--direction", "fundus2angio", "--out", str(tmp_path / "o2")],
                ["evaluate", str(paired_data), "--run", str(paired_run), "--out", str(tmp_path / "ev2")]):
        rc = main(["translate", *cmd, "--weights", "best", "--device", "cpu"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "no G_fa_best.safetensors (the run had no validation split" in err[0], err
        assert "--weights last or ema" in err[0]
    assert not (tmp_path / "o2").exists() and not (tmp_path / "ev2").exists()


# ---- evaluate ---------------------------------------------------------------------------------------
def test_ssim_basics():
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)
    assert (ssim(x, torch.rand(2, 3, 32, 32)) < 0.2).all()
    # masked: only the pixels inside the mask count
    y = x.clone()
    y[..., 16:] = torch.rand(2, 3, 32, 16)
    mask = torch.zeros(2, 1, 32, 32)
    mask[..., :8] = 1
    assert torch.allclose(ssim(x, y, mask=mask), torch.ones(2), atol=1e-6)
    assert (ssim(x, y) < 0.8).all()


def test_evaluate_writes_results(data, run, tmp_path):
    res = evaluate_translation(data, run, tmp_path / "eval", device="cpu")
    assert res["n_pairs"] == 2
    for d in ("fundus2angio", "angio2fundus"):
        assert set(res["metrics"][d]) == {"ssim", "psnr", "mae", "ssim_fov"}
    assert set(res["metrics"]["cycle_fundus"]) == {"l1", "psnr"}
    assert res["skipped"]["kid"].startswith("skipped:")
    for f in ("results.json", "results.md", "side_by_side.png"):
        assert (tmp_path / "eval" / f).is_file()


# ---- paired mode (pix2pix-style) --------------------------------------------------------------------
@pytest.fixture(scope="module")
def paired_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fa_paired")
    synthesize_fundus_angio(root, n=8, size=32, seed=4, abnormal_frac=0.5, test_frac=0.25, preview=False, paired=True)
    return root


@pytest.fixture(scope="module")
def paired_run(paired_data, tmp_path_factory) -> Path:
    """A finished 2-epoch paired run (6 pairs = 6 steps per epoch) trained through the CLI."""
    out = tmp_path_factory.mktemp("prun") / "straight"
    rc = main(["translate", "train", str(paired_data), "--out", str(out), "--paired", "--size", "32", "--ngf", "8", "--ndf", "8",
               "--blocks", "1", "--epochs", "1", "--epochs-decay", "1", "--device", "cpu"])
    assert rc == 0
    return out


def test_paired_synth_writes_same_names(paired_data):
    names = lambda d: sorted(p.name for p in (paired_data / d).iterdir())  # noqa: E731
    assert names("trainA") == names("trainB") and len(names("trainA")) == 6


def test_paired_run_layout_and_losses(paired_data, paired_run):
    cfg = json.loads((paired_run / "config.json").read_text())
    assert cfg["train"]["paired"] is True and cfg["train"]["pool_size"] == 0 and cfg["train"]["lambda_l1"] == 100
    assert cfg["mode"].startswith("paired") and cfg["n_train"] == {"fundus": 6, "angiogram": 6}
    rows = RunDir(paired_run).read_metrics()
    assert rows[-1]["step"] == 12 and "loss_l1_fa" in rows[-1] and "loss_cycle_fa" not in rows[-1]
    state = RunDir(paired_run).load_checkpoint()["trainer"]["nets"]
    assert state["D_fa"]["model.0.weight"].shape[1] == 4 and state["D_fundus"]["model.0.weight"].shape[1] == 4  # conditional
    res = evaluate_translation(paired_data, paired_run, paired_run.parent / "eval", device="cpu")  # the generators are the usual ones
    assert res["n_pairs"] == 2 and set(res["metrics"]["fundus2angio"]) == {"ssim", "psnr", "mae", "ssim_fov"}


def test_paired_pair_shares_crop_and_flip(tmp_path):
    """A pair is cropped and flipped alike: B is A's luminance, so after sampling it still is."""
    from medxgan.translate.images import Sampler, find_pairs, load_pairs
    from medxgan.translate.trainer import CycleGANTrainer

    rng = np.random.default_rng(0)
    for d in ("trainA", "trainB"):
        (tmp_path / d).mkdir()
    for i in range(3):
        rgb = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
        Image.fromarray(rgb).save(tmp_path / "trainA" / f"s{i}.png")
        Image.fromarray(rgb).convert("L").save(tmp_path / "trainB" / f"s{i}.png")
    cfg = TranslateConfig(size=32, crop=28, paired=True, ngf=8, ndf=8, blocks=1).finalise()
    pairs = find_pairs(tmp_path)
    assert [(a.name, b.name) for a, b in pairs] == [("s0.png", "s0.png"), ("s1.png", "s1.png"), ("s2.png", "s2.png")]
    a, b = load_pairs(pairs, cfg)
    s = Sampler(torch.cat([a, b], 1), cfg)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        x = s.batch(torch.tensor([0, 1, 2]), gen)
        lum = (x[:, 0] * 0.299 + x[:, 1] * 0.587 + x[:, 2] * 0.114)
        assert (lum - x[:, 3]).abs().mean() < 0.05
    trainer = CycleGANTrainer(cfg, s, None, torch.device("cpu"))
    assert trainer.steps_per_epoch == 3 and set(trainer.step()) >= {"loss_l1_fa", "loss_l1_fundus", "loss_D_fa"}


def test_paired_resume_is_bitwise_identical_and_keeps_the_mode(paired_data, paired_run, tmp_path):
    out = tmp_path / "resumed"
    opts = dict(size=32, ngf=8, ndf=8, blocks=1, epochs=1, epochs_decay=1, device="cpu", quiet=True, paired=True)
    first = train_cyclegan(paired_data, out, stop_after_steps=5, **opts)  # mid-epoch 1 (6 steps per epoch)
    assert first["finished"] is False
    with pytest.raises(Exception, match=r"cannot resume with other settings: paired False \(the run has True\)"):
        train_cyclegan(paired_data, out, resume=True, paired=False, device="cpu", quiet=True)
    second = train_cyclegan(paired_data, out, resume=True, device="cpu", quiet=True)
    assert second["finished"] and second["steps"] == 12
    a, b = _weights(paired_run), _weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # an unpaired run cannot be resumed as a paired one either
    un = tmp_path / "unpaired"
    train_cyclegan(paired_data, un, stop_after_steps=2, **{**opts, "paired": False})
    with pytest.raises(Exception, match=r"paired True \(the run has False\)"):
        train_cyclegan(paired_data, un, resume=True, paired=True, device="cpu", quiet=True)


def test_paired_with_cycle_terms_and_csv(data, tmp_path):
    """--pairs CSV pairs any files (here the unpaired set's, by position); --paired-cycle adds the cycle terms."""
    a = sorted((data / "trainA").iterdir())
    b = sorted((data / "trainB").iterdir())
    csv = tmp_path / "pairs.csv"
    csv.write_text("fundus,angiogram\n" + "".join(f"trainA/{x.name},{y.resolve()}\n" for x, y in zip(a, b)))
    out = tmp_path / "csvrun"
    rc = main(["translate", "train", str(data), "--out", str(out), "--pairs", str(csv), "--paired-cycle", "--size", "32",
               "--ngf", "8", "--ndf", "8", "--blocks", "1", "--epochs", "1", "--epochs-decay", "0", "--device", "cpu"])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train"]["paired"] and cfg["n_train"]["fundus"] == min(len(a), len(b)) and "cycle" in cfg["mode"]
    assert "loss_cycle_fa" in RunDir(out).read_metrics()[-1]


def test_paired_mistakes_are_one_line_exit_2_before_any_work(data, paired_data, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(paired_data, broken)
    lonely = sorted((broken / "trainB").iterdir())[2]
    lonely.unlink()
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"trainA/{lonely.name},trainB/{lonely.name}\n")
    badcols = tmp_path / "cols.csv"
    badcols.write_text("a.png,b.png,c.png\n")
    cases = [
        ([str(data), "--paired"], "no file name is in both trainA"),  # unpaired names
        ([str(broken), "--paired"], f"no partner named {lonely.stem}.* in"),  # a missing partner
        ([str(broken), "--pairs", str(csv)], "row 1: angiogram file not found"),  # a CSV row naming a missing file
        ([str(broken), "--pairs", str(badcols)], "row 1: expected 2 columns"),
        ([str(broken), "--pairs", str(tmp_path / "nope.csv")], "--pairs"),
        ([str(data), "--paired-cycle"], "--paired-cycle: only with paired training"),
    ]
    for i, (args, expect) in enumerate(cases):
        out = tmp_path / f"o{i}"
        rc = main(["translate", "train", *args, "--out", str(out), "--size", "32", "--ngf", "8", "--device", "cpu"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and expect in err[0], (args, err)
        assert not out.exists()


# ---- FID / KID ----------------------------------------------------------------------------------------
def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).double()


def test_frechet_distance_closed_forms():
    """torchmetrics' FID (through runtime.quality) on identity features: a set with itself is 0; 1-D and
    diagonal Gaussians match the closed form |mu1 - mu2|^2 + sum_i (sigma1_i - sigma2_i)^2 (sample statistics, N - 1)."""
    from medxgan.runtime import quality

    x = torch.randn(50, 1, 1, 3, generator=torch.Generator().manual_seed(0))
    assert abs(quality.fid(_flat, 3, x, x)) < 1e-6
    # 1-D: real mean 1, std 2; fake mean -0.5, std 0.5 (exactly, as sample statistics)
    z = torch.tensor([-1.5, -0.5, 0.5, 1.5], dtype=torch.float64)
    z = z / z.std()
    real, fake = (1 + 2 * z).view(4, 1, 1, 1), (-0.5 + 0.5 * z).view(4, 1, 1, 1)
    assert quality.fid(_flat, 1, real, fake) == pytest.approx(1.5**2 + 1.5**2, rel=1e-6)
    # diagonal 2-D: orthogonal zero-mean columns give exactly diagonal sample covariances
    c1 = torch.tensor([1.0, -1, 1, -1], dtype=torch.float64)
    c2 = torch.tensor([1.0, 1, -1, -1], dtype=torch.float64)
    s = c1.std()  # both columns have this std
    real = torch.stack([0 + 1 * c1 / s, 3 + 4 * c2 / s], 1).view(4, 1, 1, 2)
    fake = torch.stack([1 + 2 * c1 / s, 3 + 1 * c2 / s], 1).view(4, 1, 1, 2)
    assert quality.fid(_flat, 2, real, fake) == pytest.approx((1 + 0) + ((1 - 2) ** 2 + (4 - 1) ** 2), rel=1e-6)


def test_kernel_distance_by_hand():
    """KID = unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3; one subset of all N images is deterministic."""
    from medxgan.runtime import quality

    r = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    f = torch.tensor([1.0, 3.0, 4.0], dtype=torch.float64)
    k = lambda a, b: (a[:, None] * b[None, :] + 1) ** 3  # noqa: E731  (d = 1)
    m = 3
    kxx, kyy, kxy = k(r, r), k(f, f), k(r, f)
    want = ((kxx.sum() - kxx.diag().sum()) + (kyy.sum() - kyy.diag().sum())) / (m * (m - 1)) - 2 * kxy.sum() / m**2
    mean, std = quality.kid(_flat, 1, r.view(3, 1, 1, 1), f.view(3, 1, 1, 1), subsets=1, subset_size=3)
    assert mean == pytest.approx(float(want), rel=1e-9) and std == 0.0


def test_domain_kid_is_deterministic_and_separates(tmp_path):
    from medxgan.translate.fidelity import DomainFeatures, fid_kid

    a, b = DomainFeatures(1), DomainFeatures(1)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    x = torch.rand(12, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    same, other = fid_kid(x, x, None), fid_kid(x, x * 0.3, None)
    assert "fid" not in same and abs(same["domain_kid_mean"]) < 0.2 * other["domain_kid_mean"]


class _StandIn(torch.nn.Module):
    """Takes the call of the TorchScript FID Inception (uint8 N x 3 x H x W, return_features) -> N x dim. Not
    Inception: it only exercises the loading path."""

    def __init__(self, dim: int = 2048):
        super().__init__()
        self.proj = torch.nn.Linear(6, dim)

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = img.float() / 255
        return self.proj(torch.cat([x.mean((2, 3)), x.std((2, 3))], 1))


def test_evaluate_with_torchscript_inception_file(data, run, tmp_path):
    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.script(_StandIn()).save(str(path))
    res = evaluate_translation(data, run, tmp_path / "ev", device="cpu", inception_weights=path)
    fid = res["fidelity"]
    for d in ("fundus2angio", "angio2fundus"):
        assert fid[d]["fid"] >= 0 and {"kid_mean", "kid_std", "domain_kid_mean", "domain_kid_std"} <= set(fid[d])
    assert fid["inception"].startswith("Inception-v3 2048-d pool features (TorchScript") and "NOT Inception" in fid["domain_kid"]
    assert "fid" not in res["skipped"]
    md = (tmp_path / "ev" / "results.md").read_text()
    assert "| fundus -> angiogram | " in md and "domain KID (not Inception)" in md


def test_inception_state_dict_through_torchmetrics_when_torch_fidelity_works(tmp_path, monkeypatch):
    """The pytorch-fid / torch-fidelity state-dict file goes through torchmetrics' NoTrainInceptionV3. Here a
    randomly initialised state dict that we save ourselves (no real weights in tests); skipped where
    torch-fidelity (with a working torchvision) is not installed."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except Exception:
        pytest.skip("torch-fidelity with a working torchvision is not installed (pip install 'medxgan[fid]')")
    from medxgan.translate.fidelity import load_inception

    torch.save({}, tmp_path / "empty.pth")
    with monkeypatch.context() as m:
        m.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, strict=True: None)
        state = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], str(tmp_path / "empty.pth")).state_dict()
    torch.save(state, tmp_path / "pt_inception-random.pth")
    feats = load_inception(tmp_path / "pt_inception-random.pth")
    assert feats(torch.rand(2, 1, 40, 40)).shape == (2, 2048)


def test_inception_file_mistakes_are_one_line_exit_2(data, run, tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(b"not a model at all")
    torch.save({"conv.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    torch.save({"Mixed_7c.branch_pool.conv.weight": torch.zeros(1), "fc.weight": torch.zeros(1)}, tmp_path / "shaped.pth")
    torch.jit.script(_StandIn(dim=512)).save(str(tmp_path / "small.pt"))
    try:
        import torch_fidelity  # noqa: F401
        shaped = "does not match torch-fidelity's Inception-v3"
    except Exception:
        shaped = "needs torch-fidelity"
    cases = [("missing.pt", "file not found"), ("junk.pt", "not an Inception-v3 FID weights file"),
             ("other.pth", "not the FID Inception-v3 state dict"), ("shaped.pth", shaped), ("small.pt", "not the 2048")]
    for name, expect in cases:
        out = tmp_path / f"ev_{name}"
        rc = main(["translate", "evaluate", str(data), "--run", str(run), "--out", str(out), "--inception-weights",
                   str(tmp_path / name), "--device", "cpu"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "--inception-weights" in err[0] and expect in err[0], (name, err)
        assert not out.exists()
