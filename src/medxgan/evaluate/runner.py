"""The benchmark runner behind ``medxgan evaluate``: every method on the same images, the same metrics.

    from medxgan.evaluate.runner import evaluate
    res = evaluate("data/brain", "eval/", gan="runs/gan", n=200)        # classifier: the GAN run's
    res = evaluate("data/brain", "eval/", gan="runs/gan", config=EvaluateConfig(n_resamples=200, noise_sigmas=()))
    res["methods"]["gradcam"]["metrics"]["localisation.iou_area_matched"]  # {"mean", "lo", "hi", "n", "n_invalid"}

Pieces: :mod:`medxgan.evaluate.selection` picks the images (``select_images``),
:mod:`medxgan.evaluate.store` keeps the per-image rows (``ResultStore``: run.json, per_image.jsonl,
shard merge), :mod:`medxgan.evaluate.pairs` computes the rows of one chunk of images for one method
(batched; its reference per-image loops behind ``implementation="reference"``), this module runs the method
loop (``_run_methods``), aggregates (``_results``) and writes results.json/csv/md (``_write_results``);
``evaluate`` reads top to bottom over them.

What is evaluated
-----------------
1. The classifier scores every image of the split; each image falls in one slice (threshold 0.5):
   TP, FN, FP, TN. The counts are reported. ``subset`` picks the images that are explained
   (default ``"pred-pos"`` = TP + FP: explanations of a *positive* decision, what medXGAN explains);
   they are put in a seeded random order and the first ``n`` are kept (so a larger ``n`` later
   extends the same run).
2. Each method explains each image (the positive-class logit; see :mod:`medxgan.explain.baselines`).
   Per (image, method):

   * ``localisation.*`` -- only for true positives with a non-empty mask; the map's magnitude |A| is
     scored (``localisation_metrics(A, M, mode="abs")``): pointing game, IoU at the area-matched
     threshold and at Otsu, relevance mass and rank, pixel AUROC / AUPRC.
   * ``deletion_mean.*`` / ``deletion_blur.*`` -- deletion curve (top-k % pixels of |A| replaced by
     the image mean / a Gaussian-blurred copy, k in ``fractions``): ``probs[i]`` p(pos) after
     deleting ``[0, *fractions][i]``, ``auc`` (mean p over the curve, lower = more faithful),
     ``flipped[i]`` (p < 0.5; its mean is the flip rate).
   * ``robustness.noise_<sigma>.{ssim,spearman,top10}`` -- the image plus Gaussian noise of std sigma
     ([-1, 1] units, clamped to [-1, 1], seeded per image) is explained again; SSIM, Spearman and
     top-10 % overlap between the clean and the noisy |A|.
   * ``sensitivity.max`` -- Captum's max-sensitivity (radius, perturbations as configured) for the
     first ``max_sensitivity_n`` images of the selection only (it re-explains each image
     ``max_sensitivity_samples`` times: costly for medXGAN); off with ``max_sensitivity=False``.
   * ``counterfactual.*`` -- methods whose extras carry ``x_neg`` (medXGAN): validity for the
     classifier and for the GAN run's independent oracle (NaN without one), proximity.
   * ``shortcut.*`` -- when ``DATA/markers/`` exists (``medxgan synth --shortcut``): relevance mass
     of |A| on the marker and on the lesion (:mod:`medxgan.evaluate.shortcut`).
   * ``map.constant`` -- the map is constant (e.g. all zero: Grad-CAM's ReLU on a negative logit); its
     mean is the share of such degenerate maps. Two all-zero maps have SSIM 1 and top-k overlap 1
     (raster tie rule) but Spearman NaN: read robustness together with this rate.
   * ``cost.time_s`` -- wall time of the clean explanation per image (batch time / batch size).
3. Aggregation per method and metric over the images where the metric applies: mean and 95 %
   percentile-bootstrap interval (``n_resamples`` = 1000), NaN values skipped and counted as invalid
   (:func:`medxgan.evaluate.stats.aggregate`). A method whose map is NaN/inf for an image does not stop
   the run: the image is counted in ``n_invalid_maps`` and its metrics are NaN.

Output directory (the layout is spelled in :mod:`medxgan.evaluate.store`)
----------------
::

    OUT/
      run.json             the settings that must not change between resumed runs (checked on restart)
      per_image.jsonl      one JSON line per finished (image, method), appended and flushed at once
      results.json         config, versions, slice counts, notes, aggregated metrics per method (with CIs),
                           timings, per-image rows (NaN written as null)
      results.csv          method,metric,mean,lo,hi,n,n_invalid
      results.md           Markdown tables, methods as rows, "mean [lo, hi]" cells
      plots/               (written by the caller, ``medxgan.report.plots.write_plots(results, OUT / "plots")``;
                           the CLI and the demo do) bars_<group>.png (localisation, faithfulness_robustness_cost, counterfactual,
                           shortcut: one panel per metric), deletion_{mean,blur}.png, noise_{ssim,spearman,top10}.png
      maps/<image_id>/input.npz      image (C x H x W float32 in [-1, 1]), mask (H x W uint8, lesion),
                                     marker (H x W uint8, zeros without one), label, prob (classifier p(pos)),
                                     slice ("TP"/"FP"/...), path (relative to DATA)
      maps/<image_id>/<method>.npz   map (H x W float32, the raw signed attribution), plus the method's
                                     per-image image-shaped extras (medXGAN: x_pos, x_neg C x H x W,
                                     signed_difference 1 x H x W, ...), float32

``image_id`` is the image's path relative to DATA without its suffix, with ``/`` replaced by ``__``
and other unusual characters by ``_`` (e.g. ``test__positive__brain_00012``); it is the ``image_id``
of the per-image rows, so the report can find the maps of any row.

Resuming: completed (image, method) pairs found in ``per_image.jsonl`` are skipped, a partial last line
(a killed run) is dropped, and the aggregation is always recomputed from the file. Changing the data,
split, classifier, GAN, seed, noise levels, deletion fractions or subset needs a new OUT (or
``overwrite=True``); methods and ``n`` may change freely.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from medxgan.classifiers import as_classifier
from medxgan.data import load_dataset
from medxgan.evaluate.config import DEFAULT_NOISE_SIGMAS, EvaluateConfig
from medxgan.evaluate.oracle_calibration import ORACLE_RULE, TWIN_ACCEPT_CONFIDENCE, calibrate_oracle, twin_specificity
from medxgan.evaluate.pairs import IMPLEMENTATIONS, ChunkInputs
from medxgan.evaluate.review import review_sections
from medxgan.evaluate.twins import TwinEffect, prepare_twin_infill
from medxgan.evaluate.selection import SUBSETS, Selection, data_fingerprint, image_id_for, select_images
from medxgan.evaluate.stats import aggregate
from medxgan.evaluate.store import RESULTS_CSV, RESULTS_JSON, RESULTS_MD, ResultStore, clean_json, read_per_image, read_run_settings
from medxgan.evaluate.tables import results_csv, results_markdown
from medxgan.classifiers.checks import prediction_check
from medxgan.explain.baselines import BASELINE_METHODS, EXPLAINERS, MEDXGAN_METHODS, MINIMAL_MASK_METHODS, build_explainers, gradcam_unavailable
from medxgan.explain.model import as_medxgan
from medxgan.runtime import distributed as dist
from medxgan.runtime.atomic import atomic_write_json, atomic_write_text
from medxgan.runtime.device import pick_device
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.progress import progress
from medxgan.runtime.runs import fingerprint_module
from medxgan.runtime.version import __version__

__all__ = ["evaluate", "EvaluateConfig", "DEFAULT_NOISE_SIGMAS", "SUBSETS", "image_id_for", "read_per_image"]
_GROUPS = ("map", "localisation", "deletion_mean", "deletion_blur", "robustness", "sensitivity", "counterfactual", "flip",
           "counterfactual_residual", "twin_agreement", "twin_fidelity", "shortcut", "cost")


# ---- small helpers ---------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    v = {"medxgan": __version__, "torch": torch.__version__, "numpy": np.__version__,
         "python": platform.python_version()}
    for mod in ("captum", "matplotlib", "scipy", "sklearn", "skimage", "torchmetrics"):  # the metric libraries too
        try:
            v[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover - optional
            v[mod] = "not installed"
    return v


# ---- loading the models ----------------------------------------------------------------------
def _load_models(classifier: Any, gan: Any, device: torch.device, inversion: Any, minimal_mask: Any = None) -> tuple[Any, Any, str | None]:
    """(classifier adapter, MedXGANModel or None, gan description)."""
    clf = as_classifier(classifier, device=device) if classifier is not None else None
    model = gan_desc = None
    if gan is not None:
        model = as_medxgan(gan, classifier=clf, device=device, inversion=inversion, minimal_mask=minimal_mask)
        gan_desc = str(model.run_path) if model.run_path is not None else type(gan).__name__
        if clf is None:
            clf = model.classifier
    if clf is None:
        raise MedxganError("classifier is required without gan (the GAN run's classifier is the default)", arg=("classifier", "gan"))
    clf.eval()
    return clf, model, gan_desc


# ---- the runner ------------------------------------------------------------------------------
def evaluate(
    data: str | os.PathLike,
    out: str | os.PathLike,
    classifier: Any = None,
    gan: Any = None,
    methods: Sequence[str] | None = None,
    n: int | None = None,
    config: EvaluateConfig | None = None,
    *,
    explainers: Sequence[Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Run the benchmark and write ``out`` (see the module docstring). Returns the results dict
    (the content of ``results.json`` plus ``"run": {"computed", "skipped"}`` pair counts).

    Args:
        data: dataset root (class-folder layout with masks, see docs/CONTRACTS.md).
        out: output directory (created; resumed when it holds a compatible run).
        classifier: classifier spec (run dir / TorchScript / factory) or adapter; default: the GAN run's.
        gan: GAN run directory, ``MedXGAN``/``MedXGANModel`` or ``GanRun`` (``as_medxgan``); without it the medXGAN methods are skipped.
        methods: registry names (:data:`medxgan.explain.baselines.EXPLAINERS`); default all
            (medXGAN ones only with ``gan``).
        n: at most this many images (after the seeded shuffle); None = all of ``subset``.
        config: the settings (:class:`~medxgan.evaluate.config.EvaluateConfig`: split, subset, noise levels,
            deletion fractions, seed, device, batch size, max-sensitivity, bootstrap, inversion, sanity,
            implementation, noisy_inversion, gradcam_layer, ...); keyword ``options`` override single fields
            (``evaluate(data, out, gan=run, n_resamples=200)``).
        explainers: ready Explainer instances to use instead of ``methods`` (names must be unique).

    ``results["sanity"]`` (with ``sanity``): cascading model-parameter randomisation of the classifier on the
    first ``sanity_n`` evaluated images (:mod:`medxgan.evaluate.sanity`). ``results["realism"]`` (counterfactual
    realism / minimality, :mod:`medxgan.evaluate.realism`) is added whenever there are saved counterfactuals and
    an oracle (:mod:`medxgan.evaluate.review`). ``noisy_inversion`` (off by default) CHANGES the medXGAN methods'
    robustness and sensitivity numbers (it measures how stable the explanation is given the clean solution);
    it is recorded in run.json and the notes.
    """
    t_start = time.perf_counter()
    cfg = (config or EvaluateConfig()).replace(**options).checked(n)
    dev = pick_device(cfg.device) if not isinstance(cfg.device, torch.device) else cfg.device
    data_root, out = Path(data), Path(out)
    notes: list[str] = []

    clf, model, gan_desc = _load_models(classifier, gan, dev, cfg.inversion, cfg.minimal_mask)
    size, channels, inversion_used, inversion_encoder = _gan_settings(model, cfg.size, cfg.channels, cfg.inversion, notes)
    exps = _explainers(explainers, methods, clf, model, cfg.batch_size, notes, cfg.gradcam_layer, cfg.method_options)
    oracle = model.oracle if model is not None else None

    ds = load_dataset(data_root, split=cfg.split, size=size, channels=channels, positive=cfg.positive, negative=cfg.negative,
                      csv=cfg.csv, skip_bad=cfg.skip_bad)
    sel = select_images(ds, clf, dev, data_root, split=cfg.split, subset=cfg.subset, n=n, seed=cfg.seed)
    prepare_twin_infill(getattr(model, "engine", None), sel.images, sel.twins, sel.has_twin)  # --infill twin only (issue 31)
    calibration = _calibrate_oracle(oracle, data_root, cfg, sel, dev, notes, point_rule=_started_under_point_rule(out, cfg),
                                    run_config=getattr(model, "config", None) or {})
    # a classifier that calls every scan of a mixed set one class is decoded or targeted wrongly: warn and record it
    clf_check = prediction_check(sel.probs, sel.labels, f"the {len(sel.labels)} scans of {data_root}", getattr(clf, "name", "classifier"))
    if clf_check["one_class"]:
        notes.append(f"WARNING: {clf_check['warning']}")
    if sel.twins is not None and explainers is None:  # phantoms with lesion-free twins: the ground-truth row
        exps.append(TwinEffect(clf, sel.images, sel.twins, sel.has_twin))
        notes.append("twin: the ground truth, |x - twin| with the lesion-free twin of each positive (phantom data); "
                     "its counterfactual is the twin itself (validity of the true lesion-free scan).")
    method_names = [e.name for e in exps]
    gradcam_used = _resolve_gradcam(exps, sel.images, notes)
    if hasattr(clf, "check_finite") and len(sel.images):  # before anything is written: NaN scores / no gradient in one line
        clf.check_finite(sel.images[:cfg.batch_size].to(dev), "the images to evaluate", grad=any(m not in ("occlusion", "twin") for m in method_names))

    # -- the result store: settings that must not change between resumed runs, finished pairs
    models = dict(classifier=classifier, clf=clf, model=model, gan_desc=gan_desc, oracle=oracle, inversion=inversion_used,
                  inversion_encoder=inversion_encoder, gradcam=gradcam_used,
                  oracle_threshold_logit=calibration["threshold_logit"] if calibration else 0.0,
                  oracle_rule=ORACLE_RULE if calibration and calibration.get("confidence") is not None else None)
    # a folder written before the data fingerprint (its run.json names the data by path) resumes when the path is the same
    store = ResultStore(out).open(_fixed_settings(cfg, data_root, sel, models), cfg.overwrite, data_path=str(data_root.resolve()))
    _check_method_options(store, cfg.method_options, out)
    record = _config_record(cfg, data_root, n, sel, method_names, dev, models, clf_check)

    # -- the method loop: chunks of images, every method, only the missing pairs
    ms_limit = len(sel.selected) if cfg.max_sensitivity_n is None else min(len(sel.selected), int(cfg.max_sensitivity_n))
    computed = _run_methods(exps, sel, store, clf=clf, oracle=oracle, dev=dev, cfg=cfg, ms_positions=set(range(ms_limit)) if cfg.max_sensitivity else set(),
                            maps_out=out if cfg.save_maps else None, oracle_threshold_logit=models["oracle_threshold_logit"])
    if store.world > 1:  # merge the shards into one output on rank 0
        computed = int(sum(dist.all_gather_object(computed)))
        dist.barrier()
        if store.rank != 0:
            return {"rank": store.rank, "computed": computed}
        store.merge()

    # -- aggregation (always from the file's rows of the current selection) and the output files
    results = _results(store.rows(), sel, exps, record, notes, n_resamples=cfg.n_resamples, seed=cfg.seed, ms_limit=ms_limit,
                       computed=computed, wall_s=time.perf_counter() - t_start)
    if calibration is not None:  # the judge's threshold and its specificity on the evaluated split's twins (issue 31)
        results["oracle_calibration"] = clean_json({**calibration, "test_split": cfg.split, "test_twins": twin_specificity(
            oracle, sel.twins, sel.has_twin, calibration["threshold_logit"], device=dev, n_resamples=cfg.n_resamples, seed=cfg.seed)})
    heavy = [e for e in exps if e.name not in cfg.light_methods]  # the sanity check re-explains: not the light methods
    results.update(review_sections(out, results, sel, heavy, clf, oracle, sanity=cfg.sanity, sanity_n=cfg.sanity_n, seed=cfg.seed,
                                   n_resamples=cfg.n_resamples, save_maps=cfg.save_maps))
    _write_results(out, results)
    return results


