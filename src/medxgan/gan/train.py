"""`medxgan train`: train a medXGAN generator against a frozen classifier.

Read top to bottom: `train_gan` loads the data and the classifier, builds the networks from a preset,
and runs `GANTrainer.step` (gan.trainer: the objective, DiffAugment, distributed and GPU notes) through
runtime.loop with logging, sample grids and resumable checkpoints; the run's lifecycle and config.json
shape are runtime.run.TrainingRun's, its file layout gan.run's. The settings are one `GanTrainConfig`.

Distributed (``torchrun --nproc_per_node N -m medxgan train ...``): the batch size is the GLOBAL batch,
split evenly over the ranks (see gan.trainer); rank 0 alone trains the oracle, logs, monitors and writes.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medxgan.classifiers import as_classifier, load_classifier, store_classifier, train_classifier
from medxgan.classifiers.checks import prediction_check
from medxgan.classifiers.reference import class_logit_medians, negative_logit_reference
from medxgan.classifiers.training import ClassifierTrainConfig
from medxgan.data import load_dataset
from medxgan.gan.monitor import Monitor, summarize
from medxgan.gan.presets import Preset, get_preset
from medxgan.gan.run import CLASSIFIER_DIR, GAN_KIND, GAN_RUN_FIELDS, ORACLE_DIR, classifier_meta, copy_into_run, gan_weights
from medxgan.gan.trainer import BatchSteps, GANTrainer, diff_augment, minimality_terms, parse_diffaug
from medxgan.runtime.atomic import to_jsonable
from medxgan.runtime.checks import check_args
from medxgan.runtime.device import pick_device
from medxgan.runtime.distributed import DistContext, barrier, check_divisible, distributed
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.loop import Cadence, LoopOptions, resume_or_restart
from medxgan.runtime.precision import check_amp
from medxgan.runtime.records import check_record
from medxgan.runtime.run import TrainingRun
from medxgan.runtime.runs import RunDir, fingerprint_state_dict
from medxgan.runtime.seeding import seed_everything

# the step and its helpers live in gan.trainer; imported here by the tests and benchmarks that use them
__all__ = ["GanTrainConfig", "train_gan", "GANTrainer", "diff_augment", "minimality_terms", "parse_diffaug"]

ORACLE_ARCH = {"paper-cnn": "resnet-small", "resnet-small": "paper-cnn"}


def _load_data(data: Any, size: int | None, mapping: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, str | None]:
    """(images N x C x H x W, labels N, source path or None). `data`: dataset root, (images, labels), or
    an object with .tensors()."""
    if isinstance(data, (str, os.PathLike)):
        ds = load_dataset(data, split="train", size=size, **mapping)
        images, labels = ds.tensors()[:2]
        source: str | None = str(data)
    elif isinstance(data, (tuple, list)):
        images, labels = data[0], data[1]
        source = None
    elif hasattr(data, "tensors"):
        images, labels = data.tensors()[:2]
        source = str(getattr(data, "root", None)) if getattr(data, "root", None) is not None else None
    else:
        raise MedxganError(f"data: expected a dataset folder, got {type(data).__name__}")
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise MedxganError(f"{source or 'data'}: images must be N x C x H x W with C = 1 or 3, got {tuple(images.shape)}")
    if images.shape[-1] != images.shape[-2]:
        raise MedxganError(f"{source or 'data'}: images are {images.shape[-2]}x{images.shape[-1]}; the GAN needs square images (use --size)")
    labels = labels.long()
    counts = [int((labels == c).sum()) for c in (0, 1)]
    if min(counts) == 0:
        raise MedxganError(f"{source or 'data'}: the training split needs both classes (negatives {counts[0]}, positives {counts[1]})")
    return images.float(), labels, source


def _load_adapter(spec: Any, device: torch.device, what: str) -> tuple[nn.Module, str | None]:
    """(adapter, source path or None for an object) through the one normaliser, ``as_classifier``."""
    try:
        return as_classifier(spec, device=device), None if isinstance(spec, nn.Module) else str(spec)
    except MedxganError as exc:  # name the argument the user actually gave (oracle=)
        if what == "classifier" or "classifier" not in exc.arg:
            raise
        raise MedxganError(str(exc).replace("classifier ", f"{what} ", 1), arg=what) from None


def _classifier_check(clf: nn.Module, images: torch.Tensor, labels: torch.Tensor, dev: torch.device) -> dict[str, Any]:
    """The classifier's calls on up to 256 training images of each class (classifiers.checks; warns on one class)."""
    idx = torch.cat([torch.nonzero(labels == c).flatten()[:256] for c in (0, 1)])
    probs = _classifier_probs(clf, images[idx], dev)
    return prediction_check(probs, labels[idx], f"{len(idx)} training images", getattr(clf, "name", "classifier"))


