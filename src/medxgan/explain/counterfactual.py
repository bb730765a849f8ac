"""Counterfactual explanations from the generator's latent space.

For an image x with inverted codes (z1*, z2*) (see :func:`medxgan.gan.inversion.invert`):

* reconstruction ``x_pos = G(z1*, z2*)`` and negative realization ``x_neg = G(z1*, 0)``;
* difference map ``|x_pos - x_neg|`` and the signed difference ``x_pos - x_neg``;
* the residual counterfactual ``x_res``: the latent change applied to the scan itself, keeping every
  pixel the generator does not change (x_neg replaces the whole scan by the generator's rendering of
  it, reconstruction error included): ``clamp(x - (x_pos - x_neg), -1, 1)``, or for a masked generator
  the scan with the pathology mask filled by the anatomy, ``(1 - gM) x + gM B(z1*)``
  (:func:`medxgan.gan.inversion.counterfactual_images`);
* latent interpolation ``G(z1*, alpha z2*)`` for alpha from 0 to 1, the classifier's p(pos) per frame
  and the accumulated absolute change ``sum_i |x_{i+1} - x_i|``.

Channel reduction of the maps (:func:`reduce_channels`): one channel is kept as is; three channels
are combined with the ITU-R 601 luminance weights 0.2989 R + 0.5870 G + 0.1140 B (as the authors do;
for a gray scan stored as 3 equal channels this is the gray difference itself). For absolute maps the
weights apply to the per-channel absolute differences.

:class:`CounterfactualEngine` inverts each image once and caches the result (keyed by the image's
bytes), so that :class:`DifferenceExplainer` and :class:`~medxgan.explain.lig.LIGExplainer` built on
the same engine never invert the same image twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from medxgan.explain import minimal_mask as mm
from medxgan.explain.infill import INFILLS, LEARNED_INFILLS, InfillInputs, make_infill
from medxgan.explain.base import Explainer, check_images
from medxgan.gan.inversion import InversionConfig, counterfactual_images, invert
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.tensors import frozen

LUMA = (0.2989, 0.5870, 0.1140)


def reduce_channels(t: Tensor, how: str = "luminance") -> Tensor:
    """N x C x H x W -> N x 1 x H x W. ``how``: ``"luminance"`` (C = 3: ITU-R 601 weights; C = 1:
    identity), ``"mean"`` or ``"sum"``."""
    if how == "sum":
        return t.sum(1, keepdim=True)
    if how == "mean" or t.shape[1] == 1:
        return t.mean(1, keepdim=True)
    if how == "luminance":
        if t.shape[1] != 3:
            return t.mean(1, keepdim=True)
        w = torch.tensor(LUMA, dtype=t.dtype, device=t.device).view(1, 3, 1, 1)
        return (t * w).sum(1, keepdim=True)
    raise ValueError(f"unknown channel reduction {how!r}")


def difference_maps(x_pos: Tensor, x_neg: Tensor, reduce: str = "luminance") -> tuple[Tensor, Tensor]:
    """(|x_pos - x_neg|, x_pos - x_neg), each N x 1 x H x W (see :func:`reduce_channels`)."""
    d = x_pos - x_neg
    return reduce_channels(d.abs(), reduce), reduce_channels(d, reduce)


@torch.no_grad()
def interpolate(generator: nn.Module, z1: Tensor, z2: Tensor, frames: int = 11, chunk: int = 64) -> Tensor:
    """Frames ``G(z1, alpha z2)`` for alpha = 0, 1/(F-1), ..., 1: N x F x C x H x W.

    Frame 0 is the negative realization G(z1, 0), the last frame the reconstruction G(z1, z2).
    """
    if frames < 2:
        raise ValueError("frames must be >= 2")
    alphas = torch.linspace(0.0, 1.0, frames, device=z2.device)
    n = z1.shape[0]
    zz1 = z1.unsqueeze(1).expand(n, frames, z1.shape[1]).reshape(n * frames, -1)
    zz2 = (alphas.view(1, frames, 1) * z2.unsqueeze(1)).reshape(n * frames, -1)
    out = torch.cat([generator(zz1[i : i + chunk], zz2[i : i + chunk]) for i in range(0, n * frames, chunk)])
    return out.view(n, frames, *out.shape[1:])


def accumulated_change(frames: Tensor, reduce: str = "luminance") -> Tensor:
    """sum_i |x_{i+1} - x_i| over the frames (N x F x C x H x W) -> N x 1 x H x W."""
    steps = (frames[:, 1:] - frames[:, :-1]).abs().sum(1)
    return reduce_channels(steps, reduce)


@dataclass
class Counterfactuals:
    """Inversion + counterfactual for a batch (tensors on the CPU, first dim N)."""

    images: Tensor
    z1: Tensor
    z2: Tensor
    x_pos: Tensor
    x_neg: Tensor
    prob_input: Tensor
    prob_pos: Tensor
    prob_neg: Tensor
    x_res: Tensor
    prob_res: Tensor
    psnr: Tensor
    prob_gap: Tensor
    loss: Tensor
    steps_run: Tensor
    generators: list[nn.Module] = field(default_factory=list)  # per image (the shared G, or a tuned copy)
    masks: Tensor | None = None  # N x 1 x H x W minimal masks of the residual counterfactual, when refined
    fills: Tensor | None = None  # N x C x H x W in-fills of the minimal mask when not the generator's anatomy (explain/infill.py)
    # the classifier's final logit of the counterfactual the maps explain (x_res, or x_neg for counterfactual="generator"), N;
    # flipped = it crossed the decision level (logit < 0): if not, the classifier was not flipped within the (minimal) mask and
    # the map shows the generator's prior, not what the classifier needs (issue 31)
    logit_cf: Tensor | None = None

    @property
    def flipped(self) -> Tensor | None:
        """Per image (bool, N): the explained counterfactual crossed the classifier's decision level (logit < 0)."""
        return None if self.logit_cf is None else self.logit_cf < 0

    def __len__(self) -> int:
        return int(self.z1.shape[0])


