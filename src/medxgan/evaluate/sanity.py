"""Sanity checks for explanations (Adebayo et al., NeurIPS 2018): cascading model-parameter randomisation.

A map that explains the *classifier* must change when the classifier's learned weights are destroyed.
The cascade re-initialises the classifier's blocks from the top (the head) down, one more block per step,
re-explains the same images with every classifier-based method and compares |A| of the randomised model
with |A| of the trained one (SSIM and Spearman, the map-vs-map measures of
:mod:`medxgan.evaluate.robustness`). A method **passes** when the similarity falls clearly -- both mean
SSIM and mean Spearman below ``threshold`` (0.5) with the upper end of their 95 % bootstrap interval
below it too -- once the top ``verdict_blocks`` (2) blocks are randomised; ``"unclear"`` when the means
are below but an interval reaches the threshold; ``"fail"`` otherwise.

    from medxgan.evaluate.sanity import model_randomisation
    res = model_randomisation(explainers, clf, images)      # res["methods"]["gradcam"]["verdict"]

Blocks (:func:`randomisation_blocks`): the classifier model's top-level children, a top-level
``nn.Sequential`` of blocks (items that have children themselves) expanded one level into its items (PaperCNN: head, features.2, features.1, features.0;
SmallResNet: head, layers.3 ... layers.0, stem); children without parameters or buffers are left out.
Registration order is taken as forward order (true for the built-in architectures; for a user model
whose children are registered out of order the cascade order follows registration).

Randomisation (:func:`randomised`): each module of a block is re-initialised with its own
``reset_parameters()`` (Conv/Linear: PyTorch's default init; BatchNorm: weight 1, bias 0, running
statistics reset), as Quantus's ``ModelParameterRandomisation`` does; a module without it (e.g. inside a
TorchScript model) has each of its own parameters redrawn from N(0, std of the trained values). Block j
always gets the same random weights (seed ``seed + j``), so step k+1 extends step k. The original
weights and buffers are restored bit for bit on exit, even after an error.

Which methods: every explainer that reads the classifier's gradients or outputs (saliency, Grad-CAM,
IG, SmoothGrad, occlusion, medXGAN-LIG). LIG is re-run along the *same* latent path (the inversion of
the trained model, computed once before randomising) with the randomised classifier's gradients. The
medXGAN difference map with the minimal mask (:mod:`medxgan.explain.minimal_mask`) keeps the trained
model's inversion and re-refines the mask with the randomised classifier. Without the minimal mask the
difference map, and the twin row, do not depend on the classifier's weights at explanation time (the
difference map depends on them through the generator's training only): they are skipped here; the
data-randomisation benchmark (``benchmarks/sanity/data_randomisation.py``) covers them.

Why not Quantus's ``ModelParameterRandomisation``: it randomises every *leaf* layer of a raw model and
calls ``explain_func(model=<its copy>, ...)``; our explainers are bound to the classifier adapter (which
owns the preprocessing), Grad-CAM to a layer object of that model and LIG to the GAN path, so its
copy-the-model protocol does not fit the adapter; randomising the adapter's own model in place (and
restoring it) keeps every explainer valid unchanged.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from medxgan.evaluate.localisation import is_constant, score_map
from medxgan.evaluate.robustness import spearman, ssim
from medxgan.evaluate.stats import aggregate
from medxgan.explain.base import NonFiniteMapsError
from medxgan.runtime.errors import MedxganError

__all__ = ["randomisation_blocks", "randomised", "classifier_based", "model_randomisation", "verdict", "SANITY_THRESHOLD", "prior_note"]

SANITY_THRESHOLD = 0.5


def _model_of(classifier: Any) -> nn.Module:
    model = getattr(classifier, "model", classifier)
    if not isinstance(model, nn.Module):
        raise MedxganError("sanity: the classifier has no torch module to randomise")
    return model


def randomisation_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The blocks of ``model`` in cascade order (top = output side first), as (name, module)."""
    blocks: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and any(any(True for _ in c.children()) for c in child.children()):
            blocks += [(f"{name}.{n}", c) for n, c in child.named_children()]
        else:
            blocks.append((name, child))
    blocks = [(n, m) for n, m in blocks if any(True for _ in m.parameters()) or any(True for _ in m.buffers())]
    if not blocks:
        raise MedxganError("sanity: the classifier has no block with parameters to randomise")
    return blocks[::-1]


def _reinit(module: nn.Module, generator_seed: int) -> None:
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(generator_seed)
        for m in module.modules():
            if hasattr(m, "reset_parameters") and callable(getattr(m, "reset_parameters")):
                m.reset_parameters()
                if hasattr(m, "reset_running_stats"):
                    m.reset_running_stats()
            else:
                for p in m.parameters(recurse=False):
                    std = float(p.detach().float().std()) if p.numel() > 1 else 0.0
                    p.copy_(torch.randn(p.shape) * (std if std > 0 else 0.02))


