"""Latent inversion: find (z1*, z2*) with G(z1*, z2*) ~ x, matching pixels and the classifier's opinion.

Loss per image (summed over the batch, so each image's gradient involves only its own codes; Adam's
update is per parameter element, hence inverting a batch equals inverting each image alone)::

    w_pix * mean((G(z) - x)^2) + w_cls * BCE(p_pos(G(z)), p_pos(x)) [+ w_prior * mean(z^2)]

with the target p_pos(x) detached. The generator runs in eval mode (BatchNorm running statistics;
the authors' demo used train mode, which couples the images of a batch and is a bug) and neither the
generator nor the classifier receives gradients. Adam with betas (0.5, 0.999) as in the authors' code.

Restarts run side by side as one larger batch; restart 0 starts at z1 = 0 (``z1_init="zeros"``), the
others at z1 ~ N(0, I); z2 always starts at N(0, I). The random starting codes depend only on
(seed, restart), not on the image or its position in the batch. The best restart (lowest final loss)
is kept per image. Early stop: an image whose loss has not improved by ``min_rel_improvement`` for
``early_stop_patience`` steps is frozen (its codes are restored after each Adam step) and its best
codes are returned.

Pivotal tuning (``tune_generator=True``, Roich et al. 2022): afterwards a copy of the generator is
fine-tuned per image so that G'(z1*, z2*) reproduces x more closely, with a locality regulariser that
keeps G' ~ G on random codes (half of them with z2 = 0) and keeps the classifier's view of the
counterfactual, p(G'(z1*, 0)) ~ p(G(z1*, 0)). Off by default.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medxgan.runtime.errors import MedxganError
from medxgan.runtime.precision import check_amp, forward
from medxgan.runtime.settings import replace_fields
from medxgan.runtime.progress import progress
from medxgan.runtime.tensors import frozen, psnr

# Defaults. Measured (CPU, 8 images, known-code targets G(z) and real phantom scans) only on a 16 px toy
# generator and on a 200-step (barely trained) 64 px dcgan generator -- no fully trained generator existed
# yet; re-measure on one. There: lr 0.01 < 0.05 ~ 0.1 in PSNR after 400 steps (0.1 slightly better but
# noisier), PSNR still rising at 300-400 steps, a second (random z1) restart +1.7 dB mean PSNR and won for
# 7/8 images, w_cls = 0 leaves |p(G(z)) - p(x)| ~ 0.5 on real scans (w_cls = 1: 0.07).
DEFAULT_STEPS = 400
DEFAULT_LR = 0.05
DEFAULT_RESTARTS = 2
DEFAULT_W_PIX = 10.0
DEFAULT_W_CLS = 1.0
DEFAULT_PATIENCE = 50


@dataclass
class InversionResult:
    """Per-image results of :func:`invert` (all tensors on the CPU, first dim N).

    Attributes:
        z1: N x nz1, z2: N x nz2 — the inverted codes.
        reconstructions: N x C x H x W, G(z1, z2) (with the tuned generator when tuning was on).
        psnr: (N,) PSNR of the reconstruction in dB (peak-to-peak range 2 of [-1, 1]).
        prob_gap: (N,) |p_pos(G(z)) - p_pos(x)|.
        loss: (N,) final (best) inversion loss.
        steps_run: (N,) Adam steps taken before the image was frozen (or ``steps``).
        restart: (N,) index of the restart that won.
        generators: per-image tuned generators (pivotal tuning), or None.
    """

    z1: Tensor
    z2: Tensor
    reconstructions: Tensor
    psnr: Tensor
    prob_gap: Tensor
    loss: Tensor
    steps_run: Tensor
    restart: Tensor
    generators: list[nn.Module] | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.z1.shape[0])


COUNTERFACTUALS = ("generator", "residual")


def counterfactual_images(gen: nn.Module, z1: Tensor, z2: Tensor, x: Tensor, amp: str = "off") -> tuple[Tensor, Tensor, Tensor]:
    """(x_pos = G(z1, z2), x_neg = G(z1, 0), x_res) for codes of the scans x (all N x C x H x W).

    x_res is the counterfactual of the scan itself: the generator's pathology change applied to x,
    keeping every pixel the generator does not change. A masked generator (``pathology="mask"``,
    G = B (1 - gM) + gM R) replaces x by its anatomy B(z1) where the mask is on:
    ``x_res = (1 - gM) x + gM B(z1)``; any other generator subtracts its change:
    ``x_res = clamp(x - (x_pos - x_neg), -1, 1)``."""
    if getattr(gen, "masked", False):
        x_pos, base, gm = forward(amp, z1.device, lambda a, b: gen(a, b, return_parts=True), z1, z2)
        return x_pos, base, x + gm * (base - x)
    x_pos = forward(amp, z1.device, gen, z1, z2)
    x_neg = forward(amp, z1.device, gen, z1, torch.zeros_like(z2))
    return x_pos, x_neg, (x - (x_pos - x_neg)).clamp(-1.0, 1.0)


def _per_image_loss(gen: nn.Module, clf: Any, z1: Tensor, z2: Tensor, x: Tensor, p_x: Tensor, cfg: InversionConfig, amp: str = "off",
                    disc: nn.Module | None = None) -> tuple[Tensor, Tensor]:
    """(loss per image (N,), G(z1, z2)) with the weights of ``cfg`` (see the module docstring)."""
    w_pix, w_cls, w_prior, w_cf, w_min, w_real = cfg.w_pix, cfg.w_cls, cfg.w_prior, cfg.w_cf, cfg.w_min, cfg.w_real
    counterfactual = cfg.counterfactual
    if w_cf or w_min or w_real:  # the counterfactual must be negative (keeps the pathology out of z1) and, for the
        # residual counterfactual, change as little of the scan as it can
        out, x_neg, x_res = counterfactual_images(gen, z1, z2, x, amp)
        x_cf = x_res if counterfactual == "residual" else x_neg
    else:
        out = forward(amp, z1.device, gen, z1, z2)  # amp: autocast forward, float32 output; the loss in float32
    loss = w_pix * (out - x).pow(2).flatten(1).mean(1)
    if w_cls:
        loss = loss + w_cls * F.binary_cross_entropy_with_logits(forward(amp, z1.device, clf.logit, out), p_x, reduction="none")
    if w_cf:
        cf_logit = forward(amp, z1.device, clf.logit, x_cf)
        loss = loss + w_cf * F.binary_cross_entropy_with_logits(cf_logit, torch.zeros_like(cf_logit), reduction="none")
    if w_min:
        loss = loss + w_min * (x_cf - x).abs().flatten(1).mean(1)
    if w_real:  # the counterfactual must pass the GAN's discriminator as a real scan of the negative class
        y0 = torch.zeros(x_cf.shape[0], dtype=torch.long, device=x_cf.device) if getattr(disc, "conditional", False) else None
        loss = loss + w_real * F.softplus(-forward(amp, z1.device, lambda a: disc(a, y0), x_cf).float())
    if w_prior:
        loss = loss + w_prior * 0.5 * (z1.pow(2).mean(1) + z2.pow(2).mean(1))
    return loss, out


def _initial_codes(n: int, nz1: int, nz2: int, restarts: int, z1_init: str, seed: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(restarts * n) x nz codes, restart-major. Restart r's start is the same for every image."""
    z1s, z2s = [], []
    for r in range(restarts):
        g = torch.Generator().manual_seed(1_000_003 * (int(seed) + 1) + r)
        z1 = torch.randn(nz1, generator=g)
        z2 = torch.randn(nz2, generator=g)
        if z1_init == "zeros" and r == 0:
            z1 = torch.zeros(nz1)
        z1s.append(z1.expand(n, nz1))
        z2s.append(z2.expand(n, nz2))
    return torch.cat(z1s).to(device).clone(), torch.cat(z2s).to(device).clone()