def _fixed_settings(cfg: EvaluateConfig, data_root: Path, sel: Selection, models: dict[str, Any]) -> dict[str, Any]:
    """What run.json records: the settings that must not change between resumed runs."""
    h, w = sel.images.shape[-2:]
    model = models["model"]
    return clean_json({
        "data_fingerprint": data_fingerprint(sel), "split": cfg.split, "subset": cfg.subset, "size": [int(h), int(w)], "channels": int(sel.images.shape[1]),
        "classifier_fingerprint": getattr(models["clf"], "fingerprint", None),
        "gan_fingerprint": fingerprint_module(model.generator) if model is not None else None,
        "seed": int(cfg.seed), "noise_sigmas": list(cfg.noise_sigmas), "fractions": list(cfg.fractions),
        "max_sensitivity": {"on": bool(cfg.max_sensitivity), "radius": cfg.max_sensitivity_radius, "samples": cfg.max_sensitivity_samples},
        "inversion": models["inversion"], "inversion_encoder": models["inversion_encoder"],
        **({"noisy_inversion": cfg.noisy_inversion} if cfg.noisy_inversion else {}),
        **({"gradcam_layer": models["gradcam"]} if models["gradcam"] else {}),
        # only when calibrated away from the oracle's own level: older folders (no key) resume unchanged
        **({"oracle_threshold_logit": models["oracle_threshold_logit"]} if models["oracle_threshold_logit"] != 0.0 else {}),
        # the confidence-bound calibration (2026-12-07); folders started under the point rule have no key and keep that rule
        **({"oracle_rule": models["oracle_rule"]} if models.get("oracle_rule") else {}),
    })


