"""The model side of medXGAN explanations: a trained generator + the classifier it explains.

    from medxgan.explain.model import as_medxgan
    model = as_medxgan("runs/gan")                 # or a MedXGANModel / MedXGAN, or a GanRun
    model.invert(images)                           # -> Counterfactuals (codes, x_pos, x_neg, p, PSNR)
    model.difference_explainer(), model.lig_explainer()   # the Explainer interface (evaluation)

One :class:`~medxgan.explain.counterfactual.CounterfactualEngine` backs everything, so an image is
inverted once however many explanations are asked of it. The explanation pipeline (``explain``,
``explain_files``, writing the results) sits above this layer in :mod:`medxgan.pipeline`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medxgan.classifiers.adapter import convert_channels
from medxgan.explain.base import Explanation, check_images
from medxgan.explain.counterfactual import (CounterfactualEngine, Counterfactuals, DifferenceExplainer, MinimalMaskConfig,
                                           MinimalMaskExplainer, split_options)
from medxgan.explain.infill import LEARNED_INFILLS
from medxgan.explain.lig import LIGExplainer
from medxgan.gan.inversion import InversionConfig
from medxgan.gan.run import GanRun, load_gan_run
from medxgan.runtime.device import pick_device
from medxgan.runtime.errors import MedxganError


class InfillFallbackWarning(UserWarning):
    """The run preset's in-fill "auto" could not choose (its data is not there, ...): the generator's anatomy is used."""


@dataclass
class ExplanationResult:
    """Everything medXGAN says about one image (CPU tensors; images C x H x W in [-1, 1]).

    Maps are 1 x H x W: ``difference`` = |x_pos - x_neg| and ``signed_difference`` (channel-reduced with
    luminance weights for RGB), ``accumulated_change`` = sum over the interpolation of |x_{i+1} - x_i|,
    ``lig`` (signed, channel-summed path-sum LIG unless ``lig_form="authors"``).
    ``frames``: F x C x H x W along G(z1*, alpha z2*), alpha = ``alphas``; ``frame_probs``: p(pos) per frame.
    ``lig_delta`` = f(x_pos) - f(x_neg) (f = logit unless lig_output="prob"); ``completeness_error`` =
    |sum(lig) - lig_delta|, ``completeness_error_rel`` = that / |lig_delta|.
    ``counterfactual`` says which counterfactual the maps, frames and LIG explain: ``"generator"`` (x_neg,
    as above) or ``"residual"`` (``residual`` = x_res, the scan with the generator's pathology change
    removed; the maps then compare the input with x_res, the frames run from x_res to the input and
    lig_delta = f(input) - f(x_res)). ``residual`` / ``prob_residual`` are filled in either case.
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
    counterfactual: str = "generator"
    residual: Tensor | None = None
    prob_residual: float = float("nan")
    residual_mask: Tensor | None = None  # 1 x H x W: the minimal mask x_res replaced (None without the refinement)
    # the classifier's logit of the explained counterfactual, and whether it crossed the decision level (logit < 0): when not,
    # the classifier could not be flipped within the mask and the map shows the generator's prior (issue 31)
    logit_counterfactual: float = float("nan")
    flipped: bool | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_explanations(cls, i: int, image: Tensor, cf: Counterfactuals, difference: Explanation, lig: Explanation,
                          counterfactual: str, settings: dict[str, Any]) -> "ExplanationResult":
        """Image ``i`` of a batch from what the explainers returned: ``difference`` from a
        :class:`DifferenceExplainer` with frames, ``lig`` from a :class:`LIGExplainer` (both on the engine that
        made ``cf``). Only gathers; every map is computed by the explainers."""
        d, g = difference.extras, lig.extras
        frames = int(settings["frames"])
        return cls(
            input=image.cpu(), reconstruction=cf.x_pos[i], negative=cf.x_neg[i], prob_input=float(cf.prob_input[i]),
            prob_reconstruction=float(cf.prob_pos[i]), prob_negative=float(cf.prob_neg[i]), difference=difference.maps[i],
            signed_difference=d["signed_difference"][i], accumulated_change=d["accumulated_change"][i], lig=lig.maps[i],
            lig_delta=float(g["delta"][i]), completeness_error=float(g["completeness_error"][i]),
            completeness_error_rel=float(g["completeness_rel"][i]), lig_steps=int(g["lig_steps"][i]), frames=d["frames"][i],
            alphas=[k / (frames - 1) for k in range(frames)], frame_probs=d["frame_probs"][i].tolist(), psnr=float(cf.psnr[i]),
            prob_gap=float(cf.prob_gap[i]), inversion_loss=float(cf.loss[i]), inversion_steps=int(cf.steps_run[i]),
            z1=cf.z1[i], z2=cf.z2[i], counterfactual=counterfactual, residual=cf.x_res[i], prob_residual=float(cf.prob_res[i]),
            residual_mask=None if cf.masks is None else cf.masks[i], settings=settings,
            logit_counterfactual=float(cf.logit_cf[i]) if cf.logit_cf is not None else float("nan"),
            flipped=bool(cf.flipped[i]) if cf.flipped is not None else None,
        )

    @property
    def prior_note(self) -> str | None:
        """The sentence every output shows when the classifier was not flipped within the mask; None when it was."""
        if self.flipped is not False:
            return None
        return (f"not flipped: the classifier still calls the counterfactual positive (logit {self.logit_counterfactual:.2f} >= 0) within "
                "the mask, so the map shows the generator's prior, not what the classifier needs")

    def summary(self) -> dict[str, Any]:
        """JSON-able numbers (no tensors)."""
        return dict(
            prob_input=self.prob_input, prob_reconstruction=self.prob_reconstruction, prob_negative=self.prob_negative,
            psnr=self.psnr, prob_gap=self.prob_gap, inversion_loss=self.inversion_loss, inversion_steps=self.inversion_steps,
            counterfactual=self.counterfactual, prob_residual=self.prob_residual,
            flipped=self.flipped, logit_counterfactual=self.logit_counterfactual, prior_note=self.prior_note,
            alphas=self.alphas, frame_probs=self.frame_probs,
            lig=dict(form=self.settings.get("lig_form", "path"), output=self.settings.get("lig_output", "logit"),
                     delta=self.lig_delta, sum=float(self.lig.sum()), completeness_error=self.completeness_error,
                     completeness_error_rel=self.completeness_error_rel, steps=self.lig_steps),
        )


