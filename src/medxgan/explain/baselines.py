"""Baseline attribution methods, each a thin Captum call behind the one :class:`Explainer` interface.

What is explained (the same for every method here): the classifier's **positive-class logit**
``adapter.logit(x)`` (shape (N,)), passed to Captum as ``forward_func`` with ``target=None``. (With
``output="prob"`` the positive probability is explained instead; the benchmark uses the logit.)
Gradients flow through the adapter's preprocessing (resize / channel conversion / normalisation), so
every map is in the *input* image's pixel grid.

Channels: Captum returns N x C x H x W attributions; they are reduced by **summation** over channels
to N x 1 x H x W (so for IG the completeness property still holds for the summed map). Maps keep
their sign (``abs=False``); scoring code takes |A| (see :mod:`medxgan.evaluate.localisation`).

Methods (registry names in :data:`EXPLAINERS`; medXGAN methods are built by :func:`build_explainers`):

===============  ==========================================================================================
``saliency``     ``captum.attr.Saliency``, ``abs=False``: the plain input gradient d logit / d x.
``gradcam``      ``captum.attr.LayerGradCam`` on the last block's output (``find_gradcam_layer``; ``layer=`` a name), ``relu_attributions=True``,
                 upsampled to the input size with ``LayerAttribution.interpolate(..., "bilinear")``.
``ig-black``     ``captum.attr.IntegratedGradients``, baseline -1 (black in [-1, 1] units), 50 steps (Gauss-Legendre).
``ig-grey``      the same with baseline 0 (mid-grey).
``smoothgrad``   ``NoiseTunnel(Saliency)``, ``nt_type="smoothgrad"``, 25 samples, ``stdevs=0.1`` in the
                 [-1, 1] input units (5 % of the value range of 2); the noise is drawn from a fixed seed per
                 call so the same input gives the same map.
``occlusion``    ``captum.attr.Occlusion``, a square window of 8 px with stride 4 at 64 px (scaled with the image
                 size: ``round(8 H / 64)`` and ``round(4 H / 64)``, at least 1), spanning all channels, baseline 0
                 (mid-grey); attribution = logit(x) - logit(x with the window greyed), averaged over windows.
===============  ==========================================================================================

A new method is one small class::

    class InputXGradient(CaptumExplainer):
        name = "input-x-gradient"
        def attribute(self, images):
            return reduce_sum(captum.attr.InputXGradient(self.score).attribute(self.input(images)))
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from medxgan.classifiers.architectures import find_gradcam_layer, get_layer, is_scripted
from medxgan.explain.base import Explainer, Explanation, rows_per_pass
from medxgan.explain.counterfactual import CounterfactualEngine, DifferenceExplainer, MinimalMaskExplainer
from medxgan.explain.lig import LIGExplainer
from medxgan.explain.model import as_medxgan
from medxgan.explain.perturbation import PERTURBATION_METHODS
from medxgan.runtime.errors import MedxganError

__all__ = [
    "CaptumExplainer",
    "SaliencyExplainer",
    "GradCAMExplainer",
    "gradcam_unavailable",
    "IntegratedGradientsExplainer",
    "SmoothGradExplainer",
    "OcclusionExplainer",
    "EXPLAINERS",
    "BASELINE_METHODS",
    "MEDXGAN_METHODS",
    "build_explainers",
    "reduce_sum",
]


def reduce_sum(attr: Tensor) -> Tensor:
    """N x C x H x W -> N x 1 x H x W by summation over channels."""
    return attr.sum(1, keepdim=True)


class CaptumExplainer(Explainer):
    """Base of the Captum-backed baselines: ``self.score`` (positive logit, (n,)) is the forward function."""

    def input(self, images: Tensor) -> Tensor:
        """A leaf copy of the batch that requires grad (Captum needs a differentiable input)."""
        return images.detach().clone().requires_grad_(True)


class SaliencyExplainer(CaptumExplainer):
    """Plain input gradient (Simonyan et al. 2014), signed."""

    name = "saliency"

    def attribute(self, images: Tensor) -> Tensor:
        from captum.attr import Saliency

        return reduce_sum(Saliency(self.score).attribute(self.input(images), abs=False))


class GradCAMExplainer(CaptumExplainer):
    """Grad-CAM (Selvaraju et al. 2017) on a convolutional layer, ReLU'd and upsampled to the input size.

    Args:
        layer: the target layer: a module, or its name in ``classifier.model.named_modules()`` (e.g.
            ``"layer3"``, ``"features.norm5"``); default (None): found automatically on the first batch
            by :func:`~medxgan.classifiers.architectures.find_gradcam_layer` (the model's declared
            ``gradcam_layer``, else the last block's output before global pooling).

    ``layer_name`` / ``layer_choice`` say which layer was used and how it was chosen (after
    :meth:`resolve_layer` or the first :meth:`attribute`).
    """

    name = "gradcam"

    def __init__(self, classifier: Any, *, layer: torch.nn.Module | str | None = None, **kw: Any):
        super().__init__(classifier, **kw)
        self.model = getattr(classifier, "model", None)
        if self.model is None:
            raise MedxganError("gradcam: the classifier has no .model to find a convolutional layer in")
        self.layer: torch.nn.Module | None = None
        self.layer_name: str | None = None
        self.layer_choice: str | None = None
        if isinstance(layer, str):
            self.layer, self.layer_name, self.layer_choice = get_layer(self.model, layer), layer, "given"
        elif isinstance(layer, torch.nn.Module):
            self.layer, self.layer_choice = layer, "given"
            self.layer_name = next((n for n, m in self.model.named_modules() if m is layer), type(layer).__name__)
        elif is_scripted(self.model):  # refused now, not after the other methods ran
            find_gradcam_layer(self.model, lambda: None)

    def resolve_layer(self, images: Tensor) -> str:
        """Find the automatic layer with a probe pass on ``images`` (first two used); returns its name."""
        if self.layer is None:
            probe = images[:2].to(self.device) if self.device is not None else images[:2]
            shapes: dict[str, tuple[int, ...]] = {}
            self.layer_name, self.layer = find_gradcam_layer(self.model, lambda: self.classifier.logit(probe), shapes)
            if getattr(self.model, "gradcam_layer", None) is self.layer:
                self.layer_choice = "automatic (the declared gradcam_layer)"
            else:
                hw = shapes.get(self.layer_name, ())[2:]
                self.layer_choice = "automatic (the last block's output before global pooling" + (
                    f"; a {hw[0]} x {hw[1]} map at this input: coarse for small lesions, --gradcam-layer NAME picks an earlier, finer "
                    "block, which localised better on the MONAI phantom benchmark)" if len(hw) == 2 and min(hw) < 8 else ")")
        return str(self.layer_name)

    def attribute(self, images: Tensor) -> Tensor:
        from captum.attr import LayerAttribution, LayerGradCam

        self.resolve_layer(images)
        cam = LayerGradCam(self.score, self.layer).attribute(self.input(images), relu_attributions=True)
        cam = cam.sum(1, keepdim=True) if cam.shape[1] != 1 else cam
        return LayerAttribution.interpolate(cam, tuple(images.shape[-2:]), interpolate_mode="bilinear")


def gradcam_unavailable(classifier: Any) -> str | None:
    """Why Grad-CAM cannot run on ``classifier`` (a TorchScript model takes no hooks), or None."""
    model = getattr(classifier, "model", None)
    if model is None:
        return "the classifier has no .model"
    if is_scripted(model):
        return "a TorchScript classifier takes no forward hooks (a torch limitation); use a .pt2 file or package.module:factory"
    return None


class IntegratedGradientsExplainer(CaptumExplainer):
    """Integrated Gradients (Sundararajan et al. 2017) from a constant baseline.

    Args:
        baseline: constant baseline value in [-1, 1] units (-1 = black, 0 = mid-grey).
        n_steps: Riemann/Gauss-Legendre steps (Captum's ``method="gausslegendre"``).
        internal_batch_size: images x steps evaluated per forward pass.

    Extras: ``convergence_delta`` (n,) = sum(attributions) - (logit(x) - logit(baseline)).
    """

    name = "ig"

    def __init__(self, classifier: Any, *, baseline: float = -1.0, n_steps: int = 50, internal_batch_size: int = 64, **kw: Any):
        super().__init__(classifier, **kw)
        self.baseline = float(baseline)
        self.n_steps = int(n_steps)
        self.internal_batch_size = int(internal_batch_size)

    def attribute(self, images: Tensor) -> tuple[Tensor, dict[str, Any]]:
        from captum.attr import IntegratedGradients

        attr, delta = IntegratedGradients(self.score).attribute(
            self.input(images), baselines=self.baseline, n_steps=self.n_steps,
            internal_batch_size=self.internal_batch_size, return_convergence_delta=True,
        )
        return reduce_sum(attr), {"convergence_delta": delta.detach().reshape(-1).cpu()}


class SmoothGradExplainer(CaptumExplainer):
    """SmoothGrad (Smilkov et al. 2017): the mean input gradient over Gaussian-noised copies.

    Args:
        nt_samples: noisy copies per image. stdevs: noise standard deviation in [-1, 1] units.
        seed: each image's noise is drawn under ``torch.random.fork_rng`` seeded with this, one image at
            a time: the map of an image does not depend on the batch it is in, and the global RNG is
            left untouched.
    """

    name = "smoothgrad"

    def __init__(self, classifier: Any, *, nt_samples: int = 25, stdevs: float = 0.1, nt_samples_batch_size: int | None = None, seed: int = 0, **kw: Any):
        super().__init__(classifier, **kw)
        self.nt_samples = int(nt_samples)
        self.stdevs = float(stdevs)
        self.nt_samples_batch_size = nt_samples_batch_size
        self.seed = int(seed)

    def attribute(self, images: Tensor) -> Tensor:
        from captum.attr import NoiseTunnel, Saliency

        devices = [images.device] if images.device.type == "cuda" else []
        nt = NoiseTunnel(Saliency(self.score))
        maps = []
        for i in range(images.shape[0]):  # one image at a time: its noise depends on the seed only, not on the batch
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed)
                attr = nt.attribute(
                    self.input(images[i : i + 1]), nt_type="smoothgrad", nt_samples=self.nt_samples, stdevs=self.stdevs,
                    nt_samples_batch_size=self.nt_samples_batch_size, abs=False,
                )
            maps.append(reduce_sum(attr))
        return torch.cat(maps, 0)


class OcclusionExplainer(CaptumExplainer):
    """Occlusion (Zeiler & Fergus 2014): grey out a sliding square window, record the drop of the logit.

    Args:
        window, stride: in pixels; default 8 / 4 at 64 px, scaled with the image height.
        baseline: fill value in [-1, 1] units (0 = mid-grey).
        perturbations_per_eval: occluded copies of each image per forward pass (a pass holds images x this many);
            None (default): 64 on a GPU, on a CPU as many as keep a pass at ``CPU_ROWS_PER_PASS`` rows
            (:func:`medxgan.explain.base.rows_per_pass`).
    """

    name = "occlusion"

    def __init__(self, classifier: Any, *, window: int | None = None, stride: int | None = None, baseline: float = 0.0, perturbations_per_eval: int | None = None, **kw: Any):
        super().__init__(classifier, **kw)
        self.window, self.stride = window, stride
        self.baseline = float(baseline)
        if perturbations_per_eval is not None and int(perturbations_per_eval) < 1:
            raise MedxganError(f"perturbations_per_eval {perturbations_per_eval}: must be >= 1 (None: sized for the device)",
                               arg="perturbations_per_eval")
        self.perturbations_per_eval = None if perturbations_per_eval is None else int(perturbations_per_eval)

    def window_for(self, size: int) -> tuple[int, int]:
        w = self.window if self.window is not None else max(1, round(8 * size / 64))
        s = self.stride if self.stride is not None else max(1, round(4 * size / 64))
        return int(w), int(s)

    def copies_per_pass(self, images: Tensor) -> int:
        """Occluded copies of each image per forward pass (Captum's ``perturbations_per_eval``)."""
        if self.perturbations_per_eval is not None:
            return self.perturbations_per_eval
        return max(1, rows_per_pass(images.device, 64 * images.shape[0]) // images.shape[0])

    def attribute(self, images: Tensor) -> Tensor:
        from captum.attr import Occlusion

        c, h = images.shape[1], images.shape[2]
        w, s = self.window_for(h)
        with torch.no_grad():
            attr = Occlusion(self.score).attribute(
                images, sliding_window_shapes=(c, w, w), strides=(c, s, s), baselines=self.baseline,
                perturbations_per_eval=self.copies_per_pass(images),
            )
        return reduce_sum(attr)


# ---- registry --------------------------------------------------------------------------------
def _ig(baseline: float) -> Callable[..., Explainer]:
    def make(classifier: Any, **kw: Any) -> Explainer:
        return IntegratedGradientsExplainer(classifier, baseline=baseline, **kw)

    return make


BASELINE_METHODS: dict[str, Callable[..., Explainer]] = {
    "saliency": SaliencyExplainer,
    "gradcam": GradCAMExplainer,
    "ig-black": _ig(-1.0),
    "ig-grey": _ig(0.0),
    "smoothgrad": SmoothGradExplainer,
    "occlusion": OcclusionExplainer,
}
MEDXGAN_METHODS = ("medxgan-diff", "medxgan-lig", "medxgan-mask")
#: medXGAN methods that need the minimal mask (the engine's ``refines_mask``); dropped from a default set without it
MINIMAL_MASK_METHODS = ("medxgan-mask",)

#: method name -> factory ``f(classifier, gan=None, **kw) -> Explainer``; the keys are the ``--methods`` choices.
EXPLAINERS: dict[str, Callable[..., Explainer]] = {}


def _baseline_factory(name: str) -> Callable[..., Explainer]:
    def make(classifier: Any, gan: Any = None, **kw: Any) -> Explainer:
        ex = (BASELINE_METHODS.get(name) or PERTURBATION_METHODS[name])(classifier, **kw)
        ex.name = name
        return ex

    return make


for _n in BASELINE_METHODS:
    EXPLAINERS[_n] = _baseline_factory(_n)
# the perturbation baselines (explain/perturbation.py): by name only (``--methods rise ...``), not in the default set: each
# costs hundreds of classifier passes per image (seconds per image, benchmarks/perturbation/RESULTS.md)
for _n in PERTURBATION_METHODS:
    EXPLAINERS[_n] = _baseline_factory(_n)


def _medxgan_factory(name: str) -> Callable[..., Explainer]:
    def make(classifier: Any, gan: Any = None, engine: Any = None, **kw: Any) -> Explainer:
        if engine is None:
            engine = counterfactual_engine(gan, classifier)
        if name == "medxgan-diff":
            ex = DifferenceExplainer(engine, **_only(kw, ("batch_size", "frames")))
        elif name == "medxgan-mask":
            ex = MinimalMaskExplainer(engine, **_only(kw, ("batch_size",)))
        else:
            ex = LIGExplainer(engine, **_only(kw, ("batch_size",)))
        ex.name = name
        return ex

    return make


for _n in MEDXGAN_METHODS:
    EXPLAINERS[_n] = _medxgan_factory(_n)


def _only(kw: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if k in keys}


def counterfactual_engine(gan: Any, classifier: Any) -> Any:
    """A shared :class:`~medxgan.explain.counterfactual.CounterfactualEngine` from ``gan``: anything
    :func:`~medxgan.explain.model.as_medxgan` accepts (a MedXGAN / MedXGANModel, a loaded GanRun, a run
    directory, loaded with ``classifier``), or a bare generator module."""
    if gan is None:
        raise MedxganError("medXGAN methods need a trained GAN (--gan RUN)")
    if isinstance(gan, torch.nn.Module):  # a bare generator
        return CounterfactualEngine(gan, classifier)
    return as_medxgan(gan, classifier=classifier, device="cpu").engine


def build_explainers(names: Iterable[str] | None, classifier: Any, gan: Any = None, **kw: Any) -> list[Explainer]:
    """Instantiate explainers by registry name (default: all baselines, plus the medXGAN methods if ``gan``).

    The medXGAN methods share one :class:`CounterfactualEngine` (each image is inverted once).
    Keyword arguments common to every explainer (``batch_size``, ``device``) are passed on;
    ``gradcam_layer`` (a module name) goes to Grad-CAM alone.
    Each returned explainer's ``name`` is its registry name.
    """
    if names is None:
        names = list(BASELINE_METHODS) + (list(MEDXGAN_METHODS) if gan is not None else [])
    names = list(names)
    unknown = [n for n in names if n not in EXPLAINERS]
    if unknown:
        raise MedxganError(f"methods {' '.join(unknown)}: unknown (choose from {', '.join(EXPLAINERS)})", arg="methods")
    engine = None
    out: list[Explainer] = []
    for n in names:
        if n in MEDXGAN_METHODS:
            if engine is None:
                engine = counterfactual_engine(gan, classifier)
            out.append(EXPLAINERS[n](classifier, gan=gan, engine=engine, **_only(kw, ("batch_size",))))
        elif n == "gradcam":
            out.append(EXPLAINERS[n](classifier, **_only(kw, ("batch_size", "device")), layer=kw.get("gradcam_layer")))
        else:
            out.append(EXPLAINERS[n](classifier, **{k: v for k, v in kw.items() if k != "gradcam_layer"}))
    return out


def explain_maps(explainer: Explainer, images: Tensor) -> Explanation:
    """Convenience alias of ``explainer.explain(images)``."""
    return explainer.explain(images)
