"""The learned in-fill (gan/inpainter.py, gan/inpainter_train.py, --infill learned|learned-gan): it learns to fill holes
from context better than the mean scan, never changes a pixel outside its region, resumes exactly, and the CLI
refuses bad inputs in one line before any work."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from medxgan.cli import main
from medxgan.explain.counterfactual import image_key
from medxgan.explain.infill import InfillInputs, check_inpainter_for, infill_region, learned_grow, make_infill
from medxgan.gan.inpainter import INPAINTER_WEIGHTS, Inpainter, InpaintNet, load_inpainter, random_holes
from medxgan.gan.inpainter_train import InpainterConfig, InpainterTrainer, train_inpainter
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.runs import RunDir, fingerprint_module

from helpers import one_error_line, write_dataset, write_gan_run

TINY = InpainterConfig(steps=6, batch_size=4, width=4, log_every=3, ckpt_every=3, size=16)


def _ramps(n: int, size: int, seed: int) -> torch.Tensor:
    """Linear ramps 0.8 * (cos t * u + sin t * v) at random angles t (u, v in [-1, 1]): a hole in one is filled exactly
    by continuing the ramp from its surroundings, while the mean of many ramps is ~0 everywhere."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g) * 2 * math.pi
    c = torch.linspace(-1, 1, size)
    v, u = torch.meshgrid(c, c, indexing="ij")
    return (0.8 * (t.cos().view(-1, 1, 1) * u + t.sin().view(-1, 1, 1) * v)).unsqueeze(1)


