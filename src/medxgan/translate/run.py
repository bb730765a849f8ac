"""The CycleGAN (translate) run, written by translate.train (through runtime.run.TrainingRun) and read by
translate.apply and translate.metrics: its kind, its settings (`TranslateConfig`, stored in config.json
as ``train``), the learning-rate schedule, the generator weight files and loading them back.

Layout::

    RUN/
      config.json                                   kind "cyclegan", train (TranslateConfig), size, channels,
                                                    preprocessing, weights kept, fingerprints, status, ...
      G_fa.safetensors, G_fundus.safetensors        "last": the final step's generators
      G_fa_ema.safetensors, G_fundus_ema...         "ema": their moving average (ema_decay > 0)
      G_fa_best.safetensors, G_fundus_best...       "best": the epoch-end weights with the best validation SSIM
      metrics.jsonl, checkpoints/, samples/

Naming: ``G_fa``: fundus -> FA, ``G_fundus``: FA -> fundus.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from medxgan.runtime.errors import MedxganError
from medxgan.runtime.records import check_record
from medxgan.runtime.runs import RunDir
from medxgan.translate.networks import ResnetGenerator
from medxgan.translate.records import TRANSLATE_RUN_FIELDS

RUN_KIND = "cyclegan"
DOMAIN_A, DOMAIN_B = "fundus", "angiogram"
DIRECTIONS = {"fundus2angio": "G_fa", "angio2fundus": "G_fundus"}
# the generator weights a run keeps: the last step's, their EMA, the best epoch on validation
WEIGHTS = ("last", "ema", "best")
_SUFFIX = {"last": "", "ema": "_ema", "best": "_best"}


def weight_file(generator: str, weights: str) -> str:
    """The weight file's name (without .safetensors) of ``generator`` ("G_fa" / "G_fundus") for a --weights choice."""
    return f"{generator}{_SUFFIX[weights]}"


@dataclass
class TranslateConfig:
    size: int = 256
    crop: int | None = None  # None: = size
    epochs: int = 100  # constant-lr epochs
    epochs_decay: int | None = None  # None: = epochs
    ngf: int = 64
    ndf: int = 64
    blocks: int = 6
    upsample: str = "transpose"  # the paper's; measured better than resize (benchmarks/translate/RESULTS.md)
    batch_size: int = 1
    lr: float = 2e-4
    beta1: float = 0.5
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5
    pool_size: int | None = None  # None: 50 unpaired (CycleGAN), 0 paired (pix2pix)
    paired: bool = False  # pix2pix-style paired training (see the module docstring)
    pairs: str | None = None  # CSV of fundus,angiogram rows (paths relative to DATA); implies paired
    lambda_l1: float = 100.0  # paired: L1 to the partner image
    paired_cycle: bool = False  # paired: keep the cycle terms too
    flip: bool = True
    rotations: bool = False
    seed: int = 0
    checkpoint_every: int = 0  # steps; 0 = only at epoch ends
    keep_checkpoints: int = 2
    samples: int = 4  # images in the per-epoch sample grid (0 = none)
    log_every: int = 50
    channels_a: int = 3
    channels_b: int = 1
    # GPU speed options (runtime.precision); with any of them on, not covered by bitwise resume
    amp: str = "off"
    channels_last: bool = False
    compile: bool = False
    # checkpoint choice: EMA of the generators' weights (0 = off); see the module docstring
    ema_decay: float = 0.999
    load_size: int = field(default=0)  # derived

    def finalise(self) -> "TranslateConfig":
        if self.size < 16 or self.size % 4:
            raise MedxganError(f"size {self.size}: must be a multiple of 4 and at least 16", arg="size")
        self.crop = self.size if self.crop is None else self.crop
        if self.crop < 16 or self.crop % 4 or self.crop > self.size:
            raise MedxganError(f"crop {self.crop}: must be a multiple of 4 between 16 and --size {self.size}", arg="crop")
        self.epochs_decay = self.epochs if self.epochs_decay is None else self.epochs_decay
        if self.epochs < 0 or self.epochs_decay < 0 or self.epochs + self.epochs_decay < 1:
            raise MedxganError(f"epochs {self.epochs} epochs_decay {self.epochs_decay}: need at least one epoch in total", arg=("epochs", "epochs_decay"))
        if self.upsample not in ("transpose", "resize"):
            raise MedxganError(f"upsample {self.upsample}: use transpose or resize", arg="upsample")
        if self.batch_size < 1:
            raise MedxganError(f"batch_size {self.batch_size}: must be >= 1", arg="batch_size")
        for k in ("ngf", "ndf", "blocks"):
            if getattr(self, k) < (0 if k == "blocks" else 1):
                raise MedxganError(f"{k} {getattr(self, k)}: must be positive", arg=k)
        if self.pairs is not None:
            self.paired = True
        if self.paired_cycle and not self.paired:
            raise MedxganError("paired_cycle: only with paired training (add --paired)", arg="paired_cycle")
        if self.pool_size is None:
            self.pool_size = 0 if self.paired else 50
        if not 0.0 <= self.ema_decay < 1.0:
            raise MedxganError(f"ema_decay {self.ema_decay}: must be in [0, 1) (0 = no EMA weights)", arg="ema_decay")
        self.load_size = int(round(self.size * 286 / 256))
        return self

    @property
    def total_epochs(self) -> int:
        return self.epochs + int(self.epochs_decay or 0)

    @property
    def use_identity(self) -> bool:
        return self.channels_a == self.channels_b and self.lambda_identity > 0 and not self.paired


