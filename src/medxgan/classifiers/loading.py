"""Load a classifier from a built-in run directory, a TorchScript file, or `package.module:factory`
plus a weights file, and wrap it in the adapter."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import torch

from medxgan.classifiers.adapter import ClassifierAdapter, Preprocessing
from medxgan.classifiers.architectures import build_architecture
from medxgan.runtime.errors import MedxganError, UserCodeError
from medxgan.runtime.runs import RunDir
from medxgan.runtime.state import load_weights

CLASSIFIER_KIND = "classifier"
WEIGHTS_NAME = "model"


def load_classifier(
    spec: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    output: str | None = None,
    preprocessing: Preprocessing | None = None,
    positive_index: int | None = None,
) -> ClassifierAdapter:
    """Load a classifier and return its adapter (eval mode, frozen, on `device`).

    `spec` is one of:
      * a classifier run directory written by `medxgan train-classifier` (config.json + model.safetensors);
      * a TorchScript file (`torch.jit.save`); declare its output/preprocessing with the keyword args;
      * `package.module:factory` -- a callable returning an nn.Module; `weights` is then a
        .safetensors file or a state dict saved with torch.save (loaded with weights_only=True).
    """
    spec_str = str(spec)
    path = Path(spec_str)
    if path.is_dir():
        adapter = _load_run(path, device)
    elif path.is_file():
        adapter = _load_torchscript(path, device, output, preprocessing, positive_index)
    elif ":" in spec_str and not os.path.exists(spec_str.split(":")[0]):
        adapter = _load_factory(spec_str, weights, device, output, preprocessing, positive_index)
    else:
        raise MedxganError(f"classifier {spec_str}: not found (expected a classifier run directory, a TorchScript file or package.module:factory)", arg="classifier")
    return adapter.to(device)


def as_classifier(spec: Any, device: str | torch.device = "cpu", **kwargs: Any) -> torch.nn.Module:
    """The one normaliser of a classifier argument: an ``nn.Module`` (an adapter, or anything with the
    adapter's ``logit``/``prob``) is moved to ``device`` and used as is; anything else (run directory,
    TorchScript file, ``package.module:factory``) goes through :func:`load_classifier` (``kwargs``:
    its ``weights``/``output``/``preprocessing``/``positive_index``)."""
    if isinstance(spec, torch.nn.Module):
        return spec.to(device)
    return load_classifier(spec, device=device, **kwargs)


def _load_run(path: Path, device: str | torch.device) -> ClassifierAdapter:
    run = RunDir(path)
    config = run.read_config(expect_kind=CLASSIFIER_KIND)
    if not isinstance(config.get("arch"), str) or not isinstance(config.get("arch_kwargs", {}), dict):
        raise MedxganError(f"{run.config_path}: no classifier architecture ('arch' missing or not a name, or 'arch_kwargs' not an object)")
    try:
        model = build_architecture(config["arch"], **config.get("arch_kwargs", {}))
    except (MedxganError, TypeError, ValueError) as exc:  # the run's config names an architecture or arguments that do not exist
        raise MedxganError(f"{run.config_path}: cannot build classifier architecture {config['arch']!r} ({_first(exc)})") from None
    state = run.load_weights(WEIGHTS_NAME)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise MedxganError(f"{path}: weights do not match architecture {config['arch']} ({str(exc).splitlines()[0]})") from None
    ad = config.get("adapter", {})
    return ClassifierAdapter(
        model,
        output=ad.get("output", "logits2"),
        positive_index=int(ad.get("positive_index", 1)),
        preprocessing=Preprocessing.from_dict(ad.get("preprocessing")),
        name=str(path),
    ).to(device)


def _load_torchscript(path: Path, device: Any, output: str | None, pp: Preprocessing | None, pos: int | None) -> ClassifierAdapter:
    try:
        model = torch.jit.load(str(path), map_location=str(device))
    except Exception as exc:  # torch raises RuntimeError/ValueError variants for non-TorchScript files
        raise MedxganError(f"{path}: not a TorchScript file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                           "use a classifier run directory or package.module:factory with --classifier-weights") from None
    return ClassifierAdapter(model, output=output or "auto", positive_index=1 if pos is None else pos, preprocessing=pp, name=str(path))


def _load_factory(spec: str, weights: Any, device: Any, output: str | None, pp: Preprocessing | None, pos: int | None) -> ClassifierAdapter:
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # so that a user's local module is importable
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise MedxganError(f"classifier {spec}: cannot import module {module_name!r} ({exc})", arg="classifier") from None
    except (Exception, SystemExit) as exc:  # the user's module raised (or exited) while being imported
        raise UserCodeError(f"classifier {spec}: importing module {module_name!r} raised {type(exc).__name__}: {_first(exc)}", arg="classifier") from exc
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise MedxganError(f"classifier {spec}: module {module_name!r} has no callable {attr!r}", arg="classifier")
    try:
        model = factory()
    except (Exception, SystemExit) as exc:  # the user's factory raised (or exited)
        raise UserCodeError(f"classifier {spec}: the factory raised {type(exc).__name__}: {_first(exc)}", arg="classifier") from exc
    if not isinstance(model, torch.nn.Module):
        raise MedxganError(f"classifier {spec}: factory returned {type(model).__name__}, not an nn.Module", arg="classifier")
    if weights is not None:
        wpath = Path(weights)
        if not wpath.is_file():
            raise MedxganError(f"weights {wpath}: file not found", arg="weights")
        if wpath.suffix == ".safetensors":
            state = load_weights(wpath)
        else:
            try:
                state = torch.load(str(wpath), map_location="cpu", weights_only=True)
            except Exception as exc:
                raise MedxganError(f"weights {wpath}: cannot load as a state dict ({str(exc).splitlines()[0]})", arg="weights") from None
            if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
                state = state["state_dict"]
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError) as exc:
            raise MedxganError(f"weights {wpath}: does not match the model from {spec} ({str(exc).splitlines()[0]})", arg="weights") from None
    return ClassifierAdapter(model, output=output or "auto", positive_index=1 if pos is None else pos, preprocessing=pp, name=spec)


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]