class ResidualPath(nn.Module):
    """The latent path applied to one scan x: ``forward(z1, alpha z2*)`` is the residual counterfactual
    of x for the codes (z1, (1 - alpha) z2*) (:func:`medxgan.gan.inversion.counterfactual_images`), so
    alpha = 0 gives x_res and alpha = 1 gives x itself. It lets the interpolation and LIG, written for
    ``G(z1*, alpha z2*)``, run from the scan's own counterfactual to the scan."""

    def __init__(self, generator: nn.Module, x: Tensor, z2: Tensor):
        super().__init__()
        self.generator = generator
        self.register_buffer("x", x.detach().reshape(1, *x.shape[-3:]))
        self.register_buffer("z2_full", z2.detach().reshape(1, -1))

    def forward(self, z1: Tensor, w: Tensor) -> Tensor:
        n = z1.shape[0]
        return counterfactual_images(self.generator, z1, self.z2_full.expand(n, -1) - w, self.x.expand(n, -1, -1, -1))[2]


class MaskPath(nn.Module):
    """The path of a refined (minimal) mask M over one scan x: ``forward(z1, alpha z2*)`` is
    ``x + (1 - alpha) M (B(z1) - x)``, so alpha = 0 gives the minimal-mask counterfactual and alpha = 1 the
    scan. With z1 = z1* fixed this is the straight line between them: LIG along it is integrated
    gradients with the counterfactual as the baseline (:mod:`medxgan.explain.minimal_mask`). ``fill``: an in-fill
    other than B(z1) (:mod:`medxgan.explain.infill`), used in place of B."""

    def __init__(self, generator: nn.Module, x: Tensor, z2: Tensor, mask: Tensor, fill: Tensor | None = None):
        super().__init__()
        self.generator = generator
        self.register_buffer("x", x.detach().reshape(1, *x.shape[-3:]))
        self.register_buffer("z2_full", z2.detach().reshape(1, -1))
        self.register_buffer("mask", mask.detach().reshape(1, 1, *x.shape[-2:]))
        self.register_buffer("fill", None if fill is None else fill.detach().reshape(1, *x.shape[-3:]))

    def forward(self, z1: Tensor, w: Tensor) -> Tensor:
        n = z1.shape[0]
        alpha = (w * self.z2_full).sum(1) / self.z2_full.pow(2).sum().clamp(min=1e-12)
        base = self.generator(z1, torch.zeros_like(w), return_parts=True)[1] if self.fill is None else self.fill
        return self.x + (1 - alpha).view(n, 1, 1, 1) * self.mask * (base - self.x)


COUNTERFACTUAL_MODES = ("generator", "residual")
MINIMAL_MASK_TARGETS = ("match", "healthy")
MINIMAL_MASK_PREFIX = "minimal_mask_"  # the flat option names (CLI flags, GAN presets): minimal_mask_<field>


