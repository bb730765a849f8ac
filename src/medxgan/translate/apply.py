"""Apply one trained generator to image files of any size.

The generators are fully convolutional, so by default images are translated at their native
resolution (no resizing: a 720x576 photo gives a 720x576 angiogram); ``size`` resizes the input to
``size`` x ``size`` first (e.g. to match the training scale when the input's pixel size differs a lot).
Sizes that are not multiples of 4 are padded by reflection and cropped back. ``tile`` translates
large images in overlapping tiles blended with feathered (linear ramp) weights, bounding memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from medxgan.data.imageio import collect_image_files, probe_image, read_image
from medxgan.runtime.atomic import atomic_save_image
from medxgan.runtime.device import pick_device
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.outdir import check_out_not_input
from medxgan.runtime.progress import progress
from medxgan.translate.images import tensor_to_u8, to_domain_array, u8_to_tensor
from medxgan.translate.run import check_weights, load_generator



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
