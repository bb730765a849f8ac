"""Procedural phantom datasets with exact ground truth (lesion masks, boxes, shortcut-marker masks).

Library API::

    from medxgan.data.phantoms import synthesize, render_brain, render_chest
    summary = synthesize("brain-mri", "data/brain", n=2000, size=64, seed=0, shortcut=0.0, preview=True)
    img, mask, marker = render_brain(np.random.default_rng([0, 7]), 64, positive=True, shortcut=0.0)

``PHANTOM_KINDS`` maps a kind name to its :class:`PhantomKind` (render function, CLI flags, ...); adding a
kind is one entry here. The on-disk layout is the one of docs/CONTRACTS.md (train/val/test,
negative/positive, masks/, markers/, dataset.json, boxes.csv for kinds with boxes).
"""

from __future__ import annotations

import os
from typing import Any

from medxgan.data.phantoms.brain import render_brain
from medxgan.data.phantoms.chest import render_chest
from medxgan.data.phantoms.common import PhantomKind, check_common_args, check_disk_space, write_dataset
from medxgan.data.phantoms.fundus import FUNDUS_ANGIO_REGISTRY
from medxgan.runtime.errors import MedxganError

# each kind once, keyed by its own name (the name was spelled twice, as the key and the field)
PHANTOM_KINDS: dict[str, PhantomKind] = {kind.name: kind for kind in (
    PhantomKind("brain-mri", "axial brain-MRI-like slices; positives carry 1-2 tumours (rim, core, oedema)",
                render_brain, prefix="brain", twins=True),
    PhantomKind("chest-xray", "PA chest-X-ray-like images; positives carry 1-3 consolidation-like opacities (+ boxes.csv)",
                render_chest, prefix="chest", twins=True, boxes=True),
    PhantomKind(**FUNDUS_ANGIO_REGISTRY),  # paired retina photos/angiograms, own writer
)}


def synthesize(
    kind: str,
    out: str | os.PathLike,
    n: int = 2000,
    size: int = 64,
    seed: int = 0,
    shortcut: float = 0.0,
    preview: bool = False,
    overwrite: bool = False,
    show_progress: bool = True,
    **extra: Any,
) -> dict:
    """Write a phantom dataset of ``n`` images (about half positive) of ``size`` px to ``out``.

    ``shortcut`` is the probability of the corner marker on positives (negatives: 0.05 x that).
    ``extra`` are the kind's own options (see ``PhantomKind.defaults``). Raises MedxganError naming the
    argument for bad values, and when ``out`` is a non-empty directory unless ``overwrite``. The data are
    written to a temporary sibling directory that replaces ``out`` only when complete.

    Returns a summary dict: kind, out, n, size, seed, shortcut, counts {split: {class: k}}, markers
    (same shape), preview (path or None), seconds.
    """
    check_common_args(kind, n, size, seed, shortcut, list(PHANTOM_KINDS))
    spec = PHANTOM_KINDS[kind]
    unknown = sorted(set(extra) - set(spec.defaults))
    if unknown:
        raise MedxganError(f"{unknown[0]}: not an option of phantom kind {kind!r}")
    check_disk_space(out, int(n), int(size))
    options = {**spec.defaults, **extra}
    args = dict(n=int(n), size=int(size), seed=int(seed), shortcut=float(shortcut), preview=bool(preview),
                overwrite=bool(overwrite))
    if spec.synthesize is not None:
        return spec.synthesize(out, show_progress=show_progress, **args, **options)
    return write_dataset(spec, out, extra=options, show_progress=show_progress, **args)


__all__ = ["PHANTOM_KINDS", "PhantomKind", "synthesize", "render_brain", "render_chest"]
