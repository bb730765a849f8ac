"""`medxgan train-encoder RUN`: an encoder E(x) -> (z1, z2) trained after the GAN, as inversion's start.

Why: inverting one image from scratch costs hundreds of Adam steps through G and the classifier (the
authors' demo: 1,000 steps at batch size 1). An encoder that predicts the codes in one forward pass
("amortised inversion", as in GAN-inversion encoders such as Zhu et al. 2020's in-domain inversion)
puts inversion next to its optimum, so a few tens of refinement steps reach the same reconstruction.

Objective per step (G and the classifier frozen, gradients flow through them into E only):

* generated half: y ~ Bernoulli(1/2), (z1, z2) by the medXGAN sampling rule, x = G(z1, z2) -- the
  true codes are known, so ``w_code * (MSE(E1(x), z1) + MSE(E2(x), z2))`` (z2 = 0 for negatives
  teaches E that "no pathology" means z2 = 0), optionally plus ``w_gen_pix * MSE(G(E(x)), x)``;
* real half: training images of both classes, ``w_pix * MSE(G(E(x)), x) + w_cls * BCE(p(G(E(x))), p(x))``
  with the target probability detached -- exactly the loss `invert` minimises, so E learns to
  predict the codes the inversion would find.

The encoder is stored as a sub-run ``RUN/encoder/`` (config.json of kind ``medxgan-encoder``,
encoder.safetensors, metrics.jsonl, checkpoints/ for ``--resume``). `load_generator` attaches it to
the generator, and `MedXGAN.load` then runs the short inversion schedule (``ENCODER_INVERSION_STEPS``
steps from E(x), one start) unless steps/restarts are given explicitly.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from medxgan.data import load_dataset
from medxgan.gan.encoder import LatentEncoder
from medxgan.gan.inversion import invert
from medxgan.gan.networks import sample_latents
from medxgan.gan.run import (
    ENCODER_INVERSION_RESTARTS, ENCODER_INVERSION_STEPS, ENCODER_KIND, ENCODER_RUN_FIELDS, ENCODER_WEIGHTS, encoder_dir, load_gan_run,
)
from medxgan.runtime.atomic import to_jsonable
from medxgan.runtime.device import pick_device
from medxgan.runtime.checks import check_args
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.loop import Cadence, LoopOptions
from medxgan.runtime.outdir import claimed
from medxgan.runtime.records import check_record
from medxgan.runtime.run import TrainingRun
from medxgan.runtime.runs import fingerprint_module, fingerprint_state_dict
from medxgan.runtime.seeding import seed_everything
from medxgan.runtime.settings import replace_fields
from medxgan.runtime.tensors import frozen, psnr

def cosine_lr(step: int, steps: int, lr: float, floor: float = 0.1) -> float:
    """lr * (floor + (1 - floor) * (1 + cos(pi * step / steps)) / 2): lr at step 0, lr * floor at the end."""
    return lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / max(1, steps))))


def _real_images(data: str, size: int, channels: int, split: str, mapping: dict[str, Any]) -> torch.Tensor:
    """The split's images at the generator's size and channel count (converted by the data layer)."""
    return load_dataset(data, split=split, size=size, channels=channels, **mapping).tensors()[0].float()


@torch.no_grad()
def _quick_eval(E: LatentEncoder, G: torch.nn.Module, clf: Any, x: torch.Tensor, gen: torch.Generator) -> dict[str, float]:
    """PSNR / probability gap of G(E(x)) on fixed real images, code error on fixed generated ones."""
    was = E.training
    E.eval()
    mu1, _, mu2, _ = E(x)
    rec = G(mu1, mu2)
    y = torch.arange(x.shape[0], device=x.device) % 2
    z1, z2 = sample_latents(y, G.nz1, G.nz2, generator=gen)
    z1, z2 = z1.to(x.device), z2.to(x.device)
    e1, _, e2, _ = E(G(z1, z2))
    E.train(was)
    return {
        "psnr_encoder": float(psnr(rec, x).mean()),
        "prob_gap_encoder": float((clf.prob(rec) - clf.prob(x)).abs().mean()),
        "code_mse_z1": float(F.mse_loss(e1, z1)),
        "code_mse_z2": float(F.mse_loss(e2, z2)),
    }


class EncoderTrainer:
    """The step contract of runtime.loop for the inversion encoder E (G and the classifier frozen): each
    batch is half generated (code loss on known z) and half real (pixel + classifier inversion loss)."""

    def __init__(self, E: LatentEncoder, G: torch.nn.Module, clf: Any, x_train: torch.Tensor, *, batch_size: int, lr: float,
                 lr_decay_steps: int, seed: int, w_code: float, w_pix: float, w_cls: float, w_gen_pix: float):
        self.E, self.G, self.clf, self.x_train = E, G, clf, x_train
        self.opt = torch.optim.Adam(E.parameters(), lr=lr, betas=(0.5, 0.999))
        self.sampler = torch.Generator().manual_seed(seed)
        self.lr, self.lr_decay_steps, self.steps_done = lr, lr_decay_steps, 0
        self.n_real, self.n_gen = batch_size - batch_size // 2, batch_size // 2
        self.w_code, self.w_pix, self.w_cls, self.w_gen_pix = w_code, w_pix, w_cls, w_gen_pix

    def step(self) -> dict[str, float]:
        E, G, clf, opt, sampler, dev = self.E, self.G, self.clf, self.opt, self.sampler, self.x_train.device
        n_real, n_gen = self.n_real, self.n_gen
        for group in opt.param_groups:
            group["lr"] = cosine_lr(self.steps_done, self.lr_decay_steps, self.lr)
        idx = torch.randint(0, self.x_train.shape[0], (n_real,), generator=sampler).to(dev)
        y = torch.randint(0, 2, (n_gen,), generator=sampler).to(dev)
        z1, z2 = sample_latents(y, G.nz1, G.nz2, generator=sampler)
        z1, z2 = z1.to(dev), z2.to(dev)
        with torch.no_grad():
            x_gen = G(z1, z2)
            x_real = self.x_train[idx]
            p_real = clf.prob(x_real).float()
        mu1, _, mu2, _ = E(torch.cat([x_gen, x_real]))
        loss_code = F.mse_loss(mu1[:n_gen], z1) + F.mse_loss(mu2[:n_gen], z2)
        if self.w_gen_pix:  # one G pass for both halves
            out_all = G(mu1, mu2)
            loss_gen_pix, out = F.mse_loss(out_all[:n_gen], x_gen), out_all[n_gen:]
        else:
            loss_gen_pix, out = torch.zeros((), device=dev), G(mu1[n_gen:], mu2[n_gen:])
        loss_pix = F.mse_loss(out, x_real)
        loss_cls = F.binary_cross_entropy_with_logits(clf.logit(out).float(), p_real)
        loss = self.w_code * loss_code + self.w_pix * loss_pix + self.w_cls * loss_cls + self.w_gen_pix * loss_gen_pix
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self.steps_done += 1
        return {"loss": float(loss.detach()), "loss_code": float(loss_code.detach()), "loss_pix": float(loss_pix.detach()),
                "loss_gen_pix": float(loss_gen_pix.detach()), "loss_cls": float(loss_cls.detach())}

    def state_dict(self) -> dict[str, Any]:
        return {"E": self.E.state_dict(), "opt": self.opt.state_dict(), "sampler": self.sampler.get_state(), "steps_done": self.steps_done}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.E.load_state_dict(st["E"])
        self.opt.load_state_dict(st["opt"])
        self.sampler.set_state(st["sampler"].to(torch.uint8))
        self.steps_done = int(st["steps_done"])


@dataclass
class EncoderTrainConfig:
    """Everything that configures a `train_encoder` run besides the GAN run, the data and the device (the
    CLI builds it, RUN/encoder/config.json stores it under ``train_config``).

    ``steps``, ``batch_size``, ``lr``: Adam(lr, betas 0.5/0.999) steps; each batch is half generated, half
    real. The rate follows a cosine from lr down to lr / 10 over ``lr_decay_steps`` (None: the ``steps`` of
    the first invocation, stored, so that an interrupted run resumed with the same steps ends with the same
    weights; continuing beyond it keeps lr / 10). ``width``: encoder width (channels of its first conv
    layer; doubled per stage up to 8x). ``w_code``, ``w_pix``, ``w_cls``: weights of the code loss
    (generated half) and of the inversion loss (pixel MSE, classifier BCE; real half). ``w_gen_pix``: a
    pixel loss MSE(G(E(x)), x) on the generated half too; off by default: with 10 it cost 20 % more time
    and changed nothing (PSNR after 75 refinement steps 24.17 vs 24.18 dB on 32 held-out brain positives).
    ``eval_images``: validation images (test split without a val split) for the metrics logged every
    ``log_every`` steps; checkpoints every ``ckpt_every`` steps, the last ``keep_last`` kept;
    ``max_minutes``: stop (and finish normally) after this much training time; ``positive``/``negative``/
    ``csv``/``skip_bad``: the class mapping of data.load_dataset."""

    steps: int = 8000
    batch_size: int = 32
    lr: float = 1e-3
    width: int = 32
    w_code: float = 1.0
    w_pix: float = 10.0
    w_cls: float = 1.0
    w_gen_pix: float = 0.0
    lr_decay_steps: int | None = None
    seed: int = 0
    log_every: int = 250
    ckpt_every: int = 500
    keep_last: int = 2
    max_minutes: float | None = None
    eval_images: int = 64
    positive: list[str] | None = None
    negative: list[str] | None = None
    csv: str | None = None
    skip_bad: bool = False

    def check(self) -> "EncoderTrainConfig":
        """Out-of-range values refused in one line naming the option (runtime.checks' shared rules first)."""
        check_args(steps=self.steps, batch_size=self.batch_size, lr=self.lr, width=self.width, seed=self.seed, log_every=self.log_every,
                   ckpt_every=self.ckpt_every, max_minutes=self.max_minutes, eval_images=self.eval_images)
        if self.steps < 1 or self.batch_size < 2:
            raise MedxganError(f"steps {self.steps} / batch_size {self.batch_size}: need steps >= 1 and batch size >= 2",
                               arg=("steps", "batch_size"))
        return self

    def mapping(self) -> dict[str, Any]:
        """The class-mapping options given (data.load_dataset's keywords)."""
        return {k: v for k, v in dict(positive=self.positive, negative=self.negative, csv=self.csv, skip_bad=self.skip_bad).items() if v}

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(dataclasses.asdict(self))


def train_encoder(gan_run: str | os.PathLike, data: str | os.PathLike | None = None, config: EncoderTrainConfig | None = None, *,
                  resume: bool = False, device: str = "auto", quiet: bool = False, **options: Any) -> dict[str, Any]:
    """Train the inversion encoder of GAN run ``gan_run`` and store it in ``gan_run/encoder/``.

    ``data``: dataset root (default: the one the GAN was trained on, from its config.json); its train split
    trains E, up to ``eval_images`` images of its val split (test split if there is none) give the logged
    metrics. ``config``: an :class:`EncoderTrainConfig` (default: its defaults); keyword ``options`` set or
    override its fields (``train_encoder(run, steps=6000)``). ``resume``: continue from the latest
    checkpoint in ``gan_run/encoder/`` (same weights on CPU as an uninterrupted run; only ``steps`` may change).
    Returns the final metrics, including those of the short inversion started from E
    (``ENCODER_INVERSION_STEPS`` steps x 1 start) on the evaluation images.
    """
    cfg = replace_fields(config or EncoderTrainConfig(), "train_encoder option", **options).check()
    dev = pick_device(device)
    gan = load_gan_run(gan_run, device=dev, load_oracle=False, attach_encoder=False)
    G, clf, gcfg = gan.generator, gan.classifier, gan.config
    run = TrainingRun(encoder_dir(gan_run), ENCODER_KIND, out_arg=None)
    # one writer on RUN/encoder/ (an OS lock, as every command's --out: runtime.outdir), a second one refused naming its PID
    with claimed(run.path, ENCODER_KIND, arg=None, legacy=("config.json",)):
        run.check_start(resume)  # the directory half of the policy, before loading data
        stored = check_record(run.dir.read_config(), ENCODER_RUN_FIELDS, run.dir.config_path) if resume else {}  # a bad field: one line
        lr_decay_steps = int(cfg.lr_decay_steps or stored.get("lr_decay_steps") or cfg.steps)
        data_src = str(data) if data is not None else (gcfg.get("data") if not resume else stored.get("data"))
        if not data_src:
            raise MedxganError(f"{gan.path}: the GAN run does not record its data set; pass DATA")
        x_train, x_eval = _train_and_eval_images(data_src, G, cfg)
        x_eval = x_eval.to(dev)
        settings = dict(data=fingerprint_state_dict({"images": x_train}), gan=fingerprint_module(G), classifier=getattr(clf, "fingerprint", None),
                        seed=cfg.seed, batch_size=cfg.batch_size, lr=cfg.lr, width=cfg.width, w_code=cfg.w_code, w_pix=cfg.w_pix,
                        w_cls=cfg.w_cls, w_gen_pix=cfg.w_gen_pix, lr_decay_steps=lr_decay_steps, steps=cfg.steps)
        run.open(resume, settings, may_change=("steps",))

        seed_everything(cfg.seed)
        E = LatentEncoder(gcfg["net"], width=cfg.width).to(dev).train()
        trainer = EncoderTrainer(E, G, clf, x_train.to(dev), batch_size=cfg.batch_size, lr=cfg.lr, lr_decay_steps=lr_decay_steps,
                                 seed=cfg.seed, w_code=cfg.w_code, w_pix=cfg.w_pix, w_cls=cfg.w_cls, w_gen_pix=cfg.w_gen_pix)
        run.begin(dict(gan=str(gan.path), data=data_src, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, width=cfg.width,
                       w_code=cfg.w_code, w_pix=cfg.w_pix, w_cls=cfg.w_cls, w_gen_pix=cfg.w_gen_pix, lr_decay_steps=lr_decay_steps,
                       seed=cfg.seed, n_train=int(x_train.shape[0]), classifier_fingerprint=getattr(clf, "fingerprint", None),
                       train_config=cfg.to_dict()))
        eval_gen_seed = cfg.seed + 12345

        def on_log(step: int, means: dict[str, Any]) -> dict[str, Any]:
            return _quick_eval(E, G, clf, x_eval, torch.Generator().manual_seed(eval_gen_seed))

        with frozen(G, clf):
            loop = run.train(trainer, LoopOptions(
                total=cfg.steps, cadence=Cadence(cfg.log_every, 0, cfg.ckpt_every, cfg.keep_last), max_minutes=cfg.max_minutes,
                on_log=on_log, desc="train encoder", quiet=quiet, device=dev,
                postfix=lambda r: f"PSNR(G(E(x))) {r['psnr_encoder']:.1f} dB  code MSE {r['code_mse_z1']:.3f}/{r['code_mse_z2']:.3f}"))
        step, elapsed, rec = loop.step, loop.elapsed, loop.last_record

        E.eval().requires_grad_(False)
        if not rec:
            rec = {"step": step, **_quick_eval(E, G, clf, x_eval, torch.Generator().manual_seed(eval_gen_seed))}
        inv = invert(G, clf, x_eval, steps=ENCODER_INVERSION_STEPS, restarts=ENCODER_INVERSION_RESTARTS, encoder=E, seed=cfg.seed)
        final = {**rec, "psnr_inversion": float(inv.psnr.mean()), "prob_gap_inversion": float(inv.prob_gap.mean()),
                 "inversion_steps": ENCODER_INVERSION_STEPS, "n_eval": int(x_eval.shape[0])}
        run.finish(loop, weights={ENCODER_WEIGHTS: E}, metrics=final,
                   fingerprints={"gan": settings["gan"], "classifier": settings["classifier"], "data": settings["data"]})
        if not quiet:
            print(f"[medxgan] encoder trained: {step} steps in {elapsed / 60:.1f} min; PSNR G(E(x)) {final['psnr_encoder']:.1f} dB, "
                  f"after {ENCODER_INVERSION_STEPS} inversion steps {final['psnr_inversion']:.1f} dB -> {run.path}", flush=True)
        return {"steps": step, "train_seconds": elapsed, "metrics": final, "out": str(run.path)}


def _train_and_eval_images(data: str, G: torch.nn.Module, cfg: EncoderTrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The train split, and up to ``eval_images`` seeded picks of the val split (test split without one), at
    the generator's size and channel count."""
    size, mapping = int(G.size), cfg.mapping()
    x_train = _real_images(data, size, G.channels, "train", mapping)
    try:
        x_eval = _real_images(data, size, G.channels, "val", mapping)
    except MedxganError:
        x_eval = _real_images(data, size, G.channels, "test", mapping)
    return x_train, x_eval[torch.randperm(x_eval.shape[0], generator=torch.Generator().manual_seed(cfg.seed))[: cfg.eval_images]]
