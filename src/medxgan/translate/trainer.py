"""One CycleGAN / pix2pix training step: `CycleGANTrainer` (the four networks, both optimisers, both image
pools, the epoch's data order; the step contract of runtime.loop), the least-squares GAN loss, the
generators' EMA with warm-up, and the per-epoch sample grid. The losses, the schedule, paired mode and
the distributed rules are described in translate.train's docstring; the run around the step is
`translate.train.train_cyclegan`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from medxgan.runtime import quality
from medxgan.runtime.atomic import atomic_save_image
from medxgan.runtime.distributed import all_gather_cat, mean_over_ranks, shard, wrap_ddp
from medxgan.runtime.precision import backward_step, check_amp, compile_module, forward, grad_scaler, to_channels_last
from medxgan.translate.images import Sampler, tensor_to_u8, to01
from medxgan.translate.networks import PatchDiscriminator, init_weights
from medxgan.translate.pool import ImagePool
from medxgan.translate.run import TranslateConfig, build_generators, lr_at_epoch

__all__ = ["CycleGANTrainer", "lsgan_loss", "ema_multi_avg_fn", "sample_grid"]


def lsgan_loss(pred: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss (Mao et al. 2017), the CycleGAN choice: mean (D(x) - 1)^2 for a real target,
    mean D(x)^2 for a fake one."""
    return F.mse_loss(pred, torch.ones_like(pred) if real else torch.zeros_like(pred))


def ema_multi_avg_fn(decay: float):
    """``multi_avg_fn`` for torch.optim.swa_utils.AveragedModel: torch's own EMA update
    (``get_ema_multi_avg_fn``) at decay min(decay, (1 + n) / (10 + n)) for the n-th update. Written here
    because torch's EMA has no warm-up (the warm-up is tf.train.ExponentialMovingAverage's num_updates
    rule): a plain 0.999 EMA of a 2000-step run still holds 0.999^2000 = 13.5 % of the random initial weights."""
    from torch.optim.swa_utils import get_ema_multi_avg_fn

    def update(ema_params, params, n_averaged) -> None:
        n = float(n_averaged)
        get_ema_multi_avg_fn(min(decay, (1.0 + n) / (10.0 + n)))(ema_params, params, n_averaged)

    return update


def sample_grid(path: Path, g_fa, g_fundus, a: torch.Tensor, b: torch.Tensor) -> None:
    """Rows: fundus | G_fa(fundus) | cycle ; angiogram | G_fundus(angiogram) | cycle."""
    from PIL import Image

    with torch.no_grad():
        fb = g_fa(a)
        ra = g_fundus(fb)
        fa = g_fundus(b)
        rb = g_fa(fa)

    def rgb(x):
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    rows = [torch.cat([rgb(t)[i] for t in (a, fb, ra)], -1) for i in range(a.shape[0])]
    rows += [torch.cat([rgb(t)[i] for t in (b, fa, rb)], -1) for i in range(b.shape[0])]
    grid = tensor_to_u8(torch.cat(rows, -2)).permute(1, 2, 0).cpu().numpy()
    atomic_save_image(path, Image.fromarray(grid))


