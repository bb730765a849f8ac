"""`medxgan synth lesions SRC... --out DIR`: a ground-truth data set from the user's own healthy scans.

Sources: NIfTI volumes (each a *subject*; its slices along ``axis`` that hold enough foreground), folders of 2-D
images (each folder a subject, its images in name order its slices) or single 2-D images (a subject of one slice).
Where lesions may go: ``regions`` (one mask / label volume or image folder per source, or one for all sources of
one shape; voxels > 0, or one of ``region_labels``), default the source's foreground.

What is written (the layout of the phantoms, so every command reads it and `evaluate` scores twins):
``DIR/{train,val,test}/{negative,positive}/lesion_NNNNN.png``, ``DIR/masks/...`` (exactly where the image
changed), ``DIR/twins/<split>/positive/...`` (the same augmented scan without its lesions), ``DIR/dataset.json``,
``DIR/sources.csv`` (which subject and slice every image comes from, its augmentation and lesion models).

No anatomy leaks between splits: with three or more subjects the split goes by subject, else by *slab* (runs of
``slab`` consecutive slices, ``gap`` slices dropped where two slabs of different splits meet). Every source slice
is a negative or a positive, never both; neighbouring slices of a slab alternate, so "which slice" does not
predict the label. Augmentation (flip, rotation, scale, gamma, noise) is drawn per image and applied identically
to a positive and its twin; the noise is added after the lesion, so outside the mask the two files are equal.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medxgan.data.lesions import LesionConfig, insert_lesions
from medxgan.runtime.errors import MedxganError

SPLITS = ("train", "val", "test")
FRACTIONS = (0.70, 0.15, 0.15)


@dataclass(frozen=True)
class AugmentConfig:
    """Per-image augmentation, identical for a positive and its twin: horizontal flip with ``p_flip``, rotation
    uniform in +-``rotate_deg``, scale in 1 +- ``scale``, gamma log-uniform in ``gamma``, Gaussian noise of a
    standard deviation uniform in ``noise``."""

    p_flip: float = 0.5
    rotate_deg: float = 10.0
    scale: float = 0.08
    gamma: tuple[float, float] = (0.8, 1.25)
    noise: tuple[float, float] = (0.005, 0.02)


@dataclass(frozen=True)
class LesionDatasetConfig:
    """Everything `synth lesions` takes besides the sources (stored in dataset.json)."""

    n: int = 2000
    size: int = 64
    seed: int = 0
    axis: str = "z"
    frame: int | None = None  # 4-D volumes: which frame
    min_foreground: float = 0.1
    min_region: float = 0.03  # a slice is a positive only when its region covers this fraction of the image
    slab: int = 10
    gap: int = 2
    # healthy intensities fill [0, headroom]: a scan windowed to its own percentiles puts the brightest tissue (white
    # matter on T1) at the top of [0, 1], where a hyperintense lesion would saturate and vanish
    headroom: float = 0.75
    split: str | None = None  # every image in this split (an external test set), else train/val/test
    lesions: LesionConfig = field(default_factory=LesionConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class SourceSlice:
    subject: str
    index: int
    canvas: np.ndarray  # float32 2S x 2S in [0, 1]: the slice padded to a square and resized (antialiased)
    region: np.ndarray  # bool 2S x 2S
    split: str = ""
    label: int = 0


# ----------------------------------------------------------------------------------------------
# sources


def _to_canvas(img: np.ndarray, region: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad to a centred square (zeros), then resize to ``side``: the image antialiased, the region nearest."""
    from medxgan.data.imageio import resize_image, resize_mask

    h, w = img.shape
    s = max(h, w)
    pi, pr = np.zeros((s, s), np.float32), np.zeros((s, s), bool)
    r0, c0 = (s - h) // 2, (s - w) // 2
    pi[r0 : r0 + h, c0 : c0 + w], pr[r0 : r0 + h, c0 : c0 + w] = img, region
    return resize_image(pi[:, :, None], side)[:, :, 0], resize_mask(pr, side)


