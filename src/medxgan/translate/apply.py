"""Apply one trained generator to image files of any size.

The generators are fully convolutional, so by default images are translated at their native
resolution (no resizing: a 720x576 photo gives a 720x576 angiogram); ``size`` resizes the input to
``size`` x ``size`` first (e.g. to match the training scale when the input's pixel size differs a lot).
Sizes that are not multiples of 4 are padded by reflection and cropped back. ``tile`` translates
large images in overlapping tiles blended with feathered (linear ramp) weights, bounding memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from medxgan.data.imageio import collect_image_files, probe_image, read_image
from medxgan.runtime.atomic import atomic_save_image
from medxgan.runtime.device import pick_device
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.outdir import check_out_not_input
from medxgan.runtime.progress import progress
from medxgan.runtime.records import check_record
from medxgan.runtime.runs import RunDir
from medxgan.translate.networks import ResnetGenerator
from medxgan.translate.records import TRANSLATE_RUN_FIELDS
from medxgan.translate.train import RUN_KIND, build_generators, tensor_to_u8, to_domain_array, u8_to_tensor

DIRECTIONS = {"fundus2angio": "G_fa", "angio2fundus": "G_fundus"}


WEIGHTS = ("last", "ema", "best")
_SUFFIX = {"last": "", "ema": "_ema", "best": "_best"}


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
        file = f"{name}{_SUFFIX[weights]}"
        if rd.has_weights(file):
            continue
        if weights == "last" or not rd.has_weights(name):
            raise MedxganError(f"{rd.path}: no {file}.safetensors (training not finished? resume it with --resume)")
        why = ("the run had no validation split DATA/valA + DATA/valB" if weights == "best"
               else "the run was trained without an EMA (--ema-decay 0, or before EMA weights were kept)")
        raise MedxganError(f"{rd.path}: no {file}.safetensors ({why}); use --weights "
                           + " or ".join(w for w in WEIGHTS if w != weights and rd.has_weights(f"{name}{_SUFFIX[w]}")),
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
    file = f"{name}{_SUFFIX[weights]}"
    g_fa, g_fundus = build_generators(cfg["train"])
    g = g_fa if name == "G_fa" else g_fundus
    try:
        g.load_state_dict(rd.load_weights(file))
    except RuntimeError as exc:
        raise MedxganError(f"{rd.path}/{file}.safetensors: does not match config.json ({str(exc).splitlines()[0]})") from None
    return g.to(device).eval(), cfg


def _pad4(x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % 4, (-w) % 4
    if ph or pw:
        mode = "reflect" if (ph < h and pw < w) else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, h, w


@torch.no_grad()
def translate(g: torch.nn.Module, x: torch.Tensor, tile: int | None = None, overlap: int = 32) -> torch.Tensor:
    """N x C_in x H x W in [-1, 1] -> N x C_out x H x W, any H, W (reflection-padded to a multiple of 4).

    With `tile`, the image is processed in tile x tile windows (a multiple of 4) that overlap by
    `overlap` pixels, blended with weights that ramp linearly to the tile borders.
    """
    if tile is None or (x.shape[-2] <= tile and x.shape[-1] <= tile):
        xp, h, w = _pad4(x)
        return g(xp)[..., :h, :w]
    tile = max(16, tile - tile % 4)
    overlap = min(overlap, tile // 2)
    H, W = x.shape[-2:]
    stride = tile - overlap

    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        s = list(range(0, n - tile, stride)) + [n - tile]
        return sorted(set(s))

    out = None
    weight = torch.zeros(1, 1, H, W, device=x.device)
    for top in starts(H):
        for left in starts(W):
            patch = x[..., top : top + tile, left : left + tile]
            y = translate(g, patch)
            ph, pw = y.shape[-2:]
            ry = torch.minimum(torch.arange(ph, device=x.device) + 1, torch.arange(ph, 0, -1, device=x.device)).float()
            rx = torch.minimum(torch.arange(pw, device=x.device) + 1, torch.arange(pw, 0, -1, device=x.device)).float()
            wgt = (ry.clamp(max=overlap + 1)[:, None] * rx.clamp(max=overlap + 1)[None, :])[None, None]
            if out is None:
                out = torch.zeros(x.shape[0], y.shape[1], H, W, device=x.device)
            out[..., top : top + ph, left : left + pw] += y * wgt
            weight[..., top : top + ph, left : left + pw] += wgt
    return out / weight


# the smallest side the generator takes: padded to a multiple of 4 and halved twice, the residual blocks'
# reflection padding needs at least 2 pixels (measured: 4 px fails, 5 px -- padded to 8 -- works)
MIN_SIDE = 5


def _check_inputs(files: list[Path], in_ch: int, size: int | None) -> None:
    """Decode every input once (a truncated file is found here, not after earlier outputs were written),
    and refuse colour-less fundus photos and images below :data:`MIN_SIDE`."""
    for f in files:
        info = probe_image(f)
        if in_ch == 3 and info.channels != 3:
            raise MedxganError(f"expects 3-channel colour fundus, got 1 channel: {f}")
        if size is None and min(info.height, info.width) < MIN_SIDE:
            raise MedxganError(f"{f}: {info.width}x{info.height} pixels is too small to translate (at least {MIN_SIDE}x{MIN_SIDE}; "
                               "or give --size to resize it)")
        read_image(f)  # full decode: some damage only shows here


def _out_names(files: list[Path], inputs: Iterable[str | Path]) -> list[str]:
    """Output file names: a file's stem; for files found in a folder, its path relative to that folder."""
    roots = [Path(p) for p in inputs if Path(p).is_dir()]
    names = []
    for f in files:
        rel = None
        for r in roots:
            try:
                rel = f.relative_to(r)
                break
            except ValueError:
                continue
        rel = rel if rel is not None else Path(f.name)
        base = rel.name[: -len(rel.suffix)] if rel.suffix else rel.name  # by string: Path would fold "..png" into "."
        folder = "" if rel.parent == Path(".") else rel.parent.as_posix() + "/"
        names.append(f"{folder}{base}.png")
    return names