@dataclass(frozen=True)
class InversionConfig:
    """The options of :func:`invert` (stored with evaluations and explanations; a GAN preset's ``inversion``
    dict and ``MedXGAN.load(..., steps=...)`` keywords become one of these).

    Attributes:
        steps: maximum Adam steps per restart. lr: Adam learning rate (betas 0.5, 0.999).
        z1_init: ``"zeros"`` (restart 0 starts at z1 = 0, the mean code; the others random) or
            ``"random"`` (all restarts random).
        restarts: number of starting points per image; the lowest final loss wins.
        w_pix, w_cls, w_prior: loss weights (pixel MSE, classifier BCE, optional Gaussian prior on z).
        w_cf: weight of BCE(p_pos(x_cf), 0): the counterfactual of the inverted codes must be
            negative, so the pathology cannot hide in z1 (0 = off).
        counterfactual: which counterfactual ``w_cf`` and ``w_min`` act on (and the explanations explain):
            ``"generator"`` (x_neg = G(z1, 0)) or ``"residual"`` (the scan with the generator's change removed;
            see :func:`counterfactual_images`).
        w_min: weight of mean|x_cf - x| (minimality: the counterfactual changes as little as it can).
        w_real: weight of softplus(-D(x_cf, negative)): the counterfactual must look like a real healthy
            scan to the GAN's own discriminator, not only fall below the classifier's threshold (a few
            changed pixels can flip a classifier; D was trained on real negatives). 0 = off; needs D.
        early_stop_patience: steps without relative improvement > ``min_rel_improvement`` after which
            an image is frozen; None or 0 disables early stopping.
        seed: seeds the random starting codes (independent of the global RNG).
        tune_generator: pivotal tuning of a per-image copy of the generator (see module docstring).
        tune_steps, tune_lr: Adam steps and learning rate of the tuning.
        tune_reg: weight of the locality regulariser (MSE between G' and G on random codes).
        tune_cls: weight of the term keeping p(G'(z1*, 0)) ~ p(G(z1*, 0)).
        tune_reg_codes: random codes per tuning step (half with z2 = 0).
        amp: "off" (float32), "bf16" or "fp16" (CUDA): the generator and classifier forward passes run
            under autocast, the loss, the codes and Adam stay float32 (medxgan.runtime.precision). Not
            used by pivotal tuning.
    """

    steps: int = DEFAULT_STEPS
    lr: float = DEFAULT_LR
    z1_init: str = "zeros"
    restarts: int = DEFAULT_RESTARTS
    w_pix: float = DEFAULT_W_PIX
    w_cls: float = DEFAULT_W_CLS
    w_prior: float = 0.0
    w_cf: float = 0.0
    counterfactual: str = "generator"
    w_min: float = 0.0
    w_real: float = 0.0
    early_stop_patience: int | None = DEFAULT_PATIENCE
    min_rel_improvement: float = 1e-4
    seed: int = 0
    tune_generator: bool = False
    tune_steps: int = 100
    tune_lr: float = 3e-4
    tune_reg: float = 1.0
    tune_cls: float = 1.0
    tune_reg_codes: int = 8
    amp: str = "off"

    def replace(self, **options: Any) -> "InversionConfig":
        """A copy with ``options`` changed; an unknown name is a one-line MedxganError."""
        return replace_fields(self, "inversion option", **options)

    @classmethod
    def from_dict(cls, options: dict[str, Any] | None) -> "InversionConfig":
        return cls().replace(**dict(options or {}))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def changes(self) -> dict[str, Any]:
        """The options that differ from the defaults (what a record needs to say)."""
        default = InversionConfig()
        return {k: v for k, v in self.to_dict().items() if v != getattr(default, k)}



