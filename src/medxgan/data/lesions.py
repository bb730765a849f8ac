"""Lesion models inserted into a healthy 2-D scan, each with its exact mask.

Every model turns a healthy image ``base`` (float32 H x W in [0, 1]) into a lesioned one; the mask is then
*defined* as where the image changed: ``|lesioned - base| > threshold`` (default 0.01, 2.55 grey levels at 8
bits), and the lesioned image is reset to ``base`` everywhere else. So the mask is exactly where the image
differs from its lesion-free twin (the thresholded profile), whatever the model, the clipping to [0, 1] or
the anatomy under it (a multiplicative change of black background is no change and is not in the mask).

Models (the kinds used in the synthetic-lesion literature; all on an irregular blob of radius ``r``):

=================  ==========================================================================================
``hyper``          ``base + a p``: a brighter region with a soft margin (p = 1 inside, smooth fall to 0 at the edge)
``hypo``           ``base - a p``: a darker region
``texture``        ``base (1 + c p)``: a contrast change that keeps the scan's own texture inside (c = +-0.3..0.6)
``ring``           ``base (1 - d core) + a ring``: a bright rim around a darker (necrotic) core
``mass``           the anatomy around a core lesion pushed outwards by a smooth radial displacement that is
                   exactly zero beyond 2 r (mass effect), plus a ``hyper``/``hypo`` core; its mask also holds
                   where the anatomy moved by more than half a pixel (the thresholded displacement profile),
                   so a displaced flat region is in the mask even where its pixels did not change
``subtle``         ``hyper``/``hypo`` with an amplitude near the noise level (0.03 - 0.06)
=================  ==========================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medxgan.data.phantoms.common import grid, irregular_blob_q, smoothstep
from medxgan.runtime.errors import MedxganError

LESION_MODELS = ("hyper", "hypo", "texture", "ring", "mass", "subtle")


@dataclass(frozen=True)
class LesionConfig:
    """Which lesions a positive gets: ``models`` drawn uniformly; 1 lesion, or with probability ``p_multiple``
    2..``max_lesions``; radius a fraction of the image side drawn from ``radius``; ``threshold``: the mask is where
    the image changed by more than this (intensity units of [0, 1])."""

    models: tuple[str, ...] = LESION_MODELS
    max_lesions: int = 3
    p_multiple: float = 0.3
    radius: tuple[float, float] = (0.045, 0.11)
    threshold: float = 0.01

    def checked(self) -> LesionConfig:
        bad = [m for m in self.models if m not in LESION_MODELS]
        if not self.models or bad:
            raise MedxganError(f"models {list(self.models)!r}: choose from {', '.join(LESION_MODELS)}", arg="models")
        if not isinstance(self.max_lesions, int) or not 1 <= self.max_lesions <= 8:
            raise MedxganError(f"max_lesions {self.max_lesions!r}: must be an integer in 1..8", arg="max_lesions")
        if not 0.0 <= self.p_multiple <= 1.0:
            raise MedxganError(f"p_multiple {self.p_multiple!r}: must be a probability", arg="p_multiple")
        lo, hi = self.radius
        if not 0.0 < lo <= hi <= 0.3:
            raise MedxganError(f"radius {self.radius!r}: need 0 < low <= high <= 0.3 (fractions of the image side)", arg="radius")
        if not 0.0 < self.threshold < 0.5:
            raise MedxganError(f"threshold {self.threshold!r}: must be in (0, 0.5)", arg="threshold")
        return self


def _blob(rng: np.random.Generator, size: int, cx: float, cy: float, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(q, p): the irregular blob's normalised radius (q < 1 inside) and its soft profile p (1 in the middle,
    falling smoothly to exactly 0 at q = 1; the margin is 30-60 % of the radius)."""
    u, v = grid(size)
    q = irregular_blob_q(u, v, cx, cy, radius, rng, amplitude=0.15)
    margin = float(rng.uniform(0.3, 0.6))
    return q, smoothstep(1.0, 1.0 - margin, q).astype(np.float32)


def _signed(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi)) * (1.0 if rng.uniform() < 0.5 else -1.0)


def _hyper(rng, base, size, cx, cy, r):
    return base + float(rng.uniform(0.15, 0.4)) * _blob(rng, size, cx, cy, r)[1]


def _hypo(rng, base, size, cx, cy, r):
    return base - float(rng.uniform(0.15, 0.4)) * _blob(rng, size, cx, cy, r)[1]


def _texture(rng, base, size, cx, cy, r):
    return base * (1.0 + _signed(rng, 0.3, 0.6) * _blob(rng, size, cx, cy, r)[1])


def _ring(rng, base, size, cx, cy, r):
    q, _ = _blob(rng, size, cx, cy, r)
    width = float(rng.uniform(0.15, 0.25))
    ring = np.exp(-(((q - 0.8) / width) ** 2)) * smoothstep(1.0 + width, 1.0, q)  # exactly 0 beyond 1 + width
    core = smoothstep(0.75, 0.45, q)
    return base * (1.0 - float(rng.uniform(0.4, 0.7)) * core) + float(rng.uniform(0.2, 0.4)) * ring


