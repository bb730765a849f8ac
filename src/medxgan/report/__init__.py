"""Figures (overlays, strips, GIFs, grids) and, later, the HTML report."""

from medxgan.report.figures import (
    captioned_strip,
    colorize,
    draw_mask_outline,
    image_grid,
    normalize_map,
    overlay_heatmap,
    pil_to_tensor,
    save_gif,
    save_png,
    tensor_to_pil,
    upscale,
)

__all__ = [
    "captioned_strip",
    "colorize",
    "draw_mask_outline",
    "image_grid",
    "normalize_map",
    "overlay_heatmap",
    "pil_to_tensor",
    "save_gif",
    "save_png",
    "tensor_to_pil",
    "upscale",
]
