"""How a classifier scores real healthy scans: the reference that bounds how negative a counterfactual
needs to be (the floor of :func:`medxgan.explain.minimal_mask.refine_mask`'s target). Computed by
``medxgan train`` on the negatives of the GAN's training split and stored in the run's config.json
(``classifier_reference``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from medxgan.runtime.tensors import frozen


def _finite_logits(classifier: Any, images: Tensor, batch_size: int) -> Tensor:
    """The classifier's positive logits on ``images`` (in batches, on the CPU), non-finite ones dropped."""
    if len(images) == 0:
        return torch.zeros(0)
    with frozen(classifier), torch.no_grad():
        logits = torch.cat([classifier.logit(images[i : i + batch_size]).float().flatten().cpu() for i in range(0, len(images), batch_size)])
    return logits[torch.isfinite(logits)]


def negative_logit_reference(classifier: Any, negatives: Tensor, batch_size: int = 128) -> dict[str, float]:
    """The classifier's logits on real negative scans, summarised for the ``floor`` of :func:`medxgan.explain.minimal_mask.refine_mask`:
    ``{"negative_logit_q05", "negative_logit_median", "n_negatives"}`` (stored with a GAN run)."""
    logits = _finite_logits(classifier, negatives, batch_size)
    if len(logits) == 0:
        return {}
    return {"negative_logit_q05": float(torch.quantile(logits, 0.05)), "negative_logit_median": float(logits.median()), "n_negatives": int(len(logits))}


def class_logit_medians(classifier: Any, images: Tensor, labels: Tensor, batch_size: int = 128) -> tuple[float, float]:
    """The classifier's median logit on the real negatives and on the real positives of (images, labels):
    where real scans of each class sit for this classifier (the soft labels of the GAN's
    ``cls_target="real-median"``). Raises ValueError when a class has no scan with a finite logit."""
    medians = []
    for cls in (0, 1):
        logits = _finite_logits(classifier, images[labels == cls], batch_size)
        if len(logits) == 0:
            raise ValueError(f"no {'positive' if cls else 'negative'} scan with a finite classifier logit")
        medians.append(float(logits.median()))
    return medians[0], medians[1]
