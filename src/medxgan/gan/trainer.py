"""One medXGAN training step: `GANTrainer` (networks, optimisers, `step(real, labels)`, checkpoint state),
`BatchSteps` (the step contract of runtime.loop over an in-memory train split) and DiffAugment. The run
around it (data, classifier, oracle, config.json, the loop) is `gan.train.train_gan`.

The objective (authors' code, /work/shared/reference/medxgan.md):
  * latents: z1 ~ N(0, I); z2 = 0 for class 0, z2 ~ N(0, I) for class 1;
  * D step: BCE(D(x_real), 1) + BCE(D(G(z1, z2_fake)), 0), fake classes drawn uniformly;
  * G step: lambda * CE(C(G(z1, z2)), y) + BCE(D(G(z1, z2)), 1) (non-saturating), y = the classes of
    the current real batch.
D returns logits and the losses use BCEWithLogits (= sigmoid + BCE, computed stably). The classifier
is reached only through its adapter, which gives one positive-class logit l = log(p / (1 - p)); the
2-class cross-entropy of softmax([0, l]) equals BCEWithLogits(l, y), which is what we compute.
The classifier is frozen (requires_grad False, eval mode): gradients flow through it to G only.

Options beyond the paper (switched on by a preset, see presets.py): projection discriminator
conditioned on the class (real: true label, fake: the class its z2 was drawn for), spectral norm,
lazy R1 penalty on reals, EMA of G (the EMA copy is saved and monitored), DiffAugment on all D inputs.

Distributed (``torchrun --nproc_per_node N -m medxgan train ...``, medxgan.runtime.distributed): the
batch size is the GLOBAL batch, split evenly over the ranks. Every random draw of a step (data indices,
fake classes, latents, DiffAugment offsets, the encoder's reparameterisation noise) is made for the
global batch on every rank from identically seeded RNGs and each rank keeps its slice; BatchNorm
statistics are global (GlobalBatchNorm2d) and G, D (and E) are wrapped in DistributedDataParallel,
which averages the gradients of equal local batches. A distributed step therefore equals the
single-process step on the same global batch (up to float summation order), and the RNG states stay
identical on every rank and equal to a single process's: rank 0's checkpoint resumes under any world
size. Rank 0 alone logs, prints, monitors and writes the run directory. Not exactly equivalent: dropout
in D (presets paper-64 / paper-128: each rank draws its own masks) and the minibatch-std feature
(d_mbstd: groups within a rank's batch); they train correctly but not bit-for-bit like one process.
"Up to float summation order" still lets runs drift apart over many steps (Adam turns tiny gradient
differences of near-zero gradients into visible steps, and GAN training amplifies them): after 9 steps
of the default preset on 64 px phantoms, 2 processes vs 1 differ by 0.04 in the largest generator
weight -- as much as one process with 1 vs 2 CPU threads (0.03).

GPU options (--amp bf16|fp16, --channels-last, --compile; runtime.precision): see GANTrainer. The
random draws of a step come from the CPU generator on every device, so a GPU step can be checked
against a CPU step (benchmarks/gpu_check.py).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medxgan.gan.encoder import LatentEncoder, kl_to_standard_normal
from medxgan.gan.networks import build_discriminator, build_generator, sample_latents
from medxgan.gan.presets import Preset
from medxgan.runtime.distributed import all_reduce_sum, convert_global_batchnorm, mean_over_ranks, shard, world_size, wrap_ddp
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.precision import backward_step, check_amp, compile_module, forward, grad_scaler, to_channels_last

__all__ = ["GANTrainer", "BatchSteps", "diff_augment", "parse_diffaug", "minimality_terms"]


# ---- DiffAugment (Zhao et al. 2020): translation (1/8, zero padded) + cutout (half size) ----------
# The offsets are drawn for the global batch (n x world_size rows) and sharded, so that a rank's rows
# get the offsets a single process would give them; `parts`: see runtime.distributed.shard. Like every
# random draw of a training step they come from the CPU generator (see GANTrainer.step).
def _rand_translation(x: torch.Tensor, ratio: float = 0.125, parts: int = 1) -> torch.Tensor:
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    n_all = n * world_size()
    tx = shard(torch.randint(-sh, sh + 1, size=[n_all, 1, 1]), parts).to(x.device)
    ty = shard(torch.randint(-sw, sw + 1, size=[n_all, 1, 1]), parts).to(x.device)
    ar = lambda k: torch.arange(k, device=x.device)  # noqa: E731
    gb, gx, gy = torch.meshgrid(ar(n), ar(h), ar(w), indexing="ij")
    gx = torch.clamp(gx + tx + 1, 0, h + 1)
    gy = torch.clamp(gy + ty + 1, 0, w + 1)
    return F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1).contiguous()[gb, gx, gy].permute(0, 3, 1, 2)


def _rand_cutout(x: torch.Tensor, ratio: float = 0.5, parts: int = 1) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    n_all = n * world_size()
    ox = shard(torch.randint(0, h + (1 - ch % 2), size=[n_all, 1, 1]), parts).to(x.device)
    oy = shard(torch.randint(0, w + (1 - cw % 2), size=[n_all, 1, 1]), parts).to(x.device)
    ar = lambda k: torch.arange(k, device=x.device)  # noqa: E731
    gb, gx, gy = torch.meshgrid(ar(n), ar(ch), ar(cw), indexing="ij")
    gx = torch.clamp(gx + ox - ch // 2, min=0, max=h - 1)
    gy = torch.clamp(gy + oy - cw // 2, min=0, max=w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[gb, gx, gy] = 0
    return x * mask.unsqueeze(1)


_AUGMENTS = {"translation": _rand_translation, "cutout": _rand_cutout}


def parse_diffaug(policy: str) -> list[str]:
    names = [p.strip() for p in (policy or "").split(",") if p.strip()]
    for p in names:
        if p not in _AUGMENTS:
            raise MedxganError(f"diffaug {p!r}: unknown augmentation (choose from {', '.join(_AUGMENTS)})")
    return names


def diff_augment(x: torch.Tensor, policy: str, parts: int = 1) -> torch.Tensor:
    """Differentiable augmentation of a D input (real or fake alike); global torch RNG. Distributed:
    `x` is this rank's share of a global batch made of `parts` concatenated global batches."""
    for name in parse_diffaug(policy):
        x = _AUGMENTS[name](x, parts=parts)
    return x


