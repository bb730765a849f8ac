"""Distributed training on CPU (gloo, 2 processes) equals single-process training on the same global batch.

One spawn of 2 worker processes runs every distributed scenario (GlobalBatchNorm2d, GANTrainer steps,
`train_gan` + a resume under another world size, a CycleGAN step) and writes its results to files;
the tests compare them with the same computation in this (single) process. One spawn, because each
worker pays the import of torch; tiny models (32 px, widths 4) keep the whole file well under a minute.

Tolerance: distributed and single-process runs differ only in the order of float sums (BatchNorm
statistics over ranks, DDP's gradient averaging, per-sample convolutions at another batch size), so
results agree to about 1e-7 relative; we assert rtol 1e-5, atol 1e-6 on parameters after Adam steps.
One exception: a conv bias directly followed by BatchNorm (in the encoder of the anchored and default presets) has a
gradient that is mathematically zero; its float noise (~1e-10) differs between the runs and Adam
normalises noise into steps of up to ~lr, so those biases (and the running mean of the BatchNorm
after them, which is all they affect: BatchNorm removes them in training mode) are only checked to
differ by no more than a few lr.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import small_conv_classifier, square_lesion_data
from medxgan.gan import get_preset, train_gan
from medxgan.gan.train import GANTrainer
from medxgan.runtime.distributed import GlobalBatchNorm2d, convert_global_batchnorm, shard
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.runs import RunDir
from medxgan.runtime.seeding import seed_everything
from medxgan.runtime.state import load_weights
from spawn_helpers import in_group, spawn_workers

WORLD = 2
TINY = dict(g_width=4, d_width=4, nz1=8, nz2=4)
RTOL, ATOL = 1e-5, 1e-6
GAN_BATCH = 8
TRANSLATE = dict(size=32, ngf=8, ndf=8, blocks=1, pool_size=2, samples=0, batch_size=2, epochs=1, epochs_decay=1)


pytestmark = pytest.mark.usefixtures("one_thread")


# ---- tiny fixtures (built identically in the workers and here) ---------------------------------------
def _tiny_data(n=32, size=32, channels=1, seed=0):
    return square_lesion_data(n, size, channels, seed)


def _tiny_classifier(seed=0):
    return small_conv_classifier(1, seed)


def _preset(name):
    # every stochastic part of a step switched on: DiffAugment (both), R1 (on step 2), EMA
    return get_preset(name, channels=1, size=32, **TINY, ema_decay=0.99, diffaug="translation,cutout", r1_gamma=1.0, r1_every=2)


def _bn_inputs():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 3, 5, 5, generator=g) * 2 + 1
    w_out = torch.randn(8, 3, 5, 5, generator=g)
    weight, bias = torch.randn(3, generator=g), torch.randn(3, generator=g)
    return x, w_out, weight, bias


def _bn_run(bn, x, w_out):
    """Two training-mode forwards (running stats move twice) and an R1-like double backward."""
    x = x.clone().requires_grad_(True)
    bn(x)
    y = bn(x)
    (gx,) = torch.autograd.grad((y * w_out).sum(), x, create_graph=True)
    ((y * w_out).sum() + gx.pow(2).sum()).backward()
    return {"y": y.detach(), "x_grad": x.grad, "w_grad": bn.weight.grad, "b_grad": bn.bias.grad,
            "running_mean": bn.running_mean, "running_var": bn.running_var, "nbt": bn.num_batches_tracked}


def _gan_steps(name, x, y, steps=2):
    clf = _tiny_classifier()
    seed_everything(0)
    trainer = GANTrainer(_preset(name), clf, "cpu")
    seed_everything(1)
    stats = [trainer.step(x, y) for _ in range(steps)]
    st = trainer.state_dict()
    return {f"{part}.{k}": v for part in ("G", "D", "G_ema", "E") if part in st for k, v in st[part].items()}, stats


def _train(out, steps, **kw):
    x, y = _tiny_data()
    return train_gan((x, y), _tiny_classifier(), out, preset=_preset("default"), steps=steps, batch_size=GAN_BATCH,
                     oracle=False, device="cpu", quiet=True, monitor_samples=16, log_every=3, ckpt_every=3, **kw)


def _train_translate(data, out, **kw):
    from medxgan.translate import train_cyclegan

    return train_cyclegan(data, out, device="cpu", quiet=True, stop_after_steps=2, **{**TRANSLATE, **kw})


# ---- the worker: every distributed scenario, results to files ----------------------------------------
def _worker(rank: int, port: int, root: str) -> None:
    root_p = Path(root)
    with in_group(rank, port, WORLD, root):
        # (a) GlobalBatchNorm2d on this rank's half of the batch
        x, w_out, weight, bias = _bn_inputs()
        bn = GlobalBatchNorm2d(3)
        with torch.no_grad():
            bn.weight.copy_(weight)
            bn.bias.copy_(bias)
        torch.save(_bn_run(bn, shard(x), shard(w_out)), root_p / f"bn_{rank}.pt")
        # (b) GANTrainer steps on this rank's half of the global batch
        xg, yg = _tiny_data(n=GAN_BATCH)
        for name in ("default", "joint", "anchored"):
            torch.save(_gan_steps(name, shard(xg), shard(yg)), root_p / f"step_{name}_{rank}.pt")
        # (c) train_gan with 2 processes for 3 steps (resumed by the test with 1 process); user errors
        _train(root_p / "gan_ws2", 3)
        errors = {}
        try:
            train_gan(_tiny_data(), _tiny_classifier(), root_p / "bad", steps=1, batch_size=5, oracle=False, quiet=True, device="cpu")
        except MedxganError as exc:
            errors["gan"] = str(exc)
        try:
            _train_translate(root_p / "fa", root_p / "bad_fa", batch_size=1)
        except MedxganError as exc:
            errors["translate"] = str(exc)
        (root_p / f"errors_{rank}.json").write_text(json.dumps(errors))
        # (d) CycleGAN: 2 steps (the image pools fill on step 1 and mix on step 2)
        _train_translate(root_p / "fa", root_p / "fa_ws2")


@pytest.fixture(scope="module")
def dist_root(tmp_path_factory) -> Path:
    from medxgan.data.phantoms.fundus import synthesize_fundus_angio

    root = tmp_path_factory.mktemp("dist")
    synthesize_fundus_angio(root / "fa", n=10, size=32, seed=3, abnormal_frac=0.5, test_frac=0.2, preview=False)
    t0 = time.perf_counter()
    spawn_workers(_worker, root, WORLD)
    print(f"distributed workers: {time.perf_counter() - t0:.1f} s")
    return root


def _zero_grad_biases(nets: dict[str, nn.Module | None]) -> set[str]:
    """Keys of conv biases followed by Batch/InstanceNorm (mathematically zero gradient) and of the
    running mean of that norm (the only thing such a bias changes)."""
    keys = set()
    for part, net in nets.items():
        mods = dict(net.named_modules()) if net is not None else {}
        names = list(mods)
        for a, b in zip(names, names[1:]):
            if isinstance(mods[a], (nn.Conv2d, nn.ConvTranspose2d)) and mods[a].bias is not None and isinstance(mods[b], (nn.BatchNorm2d, nn.InstanceNorm2d)):
                keys.add(f"{part}.{a}.bias")
                if getattr(mods[b], "running_mean", None) is not None:
                    keys.add(f"{part}.{b}.running_mean")
    return keys


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str, lr_steps: float = 0.0,
           noise: set[str] = frozenset()) -> None:
    """a == b within RTOL/ATOL, except: `noise` keys within 4 x lr_steps, and at most 0.1% of the other
    elements (parameters whose gradient is near 0, where Adam's m / sqrt(v) amplifies float noise)
    within 1% of lr_steps."""
    assert a.keys() == b.keys(), what
    n_all = n_bad = 0
    for k in a:
        d = (a[k].float() - b[k].float()).abs()
        if k in noise:
            assert d.max() <= 4 * lr_steps, (what, k, float(d.max()))
            continue
        bad = d > ATOL + RTOL * b[k].float().abs()
        n_all, n_bad = n_all + d.numel(), n_bad + int(bad.sum())
        if bad.any():
            assert lr_steps and d[bad].max() <= 0.01 * lr_steps, (what, k, float(d.max()))
    assert n_bad <= 1e-3 * n_all, (what, n_bad, n_all)


# ---- tests -------------------------------------------------------------------------------------------
def test_global_batchnorm_equals_batchnorm_on_the_concatenated_batch(dist_root):
    x, w_out, weight, bias = _bn_inputs()
    ref_bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        ref_bn.weight.copy_(weight)
        ref_bn.bias.copy_(bias)
    ref = _bn_run(ref_bn, x, w_out)
    parts = [torch.load(dist_root / f"bn_{r}.pt") for r in range(WORLD)]
    for key in ("y", "x_grad"):
        torch.testing.assert_close(torch.cat([p[key] for p in parts]), ref[key], rtol=RTOL, atol=ATOL)
    for key in ("w_grad", "b_grad"):  # each rank holds its share; DDP sums (averages) them
        torch.testing.assert_close(sum(p[key] for p in parts), ref[key], rtol=RTOL, atol=ATOL)
    for p in parts:  # running statistics identical on every rank and equal to BatchNorm2d's
        for key in ("running_mean", "running_var"):
            torch.testing.assert_close(p[key], ref[key], rtol=RTOL, atol=ATOL)
        assert int(p["nbt"]) == int(ref["nbt"]) == 2


def test_global_batchnorm_single_process_and_state_dict():
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.uniform_()
        bn.running_mean.fill_(0.3)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), bn)
    keys = list(net.state_dict())
    ref = {k: v.clone() for k, v in net.state_dict().items()}
    converted = convert_global_batchnorm(net)
    assert isinstance(converted[1], GlobalBatchNorm2d) and converted[1].weight is bn.weight
    assert list(converted.state_dict()) == keys
    assert all(torch.equal(converted.state_dict()[k], ref[k]) for k in keys)
    x = torch.randn(3, 1, 6, 6)
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    plain.load_state_dict(ref)
    assert torch.equal(converted(x), plain(x))  # one process: exactly BatchNorm2d
    assert torch.equal(converted[1].running_var, plain[1].running_var)


@pytest.mark.parametrize("name", ["default", "joint", "anchored"])
def test_trainer_step_equals_single_process_step(dist_root, name):
    xg, yg = _tiny_data(n=GAN_BATCH)
    ref, ref_stats = _gan_steps(name, xg, yg)
    got = [torch.load(dist_root / f"step_{name}_{r}.pt") for r in range(WORLD)]
    lr, steps = _preset(name).train.lr, len(ref_stats)
    trainer = GANTrainer(_preset(name), _tiny_classifier(), "cpu")
    noise = _zero_grad_biases({"G": trainer.G, "D": trainer.D, "E": trainer.E})
    assert bool(noise) == (trainer.E is not None)  # only the encoder has conv biases before BatchNorm
    for r, (params, stats) in enumerate(got):
        _close(params, ref, f"{name} rank {r}", lr * steps, noise)
        assert "r1" in stats[1]
        for s, rs in zip(stats, ref_stats):  # logged statistics: means over the global batch
            assert s.keys() == rs.keys()
            assert all(abs(s[k] - rs[k]) <= 1e-5 * max(1.0, abs(rs[k])) for k in s), (s, rs)
    assert all(torch.equal(got[0][0][k], got[1][0][k]) for k in ref)  # ranks stay identical


def test_resume_after_world_size_change(dist_root, tmp_path):
    """3 steps on 2 processes, --resume on 1 process to 6 == 6 steps on 1 process."""
    out = dist_root / "gan_ws2"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["world_size"] == 2 and cfg["status"] == "finished" and cfg["batch_size"] == GAN_BATCH
    rows = RunDir(out).read_metrics()
    assert [r["step"] for r in rows] == [3] and rows[0]["world_size"] == 2  # rank 0 alone logged
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_0000003.png"]
    assert not any(k.startswith("module.") for k in load_weights(out / "generator.safetensors"))

    straight = tmp_path / "straight"
    _train(straight, 6)
    _train(out, 6, resume=True)
    assert json.loads((out / "config.json").read_text())["world_size"] == 1
    for name in ("generator", "discriminator"):
        _close(load_weights(out / f"{name}.safetensors"), load_weights(straight / f"{name}.safetensors"), name, 1e-3 * 6)
    sa, sb = RunDir(straight).load_checkpoint(), RunDir(out).load_checkpoint()
    for part in ("G", "D"):
        _close(sb["trainer"][part], sa["trainer"][part], part, 1e-3 * 6)
    assert torch.equal(sa["trainer"]["batch_sampler"], sb["trainer"]["batch_sampler"]) and torch.equal(sa["rng"]["torch_cpu"], sb["rng"]["torch_cpu"])


def test_user_errors_name_the_batch_size(dist_root):
    for r in range(WORLD):
        errors = json.loads((dist_root / f"errors_{r}.json").read_text())
        assert "--batch-size 5: the global batch is split over 2 processes; set it to a multiple of 2" == errors["gan"]
        assert errors["translate"].startswith("--batch-size 1: the global batch is split over 2 processes")


def test_cyclegan_steps_equal_single_process_and_resume_on_one(dist_root, tmp_path):
    """2 CycleGAN steps on 2 processes == on 1 process; then --resume on 1 process == a straight run."""
    from medxgan.translate import PatchDiscriminator, train_cyclegan
    from medxgan.translate.run import TranslateConfig, build_generators

    cfg = TranslateConfig(**TRANSLATE).finalise()
    g_fa, _ = build_generators(cfg)
    # the two generators (and the two discriminators) have the same layer names
    noise = {"G": {k[1:] for k in _zero_grad_biases({"": g_fa})},
             "D": {k[1:] for k in _zero_grad_biases({"": PatchDiscriminator(1, cfg.ndf)})}}

    def check(a: dict, b: dict, steps: int) -> None:
        a, b = a["trainer"], b["trainer"]  # the trainer's part of a runtime.loop checkpoint
        for net in a["nets"]:
            _close(b["nets"][net], a["nets"][net], net, cfg.lr * steps, noise[net[0]])
        torch.testing.assert_close(b["pool_fa"]["images"], a["pool_fa"]["images"], rtol=RTOL, atol=1e-5)  # images in [-1, 1]
        assert torch.equal(a["data_gen"], b["data_gen"]) and torch.equal(a["pool_fa"]["gen"], b["pool_fa"]["gen"])

    ws2 = dist_root / "fa_ws2"
    ref = tmp_path / "fa_ws1"
    _train_translate(dist_root / "fa", ref)
    b = RunDir(ws2).load_checkpoint()
    assert int(b["step"]) == 2 and json.loads((ws2 / "config.json").read_text())["world_size"] == 2
    check(RunDir(ref).load_checkpoint(), b, 2)

    straight = tmp_path / "fa_straight"
    done = train_cyclegan(dist_root / "fa", straight, device="cpu", quiet=True, **TRANSLATE)
    resumed = train_cyclegan(dist_root / "fa", ws2, resume=True, device="cpu", quiet=True)
    assert resumed["finished"] and resumed["steps"] == done["steps"] > 2
    check(RunDir(straight).load_checkpoint(), RunDir(ws2).load_checkpoint(), done["steps"])
    assert json.loads((ws2 / "config.json").read_text())["world_size"] == 1
