"""The rows of one chunk of images for one method: every metric of :mod:`medxgan.evaluate.runner` per (image, method).

Two implementations with one signature and the same rows (within floating-point batching differences,
see ``tests/test_evaluate_batched.py``):

* :func:`evaluate_pairs` (used by ``evaluate``): batched. The noisy copies of all noise levels go through
  the explainer as one batch (for medXGAN: one batched inversion of all of them), the perturbed copies of
  max-sensitivity of all the chunk's images as one batch (scored against the clean map already computed,
  which Captum's ``sensitivity_max`` would recompute), and the deletion images of both curves of all the
  chunk's images through the classifier in one call.
* :func:`evaluate_pairs_reference`: the straightforward per-image loops of the runner before the batching
  (issue 15): one explainer call per noise level, one ``captum.metrics.sensitivity_max`` call per image,
  two ``deletion_curve`` calls per image. Kept as the reference of the equality test and of
  ``benchmarks/performance/evaluate_speed.py``; ``evaluate(..., implementation="reference")`` runs it.

Speed (``benchmarks/performance/RESULTS.md``): the medXGAN inversions of the noisy and perturbed copies are
most of an evaluation's time and batching cannot remove them. ``evaluate(noisy_inversion={"start": "clean",
"steps": 50})`` (off by default) starts those inversions from the clean image's codes with fewer steps: much
faster, but it changes the medXGAN robustness and sensitivity numbers (not a floating-point effect), so it
is an explicit option, recorded in run.json and in the notes.

Memory stays bounded by the chunk (``batch_size`` images): at most ``batch_size * len(sigmas)`` noisy
copies, ``batch_size * max_sensitivity_samples`` perturbed copies and ``batch_size * 2 * (1 + len(fractions))``
deletion images exist at once, whatever the number of images evaluated.
"""

from __future__ import annotations

import contextlib
import io
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from medxgan.evaluate.faithfulness import counterfactual_metrics, deletion_curve, deletion_inputs, deletion_scores
from medxgan.evaluate.localisation import is_constant, localisation_metrics
from medxgan.evaluate.oracle_calibration import calibrated_oracle_prob, oracle_logits
from medxgan.evaluate.robustness import max_sensitivity as _max_sensitivity
from medxgan.evaluate.robustness import spearman, ssim, topk_overlap
from medxgan.evaluate.selection import Selection
from medxgan.evaluate.shortcut import shortcut_metrics
from medxgan.evaluate.store import input_maps_file, method_maps_file
from medxgan.evaluate.twins import twin_agreement, twin_fidelity
from medxgan.explain.base import NonFiniteMapsError
from medxgan.explain.counterfactual import image_key
from medxgan.runtime.atomic import atomic_write_bytes

__all__ = ["ChunkInputs", "evaluate_pairs", "evaluate_pairs_reference", "IMPLEMENTATIONS", "NOISY_INVERSION_KEYS", "check_noisy_inversion"]


def _is_nonfinite_error(exc: BaseException) -> bool:
    return isinstance(exc, NonFiniteMapsError)


def _seed_for(seed: int, image_id: str, salt: int) -> int:
    return (zlib.crc32(image_id.encode()) * 1_000_003 + int(seed) * 7919 + salt) % (2**63 - 1)


@dataclass
class ChunkInputs:
    """What the rows of every chunk share: the selection (per-image tensors and lists, indexed by the data set's
    image index ``i``) and the evaluation's settings.

    Attributes:
        sel: the :class:`~medxgan.evaluate.selection.Selection` (images, masks, labels, probs, ids, slices, markers, twins).
        sigmas, fractions, seed: noise levels, deletion fractions, seed (``EvaluateConfig``).
        prob_fn: images -> the classifier's p(pos) (on ``dev``). oracle: the GAN run's oracle adapter or None;
            ``oracle_threshold_logit``: its calibrated decision level (:mod:`medxgan.evaluate.oracle_calibration`).
        ms_kw: max-sensitivity's ``{"radius", "n_perturb"}``. out: the evaluation folder to save maps in, or None.
        written_inputs: image ids whose ``input.npz`` is written (shared across chunks and methods).
    """

    sel: Selection
    sigmas: list[float]
    fractions: list[float]
    seed: int
    prob_fn: Callable[[torch.Tensor], torch.Tensor]
    oracle: Any
    dev: torch.device
    ms_kw: dict[str, Any]
    out: Path | None = None
    written_inputs: set[str] = field(default_factory=set)
    oracle_threshold_logit: float = 0.0


