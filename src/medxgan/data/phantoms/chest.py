"""PA-chest-X-ray-like phantoms with consolidation-like opacities, exact masks and boxes.

Anatomy (drawn per subject; bright = dense, as on a radiograph): the soft-tissue body outline with neck
and shoulders, two dark lung fields (rounded trapezoids narrowing to the apex, cut below by the
diaphragm domes, the patient's right dome a little higher), lung vessel markings, the mediastinum with
the aortic knob, the heart shadow on the image right, spine, posterior ribs (curved bright bands) and
clavicles; position, scale, rotation, exposure (gain/offset/gamma), blur and noise vary.

Positives carry 1-3 opacities: smooth, fuzzy, irregular bright patches (radius 5-13 % of the width)
centred in a lung and multiplied by the lung field, so they are clipped to the lungs. The opacity's
intensity change is ``max(o - t, 0)`` with ``o`` the raw patch and ``t`` a small threshold, so the mask
(``o > t``) marks exactly the pixels the opacity raised (the change is exactly zero elsewhere; rendering
with ``lesion=False`` gives the opacity-free twin). Boxes are the bounding boxes of each opacity's own
mask, (x, y, w, h) in pixels. The shortcut marker is never part of the mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medxgan.data.phantoms.common import (
    draw_marker,
    gaussian_blur,
    grid,
    irregular_blob_q,
    mask_boxes,
    pixel,
    rotate,
    sigmoid,
    smooth_noise,
    smoothstep,
    soft_inside,
)


@dataclass(frozen=True)
class _Frame:
    """The patient frame of one radiograph: the pixel grid (u, v), the patient's rotated and scaled coordinates
    (x, y; x to the image right, y down) and |x|."""

    size: int
    px: float
    u: np.ndarray
    v: np.ndarray
    x: np.ndarray
    y: np.ndarray
    ax: np.ndarray


def render_chest(
    rng: np.random.Generator,
    size: int = 64,
    positive: bool = True,
    shortcut: float = 0.0,
    *,
    lesion: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int, int, int]]]:
    """Render one chest radiograph.

    Returns (image float32 size x size in [0, 1], opacity mask bool, marker mask bool, boxes) where
    boxes is a list of (x, y, w, h) pixel boxes, one per opacity (empty for negatives). ``lesion=False``
    renders a positive subject without its opacities (same anatomy, noise and marker; empty mask/boxes).
    """
    # the helpers draw from a_rng in a fixed order (frame, body, lungs, heart, parenchyma, bones, exposure): changing
    # that order changes every phantom, and the phantom datasets are figures of record
    a_rng, l_rng, n_rng, m_rng = rng.spawn(4)
    marker = draw_marker(m_rng, size, positive, shortcut)
    f = _patient_frame(a_rng, size)
    img, body, half_w, tissue_i = _body(a_rng, f)
    lungs, y_top, y_dome = _lungs(a_rng, f)
    central = _heart_and_mediastinum(a_rng, f, y_dome)
    lungs = lungs * (1.0 - central)
    img = _parenchyma(a_rng, f, img, lungs, central, tissue_i, y_dome)
    img = _bones(a_rng, f, img, body, half_w, y_top, y_dome)

    img = gaussian_blur(img.astype(np.float32), a_rng.uniform(0.3, 0.7) * size / 64)
    gain, offset, gamma = a_rng.uniform(0.85, 1.15), a_rng.uniform(-0.04, 0.04), a_rng.uniform(0.75, 1.3)
    sigma = a_rng.uniform(0.008, 0.03)

    mask = np.zeros((size, size), dtype=bool)
    boxes: list[tuple[int, int, int, int]] = []
    if positive:
        delta, mask, boxes = _opacities(l_rng, f, lungs, marker)
        if lesion:
            img = img + np.where(mask, delta, 0.0)
        else:
            mask[:] = False
            boxes = []

    img = np.clip(img * gain + offset, 0.0, 1.0) ** gamma
    img = img + sigma * n_rng.standard_normal(img.shape).astype(np.float32)
    img = np.clip(img, 0.0, 1.0).astype(np.float32)

    img[marker] = 1.0
    return img, mask, marker, boxes


def _patient_frame(a_rng: np.random.Generator, size: int) -> _Frame:
    """Position, scale and rotation of the patient."""
    u, v = grid(size)
    px = pixel(size)
    s = a_rng.uniform(0.9, 1.04)
    x, y = rotate(u, v, a_rng.uniform(-0.05, 0.05), a_rng.uniform(-0.04, 0.06), a_rng.uniform(-0.06, 0.06))
    x, y = x / s, y / s
    ax = np.abs(x)
    return _Frame(size, px, u, v, x, y, ax)


def _body(a_rng: np.random.Generator, f: _Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Body outline (neck, shoulders, chest wall) over air: (image, body, half width at each row, tissue intensity)."""
    x, y, ax, size = f.x, f.y, f.ax, f.size
    w_chest, w_neck = a_rng.uniform(0.80, 0.94), a_rng.uniform(0.17, 0.24)
    y_sh = a_rng.uniform(-0.80, -0.68)
    half_w = w_neck + (w_chest - w_neck) * smoothstep(y_sh - 0.14, y_sh + 0.12, y)
    half_w = half_w * (1.0 - 0.06 * smoothstep(0.55, 1.0, y))
    thick = np.sqrt(np.clip(1.0 - (x / half_w) ** 2, 0.0, 1.0))
    body = soft_inside(ax / half_w, size, 1.0, scale=w_chest)
    tissue_i, air_i = a_rng.uniform(0.42, 0.58), a_rng.uniform(0.02, 0.08)
    img = air_i + (tissue_i * (0.55 + 0.45 * thick) - air_i) * body
    return img, body, half_w, tissue_i


