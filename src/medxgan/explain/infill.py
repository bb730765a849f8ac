"""In-fills for the minimal mask: what the removed region of a scan is replaced with.

medXGAN's counterfactual is ``x_cf = x + M (F - x)``: the scan x with the minimal mask M
(:mod:`medxgan.explain.minimal_mask`) filled by an in-fill F. Today F is the generator's anatomy B(z1*), the
FIDO idea (Chang et al., ICLR 2019: a generative in-fill beats blur and mean in-fills). This module gives the
in-fills of the ablation that asks what the generator adds, each computed once per scan before the mask search:

===============  ===========================================================================================
``gan``          B(z1*), the generator's anatomy of the inverted scan (the default of runs trained before
                 2026-12-07; newer ``default``-preset runs choose among gan, blur, mean and a given learned in-fill
                 on their validation scans: ``infill="auto"``, :mod:`medxgan.explain.infill_selection`).
``blur``         a Gaussian blur of the scan, sigma = H / 16 px (4 px at 64 px: the evaluation's deletion-blur
                 sigma), Meaningful Perturbation's in-fill.
``mean``         the pixel-wise mean of the classifier's healthy (negative) training scans.
``inpaint``      classical inpainting of the generator's mask region (gM > 0.5, grown by one pixel) from the scan
                 around it (``skimage.restoration.inpaint_biharmonic``); slow: seconds per 64 px scan.
``learned``      a small U-Net trained on the classifier's negative training scans to fill random holes
                 (:mod:`medxgan.gan.inpainter`, ``medxgan train-inpainter``) fills the generator's mask region
                 (gM > 0.5 grown by H / 16 px) from the scan around it.
``learned-gan``  the same with the generator's anatomy B(z1*) as an extra input channel (an inpainter trained
                 with ``--gan``): the generator's structure, the context's texture.
``twin``         the phantom's lesion-free twin of the scan: the ceiling, for the evaluation's ``twin`` ablation only.
===============  ===========================================================================================

The region the context in-fills fill is the generator's mask gM > 0.5 grown (:func:`infill_region`): by one pixel for
``inpaint`` (biharmonic smoothing degrades fast with the hole's width), by H / 16 px (4 px at 64 px: one cell of the mask
search's default grid) for ``learned*``, whose network was trained on holes up to half the scan wide: gM's soft edge
often cuts through the lesion (brain phantoms: the 1-px region holds ~3/4 of a lesion on average), and a lesion
pixel outside the region cannot be removed. It is computed once before the mask search, not the search's current mask
M: the in-fill then sees the scan outside a region that holds the lesion (gM is where the generator puts the
pathology), F equals the scan outside it (so the search cannot change a pixel there), and the search, the ablation's
one fixed part, stays a search over one fixed in-fill as for every other in-fill (re-filling the current M at each of
its steps would change the search itself and cost one network pass per step). No in-fill but ``twin`` ever sees a
lesion-free twin; the learned ones were trained on healthy scans only.

Every in-fill gets the same inputs (:class:`InfillInputs`); only ``twin`` reads ``twins``, a lookup by the
scan's exact pixels that the caller builds from the phantom's ground truth (tests/test_infill.py passes a lookup
that fails when read to every other in-fill). The generator's mask gM stays the mask search's start for every
in-fill, so the ablation changes the in-fill alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medxgan.explain.perturbation import gaussian_smooth
from medxgan.gan.inpainter import Inpainter
from medxgan.runtime.errors import MedxganError

__all__ = ["INFILLS", "LEARNED_INFILLS", "InfillInputs", "make_infill", "blur_infill", "mean_infill", "inpaint_infill", "infill_region", "learned_grow",
           "learned_infill", "check_inpainter_for", "healthy_mean", "healthy_mean_from_data"]

INFILLS = ("gan", "blur", "mean", "inpaint", "learned", "learned-gan", "twin")
LEARNED_INFILLS = {"learned": "context", "learned-gan": "context+gan"}  # in-fill -> the inpainter variant it needs


@dataclass
class InfillInputs:
    """What an in-fill may use, for a batch of N scans.

    Attributes:
        images: N x C x H x W scans in [-1, 1].
        gan_fill: N x C x H x W, the generator's anatomy B(z1*).
        gan_mask: N x 1 x H x W, the generator's pathology mask gM (the mask search's start).
        healthy_mean: C x H x W mean of the classifier's negative training scans (``mean`` only).
        twins: scan digest (:func:`medxgan.explain.counterfactual.image_key`) -> C x H x W lesion-free twin (``twin``
            only); ``key``: the digest function.
        inpainter: a trained :class:`~medxgan.gan.inpainter.Inpainter` (``learned``: variant ``context``;
            ``learned-gan``: variant ``context+gan``).
    """

    images: Tensor
    gan_fill: Tensor
    gan_mask: Tensor
    healthy_mean: Tensor | None = None
    twins: Mapping[str, Tensor] | None = None
    key: Callable[[Tensor], str] | None = None
    inpainter: Inpainter | None = None


def blur_infill(images: Tensor, sigma: float | None = None) -> Tensor:
    """The scan blurred with a Gaussian of ``sigma`` px (default H / 16), replicate padding."""
    s = float(sigma) if sigma is not None else images.shape[-2] / 16.0
    return gaussian_smooth(images, s, padding_mode="replicate")


def mean_infill(images: Tensor, healthy_mean: Tensor | None) -> Tensor:
    """The mean healthy scan, once per scan."""
    if healthy_mean is None:
        raise MedxganError("infill 'mean': needs the mean of the classifier's healthy training scans", arg="infill")
    if tuple(healthy_mean.shape) != tuple(images.shape[1:]):
        raise MedxganError(f"infill 'mean': mean scan {tuple(healthy_mean.shape)} does not match the scans' {tuple(images.shape[1:])}", arg="infill")
    return healthy_mean.to(images.device, images.dtype).expand_as(images).clone()


def learned_grow(size: int) -> int:
    """How far the learned in-fills grow the generator's mask: H / 16 px (one cell of the mask search's default grid)."""
    return max(1, round(size / 16))


def infill_region(gan_mask: Tensor, threshold: float = 0.5, grow: int = 1) -> Tensor:
    """N x 1 x H x W region a context in-fill fills: gM > ``threshold`` grown by ``grow`` pixels (so that the mask's soft
    edge, and the lesion beyond it, is filled from outside)."""
    from scipy.ndimage import binary_dilation

    rows = [binary_dilation((m[0] > threshold).cpu().numpy(), iterations=grow) for m in gan_mask]
    return torch.from_numpy(np.stack(rows)[:, None]).to(gan_mask.device, torch.float32)


def inpaint_infill(images: Tensor, gan_mask: Tensor, threshold: float = 0.5) -> Tensor:
    """Biharmonic inpainting (scikit-image) of each scan's region (:func:`infill_region`); a scan with an empty region
    is returned as is."""
    from skimage.restoration import inpaint_biharmonic

    out = images.detach().clone()
    regions = infill_region(gan_mask, threshold)
    for i in range(images.shape[0]):
        region = regions[i, 0].cpu().numpy() > 0.5
        if not region.any():
            continue
        img = images[i].detach().cpu().double().numpy().transpose(1, 2, 0)  # H x W x C
        filled = inpaint_biharmonic(img, region, channel_axis=-1)
        out[i] = torch.from_numpy(np.clip(filled, -1.0, 1.0).transpose(2, 0, 1)).to(out.dtype)
    return out


def check_inpainter_for(name: str, inpainter: Inpainter | None, generator_fingerprint: str | None = None) -> Inpainter:
    """The inpainter in-fill ``name`` needs, checked: present, of the variant ``name`` uses, and for ``learned-gan``
    trained on this generator's anatomy (``generator_fingerprint``, when known): one-line errors."""
    if inpainter is None:
        raise MedxganError(f"infill {name!r}: needs inpainter RUN (a run of `medxgan train-inpainter`)", arg="inpainter")
    want = LEARNED_INFILLS[name]
    if inpainter.variant != want:
        how = "trained with --gan" if want == "context+gan" else "trained without --gan"
        raise MedxganError(f"inpainter {inpainter.path}: a {inpainter.variant!r} network; --infill {name} needs a {want!r} one "
                           f"({how})", arg="inpainter")
    if name == "learned-gan" and generator_fingerprint and inpainter.gan_fingerprint != generator_fingerprint:
        raise MedxganError(f"inpainter {inpainter.path}: trained on another generator's anatomy (fingerprint {inpainter.gan_fingerprint}, "
                           f"this GAN's {generator_fingerprint}); train one with --gan on this GAN run", arg="inpainter")
    return inpainter