def _config_record(cfg: EvaluateConfig, data_root: Path, n: int | None, sel: Selection, method_names: list[str], dev: torch.device,
                   models: dict[str, Any], clf_check: dict[str, Any]) -> dict[str, Any]:
    """What results.json records as ``config``."""
    h, w = sel.images.shape[-2:]
    classifier, clf = models["classifier"], models["clf"]
    return clean_json({
        "data": str(data_root), "split": cfg.split, "subset": cfg.subset, "n": n, "n_selected": len(sel.selected),
        "classifier": str(classifier) if classifier is not None and not isinstance(classifier, torch.nn.Module) else getattr(clf, "name", "classifier"),
        "classifier_fingerprint": getattr(clf, "fingerprint", None), "gan": models["gan_desc"],
        "oracle": models["oracle"] is not None, "methods": method_names, "noise_sigmas": list(cfg.noise_sigmas), "fractions": list(cfg.fractions),
        "seed": cfg.seed, "device": str(dev), "batch_size": cfg.batch_size, "image_size": [int(h), int(w)],
        "channels": int(sel.images.shape[1]), "max_sensitivity": bool(cfg.max_sensitivity),
        "max_sensitivity_n": cfg.max_sensitivity_n, "max_sensitivity_radius": cfg.max_sensitivity_radius,
        "max_sensitivity_samples": cfg.max_sensitivity_samples, "n_resamples": cfg.n_resamples,
        "score": "abs", "blur_sigma_px": max(int(h), int(w)) / 16.0, "markers": sel.markers is not None,
        "inversion": models["inversion"], "inversion_encoder": models["inversion_encoder"],
        "sanity": bool(cfg.sanity), "sanity_n": int(cfg.sanity_n), "noisy_inversion": cfg.noisy_inversion,
        "classifier_check": clf_check, "gradcam_layer": models["gradcam"], "oracle_threshold_logit": models["oracle_threshold_logit"],
        "oracle_twin_target": cfg.oracle_twin_target, "light_methods": list(cfg.light_methods),
        "method_options": cfg.method_options or {},
        "classifier_target": clf.target_description() if hasattr(clf, "target_description") else None,
        **({"infill_selection": sel_infill.to_dict()} if (sel_infill := getattr(models.get("model"), "infill_selection", None)) else {}),
    })