def _npz_bytes(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _explain_safe(ex: Any, x: torch.Tensor) -> tuple[list[np.ndarray | None], list[dict], float]:
    """Explain a batch; on non-finite maps fall back to one image at a time so that only the bad
    images are lost (their map is None). Returns (maps H x W float32, per-image extras, seconds)."""
    k = x.shape[0]
    t0 = time.perf_counter()
    try:
        e = ex.explain(x)
        secs = time.perf_counter() - t0
        maps = [e.maps[j, 0].numpy().astype(np.float32) for j in range(k)]
        return maps, _split_extras(e.extras, k), secs
    except RuntimeError as exc:
        if not _is_nonfinite_error(exc):
            raise
    maps, extras = [], []
    t0 = time.perf_counter()
    for j in range(k):
        try:
            e = ex.explain(x[j : j + 1])
            maps.append(e.maps[0, 0].numpy().astype(np.float32))
            extras.append(_split_extras(e.extras, 1)[0])
        except RuntimeError as exc:
            if not _is_nonfinite_error(exc):
                raise
            maps.append(None)
            extras.append({})
    return maps, extras, time.perf_counter() - t0


def _split_extras(extras: dict, k: int) -> list[dict]:
    """Per-image views of the tensors in ``extras`` whose first dimension is the batch size."""
    out: list[dict] = [{} for _ in range(k)]
    for key, v in (extras or {}).items():
        if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == k:
            for j in range(k):
                out[j][key] = v[j].detach().cpu()
    return out


def _oracle_probs(oracle: Any, extras: list[dict], key: str, dev: torch.device, threshold_logit: float = 0.0) -> list[float | None]:
    """The oracle's p(pos) for the image-shaped extra ``key`` (a counterfactual) of each image, batched, re-centred at its
    calibrated threshold (sigmoid(logit - t): "p < 0.5" reads "logit < t", :mod:`medxgan.evaluate.oracle_calibration`)."""
    out: list[float | None] = [None] * len(extras)
    idx = [j for j, e in enumerate(extras) if key in e]
    if oracle is None or not idx:
        return out
    with torch.no_grad():
        po = calibrated_oracle_prob(oracle_logits(oracle, torch.stack([extras[j][key] for j in idx]), dev), threshold_logit)
    for j, p in zip(idx, po.tolist()):
        out[j] = p
    return out


def _twin_metrics(a: np.ndarray, x: torch.Tensor, twin: torch.Tensor, ex_j: dict, localise: bool, ground_truth: bool) -> dict[str, Any]:
    """Scores against the lesion-free twin: the map's agreement with |x - twin| (localisation images),
    and how close each counterfactual of the method is to the twin."""
    met: dict[str, Any] = {}
    if localise:
        met["twin_agreement"] = twin_agreement(a, x, twin)
    if ground_truth:  # the twin row: comparing the twin with itself says nothing
        return met
    fid = {name: twin_fidelity(x, ex_j[key], twin) for name, key in (("negative", "x_neg"), ("residual", "x_res")) if key in ex_j}
    if fid:
        met["twin_fidelity"] = fid
    return met


def evaluate_pairs_reference(ex: Any, todo: list[int], inputs: ChunkInputs, ms_todo: set[int]) -> list[dict]:
    """The rows of the images ``todo`` for explainer ``ex``, with the per-image loops (see the module docstring)."""
    c, sel = inputs, inputs.sel
    x = sel.images[todo]
    maps, a_all, extras, per_image_s = _clean_maps(ex, x)

    # robustness: the same images with seeded noise, explained together per sigma
    noisy_maps: dict[float, list[np.ndarray | None]] = {}
    for si, s in enumerate(c.sigmas):
        noise = torch.stack([
            torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(_seed_for(c.seed, sel.ids[i], si + 1))) for i in todo
        ])
        noisy_maps[s], _, _ = _explain_safe(ex, (x + s * noise).clamp(-1.0, 1.0))

    # per image: both deletion curves, Captum's max-sensitivity
    deletions = []
    for j in range(len(todo)):
        curves = {rep: deletion_curve(c.prob_fn, x[j], a_all[j], fractions=c.fractions, replacement=rep) for rep in ("mean", "blur")}
        deletions.append({f"deletion_{rep}": {"auc": d["auc"], "probs": d["probs"], "flipped": d["flipped"]} for rep, d in curves.items()})
    sens = {j: None if maps[j] is None else _max_sens(ex, x[j : j + 1], seed=_seed_for(c.seed, sel.ids[i], 0), **c.ms_kw)
            for j, i in enumerate(todo) if i in ms_todo and not getattr(ex, "ground_truth", False)}
    return _rows(ex, todo, x, (maps, a_all, extras, per_image_s), c, deletions, noisy_maps, sens)