def invert(
    generator: nn.Module,
    classifier: Any,
    images: Tensor,
    config: InversionConfig | None = None,
    *,
    encoder: nn.Module | None = None,
    discriminator: nn.Module | None = None,
    **options: Any,
) -> InversionResult:
    """Invert ``images`` (N x C x H x W in [-1, 1]) into the generator's latent space.

    Args:
        generator: ``G(z1, z2) -> N x C x H x W`` with attributes ``nz1``, ``nz2``.
        classifier: adapter with ``.logit(x) -> (N,)``.
        config: the options (:class:`InversionConfig`; default its defaults); keyword ``options`` override
            single fields (``invert(G, clf, x, steps=50)``).
        encoder: a :class:`~medxgan.gan.encoder.LatentEncoder`; restart 0 then starts at its codes
            (E1(x), E2(x)) instead of z1 = 0 (a loaded run's :attr:`~medxgan.gan.run.GanRun.encoder`).
        discriminator: D for ``w_real`` (a loaded run's :attr:`~medxgan.gan.run.GanRun.discriminator`).
    Returns:
        :class:`InversionResult`.
    """
    cfg = (config or InversionConfig()).replace(**options)
    if cfg.counterfactual not in COUNTERFACTUALS:
        raise MedxganError(f"counterfactual {cfg.counterfactual!r}: choose {' or '.join(COUNTERFACTUALS)}")
    if cfg.z1_init not in ("zeros", "random"):
        raise MedxganError(f"z1_init {cfg.z1_init!r}: choose 'zeros' or 'random'")
    if cfg.steps < 0 or cfg.restarts < 1:
        raise MedxganError(f"steps must be >= 0 and restarts >= 1 (got {cfg.steps}, {cfg.restarts})")
    disc = discriminator
    if cfg.w_real and disc is None:
        raise MedxganError("w_real > 0 needs the GAN's discriminator (discriminator=, or a run loaded with it)", arg="w_real")
    device = next(generator.parameters()).device
    amp = check_amp(cfg.amp, device)
    x = images.detach().float().to(device)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    n = x.shape[0]

    with frozen(generator, classifier, disc if cfg.w_real else None), torch.enable_grad():  # works inside a caller's no_grad() too
        with torch.no_grad():
            p_x = forward(amp, device, classifier.prob, x).float()
        z1_0, z2_0 = _starting_codes(generator, x, cfg, encoder)
        best_loss, best_z1, best_z2, steps_run = _optimise_codes(generator, classifier, disc, x, p_x, z1_0, z2_0, cfg, amp)
        # best restart per image
        win = best_loss.view(cfg.restarts, n).argmin(0)
        idx = win * n + torch.arange(n, device=device)
        z1f, z2f = best_z1[idx].detach(), best_z2[idx].detach()
        generators = None
        with torch.no_grad():
            rec = forward(amp, device, generator, z1f, z2f)
        if cfg.tune_generator:
            generators = [pivotal_tune(generator, classifier, z1f[i : i + 1], z2f[i : i + 1], x[i : i + 1], steps=cfg.tune_steps, lr=cfg.tune_lr,
                                       reg=cfg.tune_reg, cls=cfg.tune_cls, reg_codes=cfg.tune_reg_codes, seed=cfg.seed + i) for i in range(n)]
            with torch.no_grad():
                rec = torch.cat([gi(z1f[i : i + 1], z2f[i : i + 1]) for i, gi in enumerate(generators)])
        with torch.no_grad():
            p_rec = forward(amp, device, classifier.prob, rec).float()

    return InversionResult(
        z1=z1f.cpu(), z2=z2f.cpu(), reconstructions=rec.detach().cpu(), psnr=psnr(rec, x).cpu(),
        prob_gap=(p_rec - p_x).abs().cpu(), loss=best_loss[idx].cpu(), steps_run=steps_run[idx].cpu(), restart=win.cpu(),
        generators=generators, settings=_settings_record(cfg),
    )


