"""The medXGAN run format, written and read here: file names, the encoder sub-run, writing the final
weights and the classifier copies (used by gan.train / gan.encoder_train), and loading a trained run:
generator (eval mode), the classifier it was trained against, its oracle.

    from medxgan.gan.run import load_gan_run
    gan = load_gan_run("runs/gan")                  # classifier from runs/gan/classifier/
    x = gan.generator(z1, z2)                       # N x C x H x W in [-1, 1]
    p = gan.classifier.prob(x)

A different classifier can be passed (`classifier=` a spec or an adapter); when its fingerprint differs
from the one recorded at training time, a warning names both: the generator's latent space was shaped
by the recorded classifier, so its positive/negative realizations mean what *that* classifier saw.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medxgan.classifiers import as_classifier, load_classifier, load_recorded_classifier
from medxgan.classifiers.records import RECORDED_CLASSIFIER
from medxgan.gan.encoder import LatentEncoder
from medxgan.gan.networks import Generator, build_discriminator, build_generator
from medxgan.runtime.atomic import atomic_replace_dir
from medxgan.runtime.outdir import TEMP_PREFIX
from medxgan.runtime.device import pick_device
from medxgan.runtime.errors import MedxganError, StorageError
from medxgan.runtime.records import Field, array, check_record, flag, integer, number, obj, text
from medxgan.runtime.runs import RunDir


# ---- the run layout (written by gan.train / gan.encoder_train, read here) ---------------------------
GAN_KIND = "medxgan"
GENERATOR_NAME = "generator"
DISCRIMINATOR_NAME = "discriminator"
ENCODER_NAME = "encoder"  # the anchor encoder of an `anchored` run
CLASSIFIER_DIR = "classifier"
ORACLE_DIR = "oracle"
ENCODER_KIND = "medxgan-encoder"  # the sub-run RUN/encoder/ of `train-encoder`
ENCODER_SUBDIR = "encoder"
ENCODER_WEIGHTS = "encoder"
# Inversion schedule from E(x): the most steps that still make >= 10x fewer image-steps than the
# from-scratch default (400 steps x 2 starts, ~790 with early stopping); quality measured in
# benchmarks/performance/RESULTS.md.
ENCODER_INVERSION_STEPS = 75
ENCODER_INVERSION_RESTARTS = 1


# what is read back from a GAN run's config.json (runtime.records): the networks' settings (NetConfig's
# fields, its keyword arguments: no others), the classifier/oracle records, the preset's inversion settings
NET_FIELDS = {
    "arch": text(required=True), "size": integer(min=4, max=4096), "channels": integer(min=1, max=4),
    "nz1": integer(min=1), "nz2": integer(min=1), "g_width": integer(min=1), "d_width": integer(min=1),
    "d_spectral_norm": flag(), "d_projection": flag(), "d_dropout": number(min=0, max=1), "d_batchnorm": flag(),
    "d_mbstd": flag(), "pathology": text(("joint", "mask")), "mask_scale": integer(min=1),
}
_CLASS_NAMES = Field(("str", "list"), null=True, item=text())
# GanTrainConfig as stored (``train_config``, read back by GanTrainConfig.from_run on --resume); the preset is
# a name or the whole preset
TRAIN_CONFIG_FIELDS = {
    "preset": Field(("str", "object"), fields={"name": text(required=True), "net": obj(NET_FIELDS, closed=True, required=True),
                                               "train": obj(required=True), "inversion": obj(null=True)}),
    "steps": integer(min=1), "batch_size": integer(min=2), "lambda_cls": number(null=True), "seed": integer(),
    "log_every": integer(min=1), "sample_every": integer(min=1, null=True), "ckpt_every": integer(min=1),
    "keep_last": integer(min=0), "oracle": Field(("str", "bool"), null=True), "oracle_arch": text(null=True),
    "oracle_epochs": integer(min=0), "size": integer(min=4, null=True), "max_minutes": number(min=0, null=True),
    "positive": _CLASS_NAMES, "negative": _CLASS_NAMES, "csv": text(null=True), "skip_bad": flag(),
    "classifier_source": text(null=True), "monitor_samples": integer(min=0), "preset_overrides": obj(null=True),
    "amp": text(null=True), "channels_last": flag(null=True), "compile": flag(null=True),
}
GAN_RUN_FIELDS = {
    "net": obj(NET_FIELDS, closed=True, required=True),
    "train_config": obj(TRAIN_CONFIG_FIELDS, null=True),
    "classifier": RECORDED_CLASSIFIER,
    "oracle": RECORDED_CLASSIFIER,
    "preset": obj({"net": obj(null=True), "train": obj(null=True), "inversion": obj(null=True)}, null=True),
    "classifier_reference": obj(null=True),
    "cls_labels": array(number(), length=2, null=True),
}
# the encoder sub-run RUN/encoder/config.json of `train-encoder`
ENCODER_RUN_FIELDS = {
    "width": integer(min=1, required=True), "lr_decay_steps": integer(min=1, null=True), "data": text(null=True),
    "settings": obj({"width": integer(min=1), "batch_size": integer(min=2), "lr": number(min=0), "seed": integer(),
                     "steps": integer(min=1), "lr_decay_steps": integer(min=1)}, null=True),
}


def encoder_dir(gan_run: str | os.PathLike) -> Path:
    return Path(gan_run) / ENCODER_SUBDIR


def load_trained_encoder(gan_run: str | os.PathLike, net_config: dict[str, Any], device: torch.device) -> LatentEncoder | None:
    """The encoder written by `train_encoder` into ``RUN/encoder/`` (eval mode, frozen), or None when
    there is none (or training has not finished)."""
    rd = RunDir(encoder_dir(gan_run))
    if not rd.exists() or not rd.has_weights(ENCODER_WEIGHTS):
        return None
    cfg = check_record(rd.read_config(expect_kind=ENCODER_KIND), ENCODER_RUN_FIELDS, rd.config_path)
    E = LatentEncoder(net_config, width=cfg["width"])
    try:
        E.load_state_dict(rd.load_weights(ENCODER_WEIGHTS))
    except RuntimeError as exc:
        raise MedxganError(f"{rd.path}: encoder weights do not match its config.json ({str(exc).splitlines()[0]})") from None
    return E.to(device).eval().requires_grad_(False)


def gan_weights(generator: nn.Module, discriminator: nn.Module, encoder: nn.Module | None = None) -> dict[str, nn.Module | None]:
    """(Writing the run.) The final weights by their file names: generator (the EMA copy when EMA is on),
    discriminator, and the anchor encoder of an ``anchored`` run (None otherwise: not written)."""
    return {GENERATOR_NAME: generator, DISCRIMINATOR_NAME: discriminator, ENCODER_NAME: encoder}


def copy_into_run(src: str | None, dst: Path) -> str | None:
    """(Writing the run.) Copy a classifier run directory (or a single model file) into the GAN run; returns the path
    relative to the run, or None when there is nothing on disk to copy."""
    if src is None:
        return None
    s = Path(src)
    if s.resolve() == dst.resolve():
        return dst.name
    if s.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{dst.name}.", dir=dst.parent))  # the project's temp name (runtime.outdir)
        shutil.rmtree(tmp)
        try:
            shutil.copytree(s, tmp, ignore=shutil.ignore_patterns("checkpoints", ".*"))
        except OSError as exc:  # a full disk: the operation and the folders, one line (and no temp folder left)
            shutil.rmtree(tmp, ignore_errors=True)
            raise StorageError.of(f"copying {s} into", dst, exc) from exc
        atomic_replace_dir(tmp, dst)
        return dst.name
    if s.is_file():
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy2(s, dst / s.name)
        return f"{dst.name}/{s.name}"
    return None


def classifier_meta(path: str | None) -> dict[str, Any]:
    if path is None or not Path(path).is_dir():
        return {}
    try:
        return RunDir(path).read_config()
    except MedxganError:
        return {}


@dataclass
class GanRun:
    """A loaded medXGAN run: every network it holds as an explicit attribute (nothing rides on the generator)."""

    generator: Generator  # eval mode, frozen, on `device`
    classifier: nn.Module  # ClassifierAdapter
    oracle: nn.Module | None  # ClassifierAdapter of the independent oracle, if the run has one
    config: dict[str, Any]
    path: Path
    encoder: nn.Module | None = None  # where inversion starts (`invert(encoder=...)`): RUN/encoder/ or the anchor encoder
    encoder_info: dict[str, Any] | None = None  # {"kind": "trained" | "anchor", "path", "inversion_defaults"} of `encoder`
    discriminator: nn.Module | None = None  # D, loaded when the run's preset asks inversion for realism (w_real)


def load_generator(run: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Generator, dict[str, Any]]:
    """The run's generator in eval mode (weights: generator.safetensors, i.e. the EMA copy when EMA
    was on; for an unfinished run, the latest checkpoint's, with a warning) and the run's config. The
    encoder and discriminator that inversion uses are :func:`load_gan_run`'s (:class:`GanRun`)."""
    rd = RunDir(run)
    config = check_record(rd.read_config(expect_kind=GAN_KIND), GAN_RUN_FIELDS, rd.config_path)  # hand-edited or foreign: one line
    dev = torch.device(device) if isinstance(device, torch.device) else pick_device(device)
    try:
        G = build_generator(config["net"])
    except (MedxganError, TypeError, ValueError) as exc:
        raise MedxganError(f"{rd.config_path}: bad network config ({' '.join(str(exc).split())})") from None
    if rd.has_weights(GENERATOR_NAME):
        state = rd.load_weights(GENERATOR_NAME)
    elif rd.latest_checkpoint() is not None:
        ckpt = rd.latest_checkpoint()
        warnings.warn(f"{rd.path}: training has not finished; using the generator of checkpoint {ckpt.name}", stacklevel=2)
        st = rd.load_checkpoint(ckpt)["trainer"]
        state = st.get("G_ema", st["G"])
    else:
        raise MedxganError(f"{rd.path}: no generator weights ({GENERATOR_NAME}.safetensors) and no checkpoint")
    try:
        G.load_state_dict(state)
    except RuntimeError as exc:
        raise MedxganError(f"{rd.path}: generator weights do not match config.json ({str(exc).splitlines()[0]})") from None
    G.to(dev).eval().requires_grad_(False)
    return G, config