def _rows(ex: Any, todo: list[int], x: torch.Tensor, clean: tuple, c: ChunkInputs, deletions: list[dict], noisy_maps: dict[float, list],
          sens: dict[int, float | None]) -> list[dict]:
    """The chunk's rows from what both implementations compute: ``clean`` (:func:`_clean_maps`), the deletion curves
    per image, the noisy copies' maps per sigma and max-sensitivity per chunk position."""
    maps, a_all, extras, per_image_s = clean
    oracle_p = {key: _oracle_probs(c.oracle, extras, key, c.dev, c.oracle_threshold_logit) for key in ("x_neg", "x_res")}  # batched
    rows = []
    for j, i in enumerate(todo):
        invalid = maps[j] is None
        a = a_all[j]
        met, mask_i = _map_metrics(a, invalid, i, c.sel)
        met.update(deletions[j])
        if c.sigmas:
            met["robustness"] = _robustness(a, invalid, [noisy_maps[s][j] for s in c.sigmas], c.sigmas)
        if j in sens:
            met["sensitivity"] = {"max": sens[j]}
        rows.append(_finish_row(met, ex, i, j, a, invalid, mask_i, extras[j], x, c, oracle_p, per_image_s))
    return rows


def _clean_maps(ex: Any, x: torch.Tensor) -> tuple[list[np.ndarray | None], list[np.ndarray], list[dict], float]:
    """The chunk's clean explanation: (maps, None where non-finite; the maps with an all-NaN map in those places;
    per-image extras; seconds per image)."""
    maps, extras, secs = _explain_safe(ex, x)
    h, w = x.shape[-2:]
    return maps, [np.full((h, w), np.nan, dtype=np.float32) if m is None else m for m in maps], extras, secs / x.shape[0]


def _map_metrics(a: np.ndarray, invalid: bool, i: int, sel: Selection) -> tuple[dict[str, Any], np.ndarray]:
    """(the metrics of the map itself: constant, localisation on true positives with a mask; image i's lesion mask)."""
    mask_i = sel.masks[i, 0].numpy() > 0.5
    met: dict[str, Any] = {"map": {"constant": None if invalid else bool(is_constant(np.abs(a)))}}
    if sel.slice_of[i] == "TP" and bool(sel.has_mask[i]) and mask_i.any():
        met["localisation"] = localisation_metrics(a, mask_i, mode="abs")
    return met, mask_i


