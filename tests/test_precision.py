"""GPU speed options on the CPU: amp off changes nothing, bf16 autocast runs and stays close to float32,
channels-last gives the same step, user errors name the flag."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import known_images, tiny_models
from torch import nn

from medxgan.classifiers import wrap_classifier
from medxgan.cli import flagged
from medxgan.gan import get_preset, train_gan
from medxgan.gan.inversion import invert
from medxgan.gan.train import GANTrainer
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.precision import check_amp, forward
from medxgan.runtime.runs import RunDir
from medxgan.runtime.seeding import seed_everything

TINY = dict(g_width=4, d_width=4, nz1=8, nz2=4)


pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n=8, size=32):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, size, size, generator=g) * 0.4 - 0.8
    y = torch.arange(n) % 2
    x[y == 1, :, size // 4 : size // 2, size // 4 : size // 2] = 0.9
    return x, y


def _classifier():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64, 2))
    return wrap_classifier(m, output="logits2")


def _preset(name="default"):
    return get_preset(name, channels=1, size=32, **TINY, diffaug="translation,cutout", r1_gamma=1.0, r1_every=2)


def _steps(name="default", steps=2, probe=False, **kw):
    clf = _classifier()
    seed_everything(0)
    t = GANTrainer(_preset(name), clf, "cpu", **kw)
    seen: list[tuple[bool, torch.dtype]] = []
    if probe:  # what the first transposed conv of G sees: autocast on? input dtype?
        conv = next(m for m in t.G.modules() if isinstance(m, nn.ConvTranspose2d))
        conv.register_forward_pre_hook(lambda m, a: seen.append((torch.is_autocast_enabled("cpu"), a[0].dtype)))
    seed_everything(1)
    x, y = _data()
    stats = [t.step(x, y) for _ in range(steps)]
    st = t.state_dict()
    params = {f"{p}.{k}": v for p in ("G", "D", "G_ema", "E") if p in st for k, v in st[p].items()}
    return t, params, stats, seen


def test_amp_off_is_the_float32_step_bit_for_bit():
    """amp="off" runs no autocast and no casts: the same bits as a trainer built without the option.
    (Checked against the trainer before the GPU options existed when they were added: bit-identical.)"""
    _, a, sa, seen = _steps(probe=True)
    _, b, sb, _ = _steps(amp="off")
    assert all(torch.equal(a[k], b[k]) for k in a) and sa == sb
    assert seen and all(s == (False, torch.float32) for s in seen)
    probe = object()
    assert forward("off", "cpu", lambda: probe) is probe  # a plain call


@pytest.mark.parametrize("name", ["default", "anchored"])
def test_bf16_step_runs_and_stays_close_to_float32(name):
    t, a, sa, seen = _steps(name, probe=True, amp="bf16")
    _, b, sb, _ = _steps(name)
    assert any(on and dtype == torch.bfloat16 for on, dtype in seen)  # autocast really ran
    assert all(v.dtype == b[k].dtype and torch.isfinite(v).all() for k, v in a.items())
    assert all(v.dtype == torch.float32 for k, v in a.items() if "running" in k)  # BN statistics in float32
    for group in t.opt_g.state.values():
        assert group["exp_avg"].dtype == torch.float32
    # Adam moves each weight by about lr per step, whatever the gradient's size: bf16 rounding may flip
    # the sign of a few small gradients (up to ~3 lr per step), but on average the steps must agree
    lr, n = t.opts.lr, len(sa)
    diffs = torch.cat([(a[k] - b[k]).abs().flatten() for k in a if a[k].is_floating_point()])
    assert diffs.max() <= 3 * lr * n and diffs.mean() <= 0.25 * lr * n, (float(diffs.max()), float(diffs.mean()))
    for s, r in zip(sa, sb):  # the losses (and R1) within 10%
        assert s.keys() == r.keys()
        assert all(abs(s[k] - r[k]) <= 0.1 * max(1.0, abs(r[k])) for k in s), (s, r)


@pytest.mark.parametrize("name", ["default", "joint"])
def test_channels_last_gives_the_same_step(name):
    t, a, sa, _ = _steps(name, channels_last=True)
    _, b, sb, _ = _steps(name)
    # the encoder's conv biases right before BatchNorm have a gradient that is mathematically zero: Adam turns
    # its float noise (memory-layout dependent) into steps of up to lr (see tests/test_distributed.py)
    noise = {f"E.{n}" for n, _ in t.E.named_parameters() if n.endswith("bias")} | {
        f"E.{n}" for n, _ in t.E.named_buffers() if "running_mean" in n} if t.E is not None else set()
    for k in a:
        if k in noise:
            assert (a[k] - b[k]).abs().max() <= 2 * t.opts.lr * len(sa) + 1e-5, k
        else:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5, msg=k)
    for s, r in zip(sa, sb):
        assert all(abs(s[k] - r[k]) <= 1e-5 * max(1.0, abs(r[k])) for k in s)


def test_inversion_bf16_close_to_float32():
    g, clf = tiny_models()
    x, _, _ = known_images(4, seed=5)
    kw = dict(steps=40, lr=0.1, restarts=1)
    ref = invert(g, clf, x, **kw)
    low = invert(g, clf, x, amp="bf16", **kw)
    assert low.z1.dtype == torch.float32 and torch.isfinite(low.psnr).all() and torch.isfinite(low.loss).all()
    assert (low.psnr - ref.psnr).abs().max() < 3.0, (low.psnr, ref.psnr)  # bf16 output rounding caps PSNR near 50 dB
    assert (low.prob_gap - ref.prob_gap).abs().max() < 0.05


def test_amp_errors_name_the_argument_and_the_cli_the_flag():
    assert check_amp(None, "cpu") == "off" and check_amp("BF16", "cpu") == "bf16"
    with pytest.raises(MedxganError, match="^amp fp32: choose off, bf16 or fp16") as exc:
        check_amp("fp32", "cpu")
    assert exc.value.arg == ("amp",) and flagged(exc.value).startswith("--amp fp32: choose off")
    with pytest.raises(MedxganError, match="^amp fp16: needs a CUDA device"):
        GANTrainer(_preset(), _classifier(), "cpu", amp="fp16")


def test_train_gan_records_and_resumes_the_options(tmp_path):
    out = tmp_path / "gan"
    x, y = _data(16)
    kw = dict(preset=_preset(), batch_size=8, oracle=False, device="cpu", quiet=True, monitor_samples=8, log_every=1)
    train_gan((x, y), _classifier(), out, steps=1, amp="bf16", channels_last=True, **kw)
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["amp"], cfg["channels_last"], cfg["compile"]) == ("bf16", True, False)
    train_gan((x, y), _classifier(), out, steps=2, resume=True, **kw)  # not given: the run's settings
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["amp"], cfg["channels_last"], cfg["steps_done"]) == ("bf16", True, 2)
    assert all(torch.isfinite(torch.tensor(v)).all() for r in RunDir(out).read_metrics() for k, v in r.items() if k in ("d_loss", "g_loss"))


def test_translate_bf16_and_channels_last(tmp_path):
    from medxgan.data.phantoms.fundus import synthesize_fundus_angio
    from medxgan.translate import train_cyclegan

    synthesize_fundus_angio(tmp_path / "fa", n=10, size=32, seed=3, abnormal_frac=0.5, test_frac=0.2, preview=False)
    kw = dict(size=32, ngf=8, ndf=8, blocks=1, pool_size=2, samples=0, batch_size=2, epochs=1, epochs_decay=0, log_every=1,
              device="cpu", quiet=True)
    runs = {}
    for name, extra in (("ref", {}), ("cl", {"channels_last": True}), ("bf16", {"amp": "bf16"})):
        train_cyclegan(tmp_path / "fa", tmp_path / name, **kw, **extra)
        runs[name] = [r for r in RunDir(tmp_path / name).read_metrics() if "loss_G" in r]
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["train"]["amp"] == "bf16"
    assert len(runs["ref"]) == 2
    for ref, cl, low in zip(runs["ref"], runs["cl"], runs["bf16"]):
        for k in ("loss_G", "loss_D_fa", "loss_D_fundus", "loss_cycle_fundus"):
            assert abs(cl[k] - ref[k]) <= 1e-5 * max(1.0, abs(ref[k])), (k, cl[k], ref[k])
            assert abs(low[k] - ref[k]) <= 0.05 * max(1.0, abs(ref[k])), (k, low[k], ref[k])