def load_inversion_discriminator(rd: RunDir, config: dict[str, Any], dev: torch.device) -> nn.Module | None:
    """D (eval, frozen) when the run's preset asks inversion for realism (w_real): the final discriminator
    weights, else the latest checkpoint's; None otherwise."""
    if not ((config.get("preset") or {}).get("inversion") or {}).get("w_real"):
        return None
    if rd.has_weights(DISCRIMINATOR_NAME):
        state = rd.load_weights(DISCRIMINATOR_NAME)
    elif rd.latest_checkpoint() is not None:
        state = rd.load_checkpoint(rd.latest_checkpoint())["trainer"]["D"]
    else:
        return None
    D = build_discriminator(config["net"])
    D.load_state_dict(state)
    return D.to(dev).eval().requires_grad_(False)


def load_inversion_encoder(rd: RunDir, config: dict[str, Any], dev: torch.device) -> tuple[nn.Module | None, dict[str, Any] | None]:
    """(encoder, info) where inversion starts: the one trained by `medxgan train-encoder` (RUN/encoder/) if
    present, else the anchor encoder of an ``anchored`` run; (None, None) without either."""
    E = load_trained_encoder(rd.path, config["net"], dev)
    if E is not None:
        return E, {"kind": "trained", "path": str(encoder_dir(rd.path)),
                   "inversion_defaults": {"steps": ENCODER_INVERSION_STEPS, "restarts": ENCODER_INVERSION_RESTARTS}}
    if rd.has_weights(ENCODER_NAME):  # runs trained with the encoder anchor
        E = LatentEncoder(config["net"])
        E.load_state_dict(rd.load_weights(ENCODER_NAME))
        return E.to(dev).eval().requires_grad_(False), {"kind": "anchor", "path": str(rd.path / f"{ENCODER_NAME}.safetensors"),
                                                        "inversion_defaults": {}}
    return None, None


