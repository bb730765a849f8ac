"""CycleGAN training for fundus (domain A, RGB) <-> fluorescein angiogram (domain B, gray).

Read top to bottom: config -> data -> networks/optimisers -> (resume) -> epoch loop -> final weights.
The run's settings and layout are translate.run's, the images translate.images', the step
translate.trainer's (`CycleGANTrainer`), the lifecycle and config.json shape runtime.run's.

Naming: ``G_fa``: fundus -> FA, ``G_fundus``: FA -> fundus, ``D_fa`` judges angiograms, ``D_fundus``
judges fundus photos.

Losses (Zhu et al. 2017): least-squares GAN, cycle L1 with weight ``lambda_cycle`` (10) in both
directions, identity L1 with weight ``lambda_identity * lambda_cycle`` only when both domains have the
same number of channels (impossible for 3 <-> 1, so switched off automatically), discriminator loss
halved, image pools of 50 fakes, Adam(2e-4, betas 0.5/0.999).

Schedule: ``epochs`` at the constant learning rate, then ``epochs_decay`` epochs of linear decay
(the reference "linear" policy, lr(e) = lr * (N + M + 1 - e) / (M + 1) for epoch e > N, 1-based),
so the total is epochs + epochs_decay. The rate is a pure function of the epoch number: nothing to
restore on resume.

Data (the CycleGAN layout): ``DATA/trainA`` fundus photos, ``DATA/trainB`` angiograms (unpaired),
optional paired ``DATA/testA``/``DATA/testB`` (used for the sample grids). Every image is resized to
``size`` x ``size`` once (the paper: square image at 256), then per step resized to ``load_size``
(``round(size * 286 / 256)``, precomputed) and randomly cropped to ``crop`` (default ``size``; smaller
crops make CPU training cheaper, the networks are fully convolutional), optionally flipped
horizontally. ``rotations`` adds offline copies rotated by 90/180/270 degrees (4x data, as in the paper).

Paired mode (``paired=True``, ``translate train --paired``; the recommended mode when registered
pairs exist): trainA/trainB hold the same subjects under the same file names (matched by name without
extension; every file needs its partner), or ``pairs`` names a CSV of ``fundus,angiogram`` rows (paths
relative to DATA). Both generators are trained pix2pix-style (Isola et al. 2017): conditional PatchGAN
discriminators that see the input and the output side by side (D_fa judges fundus + FA, D_fundus FA +
fundus), least-squares GAN loss as above (pix2pix's default is the vanilla BCE loss; the LSGAN loss is
kept for one loss across both modes), plus L1 to the partner image with weight ``lambda_l1`` (100, as
in pix2pix). ``paired_cycle`` keeps the cycle terms (weight ``lambda_cycle``) as well. A pair gets the
same crop and flip on both sides. The fake pool defaults to 0 (pix2pix) in paired mode, 50 otherwise;
with a pool it holds (input, fake) pairs. The mode is part of the run: a resume cannot switch it.

Checkpoint choice (the late-epoch SSIM swings by ~0.07 between neighbouring epochs, so the last weights
are a lottery): three sets of generator weights end up next to each other in RUN/:

* ``G_fa.safetensors`` / ``G_fundus.safetensors``: the last step's weights ("last");
* ``G_fa_ema.safetensors`` / ``G_fundus_ema.safetensors`` ("ema"): an exponential moving average of the
  generators' weights, updated after every generator step (torch.optim.swa_utils.AveragedModel) with
  decay ``ema_decay`` (0.999; 0 = none) and the warm-up of tf.train.ExponentialMovingAverage
  (decay_n = min(ema_decay, (1 + n) / (10 + n)) at the n-th update);
* ``G_fa_best.safetensors`` / ``G_fundus_best.safetensors`` ("best"), only when DATA/valA + DATA/valB hold a
  paired validation split (same file names): at every epoch end both the last and the EMA generators are
  scored on it (fundus -> FA and FA -> fundus SSIM / PSNR, the evaluation's definitions, logged as
  ``val_*`` in metrics.jsonl) and the epoch-end weights with the highest fundus -> FA validation SSIM are
  kept. The validation images must not be the test images (select on val, report on test).

``translate apply`` / ``translate evaluate`` choose with ``--weights last|ema|best`` and say which was used.

Resume restores everything: the four networks, the EMA and best-so-far generators, both optimisers, both image pools (buffer + RNG), the
data-order/crop/flip RNG, the global RNGs, and the epoch/step counters (also mid-epoch, when
``checkpoint_every`` steps wrote a checkpoint inside an epoch): a run interrupted and resumed gives
bitwise the same weights as an uninterrupted one on the same device.

Distributed (``torchrun --nproc_per_node N -m medxgan translate train ...``): ``batch_size`` is the
global batch (a multiple of N; the paper's 1 needs e.g. ``--batch-size N``). The usual recipe would be
a DistributedSampler over a Dataset; this loop instead samples each step from one RNG over tensors
held in memory, so the equivalent is to shard the global batch: every rank draws the same global
indices, crops and flips (same data RNG) and keeps its contiguous slice. That also keeps a step
identical to the single-process step on the same global batch. The image pools stay global: the
fakes of all ranks are gathered, every rank runs the same pool query (same pool RNG) and keeps its
slice. The networks are wrapped in DistributedDataParallel (gradients averaged over equal local
batches = the global batch's mean losses); InstanceNorm needs no synchronisation. All RNG states stay
identical across ranks and equal to a single process's, so rank 0's checkpoint resumes under any
number of processes. Rank 0 alone logs, prints, writes samples, checkpoints and weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import torch

from medxgan.runtime.checks import check_args
from medxgan.runtime.device import pick_device
from medxgan.runtime.distributed import DistContext, barrier, check_divisible, distributed
from medxgan.runtime.loop import Cadence, LoopOptions, LoopResult
from medxgan.runtime.records import check_record
from medxgan.runtime.run import TrainingRun
from medxgan.runtime.runs import fingerprint_state_dict
from medxgan.runtime.seeding import seed_everything
from medxgan.translate.images import Sampler, augment_rotations, find_pairs, load_domain, load_paired_split, load_pairs, u8_to_tensor
from medxgan.translate.records import TRANSLATE_RUN_FIELDS
from medxgan.translate.run import DOMAIN_A, DOMAIN_B, RUN_KIND, TranslateConfig, schedule_text, weight_file
from medxgan.translate.trainer import CycleGANTrainer, sample_grid

__all__ = ["train_cyclegan", "TranslateConfig"]


def train_cyclegan(
    data: str | Path,
    out: str | Path,
    config: TranslateConfig | None = None,
    *,
    resume: bool = False,
    device: str = "auto",
    quiet: bool = False,
    stop_after_steps: int | None = None,
    max_minutes: float | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train a CycleGAN on DATA/trainA (fundus) and DATA/trainB (angiograms); write the run to `out`.

    ``paired=True`` (or ``pairs=CSV``): pix2pix-style paired training on registered pairs (trainA/trainB
    matched by file name, or the CSV's rows); see the module docstring. Recommended whenever pairs exist.

    ``config``: a :class:`TranslateConfig` (stored in config.json as ``train``); ``overrides``: its fields as
    keywords, over ``config``'s (``train_cyclegan(data, out, size=128, ngf=32)``); None values are ignored. With resume=True the stored
    config is the base and only the budget/cadence options (`epochs`, `epochs_decay`, checkpoint,
    sample and log cadence, the GPU speed options) may differ from it (runtime.loop's resume policy).
    `stop_after_steps`: stop once that many steps (in total) are done, writing a checkpoint there (for
    time-sliced jobs and tests); `max_minutes`: stop after that much training time. The run is then
    finished with resume=True.
    Distributed (torchrun): `batch_size` is the global batch (a multiple of the number of processes);
    rank 0 alone logs and writes the run (see the module docstring).
    Returns a summary dict (epochs, steps, seconds, final losses, run path, finished).
    """
    data = Path(data)
    given = {f.name: getattr(config, f.name) for f in fields(TranslateConfig) if f.name != "load_size"} if config is not None else {}
    overrides = {k: v for k, v in {**given, **overrides}.items() if v is not None}
    unknown = set(overrides) - {f.name for f in fields(TranslateConfig)}
    if unknown:
        raise TypeError(f"unknown training options: {sorted(unknown)}")
    check_args(max_minutes=max_minutes, **overrides)  # runtime.checks' shared rules, before any work
    with distributed(pick_device(device)) as ctx:
        run = TrainingRun(out, RUN_KIND, is_main=ctx.is_main)
        return _train(data, run, ctx, _Budget(resume, quiet or not ctx.is_main, stop_after_steps, max_minutes), overrides)