def _gan_settings(model: Any, size: int | None, channels: int | None, inversion: dict | None,
                  notes: list[str]) -> tuple[int | None, int | None, dict | None, str | None]:
    """(size, channels, effective inversion settings, encoder kind): the GAN's own size and channels."""
    if model is None:  # nothing is inverted: the options given are recorded as given
        return size, channels, inversion.changes() if hasattr(inversion, "changes") else inversion, None
    if (size is not None and int(size) != int(model.size)) or (channels is not None and int(channels) != int(model.channels)):
        raise MedxganError(f"size/channels: the GAN works on {model.size} px, {model.channels} channel(s); "
                           f"got size {size}, channels {channels} (leave them out)", arg=("size", "channels"))
    notes.append(model.inversion_note())
    enc = model.encoder_info
    # the effective schedule (an encoder changes it), so that resuming never mixes two schedules
    return int(model.size), int(model.channels), clean_json(dict(model.engine.inversion)) or None, enc["kind"] if enc else None


def _explainers(explainers: Sequence[Any] | None, methods: Sequence[str] | None, clf: Any, model: Any, batch_size: int,
                notes: list[str], gradcam_layer: str | None = None, method_options: dict[str, dict[str, Any]] | None = None) -> list[Any]:
    """The explainers to evaluate: given instances, or registry names (medXGAN ones only with a GAN)."""
    if explainers is not None:
        exps = list(explainers)
    else:
        names = list(methods) if methods else list(BASELINE_METHODS) + list(MEDXGAN_METHODS)
        why_not = gradcam_unavailable(clf) if not methods and gradcam_layer is None else None
        if why_not:  # the default set on a classifier Grad-CAM cannot hook: skip it (asked for by name: refused)
            names.remove("gradcam")
            notes.append(f"Grad-CAM skipped: {why_not}.")
        if model is None and any(m in MEDXGAN_METHODS for m in names):
            skipped = [m for m in names if m in MEDXGAN_METHODS]
            names = [m for m in names if m not in MEDXGAN_METHODS]
            notes.append(f"medXGAN methods skipped ({', '.join(skipped)}): no GAN run given (--gan).")
        if not methods and model is not None and not model.engine.refines_mask:  # the default set: the mask map needs a minimal mask
            names = [m for m in names if m not in MINIMAL_MASK_METHODS]
            notes.append(f"{', '.join(MINIMAL_MASK_METHODS)} skipped: this GAN's explanations use no minimal mask.")
        if not names:
            raise MedxganError("methods: nothing to evaluate (the medXGAN methods need --gan)", arg="methods")
        exps = build_explainers(names, clf, gan=model, batch_size=batch_size, gradcam_layer=gradcam_layer)
        exps = [_with_options(e, clf, batch_size, (method_options or {}).get(e.name), notes) for e in exps]
    names = [e.name for e in exps]
    if len(set(names)) != len(names):
        raise MedxganError(f"methods: duplicate names {names}")
    return exps