def _lungs(a_rng: np.random.Generator, f: _Frame) -> tuple[np.ndarray, float, float]:
    """The two lung fields (rounded trapezoids narrowing to the apex, cut below by the diaphragm domes):
    (lung fields in [0, 1], apex row y_top, dome row y_dome)."""
    x, y, size, px = f.x, f.y, f.size, f.px
    y_top = a_rng.uniform(-0.70, -0.58)
    y_dome = a_rng.uniform(0.30, 0.48)
    lungs = np.zeros_like(f.u)
    for sgn in (-1.0, 1.0):
        x_c = sgn * a_rng.uniform(0.36, 0.44)
        a_l = a_rng.uniform(0.25, 0.32)
        p = a_rng.uniform(2.2, 3.2)
        dome_top = y_dome - (a_rng.uniform(0.03, 0.08) if sgn < 0 else 0.0)
        dome_depth = a_rng.uniform(0.10, 0.18)
        y_bot = dome_top + dome_depth + 0.06
        t = np.clip((y - y_top) / (y_bot - y_top), 0.0, 1.0)
        a_y = a_l * (0.55 + 0.45 * np.sqrt(t))
        xl = (x - x_c) * sgn - 0.05 * t * a_l  # lateral bulge at the base
        ym, hh = 0.5 * (y_top + y_bot), 0.5 * (y_bot - y_top)
        r = (np.abs(xl / a_y) ** p + np.abs((y - ym) / hh) ** p) ** (1.0 / p)
        dome = dome_top + dome_depth * np.clip(((x - x_c) / a_l) ** 2, 0.0, 1.5)
        lung = soft_inside(r, size, 1.0, scale=a_l) * sigmoid((dome - y) / (0.8 * px))
        lungs = np.maximum(lungs, lung)
    return lungs, y_top, y_dome


def _heart_and_mediastinum(a_rng: np.random.Generator, f: _Frame, y_dome: float) -> np.ndarray:
    """Heart (image right), mediastinum and aortic knob, in [0, 1]."""
    x, y, size = f.x, f.y, f.size
    xh, yh = a_rng.uniform(0.10, 0.17), y_dome - a_rng.uniform(0.10, 0.20)
    heart = soft_inside(
        _ell(x, y, xh, yh, a_rng.uniform(0.28, 0.36), a_rng.uniform(0.2, 0.26), a_rng.uniform(-0.5, -0.2)),
        size, 1.0, soft_px=1.2, scale=0.25)
    med_w = a_rng.uniform(0.08, 0.12) * (1.0 + 0.2 * smoothstep(-0.1, -0.5, y))
    mediast = soft_inside(np.abs(x - 0.02) / med_w, size, 1.0, soft_px=1.0, scale=med_w.mean())
    mediast = np.maximum(mediast, soft_inside(
        _ell(x, y, a_rng.uniform(0.08, 0.13), a_rng.uniform(-0.42, -0.30), 0.08, 0.07, 0.0), size, 1.0, scale=0.07))
    return np.maximum(heart, mediast)


def _parenchyma(a_rng: np.random.Generator, f: _Frame, img: np.ndarray, lungs: np.ndarray, central: np.ndarray, tissue_i: float,
                y_dome: float) -> np.ndarray:
    """Lung parenchyma: dark, vessel markings strongest near the hila, bases a bit denser; then the dense centre."""
    y, ax, size = f.y, f.ax, f.size
    lung_i = a_rng.uniform(0.08, 0.2)
    vessels = np.clip(smooth_noise(a_rng, size, 0.035), 0.0, None)
    hila = np.exp(-(((ax - 0.18) / 0.3) ** 2 + ((y + 0.05) / 0.45) ** 2))
    lung_val = lung_i * (1.0 + 0.35 * smoothstep(-0.2, 0.6, y)) + a_rng.uniform(0.02, 0.04) * vessels * (0.4 + hila)
    img = img + (lung_val - img) * lungs
    img = img + (tissue_i * a_rng.uniform(1.0, 1.15) - img) * central * (y < y_dome + 0.35)
    return img


