"""Realism and minimality of counterfactuals (DiME, ACE, the NeurIPS 2024 counterfactual benchmark).

Realism: Fréchet distance (FD) and KID between real negatives and the counterfactual negatives, in the
**penultimate features of the independent oracle classifier** the GAN run carries (the input of its last
``nn.Linear``): a domain feature space, not Inception, and nothing is downloaded. The numbers are
:func:`medxgan.runtime.quality.fid` / :func:`~medxgan.runtime.quality.kid` (torchmetrics) on those
features, so they are not comparable with Inception FIDs of other papers -- only between the rows of
one table.

FD is biased upwards for small samples (the more so, the larger the feature dimension), so every row is
computed against the same reference set with the same sample size n:

* the real negatives of the evaluated split are split once (seeded) into a reference half R and a
  held-out half H;
* ``real negatives (held-out)``: H vs R -- the **floor** (what two samples of the target class give);
* ``inputs (real positives)``: the explained positive images vs R -- the **reference** a counterfactual
  should improve on (where the counterfactuals start);
* one row per counterfactual kind (``x_neg`` of each medXGAN method, ``x_res``, the twins of the
  phantoms): the counterfactuals vs R.

Each compared set is subsampled (seeded) to n = min(counterfactuals, |H|) images, so all rows share n.
KID: mean and std over 100 subsets of size min(n, 1000) (unbiased MMD estimate: it can be slightly
negative near 0).

Minimality, per counterfactual of an image x (C x H x W in [-1, 1]): ``mean_abs_change`` = mean |x - x_cf|,
``frac_changed`` = share of pixels with max over channels |x - x_cf| > ``threshold`` (0.1), ``regions`` =
number of 8-connected regions of changed pixels (``scipy.ndimage.label``); means with 95 % bootstrap
intervals over the images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from medxgan.evaluate.stats import aggregate
from medxgan.evaluate.store import input_maps_file, method_maps_file
from medxgan.runtime import quality
from medxgan.runtime.errors import MedxganError

__all__ = ["penultimate_features", "feature_distances", "minimality", "counterfactual_realism", "CHANGE_THRESHOLD"]

CHANGE_THRESHOLD = 0.1


def _last_linear(model: nn.Module) -> nn.Linear:
    lin = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not lin:
        raise MedxganError("realism: the oracle has no nn.Linear layer whose input could serve as features")
    return lin[-1]


@torch.no_grad()
def penultimate_features(adapter: Any, images: Tensor, batch_size: int = 64) -> Tensor:
    """N x D float64 features: the input of the last ``nn.Linear`` of ``adapter.model`` when the adapter
    scores ``images`` (N x C x H x W in [-1, 1]; the adapter's own preprocessing applies)."""
    model = getattr(adapter, "model", adapter)
    captured: list[Tensor] = []
    hook = _last_linear(model).register_forward_pre_hook(lambda _m, inp: captured.append(inp[0].detach().flatten(1).double().cpu()))
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        for i in range(0, len(images), batch_size):
            adapter.logit(images[i : i + batch_size].to(dev))
    finally:
        hook.remove()
    return torch.cat(captured, 0)


def feature_distances(real: Tensor, other: Tensor, *, seed: int = 0, kid_subsets: int = 100) -> dict[str, float]:
    """FD and KID (mean, std) between two feature sets (N x D), via torchmetrics (runtime.quality)."""
    if len(real) < 2 or len(other) < 2 or not (torch.isfinite(real).all() and torch.isfinite(other).all()):
        # too few samples, or non-finite features: undefined (and MKL's eigvals segfaults on NaN input)
        return {"fd": float("nan"), "kid": float("nan"), "kid_std": float("nan")}
    ident: Callable[[Tensor], Tensor] = lambda f: f  # noqa: E731  the features are precomputed
    d = real.shape[1]
    fd = quality.fid(ident, d, real, other)
    kid, kid_std = quality.kid(ident, d, real, other, subsets=kid_subsets, seed=seed)
    return {"fd": fd, "kid": kid, "kid_std": kid_std}


def minimality(x: Tensor, x_cf: Tensor, threshold: float = CHANGE_THRESHOLD) -> dict[str, float]:
    """``mean_abs_change``, ``frac_changed``, ``regions`` of one counterfactual (see the module docstring)."""
    from scipy import ndimage  # lazy: a slow import

    d = (x.double() - x_cf.double()).abs()
    changed = (d.amax(0) > threshold).numpy()
    _, n_regions = ndimage.label(changed, structure=np.ones((3, 3)))
    return {"mean_abs_change": float(d.mean()), "frac_changed": float(changed.mean()), "regions": float(n_regions)}


def _subsample(t: Tensor, n: int, rng: np.random.Generator) -> Tensor:
    if len(t) <= n:
        return t
    return t[torch.from_numpy(np.sort(rng.choice(len(t), n, replace=False)))]


def _counterfactual_sets(out: Path, rows: Sequence[dict]) -> tuple[dict[str, dict[str, list]], list[str]]:
    """{label: {"ids", "x", "cf"}} from the saved maps (x_neg of every method, x_res), duplicates dropped
    (medXGAN's two methods share one inversion, hence one x_neg)."""
    sets: dict[str, dict[str, list]] = {}
    notes: list[str] = []
    skipped: dict[str, int] = {}
    for r in rows:
        met = r.get("metrics") or {}
        kinds = [("x_neg", "counterfactual")] + [("x_res", "counterfactual_residual")]
        for key, group in kinds:
            if group not in met:
                continue
            f = method_maps_file(out, r["image_id"], r["method"])
            inp = input_maps_file(out, r["image_id"])
            if not (f.is_file() and inp.is_file()):
                continue
            with np.load(f) as z:
                if key not in z.files:
                    continue
                cf = torch.from_numpy(z[key].astype(np.float32))
            label = f"{r['method']}: {key}"
            if not torch.isfinite(cf).all():  # e.g. the twin row of an image that has no twin (a negative)
                skipped[label] = skipped.get(label, 0) + 1
                continue
            with np.load(inp) as z:
                x = torch.from_numpy(z["image"].astype(np.float32))
            s = sets.setdefault(label, {"ids": [], "x": [], "cf": [], "method": r["method"], "key": key})
            s["ids"].append(r["image_id"])
            s["x"].append(x)
            s["cf"].append(cf)
    notes += [f"{label}: {k} image(s) without a finite counterfactual (e.g. no twin) left out" for label, k in skipped.items()]
    kept: dict[str, dict[str, list]] = {}
    for label, s in sets.items():
        dup = next((k for k, t in kept.items() if t["key"] == s["key"] and t["ids"] == s["ids"]
                    and all(torch.equal(a, b) for a, b in zip(t["cf"], s["cf"]))), None)
        if dup is not None:
            notes.append(f"{label}: identical to {dup} (a shared inversion), not repeated")
            continue
        kept[label] = s
    return kept, notes


def counterfactual_realism(maps_dir: str | Path, rows: Sequence[dict], real_negatives: Tensor, oracle: Any, *, seed: int = 0,
                           n_resamples: int = 1000, threshold: float = CHANGE_THRESHOLD) -> dict[str, Any]:
    """The realism / minimality table of an evaluation (see the module docstring).

    Args:
        maps_dir: the evaluation's output directory (its ``maps/<image_id>/{input,<method>}.npz``).
        rows: the per-image rows (``results["per_image"]``); those with counterfactual metrics are read.
        real_negatives: the split's real negative images, N x C x H x W in [-1, 1].
        oracle: the independent oracle classifier (adapter) whose penultimate features are compared.
    Returns ``{"feature_space", "n", "n_reference", "rows": [{"label", "role", "n", "fd", "kid", "kid_std",
    "minimality": {...aggregates} (counterfactual rows)}], "notes"}``.
    """
    sets, notes = _counterfactual_sets(Path(maps_dir), rows)
    if not sets:
        return {"rows": [], "notes": ["no saved counterfactuals (medXGAN methods with saved maps) to compare"]}
    if len(real_negatives) < 4:
        return {"rows": [], "notes": [f"only {len(real_negatives)} real negatives in the split: too few for FD/KID"]}
    rng = np.random.default_rng(seed)
    perm = torch.from_numpy(rng.permutation(len(real_negatives)))
    half = len(real_negatives) // 2
    ref_imgs, held_imgs = real_negatives[perm[:half]], real_negatives[perm[half:]]
    n = min(min(len(s["cf"]) for s in sets.values()), len(held_imgs))
    feats = lambda t: penultimate_features(oracle, t)  # noqa: E731
    ref = feats(ref_imgs)
    first = next(iter(sets.values()))
    out_rows = [
        {"label": "real negatives (held-out half)", "role": "floor", "n": n, **feature_distances(ref, feats(_subsample(held_imgs, n, rng)), seed=seed)},
        {"label": "inputs (the explained positives)", "role": "reference", "n": n,
         **feature_distances(ref, feats(_subsample(torch.stack(first["x"]), n, rng)), seed=seed)},
    ]
    for label, s in sets.items():
        cf = torch.stack(s["cf"])
        mins = [minimality(x, c, threshold) for x, c in zip(s["x"], s["cf"])]
        out_rows.append({"label": label, "role": "counterfactual", "method": s["method"], "key": s["key"], "n": n,
                         "n_images": len(cf), **feature_distances(ref, feats(_subsample(cf, n, rng)), seed=seed),
                         "minimality": aggregate(mins, n_resamples=n_resamples, seed=seed)})
    return {"feature_space": f"penultimate features of the independent oracle ({ref.shape[1]}-d; not Inception)",
            "n": n, "n_reference": int(len(ref)), "threshold": threshold, "rows": out_rows, "notes": notes}
