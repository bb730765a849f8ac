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
from medxgan.translate.train import TranslateConfig

TINY = dict(size=32, ngf=8, ndf=8, blocks=1, pool_size=2, samples=2, log_every=1)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fa")
    synthesize_fundus_angio(root, n=10, size=32, seed=3, abnormal_frac=0.5, test_frac=0.2, preview=False)
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