def _robustness(a: np.ndarray, invalid: bool, noisy: list[np.ndarray | None], sigmas: list[float]) -> dict[str, dict]:
    """Similarity of the clean map to each noisy one (None where a map is missing)."""
    return {f"noise_{s:g}": ({"ssim": None, "spearman": None, "top10": None} if invalid or b is None
                             else {"ssim": ssim(a, b), "spearman": spearman(a, b), "top10": topk_overlap(a, b, 0.1)})
            for s, b in zip(sigmas, noisy)}


def _finish_row(met: dict[str, Any], ex: Any, i: int, j: int, a: np.ndarray, invalid: bool, mask_i: np.ndarray, ex_j: dict,
                x: torch.Tensor, c: ChunkInputs, oracle_p: dict[str, list], per_image_s: float) -> dict[str, Any]:
    """The metrics both implementations share (counterfactuals, twins, shortcut, cost) and the row itself; the maps
    are saved when ``c.out`` is set. ``oracle_p``: the oracle's p(pos) of each image's ``x_neg`` / ``x_res``."""
    sel = c.sel
    if "x_neg" in ex_j:
        p_neg = ex_j.get("prob_neg")
        if p_neg is None:
            with torch.no_grad():
                p_neg = float(c.prob_fn(ex_j["x_neg"][None]).item())
        met["counterfactual"] = counterfactual_metrics(x[j], ex_j["x_neg"], p_neg, oracle_p["x_neg"][j])
    if "flipped" in ex_j:  # medXGAN: did the explained counterfactual cross the classifier's decision level within the mask (issue 31)
        met["flip"] = {"flipped": float(ex_j["flipped"]), "logit": float(ex_j["logit_cf"])}
    if "x_res" in ex_j:  # the residual counterfactual of the scan itself
        met["counterfactual_residual"] = counterfactual_metrics(x[j], ex_j["x_res"], ex_j.get("prob_res"), oracle_p["x_res"][j])
    if sel.twins is not None and bool(sel.has_twin[i]):
        met.update(_twin_metrics(a, x[j], sel.twins[i], ex_j, localise="localisation" in met and not invalid,
                                 ground_truth=getattr(ex, "ground_truth", False)))
    if sel.markers is not None:
        met["shortcut"] = shortcut_metrics(a, sel.markers[i], mask_i if mask_i.any() else None)
    met["cost"] = {"time_s": per_image_s}
    row = {"image_id": sel.ids[i], "image": sel.rels[i], "index": int(i), "method": ex.name, "slice": sel.slice_of[i],
           "label": int(sel.labels[i]), "prob": float(sel.probs[i]), "has_mask": bool(sel.has_mask[i]), "invalid_map": invalid,
           "time_s": per_image_s, "metrics": met}
    if c.out is not None:
        _save_maps(c.out, sel.ids[i], ex.name, a, ex_j, x[j], mask_i, sel.markers[i] if sel.markers is not None else None, row,
                   c.written_inputs)
    return row


def _max_sens(ex: Any, x1: torch.Tensor, seed: int, radius: float, n_perturb: int) -> float | None:
    try:
        v = _max_sensitivity(lambda t: ex.explain(t.clamp(-1.0, 1.0)).maps, x1, radius=radius, n_perturb=n_perturb, seed=seed,
                             max_examples_per_batch=n_perturb)
        return float(v[0])
    except RuntimeError as exc:
        if _is_nonfinite_error(exc):
            return None
        raise


def _save_maps(out: Path, image_id: str, method: str, a: np.ndarray, extras: dict, x: torch.Tensor, mask: np.ndarray,
               marker: np.ndarray | None, row: dict, written_inputs: set[str]) -> None:
    inp = input_maps_file(out, image_id)
    if image_id not in written_inputs and not inp.exists():
        atomic_write_bytes(inp, _npz_bytes(
            image=x.numpy().astype(np.float32), mask=mask.astype(np.uint8),
            marker=(marker if marker is not None else np.zeros_like(mask)).astype(np.uint8),
            label=np.int64(row["label"]), prob=np.float32(row["prob"]), slice=np.str_(row["slice"]), path=np.str_(row["image"]),
        ))
    written_inputs.add(image_id)
    arrays = {"map": a.astype(np.float32)}
    for key, v in extras.items():
        if isinstance(v, torch.Tensor) and v.dim() == 3 and tuple(v.shape[-2:]) == a.shape:
            arrays[key] = v.numpy().astype(np.float32)
    atomic_write_bytes(method_maps_file(out, image_id, method), _npz_bytes(**arrays))