def _region_planes(region: str | None, labels: tuple[float, ...] | None, refs: list[Path]) -> list[np.ndarray | None]:
    if region is None:
        return [None] * len(refs)
    from medxgan.data.nifti import is_nifti_name, read_mask_slice, split_ref

    if not is_nifti_name(region):
        raise MedxganError(f"region {region}: a region for NIfTI sources must be a NIfTI mask or label volume", arg="region")
    out = []
    for r in refs:
        _, _, letter, idx = split_ref(r)
        out.append(read_mask_slice(f"{region}#{letter}={idx}", labels))
    return out


def _volume_source(path: Path, cfg: LesionDatasetConfig, region: str | None, labels) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """(index, image, region, foreground) of every kept slice of a volume."""
    from medxgan.data.nifti import (
        AXES,
        NiftiOptions,
        _plane,
        _spacing_rc,
        expand_volume,
        load_volume,
        read_slice,
        split_ref,
        square_pixels,
    )

    opts = NiftiOptions(axis=cfg.axis, frame=cfg.frame, min_foreground=cfg.min_foreground)
    refs = expand_volume(path, opts)
    vol = load_volume(path, opts)
    regions = _region_planes(region, labels, refs)
    out = []
    for ref, reg in zip(refs, regions):
        idx = split_ref(ref)[3]
        img = read_slice(ref)[:, :, 0]
        ax = AXES[opts.axis]
        fg = square_pixels(_plane(vol.foreground, ax, idx), *_spacing_rc(vol.spacing, ax), order=0).astype(bool)
        reg = fg if reg is None else reg
        if reg.shape != img.shape:
            raise MedxganError(f"region {region}: slice {idx} is {reg.shape[0]}x{reg.shape[1]}, the scan {path} "
                               f"{img.shape[0]}x{img.shape[1]}: the region must be in the scan's space", arg="region")
        out.append((idx, img, reg, fg))
    return out


def _image_source(files: list[Path]) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """2-D images of one subject; the region is the foreground (Otsu over the subject's images, holes filled)."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    from medxgan.data.imageio import convert_channels, read_image

    imgs = [convert_channels(read_image(f), 1)[:, :, 0] for f in files]
    values = np.concatenate([i.ravel() for i in imgs])
    t = threshold_otsu(values) if values.max() > values.min() else np.inf
    fgs = [ndimage.binary_fill_holes(img > t) for img in imgs]
    return [(k, img, fg, fg) for k, (img, fg) in enumerate(zip(imgs, fgs))]


def _crop_to_foreground(slices: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]],
                        margin: float = 0.04) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Crop a subject's slices (all of one shape) to the bounding box of the union of their foregrounds plus a margin,
    so the anatomy, not the empty field of view, fills the image; returns (index, image, region)."""
    if not slices or len({img.shape for _, img, _, _ in slices}) != 1:
        return [(i, img, reg) for i, img, reg, _ in slices]
    union = np.logical_or.reduce([fg for _, _, _, fg in slices])
    if not union.any():
        return [(i, img, reg) for i, img, reg, _ in slices]
    rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    h, w = union.shape
    pad = int(round(margin * max(h, w)))
    r0, r1 = max(0, rows[0] - pad), min(h, rows[-1] + 1 + pad)
    c0, c1 = max(0, cols[0] - pad), min(w, cols[-1] + 1 + pad)
    return [(i, img[r0:r1, c0:c1], reg[r0:r1, c0:c1]) for i, img, reg, _ in slices]