def _classifier_probs(clf: nn.Module, images: torch.Tensor, dev: torch.device, batch_size: int = 64) -> torch.Tensor:
    """p(positive) of ``images`` (on the CPU), in batches on ``dev``."""
    with torch.no_grad():
        return torch.cat([clf.prob(images[i : i + batch_size].to(dev)).cpu() for i in range(0, len(images), batch_size)])


def _gan_labels_record(preset: Preset, labels: torch.Tensor, data_labels: torch.Tensor) -> dict[str, Any]:
    """Which labels the GAN learnt from, and how often the classifier's calls agreed with the data's."""
    rec: dict[str, Any] = {"source": preset.train.gan_labels, "positives": int(labels.sum())}
    if preset.train.gan_labels == "classifier":
        rec["agreement_with_data"] = round(float((labels.cpu() == data_labels.cpu()).float().mean()), 4)
    return rec


def classifier_labels(clf: nn.Module, images: torch.Tensor, dev: torch.device, batch_size: int = 64) -> torch.Tensor:
    """The classifier's own calls (p >= 0.5 -> 1) on ``images`` (TrainOptions.gan_labels "classifier"); a
    classifier that calls every training scan one class gives the GAN nothing to learn: a one-line error."""
    calls = (_classifier_probs(clf, images, dev, batch_size).float() >= 0.5).long()
    if calls.min() == calls.max():
        raise MedxganError(f"gan_labels classifier: the classifier calls every one of the {len(calls)} training scans "
                           f"{'positive' if int(calls[0]) else 'negative'}; the GAN needs both classes", arg="gan_labels")
    return calls