class CycleGANTrainer:
    """The step contract of runtime.loop for CycleGAN (the reference's ``BaseModel`` idea): ``step()`` is
    one global batch (generators, then discriminators on pooled fakes); epochs are counted inside --
    the learning rate is a function of the epoch, each epoch draws new permutations, and
    ``period_done`` tells the loop that an epoch just ended (epoch log, sample grid, checkpoint).
    ``state_dict`` holds the four networks, both optimisers, both image pools, the data RNG, the
    epoch/batch counters (mid-epoch: the epoch's permutations) and the epoch's running loss sums."""

    def __init__(self, cfg: TranslateConfig, sa: Sampler, sb: Sampler | None, dev: torch.device,
                 val: tuple[torch.Tensor, torch.Tensor] | None = None):
        """Unpaired: ``sa``/``sb`` sample each domain. Paired (``cfg.paired``): ``sa`` samples the pairs as
        one tensor (fundus channels, then angiogram channels: one crop and flip for both), ``sb`` is None.
        ``val``: the paired validation split (fundus, angiograms in [-1, 1]) scored at every epoch end."""
        self.cfg, self.sa, self.sb, self.dev = cfg, sa, sb, dev
        self.val = val
        self.amp = check_amp(cfg.amp, dev)
        self.steps_per_epoch = max(1, (len(sa) if cfg.paired else max(len(sa), len(sb))) // cfg.batch_size)
        g_fa, g_fundus = build_generators(cfg)
        if cfg.paired:  # conditional PatchGANs: (input, output) side by side
            d_fa = PatchDiscriminator(cfg.channels_a + cfg.channels_b, cfg.ndf)
            d_fundus = PatchDiscriminator(cfg.channels_b + cfg.channels_a, cfg.ndf)
        else:
            d_fa, d_fundus = PatchDiscriminator(cfg.channels_b, cfg.ndf), PatchDiscriminator(cfg.channels_a, cfg.ndf)
        self.nets = {"G_fa": g_fa, "G_fundus": g_fundus, "D_fa": d_fa, "D_fundus": d_fundus}
        for net in self.nets.values():
            init_weights(net)
            net.to(dev)
            if cfg.channels_last:
                to_channels_last(net)
        self.opt_g = torch.optim.Adam(list(g_fa.parameters()) + list(g_fundus.parameters()), lr=cfg.lr, betas=(cfg.beta1, 0.999))
        self.opt_d = torch.optim.Adam(list(d_fa.parameters()) + list(d_fundus.parameters()), lr=cfg.lr, betas=(cfg.beta1, 0.999))
        self.pool_fa, self.pool_fundus = ImagePool(cfg.pool_size, seed=cfg.seed * 2 + 1), ImagePool(cfg.pool_size, seed=cfg.seed * 2 + 2)
        self.data_gen = torch.Generator().manual_seed(cfg.seed)
        # DDP (gradient averaging) for the passes whose gradients are used: the generators in the G step,
        # the discriminators in the D step. The G step runs the plain discriminators (frozen there).
        # InstanceNorm has no batch statistics, so nothing else needs synchronising.
        maybe = (lambda m: compile_module(m, dev)) if cfg.compile else (lambda m: m)
        self.gen_fa, self.gen_fundus = maybe(wrap_ddp(g_fa, dev)), maybe(wrap_ddp(g_fundus, dev))
        ddp_d_fa, ddp_d_fundus = wrap_ddp(d_fa, dev), wrap_ddp(d_fundus, dev)
        self.dis_fa, self.dis_fundus = maybe(ddp_d_fa), maybe(ddp_d_fundus)
        self.frozen_fa = self.dis_fa if ddp_d_fa is d_fa else maybe(d_fa)  # the G step's discriminators: the plain modules
        self.frozen_fundus = self.dis_fundus if ddp_d_fundus is d_fundus else maybe(d_fundus)
        self.scaler_g, self.scaler_d = grad_scaler(self.amp, dev), grad_scaler(self.amp, dev)
        # EMA of the generators (updated after each G step) and the best epoch-end generators on val
        from torch.optim.swa_utils import AveragedModel

        self.ema: dict[str, AveragedModel] = {}
        if cfg.ema_decay > 0:
            for k in ("G_fa", "G_fundus"):
                self.ema[k] = AveragedModel(self.nets[k], device=dev, multi_avg_fn=ema_multi_avg_fn(cfg.ema_decay)).requires_grad_(False)
        self.best: dict[str, Any] | None = None  # {"epoch", "step", "val_ssim_fa", "G_fa": state, "G_fundus": state}
        # counters: the next epoch (1-based), batches done in it, its permutations and running loss sums
        self.epoch, self.batch_in_epoch, self.perm_a, self.perm_b = 1, 0, None, None
        self.sums: dict[str, float] = {}
        self.period_done, self.last_epoch, self.last_lr, self.epoch_means = False, 1, cfg.lr, {}

    @property
    def total_steps(self) -> int:
        return self.cfg.total_epochs * self.steps_per_epoch

    def _fwd(self, net, x: torch.Tensor) -> torch.Tensor:  # autocast forward, float32 output (amp off: net(x))
        return forward(self.amp, self.dev, net, x)

    @staticmethod
    def _requires_grad(flag: bool, *ms) -> None:
        for m in ms:
            for p in m.parameters():
                p.requires_grad_(flag)

    def step(self) -> dict[str, float]:
        cfg, sa, sb, dev = self.cfg, self.sa, self.sb, self.dev
        lr = lr_at_epoch(self.epoch, cfg.lr, cfg.epochs, int(cfg.epochs_decay or 0))
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr
        if self.batch_in_epoch == 0:
            self.perm_a = torch.randperm(len(sa), generator=self.data_gen)
            self.perm_b = self.perm_a if cfg.paired else torch.randperm(len(sb), generator=self.data_gen)
            self.sums = {}
        bi = self.batch_in_epoch
        # the global batch (indices, crops, flips drawn on every rank alike); this rank keeps its slice
        ia = self.perm_a[(torch.arange(cfg.batch_size) + bi * cfg.batch_size) % len(sa)]
        if cfg.paired:
            real = shard(sa.batch(ia, self.data_gen)).to(dev)
            real_a, real_b = real[:, : cfg.channels_a], real[:, cfg.channels_a :]
        else:
            ib = self.perm_b[(torch.arange(cfg.batch_size) + bi * cfg.batch_size) % len(sb)]
            real_a = shard(sa.batch(ia, self.data_gen)).to(dev)
            real_b = shard(sb.batch(ib, self.data_gen)).to(dev)
        if cfg.channels_last:
            real_a, real_b = to_channels_last(real_a), to_channels_last(real_b)
        losses = self._paired_losses(real_a, real_b) if cfg.paired else self._cycle_losses(real_a, real_b)
        for k, avg in self.ema.items():  # after the step's G update (the D update does not touch G)
            avg.update_parameters(self.nets[k])

        # one host sync; distributed: the mean over the ranks' equal batches (= the global batch's)
        vals = dict(zip(losses, torch.stack([v.detach() for v in losses.values()]).double().tolist()))
        vals = mean_over_ranks(vals, dev)
        for k, v in vals.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.batch_in_epoch += 1
        self.last_epoch, self.last_lr = self.epoch, lr
        self.period_done = self.batch_in_epoch == self.steps_per_epoch
        if self.period_done:  # the epoch ends: its mean losses, then the next epoch
            self.epoch_means = {f"epoch_{k}": v / self.batch_in_epoch for k, v in self.sums.items()}
            self.epoch, self.batch_in_epoch, self.perm_a, self.perm_b, self.sums = self.epoch + 1, 0, None, None, {}
        return vals

    def _paired_losses(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """pix2pix in both directions: one G update (conditional GAN + lambda_l1 * L1 to the partner
        [+ cycle]), then one D update on (input, real) vs (input, fake) pairs."""
        cfg, fwd = self.cfg, self._fwd
        d_fa, d_fundus = self.nets["D_fa"], self.nets["D_fundus"]
        self._requires_grad(False, d_fa, d_fundus)
        fake_b = fwd(self.gen_fa, real_a)
        fake_a = fwd(self.gen_fundus, real_b)
        loss_gan_fa = lsgan_loss(fwd(self.frozen_fa, torch.cat([real_a, fake_b], 1)), True)
        loss_gan_fundus = lsgan_loss(fwd(self.frozen_fundus, torch.cat([real_b, fake_a], 1)), True)
        loss_l1_fa = F.l1_loss(fake_b, real_b) * cfg.lambda_l1
        loss_l1_fundus = F.l1_loss(fake_a, real_a) * cfg.lambda_l1
        loss_g = loss_gan_fa + loss_gan_fundus + loss_l1_fa + loss_l1_fundus
        out = {"loss_G_fa_gan": loss_gan_fa, "loss_G_fundus_gan": loss_gan_fundus, "loss_l1_fa": loss_l1_fa,
               "loss_l1_fundus": loss_l1_fundus}
        if cfg.paired_cycle:
            out["loss_cycle_fundus"] = F.l1_loss(fwd(self.gen_fundus, fake_b), real_a) * cfg.lambda_cycle
            out["loss_cycle_fa"] = F.l1_loss(fwd(self.gen_fa, fake_a), real_b) * cfg.lambda_cycle
            loss_g = loss_g + out["loss_cycle_fundus"] + out["loss_cycle_fa"]
        self.opt_g.zero_grad(set_to_none=True)
        backward_step(loss_g, self.opt_g, self.scaler_g)

        self._requires_grad(True, d_fa, d_fundus)
        pooled_b = shard(self.pool_fa.query(all_gather_cat(torch.cat([real_a, fake_b.detach()], 1))))
        pooled_a = shard(self.pool_fundus.query(all_gather_cat(torch.cat([real_b, fake_a.detach()], 1))))
        pr, pf = fwd(self.dis_fa, torch.cat([real_a, real_b], 1)), fwd(self.dis_fa, pooled_b)
        loss_d_fa = 0.5 * (lsgan_loss(pr, True) + lsgan_loss(pf, False))
        pr, pf = fwd(self.dis_fundus, torch.cat([real_b, real_a], 1)), fwd(self.dis_fundus, pooled_a)
        loss_d_fundus = 0.5 * (lsgan_loss(pr, True) + lsgan_loss(pf, False))
        self.opt_d.zero_grad(set_to_none=True)
        backward_step(loss_d_fa + loss_d_fundus, self.opt_d, self.scaler_d)
        return {"loss_G": loss_g, **out, "loss_D_fa": loss_d_fa, "loss_D_fundus": loss_d_fundus}

    def _cycle_losses(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """CycleGAN: one G update (LSGAN + cycle [+ identity]), then one D update on pooled fakes."""
        cfg, fwd = self.cfg, self._fwd
        d_fa, d_fundus = self.nets["D_fa"], self.nets["D_fundus"]

        # generators
        self._requires_grad(False, d_fa, d_fundus)
        fake_b = fwd(self.gen_fa, real_a)
        rec_a = fwd(self.gen_fundus, fake_b)
        fake_a = fwd(self.gen_fundus, real_b)
        rec_b = fwd(self.gen_fa, fake_a)
        pred_fb, pred_fa = fwd(self.frozen_fa, fake_b), fwd(self.frozen_fundus, fake_a)
        loss_gan_fa = lsgan_loss(pred_fb, True)
        loss_gan_fundus = lsgan_loss(pred_fa, True)
        loss_cyc_a = F.l1_loss(rec_a, real_a) * cfg.lambda_cycle
        loss_cyc_b = F.l1_loss(rec_b, real_b) * cfg.lambda_cycle
        loss_g = loss_gan_fa + loss_gan_fundus + loss_cyc_a + loss_cyc_b
        if cfg.use_identity:
            w = cfg.lambda_identity * cfg.lambda_cycle
            loss_g = loss_g + F.l1_loss(fwd(self.gen_fa, real_b), real_b) * w + F.l1_loss(fwd(self.gen_fundus, real_a), real_a) * w
        self.opt_g.zero_grad(set_to_none=True)
        backward_step(loss_g, self.opt_g, self.scaler_g)

        # discriminators (on pooled fakes), loss halved. The pools hold the GLOBAL history: every
        # rank queries them with all ranks' fakes (same pool RNG) and keeps its slice of the answer.
        self._requires_grad(True, d_fa, d_fundus)
        pooled_b = shard(self.pool_fa.query(all_gather_cat(fake_b.detach())))
        pooled_a = shard(self.pool_fundus.query(all_gather_cat(fake_a.detach())))
        pr, pf = fwd(self.dis_fa, real_b), fwd(self.dis_fa, pooled_b)
        loss_d_fa = 0.5 * (lsgan_loss(pr, True) + lsgan_loss(pf, False))
        pr, pf = fwd(self.dis_fundus, real_a), fwd(self.dis_fundus, pooled_a)
        loss_d_fundus = 0.5 * (lsgan_loss(pr, True) + lsgan_loss(pf, False))
        self.opt_d.zero_grad(set_to_none=True)
        backward_step(loss_d_fa + loss_d_fundus, self.opt_d, self.scaler_d)

        return {"loss_G": loss_g, "loss_G_fa_gan": loss_gan_fa, "loss_G_fundus_gan": loss_gan_fundus,
                "loss_cycle_fundus": loss_cyc_a, "loss_cycle_fa": loss_cyc_b,
                "loss_D_fa": loss_d_fa, "loss_D_fundus": loss_d_fundus}

    @torch.no_grad()
    def validate(self, step: int, batch: int = 8) -> dict[str, float]:
        """Score the last and the EMA generators on the validation split (fundus -> FA and FA -> fundus mean
        SSIM / PSNR on 8-bit [0, 1] images, as ``translate evaluate``); keep the epoch-end generators whose
        fundus -> FA SSIM is the best so far. Returns the ``val_*`` record (empty without a split)."""
        if self.val is None:
            return {}
        a, b = self.val
        A, B = to01(a), to01(b)
        sets = {"": (self.nets["G_fa"], self.nets["G_fundus"])}
        if self.ema:
            sets["_ema"] = (self.ema["G_fa"].module, self.ema["G_fundus"].module)
        rec: dict[str, float] = {}
        for tag, (g_fa, g_fundus) in sets.items():
            with _EvalMode(g_fa, g_fundus):
                fb = torch.cat([g_fa(a[i : i + batch].to(self.dev)).float().cpu() for i in range(0, len(a), batch)])
                fa = torch.cat([g_fundus(b[i : i + batch].to(self.dev)).float().cpu() for i in range(0, len(b), batch)])
            FB, FA = to01(fb), to01(fa)
            rec[f"val_ssim_fa{tag}"] = float(quality.ssim(FB, B, 1.0).mean())
            rec[f"val_psnr_fa{tag}"] = float(quality.psnr(FB, B, 1.0).mean())
            rec[f"val_ssim_fundus{tag}"] = float(quality.ssim(FA, A, 1.0).mean())
            rec[f"val_psnr_fundus{tag}"] = float(quality.psnr(FA, A, 1.0).mean())
        if self.best is None or rec["val_ssim_fa"] > self.best["val_ssim_fa"]:
            self.best = {"epoch": self.last_epoch, "step": int(step), "val_ssim_fa": rec["val_ssim_fa"],
                         "val_psnr_fa": rec["val_psnr_fa"],
                         **{k: {n: t.detach().cpu().clone() for n, t in self.nets[k].state_dict().items()} for k in ("G_fa", "G_fundus")}}
        rec["val_best_epoch"] = self.best["epoch"]
        return rec

    def generators_eval(self):
        """Context: both generators in eval mode (sample grids), back to train mode after."""
        return _EvalMode(self.nets["G_fa"], self.nets["G_fundus"])

    def state_dict(self) -> dict[str, Any]:
        st = {
            "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "sums": dict(self.sums),
            "nets": {k: v.state_dict() for k, v in self.nets.items()},
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "pool_fa": self.pool_fa.state_dict(), "pool_fundus": self.pool_fundus.state_dict(),
            "data_gen": self.data_gen.get_state(),
        }
        if self.batch_in_epoch:
            st["perm_a"], st["perm_b"] = self.perm_a, self.perm_b
        if self.scaler_g is not None:
            st["scalers"] = {"g": self.scaler_g.state_dict(), "d": self.scaler_d.state_dict()}
        if self.ema:
            st["ema"] = {k: v.state_dict() for k, v in self.ema.items()}
        if self.best is not None:
            st["best"] = self.best
        return st

    def load_state_dict(self, st: dict[str, Any]) -> None:
        for name, net in self.nets.items():
            net.load_state_dict(st["nets"][name])
        self.opt_g.load_state_dict(st["opt_g"])
        self.opt_d.load_state_dict(st["opt_d"])
        self.pool_fa.load_state_dict(st["pool_fa"], self.dev)
        self.pool_fundus.load_state_dict(st["pool_fundus"], self.dev)
        self.data_gen.set_state(st["data_gen"].to(torch.uint8))
        self.epoch, self.batch_in_epoch = int(st["epoch"]), int(st["batch_in_epoch"])
        self.sums = {k: float(v) for k, v in (st.get("sums") or {}).items()}
        if self.batch_in_epoch:
            self.perm_a, self.perm_b = st["perm_a"], st["perm_b"]
        if self.scaler_g is not None and "scalers" in st:
            self.scaler_g.load_state_dict(st["scalers"]["g"])
            self.scaler_d.load_state_dict(st["scalers"]["d"])
        for k, avg in self.ema.items():
            if "ema" in st:
                avg.load_state_dict(st["ema"][k])
            else:  # a run from before the EMA was kept: the average starts at the resumed weights
                avg.n_averaged.zero_()
                avg.update_parameters(self.nets[k])
        if "best" in st:
            b = st["best"]
            self.best = {**b, "epoch": int(b["epoch"]), "step": int(b["step"]), "val_ssim_fa": float(b["val_ssim_fa"]),
                         "val_psnr_fa": float(b["val_psnr_fa"])}


class _EvalMode:
    def __init__(self, *nets):
        self.nets = nets

    def __enter__(self):
        for n in self.nets:
            n.eval()

    def __exit__(self, *exc):
        for n in self.nets:
            n.train()