def _settings_record(cfg: InversionConfig) -> dict[str, Any]:
    """What :attr:`InversionResult.settings` has always said (the tuning options only when tuning)."""
    return dict(
        steps=cfg.steps, lr=cfg.lr, z1_init=cfg.z1_init, restarts=cfg.restarts, w_pix=cfg.w_pix, w_cls=cfg.w_cls, w_prior=cfg.w_prior,
        w_cf=cfg.w_cf, counterfactual=cfg.counterfactual, w_min=cfg.w_min, **({"w_real": cfg.w_real} if cfg.w_real else {}),
        early_stop_patience=int(cfg.early_stop_patience or 0), seed=cfg.seed, tune_generator=cfg.tune_generator,
        **({"tune_steps": cfg.tune_steps, "tune_lr": cfg.tune_lr, "tune_reg": cfg.tune_reg, "tune_cls": cfg.tune_cls} if cfg.tune_generator else {}),
    )


def _starting_codes(generator: nn.Module, x: Tensor, cfg: InversionConfig, encoder: nn.Module | None) -> tuple[Tensor, Tensor]:
    """(restarts * N) x nz starting codes, restart-major; restart 0 from the encoder's codes when there is one."""
    n = x.shape[0]
    z1_0, z2_0 = _initial_codes(n, int(generator.nz1), int(generator.nz2), cfg.restarts, cfg.z1_init, cfg.seed, x.device)
    if encoder is not None:
        was = encoder.training
        encoder.eval()
        with torch.no_grad():
            mu1, _, mu2, _ = encoder(x)
        encoder.train(was)
        z1_0[:n], z2_0[:n] = mu1.to(z1_0), mu2.to(z2_0)
    return z1_0, z2_0


