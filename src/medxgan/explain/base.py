"""The one Explainer interface shared by every attribution method.

A method is one small class that overrides :meth:`Explainer.attribute` (the way each CAM variant in
pytorch-grad-cam overrides one method of a base class)::

    class SaliencyExplainer(Explainer):
        name = "saliency"

        def attribute(self, images):                 # images: n x C x H x W in [-1, 1], on self.device
            x = images.clone().requires_grad_(True)
            self.score(x).sum().backward()
            return x.grad.abs().sum(1, keepdim=True)  # n x 1 x H x W

The base class does the rest: input checks (shape, channels, range), moving the images to the
device, splitting into batches of ``batch_size``, concatenating the per-batch results, and checking
that the maps are finite and of the right shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from medxgan.runtime.errors import MedxganError

_RANGE_TOL = 1e-3


class NonFiniteMapsError(RuntimeError):
    """An explainer returned NaN/inf maps (the evaluation counts those images as invalid instead of stopping).
    A RuntimeError: it is the method's failure on that input, not a user mistake."""


@dataclass
class Explanation:
    """What :meth:`Explainer.explain` returns.

    Attributes:
        maps: N x 1 x H x W float tensor on the CPU; higher = more important for the positive class.
            Signed maps are allowed (e.g. LIG: negative = evidence against the positive class).
        extras: method-specific results. By convention a tensor whose first dimension is N (or a list
            of length N) holds one entry per image, e.g. ``"x_neg"`` (N x C x H x W counterfactuals),
            ``"prob_input"`` (N,), ``"frames"`` (N x F x C x H x W).
        method: the explainer's ``name``.
    """

    maps: Tensor
    extras: dict[str, Any] = field(default_factory=dict)
    method: str = ""

    def __len__(self) -> int:
        return int(self.maps.shape[0])


#: rows (perturbed copies) of one classifier pass for the baselines that classify many copies of each image (occlusion,
#: RISE) on a CPU. A pass of several hundred rows no longer fits the caches: measured on the 2-core CPU with the demo's
#: 64-px paper-cnn, occlusion cost 2.5-3.1x more per image at 512-1536 rows per pass than at 96-128
#: (benchmarks/performance/RESULTS.md, pass_size.py). Rows are independent, so the maps change by kernel rounding only.
CPU_ROWS_PER_PASS = 128


def rows_per_pass(device: torch.device, gpu_rows: int) -> int:
    """Rows of one classifier pass on ``device``: :data:`CPU_ROWS_PER_PASS` on a CPU, ``gpu_rows`` elsewhere (a GPU
    gains from large passes)."""
    return CPU_ROWS_PER_PASS if device.type == "cpu" else int(gpu_rows)


