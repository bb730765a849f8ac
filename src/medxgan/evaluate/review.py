"""The reviewer's sections of an evaluation, added to results.json after the method loop:
``results["sanity"]`` (cascading model-parameter randomisation, :mod:`medxgan.evaluate.sanity`, with
``sanity=True`` / ``medxgan evaluate --sanity``) and ``results["realism"]`` (counterfactual realism and
minimality in the oracle's features, :mod:`medxgan.evaluate.realism`; whenever the GAN run has an oracle
and the maps are saved).

The sanity result is cached in ``OUT/sanity.json`` with the settings it depends on (classifier
fingerprint, image ids, methods, seed, resamples): a resumed evaluation does not recompute it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from medxgan.evaluate.realism import counterfactual_realism
from medxgan.evaluate.sanity import model_randomisation
from medxgan.evaluate.store import SANITY_JSON, clean_json
from medxgan.runtime.atomic import atomic_write_json

__all__ = ["review_sections", "SANITY_JSON"]



def _sanity(out: Path, sel: Any, exps: Sequence[Any], clf: Any, *, n: int, seed: int, n_resamples: int) -> dict[str, Any]:
    import json

    idx = sel.selected[:n]
    key = clean_json({"classifier": getattr(clf, "fingerprint", None), "images": [sel.ids[i] for i in idx],
                      "methods": [e.name for e in exps], "seed": seed, "n_resamples": n_resamples})
    path = out / SANITY_JSON
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            if old.get("key") == key:
                return old["result"]
        except (OSError, ValueError, KeyError):
            pass
    res = clean_json(model_randomisation(exps, clf, sel.images[idx], seed=seed, n_resamples=n_resamples,
                                         image_ids=[sel.ids[i] for i in idx]))
    atomic_write_json(path, {"key": key, "result": res})
    return res


def review_sections(out: Path, results: dict[str, Any], sel: Any, exps: Sequence[Any], clf: Any, oracle: Any, *, sanity: bool,
                    sanity_n: int, seed: int, n_resamples: int, save_maps: bool) -> dict[str, Any]:
    """``{"sanity": ..., "realism": ...}`` (the keys that apply) plus notes appended to ``results["notes"]``."""
    extra: dict[str, Any] = {}
    notes = results.setdefault("notes", [])
    if sanity:
        extra["sanity"] = _sanity(out, sel, exps, clf, n=sanity_n, seed=seed, n_resamples=n_resamples)
        s = extra["sanity"]
        notes.append(f"Sanity check (cascading model-parameter randomisation, Adebayo et al. 2018): the classifier's blocks "
                     f"({', '.join(s['blocks'])}) re-initialised from the top, one more per step, on the first {s['n_images']} "
                     f"evaluated images; SSIM / Spearman of |A| vs the trained model's map. Pass: both below {s['threshold']:g} "
                     f"(95 % interval too) once the top {s['verdict_blocks']} block(s) are randomised. "
                     + (f"Not applicable (no classifier at explanation time): {', '.join(s['skipped'])}." if s["skipped"] else ""))
    has_cf = any("counterfactual" in (r.get("metrics") or {}) for r in results.get("per_image", []))
    if has_cf:
        if oracle is None:
            notes.append("Counterfactual realism: not computed (the GAN run has no independent oracle).")
        elif not save_maps:
            notes.append("Counterfactual realism: not computed (--no-maps: the counterfactuals were not saved).")
        else:
            neg = sel.images[sel.labels == 0]
            extra["realism"] = clean_json(counterfactual_realism(out, results["per_image"], neg, oracle, seed=seed, n_resamples=n_resamples))
            notes.append("Counterfactual realism: Fréchet distance and KID in the penultimate features of the independent oracle "
                         "(a domain feature space, not Inception: compare the rows, not with published FIDs) against half of the "
                         "split's real negatives; floor = the other half, reference = the explained positives; same n per row.")
    return extra
