"""`MedXGAN`: the Python API of the explanation pipeline (the same pipeline as `medxgan explain`).

    from medxgan import MedXGAN
    mx = MedXGAN.load("runs/gan")                  # generator + the classifier it was trained against
    results = mx.explain(images)                   # images: N x C x H x W in [-1, 1]
    results[0].difference, results[0].lig, results[0].frame_probs, results[0].completeness_error
    mx.explain_files(["scan.dcm", "more/"], "explanations/")   # what the CLI runs

One :class:`~medxgan.explain.counterfactual.CounterfactualEngine` backs everything, so an image is
inverted once however many explanations are asked of it.

Note on layering: this module sits in ``gan/`` but drives ``explain/`` and ``report/``; those are
imported inside the methods so that importing ``medxgan.gan`` stays light and acyclic.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from medxgan.runtime.errors import MedxganError


@dataclass
class ExplanationResult:
    """Everything medXGAN says about one image (CPU tensors; images C x H x W in [-1, 1]).

    Maps are 1 x H x W: ``difference`` = |x_pos - x_neg| and ``signed_difference`` (channel-reduced with
    luminance weights for RGB), ``accumulated_change`` = sum over the interpolation of |x_{i+1} - x_i|,
    ``lig`` (signed, channel-summed path-sum LIG unless ``lig_form="authors"``).
    ``frames``: F x C x H x W along G(z1*, alpha z2*), alpha = ``alphas``; ``frame_probs``: p(pos) per frame.
    ``lig_delta`` = f(x_pos) - f(x_neg) (f = logit unless lig_output="prob"); ``completeness_error`` =
    |sum(lig) - lig_delta|, ``completeness_error_rel`` = that / |lig_delta|.
    """

    input: Tensor
    reconstruction: Tensor
    negative: Tensor
    prob_input: float
    prob_reconstruction: float
    prob_negative: float
    difference: Tensor
    signed_difference: Tensor
    accumulated_change: Tensor
    lig: Tensor
    lig_delta: float
    completeness_error: float
    completeness_error_rel: float
    lig_steps: int
    frames: Tensor
    alphas: list[float]
    frame_probs: list[float]
    psnr: float
    prob_gap: float
    inversion_loss: float
    inversion_steps: int
    z1: Tensor
    z2: Tensor
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-able numbers (no tensors)."""
        return dict(
            prob_input=self.prob_input, prob_reconstruction=self.prob_reconstruction, prob_negative=self.prob_negative,
            psnr=self.psnr, prob_gap=self.prob_gap, inversion_loss=self.inversion_loss, inversion_steps=self.inversion_steps,
            alphas=self.alphas, frame_probs=self.frame_probs,
            lig=dict(form=self.settings.get("lig_form", "path"), output=self.settings.get("lig_output", "logit"),
                     delta=self.lig_delta, sum=float(self.lig.sum()), completeness_error=self.completeness_error,
                     completeness_error_rel=self.completeness_error_rel, steps=self.lig_steps),
        )


