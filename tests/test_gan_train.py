"""medXGAN training: end-to-end run layout, exact resume, loading, errors, CLI."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch
from helpers import write_dataset, small_conv_classifier, square_lesion_data
from test_run_lifecycle import assert_common_shape

from medxgan.gan import GanTrainConfig, get_preset, load_gan_run, train_gan
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.runs import RunDir
from medxgan.runtime.state import load_weights

TINY = dict(g_width=4, d_width=4, nz1=8, nz2=4)


def _tiny_data(n=32, size=32, channels=1, seed=0):
    return square_lesion_data(n, size, channels, seed)


def _tiny_classifier(channels=1, seed=0):
    return small_conv_classifier(channels, seed)


def _preset(**kw):
    # the encoder-anchored recipe with every optional part (EMA, R1, DiffAugment) switched on, so that
    # all of the trainer is exercised by the end-to-end and resume tests
    return get_preset("anchored", channels=1, size=32, **{**TINY, "ema_decay": 0.99, **kw})


def _train(out, steps, **kw):
    kw.setdefault("preset", _preset(diffaug="translation,cutout", r1_gamma=1.0, r1_every=2))
    return train_gan(_tiny_data(), kw.pop("classifier", _tiny_classifier()), out, steps=steps, batch_size=8,
                     oracle=kw.pop("oracle", _tiny_classifier(seed=1)), device="cpu", quiet=True, monitor_samples=16, **kw)


def test_end_to_end_writes_run(tmp_path):
    out = tmp_path / "gan"
    res = _train(out, 4, log_every=2, ckpt_every=2, keep_last=1)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["kind"] == "medxgan" and cfg["status"] == "finished"
    assert_common_shape(cfg, "medxgan")  # runtime.run's config.json shape
    assert set(cfg["fingerprints"]) == {"generator", "discriminator", "encoder", "classifier", "data"}
    assert cfg["fingerprints"]["classifier"] == cfg["classifier"]["fingerprint"] and cfg["steps_done"] == 4
    assert (cfg["channels"], cfg["size"], cfg["nz1"], cfg["nz2"]) == (1, 32, 8, 4)
    assert cfg["preset"]["net"] == cfg["net"] and cfg["ema"] is True
    assert cfg["classifier"]["fingerprint"] and cfg["oracle"]["fingerprint"]
    for k in ("disent", "diversity", "oracle_neg", "oracle_pos", "cls_neg", "cls_pos"):
        assert k in cfg["metrics"] and k in res["metrics"]
    assert (out / "generator.safetensors").is_file() and (out / "discriminator.safetensors").is_file()
    assert (out / "encoder.safetensors").is_file()
    loaded = load_gan_run(out, classifier=_tiny_classifier())
    assert loaded.encoder is not None and loaded.encoder_info["kind"] == "anchor"  # an explicit attribute of the run
    assert vars(loaded.generator).keys().isdisjoint({"inversion_encoder", "inversion_encoder_info", "inversion_discriminator"})
    rows = RunDir(out).read_metrics()
    assert [r["step"] for r in rows] == [2, 4]
    assert {"d_loss", "g_loss", "d_real", "d_fake", "cls_agree", "disent", "diversity", "oracle_neg", "g_rec", "g_kl", "g_cf"} <= set(rows[0])
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_0000002.png", "step_0000004.png"]
    assert len(RunDir(out).list_checkpoints()) == 1
    # the saved generator is the EMA copy
    G_saved = load_weights(out / "generator.safetensors")
    st = RunDir(out).load_checkpoint()["trainer"]
    assert all(torch.equal(G_saved[k], st["G_ema"][k]) for k in G_saved)
    # refusing to overwrite
    with pytest.raises(MedxganError, match="already holds a run"):
        _train(out, 4)


def test_resume_is_exact(tmp_path):
    """N steps straight == N/2 steps, a crash, and a resume (weights, optimiser-driven updates, RNG, metrics)."""
    a, b = tmp_path / "a", tmp_path / "b"
    _train(a, 6, log_every=2, ckpt_every=3)
    _train(b, 4, log_every=2, ckpt_every=3)
    # simulate kill -9 after step 4's metrics line, before its checkpoint: drop the step-4 checkpoint
    import shutil

    shutil.rmtree(RunDir(b).checkpoint_root / "step_000000004")
    (b / "generator.safetensors").unlink()
    _train(b, 6, log_every=2, ckpt_every=3, resume=True)
    for name in ("generator", "discriminator"):
        wa, wb = load_weights(a / f"{name}.safetensors"), load_weights(b / f"{name}.safetensors")
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), (name, k)
    sa, sb = RunDir(a).load_checkpoint()["trainer"], RunDir(b).load_checkpoint()["trainer"]
    for part in ("G", "D", "G_ema"):
        for k in sa[part]:
            assert torch.equal(sa[part][k], sb[part][k]), (part, k)
    ma, mb = RunDir(a).read_metrics(), RunDir(b).read_metrics()
    assert [r["step"] for r in mb] == [2, 4, 6]
    for ra, rb in zip(ma, mb):
        assert {k: v for k, v in ra.items() if k != "seconds"} == {k: v for k, v in rb.items() if k != "seconds"}


def test_config_dataclass_is_stored_and_read_back(tmp_path):
    """train_gan takes one GanTrainConfig (keywords override its fields); the run stores it and
    GanTrainConfig.from_run reads it back, so that a run can be continued from its own record."""
    out = tmp_path / "g"
    cfg = GanTrainConfig(preset=_preset(), steps=2, batch_size=8, oracle=False, log_every=1, monitor_samples=8)
    train_gan(_tiny_data(), _tiny_classifier(), out, cfg, device="cpu", quiet=True)
    back = GanTrainConfig.from_run(out)
    assert back == dataclasses.replace(cfg, sample_every=1)  # the default sample cadence, resolved
    res = train_gan(_tiny_data(), _tiny_classifier(), out, back, resume=True, steps=3, device="cpu", quiet=True)
    assert res["steps"] == 3 and GanTrainConfig.from_run(out).steps == 3
    with pytest.raises(TypeError, match="unknown options"):
        train_gan(_tiny_data(), _tiny_classifier(), tmp_path / "x", cfg, step=3)


def test_resume_policy_refusals(tmp_path):
    out = tmp_path / "g"
    with pytest.raises(MedxganError, match="nothing to resume"):  # it used to start afresh silently
        _train(out, 2, resume=True)
    _train(out, 2)
    with pytest.raises(MedxganError, match=r"seed 1 \(the run has 0\)"):
        _train(out, 3, resume=True, seed=1)
    with pytest.raises(MedxganError, match=r"cannot resume with other settings: classifier"):
        _train(out, 3, resume=True, classifier=_tiny_classifier(seed=3))


def test_wrong_size_raises(tmp_path):
    with pytest.raises(MedxganError, match="32x32 px but preset paper-64 is for 64 px"):
        train_gan(_tiny_data(), _tiny_classifier(), tmp_path / "g", preset="paper-64", steps=1, oracle=False, quiet=True)


def test_load_gan_run_and_classifier_warning(tmp_path):
    out = tmp_path / "gan"
    clf = _tiny_classifier()
    _train(out, 2, log_every=2, classifier=clf)
    with pytest.raises(MedxganError, match="no copy of its classifier"):
        load_gan_run(out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gan = load_gan_run(out, classifier=clf)
    assert not gan.generator.training and gan.generator.nz1 == 8
    x = gan.generator(torch.randn(3, 8), torch.zeros(3, 4))
    assert x.shape == (3, 1, 32, 32)
    with pytest.warns(UserWarning, match="fingerprint"):
        load_gan_run(out, classifier=_tiny_classifier(seed=5))


def test_cli_train_on_a_tiny_dataset(tmp_path, capsys):
    from medxgan.classifiers import train_classifier
    from medxgan.cli import main

    data, clf, out = tmp_path / "data", tmp_path / "clf", tmp_path / "gan"
    write_dataset(data)
    train_classifier(data, clf, arch="paper-cnn", epochs=1, size=64, device="cpu", quiet=True)
    argv = [
        "train", str(data), "--classifier", str(clf), "--out", str(out), "--steps", "2", "--batch-size", "4",
        "--log-every", "2", "--ckpt-every", "2", "--oracle-epochs", "1", "--device", "cpu", "--quiet", "--monitor-samples", "32",
        "--no-choose-infill",
        "--set", "g_width=4", "--set", "d_width=4", "--set", "nz1=8", "--set", "nz2=4",
    ]
    assert main(argv) == 0
    assert "final: disent=" in capsys.readouterr().out
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["oracle"]["arch"] == "resnet-small" and cfg["oracle"]["seed"] == 1
    assert (out / "classifier" / "config.json").is_file() and (out / "oracle" / "config.json").is_file()
    gan = load_gan_run(out)
    assert gan.oracle is not None and gan.classifier.fingerprint == cfg["classifier"]["fingerprint"]
    # --resume: options left at their defaults (--batch-size, --set ...) take the run's values; a given one is checked
    resume = ["train", str(data), "--classifier", str(clf), "--out", str(out), "--steps", "3", "--resume", "--device", "cpu", "--quiet"]
    assert main(resume) == 0
    assert json.loads((out / "config.json").read_text())["steps_done"] == 3
    assert main(resume[:-1] + ["--seed", "5", "--quiet"]) == 2
    assert "seed 5 (the run has 0)" in capsys.readouterr().err
    # a wrong preset size is a one-line user error (exit 2)
    assert main(["train", str(data), "--classifier", str(clf), "--out", str(tmp_path / "g2"), "--preset", "paper-128",
                 "--no-oracle", "--quiet"]) == 2
    assert "preset paper-128 is for 128 px" in capsys.readouterr().err


def test_a_run_resumes_with_the_inversion_defaults_it_was_trained_with(tmp_path):
    """A preset's inversion defaults (explanation settings) may change between releases (the default preset's
    minimal_mask_tv 1 -> 4 on 2026-12-06); a run trained before still resumes and keeps its own."""
    out = tmp_path / "g"
    kw = dict(preset="default", preset_overrides={**TINY, "size": 32}, batch_size=8, oracle=False, device="cpu", quiet=True, monitor_samples=8)
    train_gan(_tiny_data(), _tiny_classifier(), out, steps=2, **kw)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["preset"]["inversion"]["minimal_mask_tv"] == 4.0
    for preset in (cfg["preset"], cfg["settings"]["preset"]):  # as a run of the earlier preset recorded it
        del preset["inversion"]["minimal_mask_tv"]
    (out / "config.json").write_text(json.dumps(cfg))
    train_gan(_tiny_data(), _tiny_classifier(), out, steps=3, resume=True, **kw)
    after = json.loads((out / "config.json").read_text())
    assert after["steps_done"] == 3 and "minimal_mask_tv" not in after["preset"]["inversion"]
    with pytest.raises(MedxganError, match="cannot resume with other settings"):  # what defines training is still checked
        train_gan(_tiny_data(), _tiny_classifier(), out, steps=4, resume=True, **{**kw, "preset_overrides": {**TINY, "size": 32, "lr": 5e-4}})