@contextlib.contextmanager
def randomised(model: nn.Module, k: int, seed: int = 0, blocks: Sequence[tuple[str, nn.Module]] | None = None) -> Iterator[list[str]]:
    """Re-initialise the top ``k`` blocks of ``model`` in place (see the module docstring); yields their
    names; restores every parameter and buffer on exit."""
    blocks = list(blocks) if blocks is not None else randomisation_blocks(model)
    if not 0 <= k <= len(blocks):
        raise MedxganError(f"sanity: k {k} outside 0..{len(blocks)}")
    saved = {name: t.detach().clone() for name, t in model.state_dict(keep_vars=True).items()}
    try:
        for j, (_, block) in enumerate(blocks[:k]):
            _reinit(block, seed + j)
        yield [n for n, _ in blocks[:k]]
    finally:
        with torch.no_grad():
            state = model.state_dict(keep_vars=True)
            for name, t in saved.items():
                state[name].data.copy_(t)


def classifier_based(explainer: Any) -> bool:
    """True for methods whose maps read the classifier at explanation time (see the module docstring)."""
    if getattr(explainer, "ground_truth", False):
        return False
    if hasattr(explainer, "engine") and not hasattr(explainer, "from_counterfactuals"):
        # the medXGAN difference map: no classifier at explanation time, unless its residual counterfactual's
        # mask is refined per scan by the classifier (the minimal mask)
        return bool(getattr(explainer.engine, "refines_mask", False))
    return True


class _MaskSearches:
    """The minimal-mask search of each cascade step, done once: the difference map and the mask map of one engine both
    need it under the same weights (the search is deterministic, so the second would repeat the first exactly)."""

    def __init__(self) -> None:
        self.step = 0  # the cascade step whose weights the classifier has now (0 = trained)
        self._done: dict[tuple[int, int], torch.Tensor] = {}

    def refined(self, engine: Any, cf: Any) -> torch.Tensor:
        key = (id(engine), self.step)
        if key not in self._done:
            self._done[key] = engine.refine_masks(cf)
        return self._done[key]


def _map_function(ex: Any, images: torch.Tensor, searches: _MaskSearches | None = None):
    """A callable returning N x H x W float32 maps of ``images`` under the classifier's current weights
    (``searches``: the minimal-mask searches shared by the methods of one engine)."""
    searches = searches or _MaskSearches()
    if hasattr(ex, "from_counterfactuals") and hasattr(ex, "engine"):  # LIG: keep the trained model's latent path
        cf = ex.engine.counterfactuals(images.to(ex.engine.device))
        return lambda: ex.from_counterfactuals(cf).maps[:, 0].detach().float().cpu().numpy()
    if getattr(ex, "name", "") == "medxgan-mask":  # the minimal mask re-searched under the current weights, same inversion
        cf = ex.engine.counterfactuals(images.to(ex.engine.device))
        return lambda: searches.refined(ex.engine, cf)[:, 0].detach().float().cpu().numpy()
    if hasattr(ex, "engine") and getattr(ex.engine, "refines_mask", False):  # difference map: same inversion, mask re-refined
        cf = ex.engine.counterfactuals(images.to(ex.engine.device))
        return lambda: _minimal_mask_difference(ex.engine, cf, searches.refined(ex.engine, cf))
    return lambda: ex.explain(images).maps[:, 0].numpy()


def _minimal_mask_difference(engine: Any, cf: Any, mask: torch.Tensor) -> np.ndarray:
    """|x - x_res| with ``mask``, the minimal mask refined under the classifier's current weights, from the inversion of
    the trained model (N x H x W)."""
    from medxgan.explain.counterfactual import difference_maps

    x = cf.images.cpu()
    x_res = x + mask.cpu() * (cf.x_neg - x)
    return difference_maps(x, x_res, engine.reduce)[0][:, 0].detach().float().numpy()


def _safe(fn) -> np.ndarray | None:
    try:
        return fn()
    except NonFiniteMapsError:  # a randomised model may give non-finite maps: that step's maps count as invalid
        return None


def _positive_shares(classifier: Any, model: nn.Module, images: torch.Tensor, blocks: Sequence[tuple[str, nn.Module]], seed: int) -> list[dict]:
    """The share of the images the classifier calls positive (logit >= 0), trained (k = 0) and after each step."""
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))

    def share() -> float:
        with torch.no_grad():
            return float((classifier.logit(images.to(dev)).float() >= 0).double().mean())

    out = [{"k": 0, "share": share()}]
    for k in range(1, len(blocks) + 1):
        with randomised(model, k, seed=seed, blocks=blocks):
            out.append({"k": k, "share": share()})
    return out