class MedXGAN:
    """A trained medXGAN generator + the classifier it explains.

    Args:
        generator: G(z1, z2) with attributes nz1, nz2, channels, size.
        classifier: a ClassifierAdapter (``.logit``, ``.prob``).
        inversion: keyword arguments for :func:`medxgan.gan.inversion.invert` (steps, lr, restarts,
            tune_generator, ...); defaults there.
        oracle, config: optional, kept for reference (from the run directory).
    """

    def __init__(self, generator: nn.Module, classifier: Any, *, inversion: dict[str, Any] | None = None, oracle: Any = None, config: dict[str, Any] | None = None):
        from medxgan.explain.counterfactual import CounterfactualEngine

        self.generator = generator.eval()
        self.classifier = classifier
        self.oracle = oracle
        self.config = dict(config or {})
        self.engine = CounterfactualEngine(self.generator, classifier, inversion=inversion)
        self.run_path: Path | None = None

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def load(cls, run: str | os.PathLike, classifier: Any = None, device: str | torch.device = "auto", **inversion: Any) -> "MedXGAN":
        """Load a GAN run directory (``medxgan train``). ``classifier``: None (the run's own), a
        classifier spec (run dir / TorchScript / factory) or an adapter. Extra keyword arguments set
        the inversion options."""
        from medxgan.gan.run import load_gan_run
        from medxgan.runtime.device import pick_device

        dev = pick_device(device) if isinstance(device, str) else device
        loaded = load_gan_run(run, classifier=classifier, device=dev)
        info = getattr(loaded.generator, "inversion_encoder_info", None)
        if info and "steps" not in inversion and "restarts" not in inversion:
            # an encoder from `train-encoder` puts the start next to the optimum: its short schedule
            for k, v in (info.get("inversion_defaults") or {}).items():
                inversion.setdefault(k, v)
        mx = cls(loaded.generator, loaded.classifier, inversion=inversion, oracle=loaded.oracle, config=loaded.config)
        mx.run_path = Path(loaded.path)
        return mx

    def inversion_note(self) -> str:
        """One line saying where inversion starts and how long it runs (printed by the CLI)."""
        from medxgan.gan import inversion as inv

        opts = self.engine.inversion
        steps, restarts = opts.get("steps", inv.DEFAULT_STEPS), opts.get("restarts", inv.DEFAULT_RESTARTS)
        info = getattr(self.generator, "inversion_encoder_info", None)
        if info:
            what = "encoder trained by train-encoder" if info["kind"] == "trained" else "anchor encoder of the GAN run"
            return f"inversion starts from the {what} ({info['path']}): up to {steps} Adam steps; {restarts} start(s) per image"
        return f"inversion from scratch (no encoder in the run; `medxgan train-encoder` makes it ~10x faster): up to {steps} Adam steps x {restarts} start(s) per image"

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @property
    def size(self) -> int:
        return int(self.generator.size)

    @property
    def channels(self) -> int:
        return int(self.generator.channels)

    # ---- explainers (the common interface, e.g. for the evaluation) -----------------------------
    def difference_explainer(self, frames: int = 0, batch_size: int = 16):
        from medxgan.explain.counterfactual import DifferenceExplainer

        return DifferenceExplainer(self.engine, frames=frames, batch_size=batch_size)

    def lig_explainer(self, **kwargs: Any):
        from medxgan.explain.lig import LIGExplainer

        return LIGExplainer(self.engine, **kwargs)

    # ---- pipeline -------------------------------------------------------------------------------
    def _prepare(self, images: Tensor) -> Tensor:
        from medxgan.classifiers.adapter import convert_channels
        from medxgan.explain.base import check_images

        x = check_images(images)
        if x.shape[1] != self.channels:
            x = convert_channels(x, self.channels)
        if tuple(x.shape[-2:]) != (self.size, self.size):
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True).clamp(-1, 1)
        return x

    def invert(self, images: Tensor):
        """Invert images (converted to the GAN's size/channels) -> :class:`~medxgan.explain.counterfactual.Counterfactuals`
        (codes, x_pos, x_neg, probabilities, PSNR); cached."""
        return self.engine.counterfactuals(self._prepare(images))

    def explain(self, images: Tensor, *, frames: int = 11, lig_steps: int | None = None, lig_form: str = "path", lig_output: str = "logit", lig_rule: str = "trapezoid", lig_tol: float | None = None, batch_size: int = 16) -> list[ExplanationResult]:
        """Explain N images (N x C x H x W in [-1, 1]; other sizes/channel counts are converted to the GAN's).

        Args:
            frames: interpolation frames (>= 2).
            lig_steps: LIG path segments (default 32 path / 100 authors); lig_form "path" or "authors";
                lig_output "logit" or "prob"; lig_rule "trapezoid" or "left"; lig_tol: refine LIG while the
                relative completeness error is above it (default 0.05 for the path form).
        """
        from medxgan.explain.counterfactual import accumulated_change, difference_maps
        from medxgan.explain.lig import DEFAULT_TOL, latent_integrated_gradients

        if frames < 2:
            raise MedxganError(f"--frames {frames}: need at least 2 interpolation frames")
        if lig_form not in ("path", "authors"):
            raise MedxganError(f"--lig-form {lig_form}: choose path or authors")
        x_all = self._prepare(images)
        tol = DEFAULT_TOL if lig_tol is None else lig_tol
        settings = dict(frames=frames, lig_form=lig_form, lig_output=lig_output, lig_rule=lig_rule, lig_tol=tol, inversion=self.engine.inversion)
        out: list[ExplanationResult] = []
        alphas = [i / (frames - 1) for i in range(frames)]
        for s in range(0, x_all.shape[0], batch_size):
            x = x_all[s : s + batch_size]
            cf = self.engine.counterfactuals(x)
            diff, signed = difference_maps(cf.x_pos, cf.x_neg, self.engine.reduce)
            fr, fp = self.engine.interpolation(cf, frames)
            acc = accumulated_change(fr, self.engine.reduce)
            dev = self.device
            lig = latent_integrated_gradients(cf.generators, self.classifier, cf.z1.to(dev), cf.z2.to(dev), steps=lig_steps, form=lig_form, output=lig_output, rule=lig_rule, tol=tol)
            for i in range(len(cf)):
                out.append(ExplanationResult(
                    input=x[i].cpu(), reconstruction=cf.x_pos[i], negative=cf.x_neg[i], prob_input=float(cf.prob_input[i]),
                    prob_reconstruction=float(cf.prob_pos[i]), prob_negative=float(cf.prob_neg[i]), difference=diff[i],
                    signed_difference=signed[i], accumulated_change=acc[i], lig=lig.maps[i], lig_delta=float(lig.delta[i]),
                    completeness_error=float(lig.completeness_error[i]), completeness_error_rel=float(lig.completeness_rel[i]),
                    lig_steps=int(lig.steps[i]), frames=fr[i], alphas=alphas, frame_probs=fp[i].tolist(), psnr=float(cf.psnr[i]),
                    prob_gap=float(cf.prob_gap[i]), inversion_loss=float(cf.loss[i]), inversion_steps=int(cf.steps_run[i]),
                    z1=cf.z1[i], z2=cf.z2[i], settings=settings,
                ))
        return out

    def explain_files(self, inputs: str | os.PathLike | Sequence[str | os.PathLike], out_dir: str | os.PathLike, *, batch_size: int = 8, show_progress: bool = True, workers: int = 0, **explain_kwargs: Any) -> dict[str, Any]:
        """Explain image files/folders and write figures + JSON per image into ``out_dir/<name>/`` and
        ``out_dir/summary.json``. Inputs of another size/channel count are converted to the GAN's.
        Returns the summary dict.

        Streamed: every file is decoded once up front only to check it (a corrupt file stops the run
        before any work is spent), then images are loaded, explained and written one batch at a time,
        so memory does not grow with the number of files. ``workers`` > 0 decodes the next batches in
        that many DataLoader worker processes (pinned memory on CUDA) while the current one is explained.
        Under ``torchrun`` each rank explains every world_size-th file and rank 0 writes the merged
        summary.json.
        """
        from medxgan.data import collect_image_files, load_image_tensor
        from medxgan.runtime import distributed as dist
        from medxgan.runtime.atomic import atomic_write_json
        from medxgan.runtime.progress import progress

        all_files = collect_image_files(inputs if isinstance(inputs, (list, tuple)) else [inputs])
        all_names = _unique_names(all_files)
        rank, world = dist.rank(), dist.world_size()
        mine = list(range(rank, len(all_files), world))
        for k in mine:
            load_image_tensor(all_files[k], size=self.size, channels=self.channels)
        out_dir = Path(out_dir)
        records = []
        bar = progress(total=len(mine), desc="explain" if world == 1 else f"explain (rank {rank})", disable=not show_progress)
        loader = torch.utils.data.DataLoader(
            _FileBatches(all_files, mine, self.size, self.channels), batch_size=batch_size, num_workers=workers,
            pin_memory=self.device.type == "cuda", collate_fn=_collate_files)
        try:
            for idx, batch in loader:
                for k, res in zip(idx, self.explain(batch.to(self.device, non_blocking=True), batch_size=batch_size, **explain_kwargs)):
                    records.append((k, write_explanation(res, out_dir / all_names[k], source=all_files[k])))
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
            inversion=self.inversion_note(),
            settings=_jsonable(records[0]["settings"]) if records else {},
            mean_psnr=_mean([r["psnr"] for r in records]),
            mean_completeness_error_rel=_mean([r["lig"]["completeness_error_rel"] for r in records]),
            images=[{k: r[k] for k in ("name", "input", "dir", "prob_input", "prob_reconstruction", "prob_negative", "psnr")}
                    | {"completeness_error_rel": r["lig"]["completeness_error_rel"], "json": r["files"]["json"]} for r in records],
        )
        if self.device.type == "cuda":
            summary["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        if rank == 0:
            atomic_write_json(out_dir / "summary.json", summary)
        return summary


class _FileBatches(torch.utils.data.Dataset):
    """Image files (by index into ``files``) decoded to 1 x C x H x W tensors, for a DataLoader."""

    def __init__(self, files: Sequence[Path], indices: Sequence[int], size: int, channels: int):
        self.files, self.indices, self.size, self.channels = list(files), list(indices), size, channels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, Tensor]:
        from medxgan.data import load_image_tensor

        k = self.indices[i]
        im = load_image_tensor(self.files[k], size=self.size, channels=self.channels)
        return k, im if im.dim() == 4 else im.unsqueeze(0)