class Explainer:
    """Base class. Subclasses set ``name`` and override :meth:`attribute`.

    Args:
        classifier: a :class:`medxgan.classifiers.ClassifierAdapter` (anything with ``.logit(x)`` and
            ``.prob(x)`` returning (N,) tensors). May be None for methods that bring their own.
        batch_size: images per call of :meth:`attribute`.
        device: where :meth:`attribute` runs; default: the device of the classifier's parameters.
        output: the scalar that is explained, ``"logit"`` (positive-class logit, default) or
            ``"prob"`` (positive-class probability); see :meth:`score`.
    """

    name: str = "explainer"

    def __init__(
        self,
        classifier: Any = None,
        *,
        batch_size: int = 16,
        device: str | torch.device | None = None,
        output: str = "logit",
    ):
        if output not in ("logit", "prob"):
            raise MedxganError(f"output {output!r}: choose 'logit' or 'prob'")
        if batch_size < 1:
            raise MedxganError(f"batch_size {batch_size}: must be >= 1")
        self.classifier = classifier
        self.batch_size = int(batch_size)
        self.output = output
        self.device = torch.device(device) if device is not None else _module_device(classifier)

    # ---- to override ---------------------------------------------------------------------------
    def attribute(self, images: Tensor) -> Tensor | tuple[Tensor, dict[str, Any]] | Explanation:
        """Maps for one batch. ``images``: n x C x H x W in [-1, 1] on ``self.device``.

        Return the n x 1 x H x W maps, or ``(maps, extras)``, or an :class:`Explanation`.
        """
        raise NotImplementedError

    # ---- helpers for subclasses ----------------------------------------------------------------
    def score(self, images: Tensor) -> Tensor:
        """The explained scalar per image, (n,): the classifier's positive logit or probability."""
        return self.classifier.logit(images) if self.output == "logit" else self.classifier.prob(images)

    # ---- the driver ----------------------------------------------------------------------------
    def explain(self, images: Tensor) -> Explanation:
        """Explain a batch of images.

        Args:
            images: N x C x H x W (or C x H x W for one image) float tensor in [-1, 1], C = 1 or 3.
        Returns:
            :class:`Explanation` with ``maps`` N x 1 x H x W (float32, CPU) and the merged ``extras``.
        """
        images = check_images(images)
        n, _, h, w = images.shape
        maps: list[Tensor] = []
        extras: list[dict[str, Any]] = []
        for start in range(0, n, self.batch_size):
            batch = images[start : start + self.batch_size].to(self.device)
            out = self.attribute(batch)
            if isinstance(out, Explanation):
                m, ex = out.maps, out.extras
            elif isinstance(out, tuple):
                m, ex = out
            else:
                m, ex = out, {}
            m = self._check_map(m, batch.shape[0], h, w)
            maps.append(m)
            extras.append(ex or {})
        return Explanation(maps=torch.cat(maps, 0), extras=merge_extras(extras, [len(m) for m in maps]), method=self.name)

    __call__ = explain

    def _check_map(self, m: Tensor, n: int, h: int, w: int) -> Tensor:
        if not isinstance(m, Tensor):
            raise TypeError(f"{self.name}: attribute() must return a tensor, got {type(m).__name__}")
        if m.dim() == 3:
            m = m.unsqueeze(1)
        if tuple(m.shape) != (n, 1, h, w):
            raise RuntimeError(f"{self.name}: attribute() returned maps of shape {tuple(m.shape)}, expected {(n, 1, h, w)}")
        m = m.detach().float().cpu()
        if not torch.isfinite(m).all():
            bad = int((~torch.isfinite(m)).flatten(1).any(1).sum())
            raise NonFiniteMapsError(f"{self.name}: non-finite values (NaN/inf) in the maps of {bad} image(s)")
        return m

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, batch_size={self.batch_size}, device={self.device})"


def check_images(images: Tensor) -> Tensor:
    """Validate the image contract; returns a float32 N x C x H x W tensor (adds N for one image)."""
    if not isinstance(images, Tensor):
        raise MedxganError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise MedxganError(f"images must be N x C x H x W with C = 1 or 3, got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise MedxganError("images: empty batch")
    images = images.float()
    if not torch.isfinite(images).all():
        raise MedxganError("images contain NaN or inf")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1 - _RANGE_TOL or hi > 1 + _RANGE_TOL:
        raise MedxganError(f"images must be in [-1, 1] (got values in [{lo:.3g}, {hi:.3g}]); use medxgan.data to load files")
    return images


def merge_extras(parts: list[dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    """Concatenate per-batch extras: tensors whose first dim is the batch size along dim 0, per-image
    lists by extension; anything else is kept from the first batch (e.g. settings)."""
    if len(parts) == 1:
        return dict(parts[0])
    merged: dict[str, Any] = {}
    for key in parts[0]:
        values = [p.get(key) for p in parts]
        first = values[0]
        if all(isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == s for v, s in zip(values, sizes)):
            merged[key] = torch.cat([v.detach().cpu() for v in values], 0)
        elif all(isinstance(v, list) and len(v) == s for v, s in zip(values, sizes)):
            merged[key] = [x for v in values for x in v]
        else:
            merged[key] = first
    return merged


def _module_device(module: Any) -> torch.device:
    if isinstance(module, torch.nn.Module):
        for t in list(module.parameters()) + list(module.buffers()):
            return t.device
    return torch.device("cpu")
