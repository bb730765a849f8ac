"""The two domains' images for the CycleGAN: fundus photos (RGB) and angiograms (gray), as uint8 tensors
preprocessed once (read and resized through data.imageio), the paired splits, the conversions between
uint8, [-1, 1] and [0, 1], and the per-step random crop and flip (`Sampler`). Used by training (translate.
train), applying (translate.apply) and evaluating (translate.metrics) alike: one preprocessing for all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medxgan.data.imageio import convert_channels, list_images, read_image, resize_image
from medxgan.runtime.errors import MedxganError
from medxgan.translate.run import TranslateConfig


def load_domain(folder: Path, channels: int, size: int, what: str) -> tuple[torch.Tensor, list[Path]]:
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


def load_pairs(pairs: list[tuple[Path, Path]], cfg: TranslateConfig) -> tuple[torch.Tensor, torch.Tensor]:
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


def augment_rotations(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x] + [torch.rot90(x, k, dims=(2, 3)) for k in (1, 2, 3)], 0)


class Sampler:
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