@dataclass
class GanTrainConfig:
    """Everything that configures a `train_gan` run besides the data, the classifier and RUN. Stored in
    RUN/config.json (``train_config``) and read back with :meth:`from_run`.

    ``preset``: a preset name or a :class:`Preset`; its size must equal the data's (MedxganError
    otherwise); ``preset_overrides``: changes to the named preset's fields. ``lambda_cls``: classifier-loss
    weight (None: the preset's, 2 at 64 px, 1 at 128 px). ``oracle``: None -> train an independent
    classifier on the same data into RUN/oracle/ (the other built-in architecture or ``oracle_arch``, seed
    = classifier seed + 1, ``oracle_epochs``); a classifier spec -> copied into RUN/oracle/; an adapter
    object -> used as is (not stored: recorded as None); False -> no oracle metrics.
    ``log_every`` / ``sample_every`` / ``ckpt_every``: metrics, sample grids (None: = log_every) and
    checkpoints every N steps; the last ``keep_last`` checkpoints are kept. ``max_minutes``: stop early
    (and finish normally) after this much training time. ``monitor_samples``: number of fixed z1 for the
    monitor metrics (the authors' check uses many; 256). ``size``/``positive``/``negative``/``csv``/
    ``skip_bad``: data.load_dataset's options; ``classifier_source``: where an adapter object came from
    (recorded and copied). ``amp`` / ``channels_last`` / ``compile``: GPU speed options (runtime.precision,
    GANTrainer); None = the run's setting on resume, else off; with any of them on, a run is not covered by
    "same seed -> same numbers"."""

    preset: str | Preset = "default"
    steps: int = 5000
    batch_size: int = 32
    lambda_cls: float | None = None
    seed: int = 0
    log_every: int = 250
    sample_every: int | None = None  # None: = log_every
    ckpt_every: int = 500
    keep_last: int = 3
    oracle: Any = None
    oracle_arch: str | None = None
    oracle_epochs: int = 10
    size: int | None = None
    max_minutes: float | None = None
    positive: list[str] | None = None
    negative: list[str] | None = None
    csv: str | None = None
    skip_bad: bool = False
    classifier_source: str | None = None
    monitor_samples: int = 256
    preset_overrides: dict[str, Any] | None = None
    amp: str | None = None
    channels_last: bool | None = None
    compile: bool | None = None

    def check(self) -> "GanTrainConfig":
        check_args(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})  # runtime.checks' shared rules
        if self.steps < 1:
            raise MedxganError(f"steps {self.steps}: must be at least 1", arg="steps")
        if self.batch_size < 2:
            raise MedxganError(f"batch_size {self.batch_size}: must be at least 2", arg="batch_size")
        for name, v in (("--log-every", self.log_every), ("--ckpt-every", self.ckpt_every)):
            if v < 1:
                raise MedxganError(f"{name} {v}: must be at least 1")
        if self.sample_every is None:
            self.sample_every = self.log_every
        return self

    def mapping(self) -> dict[str, Any]:
        """The class-mapping options given (data.load_dataset's keywords)."""
        return {k: v for k, v in dict(positive=self.positive, negative=self.negative, csv=self.csv, skip_bad=self.skip_bad).items() if v}

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["preset"] = self.preset.to_dict() if isinstance(self.preset, Preset) else self.preset
        if isinstance(self.oracle, nn.Module):
            d["oracle"] = None
        elif self.oracle not in (None, False):
            d["oracle"] = str(self.oracle)
        return to_jsonable(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GanTrainConfig":
        d = {k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}}
        if isinstance(d.get("preset"), dict):
            d["preset"] = Preset.from_dict(d["preset"])
        return cls(**d)

    @classmethod
    def from_run(cls, run: str | os.PathLike) -> "GanTrainConfig":
        """The configuration a run was trained with (RUN/config.json, ``train_config``)."""
        rd = RunDir(run)
        stored = check_record(rd.read_config(expect_kind=GAN_KIND), GAN_RUN_FIELDS, rd.config_path).get("train_config")
        if stored is None:
            raise MedxganError(f"{run}: the run records no train_config (trained by an older medxgan)")
        return cls.from_dict(stored)


# ---- the training run -------------------------------------------------------------------------
@dataclass
class _TrainData:
    """The train split in memory (N x C x H x W images, N labels), where it came from and its class mapping."""

    images: torch.Tensor
    labels: torch.Tensor
    source: str | None
    mapping: dict[str, Any]

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])