def _collate_files(items: list[tuple[int, Tensor]]) -> tuple[list[int], Tensor]:
    return [k for k, _ in items], torch.cat([t for _, t in items])


def _mean(values: list[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, Tensor):
        return obj.tolist()
    return str(obj)


def _unique_names(files: Sequence[Path]) -> list[str]:
    """Output folder per input: the file stem (sanitised), with -2, -3, ... for repeated stems."""
    names, seen = [], {}
    for f in files:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(f).stem) or "image"
        n = seen.get(stem, 0) + 1
        seen[stem] = n
        names.append(stem if n == 1 else f"{stem}-{n}")
    return names


OUTPUT_FILES = dict(
    input="input.png", reconstruction="reconstruction.png", negative="negative.png",
    difference="difference.png", difference_overlay="difference_overlay.png", lig_overlay="lig_overlay.png",
    accumulated_change_overlay="accumulated_change_overlay.png", interpolation_strip="interpolation.png",
    interpolation_gif="interpolation.gif", panel="panel.png", maps="maps.npz", json="explanation.json",
)


def write_explanation(res: ExplanationResult, out_dir: str | os.PathLike, *, source: str | os.PathLike | None = None, display_size: int = 192) -> dict[str, Any]:
    """Write one image's figures, maps and JSON into ``out_dir`` (atomically) and return the JSON record.

    Files (see ``OUTPUT_FILES``): input / reconstruction / negative at native resolution; the difference
    heatmap; overlays of the difference, LIG (signed, blue-white-red) and accumulated change on the
    input; the interpolation strip with p(pos) under each frame and its GIF; a panel of all of these;
    ``maps.npz`` (float arrays: difference, signed_difference, lig, accumulated_change).
    """
    import io

    import numpy as np

    from medxgan.report import figures as fig
    from medxgan.runtime.atomic import atomic_write_bytes, atomic_write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    F = OUTPUT_FILES

    def big(im):
        return fig.upscale(im, display_size)

    inp, rec, neg = (fig.tensor_to_pil(t) for t in (res.input, res.reconstruction, res.negative))
    for key, im in (("input", inp), ("reconstruction", rec), ("negative", neg)):
        fig.save_png(out / F[key], im)
    big_in = big(inp)
    diff_heat = big(fig.colorize(res.difference, "inferno", signed=False))
    diff_ov = fig.overlay_heatmap(big_in, res.difference, signed=False, cmap="jet")
    lig_ov = fig.overlay_heatmap(big_in, res.lig, signed=True, cmap="bwr")
    acc_ov = fig.overlay_heatmap(big_in, res.accumulated_change, signed=False, cmap="jet")
    fig.save_png(out / F["difference"], diff_heat)
    fig.save_png(out / F["difference_overlay"], diff_ov)
    fig.save_png(out / F["lig_overlay"], lig_ov)
    fig.save_png(out / F["accumulated_change_overlay"], acc_ov)

    frames = [fig.tensor_to_pil(f) for f in res.frames]
    caps = [f"a={a:.2f}\np={p:.2f}" for a, p in zip(res.alphas, res.frame_probs)]
    fig.save_png(out / F["interpolation_strip"], fig.captioned_strip(frames, caps, min_size=96, title="G(z1*, a z2*): p(positive) per frame"))
    fig.save_gif(out / F["interpolation_gif"], [fig.captioned_strip([f], [c.replace("\n", "  ")], min_size=display_size) for f, c in zip(frames, caps)])
    panel = fig.captioned_strip(
        [inp, rec, neg, diff_ov, lig_ov],
        [f"input\np={res.prob_input:.3f}", f"reconstruction\np={res.prob_reconstruction:.3f}\nPSNR {res.psnr:.1f} dB",
         f"negative G(z1*,0)\np={res.prob_negative:.3f}", "|x_pos - x_neg|", f"LIG ({res.settings.get('lig_form', 'path')})\ncompl. err {100 * res.completeness_error_rel:.1f}%"],
        min_size=display_size,
    )
    fig.save_png(out / F["panel"], panel)
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: getattr(res, k).squeeze(0).numpy().astype(np.float32) for k in ("difference", "signed_difference", "lig", "accumulated_change")})
    atomic_write_bytes(out / F["maps"], buf.getvalue())

    record = dict(
        name=out.name, input=str(source) if source is not None else None, dir=str(out),
        **res.summary(), settings=_jsonable(res.settings), files={k: v for k, v in F.items()},
    )
    atomic_write_json(out / F["json"], record)
    return record