@dataclass(frozen=True)
class MinimalMaskConfig:
    """The minimal-mask refinement of the residual counterfactual (:func:`medxgan.explain.minimal_mask.refine_mask`;
    masked generators with ``counterfactual="residual"`` only). In flat option dicts (GAN presets, CLI) each
    field is written ``minimal_mask_<field>``.

    Attributes:
        steps: Adam steps per scan (0 = the generator's own mask).
        area, tv: weights of the mask's area and total variation.
        scale: optimise the mask on a grid this many times coarser than the image.
        floor: a logit or None: with ``target="healthy"`` the counterfactual need be no more negative than this
            (:meth:`medxgan.explain.model.MedXGANModel.from_run` sets it from the run's classifier reference).
        target: ``"match"`` (as negative as the generator's counterfactual) or ``"healthy"`` (see ``floor``).
        infill: what fills the mask (:mod:`medxgan.explain.infill`): ``"gan"`` (the scan's anatomy B(z1*) from the
            inversion, the default), ``"blur"``, ``"mean"`` (needs :attr:`CounterfactualEngine.infill_healthy_mean`),
            ``"inpaint"``, ``"learned"`` / ``"learned-gan"`` (a trained inpainter: ``inpainter``), ``"twin"`` (the ceiling;
            needs :attr:`CounterfactualEngine.infill_twins`, evaluate only), or ``"auto"``: chosen on the GAN run's validation
            scans when the run is loaded (:mod:`medxgan.explain.infill_selection`; an engine never runs with ``"auto"``).
        inpainter: the run directory of a trained inpainter (``medxgan train-inpainter``) for ``infill="learned*"``, or a
            candidate of ``infill="auto"``.
    """

    steps: int = 0
    area: float = mm.DEFAULT_W_AREA
    tv: float = mm.DEFAULT_W_TV
    scale: int = 1
    floor: float | None = None
    target: str = "match"
    infill: str = "gan"
    inpainter: str | None = None

    def __post_init__(self) -> None:
        _check_int(self.steps, "steps", 0)
        _check_int(self.scale, "scale", 1)
        for k in ("area", "tv"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise MedxganError(f"minimal_mask_{k} {v!r}: must be a finite number >= 0", arg=f"minimal_mask_{k}")
        if self.infill not in INFILLS and self.infill != "auto":
            raise MedxganError(f"minimal_mask_infill {self.infill!r}: choose {', '.join(INFILLS)} or auto", arg="minimal_mask_infill")
        if self.infill in LEARNED_INFILLS and not self.inpainter:
            raise MedxganError(f"minimal_mask_infill {self.infill!r}: needs inpainter RUN (a run of `medxgan train-inpainter`)",
                               arg="inpainter")
        if self.target not in MINIMAL_MASK_TARGETS:
            raise MedxganError(f"minimal_mask_target {self.target!r}: choose {' or '.join(MINIMAL_MASK_TARGETS)}", arg="minimal_mask_target")
        f = self.floor
        if f is not None and (not isinstance(f, (int, float)) or isinstance(f, bool) or not math.isfinite(f)):
            raise MedxganError(f"minimal_mask_floor {f!r}: must be a finite logit or None", arg="minimal_mask_floor")

    @property
    def effective_floor(self) -> float | None:
        """The logit floor of the target: ``floor`` with the ``"healthy"`` target, else None (match the generator's)."""
        return None if self.target != "healthy" or self.floor is None else float(self.floor)

    def flat(self, changed_only: bool = True) -> dict[str, Any]:
        """``{"minimal_mask_<field>": value}`` (by default only the fields that differ from the defaults)."""
        default = MinimalMaskConfig()
        return {MINIMAL_MASK_PREFIX + f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if not changed_only or getattr(self, f.name) != getattr(default, f.name)}


def _check_int(v: Any, name: str, low: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise MedxganError(f"minimal_mask_{name} {v!r}: must be an integer >= {low}", arg=f"minimal_mask_{name}")


#: the flat option names of :class:`MinimalMaskConfig` (``minimal_mask_steps``, ...)
MINIMAL_MASK_KEYS = tuple(MINIMAL_MASK_PREFIX + f.name for f in dataclasses.fields(MinimalMaskConfig))


def split_options(options: dict[str, Any] | None) -> tuple[InversionConfig, MinimalMaskConfig]:
    """A flat option dict (a GAN preset's ``inversion``, ``MedXGAN.load`` keywords, a stored record) ->
    (:class:`~medxgan.gan.inversion.InversionConfig`, :class:`MinimalMaskConfig`); an unknown key is a
    one-line MedxganError naming it."""
    options = dict(options or {})
    mask = {k[len(MINIMAL_MASK_PREFIX):]: options.pop(k) for k in list(options) if k in MINIMAL_MASK_KEYS}
    return InversionConfig.from_dict(options), MinimalMaskConfig(**mask)


def image_key(image: Tensor) -> str:
    """A digest of an image's exact pixels and shape (cache and lookup key)."""
    t = image.detach().float().cpu().contiguous()
    return hashlib.sha1(str(tuple(t.shape)).encode() + t.numpy().tobytes()).hexdigest()


class CounterfactualEngine:
    """Inverts images once (cached) and produces counterfactuals, interpolations and LIG inputs.

    ``inversion.counterfactual`` (default ``"generator"``) says which counterfactual the maps explain:
    ``"generator"`` -- the paper's x_neg = G(z1*, 0), path G(z1*, alpha z2*) from x_neg to x_pos;
    ``"residual"`` -- the scan's own x_res, path :class:`ResidualPath` from x_res to the scan x. Both
    counterfactuals are always computed.

    Args:
        generator: G(z1, z2) (put in eval mode here; the authors' demo inverted in train mode, a bug).
        classifier: the classifier adapter (``.logit``/``.prob``).
        inversion: the :class:`~medxgan.gan.inversion.InversionConfig`, or a flat option dict (which may also
            hold the ``minimal_mask_*`` options, see :func:`split_options`).
        minimal_mask: the :class:`MinimalMaskConfig` (masked generators with the residual counterfactual:
            refine the generator's mask per scan to the minimal one that keeps the counterfactual negative;
            the maps, frames and LIG then explain that counterfactual). Taken from a dict ``inversion`` when None.
        encoder: where restart 0 of the inversion starts (``invert(encoder=...)``), e.g. the run's encoder.
        discriminator: the GAN's discriminator, for ``inversion.w_real``.
        cache_size: inverted images kept (LRU). With pivotal tuning each entry holds a generator copy,
            so the cache is limited to 8 entries then.
        reduce: channel reduction of the difference maps (see :func:`reduce_channels`).
    """

    def __init__(self, generator: nn.Module, classifier: Any, *, inversion: InversionConfig | dict[str, Any] | None = None,
                 minimal_mask: MinimalMaskConfig | None = None, encoder: nn.Module | None = None, discriminator: nn.Module | None = None,
                 cache_size: int = 512, reduce: str = "luminance"):
        self.generator = generator.eval()
        self.classifier = classifier
        if not isinstance(inversion, InversionConfig):
            inversion, from_dict = split_options(inversion)
            minimal_mask = minimal_mask or from_dict
        self.inversion_config: InversionConfig = inversion
        self.minimal_mask: MinimalMaskConfig = minimal_mask or MinimalMaskConfig()
        if self.counterfactual not in COUNTERFACTUAL_MODES:
            raise MedxganError(f"counterfactual {self.counterfactual!r}: choose {' or '.join(COUNTERFACTUAL_MODES)}")
        self.encoder = encoder
        self.discriminator = discriminator
        self.reduce = reduce
        self.cache_size = min(cache_size, 8) if inversion.tune_generator else cache_size
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # what the in-fills other than "gan" need (explain/infill.py): the mean healthy training scan (C x H x W), and the
        # lesion-free twins by image_key (the "twin" ceiling of evaluate only); set by the caller
        self.infill_healthy_mean: Tensor | None = None
        self.infill_twins: dict[str, Tensor] | None = None
        self.infill_inpainter: Any = None  # the loaded inpainter of the "learned*" in-fills (gan/inpainter.py)
        self.inversions_run = 0  # images actually inverted (for tests / cost accounting)

    @property
    def counterfactual(self) -> str:
        return self.inversion_config.counterfactual

    @property
    def inversion(self) -> dict[str, Any]:
        """The settings as one flat record (the options that differ from the defaults, minimal mask included):
        what evaluations and explanations store and compare on resume."""
        return {**self.inversion_config.changes(), **self.minimal_mask.flat()}

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @staticmethod
    def _key(image: Tensor) -> str:
        return image_key(image)

    def clear_cache(self) -> None:
        self._cache.clear()

    def counterfactuals(self, images: Tensor) -> Counterfactuals:
        """Invert (or fetch from the cache) and build x_pos, x_neg and their probabilities."""
        images = check_images(images)
        keys = [self._key(im) for im in images]
        todo = [i for i, k in enumerate(keys) if k not in self._cache]
        todo_unique: dict[str, int] = {}
        for i in todo:
            todo_unique.setdefault(keys[i], i)
        if todo_unique:
            idx = list(todo_unique.values())
            self._compute([keys[i] for i in idx], images[idx])
        entries = []
        for k in keys:
            self._cache.move_to_end(k)
            entries.append(self._cache[k])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

        def stack(name: str) -> Tensor:
            return torch.stack([e[name] for e in entries])

        return Counterfactuals(
            images=images, z1=stack("z1"), z2=stack("z2"), x_pos=stack("x_pos"), x_neg=stack("x_neg"),
            prob_input=stack("prob_input"), prob_pos=stack("prob_pos"), prob_neg=stack("prob_neg"),
            x_res=stack("x_res"), prob_res=stack("prob_res"),
            psnr=stack("psnr"), prob_gap=stack("prob_gap"), loss=stack("loss"), steps_run=stack("steps_run"),
            generators=[e["generator"] for e in entries],
            masks=stack("mask") if all(e.get("mask") is not None for e in entries) else None,
            fills=stack("fill") if all(e.get("fill") is not None for e in entries) else None,
            logit_cf=stack("logit_cf"),
        )

    def _compute(self, keys: list[str], images: Tensor) -> None:
        dev = self.device
        res = invert(self.generator, self.classifier, images.to(dev), self.inversion_config, encoder=self.encoder, discriminator=self.discriminator)
        self.inversions_run += len(keys)
        gens = res.generators or [self.generator] * len(keys)
        with frozen(self.generator, self.classifier), torch.no_grad():
            z1, z2 = res.z1.to(dev), res.z2.to(dev)
            x = images.to(dev)
            if res.generators:  # per-image tuned generators
                parts = [counterfactual_images(g, z1[i : i + 1], z2[i : i + 1], x[i : i + 1]) for i, g in enumerate(gens)]
                _, x_neg, x_res = (torch.cat(t) for t in zip(*parts))
            else:
                _, x_neg, x_res = counterfactual_images(self.generator, z1, z2, x)
            masks, fill = self._minimal_masks(gens, z1, z2, x, x_neg)
            if masks is not None:
                x_res = x + masks * (fill - x)
            x_pos = res.reconstructions.to(dev)
            p_in = self.classifier.prob(x).float().cpu()
            p_pos = self.classifier.prob(x_pos).float().cpu()
            p_neg = self.classifier.prob(x_neg).float().cpu()
            p_res = self.classifier.prob(x_res).float().cpu()
            logit_cf = self.classifier.logit(x_res if self.counterfactual == "residual" else x_neg).float().cpu()
        x_neg, x_res = x_neg.cpu(), x_res.cpu()
        for i, k in enumerate(keys):
            self._cache[k] = dict(
                z1=res.z1[i], z2=res.z2[i], x_pos=res.reconstructions[i], x_neg=x_neg[i], prob_input=p_in[i],
                prob_pos=p_pos[i], prob_neg=p_neg[i], x_res=x_res[i], prob_res=p_res[i], psnr=res.psnr[i], prob_gap=res.prob_gap[i], loss=res.loss[i],
                steps_run=res.steps_run[i], generator=gens[i], mask=None if masks is None else masks[i].cpu(),
                fill=None if masks is None or self.minimal_mask.infill == "gan" else fill[i].cpu(), logit_cf=logit_cf[i],
            )

    @property
    def refines_mask(self) -> bool:
        """Whether the residual counterfactual uses the minimal mask (masked generators only)."""
        return self.counterfactual == "residual" and bool(getattr(self.generator, "masked", False)) and self.minimal_mask.steps > 0

    def _minimal_masks(self, gens: list[nn.Module], z1: Tensor, z2: Tensor, x: Tensor, base: Tensor) -> tuple[Tensor | None, Tensor]:
        """Per image, the minimal mask (N x 1 x H x W) started from each generator's own mask (or None), and the in-fill it
        was searched with (``base`` = B(z1*) for the "gan" in-fill)."""
        if not self.refines_mask:
            return None, base
        with torch.no_grad():
            gm = torch.cat([g(z1[i : i + 1], z2[i : i + 1], return_parts=True)[2] for i, g in enumerate(gens)]) if len(set(map(id, gens))) > 1 \
                else gens[0](z1, z2, return_parts=True)[2]
        m = self.minimal_mask
        if m.infill == "auto":
            raise MedxganError("minimal_mask_infill 'auto' is chosen when a GAN run is loaded (MedXGAN.load / MedXGANModel.from_run); "
                               "an engine built by hand needs gan, blur, mean, inpaint or learned*", arg="minimal_mask_infill")
        fill = make_infill(m.infill, InfillInputs(images=x, gan_fill=base, gan_mask=gm, healthy_mean=self.infill_healthy_mean,
                                                  twins=self.infill_twins if m.infill == "twin" else None, key=image_key,
                                                  inpainter=self.infill_inpainter))
        masks = mm.refine_mask(self.classifier, x, fill, gm, steps=m.steps, w_area=float(m.area), w_tv=float(m.tv), scale=m.scale,
                               floor=m.effective_floor)
        return masks, fill

    @property
    def mask_floor(self) -> float | None:
        """The logit floor of the minimal mask's target (:attr:`MinimalMaskConfig.effective_floor`)."""
        return self.minimal_mask.effective_floor

    def refine_masks(self, cf: Counterfactuals) -> Tensor:
        """The minimal masks of ``cf``'s images recomputed under the classifier's *current* weights, from the
        same inversion (the sanity check re-refines them under a randomised classifier). N x 1 x H x W."""
        if not self.refines_mask:
            raise MedxganError("refine_masks: this engine does not use the minimal mask")
        dev = self.device
        gens = cf.generators or [self.generator] * len(cf)
        masks = self._minimal_masks(gens, cf.z1.to(dev), cf.z2.to(dev), cf.images.to(dev), cf.x_neg.to(dev))[0]
        assert masks is not None
        return masks

    def endpoints(self, cf: Counterfactuals) -> tuple[Tensor, Tensor]:
        """(positive end, counterfactual) that the maps compare: (x_pos, x_neg) or (x, x_res)."""
        return (cf.images.cpu(), cf.x_res) if self.counterfactual == "residual" else (cf.x_pos, cf.x_neg)

    def path_generators(self, cf: Counterfactuals) -> list[nn.Module]:
        """Per image, the module whose ``(z1*, alpha z2*)`` frames form the explained path."""
        if self.counterfactual != "residual":
            return list(cf.generators) if cf.generators else [self.generator] * len(cf)
        gens = cf.generators or [self.generator] * len(cf)
        if cf.masks is not None:
            # the in-fill along the path is fixed (z1 = z1* at every point): the scan's anatomy B(z1*) is cf.x_neg (a masked
            # generator's x_neg), computed once with the batch, so LIG's 33+ points and the frames need no generator pass
            # (issue 32; the same B up to the last bits of a batch-size-dependent convolution)
            fills = cf.fills if cf.fills is not None else cf.x_neg
            return [MaskPath(g, cf.images[i].to(self.device), cf.z2[i].to(self.device), cf.masks[i].to(self.device),
                             fills[i].to(self.device)) for i, g in enumerate(gens)]
        return [ResidualPath(g, cf.images[i].to(self.device), cf.z2[i].to(self.device)) for i, g in enumerate(gens)]

    def interpolation(self, cf: Counterfactuals, frames: int = 11) -> tuple[Tensor, Tensor]:
        """(frames N x F x C x H x W, p(pos) per frame N x F) along the explained path: G(z1*, alpha z2*),
        or from x_res to x for the residual counterfactual."""
        dev = self.device
        outs, probs = [], []
        with frozen(self.generator, self.classifier), torch.no_grad():
            for idx, g in self._groups(cf, self.path_generators(cf)):
                fr = interpolate(g, cf.z1[idx].to(dev), cf.z2[idx].to(dev), frames)
                p = self.classifier.prob(fr.flatten(0, 1)).float().view(len(idx), frames)
                outs.append((idx, fr.cpu()))
                probs.append((idx, p.cpu()))
        return _unscatter(outs, len(cf)), _unscatter(probs, len(cf))

    @staticmethod
    def _groups(cf: Counterfactuals, gens: list[nn.Module]) -> list[tuple[list[int], nn.Module]]:
        """Indices of the images that share one path generator (all of them unless tuned or residual)."""
        groups: dict[int, tuple[list[int], nn.Module]] = {}
        for i, g in enumerate(gens):
            groups.setdefault(id(g), ([], g))[0].append(i)
        return list(groups.values())


def _unscatter(parts: list[tuple[list[int], Tensor]], n: int) -> Tensor:
    first = parts[0][1]
    out = first.new_zeros((n, *first.shape[1:]))
    for idx, t in parts:
        out[idx] = t
    return out


class DifferenceExplainer(Explainer):
    """medXGAN's difference map |G(z1*, z2*) - G(z1*, 0)| (channel-reduced, see module docstring), or
    with the residual counterfactual |x - x_res| (the change it makes to the scan).

    Extras: ``x_pos``, ``x_neg``, ``x_res`` (residual counterfactual) (N x C x H x W), ``prob_res``, ``logit_cf`` / ``flipped`` (N,: the
    explained counterfactual's logit, and 1.0 when it is below 0), ``signed_difference`` (N x 1 x H x W), ``prob_input``,
    ``prob_pos``, ``prob_neg``, ``psnr``, ``prob_gap`` (N,), and with ``frames`` > 0 also ``frames``
    (N x F x C x H x W), ``frame_probs`` (N x F) and ``accumulated_change`` (N x 1 x H x W).
    """

    name = "medxgan-difference"

    def __init__(self, engine: CounterfactualEngine, *, frames: int = 0, batch_size: int = 16):
        super().__init__(engine.classifier, batch_size=batch_size, device=engine.device)
        self.engine = engine
        self.frames = frames

    def attribute(self, images: Tensor) -> tuple[Tensor, dict[str, Any]]:
        return self._map_and_extras(self.engine.counterfactuals(images))

    def _map_and_extras(self, cf: Counterfactuals) -> tuple[Tensor, dict[str, Any]]:
        diff, signed = difference_maps(*self.engine.endpoints(cf), self.engine.reduce)
        extras: dict[str, Any] = dict(
            x_pos=cf.x_pos, x_neg=cf.x_neg, signed_difference=signed, prob_input=cf.prob_input, prob_pos=cf.prob_pos,
            prob_neg=cf.prob_neg, psnr=cf.psnr, prob_gap=cf.prob_gap, x_res=cf.x_res, prob_res=cf.prob_res,
        )
        if cf.logit_cf is not None:  # was the classifier flipped within the mask (else the map shows the generator's prior)
            extras.update(logit_cf=cf.logit_cf, flipped=cf.flipped.float())
        if self.frames:
            frames, probs = self.engine.interpolation(cf, self.frames)
            extras.update(frames=frames, frame_probs=probs, accumulated_change=accumulated_change(frames, self.engine.reduce))
        return diff, extras


class MinimalMaskExplainer(DifferenceExplainer):
    """The minimal mask itself as the map: M in [0, 1], the region of the scan the residual counterfactual replaces by the
    in-fill, found per scan by the classifier-driven search (:mod:`medxgan.explain.minimal_mask`): where the classifier's
    decision sits, at the search's grid resolution. The difference map |x - x_res| = M |x - fill| multiplies it by how
    much the in-fill changes each pixel, so where the in-fill differs from the scan for reasons other than the lesion
    (a blurred edge, the generator's anatomy error) that map ranks those pixels up; the mask does not (measured on every
    family in benchmarks/counterfactual/RESULTS.md). Same counterfactual and extras as :class:`DifferenceExplainer`;
    no interpolation frames (the difference method has them). Needs the minimal mask (``engine.refines_mask``)."""

    name = "medxgan-mask"

    def __init__(self, engine: CounterfactualEngine, *, batch_size: int = 16):
        if not engine.refines_mask:
            raise MedxganError("medxgan-mask: the map is the minimal mask, and this GAN's explanations use none (it needs the "
                               "residual counterfactual of a masked generator with minimal_mask_steps > 0)", arg="methods")
        super().__init__(engine, frames=0, batch_size=batch_size)

    def _map_and_extras(self, cf: Counterfactuals) -> tuple[Tensor, dict[str, Any]]:
        diff, extras = super()._map_and_extras(cf)
        assert cf.masks is not None  # refines_mask, checked at construction
        return cf.masks.to(diff.device, diff.dtype), extras