def train_gan(data: Any, classifier: Any, out: str | os.PathLike, config: GanTrainConfig | None = None, *, resume: bool = False,
              device: str = "auto", quiet: bool = False, **options: Any) -> dict[str, Any]:
    """Train medXGAN on `data` against the frozen `classifier`; write the run to `out`.

    ``data``: dataset root (its train split is loaded once into memory), or (images, labels) tensors.
    ``classifier``: a classifier spec (a run dir is copied into RUN/classifier/) or a ClassifierAdapter.
    The settings are one :class:`GanTrainConfig` (``config``, each field documented there), stored in
    RUN/config.json under ``train_config``; keyword ``options`` set or override its fields
    (``train_gan(data, clf, out, steps=5000, preset="anchored")``). ``resume``: continue from RUN's latest
    checkpoint (same weights as an uninterrupted run on CPU; the run's stored config is the base when no
    ``config`` is given; only ``steps`` may change: runtime.loop's resume policy).
    Distributed (torchrun, or RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/PORT set): DistributedDataParallel,
    ``batch_size`` the global batch (divisible by N); rank 0 trains the oracle, logs, monitors and writes;
    every rank loads the same checkpoint on resume, whatever N was before.
    Returns the final monitor metrics plus steps and timing (on ranks other than 0: no metrics).
    """
    cfg = _resolve_config(config, out, resume, options)
    with distributed(pick_device(device)) as ctx:
        dev, main = ctx.device, ctx.is_main
        quiet = quiet or not main
        run = TrainingRun(out, GAN_KIND, is_main=main)
        run.check_start(resume)  # the directory half of the policy, before loading data
        td = _TrainData(*_load_data(data, cfg.size, cfg.mapping()), mapping=cfg.mapping())
        # preset and speed options: the run's own when resuming, so that the run continues with what it started with
        stored: dict[str, Any] = run.dir.read_config(expect_kind=GAN_KIND) if resume else {}
        preset = _resolve_preset(cfg, stored, td, ctx, out)
        lam = float(preset.train.lambda_cls if cfg.lambda_cls is None else cfg.lambda_cls)
        speed = _speed_options(cfg, stored, dev)
        clf, clf_source = _load_adapter(classifier, dev, "classifier")
        if hasattr(clf, "check_finite"):  # a classifier that outputs NaN/inf would poison every loss
            clf.check_finite(td.images[:64].to(dev), f"the first {min(64, len(td.images))} training images")
        clf_check = _classifier_check(clf, td.images, td.labels, dev)  # warns when it calls every training image one class
        # the labels the GAN learns from; the classifier's calls are checked here, before the oracle or any file
        gan_labels = classifier_labels(clf, td.images, dev) if preset.train.gan_labels == "classifier" else td.labels
        clf_source = clf_source or (str(cfg.classifier_source) if cfg.classifier_source else None)
        # the one resume policy (runtime.loop): what defines the run must not change on --resume
        settings = dict(data=fingerprint_state_dict({"images": td.images, "labels": td.labels}), seed=cfg.seed,
                        batch_size=cfg.batch_size, preset=preset.to_dict(), lambda_cls=lam, classifier=getattr(clf, "fingerprint", None),
                        steps=cfg.steps)
        run.open(resume, settings, may_change=("steps",))
        barrier()  # every rank has checked RUN before rank 0 writes into it
        clf_record, oracle_adapter, oracle_info = {}, None, None
        if main:  # rank 0 writes the run; the oracle is only used by its monitor
            clf_record = {**_copy_classifier(clf, clf_source, run), "check": clf_check}
            oracle_adapter, oracle_info = _prepare_oracle(cfg, run, td, clf_record, dev, quiet)
        barrier()  # the others wait while rank 0 copies the classifier and trains the oracle

        # networks, optimisers, RNG streams: seeded identically on every rank
        seed_everything(cfg.seed)
        images, labels = td.images.to(dev), gan_labels.to(dev)  # "classifier": what it separates, not what the data's labels do
        cls_medians = class_logit_medians(clf, images, labels) if preset.train.cls_target == "real-median" else None
        cls_labels = tuple(1.0 / (1.0 + math.exp(-m)) for m in cls_medians) if cls_medians else (0.0, 1.0)
        trainer = GANTrainer(preset, clf, dev, lambda_cls=lam, cls_labels=cls_labels, **speed)
        # the whole train split lives on the device: one gather per step, faster than a DataLoader
        steps_of = BatchSteps(trainer, images, labels, cfg.batch_size, cfg.seed)
        monitor = Monitor(clf, preset.net.nz1, preset.net.nz2, real_negatives=td.images[td.labels == 0], oracle=oracle_adapter,
                          n_z1=cfg.monitor_samples, n_diversity=min(128, cfg.monitor_samples)) if main else None
        run.begin(dict(
            preset=preset.to_dict(), preset_name=preset.name, net=preset.net.to_dict(), channels=td.channels, size=td.size,
            nz1=preset.net.nz1, nz2=preset.net.nz2, lambda_cls=lam, steps=cfg.steps, batch_size=cfg.batch_size, seed=cfg.seed,
            world_size=ctx.world_size, **speed, data=td.source, n_train=int(td.images.shape[0]),
            classifier={**clf_record, "adapter": clf.describe() if hasattr(clf, "describe") else None}, oracle=oracle_info,
            # how negative real healthy scans are for this classifier: the floor of the minimal mask's target
            classifier_reference=negative_logit_reference(clf, images[td.labels.to(dev) == 0]),  # the data's negatives
            cls_labels=list(cls_labels), gan_labels=_gan_labels_record(preset, labels, td.labels), ema=preset.train.ema_decay > 0, train_config=cfg.to_dict(),
        ))
        loop = run.train(steps_of, LoopOptions(
            total=cfg.steps, cadence=Cadence(cfg.log_every, cfg.sample_every, cfg.ckpt_every, cfg.keep_last), max_minutes=cfg.max_minutes,
            desc=f"train medXGAN ({preset.name})", quiet=quiet, device=dev, **_monitor_hooks(monitor, trainer, run, ctx.world_size)))
        metrics = loop.last_record
        if main and not metrics:  # resumed a finished run: evaluate what is there
            metrics = {"step": loop.step, **monitor.evaluate(trainer.generator)}
        run.finish(loop, weights=gan_weights(trainer.generator, trainer.D, trainer.E), metrics=metrics,
                   fingerprints={"classifier": settings["classifier"], "data": settings["data"]})
        if main and not quiet:
            print(f"[medxgan] GAN trained: {loop.step} steps in {loop.elapsed / 60:.1f} min; {summarize(metrics)} -> {run.path}", flush=True)
        barrier()  # the run is complete on disk before any rank returns
        return {"steps": loop.step, "train_seconds": loop.elapsed, "metrics": metrics, "out": str(run.path)}


