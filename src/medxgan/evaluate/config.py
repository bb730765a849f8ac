"""The settings of one evaluation (``medxgan evaluate``) as one object: :class:`EvaluateConfig`.

    from medxgan.evaluate.runner import EvaluateConfig, evaluate
    cfg = EvaluateConfig(n_resamples=200, noise_sigmas=(0.05,), max_sensitivity=False)
    evaluate("data/brain", "eval/", gan="runs/gan", config=cfg)              # or the same as keywords:
    evaluate("data/brain", "eval/", gan="runs/gan", n_resamples=200, max_sensitivity=False)

The CLI builds one from its flags; ``evaluate`` checks it before any work starts and records it in
``results.json`` (``config``) and the settings that must not change on resume in ``run.json``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import torch

from medxgan.evaluate.faithfulness import DEFAULT_FRACTIONS
from medxgan.evaluate.pairs import IMPLEMENTATIONS, check_noisy_inversion
from medxgan.evaluate.selection import SUBSETS
from medxgan.explain.counterfactual import MinimalMaskConfig
from medxgan.gan.inversion import InversionConfig
from medxgan.runtime.checks import check_args
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.settings import replace_fields

DEFAULT_NOISE_SIGMAS = (0.02, 0.05, 0.1)


@dataclass(frozen=True)
class EvaluateConfig:
    """Everything ``evaluate`` takes besides the data, the output folder and the models.

    Attributes:
        split: dataset split (None = every image). subset: one of :data:`medxgan.evaluate.selection.SUBSETS`.
        noise_sigmas: Gaussian noise levels for robustness ([-1, 1] units); empty = skip.
        fractions: deletion fractions. seed: selection order, noise, bootstrap.
        device: "auto", "cpu", "cuda", ... or a torch.device. batch_size: images explained together.
        size / channels: load images at this size / channel count (default: the GAN's with a GAN, else the data's own).
        positive / negative / csv / skip_bad: passed to :func:`medxgan.data.load_dataset`.
        max_sensitivity*: Captum max-sensitivity on the first ``max_sensitivity_n`` images (None = all).
        n_resamples: bootstrap resamples of the confidence intervals.
        inversion: the GAN inversion when the GAN is a path: an :class:`~medxgan.gan.inversion.InversionConfig`
            (used as given) or flat options over the run's defaults (``{"steps": 75}``; ``minimal_mask_*`` keys too).
        minimal_mask: a :class:`~medxgan.explain.counterfactual.MinimalMaskConfig` (with an InversionConfig).
        save_maps: write maps/. overwrite: start afresh even if the output holds a run with other settings.
        show_progress: progress bar. sanity / sanity_n: the cascading randomisation check on the first images.
        implementation: ``"batched"`` or ``"reference"`` (:mod:`medxgan.evaluate.pairs`).
        noisy_inversion: None, or how the noisy / perturbed copies are inverted (:data:`medxgan.evaluate.pairs.NOISY_INVERSION_KEYS`).
        gradcam_layer: Grad-CAM's target layer by name (default: the last block's output).
        light_methods: methods evaluated without robustness to noise, max-sensitivity and the sanity check (each re-explains
            every image 3-10 times more: for the perturbation baselines, seconds per image each, too costly for the demo).
        method_options: per registry name, keyword settings other than the method's defaults (e.g.
            ``{"extremal-perturbation": {"max_iter": 100}}``; baselines only); recorded in the config and in each row: a resumed run
            must share them for every method it already has rows of.
        oracle_twin_target: the share of the validation split's lesion-free twins the oracle must accept; its threshold
            is chosen on them (:mod:`medxgan.evaluate.oracle_calibration`); None keeps the oracle's own (p 0.5).
    """

    split: str | None = "test"
    subset: str = "pred-pos"
    noise_sigmas: tuple[float, ...] = DEFAULT_NOISE_SIGMAS
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    seed: int = 0
    device: str | torch.device = "auto"
    batch_size: int = 8
    size: int | None = None
    channels: int | None = None
    positive: Any = None
    negative: Any = None
    csv: str | os.PathLike | None = None
    skip_bad: bool = False
    max_sensitivity: bool = True
    max_sensitivity_n: int | None = 20
    max_sensitivity_radius: float = 0.02
    max_sensitivity_samples: int = 10
    n_resamples: int = 1000
    inversion: InversionConfig | dict[str, Any] | None = None
    minimal_mask: MinimalMaskConfig | None = None
    save_maps: bool = True
    overwrite: bool = False
    show_progress: bool = True
    sanity: bool = False
    sanity_n: int = 10
    implementation: str = "batched"
    noisy_inversion: dict[str, Any] | None = None
    gradcam_layer: str | None = None
    oracle_twin_target: float | None = 0.9
    light_methods: tuple[str, ...] = ()
    method_options: dict[str, dict[str, Any]] | None = None

    def replace(self, **options: Any) -> "EvaluateConfig":
        """A copy with ``options`` changed; an unknown name is a one-line MedxganError."""
        return replace_fields(self, "evaluate option", **options)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "EvaluateConfig":
        """The config of a stored evaluation record (results.json ``config``, run.json, a benchmark's settings):
        its keys that are fields (others, e.g. ``data`` or ``n_selected``, describe the run, not the settings);
        run.json's ``max_sensitivity`` object ``{"on", "radius", "samples"}`` is read too."""
        options = {k: v for k, v in record.items() if k in _FIELDS}
        ms = options.get("max_sensitivity")
        if isinstance(ms, dict):
            options.update(max_sensitivity=bool(ms.get("on", True)), max_sensitivity_radius=ms.get("radius", 0.02),
                           max_sensitivity_samples=ms.get("samples", 10))
        for k in ("noise_sigmas", "fractions", "light_methods"):
            if isinstance(options.get(k), list):
                options[k] = tuple(options[k])
        return cls().replace(**options)

    def checked(self, n: int | None) -> "EvaluateConfig":
        """Every option checked (one line naming it, before any work); returns the config with the sequences
        as float tuples and ``noisy_inversion`` normalised."""
        check_args(n=n, batch_size=self.batch_size, seed=self.seed, size=self.size, fractions=list(self.fractions),
                   noise_sigmas=list(self.noise_sigmas) or None, max_sensitivity_n=self.max_sensitivity_n, sanity_n=self.sanity_n)
        if self.implementation not in IMPLEMENTATIONS:
            raise MedxganError(f"implementation {self.implementation!r}: choose {' or '.join(IMPLEMENTATIONS)}", arg="implementation")
        noisy = check_noisy_inversion(self.noisy_inversion)
        if noisy and self.implementation == "reference":
            raise MedxganError("noisy_inversion: the reference implementation has no such option (today's behaviour)", arg="noisy_inversion")
        if self.subset not in SUBSETS:
            raise MedxganError(f"subset {self.subset}: unknown (choose from {', '.join(SUBSETS)})", arg="subset")
        sigmas = tuple(float(s) for s in self.noise_sigmas)
        if any(not (s > 0) for s in sigmas):
            raise MedxganError(f"noise_sigmas {' '.join(map(str, self.noise_sigmas))}: every sigma must be > 0", arg="noise_sigmas")
        if n is not None and n < 1:
            raise MedxganError(f"n {n}: must be >= 1", arg="n")
        if self.batch_size < 1:
            raise MedxganError(f"batch_size {self.batch_size}: must be >= 1", arg="batch_size")
        return dataclasses.replace(self, noise_sigmas=sigmas, fractions=tuple(float(f) for f in self.fractions), noisy_inversion=noisy,
                                   light_methods=(self.light_methods,) if isinstance(self.light_methods, str) else tuple(map(str, self.light_methods)))


_FIELDS = tuple(f.name for f in dataclasses.fields(EvaluateConfig))