# options that may differ on --resume (budget, cadence, speed); everything else defines the run
_MAY_CHANGE = ("epochs", "epochs_decay", "checkpoint_every", "keep_checkpoints", "samples", "log_every", "amp", "channels_last",
               "compile")


@dataclass
class _Budget:
    """How far this invocation trains and how it talks: resume or not, quiet, a step to stop at, a time budget."""

    resume: bool
    quiet: bool
    stop_after_steps: int | None
    max_minutes: float | None

    def say(self, *parts: Any) -> None:
        if not self.quiet:
            print("[medxgan]", *parts, flush=True)


@dataclass
class _Domains:
    """The training images (uint8, preprocessed once), the files they came from, the paired validation split
    (names, fundus, angiograms in [-1, 1]; None without DATA/valA + valB) and the sample grid's images."""

    a_u8: torch.Tensor
    b_u8: torch.Tensor
    a_files: list[Path]
    b_files: list[Path]
    val: tuple[list[str], torch.Tensor, torch.Tensor] | None
    sample_a: torch.Tensor | None = None
    sample_b: torch.Tensor | None = None


def _train(data: Path, run: TrainingRun, ctx: DistContext, budget: _Budget, overrides: dict[str, Any]) -> dict[str, Any]:
    run.check_start(budget.resume)  # the directory half of the policy, before loading data
    cfg = _resolve_config(run, budget.resume, overrides)
    check_divisible(cfg.batch_size)
    pairs = find_pairs(data, cfg.pairs) if cfg.paired else None  # file names only: mistakes before any work
    seed_everything(cfg.seed)
    dom = _load_domains(data, cfg, pairs, ctx)
    settings = {**asdict(cfg), "data": fingerprint_state_dict({"a": dom.a_u8, "b": dom.b_u8}),
                "val": fingerprint_state_dict({"a": dom.val[1], "b": dom.val[2]}) if dom.val is not None else None}
    run.open(budget.resume, settings, may_change=_MAY_CHANGE)
    if pairs is not None:  # one sampler over (fundus, angiogram) channels: a pair shares its crop and flip
        sa, sb = Sampler(torch.cat([dom.a_u8, dom.b_u8], 1), cfg), None
    else:
        sa, sb = Sampler(dom.a_u8, cfg), Sampler(dom.b_u8, cfg)
    trainer = CycleGANTrainer(cfg, sa, sb, ctx.device, val=(dom.val[1], dom.val[2]) if dom.val is not None else None)
    if budget.resume:
        budget.say(f"resuming {run.path} at step {run.dir.load_checkpoint_step()}")
    barrier()  # every rank has read RUN before rank 0 writes into it
    run.begin(_run_record(data, cfg, dom, ctx.world_size))
    budget.say(schedule_text(cfg))
    budget.say(("paired (pix2pix-style, L1 weight %g%s); " % (cfg.lambda_l1, ", cycle terms kept" if cfg.paired_cycle else "")
                if cfg.paired else "unpaired (CycleGAN); ")
               + f"{len(dom.a_files)} fundus / {len(dom.b_files)} angiogram training images"
               f"{' (x4 rotations)' if cfg.rotations else ''}; {trainer.steps_per_epoch} steps per epoch; "
               f"crop {cfg.crop} from {cfg.load_size}; identity loss {'on' if cfg.use_identity else 'off'}; device {ctx.device}"
               + (f" x {ctx.world_size} processes (global batch {cfg.batch_size})" if ctx.enabled else ""))
    total = trainer.total_steps if budget.stop_after_steps is None else min(trainer.total_steps, int(budget.stop_after_steps))
    loop = run.train(trainer, LoopOptions(
        total=total, cadence=Cadence(cfg.log_every, 0, cfg.checkpoint_every, cfg.keep_checkpoints), max_minutes=budget.max_minutes,
        on_log=_epoch_logger(trainer, cfg, budget), on_sample=_sample_writer(trainer, run, dom),
        postfix=lambda r: f"G={r['loss_G']:.2f} D={r['loss_D_fa'] + r['loss_D_fundus']:.3f}",
        desc=f"train {'paired (pix2pix)' if cfg.paired else 'CycleGAN'} ({cfg.total_epochs} epochs)", quiet=budget.quiet,
        device=ctx.device))
    last = {k: v for k, v in loop.last_record.items() if k.startswith("loss_")}
    summary = {"run": str(run.path), "epochs": trainer.epoch - 1, "steps": loop.step, "seconds": loop.elapsed, "last_losses": last}
    if loop.step < trainer.total_steps:
        where = "end of epoch" if trainer.batch_in_epoch == 0 else "mid-epoch"
        budget.say(f"stopped after step {loop.step} ({where} {trainer.epoch if trainer.batch_in_epoch else trainer.epoch - 1}); "
                   "continue with --resume")
        barrier()  # rank 0 has written everything before any rank returns
        return {**summary, "finished": False}
    _finish(run, trainer, loop, cfg)
    budget.say(f"trained {cfg.total_epochs} epochs ({loop.step} steps) in {loop.elapsed:.0f} s; weights in {run.path} (last"
               + (", ema" if trainer.ema else "")
               + (f", best = epoch {trainer.best['epoch']} with validation fundus->FA SSIM {trainer.best['val_ssim_fa']:.3f}"
                  if trainer.best is not None else "") + ")")
    barrier()  # rank 0 has written everything before any rank returns
    return {**summary, "epochs": cfg.total_epochs, "finished": True}


