"""`train-encoder`: the inversion encoder trained after the GAN, stored in RUN/encoder/, used by explain."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from medxgan.gan.encoder_train import ENCODER_INVERSION_STEPS, EncoderTrainConfig, encoder_dir, train_encoder
from medxgan.explain.counterfactual import MinimalMaskConfig
from medxgan.gan.inversion import InversionConfig, invert
from medxgan.pipeline import MedXGAN
from medxgan.gan.run import load_gan_run
from medxgan.runtime.runs import RunDir, fingerprint_state_dict

from helpers import write_dataset, write_gan_run
from test_run_lifecycle import assert_common_shape

TINY = dict(batch_size=4, width=4, log_every=3, ckpt_every=3, eval_images=4, device="cpu", quiet=True)


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    from medxgan.classifiers import train_classifier
    from medxgan.gan.train import train_gan

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("enc")
    data, clf, out = root / "data", root / "clf", root / "gan"
    write_dataset(data)
    train_classifier(data, clf, arch="paper-cnn", epochs=1, size=64, device="cpu", quiet=True)
    train_gan(str(data), str(clf), out, steps=2, batch_size=4, log_every=2, ckpt_every=2, oracle=False, device="cpu",
              monitor_samples=8, quiet=True, preset_overrides=dict(g_width=4, d_width=4, nz1=8, nz2=4))
    yield out, data
    torch.set_num_threads(n)


def _copy(run, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(run, dst)
    shutil.rmtree(dst / "encoder", ignore_errors=True)
    return dst


def test_train_encoder_writes_subrun_and_explain_uses_it(gan_run, tmp_path):
    run = _copy(gan_run[0], tmp_path, "g")
    res = train_encoder(run, steps=4, **TINY)
    rd = RunDir(encoder_dir(run))
    cfg = rd.read_config()
    assert cfg["status"] == "finished" and cfg["steps_done"] == 4 and rd.has_weights("encoder")
    assert_common_shape(cfg, "medxgan-encoder")  # runtime.run's config.json shape
    assert cfg["fingerprints"]["encoder"] == fingerprint_state_dict(rd.load_weights("encoder"))
    assert EncoderTrainConfig(**cfg["train_config"]) == EncoderTrainConfig(steps=4, batch_size=4, width=4, log_every=3, ckpt_every=3,
                                                                           eval_images=4)
    assert [r["step"] for r in rd.read_metrics()] == [3, 4]
    m = res["metrics"]
    assert {"psnr_encoder", "psnr_inversion", "code_mse_z1", "code_mse_z2", "prob_gap_inversion"} <= set(m)
    gan = load_gan_run(run)
    assert gan.encoder_info["kind"] == "trained" and gan.encoder is not None
    assert vars(gan.generator).keys().isdisjoint({"inversion_encoder", "inversion_encoder_info"})  # nothing rides on G
    mx = MedXGAN.load(run, device="cpu")
    # the encoder's short schedule, plus the preset's own inversion defaults (the default preset: residual counterfactual)
    mask_opts = {"minimal_mask_steps": 150, "minimal_mask_target": "healthy", "minimal_mask_scale": 4, "minimal_mask_tv": 4.0}
    floor = gan.config["classifier_reference"]["negative_logit_q05"]  # the run's classifier on its training negatives
    # the preset's in-fill "auto" is chosen on the run's validation scans when the run is loaded: the chosen one is stored
    chosen = mx.infill_selection.chosen
    assert mx.engine.inversion == {"steps": ENCODER_INVERSION_STEPS, "restarts": 1, "counterfactual": "residual", "w_cf": 1.0, "w_min": 1.0,
                                   **mask_opts, "minimal_mask_floor": floor, **({"minimal_mask_infill": chosen} if chosen != "gan" else {})}
    assert "encoder trained by train-encoder" in mx.inversion_note()
    explicit = MedXGAN.load(run, device="cpu", steps=7, counterfactual="generator").engine  # explicit settings win
    assert explicit.inversion_config == InversionConfig(steps=7, counterfactual="generator", w_cf=1.0, w_min=1.0)
    assert explicit.minimal_mask == MinimalMaskConfig(steps=150, target="healthy", scale=4, tv=4.0, floor=floor)  # off for "generator"
    # the stored record: what differs from the library defaults ("generator" is the default counterfactual)
    assert explicit.inversion == {"steps": 7, "w_cf": 1.0, "w_min": 1.0, **mask_opts, "minimal_mask_floor": floor}
    # zero refinement steps: inversion returns exactly the encoder's codes
    x = torch.rand(3, 1, 64, 64) * 2 - 1
    r = invert(gan.generator, gan.classifier, x, steps=0, restarts=1, encoder=gan.encoder)
    mu1, _, mu2, _ = gan.encoder(x)
    torch.testing.assert_close(r.z1, mu1)
    torch.testing.assert_close(r.z2, mu2)


def test_resumed_encoder_training_equals_uninterrupted(gan_run, tmp_path):
    a, b = _copy(gan_run[0], tmp_path, "a"), _copy(gan_run[0], tmp_path, "b")
    train_encoder(a, steps=6, **TINY)
    train_encoder(b, steps=3, lr_decay_steps=6, **TINY)  # = a 6-step run interrupted after step 3
    cfg = json.loads((encoder_dir(b) / "config.json").read_text())
    assert cfg["steps_done"] == 3
    train_encoder(b, steps=6, resume=True, **TINY)
    wa, wb = RunDir(encoder_dir(a)).load_weights("encoder"), RunDir(encoder_dir(b)).load_weights("encoder")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
    assert [r["step"] for r in RunDir(encoder_dir(b)).read_metrics()] == [3, 6]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit (the fixture's TorchScript classifier)
def test_encoder_learns_the_codes_of_generated_images(tmp_path):
    """On generated images the true codes are known: with a generator whose output depends on its
    codes (the inversion tests' calibrated 16 px one), the code error on fixed held-out samples drops.
    (The noise images of the tiny data set are outside this generator's range: no PSNR claim here;
    the benchmark measures reconstruction on a trained GAN.)"""
    run = write_gan_run(tmp_path / "gan")
    data = tmp_path / "data16"
    write_dataset(data, size=16)
    train_encoder(run, data, steps=60, **{**TINY, "log_every": 10, "batch_size": 16, "width": 8, "lr": 3e-3})
    recs = RunDir(encoder_dir(run)).read_metrics()
    first, last = recs[0], recs[-1]
    assert last["code_mse_z1"] + last["code_mse_z2"] < 0.8 * (first["code_mse_z1"] + first["code_mse_z2"]), (first, last)