def _check_method_options(store: ResultStore, method_options: dict[str, dict[str, Any]] | None, out: Path) -> None:
    """A resumed evaluation never mixes rows of one method made with other settings (``method_options``; rows record them,
    rows without the record were made with the defaults). Per method, so a method added later (the demo's perturbation
    baselines in an older evaluation folder) may bring its own."""
    for (_, method), row in store.done.items():
        have, want = row.get("method_options") or None, (method_options or {}).get(method) or None
        if have != want:
            raise MedxganError(f"{out}: its rows of {method} were made with options {have or 'default'}, this run asks for "
                               f"{want or 'default'}; use another --out or --overwrite", arg="method_options")


def _with_options(ex: Any, clf: Any, batch_size: int, options: dict[str, Any] | None, notes: list[str]) -> Any:
    """The baseline ``ex`` rebuilt with non-default settings (``EvaluateConfig.method_options``), noted; as is without."""
    if not options:
        return ex
    if ex.name in MEDXGAN_METHODS or ex.name == "gradcam":
        raise MedxganError(f"method_options {ex.name}: only the other baselines take options here", arg="method_options")
    try:
        out = EXPLAINERS[ex.name](clf, batch_size=batch_size, **options)
    except TypeError as exc:
        raise MedxganError(f"method_options {ex.name} {options}: {exc}", arg="method_options") from None
    notes.append(f"{ex.name}: " + ", ".join(f"{k} {v}" for k, v in options.items()) + " (not its default; method_options).")
    return out