def _resolve_config(run: TrainingRun, resume: bool, overrides: dict[str, Any]) -> TranslateConfig:
    """The TranslateConfig: ``overrides`` on the defaults, or on resume on the run's stored ``train`` record."""
    if not resume:
        return TranslateConfig(**overrides).finalise()
    stored = check_record(run.dir.read_config(RUN_KIND), TRANSLATE_RUN_FIELDS, run.dir.config_path)
    base = {k: v for k, v in stored["train"].items() if k in {f.name for f in fields(TranslateConfig)}}
    base.update(overrides)
    base.pop("load_size", None)
    return TranslateConfig(**base).finalise()


def _load_domains(data: Path, cfg: TranslateConfig, pairs: list[tuple[Path, Path]] | None, ctx: DistContext) -> _Domains:
    """The training images of both domains (the pairs in paired mode; x4 rotations when asked), the paired
    validation split, and (rank 0, ``samples``) the sample grid's images from testA/B (trainA/B without)."""
    if pairs is not None:
        a_u8, b_u8 = load_pairs(pairs, cfg)
        a_files, b_files = [p[0] for p in pairs], [p[1] for p in pairs]
    else:
        a_u8, a_files = load_domain(data / "trainA", cfg.channels_a, cfg.size, "fundus photos")
        b_u8, b_files = load_domain(data / "trainB", cfg.channels_b, cfg.size, "angiograms")
    if cfg.rotations:
        a_u8, b_u8 = augment_rotations(a_u8), augment_rotations(b_u8)
    dom = _Domains(a_u8, b_u8, a_files, b_files, load_paired_split(data, "val", cfg.size, cfg.channels_a, cfg.channels_b, required=False))
    if cfg.samples and ctx.is_main:
        src_a = data / "testA" if (data / "testA").is_dir() else data / "trainA"
        src_b = data / "testB" if (data / "testB").is_dir() else data / "trainB"
        dom.sample_a = u8_to_tensor(load_domain(src_a, cfg.channels_a, cfg.size, "fundus photos")[0][: cfg.samples]).to(ctx.device)
        dom.sample_b = u8_to_tensor(load_domain(src_b, cfg.channels_b, cfg.size, "angiograms")[0][: cfg.samples]).to(ctx.device)
    return dom