def test_random_holes_are_seeded_binary_blobs():
    a = random_holes(16, 32, torch.Generator().manual_seed(3))
    b = random_holes(16, 32, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (16, 1, 32, 32)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    area = a.flatten(1).mean(1)
    assert bool((area > 0).all()) and float(area.max()) < 0.9  # every scan has a hole, none is all hole


def test_learned_fill_beats_the_mean_scan_on_ramps():
    """After 80 steps on 64 ramps the network continues a ramp into held-out holes: its L1 error inside the holes is
    well below the mean training scan's (which is ~0 everywhere, so its error is the ramp's own |value|)."""
    torch.manual_seed(0)
    x_train, x_test = _ramps(64, 16, seed=0), _ramps(32, 16, seed=1)
    net = InpaintNet(1, width=8)
    trainer = InpainterTrainer(net, x_train, None, batch_size=8, lr=3e-3, lr_decay_steps=80, seed=0)
    for _ in range(80):
        trainer.step()
    region = random_holes(32, 16, torch.Generator().manual_seed(9))
    inp = Inpainter(net.eval(), "context", 16, 1, None, path=Path("mem"))
    fill = inp.fill(x_test, region)
    mean_scan = x_train.mean(0, keepdim=True).expand_as(x_test)
    err_learned = float(((fill - x_test).abs() * region).sum() / region.sum())
    err_mean = float(((mean_scan - x_test).abs() * region).sum() / region.sum())
    assert err_mean > 0.25  # the reference: the mean of ramps at all angles says nothing about one ramp
    assert err_learned < 0.5 * err_mean, (err_learned, err_mean)  # measured: 0.139 vs 0.351


def test_the_fill_never_changes_a_pixel_outside_its_region():
    """F equals the scan exactly outside the region (gM > 0.5 grown by one pixel), so x_cf = x + M (F - x) equals the
    scan there whatever the mask M is."""
    torch.manual_seed(0)
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    gm = torch.zeros(3, 1, 16, 16)
    gm[:, :, 4:9, 5:11] = 0.8
    inp = Inpainter(InpaintNet(1, width=4).eval(), "context", 16, 1, None, path=Path("mem"))
    fill = make_infill("learned", InfillInputs(images=x, gan_fill=torch.zeros_like(x), gan_mask=gm, inpainter=inp))
    region = infill_region(gm, grow=learned_grow(16))
    assert learned_grow(16) == 1 and learned_grow(64) == 4  # H / 16 px
    assert float(region[0, 0, 3, 6]) == 1.0 and float(region[0, 0, 2, 6]) == 0.0  # grown by exactly one pixel at 16 px
    wide = infill_region(gm, grow=4)
    assert float(wide[0, 0, 0, 6]) == 1.0 and float(wide[0, 0, 4, 0]) == 0.0  # 4 px up (row 4 -> 0); column 5 - 4 = 1
    outside = region.expand_as(x) == 0
    assert torch.equal(fill[outside], x[outside]) and not torch.equal(fill, x)
    M = torch.rand(3, 1, 16, 16)  # any mask the search may return
    x_cf = x + M * (fill - x)
    assert torch.equal(x_cf[outside], x[outside])


def test_learned_gan_variant_reads_the_anatomy_and_is_checked():
    torch.manual_seed(0)
    x, b = torch.rand(2, 1, 16, 16) * 2 - 1, torch.rand(2, 1, 16, 16) * 2 - 1
    gm = torch.zeros(2, 1, 16, 16)
    gm[:, :, 4:10, 4:10] = 1.0
    net = InpaintNet(1, width=4, gan_channel=True).eval()
    inp = Inpainter(net, "context+gan", 16, 1, "abc", path=Path("mem"))
    f1 = make_infill("learned-gan", InfillInputs(images=x, gan_fill=b, gan_mask=gm, inpainter=inp))
    f2 = make_infill("learned-gan", InfillInputs(images=x, gan_fill=-b, gan_mask=gm, inpainter=inp))
    assert not torch.equal(f1, f2)  # the anatomy channel reaches the network
    with pytest.raises(MedxganError, match="needs a 'context' one"):
        make_infill("learned", InfillInputs(images=x, gan_fill=b, gan_mask=gm, inpainter=inp))
    with pytest.raises(MedxganError, match="another generator"):
        check_inpainter_for("learned-gan", inp, generator_fingerprint="xyz")
    with pytest.raises(MedxganError, match="needs inpainter RUN"):
        make_infill("learned", InfillInputs(images=x, gan_fill=b, gan_mask=gm))


def test_resumed_training_ends_bit_identical(tmp_path):
    data = tmp_path / "data"
    write_dataset(data, size=16)
    a, b = tmp_path / "a", tmp_path / "b"
    train_inpainter(data, a, TINY, quiet=True)
    train_inpainter(data, b, replace(TINY, steps=3, lr_decay_steps=6), quiet=True)  # = a 6-step run interrupted after step 3
    assert RunDir(b).read_config()["steps_done"] == 3
    train_inpainter(data, b, TINY, resume=True, quiet=True)
    wa, wb = RunDir(a).load_weights(INPAINTER_WEIGHTS), RunDir(b).load_weights(INPAINTER_WEIGHTS)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
    assert [r["step"] for r in RunDir(b).read_metrics()] == [3, 6]
    loaded = load_inpainter(a)
    assert (loaded.variant, loaded.size, loaded.channels) == ("context", 16, 1)
    with pytest.raises(MedxganError, match="already holds a run"):
        train_inpainter(data, a, TINY, quiet=True)


def test_engine_uses_the_learned_infill(tmp_path):
    """--infill learned in the engine: the search's in-fill is the inpainter's, x_res = x + M (F - x), and F equals the
    scan outside the generator's grown mask."""
    from helpers import masked_setup

    from medxgan import MedXGAN

    G, clf, x = masked_setup()
    opts = dict(steps=3, restarts=1, counterfactual="residual", minimal_mask_steps=5, minimal_mask_infill="learned")
    with pytest.raises(MedxganError, match="needs inpainter RUN"):
        MedXGAN(G, clf, inversion=opts)
    mx = MedXGAN(G, clf, inversion={**opts, "minimal_mask_inpainter": str(tmp_path)})
    mx.engine.infill_inpainter = Inpainter(InpaintNet(1, width=4).eval(), "context", 16, 1, None, tmp_path)
    cf = mx.engine.counterfactuals(x)
    assert cf.fills is not None and torch.allclose(cf.x_res, x + cf.masks * (cf.fills - x), atol=1e-6)
    with torch.no_grad():
        gm = G(cf.z1, cf.z2, return_parts=True)[2]
    outside = infill_region(gm).expand_as(x) == 0
    assert torch.equal(cf.fills[outside], x[outside])
    assert fingerprint_module(G)  # the learned-gan check compares this generator's fingerprint with the inpainter's
    assert image_key(x[0]) != image_key(x[1])


def test_cli_errors_are_one_line(tmp_path, capsys):
    data = tmp_path / "data"
    write_dataset(data, size=16)
    assert main(["train-inpainter", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "not a directory" in one_error_line(capsys)
    assert main(["train-inpainter", str(data), "--out", str(tmp_path / "o"), "--steps", "0"]) == 2
    assert "steps" in one_error_line(capsys)
    gan = write_gan_run(tmp_path / "g")  # no encoder: the context+gan variant cannot compute B(E(x))
    assert main(["train-inpainter", str(data), "--out", str(tmp_path / "o2"), "--gan", str(gan), "--steps", "1", "--quiet"]) == 2
    assert "--gan" in (line := one_error_line(capsys)) and "no encoder" in line
    assert main(["train-inpainter", str(data), "--out", str(tmp_path / "o3"), "--gan", str(tmp_path / "nogan")]) == 2
    assert "--gan" in (line := one_error_line(capsys)) and "not found" in line
    scan = tmp_path / "scan.png"
    (data / "test" / "positive" / "000.png").rename(scan)
    base = ["explain", str(scan), "--gan", str(gan), "--out", str(tmp_path / "ex")]
    assert main(base + ["--infill", "learned"]) == 2
    assert "--infill learned: needs --inpainter RUN (a run of `medxgan train-inpainter`)" in one_error_line(capsys)
    assert main(base + ["--infill", "learned-gan", "--inpainter", str(data)]) == 2
    assert f"--inpainter {data}: " in (line := one_error_line(capsys)) and "not a medxgan run" in line
    assert main(base + ["--infill", "gan", "--inpainter", str(data)]) == 2
    assert "applies to --infill learned" in one_error_line(capsys)
    assert not (tmp_path / "ex").exists()  # refused before any work


def test_load_attaches_the_inpainter_and_checks_it(tmp_path):
    """MedXGAN.load(..., minimal_mask_infill="learned", minimal_mask_inpainter=RUN): the engine gets the run's network;
    a run of the other variant or of another scan size is a one-line error before any work."""
    from medxgan.pipeline import MedXGAN

    gan = write_gan_run(tmp_path / "g")  # a 16 px generator
    data = tmp_path / "data"
    write_dataset(data, size=16)
    inp16, inp32 = tmp_path / "i16", tmp_path / "i32"
    train_inpainter(data, inp16, replace(TINY, steps=1), quiet=True)
    train_inpainter(data, inp32, replace(TINY, steps=1, size=32), quiet=True)
    mx = MedXGAN.load(gan, device="cpu", minimal_mask_infill="learned", minimal_mask_inpainter=str(inp16))
    assert mx.engine.infill_inpainter.variant == "context" and mx.engine.infill_inpainter.path == inp16
    assert mx.engine.inversion["minimal_mask_inpainter"] == str(inp16)  # stored with every evaluation/explanation record
    with pytest.raises(MedxganError, match="needs a 'context\\+gan' one"):
        MedXGAN.load(gan, device="cpu", minimal_mask_infill="learned-gan", minimal_mask_inpainter=str(inp16))
    with pytest.raises(MedxganError, match="trained on 1 x 32 px scans"):
        MedXGAN.load(gan, device="cpu", minimal_mask_infill="learned", minimal_mask_inpainter=str(inp32))