def _bones(a_rng: np.random.Generator, f: _Frame, img: np.ndarray, body: np.ndarray, half_w: np.ndarray, y_top: float,
           y_dome: float) -> np.ndarray:
    """Spine, posterior ribs (curved bright bands with their fainter anterior parts) and clavicles."""
    x, y, ax, size = f.x, f.y, f.ax, f.size
    spine = soft_inside(np.abs(x) / 0.065, size, 1.0, scale=0.065) * (0.85 + 0.15 * np.cos(y * math.pi * 9.0))
    img = img + a_rng.uniform(0.04, 0.09) * spine * body
    thorax = smoothstep(half_w, half_w - 0.12, ax) * smoothstep(0.04, 0.12, ax) * (y < y_dome + 0.25)
    rib_amp = a_rng.uniform(0.05, 0.10)
    rib_th = a_rng.uniform(0.018, 0.026) * max(1.0, 48.0 / size)
    k1, k2 = a_rng.uniform(-0.15, 0.0), a_rng.uniform(0.55, 0.85)
    n_ribs = 9
    spacing = (y_dome + 0.05 - y_top) / n_ribs
    xr = ax - 0.06
    ribs = np.zeros_like(f.u)
    for i in range(n_ribs):
        y_i = y_top - 0.16 + (i + 0.5) * spacing * (0.8 + 0.04 * i)
        curve = y_i + k1 * xr + k2 * xr * xr
        ribs = np.maximum(ribs, np.exp(-(((y - curve) / rib_th) ** 2)))
        # the anterior part of the rib: fainter, sloping down towards the middle
        curve_a = y_i + 0.35 + 0.2 * (0.75 - ax) * (0.75 - ax) - 0.35 * np.clip(0.75 - ax, 0, None)
        ribs = np.maximum(ribs, 0.45 * np.exp(-(((y - curve_a) / (1.3 * rib_th)) ** 2)) * smoothstep(0.2, 0.45, ax))
    img = img + rib_amp * ribs * thorax
    y_cl = y_top + a_rng.uniform(-0.02, 0.04)
    cl_curve = y_cl - 0.14 * (ax - 0.1) + 0.05 * np.sin(math.pi * (ax - 0.1) / 0.5)
    clav = np.exp(-(((y - cl_curve) / (1.2 * rib_th)) ** 2)) * smoothstep(0.06, 0.12, ax) * smoothstep(0.68, 0.58, ax)
    img = img + a_rng.uniform(0.12, 0.22) * clav * body
    return img


def _opacities(l_rng: np.random.Generator, f: _Frame, lungs: np.ndarray, marker: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int, int]]]:
    """1-3 opacities clipped to the lungs: (intensity change, mask, one box per opacity), the marker left out."""
    u, v, size = f.u, f.v, f.size
    mask = np.zeros((size, size), dtype=bool)
    boxes: list[tuple[int, int, int, int]] = []
    delta = np.zeros_like(u)
    masks = []
    n_op = 1 + int(l_rng.uniform() < 0.35) + int(l_rng.uniform() < 0.12)
    cand = np.flatnonzero((lungs > 0.8).ravel())
    for _ in range(n_op):
        j = int(cand[l_rng.integers(cand.size)]) if cand.size else (size * size) // 2
        uc, vc = float(u.flat[j]), float(v.flat[j])
        radius = 2.0 * l_rng.uniform(0.06, 0.13)
        warp = smooth_noise(l_rng, size, 0.08)
        q = irregular_blob_q(u, v, uc, vc, radius, l_rng, amplitude=0.25, warp=warp, warp_amount=0.15)
        tex = np.clip(1.0 + 0.25 * smooth_noise(l_rng, size, 0.05), 0.5, None)
        amp = l_rng.uniform(0.22, 0.4)
        raw = amp * np.exp(-1.3 * q * q) * tex * lungs
        thr = max(0.02, 0.12 * amp)
        d = np.maximum(raw - thr, 0.0)
        delta += d
        masks.append(d > 0)
    marker_free = ~marker
    for m in masks:
        m &= marker_free
        box = mask_boxes(m)
        if box is not None:
            boxes.append(box)
            mask |= m
    return delta, mask, boxes


def _ell(x, y, cx, cy, a, b, theta):
    xr, yr = rotate(x, y, cx, cy, theta)
    return np.sqrt((xr / a) ** 2 + (yr / b) ** 2)