# ---- the batched implementation -----------------------------------------------------------------
#: at most this many deletion images go through the classifier in one call
DELETION_BATCH = 256


@contextlib.contextmanager
def _batch_at_least(ex: Any, n: int):
    """Let a medXGAN explainer (one with an inversion ``engine``) take ``n`` images in one ``attribute`` call,
    i.e. one batched inversion of all of them, instead of splitting them into its ``batch_size``; restored
    afterwards. The inversion optimises each image's codes on its own (per-image loss, element-wise Adam),
    so the maps change by floating-point batching differences only. The baselines keep their batch size:
    they gain nothing from a larger one (IG and occlusion batch internally, SmoothGrad goes image by
    image) and occlusion's memory grows with it."""
    old = getattr(ex, "batch_size", None)
    if getattr(ex, "engine", None) is not None and isinstance(old, int) and n > old:
        ex.batch_size = n
    try:
        yield
    finally:
        if isinstance(old, int):
            ex.batch_size = old


#: the keys of ``evaluate(noisy_inversion=...)``: ``start`` ("scratch": as any image, the default behaviour;
#: "clean": restart 0 of each noisy or perturbed copy starts at the codes of its clean image), and any
#: :func:`medxgan.gan.inversion.invert` option to override for the copies (e.g. ``steps``, ``restarts``).
NOISY_INVERSION_KEYS = ("start", "steps", "restarts", "lr", "early_stop_patience", "min_rel_improvement")
NOISY_STARTS = ("scratch", "clean")


class _CleanCodes(torch.nn.Module):
    """Stands in for the inversion's encoder (``invert(encoder=...)``): each noisy copy, found by its exact
    pixels, starts at the codes of the clean image it was made from."""

    def __init__(self, table: dict[str, tuple[torch.Tensor, torch.Tensor]]):
        super().__init__()
        self.table = table

    def forward(self, x: torch.Tensor):
        z = [self.table[image_key(t)] for t in x]
        return torch.stack([a for a, _ in z]).to(x.device), None, torch.stack([b for _, b in z]).to(x.device), None


@contextlib.contextmanager
def _noisy_inversion(ex: Any, x: torch.Tensor, sources: list[tuple[int, torch.Tensor]], opts: dict[str, Any] | None):
    """While the copies in ``sources`` ((index of the clean image in ``x``, copy)) are explained, invert them
    with the overrides of ``opts`` (medXGAN explainers only; no-op without ``opts``)."""
    eng = getattr(ex, "engine", None)
    if not opts or eng is None:
        yield
        return
    saved = eng.inversion_config, eng.encoder
    eng.inversion_config = saved[0].replace(**{k: v for k, v in opts.items() if k != "start"})
    if opts.get("start", "scratch") == "clean":
        cf = eng.counterfactuals(x)  # the clean images: already inverted, from the cache
        eng.encoder = _CleanCodes({image_key(c): (cf.z1[j], cf.z2[j]) for j, c in sources})
    try:
        yield
    finally:
        eng.inversion_config, eng.encoder = saved