class MedXGANModel:
    """A trained medXGAN generator + the classifier it explains: loading, inversion, the explainers.

    The explanation pipeline (:class:`medxgan.pipeline.MedXGAN`: ``explain``, ``explain_files``) builds on it.

    Args:
        generator: G(z1, z2) with attributes nz1, nz2, channels, size.
        classifier: a ClassifierAdapter (``.logit``, ``.prob``).
        inversion: the :class:`~medxgan.gan.inversion.InversionConfig` (or a flat option dict, see
            :func:`~medxgan.explain.counterfactual.split_options`); defaults there.
        minimal_mask: the :class:`~medxgan.explain.counterfactual.MinimalMaskConfig`.
        encoder, encoder_info, discriminator: the run's inversion networks (:class:`~medxgan.gan.run.GanRun`).
        oracle, config: optional, kept for reference (from the run directory).
    """

    def __init__(self, generator: nn.Module, classifier: Any, *, inversion: InversionConfig | dict[str, Any] | None = None,
                 minimal_mask: MinimalMaskConfig | None = None, encoder: nn.Module | None = None, encoder_info: dict[str, Any] | None = None,
                 discriminator: nn.Module | None = None, oracle: Any = None, config: dict[str, Any] | None = None):
        self.generator = generator.eval()
        self.classifier = classifier
        self.oracle = oracle
        self.config = dict(config or {})
        self.encoder_info = encoder_info  # where the encoder came from (GanRun.encoder_info), for the notes
        self.engine = CounterfactualEngine(self.generator, classifier, inversion=inversion, minimal_mask=minimal_mask, encoder=encoder,
                                           discriminator=discriminator)
        self.run_path: Path | None = None
        self.infill_selection: Any = None  # what infill="auto" chose (explain/infill_selection.py), set by from_run
        self._inpainter: Any = None  # the inpainter of the minimal-mask settings, loaded once

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def load(cls, run: str | os.PathLike, classifier: Any = None, device: str | torch.device = "auto", *,
             inversion: InversionConfig | None = None, minimal_mask: MinimalMaskConfig | None = None, **options: Any) -> "MedXGANModel":
        """Load a GAN run directory (``medxgan train``). ``classifier``: None (the run's own), a
        classifier spec (run dir / TorchScript / factory) or an adapter. ``inversion`` / ``minimal_mask``:
        complete settings (used as given); otherwise keyword ``options`` (``steps=50``, ``counterfactual="generator"``,
        ``minimal_mask_steps=0``, ...) override the run's own defaults (see :meth:`from_run`)."""
        dev = pick_device(device) if isinstance(device, str) else device
        return cls.from_run(load_gan_run(run, classifier=classifier, device=dev), inversion=inversion, minimal_mask=minimal_mask, **options)

    @classmethod
    def from_run(cls, loaded: GanRun, classifier: Any = None, *, inversion: InversionConfig | None = None,
                 minimal_mask: MinimalMaskConfig | None = None, **options: Any) -> "MedXGANModel":
        """From a loaded :class:`~medxgan.gan.run.GanRun` (``classifier``: an adapter used instead of the run's).

        The settings, lowest to highest priority: the library defaults, the short schedule of an encoder from
        ``train-encoder`` (unless ``steps``/``restarts`` are given), the run preset's ``inversion`` defaults,
        the keyword ``options``; a given ``inversion`` / ``minimal_mask`` config replaces all of them.
        """
        explicit_infill = minimal_mask is not None or "minimal_mask_infill" in options  # else the run preset's (a fallback is allowed)
        options = run_inversion_options(loaded, classifier_given=classifier is not None, **options)
        inv_cfg, mask_cfg = split_options(options)
        mx = cls(loaded.generator, classifier if classifier is not None else loaded.classifier, inversion=inversion or inv_cfg,
                 minimal_mask=minimal_mask or mask_cfg, encoder=loaded.encoder, encoder_info=loaded.encoder_info,
                 discriminator=loaded.discriminator, oracle=loaded.oracle, config=loaded.config)
        mx.run_path = Path(loaded.path)
        if mx.engine.minimal_mask.infill == "auto":  # chosen on the run's validation scans, before any work
            mx._choose_infill(loaded, required=explicit_infill)
        if mx.engine.minimal_mask.infill == "mean":  # the mean healthy scan of the run's training data, once, before any work
            from medxgan.explain.infill import healthy_mean_for_run

            mx.engine.infill_healthy_mean = healthy_mean_for_run(loaded.path, loaded.config.get("data") or "", mx.size, mx.channels,
                                                                 training_class_mapping(loaded.config))
        name = mx.engine.minimal_mask.infill
        if name in LEARNED_INFILLS:  # the trained inpainter, checked against this generator, once, before any work
            from medxgan.explain.infill import check_inpainter_for
            from medxgan.runtime.runs import fingerprint_module

            inp = mx.infill_inpainter_checked()
            mx.engine.infill_inpainter = check_inpainter_for(name, inp, fingerprint_module(mx.generator) if name == "learned-gan" else None)
        return mx

    def infill_inpainter_checked(self) -> Any:
        """The inpainter named by the minimal-mask settings, loaded once and checked to work on the GAN's scans."""
        from medxgan.gan.inpainter import load_inpainter

        if self._inpainter is None:
            inp = load_inpainter(self.engine.minimal_mask.inpainter or "", device=self.device)
            if (inp.size, inp.channels) != (self.size, self.channels):
                raise MedxganError(f"inpainter {inp.path}: trained on {inp.channels} x {inp.size} px scans, the GAN makes {self.channels} x "
                                   f"{self.size} px", arg="inpainter")
            self._inpainter = inp
        return self._inpainter

    def _choose_infill(self, loaded: GanRun, required: bool = True) -> None:
        """Resolve ``infill="auto"`` (:mod:`medxgan.explain.infill_selection`) on the run's validation scans and put the
        chosen in-fill into the engine's settings (the given inpainter is kept only when a learned in-fill is chosen).
        ``required`` False (auto came from the run's preset, not the caller): when it cannot choose (the run's data is
        gone, no validation scans of both classes) the generator's anatomy is used, with a warning line saying why."""
        import dataclasses
        import warnings

        from medxgan.explain.infill import LEARNED_INFILLS
        from medxgan.explain.infill_selection import select_infill_for_run

        m = self.engine.minimal_mask
        gan_only = dataclasses.replace(m, infill="gan", inpainter=None)
        if not self.engine.refines_mask:  # no minimal mask, nothing is filled
            self.engine.minimal_mask = gan_only
            return
        try:
            inpainter = None
            if m.inpainter:
                inpainter = self.infill_inpainter_checked()
                if inpainter.uses_gan:
                    from medxgan.explain.infill import check_inpainter_for
                    from medxgan.runtime.runs import fingerprint_module

                    check_inpainter_for("learned-gan", inpainter, fingerprint_module(self.generator))
            sel = select_infill_for_run(self, loaded.config.get("data") or "", training_class_mapping(loaded.config), inpainter=inpainter)
        except MedxganError as e:
            if required:
                raise
            warnings.warn(f"{loaded.path}: the preset's in-fill 'auto' cannot choose ({e}); the generator's anatomy (gan) fills the "
                          "minimal mask", InfillFallbackWarning, stacklevel=2)
            self.engine.minimal_mask = gan_only
            return
        self.infill_selection = sel
        self.engine.minimal_mask = dataclasses.replace(m, infill=sel.chosen, inpainter=m.inpainter if sel.chosen in LEARNED_INFILLS else None)

    def inversion_note(self) -> str:
        """One line saying where inversion starts and how long it runs (printed by the CLI)."""
        opts = self.engine.inversion_config
        steps, restarts = opts.steps, opts.restarts
        info = self.encoder_info
        cf = ("; counterfactual: residual (the scan with the generator's pathology change removed)"
              if self.engine.counterfactual == "residual" else "; counterfactual: G(z1*, 0)")
        if self.engine.refines_mask:
            floor = self.engine.mask_floor
            target = "as negative as the generator's counterfactual" if floor is None else \
                f"as negative as the generator's counterfactual or as 95 % of the classifier's real negatives (logit {floor:.2f}), whichever is less negative"
            cf += f", within the minimal mask ({self.engine.minimal_mask.steps} refinement steps per scan; {target})"
            if self.infill_selection is not None:
                cf += f"; {self.infill_selection.note()}"
            elif self.engine.minimal_mask.infill != "gan":
                cf += f"; in-fill: {self.engine.minimal_mask.infill} (not the generator's anatomy)"
        if info:
            what = "encoder trained by train-encoder" if info["kind"] == "trained" else "anchor encoder of the GAN run"
            return f"inversion starts from the {what} ({info['path']}): up to {steps} Adam steps; {restarts} start(s) per image{cf}"
        return (f"inversion from scratch (no encoder in the run; `medxgan train-encoder` makes it ~10x faster): up to {steps} Adam steps "
                f"x {restarts} start(s) per image{cf}")

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
        return DifferenceExplainer(self.engine, frames=frames, batch_size=batch_size)

    def lig_explainer(self, **kwargs: Any):
        return LIGExplainer(self.engine, **kwargs)

    def mask_explainer(self, batch_size: int = 16):
        """The minimal mask as the map (``medxgan-mask``; needs the minimal mask)."""
        return MinimalMaskExplainer(self.engine, batch_size=batch_size)

    # ---- inversion -------------------------------------------------------------------------------
    def _prepare(self, images: Tensor) -> Tensor:
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