def prior_note(sanity: dict[str, Any] | None) -> str | None:
    """Why a medXGAN map can survive the fixed-generator check (issue 31): once randomised, the classifier calls many of the
    explained scans negative already, so the mask search has no decision to flip (its target is met at once) and the map
    shows the generator's prior. One sentence with the measured shares; None when it does not apply."""
    if not sanity or not any(m.startswith("medxgan") for m in (sanity.get("methods") or {})):
        return None
    shares = {int(r["k"]): r["share"] for r in sanity.get("inputs_positive") or [] if r.get("share") is not None}
    k = int(sanity.get("verdict_blocks", 2))
    if 0 not in shares or k not in shares:
        return None
    return (f"The classifier calls {shares[0]:.2f} of these scans positive, {shares[k]:.2f} once its top {k} block(s) are randomised: "
            "for a scan it already calls negative there is no decision to flip, the medXGAN mask search meets its target at once and "
            "the map shows the generator's prior (this check keeps the trained generator; the form fair to a generative method "
            "retrains it against the randomised classifier: benchmarks/sanity/RESULTS.md).")


def verdict(curve: list[dict], verdict_blocks: int = 2, threshold: float = SANITY_THRESHOLD) -> tuple[str, str]:
    """(``"pass"`` / ``"unclear"`` / ``"fail"`` / ``"n/a"``, reason) from a method's curve (see the module docstring)."""
    if not curve:
        return "n/a", "no randomisation step"
    step = curve[min(verdict_blocks, len(curve)) - 1]
    stats = [(name, step.get(name) or {}) for name in ("ssim", "spearman")]
    stats = [(n, s) for n, s in stats if s.get("n", 0) > 0 and s.get("mean") is not None and np.isfinite(s["mean"])]
    where = f"top {step['k']} block(s) randomised ({', '.join(step['randomised'])})"
    if not stats:
        return "n/a", f"no valid similarity after {where}"
    desc = ", ".join(f"{n} {s['mean']:.2f} [{s['lo']:.2f}, {s['hi']:.2f}]" for n, s in stats)
    if any(s["mean"] >= threshold for _, s in stats):
        return "fail", f"{desc} after {where}: similarity not below {threshold:g}"
    if any(s["hi"] >= threshold for _, s in stats):
        return "unclear", f"{desc} after {where}: means below {threshold:g}, an interval reaches it"
    return "pass", f"{desc} after {where}"


def model_randomisation(explainers: Sequence[Any], classifier: Any, images: torch.Tensor, *, seed: int = 0,
                        n_resamples: int = 1000, verdict_blocks: int = 2, threshold: float = SANITY_THRESHOLD,
                        image_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """Cascading randomisation of ``classifier`` for every classifier-based explainer.

    Args:
        explainers: Explainer instances bound to ``classifier`` (others are listed under ``"skipped"``).
        classifier: the adapter the explainers use (its ``.model`` is randomised in place, then restored).
        images: N x C x H x W in [-1, 1].
    Returns ``{"blocks": [names top first], "n_images", "threshold", "verdict_blocks", "image_ids", "inputs_positive":
    [{"k", "share"}] (the share of the images the classifier calls positive, k = 0 trained),
    "skipped": [names], "methods": {name: {"curve": [{"k", "block", "randomised", "ssim", "spearman",
    "constant"}], "verdict", "reason"}}}``; each of ssim / spearman / constant is an aggregate
    ``{"mean", "lo", "hi", "n", "n_invalid"}`` over the images (constant: share of constant maps).
    """
    model = _model_of(classifier)
    blocks = randomisation_blocks(model)
    used = [e for e in explainers if classifier_based(e)]
    out: dict[str, Any] = {"blocks": [n for n, _ in blocks], "n_images": int(images.shape[0]), "threshold": threshold,
                           "verdict_blocks": verdict_blocks, "seed": int(seed), "image_ids": list(image_ids or []),
                           "skipped": [e.name for e in explainers if not classifier_based(e)], "methods": {}}
    was_training = model.training
    model.eval()
    try:
        out["inputs_positive"] = _positive_shares(classifier, model, images, blocks, seed)
        searches = _MaskSearches()
        for ex in used:
            fn = _map_function(ex, images, searches)
            searches.step = 0
            ref = _safe(fn)
            curve = []
            for k in range(1, len(blocks) + 1):
                with randomised(model, k, seed=seed, blocks=blocks) as names:
                    searches.step = k
                    maps = _safe(fn)
                rows = []
                for i in range(images.shape[0]):
                    if ref is None or maps is None:
                        rows.append({"ssim": None, "spearman": None, "constant": None})
                        continue
                    a, b = ref[i], maps[i]
                    rows.append({"ssim": ssim(a, b), "spearman": spearman(a, b), "constant": bool(is_constant(score_map(b, "abs")))})
                agg = aggregate(rows, n_resamples=n_resamples, seed=seed)
                curve.append({"k": k, "block": names[-1], "randomised": names, **{m: agg.get(m, {"n": 0}) for m in ("ssim", "spearman", "constant")}})
            v, reason = verdict(curve, verdict_blocks, threshold)
            out["methods"][ex.name] = {"curve": curve, "verdict": v, "reason": reason}
    finally:
        model.train(was_training)
    return out
