"""`medxgan train-inpainter DATA --out RUN [--gan GAN]`: train the learned in-fill (gan/inpainter.py) on the negative
scans of DATA's train split (the classifier's healthy training scans) with random holes, through the project's one
training-loop skeleton (runtime.loop: resume, cadence, non-finite stop). With ``--gan`` the ``context+gan`` variant:
the GAN's anatomy B(E(x)) of each training scan (the run's encoder, inversion's starting point) is an extra input.

Objective per step: a batch of negatives (random horizontal flips), a random region R each (:func:`random_holes`),
the mean absolute error of the prediction inside R (L1: the usual inpainting loss; sharper than MSE's average).
Adam, the rate following a cosine from ``lr`` to ``lr / 10`` over the first invocation's steps (stored, so a
resumed run ends with the same weights as an uninterrupted one). Logged: the held-out L1 inside fixed holes of
validation negatives, next to the same error of the mean-healthy-scan in-fill (the reference a fill must beat).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from medxgan.data import load_dataset
from medxgan.gan.encoder_train import cosine_lr
from medxgan.gan.inpainter import INPAINTER_KIND, INPAINTER_WEIGHTS, InpaintNet, random_holes
from medxgan.runtime.checks import check_args, check_writable_dir
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.loop import Cadence, LoopOptions
from medxgan.runtime.outdir import claimed
from medxgan.runtime.run import TrainingRun
from medxgan.runtime.runs import fingerprint_module, fingerprint_state_dict
from medxgan.runtime.seeding import seed_everything

__all__ = ["InpainterConfig", "InpainterTrainer", "train_inpainter", "gan_anatomy"]



class InpainterTrainer:
    """The step contract of runtime.loop: one batch of negatives with random holes, L1 inside the holes."""

    def __init__(self, net: InpaintNet, x_train: torch.Tensor, anatomy: torch.Tensor | None, *, batch_size: int, lr: float,
                 lr_decay_steps: int, seed: int):
        self.net, self.x_train, self.anatomy = net, x_train, anatomy
        self.opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.999))
        self.sampler = torch.Generator().manual_seed(seed)
        self.batch_size, self.lr, self.lr_decay_steps, self.steps_done = batch_size, lr, lr_decay_steps, 0

    def step(self) -> dict[str, float]:
        for group in self.opt.param_groups:
            group["lr"] = cosine_lr(self.steps_done, self.lr_decay_steps, self.lr)
        n, size = self.batch_size, self.x_train.shape[-1]
        idx = torch.randint(0, self.x_train.shape[0], (n,), generator=self.sampler)
        flip = torch.rand(n, generator=self.sampler) < 0.5
        region = random_holes(n, size, self.sampler)
        x = torch.where(flip.view(-1, 1, 1, 1), self.x_train[idx].flip(-1), self.x_train[idx])
        b = None if self.anatomy is None else torch.where(flip.view(-1, 1, 1, 1), self.anatomy[idx].flip(-1), self.anatomy[idx])
        pred = self.net(x, region, b)
        loss = ((pred - x).abs() * region).sum() / (region.sum() * x.shape[1]).clamp(min=1.0)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.steps_done += 1
        return {"loss_l1_hole": float(loss.detach())}

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "sampler": self.sampler.get_state(), "steps_done": self.steps_done}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.net.load_state_dict(st["net"])
        self.opt.load_state_dict(st["opt"])
        self.sampler.set_state(st["sampler"].to(torch.uint8))
        self.steps_done = int(st["steps_done"])


@torch.no_grad()
def gan_anatomy(gan_run: str | os.PathLike, images: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, str]:
    """B(E(x)) = G(E1(x), 0) for each scan (the GAN run's encoder: a trained one or the anchor) and the generator's
    fingerprint. A run without an encoder is a one-line error."""
    from medxgan.gan.run import load_gan_run

    gan = load_gan_run(gan_run, load_oracle=False)
    G, E = gan.generator, gan.encoder
    if E is None:
        raise MedxganError(f"gan {gan_run}: the GAN run has no encoder (train one with `medxgan train-encoder`); the context+GAN "
                           "inpainter needs B(E(x)) of its training scans", arg="gan")
    if (int(G.size), int(G.channels)) != tuple(images.shape[-2:-1]) + (images.shape[1],):
        raise MedxganError(f"gan {gan_run}: generator makes {G.channels} x {G.size} px scans, the data was loaded at "
                           f"{images.shape[1]} x {images.shape[-1]} px", arg="gan")
    out = []
    for s in range(0, images.shape[0], batch_size):
        z1 = E.encode_mean(images[s : s + batch_size])[0]
        out.append(G(z1, torch.zeros(z1.shape[0], G.nz2)))
    return torch.cat(out), fingerprint_module(G)


def _negatives(data: str, split: str, size: int, channels: int, mapping: dict[str, Any]) -> torch.Tensor:
    x, y, _, _ = load_dataset(data, split=split, size=size, channels=channels, **mapping).tensors()
    neg = x[y == 0].float()
    if neg.shape[0] == 0:
        raise MedxganError(f"{data}: no negative scans in its {split} split (the inpainter learns from healthy scans)")
    return neg


def _gan_shape(gan: str | os.PathLike) -> tuple[int, int]:
    from medxgan.gan.run import load_generator

    try:
        G, _ = load_generator(gan)
    except MedxganError as exc:
        raise MedxganError(f"gan {gan}: {exc}", arg="gan") from None
    return int(G.size), int(G.channels)


def _heldout_l1(net: InpaintNet, x: torch.Tensor, b: torch.Tensor | None, region: torch.Tensor, mean_scan: torch.Tensor) -> dict[str, float]:
    was = net.training
    net.eval()
    with torch.no_grad():
        pred = net(x, region, b)
    net.train(was)
    area = (region.sum() * x.shape[1]).clamp(min=1.0)
    return {"val_l1_hole": float(((pred - x).abs() * region).sum() / area),
            "val_l1_hole_mean_fill": float(((mean_scan - x).abs() * region).sum() / area)}


@dataclass(frozen=True)
class InpainterConfig:
    """How an inpainter is trained (stored in the run's config.json; the defaults are the ones measured in
    benchmarks/perturbation/RESULTS.md).

    Attributes:
        steps, batch_size, lr, width: Adam steps, scans per step, rate (cosine to lr/10 over ``lr_decay_steps``, default:
            the first invocation's ``steps``), network width.
        size, channels: the scans' size and channels (default: the GAN's with ``gan``, else 64 px x 1).
        log_every, ckpt_every: every how many steps the held-out error is logged and a checkpoint written.
    """

    steps: int = 1000
    batch_size: int = 12
    lr: float = 1e-3
    width: int = 12
    seed: int = 0
    size: int | None = None
    channels: int | None = None
    lr_decay_steps: int | None = None
    log_every: int = 250
    ckpt_every: int = 500

    def check(self) -> "InpainterConfig":
        check_args(steps=self.steps, batch_size=self.batch_size, lr=self.lr, width=self.width, seed=self.seed, log_every=self.log_every,
                   ckpt_every=self.ckpt_every, size=self.size)
        if self.steps < 1:
            raise MedxganError(f"steps {self.steps}: must be >= 1", arg="steps")
        if self.channels not in (None, 1, 3):
            raise MedxganError(f"channels {self.channels}: must be 1 or 3", arg="channels")
        return self


def _shape(cfg: InpainterConfig, gan: str | os.PathLike | None) -> tuple[int, int]:
    """(size, channels) of the scans: the GAN's with ``gan`` (a different explicit value is an error), else the config's."""
    size, channels = cfg.size, cfg.channels
    if gan is not None:
        g_size, g_channels = _gan_shape(gan)  # a bad GAN run: one line, before the data is read
        if (size or g_size) != g_size or (channels or g_channels) != g_channels:
            raise MedxganError(f"size {size} / channels {channels}: the context+GAN inpainter works at the GAN's {g_size} px x "
                               f"{g_channels} channel(s)", arg=("size", "channels"))
        return g_size, g_channels
    return int(size or 64), int(channels or 1)


def train_inpainter(data: str | os.PathLike, out: str | os.PathLike, config: InpainterConfig | None = None, *,
                    gan: str | os.PathLike | None = None, resume: bool = False, max_minutes: float | None = None,
                    mapping: dict[str, Any] | None = None, quiet: bool = False) -> dict[str, Any]:
    """Train an inpainter (settings: ``config``) on the negatives of ``data``'s train split into run directory ``out``.

    Args:
        gan: a `medxgan train` run: train the ``context+gan`` variant (B(E(x)) as an extra input), at the
            generator's size and channels; without it the ``context`` variant.
        resume: continue ``out`` from its latest checkpoint (same weights on CPU as an uninterrupted run).
        max_minutes: stop (and finish normally) after this much training time.
        mapping: class-mapping keywords of :func:`medxgan.data.load_dataset` (positive, negative, csv, skip_bad).
    Returns ``{"steps", "train_seconds", "metrics", "out"}``.
    """
    cfg = (config or InpainterConfig()).check()
    check_args(max_minutes=max_minutes)
    if not os.path.isdir(data):
        raise MedxganError(f"{data}: not a directory (a dataset in the project's layout)")
    check_writable_dir(out)
    size, channels = _shape(cfg, gan)
    run = TrainingRun(out, INPAINTER_KIND)
    with claimed(run.path, INPAINTER_KIND):
        run.check_start(resume)  # the directory half of the resume policy, before the data is read
        stored = run.dir.read_config() if resume else {}
        lr_decay_steps = int(cfg.lr_decay_steps or stored.get("lr_decay_steps") or cfg.steps)
        x_train = _negatives(str(data), "train", size, channels, mapping or {})
        try:
            x_val = _negatives(str(data), "val", size, channels, mapping or {})
        except MedxganError:
            x_val = x_train
        x_val = x_val[torch.randperm(x_val.shape[0], generator=torch.Generator().manual_seed(cfg.seed))[:64]]
        anatomy = b_val = gan_fp = None
        if gan is not None:
            anatomy, gan_fp = gan_anatomy(gan, x_train)
            b_val, _ = gan_anatomy(gan, x_val)
        variant = "context+gan" if gan is not None else "context"
        settings = dict(data=fingerprint_state_dict({"images": x_train}), variant=variant, gan=gan_fp, size=size, channels=channels,
                        seed=cfg.seed, batch_size=cfg.batch_size, lr=cfg.lr, width=cfg.width, lr_decay_steps=lr_decay_steps, steps=cfg.steps)
        run.open(resume, settings, may_change=("steps", "max_minutes"))
        seed_everything(cfg.seed)
        net = InpaintNet(channels, width=cfg.width, gan_channel=gan is not None).train()
        trainer = InpainterTrainer(net, x_train, anatomy, batch_size=cfg.batch_size, lr=cfg.lr, lr_decay_steps=lr_decay_steps, seed=cfg.seed)
        run.begin(dict(data=str(data), gan=None if gan is None else str(gan), gan_fingerprint=gan_fp, variant=variant, size=size,
                       channels=channels, width=cfg.width, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, lr_decay_steps=lr_decay_steps,
                       seed=cfg.seed, n_train=int(x_train.shape[0])))
        val_region = random_holes(x_val.shape[0], size, torch.Generator().manual_seed(cfg.seed + 1))
        mean_scan = x_train.mean(0, keepdim=True)
        loop = run.train(trainer, LoopOptions(
            total=cfg.steps, cadence=Cadence(cfg.log_every, 0, cfg.ckpt_every, 2), max_minutes=max_minutes,
            desc="train inpainter", on_log=lambda step, means: _heldout_l1(net, x_val, b_val, val_region, mean_scan), quiet=quiet,
            postfix=lambda r: f"held-out L1 {r['val_l1_hole']:.3f} (mean fill {r['val_l1_hole_mean_fill']:.3f})"))
        metrics = loop.last_record or {"step": loop.step, **_heldout_l1(net, x_val, b_val, val_region, mean_scan)}
        run.finish(loop, weights={INPAINTER_WEIGHTS: net}, metrics=metrics,
                   fingerprints={"gan": gan_fp, "data": settings["data"]} if gan_fp else {"data": settings["data"]})
    if not quiet:
        print(f"[medxgan] inpainter ({variant}) trained: {loop.step} steps in {loop.elapsed / 60:.1f} min; held-out L1 in the holes "
              f"{metrics['val_l1_hole']:.3f} (mean healthy scan {metrics['val_l1_hole_mean_fill']:.3f}) -> {run.path}", flush=True)
    return {"steps": loop.step, "train_seconds": loop.elapsed, "metrics": metrics, "out": str(run.path)}