def training_class_mapping(config: dict[str, Any]) -> dict[str, Any]:
    """The class options (``positive``/``negative``/``csv`` of ``load_dataset``) the run's GAN was trained with, so that
    what the run reads from its data (the in-fill choice's validation scans, the mean healthy scan) means the same classes."""
    return {k: v for k, v in (config.get("train_config") or {}).items() if k in ("positive", "negative", "csv") and v}


def run_inversion_options(loaded: GanRun, classifier_given: bool = False, **options: Any) -> dict[str, Any]:
    """The flat inversion + minimal-mask options a run is explained with: ``options`` over the run preset's
    ``inversion`` defaults over an encoder's short schedule (see :meth:`MedXGANModel.from_run`)."""
    options = dict(options)
    info = loaded.encoder_info
    if info and "steps" not in options and "restarts" not in options:
        # an encoder from `train-encoder` puts the start next to the optimum: its short schedule
        for k, v in (info.get("inversion_defaults") or {}).items():
            options.setdefault(k, v)
    for k, v in ((loaded.config.get("preset") or {}).get("inversion") or {}).items():
        options.setdefault(k, v)  # the preset's inversion defaults (e.g. the residual counterfactual)
    reference = loaded.config.get("classifier_reference") or {}
    if options.get("minimal_mask_target") == "healthy" and "minimal_mask_floor" not in options and not classifier_given:
        # the floor is a property of the run's own classifier: another classifier gets the "match" target
        options["minimal_mask_floor"] = reference.get("negative_logit_q05")
    return options