def minimality_terms(image: torch.Tensor, base: torch.Tensor, mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Per-sample minimality of a pathology change (each (N,)): "prox" = mean|image - base| over pixels
    and channels; with a mask (N x 1 x H x W) also "mask" = mean(mask) and "tv" = mean|mask[i+1, j] -
    mask[i, j]| + mean|mask[i, j+1] - mask[i, j]| (anisotropic total variation)."""
    out = {"prox": (image - base).abs().flatten(1).mean(1)}
    if mask is not None:
        out["mask"] = mask.flatten(1).mean(1)
        dy = (mask[:, :, 1:, :] - mask[:, :, :-1, :]).abs().flatten(1).mean(1)
        dx = (mask[:, :, :, 1:] - mask[:, :, :, :-1]).abs().flatten(1).mean(1)
        out["tv"] = dx + dy
    return out


# ---- one training step ------------------------------------------------------------------------
class GANTrainer:
    """Networks, optimisers and one `step(real, labels)`; everything a checkpoint has to hold.

    Distributed (a process group with world_size > 1 exists when the trainer is built): BatchNorm
    becomes GlobalBatchNorm2d and G, D (and E) are wrapped in DistributedDataParallel for the passes
    whose gradients are used (`self._G`, `self._D`, `self._E`); `self.G`, `self.D`, `self.E` stay the
    plain modules (state_dict without a ``module.`` prefix, EMA, monitoring).

    GPU options (runtime.precision; not covered by "same seed -> same numbers" when on): `amp` runs
    the forward passes of G, D, E and the classifier under autocast ("bf16"/"fp16"; losses, the R1
    pass of D, EMA, BatchNorm statistics and Adam stay float32; fp16 adds GradScalers); `channels_last`
    stores weights and image batches NHWC; `compile` wraps the training passes in torch.compile
    (not D's passes on R1 steps: compiled graphs have no double backward)."""

    def __init__(self, preset: Preset, classifier: nn.Module, device: torch.device | str = "cpu", lambda_cls: float | None = None,
                 *, amp: str = "off", channels_last: bool = False, compile: bool = False, cls_labels: tuple[float, float] = (0.0, 1.0)):
        self.preset = preset
        # the labels of the classifier terms, negative / positive: 0 / 1 (cls_target "hard") or soft (see TrainOptions)
        self.cls_labels = (float(cls_labels[0]), float(cls_labels[1]))
        self.opts = preset.train
        self.lambda_cls = float(self.opts.lambda_cls if lambda_cls is None else lambda_cls)
        self.device = torch.device(device)
        self.amp = check_amp(amp, self.device)
        self.channels_last, self.compile = bool(channels_last), bool(compile)
        distributed_run = world_size() > 1
        self.G = build_generator(preset.net)
        self.D = build_discriminator(preset.net)
        self.E = LatentEncoder(preset.net) if self.opts.recon_weight > 0 else None
        if distributed_run:  # batch statistics over the global batch, as one process would compute them
            for m in (self.G, self.D, self.E):
                if m is not None:
                    convert_global_batchnorm(m)
        self.G.to(self.device)
        self.D.to(self.device)
        if self.E is not None:
            self.E.to(self.device)
        if self.channels_last:
            for m in (self.G, self.D, self.E):
                if m is not None:
                    to_channels_last(m)
        self.G_ema = copy.deepcopy(self.G).eval() if self.opts.ema_decay > 0 else None
        if self.G_ema is not None:
            self.G_ema.requires_grad_(False)
        betas = (self.opts.beta1, self.opts.beta2)
        g_params = list(self.G.parameters()) + (list(self.E.parameters()) if self.E is not None else [])
        self.opt_g = torch.optim.Adam(g_params, lr=self.opts.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=self.opts.lr_d or self.opts.lr, betas=betas)
        self.classifier = classifier
        self.classifier.eval()
        for p in self.classifier.parameters():
            p.requires_grad_(False)
        parse_diffaug(self.opts.diffaug)
        # DDP averages gradients over ranks. D's pass inside the G step uses the plain D (`_D_plain`):
        # its gradients there are thrown away (zeroed before the next D step), syncing them would be
        # wasted work.
        ddp_g, ddp_d = wrap_ddp(self.G, self.device), wrap_ddp(self.D, self.device)
        ddp_e = wrap_ddp(self.E, self.device) if self.E is not None else None
        self._D_r1 = ddp_d  # the R1 pass needs double backward: never compiled
        maybe = (lambda m: compile_module(m, self.device)) if self.compile else (lambda m: m)
        self._G, self._D = maybe(ddp_g), maybe(ddp_d)
        self._E = maybe(ddp_e) if ddp_e is not None else None
        self._D_plain = self._D if ddp_d is self.D else maybe(self.D)
        self.scaler_d, self.scaler_g = grad_scaler(self.amp, self.device), grad_scaler(self.amp, self.device)
        self.step_count = 0

    @property
    def generator(self) -> nn.Module:
        """The generator that is monitored and saved: the EMA copy when EMA is on."""
        return self.G_ema if self.G_ema is not None else self.G

    def _fwd(self, fn: Any, *args: Any) -> Any:
        """A network forward pass under autocast (outputs back in float32); plain call when amp is off."""
        return forward(self.amp, self.device, fn, *args)

    def _d(self, x: torch.Tensor, y: torch.Tensor, D: nn.Module | None = None, parts: int = 1, amp: bool = True) -> torch.Tensor:
        if self.opts.diffaug:
            x = diff_augment(x, self.opts.diffaug, parts=parts)
        D = D if D is not None else self._D_plain  # not `D or ...`: a compiled module has no truth value
        return self._fwd(D, x, y) if amp else D(x, y)

    def _latents(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sample_latents for this rank's labels `y`, drawn for the global batch and sharded (the same
        numbers and RNG consumption as sample_latents on the global batch)."""
        z1, z2 = sample_latents(torch.ones(y.shape[0] * world_size(), dtype=y.dtype), self.G.nz1, self.G.nz2)
        return shard(z1).to(y.device), shard(z2).to(y.device) * (y.view(-1, 1) == 1).float()

    def step(self, real: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """One D step then one G step on a real batch (distributed: this rank's slice of the global
        batch, `shard(global_batch)`). Returns detached scalar statistics (means over the global batch).

        Every random draw (fake classes, latents, DiffAugment offsets, encoder noise) comes from the
        global CPU generator and is moved to the device: the same seed gives the same draws on a CPU
        and on a GPU, so their steps can be compared (benchmarks/gpu_check.py)."""
        G, D = self.G, self.D
        if self.channels_last:
            real = to_channels_last(real)
        self.step_count += 1
        G.train()
        D.train()
        if self.E is not None:
            self.E.train()
        stats: dict[str, torch.Tensor] = {}

        # -- discriminator: real -> 1, fake (uniform classes) -> 0
        y_fake = shard(torch.randint(0, 2, (real.shape[0] * world_size(),))).to(self.device)
        z1, z2 = self._latents(y_fake)
        parts = 1
        with torch.no_grad():
            fake = self._fwd(self._G, z1, z2)
            if self.E is not None:  # reconstructions of the real batch are fakes too
                rec, z1_rec, _, codes = self._encode_decode(real, labels, self._G, self._E)
                fake = torch.cat([fake, rec])
                y_fake = torch.cat([y_fake, labels])
                parts = 2
                if self.opts.cf_adv_weight > 0:  # and their counterfactuals, as fakes of the negative class
                    fake = torch.cat([fake, self._counterfactuals(real, labels, z1_rec, codes[2])])
                    y_fake = torch.cat([y_fake, torch.zeros_like(labels)])
                    parts = 3
        do_r1 = self.opts.r1_gamma > 0 and self.step_count % max(1, self.opts.r1_every) == 0
        real_in = real.detach().requires_grad_(True) if do_r1 else real
        # R1 steps: D uncompiled (compiled graphs have no double backward, and a compiled pass would
        # update the BatchNorm buffers that the eager R1 graph saved) and its real pass in float32
        D_step = self._D_r1 if do_r1 else self._D
        d_real = self._d(real_in, labels, D_step, amp=not do_r1)
        d_fake = self._d(fake, y_fake, D_step, parts)
        loss_d = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) + F.binary_cross_entropy_with_logits(
            d_fake, torch.zeros_like(d_fake)
        )
        if do_r1:  # lazy R1 (StyleGAN2): gamma/2 E||grad_x D(x)||^2, every k steps, scaled by k
            (grad,) = torch.autograd.grad(d_real.sum(), real_in, create_graph=True)
            r1 = grad.pow(2).flatten(1).sum(1).mean()
            loss_d = loss_d + 0.5 * self.opts.r1_gamma * self.opts.r1_every * r1
            stats["r1"] = r1.detach()
        self.opt_d.zero_grad(set_to_none=True)
        backward_step(loss_d, self.opt_d, self.scaler_d)
        stats["d_loss"] = loss_d.detach()
        stats["d_real"] = torch.sigmoid(d_real.detach()).mean()
        stats["d_fake"] = torch.sigmoid(d_fake.detach()).mean()

        # -- generator: non-saturating adversarial + lambda * classifier CE, classes of the real batch.
        # D's weight gradients of this pass would be thrown away (zeroed before the next D step):
        # not computing them saves about a third of D's backward cost.
        D.requires_grad_(False)
        try:
            self._g_step(real, labels, stats)
        finally:
            D.requires_grad_(True)
        # one host sync for all statistics; distributed: averaged over the ranks' equal local batches
        values = dict(zip(stats.keys(), torch.stack([v.float() for v in stats.values()]).double().tolist()))
        return mean_over_ranks(values, self.device)

    def _generate(self, z1: torch.Tensor, z2: torch.Tensor, pos: torch.Tensor, stats: dict[str, torch.Tensor],
                  key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """G(z1, z2) through the training wrapper, and the minimality loss of its positives (rows where
        `pos` is 1): prox_weight * mean|G(z1, z2) - G(z1, 0)| (+ the mask L1 and TV terms of a masked
        generator), averaged over the positives; a scalar 0 when every weight is 0."""
        o = self.opts
        masked = getattr(self.G, "masked", False)
        if masked:
            fake, base, mask = self._fwd(lambda a, b: self._G(a, b, return_parts=True), z1, z2)
            self._parts = (base, mask)  # read by the residual counterfactual of the anchored G loss
        else:
            fake = self._fwd(self._G, z1, z2)
        if not (o.prox_weight or o.mask_weight or o.tv_weight):
            return fake, fake.new_zeros(())
        w = pos.view(-1).float()
        n_pos = all_reduce_sum(w.sum().detach()).clamp(min=1.0) / world_size()  # DDP averages: see _anchored_g_loss
        loss = fake.new_zeros(())
        if o.prox_weight:
            if not masked:
                base = self._fwd(self._G, z1, torch.zeros_like(z2))
            prox = minimality_terms(fake, base, None)["prox"]
            loss = loss + o.prox_weight * (prox * w).sum() / n_pos
            stats[f"{key}_prox"] = ((prox * w).sum() / n_pos).detach()
        if masked and (o.mask_weight or o.tv_weight):
            t = minimality_terms(fake, base, mask)
            loss = loss + (o.mask_weight * (t["mask"] * w).sum() + o.tv_weight * (t["tv"] * w).sum()) / n_pos
            stats[f"{key}_mask"] = ((t["mask"] * w).sum() / n_pos).detach()
        return fake, loss

    def _g_step(self, real: torch.Tensor, labels: torch.Tensor, stats: dict[str, torch.Tensor]) -> None:
        y = labels
        z1, z2 = self._latents(y)
        fake, loss_min = self._generate(z1, z2, y, stats, "g")
        logit = self._fwd(self.classifier.logit, fake)
        loss_cls = F.binary_cross_entropy_with_logits(logit, self._cls_label(y))  # == 2-class CE on softmax([0, logit])
        lam = self.lambda_cls
        if self.opts.lambda_warmup > 0:
            lam *= min(1.0, self.step_count / self.opts.lambda_warmup)
        if self.E is None:
            d_out = self._d(fake, y)
            loss_adv = F.binary_cross_entropy_with_logits(d_out, torch.ones_like(d_out))
            loss_g = loss_adv + lam * loss_cls + loss_min
        else:
            loss_g, loss_adv = self._anchored_g_loss(real, labels, fake, y, loss_cls, lam, stats)
            loss_g = loss_g + loss_min
        self.opt_g.zero_grad(set_to_none=True)
        backward_step(loss_g, self.opt_g, self.scaler_g)
        self._update_ema()
        stats["g_loss"] = loss_g.detach()
        stats["g_adv"] = loss_adv.detach()
        stats["g_cls"] = loss_cls.detach()
        stats["cls_agree"] = ((logit.detach() > 0).long() == y).float().mean()

    def _cls_label(self, y: torch.Tensor) -> torch.Tensor:
        """The classifier terms' target probability for class labels y (float, y's shape)."""
        neg, pos = self.cls_labels
        return torch.where(y == 1, torch.full_like(y, pos, dtype=torch.float32), torch.full_like(y, neg, dtype=torch.float32))

    def _encode_decode(self, real: torch.Tensor, labels: torch.Tensor, G: nn.Module | None = None,
                       E: nn.Module | None = None, stats: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, ...]:
        """G(E1(x), E2(x) for positives / 0 for negatives) with reparameterised codes (the noise drawn
        for the global batch and sharded)."""
        G, E = (G if G is not None else self.G), (E if E is not None else self.E)
        mu1, lv1, mu2, lv2 = self._fwd(E, real)
        pos = (labels == 1).float().view(-1, 1)
        n_all = real.shape[0] * world_size()
        eps1 = shard(torch.randn((n_all, *mu1.shape[1:]), dtype=mu1.dtype)).to(mu1.device)
        eps2 = shard(torch.randn((n_all, *mu2.shape[1:]), dtype=mu2.dtype)).to(mu2.device)
        z1 = mu1 + eps1 * (0.5 * lv1).exp()
        z2 = (mu2 + eps2 * (0.5 * lv2).exp()) * pos
        if stats is not None:  # the G step: through _generate, with the minimality of the real positives
            rec, loss_min = self._generate(z1, z2, pos, stats, "rec")
            return rec, z1, pos, (mu1, lv1, mu2, lv2), loss_min
        if self._residual_cf():
            rec, base, mask = self._fwd(lambda a, b: G(a, b, return_parts=True), z1, z2)
            self._parts = (base, mask)
            return rec, z1, pos, (mu1, lv1, mu2, lv2)
        return self._fwd(G, z1, z2), z1, pos, (mu1, lv1, mu2, lv2)

    def _residual_cf(self) -> bool:
        return self.opts.cf_mode == "residual" and getattr(self.G, "masked", False)

    def _counterfactuals(self, real: torch.Tensor, labels: torch.Tensor, z1: torch.Tensor, mu2: torch.Tensor) -> torch.Tensor:
        """The counterfactuals of the real batch that the cf losses see. cf_mode "generator": G(E1(x), 0)
        for every row. "residual" (masked generators): the positives' own scans with the generator's
        pathology mask filled by the anatomy, (1 - gM) x + gM B(E1(x)), from the parts of the
        reconstruction just made -- the counterfactual that explanations show (inversion.
        counterfactual_images); for negatives B(E1(x)) as in "generator" mode (their residual would be
        the real scan itself, which D must not learn to call fake). Same rows as the batch, so the
        distributed sharding of D's inputs is unchanged."""
        if not self._residual_cf():
            return self._fwd(self._G, z1, torch.zeros_like(mu2))
        base, mask = self._parts
        pos = (labels == 1).to(real.dtype).view(-1, 1, 1, 1)
        return pos * (real + mask * (base - real)) + (1 - pos) * base

    def _anchored_g_loss(self, real: torch.Tensor, labels: torch.Tensor, fake: torch.Tensor, y: torch.Tensor,
                         loss_cls: torch.Tensor, lam: float, stats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The paper's G loss on prior samples + reconstruction, KL and counterfactual terms through E."""
        o = self.opts
        rec, z1, pos, (mu1, lv1, mu2, lv2), loss_min = self._encode_decode(real, labels, self._G, self._E, stats)
        loss_rec = (rec - real).abs().mean()
        kl = (kl_to_standard_normal(mu1, lv1) + pos.view(-1) * kl_to_standard_normal(mu2, lv2)).mean()
        # normalised by the GLOBAL number of positives, times world_size: DDP averages the ranks'
        # gradients, so the sum of the ranks' terms must be world_size x the single-process loss
        n_pos = all_reduce_sum(pos.sum().detach()).clamp(min=1.0)
        cf_img = self._counterfactuals(real, labels, z1, mu2)
        cf_logit = self._fwd(self.classifier.logit, cf_img)
        loss_cf = (F.binary_cross_entropy_with_logits(cf_logit, self._cls_label(torch.zeros_like(labels)), reduction="none") * pos.view(-1)).sum() / n_pos
        if world_size() > 1:
            loss_cf = loss_cf * world_size()
        if o.cf_adv_weight > 0:  # the counterfactuals must pass D as real negatives (see TrainOptions)
            d_all = self._d(torch.cat([fake, rec, cf_img]), torch.cat([y, labels, torch.zeros_like(labels)]), parts=3)
            n_s = fake.shape[0] + rec.shape[0]
            loss_adv = F.binary_cross_entropy_with_logits(d_all[:n_s], torch.ones_like(d_all[:n_s]))
            loss_cf_adv = F.binary_cross_entropy_with_logits(d_all[n_s:], torch.ones_like(d_all[n_s:]))
            stats["g_cf_adv"] = loss_cf_adv.detach()
        else:
            d_out = self._d(torch.cat([fake, rec]), torch.cat([y, labels]), parts=2)
            loss_adv = F.binary_cross_entropy_with_logits(d_out, torch.ones_like(d_out))
            loss_cf_adv = loss_adv.new_zeros(())
        cf_w = lam if o.cf_weight is None else o.cf_weight
        loss_g = o.adv_weight * loss_adv + lam * loss_cls + o.recon_weight * loss_rec + o.kl_weight * kl + cf_w * loss_cf + loss_min
        loss_g = loss_g + o.cf_adv_weight * loss_cf_adv
        stats.update(g_rec=loss_rec.detach(), g_kl=kl.detach(), g_cf=loss_cf.detach())
        return loss_g, loss_adv

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.G_ema is None:
            return
        t = self.step_count
        decay = min(self.opts.ema_decay, (1.0 + t) / (10.0 + t))  # warm-up: follow G closely at first
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.lerp_(p, 1.0 - decay)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    # -- checkpoint state
    def state_dict(self) -> dict[str, Any]:
        st: dict[str, Any] = {
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "step_count": self.step_count,
        }
        if self.G_ema is not None:
            st["G_ema"] = self.G_ema.state_dict()
        if self.E is not None:
            st["E"] = self.E.state_dict()
        if self.scaler_d is not None:  # fp16 loss scales
            st["scalers"] = {"d": self.scaler_d.state_dict(), "g": self.scaler_g.state_dict()}
        return st

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.G.load_state_dict(st["G"])
        self.D.load_state_dict(st["D"])
        self.opt_g.load_state_dict(st["opt_g"])
        self.opt_d.load_state_dict(st["opt_d"])
        if self.G_ema is not None:
            self.G_ema.load_state_dict(st["G_ema"])
        if self.E is not None:
            self.E.load_state_dict(st["E"])
        if self.scaler_d is not None and "scalers" in st:
            self.scaler_d.load_state_dict(st["scalers"]["d"])
            self.scaler_g.load_state_dict(st["scalers"]["g"])
        self.step_count = int(st["step_count"])


# ---- inputs -----------------------------------------------------------------------------------
class BatchSteps:
    """The step contract of runtime.loop for a GANTrainer on an in-memory train split: one step = one
    global batch drawn from a seeded sampler stream (every rank draws the same indices and keeps its slice)."""

    def __init__(self, trainer: "GANTrainer", images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int):
        self.trainer, self.images, self.labels, self.batch_size = trainer, images, labels, batch_size
        self.sampler = torch.Generator().manual_seed(seed)

    def step(self) -> dict[str, float]:
        idx = shard(torch.randint(0, self.images.shape[0], (self.batch_size,), generator=self.sampler)).to(self.images.device)
        return self.trainer.step(self.images[idx], self.labels[idx])

    def state_dict(self) -> dict[str, Any]:
        return {**self.trainer.state_dict(), "batch_sampler": self.sampler.get_state()}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        st = dict(st)
        self.sampler.set_state(st.pop("batch_sampler").to(torch.uint8))
        self.trainer.load_state_dict(st)