def _resolve_gradcam(exps: list[Any], images: torch.Tensor, notes: list[str]) -> str | None:
    """Grad-CAM's layer, found on the first images before any work (so that it is recorded and resuming
    never mixes two layers); its name is noted."""
    for e in exps:
        if hasattr(e, "resolve_layer") and len(images):
            name = e.resolve_layer(images[:2])
            notes.append(f"Grad-CAM layer: {name} ({e.layer_choice}).")
            return name
    return None


def _run_methods(exps: list[Any], sel: Selection, store: ResultStore, *, clf: Any, oracle: Any, dev: torch.device, cfg: EvaluateConfig,
                 ms_positions: set[int], maps_out: Path | None, oracle_threshold_logit: float = 0.0) -> int:
    """Every method on every chunk of selected images whose (image, method) pair is not done yet; rows go
    to the store as soon as a chunk is explained. Under torchrun each rank takes every world-th chunk.
    Returns the number of pairs computed here. ``cfg.implementation`` picks the function that computes the rows
    of one chunk for one method (:func:`medxgan.evaluate.pairs.evaluate_pairs`, or its reference implementation)."""
    pairs_fn = IMPLEMENTATIONS[cfg.implementation]
    pairs_kw = {"noisy_inversion": cfg.noisy_inversion} if cfg.noisy_inversion else {}
    inputs = ChunkInputs(sel, sigmas=list(cfg.noise_sigmas), fractions=list(cfg.fractions), seed=cfg.seed,
                         prob_fn=lambda xb: clf.prob(xb.to(dev)), oracle=oracle, dev=dev,
                         ms_kw=dict(radius=cfg.max_sensitivity_radius, n_perturb=cfg.max_sensitivity_samples), out=maps_out,
                         oracle_threshold_logit=oracle_threshold_logit)
    light_inputs = dataclasses.replace(inputs, sigmas=[])  # shares written_inputs (a shallow copy)
    batch_size = cfg.batch_size
    ids = sel.ids
    pos_of = {idx: k for k, idx in enumerate(sel.selected)}
    chunks = [sel.selected[i : i + batch_size] for i in range(0, len(sel.selected), batch_size)][store.rank :: store.world]
    total = sum(1 for c in chunks for e in exps if any(not store.is_done(ids[i], e.name) for i in c))
    computed = 0
    bar = progress(total=total, desc="evaluate" if store.world == 1 else f"evaluate (rank {store.rank})", disable=not cfg.show_progress)
    with store.writer() as writer:
        for chunk in chunks:
            for ex in exps:
                todo = [i for i in chunk if not store.is_done(ids[i], ex.name)]
                if not todo:
                    continue
                bar.set_postfix_str(ex.name)
                light = ex.name in cfg.light_methods  # no noisy re-explanations, no max-sensitivity (EvaluateConfig.light_methods)
                rows = pairs_fn(ex, todo, light_inputs if light else inputs, set() if light else {i for i in todo if pos_of[i] in ms_positions},
                                **pairs_kw)
                opts = (cfg.method_options or {}).get(ex.name)
                for r in rows if opts else ():  # each row says which settings made it (checked on resume)
                    r["method_options"] = opts
                writer.write(rows)
                computed += len(rows)
                bar.update(1)
    bar.close()
    return computed