def learned_infill(name: str, inputs: InfillInputs) -> Tensor:
    """The learned inpainter's fill of each scan's region (:func:`infill_region`) from the scan around it (and, for
    ``learned-gan``, the generator's anatomy B(z1*)); the scan itself outside the region."""
    inpainter = check_inpainter_for(name, inputs.inpainter)
    region = infill_region(inputs.gan_mask, grow=learned_grow(inputs.images.shape[-2]))
    return inpainter.fill(inputs.images.detach(), region, inputs.gan_fill.detach() if inpainter.uses_gan else None)


def _twin_infill(inputs: InfillInputs) -> Tensor:
    if inputs.twins is None or inputs.key is None:
        raise MedxganError("infill 'twin': needs the lesion-free twins (phantom data, evaluate only)", arg="infill")
    rows = []
    for x in inputs.images:
        t = inputs.twins.get(inputs.key(x))
        if t is None:
            raise MedxganError("infill 'twin': a scan has no lesion-free twin", arg="infill")
        rows.append(t.to(x.device, x.dtype))
    return torch.stack(rows)


def make_infill(name: str, inputs: InfillInputs) -> Tensor:
    """The in-fill ``name`` (one of :data:`INFILLS`) for the scans in ``inputs``: N x C x H x W in [-1, 1]."""
    if name == "gan":
        return inputs.gan_fill
    if name == "blur":
        return blur_infill(inputs.images)
    if name == "mean":
        return mean_infill(inputs.images, inputs.healthy_mean)
    if name == "inpaint":
        return inpaint_infill(inputs.images, inputs.gan_mask)
    if name in LEARNED_INFILLS:
        return learned_infill(name, inputs)
    if name == "twin":
        return _twin_infill(inputs)
    raise MedxganError(f"infill {name!r}: choose {', '.join(INFILLS)}", arg="infill")