def _noisy_maps(ex: Any, x: torch.Tensor, todo: list[int], ids: list[str], sigmas: list[float], seed: int,
                noisy_inversion: dict[str, Any] | None = None) -> dict[float, list]:
    """The maps of the noisy copies of every noise level, explained as one batch (same seeded noise as the
    reference: image ``ids[i]``, salt = sigma index + 1)."""
    if not sigmas:
        return {}
    k = len(todo)
    copies = []
    for si, s in enumerate(sigmas):
        noise = torch.stack([
            torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(_seed_for(seed, ids[i], si + 1))) for i in todo
        ])
        copies.append((x + s * noise).clamp(-1.0, 1.0))
    with _batch_at_least(ex, k * len(sigmas)), _noisy_inversion(ex, x, [(j, c[j]) for c in copies for j in range(k)], noisy_inversion):
        maps, _, _ = _explain_safe(ex, torch.cat(copies))
    return {s: maps[si * k : (si + 1) * k] for si, s in enumerate(sigmas)}


def _perturbations(x1: torch.Tensor, seed: int, radius: float, n_perturb: int) -> torch.Tensor:
    """Max-sensitivity's perturbed copies of one image (1 x C x H x W), drawn exactly as
    :func:`medxgan.evaluate.robustness.max_sensitivity` has Captum draw them (one seeded generator,
    uniform noise in the L-inf ball), then clamped to [-1, 1] as the reference's explanation function does."""
    t = torch.repeat_interleave(x1, n_perturb, dim=0)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    noise = torch.rand(t.shape, generator=gen, dtype=t.dtype) * 2 - 1
    return (t + noise.to(t.device) * radius).clamp(-1.0, 1.0)


def _sensitivity(clean: np.ndarray, perturbed: list[np.ndarray]) -> float:
    """Captum's ``sensitivity_max`` from the clean map and the maps of the perturbed copies: max over the
    copies of ||E(x + d) - E(x)||_F / ||E(x)||_F (the norm of a zero clean map taken as 1), in float32."""
    e = torch.from_numpy(clean).reshape(1, -1)
    n = len(perturbed)
    ep = torch.stack([torch.from_numpy(m).reshape(-1) for m in perturbed])
    sens = (e.repeat_interleave(n, dim=0) - ep).view(n, -1)
    norm = torch.norm(e, p="fro", dim=1, keepdim=True).repeat_interleave(n, dim=0)
    norm = torch.where(norm == 0.0, torch.tensor(1.0, dtype=norm.dtype), norm)
    v = (torch.norm(sens, p="fro", dim=1, keepdim=True) / norm).view(1, -1).max(dim=1).values
    return float(v.double()[0])


def _max_sensitivities(ex: Any, x: torch.Tensor, todo: list[int], maps: list, ids: list[str], seed: int, ms_todo: set[int],
                       radius: float, n_perturb: int, noisy_inversion: dict[str, Any] | None = None) -> dict[int, float | None]:
    """Max-sensitivity of every image of ``ms_todo`` (positions in the chunk -> value), the perturbed copies
    of all of them explained as one batch and compared with the clean maps already computed (Captum's
    ``sensitivity_max`` explains the clean image again: the same map). A non-finite map in the batch falls
    back to one image at a time, as the reference does (None for that image)."""
    js = [j for j, i in enumerate(todo) if i in ms_todo and maps[j] is not None]
    out: dict[int, float | None] = {j: None for j, i in enumerate(todo) if i in ms_todo}
    if not js:
        return out
    pert = [_perturbations(x[j : j + 1], _seed_for(seed, ids[todo[j]], 0), radius, n_perturb) for j in js]

    sources = [(j, c) for q, j in enumerate(js) for c in pert[q]]

    def explain(batch: torch.Tensor) -> list[np.ndarray]:
        with _batch_at_least(ex, batch.shape[0]), _noisy_inversion(ex, x, sources, noisy_inversion), torch.enable_grad():
            e = ex.explain(batch)
        return [e.maps[q, 0].numpy().astype(np.float32) for q in range(batch.shape[0])]

    try:
        pm = explain(torch.cat(pert))
        for q, j in enumerate(js):
            out[j] = _sensitivity(maps[j], pm[q * n_perturb : (q + 1) * n_perturb])
    except RuntimeError as exc:
        if not _is_nonfinite_error(exc):
            raise
        for q, j in enumerate(js):
            try:
                out[j] = _sensitivity(maps[j], explain(pert[q]))
            except RuntimeError as exc2:
                if not _is_nonfinite_error(exc2):
                    raise
                out[j] = None
    return out