def _resolve_config(config: GanTrainConfig | None, out: str | os.PathLike, resume: bool, options: dict[str, Any]) -> GanTrainConfig:
    """``config`` (on resume without one: the run's stored config; else the defaults) with ``options`` applied, checked."""
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(GanTrainConfig)})
    if unknown:
        raise TypeError(f"train_gan: unknown options {unknown}")
    if config is None and resume and RunDir(out).exists() and "train_config" in RunDir(out).read_config():
        config = GanTrainConfig.from_run(out)  # resuming: the run's own settings, unless given
    return dataclasses.replace(config or GanTrainConfig(), **options).check()


def _resolve_preset(cfg: GanTrainConfig, stored: dict[str, Any], td: _TrainData, ctx: DistContext, out: str | os.PathLike) -> Preset:
    """The run's Preset, checked against the data (size, channels) and the number of processes."""
    if isinstance(cfg.preset, Preset):
        preset = cfg.preset
    else:
        preset = get_preset(cfg.preset, channels=td.channels, **(cfg.preset_overrides or {}))
    old = stored.get("preset") if stored else None
    if isinstance(old, dict) and old.get("name") == preset.name and "inversion" in old:
        # a preset's inversion defaults are explanation settings, not training ones: a run resumes (and is later
        # explained) with those it started with, even where the preset's have changed since (minimal_mask_tv, 2026-12-06)
        preset = dataclasses.replace(preset, inversion=dict(old.get("inversion") or {}))
    if stored and cfg.batch_size % ctx.world_size:
        raise MedxganError(f"resume {out}: the run's batch size {cfg.batch_size} cannot be split evenly over "
                           f"{ctx.world_size} processes; resume with a number of processes that divides it", arg="resume")
    check_divisible(cfg.batch_size)
    where = td.source or "data"
    if preset.net.size != td.size:
        raise MedxganError(f"{where}: images are {td.size}x{td.size} px but preset {preset.name} is for {preset.net.size} px "
                           f"(choose a {td.size} px preset or resize the data with --size {preset.net.size})")
    if preset.net.channels != td.channels:
        raise MedxganError(f"{where}: images have {td.channels} channel(s), the network config {preset.net.channels}")
    return preset


def _speed_options(cfg: GanTrainConfig, stored: dict[str, Any], dev: torch.device) -> dict[str, Any]:
    """amp / channels_last / compile: as given, else the run's on resume, else off."""
    speed = {"amp": cfg.amp, "channels_last": cfg.channels_last, "compile": cfg.compile}
    speed = {k: stored.get(k, False if k != "amp" else "off") if v is None else v for k, v in speed.items()}
    speed["amp"] = check_amp(speed["amp"], dev)
    return speed


