"""The Dataset API: ``load_dataset(root, ...) -> ImageDataset`` (a torch Dataset over an index built once).

``ds[i]`` -> ``{"image": C x H x W float32 in [-1, 1], "label": 0/1, "mask": 1 x H x W float32 0/1,
"has_mask": bool, "path": str}``. ``ds.tensors()`` -> ``(images N x C x H x W, labels long N,
masks N x 1 x H x W, has_mask bool N)``, loaded once and cached.

Corrupt files: the index build reads each header (and verifies Pillow streams), so garbage and most
truncated files are found up front; anything only found when decoding raises MedxganError naming the
file from ``ds[i]`` / ``ds.tensors()``. With ``skip_bad=True`` such files are left out instead and
listed in ``ds.skipped`` as ``(path, reason)``; ``tensors()`` then also drops them from the index so
``len(ds)``, ``ds.labels`` and ``ds.paths`` stay aligned with the tensors.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medxgan.data.imageio import check_channels, image_to_tensor, normalize_size, read_image, read_mask, resize_mask
from medxgan.data.layout import PROGRESS_MIN, DatasetIndex, Sample, build_index
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.progress import progress


def boxes_to_mask(boxes, height: int, width: int) -> np.ndarray:
    """Filled boxes ``(x, y, w, h)`` (pixel coordinates, pixel ``j`` covers ``[j, j+1)``) -> bool ``H x W``.

    A pixel is inside when its centre is: columns ``ceil(x - 0.5) .. ceil(x + w - 0.5) - 1`` (for integer
    boxes exactly ``x .. x + w - 1``). Boxes are clipped to the image.
    """
    m = np.zeros((height, width), dtype=bool)
    for x, y, w, h in boxes:
        c0, c1 = max(0, int(np.ceil(x - 0.5))), min(width, int(np.ceil(x + w - 0.5)))
        r0, r1 = max(0, int(np.ceil(y - 0.5))), min(height, int(np.ceil(y + h - 0.5)))
        if c1 > c0 and r1 > r0:
            m[r0:r1, c0:c1] = True
    return m


class ImageDataset(Dataset):
    """Images of one dataset root (optionally one split) as model tensors; see module docstring.

    Attributes: ``root``, ``samples`` (list of :class:`~medxgan.data.layout.Sample`), ``positive`` /
    ``negative`` (class names), ``channels`` (1 or 3), ``skipped`` (list of ``(path, reason)``),
    ``split``, ``source`` ("folders" or "csv").
    """

    def __init__(self, index: DatasetIndex, size=None, channels: int | None = None, skip_bad: bool = False):
        self.root = index.root
        self.samples: list[Sample] = list(index.samples)
        self.positive, self.negative = list(index.positive), list(index.negative)
        self.skipped: list[tuple[str, str]] = list(index.skipped)
        self.split, self.source, self.csv_path = index.split, index.source, index.csv_path
        self.skip_bad = skip_bad
        self._size = size
        self._hw = normalize_size(size)
        channels = check_channels(channels)
        if channels is None:  # majority of the header channel counts, ties -> the first image's
            counts = Counter(s.info.channels for s in self.samples)
            first = self.samples[0].info.channels if self.samples else 1
            channels = max(counts, key=lambda c: (counts[c], c == first)) if counts else first
        self.channels: int = channels
        self._cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    # -- index views -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        return [s.label for s in self.samples]

    @property
    def paths(self) -> list[str]:
        return [str(s.path) for s in self.samples]

    @property
    def size(self):
        """The requested size (int or (h, w)); with ``size=None`` the first image's (int when square)."""
        if self._size is not None or not self.samples:
            return self._size
        h, w = self.samples[0].info.height, self.samples[0].info.width
        return h if h == w else (h, w)

    @property
    def has_masks(self) -> bool:
        return any(s.has_mask for s in self.samples)

    @property
    def has_twins(self) -> bool:
        """Whether any sample has a lesion-free twin (phantom data sets; users' own data never do)."""
        return any(s.twin_path is not None for s in self.samples)

    def twins(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(twins N x C x H x W in [-1, 1], has_twin bool N)`` aligned with :meth:`tensors` (call that
        first when ``skip_bad`` may drop files); rows without a twin are zeros. A twin must have its
        image's size (MedxganError naming both files otherwise)."""
        out, has = [], []
        for s in self.samples:
            if s.twin_path is None:
                out.append(None)
                has.append(False)
                continue
            a, t = read_image(s.path), read_image(s.twin_path)
            if a.shape[:2] != t.shape[:2]:
                raise MedxganError(f"{s.twin_path}: twin size {t.shape[0]}x{t.shape[1]} (HxW) differs from image {s.path} "
                                   f"size {a.shape[0]}x{a.shape[1]}")
            out.append(image_to_tensor(t, size=self._hw or a.shape[:2], channels=self.channels))
            has.append(True)
        ref = next((t for t in out if t is not None), None)
        if ref is None:
            ref = torch.zeros(self.channels, *(self._hw or (1, 1)))
        stacked = torch.stack([t if t is not None else torch.zeros_like(ref) for t in out]) if out else torch.zeros(0, *ref.shape)
        return stacked, torch.tensor(has, dtype=torch.bool)

    def __repr__(self) -> str:
        n1 = sum(self.labels)
        return (f"ImageDataset({str(self.root)!r}, split={self.split!r}, n={len(self)} ({n1} positive), "
                f"size={self.size!r}, channels={self.channels}, skipped={len(self.skipped)})")

    # -- loading -----------------------------------------------------------------------------
    def _load(self, s: Sample) -> dict:
        a = read_image(s.path)
        h0, w0 = a.shape[:2]
        hw = self._hw or (h0, w0)
        image = image_to_tensor(a, size=hw, channels=self.channels)
        m = np.zeros((h0, w0), dtype=bool)
        if s.mask_path is not None:
            mm = read_mask(s.mask_path)
            if mm.shape != (h0, w0):
                raise MedxganError(
                    f"{s.mask_path}: mask size {mm.shape[0]}x{mm.shape[1]} (HxW) differs from image {s.path} size {h0}x{w0}"
                )
            m |= mm
        if s.boxes:
            m |= boxes_to_mask(s.boxes, h0, w0)
        mask = torch.from_numpy(np.ascontiguousarray(resize_mask(m, hw), dtype=np.float32)).unsqueeze(0)
        return {"image": image, "label": int(s.label), "mask": mask, "has_mask": bool(s.has_mask), "path": str(s.path)}

    def __getitem__(self, i: int) -> dict:
        if self._cache is not None:
            images, labels, masks, has = self._cache
            return {"image": images[i], "label": int(labels[i]), "mask": masks[i], "has_mask": bool(has[i]),
                    "path": str(self.samples[i].path)}
        return self._load(self.samples[i])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """All samples stacked: ``(images N x C x H x W float32 [-1,1], labels long N, masks N x 1 x H x W, has_mask bool N)``."""
        if self._cache is not None:
            return self._cache
        n = len(self.samples)
        it = progress(self.samples, total=n, desc=f"load {self.root.name}") if n > PROGRESS_MIN else self.samples
        kept: list[Sample] = []
        items: list[dict] = []
        n_skipped_before = len(self.skipped)
        for s in it:
            try:
                item = self._load(s)
                if items and item["image"].shape != items[0]["image"].shape:
                    shp, ref = tuple(item["image"].shape[1:]), tuple(items[0]["image"].shape[1:])
                    raise MedxganError(
                        f"{s.path}: image size {shp[0]}x{shp[1]} differs from {items[0]['path']} ({ref[0]}x{ref[1]}); "
                        "pass size= (--size) to resize all images to one size"
                    )
            except MedxganError as e:
                if not self.skip_bad:
                    raise
                self.skipped.append((str(s.path), str(e)))
                continue
            kept.append(s)
            items.append(item)
        if not items:
            raise MedxganError(f"{self.root}: no readable images (skipped {len(self.skipped)})")
        if len(self.skipped) > n_skipped_before:
            report_skipped(self.skipped[n_skipped_before:], str(self.root))
        self.samples = kept
        self._cache = (
            torch.stack([d["image"] for d in items]),
            torch.tensor([d["label"] for d in items], dtype=torch.long),
            torch.stack([d["mask"] for d in items]),
            torch.tensor([d["has_mask"] for d in items], dtype=torch.bool),
        )
        return self._cache


def load_dataset(root, split=None, size=None, channels=None, positive=None, negative=None, csv=None,
                 skip_bad: bool = False) -> ImageDataset:
    """Index ``root`` (class folders or a CSV, see :mod:`medxgan.data.layout`) and return an :class:`ImageDataset`.

    Args:
        root: dataset root folder.
        split: None (everything), "train", "val" or "test" (split folders, a CSV split column, or a
            deterministic 70/15/15 hash of the relative path for flat layouts).
        size: None (keep; all images must then share one size for ``tensors()``), int (square) or (h, w).
        channels: None (majority of the images), 1 or 3.
        positive / negative: class names (list or comma-separated string, ``"*"`` = every other class).
        csv: ``path,label[,split][,x,y,w,h]`` file (relative to the CWD or to ``root``); defines the index.
        skip_bad: leave unreadable files out (listed in ``ds.skipped``) instead of raising.
    """
    check_channels(channels)
    hw = normalize_size(size)
    index = build_index(root, split=split, positive=positive, negative=negative, csv=csv, skip_bad=skip_bad)
    if hw is not None and index.samples:  # every image (and its masks) held as float32 at this size: refuse before decoding
        from medxgan.runtime.checks import check_image_memory

        side = max(hw)
        check_image_memory("size", side, arrays=3 * len(index.samples), channels=channels or 1,
                           what=f"to hold the {len(index.samples)} image(s) of {root} at {side} px")
    ds = ImageDataset(index, size=size, channels=channels, skip_bad=skip_bad)
    report_skipped(ds.skipped, f"{root}{'/' + split if split else ''}")
    _report_missing_masks(ds, root)
    return ds


def report_skipped(skipped: list[tuple[str, str]], where: str) -> None:
    """``skip_bad``: say how many files were left out (one line, the first one named)."""
    if skipped:
        import warnings

        path, reason = skipped[0]
        warnings.warn(f"{where}: skipped {len(skipped)} unreadable file(s) (first: {reason if path in reason else f'{path}: {reason}'})",
                      stacklevel=3)


def _report_missing_masks(ds: "ImageDataset", root: Any) -> None:
    """A data set with a masks/ tree whose positives lack a mask file: say how many (they have no ground truth)."""
    from pathlib import Path

    if not (Path(root) / "masks").is_dir():
        return
    missing = [s.path for s in ds.samples if s.label == 1 and not s.has_mask]
    if missing:
        import warnings

        warnings.warn(f"{Path(root) / 'masks'}: {len(missing)} positive image(s) have no mask file (first: {missing[0]}); "
                      "they count as without ground truth", stacklevel=3)