def load_sources(sources: Sequence[str | os.PathLike], cfg: LesionDatasetConfig, regions: Sequence[str] | None = None,
                 region_labels: Sequence[float] | None = None) -> list[SourceSlice]:
    """Every usable slice of every source as a :class:`SourceSlice` on a canvas of twice the output size."""
    from medxgan.data.imageio import is_image_file, list_images
    from medxgan.data.nifti import is_nifti_name

    srcs = [Path(s) for s in sources]
    if not srcs:
        raise MedxganError("sources: no healthy scans given")
    regs = list(regions or [])
    if regs and len(regs) not in (1, len(srcs)):
        raise MedxganError(f"region: give one region for all sources or one per source ({len(srcs)}), got {len(regs)}", arg="region")
    for r in regs:
        if not Path(r).is_file():
            raise MedxganError(f"region {r}: file not found", arg="region")
    labels = tuple(float(v) for v in region_labels) if region_labels else None
    side = 2 * cfg.size
    out: list[SourceSlice] = []
    names: set[str] = set()
    for k, src in enumerate(srcs):
        if not src.exists():
            raise MedxganError(f"{src}: no such file or folder")
        reg = regs[0] if len(regs) == 1 else (regs[k] if regs else None)
        if src.is_dir():
            files = [f for f in list_images(src, expand=False) if not is_nifti_name(f)]
            if not files:
                raise MedxganError(f"{src}: folder contains no 2-D images")
            if reg is not None:
                raise MedxganError(f"region {reg}: regions are for NIfTI sources (a folder's region is its foreground)", arg="region")
            slices = _image_source(files)
        elif is_nifti_name(src):
            slices = _volume_source(src, cfg, reg, labels)
        elif is_image_file(src):
            slices = _image_source([src])
        else:
            raise MedxganError(f"{src}: not a NIfTI volume, a 2-D image or a folder of images")
        slices = _crop_to_foreground(slices)
        name = src.name.split(".")[0] or f"src{k}"
        while name in names:
            name += f"_{k}"
        names.add(name)
        for idx, img, region in slices:
            canvas, rc = _to_canvas(img, region, side)
            out.append(SourceSlice(name, int(idx), canvas, rc))
    return out


# ----------------------------------------------------------------------------------------------
# splits and labels


def assign_splits(slices: list[SourceSlice], cfg: LesionDatasetConfig, rng: np.random.Generator) -> str:
    """Set ``split`` (and drop the gap slices) in place; returns "subject", "slab" or "fixed"."""
    subjects = sorted({s.subject for s in slices})
    if cfg.split is not None:
        for s in slices:
            s.split = cfg.split
        return "fixed"
    if len(subjects) >= 3:
        order = [subjects[i] for i in rng.permutation(len(subjects))]
        n_val = max(1, int(round(FRACTIONS[1] * len(order))))
        n_test = max(1, int(round(FRACTIONS[2] * len(order))))
        split_of = {sub: ("val" if j < n_val else "test" if j < n_val + n_test else "train") for j, sub in enumerate(order)}
        for s in slices:
            s.split = split_of[s.subject]
        return "subject"
    for sub in subjects:
        members = sorted((s for s in slices if s.subject == sub), key=lambda s: s.index)
        slabs = [members[i : i + cfg.slab] for i in range(0, len(members), cfg.slab)]
        if len(slabs) < 3:
            raise MedxganError(f"{sub}: {len(members)} usable slices make {len(slabs)} slab(s) of {cfg.slab}; a split by slab needs "
                               "3 (train/val/test): give more slices, a smaller slab, or three or more subjects", arg="slab")
        order = rng.permutation(len(slabs))
        n_val = max(1, int(round(FRACTIONS[1] * len(slabs))))
        n_test = max(1, int(round(FRACTIONS[2] * len(slabs))))
        names = ["train"] * len(slabs)
        for j, i in enumerate(order):
            names[i] = "val" if j < n_val else "test" if j < n_val + n_test else "train"
        for i, slab in enumerate(slabs):
            for s in slab:
                s.split = names[i]
            if i + 1 < len(slabs) and names[i + 1] != names[i]:  # the guard band: neighbours of another split dropped
                for s in slab[max(0, len(slab) - cfg.gap):]:
                    s.split = ""
    slices[:] = [s for s in slices if s.split]
    return "slab"


def assign_labels(slices: list[SourceSlice], cfg: LesionDatasetConfig, rng: np.random.Generator) -> None:
    """Alternate negative / positive along each subject's slices (seeded start per subject), so neighbours with
    nearly the same anatomy carry opposite labels; a slice whose region is too small is a negative."""
    min_px = cfg.min_region * (2 * cfg.size) ** 2
    for sub in sorted({s.subject for s in slices}):
        start = int(rng.integers(2))
        members = sorted((s for s in slices if s.subject == sub), key=lambda s: s.index)
        for j, s in enumerate(members):
            s.label = int((j + start) % 2 == 1 and s.region.sum() >= min_px)


# ----------------------------------------------------------------------------------------------
# one image