def _results(all_rows: dict[tuple[str, str], dict], sel: Selection, exps: list[Any], config: dict[str, Any], notes: list[str], *,
             n_resamples: int, seed: int, ms_limit: int, computed: int, wall_s: float) -> dict[str, Any]:
    """The results dict (what results.json holds): aggregated metrics per method over the selection."""
    method_names = [e.name for e in exps]
    sel_ids = [sel.ids[i] for i in sel.selected]
    per_image = [all_rows[(i, m)] for i in sel_ids for m in method_names if (i, m) in all_rows]
    results_methods = {m: _aggregate_method([r for r in per_image if r["method"] == m], n_resamples, seed) for m in method_names}
    slice_of, selected = sel.slice_of, sel.selected
    n_loc = sum(1 for i in selected if slice_of[i] == "TP" and bool(sel.has_mask[i]) and bool(sel.masks[i].any()))
    notes = notes + _notes(config, n_loc, len(selected), ms_limit, exps, sel.markers is not None)
    return clean_json({
        "config": config,
        "versions": _versions(),
        "slices": {**sel.counts, "total": len(slice_of), "evaluated": len(selected),
                   "evaluated_by_slice": {k: sum(1 for i in selected if slice_of[i] == k) for k in ("TP", "FN", "FP", "TN")},
                   "localisation_images": n_loc, "threshold": 0.5},
        "notes": notes,
        "methods": results_methods,
        "timings": {m: {"s_per_image": results_methods[m]["metrics"].get("cost.time_s", {}).get("mean"),
                        "total_s": float(sum((r.get("time_s") or 0.0) for r in per_image if r["method"] == m))} for m in method_names},
        "per_image": per_image,
        "run": {"computed": computed, "skipped": len(selected) * len(method_names) - computed, "wall_s": wall_s},
    })


def _started_under_point_rule(out: Path, cfg: EvaluateConfig) -> bool:
    """Whether ``out`` holds an evaluation begun before the confidence-bound calibration of the oracle (its run.json has
    no ``oracle_rule``): resumed, it keeps the judge its rows were scored with."""
    old = None if cfg.overwrite else read_run_settings(out)
    return isinstance(old, dict) and "oracle_rule" not in old