def _mass(rng, base, size, cx, cy, r):
    from scipy import ndimage

    u, v = grid(size)
    du, dv = u - cx, v - cy
    rho = np.sqrt(du * du + dv * dv)
    reach = 2.0 * r
    push = float(rng.uniform(0.3, 0.5)) * smoothstep(reach, 0.0, rho)  # exactly 0 beyond the reach
    # sample the scan closer to the centre: the anatomy moves outwards (pixel coordinates from normalised ones)
    src_u, src_v = cx + du * (1.0 - push), cy + dv * (1.0 - push)
    rows, cols = (src_v + 1.0) * size / 2.0 - 0.5, (src_u + 1.0) * size / 2.0 - 0.5
    displaced = ndimage.map_coordinates(base, [rows, cols], order=1, mode="nearest").astype(np.float32)
    core = _blob(rng, size, cx, cy, 0.6 * r)[1]
    moved = push * rho * size / 2.0 > 0.5  # the thresholded displacement profile: anatomy moved by more than half a pixel
    return displaced + _signed(rng, 0.15, 0.35) * core, moved


def _subtle(rng, base, size, cx, cy, r):
    return base + _signed(rng, 0.03, 0.06) * _blob(rng, size, cx, cy, r)[1]


_MODELS = {"hyper": _hyper, "hypo": _hypo, "texture": _texture, "ring": _ring, "mass": _mass, "subtle": _subtle}


def apply_lesion(base: np.ndarray, lesioned: np.ndarray, threshold: float,
                 support: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Clip to [0, 1], take the mask as where the image changed by more than ``threshold`` (or lies in ``support``,
    a model's own thresholded profile), and reset every other pixel to ``base``: returns ``(image, mask)`` with
    ``mask == (|image - base| > threshold) | support`` exactly."""
    lesioned = np.clip(lesioned, 0.0, 1.0).astype(np.float32)
    mask = np.abs(lesioned - base) > threshold
    if support is not None:
        mask |= support
    return np.where(mask, lesioned, base).astype(np.float32), mask


def lesion(model: str, rng: np.random.Generator, base: np.ndarray, center: tuple[float, float], radius: float,
           threshold: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """One lesion of ``model`` at ``center`` (normalised (u, v) in [-1, 1]) with ``radius`` (normalised units) in
    the square image ``base``; returns ``(image, mask)`` (see :func:`apply_lesion`)."""
    if model not in _MODELS:
        raise MedxganError(f"model {model!r}: choose from {', '.join(LESION_MODELS)}", arg="model")
    size = base.shape[0]
    out = _MODELS[model](rng, base.astype(np.float32), size, float(center[0]), float(center[1]), float(radius))
    out, support = out if isinstance(out, tuple) else (out, None)
    return apply_lesion(base, out, threshold, support)


def _centre(rng: np.random.Generator, region: np.ndarray, radius_px: float) -> tuple[float, float] | None:
    """A random pixel of ``region`` at least ~0.8 radius from its edge (the deepest pixels when none is), in
    normalised coordinates; None for an empty region."""
    from scipy import ndimage

    if not region.any():
        return None
    depth = ndimage.distance_transform_edt(region)
    ok = np.flatnonzero(depth.ravel() >= min(0.8 * radius_px, float(depth.max())))
    k = int(ok[rng.integers(len(ok))])
    size = region.shape[0]
    row, col = divmod(k, region.shape[1])
    return (col + 0.5) / size * 2.0 - 1.0, (row + 0.5) / size * 2.0 - 1.0


def insert_lesions(rng: np.random.Generator, base: np.ndarray, region: np.ndarray,
                   config: LesionConfig | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Insert 1..``max_lesions`` lesions of random models inside ``region`` (bool H x W, centres only) of the square
    ``base``. Returns ``(image, mask, models)``; ``mask`` is the union of the lesions' masks and the image equals
    ``base`` outside it exactly. MedxganError when ``region`` is empty."""
    cfg = config or LesionConfig()
    size = base.shape[0]
    k = 1 if rng.uniform() >= cfg.p_multiple or cfg.max_lesions == 1 else int(rng.integers(2, cfg.max_lesions + 1))
    img, mask, names = base.astype(np.float32), np.zeros(base.shape, dtype=bool), []
    for _ in range(k):
        model = cfg.models[int(rng.integers(len(cfg.models)))]
        radius = float(rng.uniform(*cfg.radius)) * 2.0  # fraction of the side -> normalised units
        c = _centre(rng, region, radius * size / 2.0)
        if c is None:
            raise MedxganError("region: no pixel where a lesion may go (empty region)", arg="region")
        img, m = lesion(model, rng, img, c, radius, cfg.threshold)
        mask |= m
        names.append(model)
    return img, mask, names  # the caller redraws when mask is empty (every lesion fell where nothing can change)


def radius_px(config: LesionConfig, size: int) -> float:
    """The largest lesion radius in pixels (for checks of the usable region)."""
    return config.radius[1] * size


__all__ = ["LESION_MODELS", "LesionConfig", "apply_lesion", "insert_lesions", "lesion", "radius_px"]