def _run_record(data: Path, cfg: TranslateConfig, dom: _Domains, world_size: int) -> dict[str, Any]:
    """The translate run's own fields of config.json (translate.run's layout; runtime.run adds the common ones)."""
    val = dom.val
    return dict(
        direction_names={"G_fa": f"{DOMAIN_A} -> {DOMAIN_B}", "G_fundus": f"{DOMAIN_B} -> {DOMAIN_A}"},
        channels={DOMAIN_A: cfg.channels_a, DOMAIN_B: cfg.channels_b},
        size=cfg.size, ngf=cfg.ngf, ndf=cfg.ndf, blocks=cfg.blocks, upsample=cfg.upsample, norm="instance",
        preprocessing={
            "fundus": "RGB (a gray image is refused)", "angiogram": "gray (RGB converted to luminance)",
            "train_resize": cfg.size, "load_size": cfg.load_size, "crop": cfg.crop, "flip": cfg.flip,
            "rotations": cfg.rotations, "range": "[-1, 1] = 2 * uint8 / 255 - 1",
        },
        identity_loss=cfg.use_identity,
        validation=({"split": "valA/valB", "pairs": len(val[0]), "select": "best = epoch-end weights with the highest fundus -> FA "
                     "validation SSIM"} if val is not None else None),
        weights_kept=["last"] + (["ema"] if cfg.ema_decay > 0 else []) + (["best"] if val is not None else []),
        mode=("paired (pix2pix: conditional PatchGAN + L1" + (" + cycle)" if cfg.paired_cycle else ")") if cfg.paired
              else "unpaired (CycleGAN)"),
        data=str(data), n_train={DOMAIN_A: len(dom.a_files), DOMAIN_B: len(dom.b_files)},
        train=asdict(cfg), schedule=schedule_text(cfg), world_size=world_size,
    )


