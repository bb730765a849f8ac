"""Brain-MRI-like axial slices with tumours and their exact lesion masks.

Anatomy (every parameter drawn per subject): scalp, a bright skull ring, a thin dark CSF gap, brain with a
wavy grey/white-matter boundary, dark sulci near the cortex, a smooth texture, a butterfly pair of dark
lateral ventricles and a faint midline fissure; head size, shape (ellipse axes, egg shape), rotation and
position vary, so do tissue intensities, a smooth bias field, gamma/gain and the Rician noise level.

Positives carry one tumour (two in 25 % of cases): an irregular blob (random radial harmonics plus a
smooth warp) with an enhancing bright rim, either a dark necrotic core or a solid enhancing core, and in
70 % of cases a slightly bright oedema halo around it. Radius 5.5-14 % of the image width (>= 3.5 px at
64 px), always fully inside the brain.

Lesion mask: the pixels where the tumour's envelope (1 inside the blob, fading to 0 across the halo or
the blob edge) exceeds 10 %: core + rim + the visible part of the halo. The tumour's intensity change is
built as ``(envelope - 0.1)+ * profile``, so it is *exactly zero* outside the mask: rendering the same
subject with ``lesion=False`` gives an image that differs from the positive only inside the mask (the
anatomy, the noise and the marker come from separate random streams that the lesion does not touch).
The shortcut marker (see ``common.marker_mask``) is never part of the lesion mask.
"""

from __future__ import annotations

import math

import numpy as np

from medxgan.data.phantoms.common import (
    draw_marker,
    gaussian_blur,
    grid,
    irregular_blob_q,
    pixel,
    rician,
    rotate,
    sigmoid,
    smooth_noise,
    smoothstep,
    soft_inside,
)

ENVELOPE_THRESHOLD = 0.1


