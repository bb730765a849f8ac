"""Shared pieces of the procedural phantoms: coordinate grids, smooth fields, shapes, the shortcut marker,
the on-disk writer (split/class layout of docs/CONTRACTS.md) and the preview grid.

Coordinates: every phantom is drawn on a normalised grid ``u`` (columns, left to right) and ``v`` (rows,
top to bottom), both in [-1, 1] at pixel centres, so the anatomy is resolution independent; only the
noise and the edge softness depend on the pixel size.

Everything is numpy only and vectorised over the pixels of one image; one image costs well under a
millisecond of rendering at 64 px.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from medxgan.runtime.atomic import atomic_replace_dir
from medxgan.runtime.checks import MAX_SEED, check_image_memory
from medxgan.runtime.outdir import is_empty, mark, require_ours, temp_name
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.progress import progress

# --------------------------------------------------------------------------------------------------
# grids and smooth functions


@lru_cache(maxsize=16)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    v, u = np.meshgrid(c, c, indexing="ij")
    u.setflags(write=False)
    v.setflags(write=False)
    return u, v


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, v): normalised column / row coordinates in [-1, 1] at pixel centres, each size x size (read-only)."""
    return _grid(int(size))


def pixel(size: int) -> float:
    """Width of one pixel in normalised units."""
    return 2.0 / size


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """0 at ``edge0``, 1 at ``edge1`` (either order), C1 in between and exactly constant outside."""
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def soft_inside(rho: np.ndarray, size: int, edge: float = 1.0, soft_px: float = 0.7, scale: float = 1.0) -> np.ndarray:
    """Soft indicator of ``rho < edge`` with an edge about ``soft_px`` pixels wide.

    ``scale`` converts a unit of ``rho`` to normalised image units (e.g. the semi-axis of an ellipse) so
    the softness is measured in pixels.
    """
    width = max(soft_px * pixel(size) / max(scale, 1e-6), 1e-6)
    return sigmoid((edge - rho) / width)