def _epoch_logger(trainer: CycleGANTrainer, cfg: TranslateConfig, budget: _Budget) -> Callable[[int, dict[str, Any]], dict[str, Any]]:
    """The loop's ``on_log``: epoch and rate in every record; at an epoch's end its mean losses and the validation
    scores (monitoring: not counted as training time), and a line about 20 times per run."""
    shown = ("epoch_loss_G", "epoch_loss_D_fa", "epoch_loss_D_fundus", "epoch_loss_cycle_fundus", "epoch_loss_cycle_fa",
             "epoch_loss_l1_fa", "epoch_loss_l1_fundus")

    def on_log(step: int, means: dict[str, Any]) -> dict[str, Any]:
        rec = {"epoch": trainer.last_epoch, "lr": trainer.last_lr}
        if trainer.period_done:
            rec.update(trainer.epoch_means)
            rec.update(trainer.validate(step))
            e = trainer.last_epoch
            if e % max(1, cfg.total_epochs // 20) == 0:
                budget.say(f"epoch {e}/{cfg.total_epochs} lr {trainer.last_lr:.2e} "
                           + " ".join(f"{k[6:]} {v:.3f}" for k, v in trainer.epoch_means.items() if k in shown)
                           + ("" if "val_ssim_fa" not in rec else
                              f" | val fundus->FA SSIM {rec['val_ssim_fa']:.3f}"
                              + (f" (ema {rec['val_ssim_fa_ema']:.3f})" if "val_ssim_fa_ema" in rec else "")
                              + f", best epoch {rec['val_best_epoch']}"))
        return rec

    return on_log


def _sample_writer(trainer: CycleGANTrainer, run: TrainingRun, dom: _Domains) -> Callable[[int], None]:
    """The loop's ``on_sample``: the sample grid at each epoch's end (samples/epoch_NNN.png)."""

    def on_sample(step: int) -> None:
        if dom.sample_a is not None and trainer.period_done:
            with trainer.generators_eval():
                sample_grid(run.path / "samples" / f"epoch_{trainer.last_epoch:03d}.png", trainer.nets["G_fa"],
                            trainer.nets["G_fundus"], dom.sample_a, dom.sample_b)

    return on_sample


def _finish(run: TrainingRun, trainer: CycleGANTrainer, loop: LoopResult, cfg: TranslateConfig) -> None:
    """The generators kept (last, ema, best: translate.run's files) with their fingerprints, status finished."""
    weights: dict[str, Any] = {}
    for k in ("G_fa", "G_fundus"):
        weights[weight_file(k, "last")] = trainer.nets[k]
        if k in trainer.ema:
            weights[weight_file(k, "ema")] = trainer.ema[k].module
        if trainer.best is not None:
            weights[weight_file(k, "best")] = trainer.best[k]
    kept: dict[str, Any] = {"last": {"step": loop.step}}
    if trainer.ema:
        kept["ema"] = {"decay": cfg.ema_decay, "updates": int(trainer.ema["G_fa"].n_averaged),
                       "warmup": "decay_n = min(decay, (1 + n) / (10 + n))"}
    if trainer.best is not None:
        kept["best"] = {k: trainer.best[k] for k in ("epoch", "step", "val_ssim_fa", "val_psnr_fa")}
    metrics = {k: v for k, v in loop.last_record.items() if k.startswith(("loss_", "epoch_loss_", "val_"))}
    run.finish(loop, weights=weights, metrics=metrics, record={"weights": kept, "steps": loop.step})