def load_gan_run(
    run: str | os.PathLike,
    classifier: str | os.PathLike | nn.Module | None = None,
    device: str | torch.device = "cpu",
    load_oracle: bool = True,
    attach_encoder: bool = True,
) -> GanRun:
    """Load a GAN run directory written by `medxgan train`.

    classifier: None -> the copy stored in RUN/classifier/ (or the original path if no copy exists);
    otherwise a classifier spec for `load_classifier` or an adapter, used instead (warning if its
    fingerprint differs from the recorded one). ``attach_encoder``: load the inversion's encoder (and the
    discriminator a ``w_real`` preset needs) into :attr:`GanRun.encoder` / :attr:`GanRun.discriminator`.
    """
    G, config = load_generator(run, device)
    rd = RunDir(run)
    dev = next(G.parameters()).device
    encoder, encoder_info = load_inversion_encoder(rd, config, dev) if attach_encoder else (None, None)
    discriminator = load_inversion_discriminator(rd, config, dev) if attach_encoder else None
    rec = config.get("classifier") or {}
    if classifier is None:  # the run's own copy (or source), its recorded adapter settings, its fingerprint checked
        clf = load_recorded_classifier(rd.path, rec, dev)
    else:
        clf = as_classifier(classifier, device=dev)
        fp = getattr(clf, "fingerprint", None)
        if rec.get("fingerprint") and fp != rec["fingerprint"]:
            given = classifier if not isinstance(classifier, nn.Module) else getattr(clf, "name", type(clf).__name__)
            warnings.warn(
                f"{rd.path}: the GAN was trained against classifier {rec.get('source') or rec.get('local')} "
                f"(fingerprint {rec['fingerprint']}) but is used with {given} (fingerprint {fp}); its latent space "
                "encodes what the training classifier saw, so explanations may not reflect this classifier",
                stacklevel=2,
            )
        trained_for = (rec.get("adapter") or {}).get("target_description")
        if trained_for and hasattr(clf, "target_description") and clf.target_description() != trained_for:
            warnings.warn(f"{rd.path}: the GAN was trained for the target {trained_for} but is used for {clf.target_description()}; its "
                          "latent space encodes the trained target's evidence", stacklevel=2)
    clf.eval()
    oracle = None
    o = config.get("oracle") or {}
    if load_oracle and o.get("local") and (rd.path / o["local"]).exists():
        oracle = load_classifier(rd.path / o["local"], device=dev).eval()
    return GanRun(G, clf, oracle, config, rd.path, encoder=encoder, encoder_info=encoder_info, discriminator=discriminator)