def healthy_mean_from_data(root: str | Path, size: int, channels: int, mapping: dict[str, Any] | None = None) -> Tensor:
    """The mean of the negative scans of ``root``'s train split (the classifier's healthy training scans) at the GAN's
    size and channels; ``mapping``: the run's class options of ``load_dataset`` (``positive``/``negative``/``csv``), so
    that "negative" means what it meant in training. A missing folder is a one-line error."""
    from medxgan.data import load_dataset

    if not str(root) or not Path(root).is_dir():  # "" (a run that records no data) is not the working directory
        raise MedxganError(f"infill 'mean': the training data {str(root) or '(none recorded)'} is not there (the mean healthy scan "
                           "is computed from it)", arg="infill")
    x, y, _, _ = load_dataset(root, split="train", size=size, channels=channels, **(mapping or {})).tensors()
    return healthy_mean(x[y == 0])


HEALTHY_MEAN_FILE = "infill_mean.safetensors"  # the mean healthy scan kept in the GAN run, for where its data is not


def healthy_mean_for_run(run: str | Path | None, root: str | Path, size: int, channels: int,
                         mapping: dict[str, Any] | None = None) -> Tensor:
    """:func:`healthy_mean_from_data`, kept in the run folder ``run`` (when writable) so that a run moved where its data is
    not (trained on a GPU machine, explained on a laptop) still has its ``mean`` in-fill; recomputed whenever the data is
    there. Without the data and without a kept mean of the same data, size and channels: the one-line error."""
    from medxgan.runtime.state import load_weights, save_weights

    path = Path(run) / HEALTHY_MEAN_FILE if run else None
    meta = {"data": str(root), "size": str(size), "channels": str(channels)}
    if mapping:  # a kept mean of other classes is not this one (older files, made without a mapping, have no key)
        meta["mapping"] = json.dumps(mapping, sort_keys=True)
    if (str(root) and Path(root).is_dir()) or path is None or not path.is_file():
        mean = healthy_mean_from_data(root, size, channels, mapping)
        if path is not None:
            try:
                save_weights(path, {"mean": mean}, metadata=meta)
            except OSError:
                pass  # a read-only run folder: computed again next time
        return mean
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            kept = f.metadata() or {}
    except Exception:  # safetensors' own error types for a damaged file: never trusted
        kept = {}
    if kept != meta:
        return healthy_mean_from_data(root, size, channels, mapping)  # the one-line error: the kept mean is of other data or shape
    return load_weights(path)["mean"]


def healthy_mean(negatives: Tensor) -> Tensor:
    """C x H x W pixel-wise mean of the classifier's negative training scans (N x C x H x W)."""
    if negatives.dim() != 4 or negatives.shape[0] == 0:
        raise MedxganError("infill 'mean': no negative training scans to average", arg="infill")
    return negatives.float().mean(0)