def _deletion_curves(prob_fn: Any, x: torch.Tensor, maps: list[np.ndarray], fractions: list[float]) -> list[dict[str, dict]]:
    """Both deletion curves (mean, blur) of every image of the chunk, their images classified together
    (at most :data:`DELETION_BATCH` per classifier call) instead of one call per curve."""
    parts = []
    for j, a in enumerate(maps):
        for rep in ("mean", "blur"):
            parts.append((j, rep, *deletion_inputs(x[j], a, fractions=fractions, replacement=rep)))
    xb = torch.cat([p[2] for p in parts])
    with torch.no_grad():
        p_all = torch.cat([torch.as_tensor(prob_fn(xb[s : s + DELETION_BATCH])).detach().reshape(-1).cpu()
                           for s in range(0, xb.shape[0], DELETION_BATCH)])
    out: list[dict[str, dict]] = [{} for _ in maps]
    start = 0
    for j, rep, xs, ks, valid in parts:
        d = deletion_scores(p_all[start : start + xs.shape[0]], ks, valid)
        start += xs.shape[0]
        out[j][f"deletion_{rep}"] = {"auc": d["auc"], "probs": d["probs"], "flipped": d["flipped"]}
    return out


def evaluate_pairs(ex: Any, todo: list[int], inputs: ChunkInputs, ms_todo: set[int], noisy_inversion: dict[str, Any] | None = None) -> list[dict]:
    """The rows of the images ``todo`` (a chunk) for explainer ``ex``, batched (see the module docstring);
    the same rows as :func:`evaluate_pairs_reference` within floating-point batching differences unless
    ``noisy_inversion`` is set (see :data:`NOISY_INVERSION_KEYS`; it changes the medXGAN methods' robustness
    and sensitivity numbers)."""
    c, sel = inputs, inputs.sel
    x = sel.images[todo]
    maps, a_all, extras, per_image_s = _clean_maps(ex, x)

    noisy_maps = _noisy_maps(ex, x, todo, sel.ids, c.sigmas, c.seed, noisy_inversion)
    sens = {} if getattr(ex, "ground_truth", False) else _max_sensitivities(ex, x, todo, maps, sel.ids, c.seed, set(ms_todo),
                                                                           **_ms_args(c.ms_kw), noisy_inversion=noisy_inversion)
    deletions = _deletion_curves(c.prob_fn, x, a_all, c.fractions)
    return _rows(ex, todo, x, (maps, a_all, extras, per_image_s), c, deletions, noisy_maps, sens)


def _ms_args(ms_kw: dict[str, Any]) -> dict[str, Any]:
    return {"radius": float(ms_kw["radius"]), "n_perturb": int(ms_kw["n_perturb"])}


#: ``evaluate(implementation=...)`` -> the function that computes the rows of one chunk.
IMPLEMENTATIONS = {"batched": evaluate_pairs, "reference": evaluate_pairs_reference}


def check_noisy_inversion(opts: dict[str, Any] | None) -> dict[str, Any] | None:
    """Validate ``evaluate(noisy_inversion=...)``; None/{} -> None (today's behaviour)."""
    from medxgan.runtime.errors import MedxganError

    if not opts:
        return None
    bad = [k for k in opts if k not in NOISY_INVERSION_KEYS]
    if bad:
        raise MedxganError(f"noisy_inversion: unknown key(s) {', '.join(bad)} (choose from {', '.join(NOISY_INVERSION_KEYS)})", arg="noisy_inversion")
    if opts.get("start", "scratch") not in NOISY_STARTS:
        raise MedxganError(f"noisy_inversion start {opts['start']!r}: choose {' or '.join(NOISY_STARTS)}", arg="noisy_inversion")
    return dict(opts)