def lr_at_epoch(epoch: int, base_lr: float, epochs: int, epochs_decay: int) -> float:
    """Learning rate for 1-based `epoch`: constant for 1..epochs, then linear towards 0 over epochs_decay
    (the reference CycleGAN 'linear' policy: epoch N+k gets base * (1 - k / (M + 1)), reaching 0 after N+M)."""
    if epoch <= epochs:
        return base_lr
    k = epoch - epochs
    return base_lr * max(0.0, 1.0 - k / float(epochs_decay + 1))


def schedule_text(cfg: TranslateConfig) -> str:
    n, m = cfg.epochs, int(cfg.epochs_decay or 0)
    if m == 0:
        return f"epochs 1-{n} constant lr {cfg.lr:g}; no decay; total {n} epochs"
    if n == 0:
        return f"epochs 1-{m} linear decay of lr {cfg.lr:g} to 0; total {m} epochs"
    return f"epochs 1-{n} constant lr {cfg.lr:g}, {n + 1}..{n + m} linear decay to 0; total {n + m} epochs"


def build_generators(cfg: dict[str, Any] | TranslateConfig) -> tuple[ResnetGenerator, ResnetGenerator]:
    c = cfg if isinstance(cfg, dict) else asdict(cfg)
    g_fa = ResnetGenerator(c["channels_a"], c["channels_b"], c["ngf"], c["blocks"], c["upsample"])
    g_fundus = ResnetGenerator(c["channels_b"], c["channels_a"], c["ngf"], c["blocks"], c["upsample"])
    return g_fa, g_fundus


def weights_text(cfg: dict[str, Any], weights: str) -> str:
    """What a --weights choice means for this run, for outputs: e.g. "best (epoch 12 of 16, step 1620,
    validation fundus->FA SSIM 0.612)"."""
    kept = cfg.get("weights") or {}
    info = kept.get(weights) or {}
    if weights == "last":
        return f"last (step {info.get('step', cfg.get('steps', '?'))})"
    if weights == "ema":
        return (f"ema (exponential moving average of the generators, decay {info.get('decay', '?')}, "
                f"{info.get('updates', '?')} updates)")
    total = (cfg.get("train") or {}).get("epochs", 0) + ((cfg.get("train") or {}).get("epochs_decay") or 0)
    return (f"best (epoch {info.get('epoch', '?')} of {total}, step {info.get('step', '?')}, validation fundus->FA SSIM "
            f"{info.get('val_ssim_fa', float('nan')):.3f})")


def check_weights(run: str | Path, weights: str) -> dict[str, Any]:
    """The run's config, once the --weights choice is known to exist in it (MedxganError, one line, otherwise)."""
    if weights not in WEIGHTS:
        raise MedxganError(f"weights {weights}: use last, ema or best", arg="weights")
    rd = RunDir(run)
    cfg = check_record(rd.read_config(RUN_KIND), TRANSLATE_RUN_FIELDS, rd.config_path)
    for name in DIRECTIONS.values():
        file = weight_file(name, weights)
        if rd.has_weights(file):
            continue
        if weights == "last" or not rd.has_weights(name):
            raise MedxganError(f"{rd.path}: no {file}.safetensors (training not finished? resume it with --resume)")
        why = ("the run had no validation split DATA/valA + DATA/valB" if weights == "best"
               else "the run was trained without an EMA (--ema-decay 0, or before EMA weights were kept)")
        raise MedxganError(f"{rd.path}: no {file}.safetensors ({why}); use --weights "
                           + " or ".join(w for w in WEIGHTS if w != weights and rd.has_weights(weight_file(name, w))),
                           arg="weights")
    return cfg


def load_generator(run: str | Path, direction: str, device: str | torch.device = "cpu",
                   weights: str = "last") -> tuple[ResnetGenerator, dict[str, Any]]:
    """The generator for `direction` (fundus2angio | angio2fundus) of a cyclegan run, in eval mode.
    ``weights``: "last" (the final step's), "ema" (the moving average) or "best" (the epoch with the best
    validation SSIM; only for runs trained with a DATA/valA + valB split)."""
    if direction not in DIRECTIONS:
        raise MedxganError(f"direction {direction}: use fundus2angio or angio2fundus", arg="direction")
    cfg = check_weights(run, weights)
    rd = RunDir(run)
    name = DIRECTIONS[direction]
    file = weight_file(name, weights)
    g_fa, g_fundus = build_generators(cfg["train"])
    g = g_fa if name == "G_fa" else g_fundus
    try:
        g.load_state_dict(rd.load_weights(file))
    except RuntimeError as exc:
        raise MedxganError(f"{rd.path}/{file}.safetensors: does not match config.json ({str(exc).splitlines()[0]})") from None
    return g.to(device).eval(), cfg
