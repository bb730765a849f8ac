"""Procedural retinas: a colour fundus photograph and the matching fluorescein angiogram (FA) per subject.

Each subject is one random anatomy (drawn from ``np.random.default_rng([seed, i])``, so subject ``i`` is
the same whatever ``n`` is): optic disc, macula/fovea, a branching vessel tree (a superior and an
inferior arcade leaving the disc and bending round the macula, plus nasal branches; arteries thinner,
veins wider; widths taper and split by Murray's law at each branch), a circular field of view with
vignetting, choroidal texture, and per-subject colour, exposure, field-of-view size and zoom. Left eyes
are the mirror images of right eyes.

The same anatomy is rendered twice:

* fundus (RGB): orange-red background, darker vessels (veins darker and wider than arteries, arteries
  with a light central reflex), a bright yellowish disc, a darker macula.
* angiogram (gray): dark background with a mild choroidal glow, bright vessels, bright disc, a dark
  foveal avascular zone. "Abnormal" subjects also get hyperfluorescent dots (microaneurysm-like) and
  fuzzy leakage patches that are faint (dots) or invisible (leakage) in the fundus photo.

Layout written by :func:`synthesize_fundus_angio` (the usual unpaired CycleGAN layout plus a paired
test split)::

    OUT/trainA/*.png   fundus photos (RGB) of subjects 0 .. a-1
    OUT/trainB/*.png   angiograms (gray) of *other* subjects a .. a+b-1 (disjoint from trainA)
    OUT/testA/*.png    fundus photos of the test subjects
    OUT/testB/*.png    their angiograms, same file names (paired ground truth)
    OUT/dataset.json   kind, parameters, file lists, which subjects are abnormal
    OUT/preview.png    a grid: fundus row over angiogram row for a few test subjects

Coordinates: normalised, x to the right and y downwards, the image spans [-1, 1] on both axes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medxgan.runtime.atomic import atomic_replace_dir, atomic_save_image, atomic_write_json
from medxgan.runtime.errors import MedxganError

KIND = "fundus-angio"
GENERATOR_VERSION = 1


# --------------------------------------------------------------------------------------------------
# anatomy
# --------------------------------------------------------------------------------------------------
class _Vessel:
    """One polyline: points (K x 2, normalised coords), widths (K,), artery flag."""

    __slots__ = ("pts", "widths", "artery")

    def __init__(self, pts: np.ndarray, widths: np.ndarray, artery: bool):
        self.pts, self.widths, self.artery = pts, widths, artery


@dataclass(frozen=True)
class _Retina:
    """What every vessel of one eye grows within (shared by the whole recursion): the fovea and its avascular zone
    (radius ``faz``), the field of view (radius ``fov``), the step and the narrowest width; grown vessels go to ``out``."""

    fovea: np.ndarray
    faz: float
    fov: float
    out: list[_Vessel]
    step: float = 0.025
    min_width: float = 0.0035


def _grow(
    rng: np.random.Generator,
    start: np.ndarray,
    angle: float,
    width: float,
    artery: bool,
    *,
    bend: float,
    bend_decay: float,
    depth: int,
    retina: _Retina,
) -> None:
    """Grow one vessel from `start` heading `angle`, tapering, and spawn branches recursively."""
    step, min_width, fovea = retina.step, retina.min_width, retina.fovea
    pts = [start.copy()]
    widths = [width]
    p = start.copy()
    w = width
    a = angle
    b = bend
    next_branch = rng.uniform(0.15, 0.3)
    travelled = 0.0
    max_len = rng.uniform(1.4, 2.2) if depth == 0 else rng.uniform(0.3, 0.9) * (0.75**depth)
    while travelled < max_len:
        a += b * step + rng.normal(0.0, 0.06)  # steady bend + tortuosity
        b *= bend_decay
        p = p + step * np.array([math.cos(a), math.sin(a)])
        travelled += step
        w *= 0.992  # gentle taper along the vessel
        pts.append(p.copy())
        widths.append(w)
        if np.hypot(*p) > retina.fov * 1.02 or w < min_width:
            break
        if np.hypot(*(p - fovea)) < retina.faz:  # foveal avascular zone: vessels stop short of it
            break
        if travelled >= next_branch and depth < 3 and w > 2.2 * min_width:
            # Murray's law: w^3 = w1^3 + w2^3; the child takes fraction f of the cube
            f = rng.uniform(0.15, 0.45)
            child_w = w * f ** (1 / 3)
            w = w * (1 - f) ** (1 / 3)
            side = rng.choice([-1.0, 1.0])
            child_a = a + side * rng.uniform(0.5, 1.1)
            _grow(rng, p, child_a, child_w, artery, bend=side * rng.uniform(0.0, 1.5), bend_decay=0.97, depth=depth + 1, retina=retina)
            a -= side * rng.uniform(0.05, 0.25)  # the parent deflects away from its child
            next_branch = travelled + rng.uniform(0.22, 0.45) * (1.0 + 0.5 * depth)
    if len(pts) >= 2:
        retina.out.append(_Vessel(np.array(pts), np.array(widths), artery))


def _anatomy(rng: np.random.Generator) -> dict[str, Any]:
    """Draw one right-eye anatomy in normalised coordinates (mirroring happens at rendering)."""
    fov = rng.uniform(0.86, 0.97)  # radius of the field of view
    zoom = rng.uniform(0.9, 1.1)
    disc = np.array([0.42, rng.normal(-0.02, 0.04)]) * zoom
    disc_r = rng.uniform(0.085, 0.11) * zoom
    fovea = disc + np.array([-0.52, rng.normal(0.06, 0.03)]) * zoom
    faz = rng.uniform(0.05, 0.07) * zoom
    vessels: list[_Vessel] = []
    retina = _Retina(fovea=fovea, faz=faz, fov=fov, out=vessels)
    for superior in (True, False):
        sgn = -1.0 if superior else 1.0  # y down: superior = negative y
        for artery in (True, False):
            w0 = (rng.uniform(0.020, 0.024) if artery else rng.uniform(0.027, 0.032)) * zoom
            offset = np.array([rng.uniform(-0.02, 0.02), sgn * rng.uniform(0.01, 0.03)]) * zoom
            # leave the disc upwards/downwards, leaning temporally, then bend round the macula
            angle = sgn * math.pi / 2 + sgn * rng.uniform(0.15, 0.45) * (1 if artery else 0.7)
            bend = sgn * rng.uniform(1.3, 1.9)  # rotates the heading towards -x (temporal)
            _grow(rng, disc + offset, angle, w0, artery, bend=bend, bend_decay=0.985, depth=0, retina=retina)
        # nasal vessels: smaller, towards +x
        for artery in (True, False):
            w0 = (rng.uniform(0.011, 0.014) if artery else rng.uniform(0.014, 0.018)) * zoom
            angle = sgn * rng.uniform(0.25, 0.9)
            _grow(rng, disc.copy(), angle, w0, artery, bend=-sgn * rng.uniform(0.0, 0.8), bend_decay=0.98, depth=1, retina=retina)
    # small macular branches from the disc towards the fovea (they stop at the FAZ)
    for _ in range(rng.integers(1, 3)):
        artery = bool(rng.integers(0, 2))
        angle = math.pi + rng.normal(0.0, 0.15)
        _grow(rng, disc.copy(), angle, rng.uniform(0.007, 0.01) * zoom, artery, bend=0.0, bend_decay=1.0, depth=2, retina=retina)
    return {
        "fov": fov, "fov_center": rng.normal(0.0, 0.02, size=2), "zoom": zoom, "disc": disc, "disc_r": disc_r,
        "fovea": fovea, "faz": faz, "vessels": vessels, "left_eye": bool(rng.integers(0, 2)),
    }


# --------------------------------------------------------------------------------------------------
# rasterisation
# --------------------------------------------------------------------------------------------------
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    return np.meshgrid(c, c, indexing="xy")  # X[row, col] = x, Y[row, col] = y


def _rasterise(vessels: list[_Vessel], size: int, artery: bool) -> np.ndarray:
    """Vessel profile in [0, 1] per pixel: max over segments of a cylinder cross-section
    sqrt(1 - (d / r)^2), anti-aliased at the edge, thin vessels dimmed by their sub-pixel width.
    Vectorised over (pixels in the polyline's bounding box) x (segments of the polyline)."""
    out = np.zeros((size, size), np.float32)
    px = 2.0 / size
    for v in vessels:
        if v.artery != artery:
            continue
        a, b = v.pts[:-1], v.pts[1:]
        r_true = 0.5 * 0.5 * (v.widths[:-1] + v.widths[1:])  # radius per segment
        r = np.maximum(r_true, 0.75 * px)  # sub-pixel vessels: spread over ~1.5 px ...
        dim = (r_true / r) ** 0.8  # ... and dimmed, so they stay continuous instead of dashed
        lo = np.minimum(a, b).min(0) - r.max() - 2 * px
        hi = np.maximum(a, b).max(0) + r.max() + 2 * px
        c0 = int(np.clip((lo[0] + 1) / px, 0, size))
        r0 = int(np.clip((lo[1] + 1) / px, 0, size))
        c1 = int(np.clip((hi[0] + 1) / px + 1, 0, size))
        r1 = int(np.clip((hi[1] + 1) / px + 1, 0, size))
        if c1 <= c0 or r1 <= r0:
            continue
        xs = (np.arange(c0, c1, dtype=np.float32) + 0.5) * px - 1
        ys = (np.arange(r0, r1, dtype=np.float32) + 0.5) * px - 1
        P = np.stack(np.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 1, 2)  # M x 1 x 2
        ab = (b - a)[None]  # 1 x S x 2
        t = np.clip(((P - a[None]) * ab).sum(-1) / np.maximum((ab**2).sum(-1), 1e-12), 0, 1)
        d = np.linalg.norm(P - (a[None] + t[..., None] * ab), axis=-1)  # M x S
        core = np.sqrt(np.clip(1 - (d / r) ** 2, 0, 1))  # cylinder cross-section
        edge = np.clip((r - d) / px + 0.5, 0, 1)  # anti-aliased coverage
        prof = (np.maximum(core, 0.35 * edge) * edge * dim).max(1).reshape(len(ys), len(xs))
        out[r0:r1, c0:c1] = np.maximum(out[r0:r1, c0:c1], prof)
    return out


def _smooth_noise(rng: np.random.Generator, size: int, sigma_px: float) -> np.ndarray:
    """Gaussian-filtered white noise (via FFT), normalised to zero mean, unit std."""
    white = rng.standard_normal((size, size))
    f = np.fft.fftfreq(size)
    fx, fy = np.meshgrid(f, f, indexing="xy")
    filt = np.exp(-2 * (math.pi * sigma_px) ** 2 * (fx**2 + fy**2))
    out = np.real(np.fft.ifft2(np.fft.fft2(white) * filt))
    return ((out - out.mean()) / (out.std() + 1e-8)).astype(np.float32)


def _blob(X: np.ndarray, Y: np.ndarray, c: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-((X - c[0]) ** 2 + (Y - c[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


def render_subject(seed: int, index: int, size: int = 128, abnormal: bool = False) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One subject: (fundus H x W x 3 float32 in [0,1], angiogram H x W float32 in [0,1], info)."""
    rng = np.random.default_rng([seed, index])
    an = _anatomy(rng)
    X, Y = _grid(size)
    fc = an["fov_center"]
    R = np.hypot(X - fc[0], Y - fc[1])
    fov = np.clip((an["fov"] - R) / (2.0 / size) + 0.5, 0, 1).astype(np.float32)  # anti-aliased disc
    Rn = R / an["fov"]
    # the anatomy is drawn for a right eye; a left eye is its mirror image: mirror the sampling grid
    Xa = -X if an["left_eye"] else X
    art = _rasterise(an["vessels"], size, artery=True)
    vein = _rasterise(an["vessels"], size, artery=False)
    if an["left_eye"]:
        art, vein = art[:, ::-1].copy(), vein[:, ::-1].copy()
    disc_d = np.hypot(Xa - an["disc"][0], Y - an["disc"][1]) / an["disc_r"]
    disc = np.clip((1.0 - disc_d) * 6 + 0.5, 0, 1).astype(np.float32)  # soft-edged disc
    cup = _blob(Xa, Y, an["disc"] + np.array([-0.01, 0.0]), an["disc_r"] * 0.4)
    mac = _blob(Xa, Y, an["fovea"], 0.16 * an["zoom"])
    fov_zone = _blob(Xa, Y, an["fovea"], an["faz"] * 1.1)
    texture = _smooth_noise(rng, size, sigma_px=size / 40)  # choroidal pattern, shared by both renderings
    fine = _smooth_noise(rng, size, sigma_px=0.8)

    # abnormalities: microaneurysm dots and leakage patches around the posterior pole
    dots, leak = np.zeros_like(X), np.zeros_like(X)
    n_dots = n_leaks = 0
    if abnormal:  # own RNG stream: a subject's anatomy and colours do not depend on its being abnormal
        arng = np.random.default_rng([seed, index, 2])
        n_dots, n_leaks = int(arng.integers(4, 13)), int(arng.integers(1, 4))
        for _ in range(n_dots):
            c = an["fovea"] + arng.normal(0, 0.22, 2)
            dots = np.maximum(dots, arng.uniform(0.6, 1.0) * _blob(Xa, Y, c, arng.uniform(0.008, 0.014)))
        for _ in range(n_leaks):
            c = an["fovea"] + arng.normal(0, 0.25, 2)
            leak = np.maximum(leak, arng.uniform(0.5, 0.8) * _blob(Xa, Y, c, arng.uniform(0.04, 0.08)))

    # ---- colour fundus photograph -------------------------------------------------------------
    base = np.array([rng.uniform(0.72, 0.9), rng.uniform(0.30, 0.42), rng.uniform(0.10, 0.18)], np.float32)
    exposure = rng.uniform(0.8, 1.1)
    vignette = 1.0 - rng.uniform(0.25, 0.45) * Rn**2
    bg = base * (1.0 + 0.06 * texture[..., None] + 0.02 * fine[..., None])
    bg = bg * (1.0 - 0.45 * mac[..., None]) * (1.0 - 0.25 * fov_zone[..., None])
    bg = bg * (1.0 + 0.15 * _blob(Xa, Y, an["disc"], 0.25)[..., None])  # brighter around the disc
    vein_col = base * np.array([0.55, 0.32, 0.45], np.float32)  # dark red
    art_col = base * np.array([0.82, 0.55, 0.65], np.float32)  # lighter red
    img = bg * (1 - vein[..., None]) + vein[..., None] * vein_col
    reflex = 0.12 * np.clip(art * 2 - 1.2, 0, 1)[..., None]  # light central reflex on arteries
    img = img * (1 - art[..., None]) + art[..., None] * art_col + reflex * base
    disc_col = np.array([1.0, 0.88, 0.6], np.float32) * rng.uniform(0.9, 1.05)
    disc_fund = disc * (0.85 + 0.15 * cup) * (1 - 0.6 * np.maximum(art, vein))
    img = img * (1 - disc_fund[..., None]) + disc_fund[..., None] * disc_col
    img = img * (1 - 0.15 * dots[..., None] * np.array([0.3, 1.0, 1.0], np.float32))  # faint red dots
    img = np.clip(img * exposure * vignette[..., None], 0, 1) * fov[..., None]
    img = np.clip(img + rng.normal(0, 0.006, img.shape).astype(np.float32) * fov[..., None], 0, 1)

    # ---- fluorescein angiogram ----------------------------------------------------------------
    fa_gain = rng.uniform(0.9, 1.1)
    fa_bg = 0.24 * (1.0 + 0.1 * texture + 0.03 * fine) * (1 - 0.55 * mac) * (1 - 0.5 * fov_zone)
    fa = fa_bg
    fa = fa * (1 - art) + art * 0.92
    fa = fa * (1 - vein) + vein * 0.8
    disc_fa = disc * (0.8 + 0.2 * cup)
    fa = np.maximum(fa, disc_fa * 0.85)
    fa = fa + 0.55 * dots * (1 - fa) + 0.45 * leak * (1 - fa)
    fa_vignette = 1.0 - rng.uniform(0.15, 0.3) * Rn**2
    fa = np.clip(fa * fa_gain * fa_vignette, 0, 1) * fov
    fa = np.clip(fa + rng.normal(0, 0.006, fa.shape).astype(np.float32) * fov, 0, 1)
    info = {"abnormal": abnormal, "left_eye": an["left_eye"], "microaneurysms": n_dots, "leakage_patches": n_leaks,
            "vessel_segments": int(sum(len(v.pts) - 1 for v in an["vessels"]))}
    return img.astype(np.float32), fa.astype(np.float32), info


# --------------------------------------------------------------------------------------------------
# data set on disk
# --------------------------------------------------------------------------------------------------
def _to_u8(a: np.ndarray) -> np.ndarray:
    return (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)


def _save_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    atomic_save_image(path, Image.fromarray(_to_u8(arr)))


def _preview(pairs: list[tuple[np.ndarray, np.ndarray, str]], path: Path, tile: int) -> None:
    from PIL import Image, ImageDraw

    cols = len(pairs)
    pad = 4
    W = cols * (tile + pad) + pad
    H = 2 * (tile + pad) + pad + 14
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, (f, a, label) in enumerate(pairs):
        x = pad + j * (tile + pad)
        fi = Image.fromarray(_to_u8(f)).resize((tile, tile), Image.BILINEAR)
        ai = Image.fromarray(_to_u8(a)).convert("RGB").resize((tile, tile), Image.BILINEAR)
        canvas.paste(fi, (x, 14))
        canvas.paste(ai, (x, 14 + tile + pad))
        draw.text((x + 2, 1), label, fill=(0, 0, 0))
    atomic_save_image(path, canvas)


def synthesize_fundus_angio(
    out: str | os.PathLike,
    n: int = 200,
    size: int = 128,
    seed: int = 0,
    abnormal_frac: float = 0.3,
    test_frac: float = 0.1,
    preview: bool = True,
    paired: bool = False,
) -> dict[str, Any]:
    """Write `n` phantom subjects as an unpaired train set + paired test set; return the dataset.json dict.

    Subjects 0..n_test-1 form the paired test split (testA/testB, same names); the remaining ones are
    split in two halves, fundus photos of the first half go to trainA and angiograms of the second half
    to trainB, so the two training domains have disjoint subjects (truly unpaired).
    ``paired=True``: every training subject is written to both trainA and trainB under the same file
    name instead (registered pairs, for ``translate train --paired``).
    Whether a subject is abnormal is drawn per subject (probability `abnormal_frac`).
    """
    if n < 3:
        raise MedxganError(f"n {n}: need at least 3 subjects (test, trainA, trainB)", arg="n")
    if size < 32:
        raise MedxganError(f"size {size}: must be at least 32 pixels", arg="size")
    if not 0.0 <= abnormal_frac <= 1.0:
        raise MedxganError(f"abnormal_frac {abnormal_frac}: must be between 0 and 1", arg="abnormal_frac")
    out = Path(out)
    n_test = max(1, int(round(n * test_frac)))
    n_train = n - n_test
    n_a = (n_train + 1) // 2
    splits: dict[str, list[str]] = {"trainA": [], "trainB": [], "testA": [], "testB": []}
    abnormal_names: list[str] = []
    left_names: list[str] = []
    shown: list[tuple[np.ndarray, np.ndarray, str]] = []
    for i in range(n):
        ab = bool(np.random.default_rng([seed, i, 1]).random() < abnormal_frac)
        fundus, fa, info = render_subject(seed, i, size=size, abnormal=ab)
        name = f"subject_{i:05d}.png"
        if ab:
            abnormal_names.append(name)
        if info["left_eye"]:
            left_names.append(name)
        if i < n_test:
            _save_png(out / "testA" / name, fundus)
            _save_png(out / "testB" / name, fa)
            splits["testA"].append(name)
            splits["testB"].append(name)
            if len(shown) < 6 and (ab or sum(1 for s in shown if "abn" not in s[2]) < 3):
                shown.append((fundus, fa, f"{i} {'abn' if ab else 'normal'} {'L' if info['left_eye'] else 'R'}"))
        elif paired:
            _save_png(out / "trainA" / name, fundus)
            _save_png(out / "trainB" / name, fa)
            splits["trainA"].append(name)
            splits["trainB"].append(name)
        elif i < n_test + n_a:
            _save_png(out / "trainA" / name, fundus)
            splits["trainA"].append(name)
        else:
            _save_png(out / "trainB" / name, fa)
            splits["trainB"].append(name)
    meta = {
        "kind": KIND,
        "generator_version": GENERATOR_VERSION,
        "n": n, "size": size, "seed": seed, "abnormal_frac": abnormal_frac,
        "domains": {"A": {"name": "fundus", "channels": 3}, "B": {"name": "fluorescein angiogram", "channels": 1}},
        "counts": {k: len(v) for k, v in splits.items()},
        "paired_splits": [["trainA", "trainB"], ["testA", "testB"]] if paired else [["testA", "testB"]],
        "files": splits,
        "abnormal": abnormal_names,
        "left_eye": left_names,
    }
    atomic_write_json(out / "dataset.json", meta)
    if preview and shown:
        _preview(shown, out / "preview.png", tile=max(size, 128))
    return meta



# --------------------------------------------------------------------------------------------------
# `medxgan synth fundus-angio`: the entry for medxgan.data.phantoms.PHANTOM_KINDS
# --------------------------------------------------------------------------------------------------
_EPILOG = """\
examples:
  medxgan synth fundus-angio --out data/fa                         # 400 subjects, 128 px, 30% abnormal
  medxgan synth fundus-angio --out data/fa256 --size 256 --n 600 --abnormal-frac 0.5
  medxgan translate train data/fa --out runs/fa --size 128 --ngf 16
  medxgan synth fundus-angio --out data/fa-paired --paired         # registered train pairs (same names)
  medxgan translate train data/fa-paired --out runs/fa-p --paired --size 128 --ngf 16

layout written (the CycleGAN layout; subjects of trainA and trainB are disjoint = unpaired):
  DIR/trainA/*.png       colour fundus photos (RGB)
  DIR/trainB/*.png       fluorescein angiograms (gray) of other subjects
  (--paired: every training subject in both trainA and trainB, same file name = registered pairs)
  DIR/testA/*.png        fundus photos of the test subjects (10%)
  DIR/testB/*.png        their angiograms, same file names (paired ground truth)
  DIR/dataset.json       kind, parameters, file lists, abnormal subjects
  DIR/preview.png        fundus row over angiogram row for a few test subjects
"""


def _registry_synthesize(
    out: str | os.PathLike, *, n: int, size: int, seed: int, shortcut: float = 0.0, preview: bool = True,
    overwrite: bool = False, show_progress: bool = True, abnormal_frac: float = 0.3, paired: bool = False,
) -> dict[str, Any]:
    """`synthesize("fundus-angio", ...)`: checks `out`, writes into a temporary sibling directory that
    replaces `out` when complete, and returns the summary shape of the other phantom kinds (counts per
    split as {"negative": normal subjects, "positive": abnormal subjects})."""
    import shutil
    import time

    if float(shortcut) != 0.0:
        raise MedxganError("shortcut: not supported by fundus-angio (it has no classifier shortcut marker)", arg="shortcut")
    from medxgan.data.phantoms.common import check_synth_out
    from medxgan.runtime.outdir import mark, temp_name

    out = Path(out)
    check_synth_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / temp_name(f"synth-{out.name}-{os.getpid()}")  # the project's temp name (runtime.outdir)
    shutil.rmtree(tmp, ignore_errors=True)
    mark(tmp, "synth")
    t0 = time.perf_counter()
    try:
        meta = synthesize_fundus_angio(tmp, n=n, size=size, seed=seed, abnormal_frac=abnormal_frac, preview=preview,
                                       paired=paired)
        atomic_replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    abnormal = set(meta["abnormal"])
    counts = {s: {"negative": sum(f not in abnormal for f in fs), "positive": sum(f in abnormal for f in fs)}
              for s, fs in meta["files"].items()}
    return {
        "kind": KIND, "out": str(out), "n": n, "size": size, "seed": seed, "shortcut": 0.0, "counts": counts,
        "markers": {s: {"negative": 0, "positive": 0} for s in counts},
        "preview": str(out / "preview.png") if preview else None, "seconds": time.perf_counter() - t0,
    }


def _registry_add_arguments(group: Any) -> None:
    group.add_argument("--abnormal-frac", type=float, default=0.3, metavar="F",
                       help="fraction of subjects with microaneurysm-like dots and leakage in the angiogram")
    group.add_argument("--paired", action="store_true", default=False,
                       help="write every training subject to both trainA and trainB (same name: registered pairs)")
    # this kind's own defaults for the common flags (argument groups share the parser's defaults)
    group.set_defaults(n=400, size=128, preview=True)


# keyword arguments for medxgan.data.phantoms.common.PhantomKind (kept as a plain dict so that this module
# does not depend on the registry's code)
FUNDUS_ANGIO_REGISTRY: dict[str, Any] = {
    "name": KIND,
    "help": "retina pairs: colour fundus photo (RGB) + fluorescein angiogram (gray); unpaired train, paired test",
    "synthesize": _registry_synthesize,
    "add_arguments": _registry_add_arguments,
    "defaults": {"abnormal_frac": 0.3, "paired": False},
    "epilog": _EPILOG,
}

__all__ = ["synthesize_fundus_angio", "render_subject", "KIND", "FUNDUS_ANGIO_REGISTRY"]