def render_brain(
    rng: np.random.Generator,
    size: int = 64,
    positive: bool = True,
    shortcut: float = 0.0,
    *,
    lesion: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one brain slice.

    Returns (image float32 size x size in [0, 1], lesion mask bool, marker mask bool). ``positive`` adds
    tumours (and sets the marker probability to ``shortcut``; negatives get ``0.05 * shortcut``).
    ``lesion=False`` renders a positive subject without painting its tumours (the lesion-free twin:
    same anatomy, noise and marker), with an empty mask.
    """
    a_rng, l_rng, n_rng, m_rng = rng.spawn(4)
    u, v = grid(size)
    px = pixel(size)

    # ---- head geometry (head frame: x to the right, y down, origin at the head centre)
    cx, cy = a_rng.uniform(-0.06, 0.06, size=2)
    s = a_rng.uniform(0.86, 1.0)
    ha, hb = s * a_rng.uniform(0.70, 0.80), s * a_rng.uniform(0.84, 0.94)
    theta = a_rng.uniform(-0.25, 0.25)
    egg = a_rng.uniform(0.0, 0.08)
    x, y = rotate(u, v, cx, cy, theta)
    rho = np.sqrt((x / (ha * (1.0 + egg * y / hb))) ** 2 + (y / hb) ** 2)

    scalp_w, skull_w, gap_w = a_rng.uniform(0.03, 0.06), a_rng.uniform(0.06, 0.10), a_rng.uniform(0.015, 0.035)
    rho_b = 1.0 - skull_w - gap_w  # brain edge in units of rho
    scalp_i, skull_i, csf_i = a_rng.uniform(0.25, 0.45), a_rng.uniform(0.80, 0.95), a_rng.uniform(0.04, 0.14)
    gm_i = a_rng.uniform(0.36, 0.50)
    wm_i = gm_i + a_rng.uniform(0.10, 0.22)

    img = scalp_i * soft_inside(rho, size, 1.0 + scalp_w, scale=hb)
    img = img + (skull_i - img) * soft_inside(rho, size, 1.0, scale=hb)
    img = img + (csf_i - img) * soft_inside(rho, size, 1.0 - skull_w, scale=hb)

    # ---- brain tissue: wavy grey/white boundary, sulci, texture
    rb = rho / rho_b
    w0 = a_rng.uniform(0.68, 0.80)
    wm_m = sigmoid((w0 + 0.06 * smooth_noise(a_rng, size, 0.12) - rb) / 0.04)
    tissue = gm_i + (wm_i - gm_i) * wm_m
    sulci = (1.0 - wm_m) * np.exp(-((smooth_noise(a_rng, size, 0.07) / 0.35) ** 2)) * smoothstep(0.55, 0.9, rb)
    tissue = tissue - a_rng.uniform(0.4, 0.8) * (gm_i - csf_i) * sulci
    tissue = tissue * (1.0 + a_rng.uniform(0.02, 0.05) * smooth_noise(a_rng, size, 0.2))
    # midline fissure (front and back of the brain)
    fis = np.exp(-((x / (0.8 * px)) ** 2)) * smoothstep(0.6, 0.9, np.abs(y) / (hb * rho_b))
    tissue = tissue - 0.6 * (gm_i - csf_i) * fis

    # lateral ventricles: a butterfly pair splaying towards the front
    vy = a_rng.uniform(-0.22, 0.0) * hb
    dx = a_rng.uniform(0.08, 0.13) * ha
    long_ax = a_rng.uniform(0.17, 0.28) * hb * rho_b
    short_ax = a_rng.uniform(0.045, 0.075) * ha
    splay = a_rng.uniform(0.05, 0.35)
    bend = a_rng.uniform(0.6, 1.6)
    asym = a_rng.uniform(0.85, 1.15, size=2)
    vent = np.zeros_like(u)
    for side, k in ((-1.0, 0), (1.0, 1)):
        xv, yv = rotate(x, y, side * dx, vy, side * splay)
        xv = xv - side * bend * short_ax * (yv / long_ax) ** 2  # crescents: ends bend outwards
        rv = np.sqrt((xv / (short_ax * asym[k])) ** 2 + (yv / (long_ax * asym[k])) ** 2)
        # frontal horn a bit wider than the body
        rv = rv * (1.0 + 0.25 * np.clip(yv / long_ax, -1, 1))
        vent = np.maximum(vent, soft_inside(rv, size, 1.0, scale=short_ax))
    tissue = tissue + (csf_i * 1.2 - tissue) * vent

    img = img + (tissue - img) * soft_inside(rho, size, rho_b, scale=hb)
    img = gaussian_blur(img.astype(np.float32), a_rng.uniform(0.2, 0.6) * size / 64)

    # global intensity variation (drawn before the lesion so both twins get the same numbers)
    bias = 1.0 + a_rng.uniform(0.0, 0.12) * smooth_noise(a_rng, size, 0.6)
    gamma, gain = a_rng.uniform(0.8, 1.25), a_rng.uniform(0.85, 1.1)
    sigma = a_rng.uniform(0.01, 0.045)

    # ---- tumours
    mask = np.zeros((size, size), dtype=bool)
    if positive:
        brain_inner = rb < 0.96
        delta = np.zeros_like(u)
        n_tumours = 2 if l_rng.uniform() < 0.25 else 1
        for t in range(n_tumours):
            d_t, m_t = _tumour(l_rng, size, x, y, ha * rho_b, hb * rho_b, brain_inner, second=t > 0)
            delta += d_t
            mask |= m_t
        mask &= brain_inner
        if lesion:
            img = img + np.where(mask, delta, 0.0)
        else:
            mask[:] = False

    img = np.clip(img * bias, 0.0, None) ** gamma * gain
    img = rician(n_rng, img, sigma)
    img = np.clip(img, 0.0, 1.0).astype(np.float32)

    marker = draw_marker(m_rng, size, positive, shortcut)
    img[marker] = 1.0
    mask &= ~marker
    return img, mask, marker


def _tumour(rng, size, x, y, a_brain, b_brain, brain_inner, second=False):
    """One tumour in head-frame coordinates; returns (intensity change, mask). The change is exactly 0
    outside the mask."""
    frac = rng.uniform(0.055, 0.10) if second else rng.uniform(0.055, 0.14)
    radius = 2.0 * frac  # normalised units (the image is 2 wide)
    has_halo = rng.uniform() < 0.7
    halo = rng.uniform(0.25, 0.65) if has_halo else 0.0
    harm_amp = rng.uniform(0.08, 0.22)
    # centre: uniform in the brain ellipse, shrunk so the whole lesion (halo included) stays inside
    for attempt in range(12):
        extent = radius * (1.0 + 1.6 * harm_amp) * (1.0 + halo) + 2 * pixel(size)
        rmax = 0.93 - extent / min(a_brain, b_brain)
        if rmax > 0.05:
            break
        radius *= 0.85
        halo *= 0.8
    rmax = max(rmax, 0.0)
    r_c = rmax * math.sqrt(rng.uniform())
    ang = rng.uniform(0.0, 2 * math.pi)
    xc, yc = r_c * math.cos(ang) * a_brain, r_c * math.sin(ang) * b_brain
    warp = smooth_noise(rng, size, 0.08)
    q = irregular_blob_q(x, y, xc, yc, radius, rng, amplitude=harm_amp, warp=warp, warp_amount=rng.uniform(0.0, 0.12))

    e = max(0.08, 0.8 * pixel(size) / radius)  # edge softness in units of q
    rim_amp = rng.uniform(0.15, 0.30)
    rim_w = rng.uniform(0.25, 0.5)
    if rng.uniform() < 0.55:  # ring-enhancing with a necrotic core
        core_amp = -rng.uniform(0.03, 0.18)
    else:  # solid enhancing
        core_amp = rim_amp * rng.uniform(0.5, 0.95)
    halo_amp = rng.uniform(0.06, 0.14) if has_halo else 0.0
    hetero = 1.0 + rng.uniform(0.0, 0.2) * smooth_noise(rng, size, 0.05)

    inside = smoothstep(1.0 + e, 1.0 - e, q)
    core = smoothstep(1.0 - rim_w + e, 1.0 - rim_w - e, q)
    envelope = np.maximum(inside, smoothstep(1.0 + halo, 1.0, q)) if has_halo else inside
    env = np.maximum(envelope - ENVELOPE_THRESHOLD, 0.0) / (1.0 - ENVELOPE_THRESHOLD)
    profile = (core_amp * core + rim_amp * (inside - core)) * hetero + halo_amp * (1.0 - inside)
    mask = (env > 0) & brain_inner
    return (env * profile).astype(np.float32), mask
