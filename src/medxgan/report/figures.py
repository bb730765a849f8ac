"""Figure helpers shared by `medxgan explain`, the evaluation and the HTML report.

Everything works on PIL images (what gets written) and converts from tensors in the project's
contract (C x H x W in [-1, 1]) or from maps (1 x H x W / H x W floats, any range):

* :func:`tensor_to_pil` / :func:`pil_to_tensor` — image conversions;
* :func:`normalize_map` / :func:`colorize` / :func:`overlay_heatmap` — heatmaps over an image;
* :func:`draw_mask_outline` — a ground-truth mask's contour;
* :func:`captioned_strip` / :func:`image_grid` — rows/grids with captions (PIL default font);
* :func:`save_gif` / :func:`save_png` — atomic writes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from medxgan.runtime.atomic import atomic_save_image, atomic_write_bytes



# ---- conversions --------------------------------------------------------------------------------
def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def tensor_to_pil(image) -> Image.Image:
    """C x H x W (or 1 x C x H x W, or H x W) in [-1, 1] -> PIL 'L' (1 channel) or 'RGB' (3)."""
    a = _np(image)
    if a.ndim == 4:
        a = a[0]
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
    u8 = np.clip(np.round((a + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return Image.fromarray(u8, "L" if u8.ndim == 2 else "RGB")


def pil_to_tensor(im: Image.Image, channels: int | None = None) -> torch.Tensor:
    """PIL image -> C x H x W float32 in [-1, 1] (8-bit modes; ``channels`` 1 or 3 forces gray/RGB)."""
    if channels == 1 or (channels is None and im.mode in ("L", "1", "LA")):
        im = im.convert("L")
    else:
        im = im.convert("RGB")
    a = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
    t = torch.from_numpy(a.copy())
    return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1).contiguous()


def to_rgb(im: Image.Image) -> Image.Image:
    return im if im.mode == "RGB" else im.convert("RGB")


def upscale(im: Image.Image, min_size: int = 128) -> Image.Image:
    """Enlarge small images by an integer factor (nearest neighbour) so that pixels stay visible."""
    f = max(1, int(np.ceil(min_size / max(1, min(im.size)))))
    return im if f == 1 else im.resize((im.width * f, im.height * f), Image.NEAREST)


# ---- heatmaps -----------------------------------------------------------------------------------
def normalize_map(m, *, signed: bool | None = None, percentile: float = 99.5) -> np.ndarray:
    """A map (H x W, 1 x H x W, ...) -> H x W float in [0, 1] (unsigned) or [-1, 1] (signed).

    Unsigned: |m| scaled by its ``percentile`` (robust max). Signed (default when the map has both
    signs): m / percentile(|m|), clipped, so that 0 stays 0. An all-zero map stays zero.
    """
    a = _np(m).squeeze()
    if a.ndim != 2:
        raise ValueError(f"a map must be H x W after squeezing, got shape {a.shape}")
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    if signed is None:
        signed = bool(a.min() < 0 < a.max())
    scale = float(np.percentile(np.abs(a), percentile)) if a.size else 0.0
    if scale <= 0:
        scale = float(np.abs(a).max()) or 1.0
    if signed:
        return np.clip(a / scale, -1.0, 1.0)
    return np.clip(np.abs(a) / scale, 0.0, 1.0)


def colorize(m, cmap: str | None = None, *, signed: bool | None = None, percentile: float = 99.5) -> Image.Image:
    """A map -> RGB PIL image through a matplotlib colormap (``jet`` unsigned, ``bwr`` signed)."""
    from matplotlib import colormaps

    a = _np(m).squeeze()
    if signed is None:
        signed = bool(np.nan_to_num(a).min() < 0 < np.nan_to_num(a).max())
    n = normalize_map(a, signed=signed, percentile=percentile)
    if signed:
        n = (n + 1.0) / 2.0
    rgb = colormaps[cmap or ("bwr" if signed else "jet")](n)[..., :3]
    return Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB")


def overlay_heatmap(image, m, *, alpha: float = 0.5, cmap: str | None = None, signed: bool | None = None, percentile: float = 99.5,
                    weight_by_magnitude: bool = True) -> Image.Image:
    """Blend a colorized map over an image (tensor in [-1, 1] or PIL, gray or RGB) -> RGB PIL.

    With ``weight_by_magnitude`` the opacity at a pixel is ``alpha * |normalised map|`` so that
    unimportant pixels show the image unchanged; otherwise a uniform ``alpha``.
    """
    base = to_rgb(image if isinstance(image, Image.Image) else tensor_to_pil(image))
    a = _np(m).squeeze()
    if a.shape != (base.height, base.width):
        t = torch.from_numpy(np.ascontiguousarray(a))[None, None]
        a = torch.nn.functional.interpolate(t, size=(base.height, base.width), mode="bilinear", align_corners=False)[0, 0].numpy()
    heat = np.asarray(colorize(a, cmap, signed=signed, percentile=percentile), dtype=np.float32)
    b = np.asarray(base, dtype=np.float32)
    if weight_by_magnitude:
        w = alpha * np.abs(normalize_map(a, signed=signed, percentile=percentile))[..., None]
    else:
        w = np.full(b.shape[:2] + (1,), alpha, dtype=np.float32)
    out = b * (1 - w) + heat * w
    return Image.fromarray(np.clip(out, 0, 255).round().astype(np.uint8), "RGB")


def draw_mask_outline(image, mask, *, color: tuple[int, int, int] = (0, 255, 0), width: int = 1) -> Image.Image:
    """Draw the boundary of a binary mask (H x W / 1 x H x W, >0.5 = inside) on an image -> RGB PIL."""
    im = to_rgb(image if isinstance(image, Image.Image) else tensor_to_pil(image)).copy()
    m = _np(mask).squeeze() > 0.5
    if m.shape != (im.height, im.width):
        m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize(im.size, Image.NEAREST)) > 127
    edge = np.zeros_like(m)
    for _ in range(max(1, width)):
        p = np.pad(m, 1, mode="constant")
        interior = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
        edge |= m & ~interior
        m = m & interior  # peel one layer for thicker outlines
    a = np.asarray(im).copy()
    a[edge] = color
    return Image.fromarray(a, "RGB")


# ---- layouts ------------------------------------------------------------------------------------
def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    l, t, r, b = draw.textbbox((0, 0), text, font=font)
    return r - l, b - t


def captioned_strip(images: Sequence[Image.Image], captions: Sequence[str] | None = None, *, min_size: int = 96, pad: int = 4,
                    background: tuple[int, int, int] = (255, 255, 255), title: str | None = None) -> Image.Image:
    """Images side by side (enlarged to at least ``min_size`` px) with a caption under each -> RGB PIL.
    Captions may contain newlines."""
    return image_grid([list(images)], captions=[list(captions)] if captions is not None else None, min_size=min_size, pad=pad,
                      background=background, title=title)


def image_grid(rows: Sequence[Sequence[Image.Image | None]], *, captions: Sequence[Sequence[str]] | None = None, row_labels: Sequence[str] | None = None,
               col_labels: Sequence[str] | None = None, min_size: int = 96, pad: int = 4, background: tuple[int, int, int] = (255, 255, 255),
               title: str | None = None) -> Image.Image:
    """A grid of images (None leaves a blank cell) with optional per-cell captions, row labels (left),
    column labels (top) and a title -> RGB PIL. All cells are scaled to the size of the largest."""
    font = _font()
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    cells = [[upscale(to_rgb(im), min_size) if im is not None else None for im in row] for row in rows]
    ncol = max((len(r) for r in cells), default=0)
    cw = max((im.width for r in cells for im in r if im is not None), default=min_size)
    ch = max((im.height for r in cells for im in r if im is not None), default=min_size)

    def th(text: str) -> int:
        return _text_size(scratch, text, font)[1] + 4 if text else 0

    cap_h = max((th(c) for r in (captions or []) for c in r), default=0)
    col_h = max((th(c) for c in (col_labels or [])), default=0)
    row_w = max((_text_size(scratch, c, font)[0] + 2 * pad for c in (row_labels or [])), default=0)
    title_h = th(title) + pad if title else 0
    W = row_w + ncol * (cw + pad) + pad
    H = title_h + col_h + len(cells) * (ch + cap_h + pad) + pad
    canvas = Image.new("RGB", (W, H), background)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.multiline_text((pad, pad), title, fill=(0, 0, 0), font=font)
    for j, label in enumerate(col_labels or []):
        x = row_w + pad + j * (cw + pad)
        draw.multiline_text((x + (cw - _text_size(draw, label, font)[0]) // 2, title_h + 2), label, fill=(0, 0, 0), font=font)
    for i, row in enumerate(cells):
        y = title_h + col_h + pad + i * (ch + cap_h + pad)
        if row_labels and i < len(row_labels):
            draw.multiline_text((pad, y + ch // 2 - 6), row_labels[i], fill=(0, 0, 0), font=font)
        for j, im in enumerate(row):
            x = row_w + pad + j * (cw + pad)
            if im is not None:
                canvas.paste(im.resize((cw, ch), Image.NEAREST) if im.size != (cw, ch) else im, (x, y))
            if captions and i < len(captions) and j < len(captions[i]) and captions[i][j]:
                text = captions[i][j]
                tw = _text_size(draw, text, font)[0]
                draw.multiline_text((x + max(0, (cw - tw) // 2), y + ch + 2), text, fill=(0, 0, 0), font=font, align="center")
    return canvas


# ---- writing ------------------------------------------------------------------------------------
def save_png(path: str | os.PathLike, im: Image.Image) -> Path:
    return atomic_save_image(path, im, format="PNG")


def gif_bytes(frames: Sequence[Image.Image], *, duration_ms: int = 150, loop: int = 0, boomerang: bool = True, hold_ends_ms: int = 500) -> bytes:
    """Encode frames as an animated GIF. ``boomerang`` plays forward then backward; the end frames are
    held ``hold_ends_ms``."""
    import io

    seq = [to_rgb(f) for f in frames]
    durations = [duration_ms] * len(seq)
    if durations:
        durations[0] = durations[-1] = max(duration_ms, hold_ends_ms)
    if boomerang and len(seq) > 2:
        back = seq[-2:0:-1]
        seq = seq + back
        durations = durations + [duration_ms] * len(back)
    pal = [f.convert("P", palette=Image.ADAPTIVE, colors=256) for f in seq]
    buf = io.BytesIO()
    pal[0].save(buf, format="GIF", save_all=True, append_images=pal[1:], duration=durations, loop=loop, disposal=2)
    return buf.getvalue()


def save_gif(path: str | os.PathLike, frames: Sequence[Image.Image], **kwargs) -> Path:
    """Write an animated GIF atomically (see :func:`gif_bytes` for the options)."""
    if not frames:
        raise ValueError("save_gif: no frames")
    return atomic_write_bytes(path, gif_bytes(frames, **kwargs))