def augment(rng: np.random.Generator, s: SourceSlice, cfg: AugmentConfig, size: int, headroom: float = 1.0) -> tuple[np.ndarray, np.ndarray, dict]:
    """Flip, rotate and scale the canvas (bilinear; region nearest), gamma, scale into [0, ``headroom``], then 2x2
    mean down to ``size``."""
    from scipy import ndimage

    flip = bool(rng.uniform() < cfg.p_flip)
    angle = float(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))
    scale = float(rng.uniform(1.0 - cfg.scale, 1.0 + cfg.scale))
    gamma = float(np.exp(rng.uniform(np.log(cfg.gamma[0]), np.log(cfg.gamma[1]))))
    side = s.canvas.shape[0]
    t = np.deg2rad(angle)
    m = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) / scale  # output -> input coordinates
    c = (side - 1) / 2.0
    offset = c - m @ np.array([c, c])
    img = ndimage.affine_transform(s.canvas, m, offset=offset, order=1, mode="constant", cval=0.0)
    reg = ndimage.affine_transform(s.region.astype(np.uint8), m, offset=offset, order=0, mode="constant", cval=0) > 0
    if flip:
        img, reg = img[:, ::-1], reg[:, ::-1]
    img = np.clip(img, 0.0, 1.0) ** gamma * headroom
    img = img.reshape(size, 2, size, 2).mean(axis=(1, 3)).astype(np.float32)
    reg = reg.reshape(size, 2, size, 2).all(axis=(1, 3))
    return img, reg, {"flip": flip, "angle": round(angle, 3), "scale": round(scale, 4), "gamma": round(gamma, 4)}


def render(rng: np.random.Generator, s: SourceSlice, cfg: LesionDatasetConfig) -> dict[str, Any]:
    """One image of ``s``: {"image", "twin" (positives), "mask", "models", "aug"} as float32 / bool ``size x size``."""
    base, region, aug = augment(rng, s, cfg.augment, cfg.size, cfg.headroom)
    sigma = float(rng.uniform(*cfg.augment.noise))
    noise = rng.standard_normal(base.shape).astype(np.float32) * sigma
    aug["noise"] = round(sigma, 4)
    lesioned, mask, models = base, np.zeros(base.shape, bool), []
    if s.label == 1:
        for _ in range(20):  # a lesion that changed nothing (all on black background) is drawn again
            lesioned, mask, models = insert_lesions(rng, base, region, cfg.lesions)
            if mask.any():
                break
    twin = np.clip(base + noise, 0.0, 1.0)
    image = np.clip(lesioned + noise, 0.0, 1.0)  # the same noise on both: equal outside the mask
    return {"image": image, "twin": twin if s.label == 1 else None, "mask": mask, "models": models, "aug": aug}


