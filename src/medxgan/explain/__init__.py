"""Explanations: one Explainer interface (``explain(images) -> Explanation``), the medXGAN counterfactual
explanations (difference map, latent interpolation), Latent Integrated Gradients, and (added separately)
Captum-backed baselines in ``medxgan.explain.baselines``."""

from medxgan.explain.base import Explainer, Explanation, check_images, merge_extras
from medxgan.explain.counterfactual import (
    CounterfactualEngine,
    Counterfactuals,
    DifferenceExplainer,
    accumulated_change,
    difference_maps,
    interpolate,
    reduce_channels,
)
from medxgan.explain.lig import LIGExplainer, LIGResult, latent_integrated_gradients

__all__ = [
    "Explainer",
    "Explanation",
    "check_images",
    "merge_extras",
    "CounterfactualEngine",
    "Counterfactuals",
    "DifferenceExplainer",
    "LIGExplainer",
    "LIGResult",
    "accumulated_change",
    "difference_maps",
    "interpolate",
    "latent_integrated_gradients",
    "reduce_channels",
]