def rotate(u: np.ndarray, v: np.ndarray, cx: float, cy: float, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates relative to (cx, cy) in a frame rotated by ``theta`` radians."""
    du, dv = u - cx, v - cy
    c, s = math.cos(theta), math.sin(theta)
    return c * du + s * dv, -s * du + c * dv


def ellipse_rho(u, v, cx: float, cy: float, a: float, b: float, theta: float = 0.0) -> np.ndarray:
    """Normalised elliptic radius: < 1 inside the ellipse with semi-axes a (along u) and b (along v)."""
    x, y = rotate(u, v, cx, cy, theta)
    return np.sqrt((x / a) ** 2 + (y / b) ** 2)


def smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """A smooth random field with zero mean and unit standard deviation.

    ``scale`` is the correlation length in normalised units (0.3 = blobs about a sixth of the image).
    White noise low-pass filtered with a Gaussian in the Fourier domain (periodic, which is invisible at
    these correlation lengths).
    """
    white = rng.standard_normal((size, size)).astype(np.float32)
    f = np.fft.fftfreq(size).astype(np.float32)
    sigma_px = scale / pixel(size)
    g = np.exp(-2.0 * (math.pi * sigma_px) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
    field_ = np.fft.ifft2(np.fft.fft2(white) * g).real.astype(np.float32)
    std = float(field_.std())
    return (field_ - float(field_.mean())) / (std if std > 1e-12 else 1.0)


def gaussian_blur(img: np.ndarray, sigma_px: float) -> np.ndarray:
    """Separable Gaussian blur with reflected borders (``sigma_px`` in pixels); identity for sigma <= 0."""
    if sigma_px <= 0:
        return img
    r = max(1, int(math.ceil(3 * sigma_px)))
    x = np.arange(-r, r + 1, dtype=np.float32)
    k = np.exp(-0.5 * (x / sigma_px) ** 2)
    k /= k.sum()
    h, w = img.shape
    p = np.pad(img, r, mode="symmetric")
    rows = sum(k[i] * p[i : i + h, :] for i in range(2 * r + 1))
    out = sum(k[i] * rows[:, i : i + w] for i in range(2 * r + 1))
    return out.astype(np.float32)


def irregular_blob_q(
    u: np.ndarray,
    v: np.ndarray,
    cx: float,
    cy: float,
    radius: float,
    rng: np.random.Generator,
    harmonics: Sequence[int] = (2, 3, 4, 5),
    amplitude: float = 0.18,
    warp: np.ndarray | None = None,
    warp_amount: float = 0.0,
) -> np.ndarray:
    """Normalised radius of an irregular blob: q < 1 inside.

    The boundary radius is ``radius * (1 + sum_k a_k cos(k phi + p_k))`` with random a_k <= ``amplitude``
    / sqrt(k) and random phases (the usual random radial-harmonic blob); ``warp`` (a smooth field) adds a
    small non-radial wobble. Always draws the same number of random numbers.
    """
    ks = np.asarray(harmonics, dtype=np.float32)
    amps = rng.uniform(0.0, amplitude, size=len(ks)).astype(np.float32) / np.sqrt(ks / ks[0])
    phases = rng.uniform(0.0, 2 * math.pi, size=len(ks)).astype(np.float32)
    du, dv = u - cx, v - cy
    phi = np.arctan2(dv, du)
    r_boundary = np.ones_like(u)
    for k, a, p in zip(ks, amps, phases):
        r_boundary = r_boundary + a * np.cos(k * phi + p)
    r_boundary = radius * np.maximum(r_boundary, 0.35)
    q = np.sqrt(du * du + dv * dv) / r_boundary
    if warp is not None and warp_amount:
        q = q + warp_amount * warp
    return q.astype(np.float32)


def rician(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of a complex signal with Gaussian noise in both channels (MRI-like, pixelwise)."""
    n1 = rng.standard_normal(img.shape).astype(np.float32)
    n2 = rng.standard_normal(img.shape).astype(np.float32)
    return np.sqrt((img + sigma * n1) ** 2 + (sigma * n2) ** 2)


# --------------------------------------------------------------------------------------------------
# the shortcut marker

NEGATIVE_MARKER_RATE = 0.05
"""Markers appear on negatives with probability ``NEGATIVE_MARKER_RATE * shortcut`` (on positives: ``shortcut``)."""


def marker_mask(size: int) -> np.ndarray:
    """The shortcut tag: a bright 'L' in the top-left corner (arms ~4 px long, 2 px thick at 64 px)."""
    arm = max(3, int(round(size * 4 / 64)))
    thick = max(1, int(round(size * 1.5 / 64)))
    margin = max(1, int(round(size * 2 / 64)))
    m = np.zeros((size, size), dtype=bool)
    m[margin : margin + arm, margin : margin + thick] = True  # vertical arm
    m[margin + arm - thick : margin + arm, margin : margin + arm] = True  # horizontal foot
    return m


def draw_marker(rng: np.random.Generator, size: int, positive: bool, shortcut: float) -> np.ndarray:
    """Decide (one uniform draw, always made) whether this image carries the tag; returns its mask."""
    p = float(shortcut) if positive else NEGATIVE_MARKER_RATE * float(shortcut)
    present = rng.uniform() < p
    return marker_mask(size) if present else np.zeros((size, size), dtype=bool)


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def mask_boxes(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box (x, y, w, h) in pixels of the True pixels, or None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


# --------------------------------------------------------------------------------------------------
# the registry entry of one phantom kind


@dataclass(frozen=True)
class PhantomKind:
    """One entry of ``PHANTOM_KINDS``.

    render(rng, size, positive, shortcut, **extra) -> (image float32 HxW in [0, 1], lesion mask bool,
    marker mask bool[, boxes list[(x, y, w, h)]]). A kind whose data does not fit that shape (paired
    images, ...) sets ``synthesize`` to its own writer with the signature of
    :func:`medxgan.data.phantoms.synthesize` (minus ``kind``). ``add_arguments(parser)`` adds the kind's own
    CLI flags to ``medxgan synth KIND``; their values reach ``render``/``synthesize`` as ``**extra``
    (keyed by argparse ``dest``). ``defaults`` lists those extra options with their defaults so the
    library can validate them.
    """

    name: str
    help: str
    render: Callable[..., tuple] | None = None
    prefix: str = "img"
    boxes: bool = False
    twins: bool = False  # render accepts lesion=False: every positive gets its lesion-free twin
    add_arguments: Callable[[Any], None] | None = None
    synthesize: Callable[..., dict] | None = None
    defaults: dict = field(default_factory=dict)
    epilog: str = ""


# --------------------------------------------------------------------------------------------------
# splits and the writer

SPLIT_FRACTIONS = (("train", 0.70), ("val", 0.15), ("test", 0.15))
CLASS_NAMES = ("negative", "positive")


def assign(n: int) -> list[tuple[int, str]]:
    """(label, split) for every index: labels alternate 0, 1, 0, ... (balanced); within each class the
    first 70 % of its members go to train, the next 15 % to val, the rest to test."""
    out: list[tuple[int, str]] = [(0, "")] * n
    for label in (0, 1):
        members = list(range(label, n, 2))
        k = len(members)
        n_train = int(round(SPLIT_FRACTIONS[0][1] * k))
        n_val = int(round(SPLIT_FRACTIONS[1][1] * k))
        for j, idx in enumerate(members):
            split = "train" if j < n_train else "val" if j < n_train + n_val else "test"
            out[idx] = (label, split)
    return out


def _png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


MAX_PHANTOM_SIZE = 1024  # px: rendering time grows with size^2 (about 1.5 s per brain image at 1024 px, 10x that for fundus)


def check_common_args(kind: str, n: Any, size: Any, seed: Any, shortcut: Any, known: Sequence[str]) -> None:
    """The options every phantom kind takes, checked before anything is rendered or written; each message
    starts with the argument's name (the CLI writes it as the flag)."""
    if kind not in known:
        raise MedxganError(f"kind: unknown phantom kind {kind!r} (choose from {', '.join(known)})", arg="kind")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise MedxganError(f"n: need an integer of at least 2 images, got {n!r}", arg="n")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 32:
        raise MedxganError(f"size: need an integer of at least 32 pixels, got {size!r}", arg="size")
    if size > MAX_PHANTOM_SIZE:
        # not a memory question (that is checked below) but time: thousands of images of minutes each
        per_image = 1.5 * (int(size) / 1024) ** 2
        raise MedxganError(f"size {size}: procedural phantoms are at most {MAX_PHANTOM_SIZE} px (rendering grows with the square of "
                           f"the size: about {per_image:.0f} s per image at {size} px, {per_image * int(n) / 3600:.1f} h for {n} images; "
                           "the models here work at 64-256 px)", arg="size")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MedxganError(f"seed: need a non-negative integer, got {seed!r}", arg="seed")
    try:
        sc = float(shortcut)
    except (TypeError, ValueError):
        raise MedxganError(f"shortcut: need a probability in [0, 1], got {shortcut!r}", arg="shortcut") from None
    if not (0.0 <= sc <= 1.0):
        raise MedxganError(f"shortcut: need a probability in [0, 1], got {shortcut!r}", arg="shortcut")
    if seed > MAX_SEED:
        raise MedxganError(f"seed: need an integer of at most {MAX_SEED}, got {seed!r}", arg="seed")
    # rendering holds a few dozen size x size float arrays at once: refuse what cannot fit before allocating
    check_image_memory("size", int(size), arrays=48, what="to render one phantom")


def check_disk_space(out: str | os.PathLike, n: int, size: int) -> None:
    """Refuse a data set whose PNGs cannot fit on the disk of ``out`` (estimated before rendering: noisy
    8-bit phantoms compress to about one byte per pixel; masks are nearly free)."""
    need = int(n) * int(size) ** 2
    probe = Path(out).absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return  # unknown: the write itself will say
    if need > free:
        raise MedxganError(f"n {n} / size {size}: the images need about {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free in {probe}; "
                           "choose a smaller n or size", arg=("n", "size"))


def prepare_out(out: str | os.PathLike, overwrite: bool) -> tuple[Path, Path]:
    """Check ``out`` and create a fresh temporary directory next to it; returns (out, tmp)."""
    out = Path(out)
    check_synth_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / temp_name(f"synth-{out.name}-{os.getpid()}")  # the project's temp name (runtime.outdir)
    if tmp.exists():
        shutil.rmtree(tmp)
    mark(tmp, "synth")  # the data set is marked as medxgan's: a later --overwrite may replace it
    return out, tmp


def check_synth_out(out: Path, overwrite: bool) -> None:
    """``out`` must be new or empty; ``overwrite`` replaces only a data set medxgan made (marked)."""
    if out.exists():
        if not out.is_dir():
            raise MedxganError(f"out: {out} exists and is not a directory")
        if not is_empty(out):
            if not overwrite:
                raise MedxganError(f"out: {out} exists and is not empty (pass --overwrite to replace it)")
            require_ours(out, "out", "--overwrite", kind="synth")


def finish_out(tmp: Path, out: Path) -> None:
    atomic_replace_dir(tmp, out)


class _DatasetWriter:
    """Renders the phantoms of one dataset into the temporary directory ``tmp`` and keeps the tallies
    (images and markers per split and class, box rows) that dataset.json and boxes.csv report."""

    def __init__(self, spec: PhantomKind, tmp: Path, size: int, seed: int, shortcut: float, extra: dict) -> None:
        self.spec, self.tmp, self.size, self.seed, self.shortcut, self.extra = spec, tmp, size, seed, shortcut, extra
        self.with_markers = shortcut > 0  # markers/ only for shortcut data sets (evaluate looks for it)
        self.counts = {s: {c: 0 for c in CLASS_NAMES} for s, _ in SPLIT_FRACTIONS}
        self.marker_counts = {s: {c: 0 for c in CLASS_NAMES} for s, _ in SPLIT_FRACTIONS}
        self.box_rows: list[list[Any]] = []
        self.empty_png = _png_bytes(np.zeros((size, size), dtype=np.uint8))

    def make_dirs(self) -> None:
        for s, _ in SPLIT_FRACTIONS:
            for c in CLASS_NAMES:
                tops = ("", "masks") + (("markers",) if self.with_markers else ()) + (("twins",) if self.spec.twins and c == "positive" else ())
                for top in tops:
                    (self.tmp / top / s / c).mkdir(parents=True, exist_ok=True)

    def write(self, i: int, label: int, split: str, rel: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Render image ``i`` (and a positive's twin), write it at ``rel`` with its masks; (image, mask, marker)."""
        spec, tmp, size, shortcut, extra = self.spec, self.tmp, self.size, self.shortcut, self.extra
        cls = CLASS_NAMES[label]
        rng = np.random.default_rng([self.seed, i])
        res = spec.render(rng, size, bool(label), shortcut, **extra)
        img, mask, marker = res[0], res[1], res[2]
        _write(tmp / rel, _png_bytes(to_uint8(img)))
        if spec.twins and label == 1:
            # the same subject from the same seed with its lesion left unpainted: anatomy, intensity
            # variation, noise and marker come from random streams the lesion does not touch
            twin = spec.render(np.random.default_rng([self.seed, i]), size, True, shortcut, lesion=False, **extra)[0]
            _write(tmp / "twins" / rel, _png_bytes(to_uint8(twin)))
        _write(tmp / "masks" / rel, _png_bytes(mask.astype(np.uint8) * 255) if mask.any() else self.empty_png)
        if self.with_markers:
            _write(tmp / "markers" / rel, _png_bytes(marker.astype(np.uint8) * 255) if marker.any() else self.empty_png)
        self.counts[split][cls] += 1
        self.marker_counts[split][cls] += int(marker.any())
        if spec.boxes:
            boxes = res[3] if len(res) > 3 else []
            if boxes:
                for x, y, w, h in boxes:
                    self.box_rows.append([rel, cls, split, x, y, w, h])
            else:
                self.box_rows.append([rel, cls, split, "", "", "", ""])
        return img, mask, marker

    def write_boxes(self) -> None:
        buf = io.StringIO()
        wr = csv.writer(buf, lineterminator="\n")
        wr.writerow(["path", "label", "split", "x", "y", "w", "h"])
        wr.writerows(self.box_rows)
        _write(self.tmp / "boxes.csv", buf.getvalue().encode())

    def meta(self, n: int) -> dict[str, Any]:
        """dataset.json."""
        spec, extra = self.spec, self.extra
        return {
            "kind": spec.name,
            "positive": ["positive"],
            "negative": ["negative"],
            "n": int(n),
            "size": int(self.size),
            "seed": int(self.seed),
            "shortcut": float(self.shortcut),
            "negative_marker_rate": NEGATIVE_MARKER_RATE * float(self.shortcut),
            "splits": {s: sum(self.counts[s].values()) for s, _ in SPLIT_FRACTIONS},
            "counts": self.counts,
            "markers": self.marker_counts,
            "masks": "masks",
            "marker_masks": "markers" if self.with_markers else None,
            "twins": "twins" if spec.twins else None,
            "boxes": "boxes.csv" if spec.boxes else None,
            "options": {k: extra[k] for k in sorted(extra)},
            "generator": "medxgan synth",
        }


def write_dataset(
    spec: PhantomKind,
    out: str | os.PathLike,
    n: int,
    size: int,
    seed: int,
    shortcut: float,
    preview: bool,
    overwrite: bool,
    extra: dict,
    show_progress: bool = True,
) -> dict:
    """Render ``n`` phantoms with ``spec.render`` and write the dataset layout (see docs/CONTRACTS.md).

    Writes into a temporary sibling directory and renames it over ``out`` at the end, so an interrupted
    run leaves no half dataset. Image ``i`` is rendered from ``np.random.default_rng([seed, i])`` and so
    does not depend on ``n`` or on the order of rendering.
    """
    t0 = time.perf_counter()
    out, tmp = prepare_out(out, overwrite)
    try:
        labels = assign(n)
        width = max(5, len(str(n - 1)))
        writer = _DatasetWriter(spec, tmp, size, seed, shortcut, extra)
        writer.make_dirs()
        previews: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]] = []
        n_preview = min(n, 32) if preview else 0
        iterator: Any = range(n)
        if show_progress:
            iterator = progress(range(n), total=n, desc=f"synth {spec.name}")
        for i in iterator:
            label, split = labels[i]
            img, mask, marker = writer.write(i, label, split, f"{split}/{CLASS_NAMES[label]}/{spec.prefix}_{i:0{width}d}.png")
            if i < n_preview:
                previews.append((img, mask, marker, label))
        if spec.boxes:
            writer.write_boxes()
        preview_path = None
        if preview:
            preview_grid([p[0] for p in previews], [p[1] for p in previews], [p[2] for p in previews],
                         [p[3] for p in previews]).save(tmp / "preview.png", format="PNG")
            preview_path = str(out / "preview.png")
        _write(tmp / "dataset.json", (json.dumps(writer.meta(n), indent=2) + "\n").encode())
        finish_out(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - t0
    return {
        "kind": spec.name,
        "out": str(out),
        "n": int(n),
        "size": int(size),
        "seed": int(seed),
        "shortcut": float(shortcut),
        "counts": writer.counts,
        "markers": writer.marker_counts,
        "preview": preview_path,
        "seconds": seconds,
    }


# --------------------------------------------------------------------------------------------------
# preview grid


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` that touch a background pixel (4-neighbourhood)."""
    m = np.pad(mask, 1)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return mask & ~inner


def preview_grid(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    markers: Sequence[np.ndarray],
    labels: Sequence[int],
    cols: int = 8,
    cell: int = 128,
) -> "Any":
    """A PIL RGB grid of the phantoms, each upscaled (nearest) to about ``cell`` px: lesion masks
    outlined in red, shortcut markers in cyan, a green/grey dot in the bottom-left corner for
    positive/negative."""
    from PIL import Image

    k = len(images)
    if k == 0:
        return Image.new("RGB", (cell, cell))
    size = images[0].shape[0]
    f = max(1, cell // size)
    c = size * f
    rows = int(math.ceil(k / cols))
    ncols = min(cols, k)
    gap = 2
    canvas = np.full((rows * (c + gap) + gap, ncols * (c + gap) + gap, 3), 40, dtype=np.uint8)
    for j, (img, m, mk, lab) in enumerate(zip(images, masks, markers, labels)):
        g = to_uint8(img).repeat(f, 0).repeat(f, 1)
        rgb = np.stack([g, g, g], axis=-1)
        for msk, colour in ((m, (255, 40, 40)), (mk, (0, 230, 255))):
            if msk.any():
                ol = _outline(msk.repeat(f, 0).repeat(f, 1))
                rgb[ol] = colour
        d = max(3, c // 24)
        rgb[c - 2 * d : c - d, d : 2 * d] = (60, 220, 60) if lab else (150, 150, 150)
        r, col = divmod(j, cols)
        y0, x0 = gap + r * (c + gap), gap + col * (c + gap)
        canvas[y0 : y0 + c, x0 : x0 + c] = rgb
    return Image.fromarray(canvas)