def apply_translation(
    inputs: Iterable[str | Path],
    run: str | Path,
    direction: str,
    out: str | Path,
    *,
    size: int | None = None,
    tile: int | None = None,
    device: str = "auto",
    quiet: bool = False,
    weights: str = "last",
) -> list[Path]:
    """Translate every image in `inputs` (files and/or folders) and write PNGs into `out`.

    fundus2angio writes 1-channel (grayscale) PNGs, angio2fundus RGB PNGs. ``weights``: last | ema | best
    (see :func:`load_generator`). Returns the written paths.
    """
    from PIL import Image


    inputs = list(inputs)
    check_out_not_input(out, inputs)  # outputs never overwrite inputs (translate apply DIR --out DIR)
    check_weights(run, weights)  # before reading any image
    files = collect_image_files(inputs)
    if size is not None and (size < 16):
        raise MedxganError(f"size {size}: must be at least 16", arg="size")
    if tile is not None and tile < 16:
        raise MedxganError(f"tile {tile}: must be at least 16", arg="tile")
    dev = pick_device(device)
    g, cfg = load_generator(run, direction, dev, weights)
    in_ch = cfg["train"]["channels_a"] if direction == "fundus2angio" else cfg["train"]["channels_b"]
    names = _out_names(files, inputs)
    seen: dict[str, Path] = {}
    for f, n in zip(files, names):
        if n in seen:
            raise MedxganError(f"{f}: would overwrite the output of {seen[n]} ({n}); translate them into separate --out folders")
        seen[n] = f
    _check_inputs(files, in_ch, size)  # every input decoded and sized before the first output is written
    out = Path(out)
    written = []
    for f, n in progress(list(zip(files, names)), desc=f"translate {direction}", disable=quiet or None):
        a = to_domain_array(read_image(f), in_ch, f, size)
        x = u8_to_tensor(torch.from_numpy(a).permute(2, 0, 1)[None]).to(dev)
        y = tensor_to_u8(translate(g, x, tile=tile))[0].permute(1, 2, 0).cpu().numpy()
        img = Image.fromarray(np.ascontiguousarray(y[:, :, 0]) if y.shape[2] == 1 else y)  # L or RGB
        written.append(atomic_save_image(out / n, img))
    return written
