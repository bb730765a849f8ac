"""Explanation-evaluation metrics as pure functions (localisation, faithfulness, robustness, stats).

Maps are H x W attribution maps (numpy or torch), higher = more important, computed in float64.
Localisation metrics take a score map (``score_map(A, mode)``, default |A|); see
``localisation``'s docstring for the tie, NaN and constant-map rules. The benchmark runner builds on
these functions.
"""

from medxgan.evaluate.faithfulness import counterfactual_metrics, deletion_curve, gaussian_blur
from medxgan.evaluate.localisation import (
    LOCALISATION_KEYS,
    iou_area_matched,
    iou_otsu,
    localisation_metrics,
    pixel_auprc,
    pixel_auroc,
    pointing_game,
    relevance_mass,
    relevance_rank,
    score_map,
)
from medxgan.evaluate.robustness import max_sensitivity, spearman, ssim, topk_overlap
from medxgan.evaluate.stats import aggregate, bootstrap_ci

__all__ = [
    "LOCALISATION_KEYS",
    "aggregate",
    "bootstrap_ci",
    "counterfactual_metrics",
    "deletion_curve",
    "gaussian_blur",
    "iou_area_matched",
    "iou_otsu",
    "localisation_metrics",
    "max_sensitivity",
    "pixel_auprc",
    "pixel_auroc",
    "pointing_game",
    "relevance_mass",
    "relevance_rank",
    "score_map",
    "spearman",
    "ssim",
    "topk_overlap",
]
