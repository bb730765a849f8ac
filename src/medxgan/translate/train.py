"""CycleGAN training for fundus (domain A, RGB) <-> fluorescein angiogram (domain B, gray).

Read top to bottom: config -> data -> networks/optimisers -> (resume) -> epoch loop -> final weights.

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

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medxgan.data.imageio import convert_channels, list_images, read_image, resize_image
from medxgan.runtime.atomic import atomic_save_image
from medxgan.runtime.device import pick_device
from medxgan.runtime.distributed import (
    DistContext, all_gather_cat, barrier, check_divisible, distributed, mean_over_ranks, shard, wrap_ddp,
)
from medxgan.runtime.checks import check_args
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.records import check_record
from medxgan.runtime.precision import backward_step, check_amp, compile_module, forward, grad_scaler, to_channels_last
from medxgan.runtime.loop import Cadence, LoopOptions, check_start, open_run, train_loop
from medxgan.runtime.runs import RunDir, fingerprint_module, fingerprint_state_dict
from medxgan.runtime.seeding import seed_everything
from medxgan.translate.networks import PatchDiscriminator, ResnetGenerator, init_weights
from medxgan.translate.pool import ImagePool
from medxgan.translate.records import TRANSLATE_RUN_FIELDS
from medxgan.runtime import quality

RUN_KIND = "cyclegan"
DOMAIN_A, DOMAIN_B = "fundus", "angiogram"

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



def lsgan_loss(pred: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss (Mao et al. 2017), the CycleGAN choice: mean (D(x) - 1)^2 for a real target,
    mean D(x)^2 for a fake one."""
    return F.mse_loss(pred, torch.ones_like(pred) if real else torch.zeros_like(pred))


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


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------
def _load_domain(folder: Path, channels: int, size: int, what: str) -> tuple[torch.Tensor, list[Path]]:
    """All images of one folder as uint8 N x C x size x size (preprocessed once, kept in memory)."""
    if not folder.is_dir():
        raise MedxganError(f"{folder}: folder not found (expected {what} images in the CycleGAN layout trainA/trainB)")
    files = list_images(folder)
    if not files:
        raise MedxganError(f"{folder}: no images ({what})")
    out = np.empty((len(files), channels, size, size), np.uint8)
    for i, f in enumerate(files):
        out[i] = to_domain_array(read_image(f), channels, f, size).transpose(2, 0, 1)
    return torch.from_numpy(out), files


