"""`MedXGAN`: the explanation pipeline and the Python API (the same pipeline as `medxgan explain`).

    from medxgan import MedXGAN                    # = medxgan.pipeline.MedXGAN
    mx = MedXGAN.load("runs/gan")                  # generator + the classifier it was trained against
    results = mx.explain(images)                   # images: N x C x H x W in [-1, 1]
    results[0].difference, results[0].lig, results[0].frame_probs, results[0].completeness_error
    mx.explain_files(["scan.dcm", "more/"], "explanations/")   # what the CLI runs

The pipeline sits on top of the layers (like diffusers' ``pipelines/`` above ``models/``): a path
becomes a tensor in ``data/``, is inverted through ``gan/`` by the model of :mod:`medxgan.explain.model`,
explained in ``explain/`` and drawn by :mod:`medxgan.report.explanation`. Nothing below imports it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from medxgan.data import collect_image_files, load_image_tensor
from medxgan.explain.base import NonFiniteMapsError
from medxgan.explain.lig import DEFAULT_TOL
from medxgan.explain.model import ExplanationResult, InfillFallbackWarning, MedXGANModel, as_medxgan
from medxgan.report.explanation import OUTPUT_FILES, write_explanation
from medxgan.report.gallery import GALLERY_FILE, write_gallery
from medxgan.runtime import distributed as dist
from medxgan.runtime.atomic import atomic_replace_dir, atomic_write_json, to_jsonable
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.loop import remove_temp_files
from medxgan.runtime.outdir import is_empty, mark, temp_name
from medxgan.runtime.progress import progress

__all__ = ["MedXGAN", "ExplanationResult", "OUTPUT_FILES", "as_medxgan", "settle_run", "write_explanation"]


class MedXGAN(MedXGANModel):
    """The explanation pipeline: :class:`~medxgan.explain.model.MedXGANModel` (``load``, ``invert``,
    the explainers) plus ``explain`` (inversion -> counterfactual -> maps -> LIG) and ``explain_files``
    (files in, figures + JSON out)."""

    def explain(self, images: Tensor, *, frames: int = 11, lig_steps: int | None = None, lig_form: str = "path", lig_output: str = "logit",
                lig_rule: str = "trapezoid", lig_tol: float | None = None, batch_size: int = 16) -> list[ExplanationResult]:
        """Explain N images (N x C x H x W in [-1, 1]; other sizes/channel counts are converted to the GAN's).

        Args:
            frames: interpolation frames (>= 2).
            lig_steps: LIG path segments (default 32 path / 100 authors); lig_form "path" or "authors";
                lig_output "logit" or "prob"; lig_rule "trapezoid" or "left"; lig_tol: refine LIG while the
                relative completeness error is above it (default 0.05 for the path form).
        """
        if frames < 2:
            raise MedxganError(f"frames {frames}: need at least 2 interpolation frames", arg="frames")
        if lig_form not in ("path", "authors"):
            raise MedxganError(f"lig_form {lig_form}: choose path or authors", arg="lig_form")
        x_all = self._prepare(images)
        if hasattr(self.classifier, "check_finite") and len(x_all):  # NaN scores would make every map NaN
            self.classifier.check_finite(x_all[:batch_size].to(self.device), "the images to explain")
        tol = DEFAULT_TOL if lig_tol is None else lig_tol
        settings = dict(frames=frames, lig_form=lig_form, lig_output=lig_output, lig_rule=lig_rule, lig_tol=tol, inversion=self.engine.inversion)
        if self.infill_selection is not None:  # what --infill auto chose and why, with every explanation
            settings["infill_selection"] = self.infill_selection.to_dict()
        # the same Explainer objects that `evaluate` scores, on the same engine (each image inverted once)
        difference = self.difference_explainer(frames=frames, batch_size=batch_size)
        lig = self.lig_explainer(steps=lig_steps, form=lig_form, output=lig_output, rule=lig_rule, tol=tol, batch_size=batch_size)
        out: list[ExplanationResult] = []
        for s in range(0, x_all.shape[0], batch_size):
            x = x_all[s : s + batch_size]
            try:
                d, g = difference.explain(x), lig.explain(x)
            except NonFiniteMapsError as exc:  # explain has no "invalid map" row (evaluate counts them): one line, no traceback
                raise MedxganError(f"images {s}-{s + len(x) - 1}: {exc}; the classifier's output or gradient is not finite there") from None
            cf = self.engine.counterfactuals(x)  # cached by the explainers: codes, inversion loss, masks
            out.extend(ExplanationResult.from_explanations(i, x[i], cf, d, g, self.engine.counterfactual, settings) for i in range(len(cf)))
        return out

    def explain_files(self, inputs: str | os.PathLike | Sequence[str | os.PathLike], out_dir: str | os.PathLike, *, batch_size: int = 8,
                      show_progress: bool = True, workers: int = 0, **explain_kwargs: Any) -> dict[str, Any]:
        """Explain image files/folders and write figures + JSON per image into ``out_dir/<name>/``,
        ``out_dir/summary.json`` and the gallery page ``out_dir/index.html``. Inputs of another size/channel count are converted to the GAN's.
        Returns the summary dict.

        Streamed: every file is decoded once up front only to check it (a corrupt file stops the run
        before any work is spent), then images are loaded, explained and written one batch at a time,
        so memory does not grow with the number of files. ``workers`` > 0 decodes the next batches in
        that many DataLoader worker processes (pinned memory on CUDA) while the current one is explained.
        Under ``torchrun`` each rank explains every world_size-th file and rank 0 writes the merged
        summary.json.
        """
        all_files = collect_image_files(inputs if isinstance(inputs, (list, tuple)) else [inputs])
        all_names = _unique_names(all_files)
        rank, world = dist.rank(), dist.world_size()
        mine = list(range(rank, len(all_files), world))
        for k in mine:
            load_image_tensor(all_files[k], size=self.size, channels=self.channels)
        out_dir = Path(out_dir)
        # resumable: each image folder is written whole or not at all (temp folder + rename); a batch whose
        # folders are all complete with the same settings is skipped (a killed run continues where it stopped)
        if rank == 0:
            if is_empty(out_dir):  # a folder this call creates: medxgan's (runtime.outdir)
                mark(out_dir, "explain")
            remove_temp_files(out_dir)  # only the project's temp names, only in a marked folder
        dist.barrier()
        key = self._resume_key(batch_size, world, explain_kwargs)
        chunks = [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
        records, todo = [], []
        for chunk in chunks:
            done = [_completed(out_dir / all_names[k], all_files[k], key) for k in chunk]
            if all(r is not None for r in done):
                records.extend(zip(chunk, done))
            else:
                todo.extend(chunk)
        self.resumed = len(mine) - len(todo)
        bar = progress(total=len(mine), initial=self.resumed, desc="explain" if world == 1 else f"explain (rank {rank})", disable=not show_progress)
        loader = torch.utils.data.DataLoader(
            _FileBatches(all_files, todo, self.size, self.channels), batch_size=batch_size, num_workers=workers,
            pin_memory=self.device.type == "cuda", collate_fn=_collate_files)
        try:
            for idx, batch in loader:
                for k, res in zip(idx, self.explain(batch.to(self.device, non_blocking=True), batch_size=batch_size, **explain_kwargs)):
                    records.append((k, _write_whole(res, out_dir, all_names[k], all_files[k], key)))
                    bar.update(1)
                self.engine.clear_cache()  # written to disk; keeping it would grow with the number of files
        finally:
            bar.close()
        if world > 1:
            records = [r for part in dist.all_gather_object(records) for r in part]
        records = [r for _, r in sorted(records, key=lambda kr: kr[0])]
        summary = dict(
            gan=str(self.run_path) if self.run_path else None, size=self.size, channels=self.channels,
            classifier=getattr(self.classifier, "fingerprint", None), n_images=len(records),
            classifier_name=getattr(self.classifier, "name", None),  # the gallery names the classifier and its target
            classifier_target=self.classifier.target_description() if hasattr(self.classifier, "target_description") else None,
            inversion=self.inversion_note(),
            settings=to_jsonable(records[0]["settings"]) if records else {},
            mean_psnr=_mean([r["psnr"] for r in records]),
            mean_completeness_error_rel=_mean([r["lig"]["completeness_error_rel"] for r in records]),
            counterfactual=self.engine.counterfactual,
            resumed=int(sum(dist.all_gather_object(self.resumed)) if world > 1 else self.resumed),
            images=[{k: r[k] for k in ("name", "input", "dir", "prob_input", "prob_reconstruction", "prob_negative", "prob_residual", "psnr")}
                    | {"completeness_error_rel": r["lig"]["completeness_error_rel"], "json": r["files"]["json"]}
                    | {k: r.get(k) for k in ("flipped", "logit_counterfactual", "prior_note")} for r in records],
            n_not_flipped=sum(1 for r in records if r.get("flipped") is False),  # maps that show the generator's prior (issue 31)
        )
        if self.device.type == "cuda":
            summary["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        if rank == 0:
            atomic_write_json(out_dir / "summary.json", summary)
            write_gallery(out_dir, summary)  # out_dir/index.html: every scan, sortable, with its latent slider
        return summary

    def _resume_key(self, batch_size: int, world: int, explain_kwargs: dict[str, Any]) -> dict[str, Any]:
        """What an image folder must have been written with to count as done on a rerun."""
        return to_jsonable(dict(gan=str(Path(self.run_path).resolve()) if self.run_path else None,
                                generator=_fingerprint(self.generator), classifier=getattr(self.classifier, "fingerprint", None),
                                inversion=self.engine.inversion, counterfactual=self.engine.counterfactual, batch_size=batch_size,
                                world=world, explain={k: v for k, v in sorted(explain_kwargs.items())}))


def settle_run(run: str | os.PathLike, device: str = "cpu") -> str | None:
    """What a finished GAN run's preset leaves to its data, settled while the data is at hand (``medxgan train`` calls it):
    the in-fill of ``minimal_mask_infill="auto"`` is chosen on the run's validation scans and kept in the run (with the mean
    healthy scan when that is the choice), so that the run explains the same way where its data is not (trained on a GPU
    machine, explained on a laptop). Returns the one line to print (the choice, or why none was made); None when there is
    nothing to choose (another in-fill in the preset, no minimal mask, an unfinished run)."""
    import warnings

    from medxgan.runtime.runs import RunDir

    cfg = RunDir(Path(run)).read_config()
    inv = ((cfg.get("preset") or {}).get("inversion")) or {}
    if cfg.get("status") != "finished" or inv.get("minimal_mask_infill") != "auto":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mx = MedXGAN.load(run, device=device)
    why = [str(w.message) for w in caught if issubclass(w.category, InfillFallbackWarning)]  # printed as the line instead
    for w in caught:  # every other warning reaches the user as usual
        if not issubclass(w.category, InfillFallbackWarning):
            warnings.warn(w.message, w.category, stacklevel=2)
    if mx.infill_selection is not None:
        return mx.infill_selection.note()
    return why[0] if why else None  # no minimal mask: nothing is filled, nothing to choose


def _fingerprint(module: Any) -> str | None:
    from medxgan.runtime.runs import fingerprint_module

    return fingerprint_module(module) if isinstance(module, torch.nn.Module) else None


def _source_id(path: Path) -> dict[str, Any]:
    from medxgan.data.imageio import source_file

    st = source_file(path).stat()  # a NIfTI slice reference (v.nii.gz#z=4): its volume's file
    return {"path": str(Path(path).resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_whole(res: ExplanationResult, out_dir: Path, name: str, source: Path, key: dict[str, Any]) -> dict[str, Any]:
    """One image's folder, atomically: written into a temp folder, then renamed into place (an older
    folder of the same name is replaced, :func:`~medxgan.runtime.atomic.atomic_replace_dir`). The JSON record
    carries the resume key."""
    import shutil

    final = out_dir / name
    tmp = out_dir / temp_name(f"explain-{name}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        record = write_explanation(res, tmp, source=source, name=name)
        record.update(name=name, dir=str(final), resume={"key": key, "source": _source_id(source)})
        atomic_write_json(tmp / OUTPUT_FILES["json"], record)
        atomic_replace_dir(tmp, final)
    except BaseException:  # a failed write leaves no temp folder behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def _completed(folder: Path, source: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The record of a complete folder written with ``key`` from the same source file, else None."""
    import json

    try:
        record = json.loads((folder / OUTPUT_FILES["json"]).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("resume") != {"key": key, "source": _source_id(source)}:
        return None
    if not all((folder / f).is_file() for f in OUTPUT_FILES.values()):
        return None
    return record


class _FileBatches(torch.utils.data.Dataset):
    """Image files (by index into ``files``) decoded to 1 x C x H x W tensors, for a DataLoader."""

    def __init__(self, files: Sequence[Path], indices: Sequence[int], size: int, channels: int):
        self.files, self.indices, self.size, self.channels = list(files), list(indices), size, channels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, Tensor]:
        k = self.indices[i]
        im = load_image_tensor(self.files[k], size=self.size, channels=self.channels)
        return k, im if im.dim() == 4 else im.unsqueeze(0)


def _collate_files(items: list[tuple[int, Tensor]]) -> tuple[list[int], Tensor]:
    return [k for k, _ in items], torch.cat([t for _, t in items])


def _mean(values: list[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


# names in an explain folder that are not an image's folder
_RESERVED_NAMES = {"summary.json", GALLERY_FILE.lower()}


def _unique_names(files: Sequence[Path]) -> list[str]:
    """Output folder per input: the file stem (sanitised; leading dots dropped, so ``..png`` is "image" and
    no name is hidden or a path step), with -2, -3, ... for repeated stems. Unique against every name
    already given (``x``, ``x``, ``x-2`` -> ``x``, ``x-2``, ``x-2-2``), compared case-insensitively (a
    case-insensitive file system would merge ``X`` and ``x``), never a name the folder uses itself."""
    from medxgan.data.imageio import image_stem  # a NIfTI slice v.nii.gz#z=4 -> v_z_4

    names: list[str] = []
    taken = set(_RESERVED_NAMES)
    for f in files:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", image_stem(f)).lstrip(".") or "image"
        name, n = stem, 1
        while name.lower() in taken:
            n += 1
            name = f"{stem}-{n}"
        taken.add(name.lower())
        names.append(name)
    return names