def _optimise_codes(generator: nn.Module, classifier: Any, disc: nn.Module | None, x: Tensor, p_x: Tensor, z1_0: Tensor, z2_0: Tensor,
                    cfg: InversionConfig, amp: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Adam on every (restart, image) code pair at once with per-image early stopping. Returns
    (best loss, best z1, best z2, steps run), each with first dim restarts * N."""
    device = x.device
    xr = x.repeat(cfg.restarts, 1, 1, 1)
    pr = p_x.repeat(cfg.restarts)
    patience = int(cfg.early_stop_patience or 0)
    z1 = z1_0.clone().requires_grad_(True)
    z2 = z2_0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z1, z2], lr=cfg.lr, betas=(0.5, 0.999))
    m = xr.shape[0]
    best_loss = torch.full((m,), math.inf, device=device)
    best_z1, best_z2 = z1_0.clone(), z2_0.clone()
    since_best = torch.zeros(m, dtype=torch.long, device=device)
    active = torch.ones(m, dtype=torch.bool, device=device)
    steps_run = torch.zeros(m, dtype=torch.long, device=device)
    # a line at least every few seconds in a log (runtime.progress): long inversions are never silent
    bar = progress(total=cfg.steps, desc=f"invert {x.shape[0]} scan(s) x {cfg.restarts} start(s)")
    for _ in range(cfg.steps + 1):  # the last pass only evaluates the final codes
        loss, _ = _per_image_loss(generator, classifier, z1, z2, xr, pr, cfg, amp, disc)
        with torch.no_grad():
            lv = loss.detach()
            thresh = torch.where(torch.isfinite(best_loss), best_loss - cfg.min_rel_improvement * best_loss.abs(), torch.full_like(best_loss, math.inf))
            improved = (lv < thresh) & active
            best_loss = torch.where(improved, lv, best_loss)
            best_z1[improved] = z1.detach()[improved]
            best_z2[improved] = z2.detach()[improved]
            since_best = torch.where(improved, torch.zeros_like(since_best), since_best + 1)
            if patience:
                active &= since_best < patience
        if not bool(active.any()) or int(steps_run.max()) >= cfg.steps:
            break
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        keep1, keep2 = z1.detach()[~active].clone(), z2.detach()[~active].clone()
        opt.step()
        with torch.no_grad():
            z1[~active] = keep1  # frozen images: undo Adam's momentum-driven update
            z2[~active] = keep2
        steps_run += active.long()
        bar.update(1)
    bar.close()
    return best_loss, best_z1, best_z2, steps_run


def pivotal_tune(
    generator: nn.Module,
    classifier: Any,
    z1: Tensor,
    z2: Tensor,
    x: Tensor,
    *,
    steps: int = 100,
    lr: float = 3e-4,
    reg: float = 1.0,
    cls: float = 1.0,
    reg_codes: int = 8,
    seed: int = 0,
) -> nn.Module:
    """Return a fine-tuned copy G' of ``generator`` with G'(z1, z2) ~ x (Pivotal Tuning Inversion).

    Loss per step: ``MSE(G'(z1, z2), x) + reg * MSE(G'(zr), G(zr)) + cls * BCE(p(G'(z1, 0)), p(G(z1, 0)))``
    where zr are ``reg_codes`` fresh random codes, half of them with z2 = 0 (keeps the meaning of the
    negative class). The copy stays in eval mode (BatchNorm statistics frozen); only its weights move.
    The original generator is not modified.
    """
    with torch.enable_grad():
        return _pivotal_tune(generator, classifier, z1, z2, x, steps=steps, lr=lr, reg=reg, cls=cls, reg_codes=reg_codes, seed=seed)


def _pivotal_tune(generator: nn.Module, classifier: Any, z1: Tensor, z2: Tensor, x: Tensor, *, steps: int, lr: float, reg: float, cls: float,
                  reg_codes: int, seed: int) -> nn.Module:
    device = z1.device
    tuned = copy.deepcopy(generator).eval()
    for p in tuned.parameters():
        p.requires_grad_(True)
    g = torch.Generator().manual_seed(int(seed) + 7919)
    nz1, nz2 = z1.shape[1], z2.shape[1]
    z1 = z1.detach()
    z2 = z2.detach()
    zeros2 = torch.zeros_like(z2)
    with torch.no_grad():
        p_neg = classifier.prob(generator(z1, zeros2)).float()
    opt = torch.optim.Adam([p for p in tuned.parameters() if p.is_floating_point()], lr=lr)
    for _ in range(int(steps)):
        loss = F.mse_loss(tuned(z1, z2), x)
        if reg and reg_codes:
            zr1 = torch.randn(reg_codes, nz1, generator=g).to(device)
            zr2 = torch.randn(reg_codes, nz2, generator=g).to(device)
            zr2[: reg_codes // 2 + reg_codes % 2] = 0.0
            with torch.no_grad():
                ref = generator(zr1, zr2)
            loss = loss + reg * F.mse_loss(tuned(zr1, zr2), ref)
        if cls:
            loss = loss + cls * F.binary_cross_entropy_with_logits(classifier.logit(tuned(z1, zeros2)), p_neg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for p in tuned.parameters():
        p.requires_grad_(False)
    return tuned