def _copy_classifier(clf: nn.Module, source: str | None, run: TrainingRun) -> dict[str, Any]:
    """(Rank 0.) The classifier's copy in RUN/classifier/ and its record (source, local copy, fingerprint, arch): a
    factory / Python object as weights + settings (classifiers.storage), a run dir, TorchScript or .pt2 file as is."""
    if run.stored:
        local = run.stored["classifier"].get("local")
    else:
        run.path.mkdir(parents=True, exist_ok=True)
        local = store_classifier(clf, run.path / CLASSIFIER_DIR) or copy_into_run(source, run.path / CLASSIFIER_DIR)
    return {"source": source, "local": local, "fingerprint": getattr(clf, "fingerprint", None), "arch": classifier_meta(source).get("arch")}


def _monitor_hooks(monitor: Monitor | None, trainer: GANTrainer, run: TrainingRun, world_size: int) -> dict[str, Any]:
    """The loop's hooks (rank 0): monitor metrics in every logged record, sample grids, the progress line."""

    def on_log(step: int, means: dict[str, Any]) -> dict[str, Any]:
        return {**monitor.evaluate(trainer.generator), "world_size": world_size}

    def on_sample(step: int) -> None:
        monitor.sample_grid(trainer.generator, run.path / "samples" / f"step_{step:07d}.png",
                            title=f"step {step}  (rows: fixed z1; p = classifier p(pos))")

    def postfix(rec: dict[str, Any]) -> str:
        return (f"D={rec['d_loss']:.2f} G={rec['g_loss']:.2f} D(x)={rec['d_real']:.2f} D(G)={rec['d_fake']:.2f} "
                f"agree={rec['cls_agree']:.2f} {summarize(rec)}")

    return {"on_log": on_log, "on_sample": on_sample, "postfix": postfix}


def _prepare_oracle(cfg: GanTrainConfig, run: TrainingRun, td: _TrainData, clf_record: dict[str, Any], dev: torch.device,
                    quiet: bool) -> tuple[nn.Module | None, dict[str, Any] | None]:
    """The oracle: an independently trained second classifier, never used to train G (rank 0 only).
    Returns (adapter or None, its record for config.json)."""
    oracle, stored = cfg.oracle, run.stored
    oracle_adapter, oracle_info = None, None
    if oracle is False:
        pass
    elif isinstance(oracle, nn.Module):
        oracle_adapter = oracle.to(dev)
        oracle_info = stored.get("oracle") or {"source": None, "local": None, "fingerprint": getattr(oracle, "fingerprint", None)}
    elif stored and (stored.get("oracle") or {}).get("local"):
        oracle_info = stored["oracle"]
        oracle_adapter, _ = _load_adapter(str(run.path / oracle_info["local"]), dev, "oracle")
    elif oracle is not None:
        oracle_adapter, o_src = _load_adapter(oracle, dev, "oracle")
        local = copy_into_run(o_src, run.path / ORACLE_DIR)
        oracle_info = {"source": o_src, "local": local, "fingerprint": getattr(oracle_adapter, "fingerprint", None),
                       "arch": classifier_meta(o_src).get("arch")}
    else:
        if td.source is None:
            raise MedxganError("oracle: data given as tensors; pass oracle= (a classifier) or oracle=False", arg="oracle")
        clf_meta = classifier_meta(clf_record["source"])
        o_arch = cfg.oracle_arch or ORACLE_ARCH.get(clf_meta.get("arch"), "resnet-small")
        o_seed = int(clf_meta.get("seed", cfg.seed)) + 1
        o_dir = run.path / ORACLE_DIR
        if not quiet:
            print(f"[medxgan] training the oracle classifier ({o_arch}, seed {o_seed}) into {o_dir}", flush=True)
        o_cfg = ClassifierTrainConfig(arch=o_arch, seed=o_seed, size=td.size, epochs=cfg.oracle_epochs, channels=td.channels,
                                      **td.mapping)
        train_classifier(td.source, o_dir, o_cfg, device=str(dev), resume=resume_or_restart(o_dir), quiet=quiet)
        oracle_adapter = load_classifier(o_dir, device=dev)
        oracle_info = {"source": None, "local": ORACLE_DIR, "fingerprint": oracle_adapter.fingerprint, "arch": o_arch,
                       "seed": o_seed, "epochs": cfg.oracle_epochs}
    if oracle_adapter is not None:
        oracle_adapter.eval().requires_grad_(False)
    return oracle_adapter, oracle_info