def as_medxgan(spec: Any, classifier: Any = None, device: str | torch.device = "auto",
               inversion: InversionConfig | dict[str, Any] | None = None, minimal_mask: MinimalMaskConfig | None = None) -> MedXGANModel:
    """The one normaliser of a GAN argument: a :class:`MedXGANModel` (or its subclass
    :class:`medxgan.pipeline.MedXGAN`) is used as is; a :class:`~medxgan.gan.run.GanRun` (``load_gan_run``'s
    result) or a run directory is wrapped. ``classifier``: an adapter used instead of the run's own (a
    run directory is loaded with it); ``inversion``: an :class:`~medxgan.gan.inversion.InversionConfig` or flat
    options over the run's defaults, ``minimal_mask``: a :class:`~medxgan.explain.counterfactual.MinimalMaskConfig`,
    for a run that is loaded here."""
    if isinstance(spec, MedXGANModel):
        return spec
    if spec is None:
        raise MedxganError("gan: a trained GAN is needed (--gan RUN)")
    config = inversion if isinstance(inversion, InversionConfig) else None
    options = {} if config is not None else dict(inversion or {})
    if isinstance(spec, GanRun):
        return MedXGANModel.from_run(spec, classifier=classifier, inversion=config, minimal_mask=minimal_mask, **options)
    return MedXGANModel.load(spec, classifier=classifier, device=device, inversion=config, minimal_mask=minimal_mask, **options)
