"""Which images the benchmark explains: the classifier's slices (TP/FN/FP/TN at 0.5), the chosen
subset in a seeded order (a larger ``n`` later extends the same selection), stable image ids."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medxgan.evaluate.shortcut import has_markers, load_marker_masks
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.runs import hash_tensor

SUBSETS = ("pred-pos", "tp", "pos", "all")
_KEEP = {"pred-pos": ("TP", "FP"), "tp": ("TP",), "pos": ("TP", "FN"), "all": ("TP", "FN", "FP", "TN")}


def image_id_for(rel: str) -> str:
    """Stable file-system-safe id of an image from its path relative to the data root."""
    stem = str(Path(rel).with_suffix("")).replace("\\", "/").replace("/", "__")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("_") or "image"


@dataclass
class Selection:
    """The data set's tensors and what the classifier made of them; ``selected``: indices to explain."""

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    has_mask: torch.Tensor
    rels: list[str]
    ids: list[str]
    probs: torch.Tensor
    slice_of: list[str]
    counts: dict[str, int]
    selected: list[int]
    markers: list[np.ndarray] | None
    twins: torch.Tensor | None = None  # lesion-free twins (phantoms), N x C x H x W; None without any
    has_twin: torch.Tensor | None = None


def data_fingerprint(sel: Selection) -> str:
    """A short content hash of the evaluated split: image ids, pixels, labels, masks and twins.

    ``run.json`` identifies the data by this instead of its path, so an evaluation resumes after the data (and the
    evaluation folder) moved, and refuses when other scans now sit at the same path (rows of the old scans would
    otherwise be mixed with new ones)."""
    h = hashlib.sha256()
    h.update("\n".join(sel.ids).encode())
    for t in (sel.images, sel.labels, sel.masks, sel.has_mask, sel.twins, sel.has_twin):
        if t is None:
            h.update(b"none")
        else:
            hash_tensor(h, t)
    return h.hexdigest()[:16]


@torch.no_grad()
def _probs(clf: Any, images: torch.Tensor, device: torch.device, batch: int = 128) -> torch.Tensor:
    return torch.cat([clf.prob(images[i : i + batch].to(device)).float().cpu() for i in range(0, len(images), batch)])


def _unique_ids(rels: list[str]) -> list[str]:
    ids = [image_id_for(r) for r in rels]
    if len(set(ids)) != len(ids):  # e.g. a.png and a.jpg side by side
        seen: dict[str, int] = {}
        for i, x in enumerate(ids):
            seen[x] = seen.get(x, 0) + 1
            if seen[x] > 1:
                ids[i] = f"{x}_{i}"
    return ids


def select_images(ds: Any, clf: Any, device: torch.device, data_root: Path, *, split: str | None, subset: str, n: int | None,
                  seed: int) -> Selection:
    """Score every image of ``ds``, slice at 0.5, keep ``subset`` in a seeded random order, first ``n``."""
    if len(ds) == 0:
        raise MedxganError(f"{data_root}: no images in split {split!r}")
    images, labels, masks, has_mask = ds.tensors()
    rels = [s.rel for s in ds.samples]
    probs = _probs(clf, images, device)
    bad = int((~torch.isfinite(probs)).sum())
    if bad:  # every metric would be computed from NaN scores
        raise MedxganError(f"classifier {getattr(clf, 'name', 'classifier')}: {bad} of {len(probs)} outputs are not finite (NaN/inf) "
                           f"on {data_root}; a classifier must output finite scores", arg="classifier")
    pred = probs >= 0.5
    slice_of = ["TP" if (l and p) else "FN" if l else "FP" if p else "TN" for l, p in zip(labels.bool().tolist(), pred.tolist())]
    counts = {k: slice_of.count(k) for k in ("TP", "FN", "FP", "TN")}
    cand = [i for i, s in enumerate(slice_of) if s in _KEEP[subset]]
    order = np.random.default_rng(seed).permutation(len(cand)) if cand else np.zeros(0, dtype=int)
    selected = [cand[j] for j in order][: n if n is not None else None]
    if not selected:
        raise MedxganError(f"{data_root}: no images in subset {subset!r} (slices: {counts}); try --subset all")
    markers = load_marker_masks(data_root, rels, tuple(images.shape[-2:])) if has_markers(data_root) else None
    twins, has_twin = ds.twins() if getattr(ds, "has_twins", False) else (None, None)
    return Selection(images, labels, masks, has_mask, rels, _unique_ids(rels), probs, slice_of, counts, selected, markers,
                     twins, has_twin)