def _calibrate_oracle(oracle: Any, data_root: Path, cfg: EvaluateConfig, sel: Selection, dev: torch.device, notes: list[str],
                      point_rule: bool = False, run_config: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The oracle's threshold chosen on the validation split's lesion-free twins (:mod:`medxgan.evaluate.oracle_calibration`),
    or None without an oracle; its status sentence goes into the notes. ``point_rule``: an older folder's rule, kept.

    Evaluated data without validation twins (another brain, tested only: ICBM152 in the real-brain demo) takes the
    threshold from the GAN run's own data (``run_config["data"]``, its class mapping), where the oracle was trained: a
    judge is calibrated once, on its own domain, and its specificity on the evaluated twins is then reported as measured."""
    if oracle is None:
        return None
    if cfg.oracle_twin_target is None:
        rec = {"threshold_logit": 0.0, "threshold_prob": 0.5, "calibrated": False, "target": None, "split": None,
               "status": "not calibrated (oracle_twin_target None): the oracle's own threshold (p 0.5) is used"}
    else:
        h, w = sel.images.shape[-2:]
        shape = dict(size=int(h), channels=int(sel.images.shape[1]), device=dev, target=cfg.oracle_twin_target,
                     confidence=None if point_rule else TWIN_ACCEPT_CONFIDENCE)
        rec = calibrate_oracle(oracle, data_root, **shape, positive=cfg.positive, negative=cfg.negative, csv=cfg.csv, skip_bad=cfg.skip_bad)
        run_data = str((run_config or {}).get("data") or "")
        if not rec["calibrated"] and not point_rule and run_data and Path(run_data).is_dir() and Path(run_data).resolve() != data_root.resolve():
            from medxgan.explain.model import training_class_mapping

            own = calibrate_oracle(oracle, run_data, **shape, **training_class_mapping(run_config or {}), skip_bad=cfg.skip_bad)
            if own["calibrated"]:
                rec = {**own, "data": run_data, "status": f"the evaluated data has no validation twins, so the threshold comes from the "
                                                          f"GAN run's own data {run_data}: {own['status']}"}
    notes.append(f"Oracle threshold: {rec['status']}."
                 + (" (This evaluation folder was begun under the earlier point rule: resumed, it keeps that judge.)"
                    if point_rule and rec.get("calibrated") else ""))
    return rec


def _write_results(out: Path, results: dict[str, Any]) -> None:
    """results.json, results.csv, results.md (the plots are the caller's: ``report.plots.write_plots``)."""
    atomic_write_json(out / RESULTS_JSON, results)
    atomic_write_text(out / RESULTS_CSV, results_csv(results["methods"], results.get("oracle_calibration")))
    atomic_write_text(out / RESULTS_MD, results_markdown(results))


def _aggregate_method(rows: list[dict], n_resamples: int, seed: int) -> dict[str, Any]:
    metrics: dict[str, dict] = {}
    for g in _GROUPS:
        vals = [r["metrics"][g] for r in rows if g in (r.get("metrics") or {})]
        if not vals:
            continue
        for key, st in aggregate(vals, n_resamples=n_resamples, seed=seed).items():
            metrics[f"{g}.{key}"] = st
    return {"n_images": len(rows), "n_invalid_maps": sum(1 for r in rows if r.get("invalid_map")), "metrics": metrics}


def _notes(config: dict, n_loc: int, n_sel: int, ms_limit: int, exps: Iterable[Any], markers: bool) -> list[str]:
    notes = [
        "Every method explains the classifier's positive-class logit; maps are channel-summed, signed; "
        "all metrics score the magnitude |A|.",
        f"Localisation is scored on the true-positive images with a non-empty mask only ({n_loc} of {n_sel} evaluated images).",
        f"Deletion: the top-k % pixels of |A| (k = {', '.join(f'{100 * f:g}' for f in config['fractions'])}) are replaced by the "
        f"image mean or by a Gaussian blur (sigma {config['blur_sigma_px']:g} px); AUC = mean p(pos) over the curve (lower = more faithful).",
    ]
    if config["noise_sigmas"]:
        notes.append("Robustness: Gaussian noise of std " + ", ".join(f"{s:g}" for s in config["noise_sigmas"])
                     + " ([-1, 1] units, seeded per image, clamped to [-1, 1]); SSIM / Spearman / top-10 % overlap of clean vs noisy |A|. "
                     "Two constant (e.g. all-zero) maps count as identical for SSIM and top-10 % (Spearman: undefined); "
                     "see the share of constant maps per method.")
    else:
        notes.append("Robustness to input noise: not computed (no --noise-sigmas).")
    if config["max_sensitivity"]:
        notes.append(f"Max-sensitivity (Captum sensitivity_max, uniform L-inf noise of radius {config['max_sensitivity_radius']:g}, "
                     f"{config['max_sensitivity_samples']} perturbations) computed on the first {ms_limit} of {n_sel} evaluated images per method only.")
    else:
        notes.append("Max-sensitivity: not computed (--no-max-sensitivity).")
    names = [e.name for e in exps]
    if "smoothgrad" in names:
        notes.append("SmoothGrad: 25 samples, noise std 0.1 in [-1, 1] units; IG: 50 steps, baselines -1 (black) and 0 (grey); "
                     "occlusion: window 8 / stride 4 px at 64 px, scaled with the image size, fill 0.")
    mx_names = [n for n in names if n in MEDXGAN_METHODS]
    if len(mx_names) > 1:
        notes.append(f"medXGAN methods share one inversion and minimal mask per image: their cost is in {mx_names[0]}'s time; "
                     f"{', '.join(mx_names[1:])} exclude it.")
    if config.get("noisy_inversion") and any(n.startswith("medxgan") for n in names):
        notes.append(f"medXGAN robustness / max-sensitivity: the noisy copies were inverted with {config['noisy_inversion']} "
                     "(start 'clean' = from the clean image's codes), not like any other image: those numbers measure the "
                     "explanation's stability given the clean solution and are not comparable with a default run.")
    light = [m for m in names if m in (config.get("light_methods") or [])]
    if light:
        notes.append(f"Robustness to noise, max-sensitivity and the sanity check not computed for {', '.join(light)} (light_methods: "
                     "each would re-explain every image 3-10 times more; their cells are empty).")
    if "medxgan-diff" in names:
        notes.append("Flipped (medxgan-diff row): the share of scans whose explained counterfactual crossed the classifier's decision "
                     "level (logit < 0) within the (minimal) mask; where it did not, the map shows the generator's prior, not what "
                     "the classifier needs.")
    if any(n.startswith("medxgan") for n in names) and not config["oracle"]:
        notes.append("No independent oracle in the GAN run: counterfactual validity for the oracle is not reported.")
    if markers:
        notes.append("Shortcut check: relevance mass of |A| on the marker masks (DATA/markers/) vs on the lesion.")
    return notes