def _stem_map(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise MedxganError(f"{folder}: folder not found (expected {what} images in the layout trainA/trainB)")
    files = list_images(folder)
    if not files:
        raise MedxganError(f"{folder}: no images ({what})")
    out: dict[str, Path] = {}
    for f in files:
        key = f.relative_to(folder).with_suffix("").as_posix()
        if key in out:
            raise MedxganError(f"{f}: two files named {key} (also {out[key].name}); paired mode matches trainA and trainB by file "
                               "name without extension")
        out[key] = f
    return out


def find_pairs(data: Path, pairs_csv: str | None = None) -> list[tuple[Path, Path]]:
    """The training pairs of paired mode as (fundus, angiogram) paths, checked before any image is read:
    from the CSV ``pairs_csv`` (rows ``fundus,angiogram``, an optional header of those words, paths
    relative to DATA or absolute), or else DATA/trainA and DATA/trainB matched by file name without
    extension. Every file must have its partner and every named file must exist (MedxganError, one line)."""
    if pairs_csv is not None:
        import csv

        path = Path(pairs_csv)
        if not path.is_file():
            raise MedxganError(f"pairs {path}: file not found (a CSV of fundus,angiogram rows)", arg="pairs")
        try:  # a binary or non-UTF-8 file (an image given by mistake): one line, not a UnicodeDecodeError
            text = path.read_text(encoding="utf-8-sig")
            if "\x00" in text:
                raise csv.Error("it holds NUL bytes: a binary file")
            rows = list(csv.reader(text.splitlines()))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise MedxganError(f"pairs {path}: not a text CSV of fundus,angiogram rows ({exc})", arg="pairs") from None
        pairs: list[tuple[Path, Path]] = []
        for n, row in enumerate(rows, 1):
            cells = [c.strip() for c in row]
            if not any(cells):
                continue
            if n == 1 and [c.lower() for c in cells] == ["fundus", "angiogram"]:
                continue
            if len(cells) != 2 or not all(cells):
                raise MedxganError(f"{path} row {n}: expected 2 columns fundus,angiogram, got {len(cells)}: {','.join(row)}")
            pa, pb = (Path(c) if Path(c).is_absolute() else data / c for c in cells)
            for what, f in (("fundus", pa), ("angiogram", pb)):
                if not f.is_file():
                    raise MedxganError(f"{path} row {n}: {what} file not found: {f}")
            pairs.append((pa, pb))
        if not pairs:
            raise MedxganError(f"{path}: no pairs (expected rows fundus,angiogram)", arg="pairs")
        return pairs
    a = _stem_map(data / "trainA", "fundus photos")
    b = _stem_map(data / "trainB", "angiograms")
    common = sorted(set(a) & set(b))
    if not common:
        raise MedxganError(f"paired {data}: no file name is in both trainA ({len(a)} files) and trainB ({len(b)} files); "
                           "paired mode needs the same names for a pair (or --pairs CSV); drop --paired for unpaired training",
                           arg="paired")
    for mine, other, name in ((a, b, "trainB"), (b, a, "trainA")):
        lonely = sorted(set(mine) - set(other))
        if lonely:
            more = f" (and {len(lonely) - 1} more)" if len(lonely) > 1 else ""
            raise MedxganError(f"{mine[lonely[0]]}: no partner named {lonely[0]}.* in {data / name}{more}; paired mode needs "
                               "every image's partner (or --pairs CSV)")
    return [(a[k], b[k]) for k in common]


def _load_pairs(pairs: list[tuple[Path, Path]], cfg: "TranslateConfig") -> tuple[torch.Tensor, torch.Tensor]:
    """The pairs as uint8 N x C x size x size tensors (fundus, angiogram), same order."""
    a = np.empty((len(pairs), cfg.channels_a, cfg.size, cfg.size), np.uint8)
    b = np.empty((len(pairs), cfg.channels_b, cfg.size, cfg.size), np.uint8)
    for i, (fa, fb) in enumerate(pairs):
        a[i] = to_domain_array(read_image(fa), cfg.channels_a, fa, cfg.size).transpose(2, 0, 1)
        b[i] = to_domain_array(read_image(fb), cfg.channels_b, fb, cfg.size).transpose(2, 0, 1)
    return torch.from_numpy(a), torch.from_numpy(b)


def load_paired_split(data: Path, split: str, size: int, channels_a: int = 3, channels_b: int = 1,
                      required: bool = True) -> tuple[list[str], torch.Tensor, torch.Tensor] | None:
    """DATA/{split}A (fundus) + DATA/{split}B (angiograms) paired by file name without extension, at
    ``size``: (names, fundus, angiograms) as N x C x size x size tensors in [-1, 1]. Missing folders:
    MedxganError when ``required``, else None. No common name: MedxganError."""
    da, db = data / f"{split}A", data / f"{split}B"
    if not (da.is_dir() and db.is_dir()):
        if not required:
            return None
        missing = da if not da.is_dir() else db
        raise MedxganError(f"{missing}: folder not found (paired {split} images go in {split}A/ (fundus) and {split}B/ "
                           "(angiograms) with the same file names)")
    fa = {p.relative_to(da).with_suffix("").as_posix(): p for p in list_images(da)}
    fb = {p.relative_to(db).with_suffix("").as_posix(): p for p in list_images(db)}
    names = sorted(set(fa) & set(fb))
    if not names:
        raise MedxganError(f"{data}: no paired {split} images (no file name is in both {split}A/ and {split}B/)")
    a = np.stack([to_domain_array(read_image(fa[n]), channels_a, fa[n], size) for n in names]).transpose(0, 3, 1, 2)
    b = np.stack([to_domain_array(read_image(fb[n]), channels_b, fb[n], size) for n in names]).transpose(0, 3, 1, 2)
    return names, u8_to_tensor(torch.from_numpy(a)), u8_to_tensor(torch.from_numpy(b))


def to01(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] through 8 bits, exactly what a saved PNG holds (the evaluation's and validation's scale)."""
    return tensor_to_u8(x).float() / 255.0


def to_domain_array(a: np.ndarray, channels: int, path: Any, size: int | None) -> np.ndarray:
    """H x W x C in [0,1] -> uint8 H x W x channels, resized; the one preprocessing used by train/apply/eval.

    A fundus photo (3 channels) must be colour: a gray image is refused (MedxganError naming the file).
    An angiogram (1 channel) given as RGB is converted to luminance.
    """
    if channels == 3 and a.shape[2] != 3:
        raise MedxganError(f"expects 3-channel colour fundus, got {a.shape[2]} channel: {path}")
    a = convert_channels(a, channels)
    if size is not None:
        a = resize_image(a, size)
    return (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)


def u8_to_tensor(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(127.5).sub(1.0)


def tensor_to_u8(x: torch.Tensor) -> torch.Tensor:
    return ((x.clamp(-1, 1) + 1) * 127.5 + 0.5).to(torch.uint8)


def _augment_rotations(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x] + [torch.rot90(x, k, dims=(2, 3)) for k in (1, 2, 3)], 0)


class _Sampler:
    """Resize-to-load_size (precomputed), random crop and flip, driven by one torch.Generator."""

    def __init__(self, images_u8: torch.Tensor, cfg: TranslateConfig):
        x = u8_to_tensor(images_u8)
        if cfg.load_size != cfg.size:
            x = F.interpolate(x, size=(cfg.load_size, cfg.load_size), mode="bilinear", align_corners=False, antialias=True)
        self.x = x.clamp(-1, 1)
        self.crop, self.flip = cfg.crop, cfg.flip

    def __len__(self) -> int:
        return self.x.shape[0]

    def batch(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        L = self.x.shape[-1]
        out = []
        for i in idx.tolist():
            top = int(torch.randint(0, L - self.crop + 1, (), generator=gen))
            left = int(torch.randint(0, L - self.crop + 1, (), generator=gen))
            img = self.x[i, :, top : top + self.crop, left : left + self.crop]
            if self.flip and torch.rand((), generator=gen).item() < 0.5:
                img = img.flip(-1)
            out.append(img)
        return torch.stack(out, 0)


# --------------------------------------------------------------------------------------------------
# networks
# --------------------------------------------------------------------------------------------------
def build_generators(cfg: dict[str, Any] | TranslateConfig) -> tuple[ResnetGenerator, ResnetGenerator]:
    c = cfg if isinstance(cfg, dict) else asdict(cfg)
    g_fa = ResnetGenerator(c["channels_a"], c["channels_b"], c["ngf"], c["blocks"], c["upsample"])
    g_fundus = ResnetGenerator(c["channels_b"], c["channels_a"], c["ngf"], c["blocks"], c["upsample"])
    return g_fa, g_fundus


def _sample_grid(path: Path, g_fa, g_fundus, a: torch.Tensor, b: torch.Tensor) -> None:
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


# --------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------
class CycleGANTrainer:
    """The step contract of runtime.loop for CycleGAN (the reference's ``BaseModel`` idea): ``step()`` is
    one global batch (generators, then discriminators on pooled fakes); epochs are counted inside --
    the learning rate is a function of the epoch, each epoch draws new permutations, and
    ``period_done`` tells the loop that an epoch just ended (epoch log, sample grid, checkpoint).
    ``state_dict`` holds the four networks, both optimisers, both image pools, the data RNG, the
    epoch/batch counters (mid-epoch: the epoch's permutations) and the epoch's running loss sums."""

    def __init__(self, cfg: TranslateConfig, sa: _Sampler, sb: _Sampler | None, dev: torch.device,
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


def train_cyclegan(
    data: str | Path,
    out: str | Path,
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

    `overrides` are TranslateConfig fields; None values are ignored. With resume=True the stored
    config is the base and only the budget/cadence options (`epochs`, `epochs_decay`, checkpoint,
    sample and log cadence, the GPU speed options) may differ from it (runtime.loop's resume policy).
    `stop_after_steps`: stop once that many steps (in total) are done, writing a checkpoint there (for
    time-sliced jobs and tests); `max_minutes`: stop after that much training time. The run is then
    finished with resume=True.
    Distributed (torchrun): `batch_size` is the global batch (a multiple of the number of processes);
    rank 0 alone logs and writes the run (see the module docstring).
    Returns a summary dict (epochs, steps, seconds, final losses, run path, finished).
    """
    data, run = Path(data), RunDir(out)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(overrides) - {f.name for f in fields(TranslateConfig)}
    if unknown:
        raise TypeError(f"unknown training options: {sorted(unknown)}")
    check_args(max_minutes=max_minutes, **overrides)  # runtime.checks' shared rules, before any work
    with distributed(pick_device(device)) as ctx:
        return _train(data, run, ctx, resume=resume, quiet=quiet or not ctx.is_main, stop_after_steps=stop_after_steps,
                      max_minutes=max_minutes, overrides=overrides)


# options that may differ on --resume (budget, cadence, speed); everything else defines the run
_MAY_CHANGE = ("epochs", "epochs_decay", "checkpoint_every", "keep_checkpoints", "samples", "log_every", "amp", "channels_last",
               "compile")


def _train(data: Path, run: RunDir, ctx: DistContext, *, resume: bool, quiet: bool, stop_after_steps: int | None,
           max_minutes: float | None, overrides: dict[str, Any]) -> dict[str, Any]:
    main = ctx.is_main
    check_start(run, resume=resume, kind=RUN_KIND)  # the directory half of the policy, before loading data
    if resume:
        stored = check_record(run.read_config(RUN_KIND), TRANSLATE_RUN_FIELDS, run.config_path)
        base = {k: v for k, v in stored["train"].items() if k in {f.name for f in fields(TranslateConfig)}}
        base.update(overrides)
        base.pop("load_size", None)
        cfg = TranslateConfig(**base).finalise()
    else:
        cfg = TranslateConfig(**overrides).finalise()
    check_divisible(cfg.batch_size)
    pairs = find_pairs(data, cfg.pairs) if cfg.paired else None  # file names only: mistakes before any work

    dev = ctx.device
    seed_everything(cfg.seed)
    say = (lambda *a: None) if quiet else (lambda *a: print("[medxgan]", *a, flush=True))

    # ---- data -----------------------------------------------------------------------------------
    if pairs is not None:
        a_u8, b_u8 = _load_pairs(pairs, cfg)
        a_files, b_files = [p[0] for p in pairs], [p[1] for p in pairs]
    else:
        a_u8, a_files = _load_domain(data / "trainA", cfg.channels_a, cfg.size, "fundus photos")
        b_u8, b_files = _load_domain(data / "trainB", cfg.channels_b, cfg.size, "angiograms")
    if cfg.rotations:
        a_u8, b_u8 = _augment_rotations(a_u8), _augment_rotations(b_u8)
    val = load_paired_split(data, "val", cfg.size, cfg.channels_a, cfg.channels_b, required=False)
    settings = {**asdict(cfg), "data": fingerprint_state_dict({"a": a_u8, "b": b_u8}),
                "val": fingerprint_state_dict({"a": val[1], "b": val[2]}) if val is not None else None}
    start = open_run(run, resume=resume, kind=RUN_KIND, settings=settings, may_change=_MAY_CHANGE)
    if pairs is not None:  # one sampler over (fundus, angiogram) channels: a pair shares its crop and flip
        sa, sb = _Sampler(torch.cat([a_u8, b_u8], 1), cfg), None
    else:
        sa, sb = _Sampler(a_u8, cfg), _Sampler(b_u8, cfg)
    sample_a = sample_b = None
    if cfg.samples and main:
        src_a = data / "testA" if (data / "testA").is_dir() else data / "trainA"
        src_b = data / "testB" if (data / "testB").is_dir() else data / "trainB"
        sample_a = u8_to_tensor(_load_domain(src_a, cfg.channels_a, cfg.size, "fundus photos")[0][: cfg.samples]).to(dev)
        sample_b = u8_to_tensor(_load_domain(src_b, cfg.channels_b, cfg.size, "angiograms")[0][: cfg.samples]).to(dev)

    # ---- networks, optimisers, pools --------------------------------------------------------------
    trainer = CycleGANTrainer(cfg, sa, sb, dev, val=(val[1], val[2]) if val is not None else None)
    if resume:
        say(f"resuming {run.path} at step {run.load_checkpoint_step()}")

    barrier()  # every rank has read RUN before rank 0 writes into it
    if main:
        run.write_config(
            RUN_KIND,
            direction_names={"G_fa": f"{DOMAIN_A} -> {DOMAIN_B}", "G_fundus": f"{DOMAIN_B} -> {DOMAIN_A}"},
            channels={DOMAIN_A: cfg.channels_a, DOMAIN_B: cfg.channels_b},
            size=cfg.size, ngf=cfg.ngf, ndf=cfg.ndf, blocks=cfg.blocks, upsample=cfg.upsample, norm="instance",
            preprocessing={
                "fundus": "RGB (a gray image is refused)", "angiogram": "gray (RGB converted to luminance)",
                "train_resize": cfg.size, "load_size": cfg.load_size, "crop": cfg.crop, "flip": cfg.flip,
                "rotations": cfg.rotations, "range": "[-1, 1] = 2 * uint8 / 255 - 1",
            },
            identity_loss=cfg.use_identity,
            validation=({"split": "valA/valB", "pairs": len(val[0]),
                         "select": "best = epoch-end weights with the highest fundus -> FA validation SSIM"}
                        if val is not None else None),
            weights_kept=["last"] + (["ema"] if cfg.ema_decay > 0 else []) + (["best"] if val is not None else []),
            mode=("paired (pix2pix: conditional PatchGAN + L1"
                  + (" + cycle)" if cfg.paired_cycle else ")") if cfg.paired else "unpaired (CycleGAN)"),
            data=str(data), n_train={DOMAIN_A: len(a_files), DOMAIN_B: len(b_files)},
            train=asdict(cfg),
            schedule=schedule_text(cfg),
            world_size=ctx.world_size,
            settings=settings,
            resumes=start.resumes,
            status="running",
        )
    say(schedule_text(cfg))
    say(("paired (pix2pix-style, L1 weight %g%s); " % (cfg.lambda_l1, ", cycle terms kept" if cfg.paired_cycle else "")
         if cfg.paired else "unpaired (CycleGAN); ")
        + f"{len(a_files)} fundus / {len(b_files)} angiogram training images"
        f"{' (x4 rotations)' if cfg.rotations else ''}; {trainer.steps_per_epoch} steps per epoch; "
        f"crop {cfg.crop} from {cfg.load_size}; identity loss {'on' if cfg.use_identity else 'off'}; device {dev}"
        + (f" x {ctx.world_size} processes (global batch {cfg.batch_size})" if ctx.enabled else ""))

    def on_log(step: int, means: dict[str, Any]) -> dict[str, Any]:
        rec = {"epoch": trainer.last_epoch, "lr": trainer.last_lr}
        if trainer.period_done:
            rec.update(trainer.epoch_means)
            rec.update(trainer.validate(step))  # monitoring: not counted as training time
            e = trainer.last_epoch
            if not quiet and e % max(1, cfg.total_epochs // 20) == 0:
                say(f"epoch {e}/{cfg.total_epochs} lr {trainer.last_lr:.2e} "
                    + " ".join(f"{k[6:]} {v:.3f}" for k, v in trainer.epoch_means.items()
                               if k in ("epoch_loss_G", "epoch_loss_D_fa", "epoch_loss_D_fundus", "epoch_loss_cycle_fundus", "epoch_loss_cycle_fa",
                                        "epoch_loss_l1_fa", "epoch_loss_l1_fundus"))
                    + ("" if "val_ssim_fa" not in rec else
                       f" | val fundus->FA SSIM {rec['val_ssim_fa']:.3f}"
                       + (f" (ema {rec['val_ssim_fa_ema']:.3f})" if "val_ssim_fa_ema" in rec else "")
                       + f", best epoch {rec['val_best_epoch']}"))
        return rec

    def on_sample(step: int) -> None:
        if sample_a is not None and trainer.period_done:
            with trainer.generators_eval():
                _sample_grid(run.path / "samples" / f"epoch_{trainer.last_epoch:03d}.png", trainer.nets["G_fa"],
                             trainer.nets["G_fundus"], sample_a, sample_b)

    total = trainer.total_steps if stop_after_steps is None else min(trainer.total_steps, int(stop_after_steps))
    loop = train_loop(trainer, run, LoopOptions(
        total=total, cadence=Cadence(cfg.log_every, 0, cfg.checkpoint_every, cfg.keep_checkpoints), resume=start.resumed,
        max_minutes=max_minutes, on_log=on_log, on_sample=on_sample,
        postfix=lambda r: f"G={r['loss_G']:.2f} D={r['loss_D_fa'] + r['loss_D_fundus']:.3f}",
        desc=f"train {'paired (pix2pix)' if cfg.paired else 'CycleGAN'} ({cfg.total_epochs} epochs)", quiet=quiet, is_main=main, device=dev))
    step, secs = loop.step, loop.elapsed
    last = {k: v for k, v in loop.last_record.items() if k.startswith("loss_")}
    epochs_done = trainer.epoch - 1
    if step < trainer.total_steps:
        where = "end of epoch" if trainer.batch_in_epoch == 0 else "mid-epoch"
        say(f"stopped after step {step} ({where} {trainer.epoch if trainer.batch_in_epoch else epochs_done}); continue with --resume")
        barrier()  # rank 0 has written everything before any rank returns
        return {"run": str(run.path), "epochs": epochs_done, "steps": step, "seconds": secs, "last_losses": last, "finished": False}

    if main:
        kept: dict[str, Any] = {"last": {"step": step}}
        prints = {}
        for k in ("G_fa", "G_fundus"):
            run.save_weights(k, trainer.nets[k])
            prints[k] = fingerprint_module(trainer.nets[k])
            if k in trainer.ema:
                run.save_weights(f"{k}_ema", trainer.ema[k].module)
                prints[f"{k}_ema"] = fingerprint_module(trainer.ema[k].module)
            if trainer.best is not None:
                run.save_weights(f"{k}_best", trainer.best[k])
                prints[f"{k}_best"] = fingerprint_state_dict(trainer.best[k])
        if trainer.ema:
            kept["ema"] = {"decay": cfg.ema_decay, "updates": int(trainer.ema["G_fa"].n_averaged),
                           "warmup": "decay_n = min(decay, (1 + n) / (10 + n))"}
        if trainer.best is not None:
            kept["best"] = {k: trainer.best[k] for k in ("epoch", "step", "val_ssim_fa", "val_psnr_fa")}
        run.update_config(fingerprints=prints, weights=kept, steps=step, status="finished")
    say(f"trained {cfg.total_epochs} epochs ({step} steps) in {secs:.0f} s; weights in {run.path} (last"
        + (", ema" if trainer.ema else "")
        + (f", best = epoch {trainer.best['epoch']} with validation fundus->FA SSIM {trainer.best['val_ssim_fa']:.3f}"
           if trainer.best is not None else "") + ")")
    barrier()  # rank 0 has written everything before any rank returns
    return {"run": str(run.path), "epochs": cfg.total_epochs, "steps": step, "seconds": secs, "last_losses": last, "finished": True}