# ----------------------------------------------------------------------------------------------
# the writer


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _check(cfg: LesionDatasetConfig) -> None:
    from medxgan.data.layout import canonical_split
    from medxgan.data.nifti import NiftiOptions

    for name, v, lo in (("n", cfg.n, 2), ("size", cfg.size, 16), ("slab", cfg.slab, 1), ("gap", cfg.gap, 0), ("seed", cfg.seed, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise MedxganError(f"{name} {v!r}: must be an integer >= {lo}", arg=name)
    if cfg.size > 1024:
        raise MedxganError(f"size {cfg.size}: at most 1024 px", arg="size")
    if not 0.2 <= cfg.headroom <= 1.0:
        raise MedxganError(f"headroom {cfg.headroom!r}: must be in [0.2, 1]", arg="headroom")
    if not 0.0 <= cfg.min_region < 1.0:
        raise MedxganError(f"min_region {cfg.min_region!r}: must be a fraction in [0, 1)", arg="min_region")
    canonical_split(cfg.split)
    NiftiOptions(axis=cfg.axis, frame=cfg.frame, min_foreground=cfg.min_foreground).checked("synth lesions")
    cfg.lesions.checked()


def synthesize_lesions(sources: Sequence[str | os.PathLike], out: str | os.PathLike, config: LesionDatasetConfig | None = None, *,
                       regions: Sequence[str] | None = None, region_labels: Sequence[float] | None = None, preview: bool = False,
                       overwrite: bool = False, show_progress: bool = True) -> dict[str, Any]:
    """Write a lesion data set from healthy ``sources`` to ``out`` (see the module docstring); returns a summary
    {"kind", "out", "n", "size", "seed", "counts", "split_by", "n_sources", "preview", "seconds"}."""
    from medxgan.data.layout import canonical_split
    from medxgan.data.phantoms.common import (
        finish_out,
        prepare_out,
        preview_grid,
        to_uint8,
    )
    from medxgan.runtime.progress import progress

    cfg = config or LesionDatasetConfig()
    _check(cfg)
    if cfg.split is not None:
        import dataclasses

        cfg = dataclasses.replace(cfg, split=canonical_split(cfg.split))
    t0 = time.perf_counter()
    slices = load_sources(sources, cfg, regions, region_labels)
    rng = np.random.default_rng([cfg.seed, 0xC0FFEE])
    split_by = assign_splits(slices, cfg, rng)
    assign_labels(slices, cfg, rng)
    pools = {sp: [s for s in slices if s.split == sp] for sp in SPLITS}
    pools = {sp: p for sp, p in pools.items() if p}
    for sp, p in pools.items():
        if len({s.label for s in p}) < 2:
            raise MedxganError(f"sources: split {sp!r} has only {'positive' if p[0].label else 'negative'} slices "
                               "(too few usable slices or regions too small)")
    total = sum(len(p) for p in pools.values())
    quota = {sp: max(2, int(round(cfg.n * len(p) / total))) for sp, p in pools.items()}
    plan = [(sp, pools[sp][j % len(pools[sp])]) for sp in pools for j in range(quota[sp])]
    out_p, tmp = prepare_out(out, overwrite)
    try:
        width = max(5, len(str(len(plan) - 1)))
        counts = {sp: {"negative": 0, "positive": 0} for sp in pools}
        rows = [["path", "split", "class", "subject", "slice", "models", "flip", "angle", "scale", "gamma", "noise"]]
        previews: list[tuple] = []
        it: Any = progress(range(len(plan)), total=len(plan), desc="synth lesions") if show_progress else range(len(plan))
        for i in it:
            sp, s = plan[i]
            r = render(np.random.default_rng([cfg.seed, i]), s, cfg)
            cls = "positive" if s.label else "negative"
            rel = f"{sp}/{cls}/lesion_{i:0{width}d}.png"
            for top, arr in (("", to_uint8(r["image"])), ("masks", r["mask"].astype(np.uint8) * 255),
                             ("twins", None if r["twin"] is None else to_uint8(r["twin"]))):
                if arr is not None:
                    (tmp / top / rel).parent.mkdir(parents=True, exist_ok=True)
                    (tmp / top / rel).write_bytes(_png(arr))
            counts[sp][cls] += 1
            a = r["aug"]
            rows.append([rel, sp, cls, s.subject, s.index, "+".join(r["models"]), int(a["flip"]), a["angle"], a["scale"], a["gamma"], a["noise"]])
            if preview and len(previews) < 32 and (len(previews) % 2 == s.label):
                previews.append((r["image"], r["mask"], np.zeros_like(r["mask"]), s.label))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        (tmp / "sources.csv").write_text(buf.getvalue())
        preview_path = None
        if preview and previews:
            preview_grid(*[[p[k] for p in previews] for k in range(4)]).save(tmp / "preview.png", format="PNG")
            preview_path = str(out_p / "preview.png")
        meta = {
            "kind": "lesions", "positive": ["positive"], "negative": ["negative"], "n": len(plan), "size": cfg.size,
            "seed": cfg.seed, "split_by": split_by, "splits": {sp: sum(c.values()) for sp, c in counts.items()}, "counts": counts,
            "sources": [str(Path(s).resolve()) for s in sources], "regions": [str(Path(r).resolve()) for r in (regions or [])],
            "region_labels": list(region_labels) if region_labels else None,
            "source_slices": {sp: len(p) for sp, p in pools.items()}, "masks": "masks", "twins": "twins", "marker_masks": None,
            "boxes": None, "options": json.loads(json.dumps(asdict(cfg))), "generator": "medxgan synth lesions",
        }
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
        finish_out(tmp, out_p)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"kind": "lesions", "out": str(out_p), "n": len(plan), "size": cfg.size, "seed": cfg.seed, "counts": counts,
            "split_by": split_by, "n_sources": len(slices), "preview": preview_path, "seconds": time.perf_counter() - t0}
