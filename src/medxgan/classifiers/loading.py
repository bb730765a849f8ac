"""Load a classifier from a built-in run directory, a TorchScript file, a ``torch.export`` program
(``.pt2``), or ``package.module:factory`` plus a weights file, and wrap it in the adapter.

Each loaded adapter records where it came from (``adapter.source``) so that a GAN run can keep a
complete copy of it (:mod:`medxgan.classifiers.storage`)."""

from __future__ import annotations

import importlib
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from medxgan.classifiers.adapter import ClassifierAdapter, Preprocessing, Target
from medxgan.classifiers.architectures import build_architecture
from medxgan.classifiers.records import CLASSIFIER_RUN_FIELDS
from medxgan.runtime.errors import MedxganError, UserCodeError
from medxgan.runtime.records import check_record
from medxgan.runtime.runs import RunDir
from medxgan.runtime.state import load_weights

CLASSIFIER_KIND = "classifier"
WEIGHTS_NAME = "model"
EXPORT_SUFFIXES = (".pt2",)
# package.module:factory -- what a factory spec looks like (anything else that does not exist is "not found")
_FACTORY_SPEC = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
# checkpoint wrappers as training scripts write them: {"model": state_dict}, {"state_dict": ...}, ...
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net", "network")


def load_classifier(
    spec: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    output: str | None = None,
    preprocessing: Preprocessing | None = None,
    positive_index: int | None = None,
    target: Target | None = None,
) -> ClassifierAdapter:
    """Load a classifier and return its adapter (eval mode, frozen, on `device`).

    `spec` is one of:
      * a classifier run directory written by `medxgan train-classifier` (config.json + model.safetensors);
      * a TorchScript file (`torch.jit.save`) or a `torch.export` program (`.pt2`, `torch.export.save`);
        declare its output/preprocessing/target with the keyword args;
      * `package.module:factory` -- a callable returning an nn.Module (the current directory is on the
        import path); `weights` is then a .safetensors file or a checkpoint saved with torch.save
        (loaded with weights_only=True; ``{"model"|"state_dict": ...}`` wrappers and ``module.``
        prefixes of DataParallel/DDP checkpoints are unwrapped).
    A path is taken for a path when it exists or has a file suffix; otherwise a spec that looks like
    ``module:factory`` is imported.
    """
    spec_str = str(spec)
    path = Path(spec_str)
    if path.is_dir():
        if weights is not None:
            raise MedxganError(f"weights {weights}: only for a package.module:factory classifier; {spec_str} is a run directory "
                               "that holds its own weights", arg="weights")
        adapter = _load_run(path, device)
    elif path.is_file():
        if weights is not None:
            raise MedxganError(f"weights {weights}: only for a package.module:factory classifier; {spec_str} is a model file "
                               "that holds its own weights", arg="weights")
        opts = dict(output=output, preprocessing=preprocessing, positive_index=positive_index, target=target)
        adapter = _load_export(path, device, **opts) if path.suffix in EXPORT_SUFFIXES else _load_torchscript(path, device, **opts)
    elif _FACTORY_SPEC.match(spec_str) and not (path.suffix and ":" not in path.suffix):  # x.pt that is not there is a missing file
        adapter = _load_factory(spec_str, weights, device, output, preprocessing, positive_index, target)
    else:
        raise MedxganError(f"classifier {spec_str}: not found (expected a classifier run directory, a TorchScript or .pt2 file, "
                           "or package.module:factory)", arg="classifier")
    return adapter.to(device)


def as_classifier(spec: Any, device: str | torch.device = "cpu", **kwargs: Any) -> torch.nn.Module:
    """The one normaliser of a classifier argument: an ``nn.Module`` (an adapter, or anything with the
    adapter's ``logit``/``prob``) is moved to ``device`` and used as is; anything else (run directory,
    TorchScript/.pt2 file, ``package.module:factory``) goes through :func:`load_classifier` (``kwargs``:
    its ``weights``/``output``/``preprocessing``/``positive_index``/``target``)."""
    if isinstance(spec, torch.nn.Module):
        return spec.to(device)
    return load_classifier(spec, device=device, **kwargs)


def _adapter(model: torch.nn.Module, name: str, output: str | None, pp: Preprocessing | None, pos: int | None,
             target: Target | None, source: dict[str, Any]) -> ClassifierAdapter:
    ad = ClassifierAdapter(model, output=output or "auto", positive_index=1 if pos is None else pos, preprocessing=pp, name=name,
                           target=target)
    ad.source = source
    return ad


def _load_run(path: Path, device: str | torch.device) -> ClassifierAdapter:
    run = RunDir(path)
    config = check_record(run.read_config(expect_kind=CLASSIFIER_KIND), CLASSIFIER_RUN_FIELDS, run.config_path)
    try:
        model = build_architecture(config["arch"], **(config.get("arch_kwargs") or {}))
    except (MedxganError, TypeError, ValueError) as exc:  # the run's config names an architecture or arguments that do not exist
        raise MedxganError(f"{run.config_path}: cannot build classifier architecture {config['arch']!r} ({_first(exc)})") from None
    load_state_into(model, run.load_weights(WEIGHTS_NAME), f"{path}: weights", f"architecture {config['arch']}")
    ad = config.get("adapter") or {}
    return _adapter(model, str(path), ad.get("output", "logits2"), Preprocessing.from_dict(ad.get("preprocessing")),
                    ad.get("positive_index", 1), Target.from_dict(ad.get("target")), {"kind": "run", "path": str(path)}).to(device)


def _load_torchscript(path: Path, device: Any, output: str | None, preprocessing: Preprocessing | None, positive_index: int | None,
                      target: Target | None) -> ClassifierAdapter:
    try:
        model = torch.jit.load(str(path), map_location=str(device))
    except Exception as exc:  # torch raises RuntimeError/ValueError variants for non-TorchScript files
        raise MedxganError(f"{path}: not a TorchScript file ({_first(exc) or type(exc).__name__}); use a classifier run directory, "
                           "a torch.export .pt2 file, or package.module:factory with --classifier-weights") from None
    return _adapter(model, str(path), output, preprocessing, positive_index, target, {"kind": "torchscript", "path": str(path)})


def _load_export(path: Path, device: Any, output: str | None, preprocessing: Preprocessing | None, positive_index: int | None,
                 target: Target | None) -> ClassifierAdapter:
    """A ``torch.export`` program (TorchScript's successor): ``torch.export.load``, applied through
    ``torch.export.unflatten`` (the same computation as ``.module()`` with the original submodules).

    The program is specialised to the input shape it was exported with unless exported with dynamic
    dimensions; give its size with the preprocessing so every batch is resized to it."""
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # not a zip / not an exported program: torch raises several types
        raise MedxganError(f"{path}: not a torch.export program ({_first(exc) or type(exc).__name__}); save one with "
                           "torch.export.save(torch.export.export(model, (example,)), 'model.pt2')") from None
    try:  # unflattened: the original module hierarchy (layer4, features.norm5, ...), so Grad-CAM can hook a block
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's own deprecation notices from inside unflatten
            model = torch.export.unflatten(program)
    except Exception:  # an exotic program unflatten cannot rebuild: the flat module still scores (no Grad-CAM layers)
        model = program.module()
    return _adapter(model, str(path), output, preprocessing, positive_index, target, {"kind": "export", "path": str(path)}).to(device)


def import_factory(spec: str) -> Any:
    """The callable named by ``package.module:factory`` (the current directory first on the import path)."""
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # so that a user's local module or package is importable
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise MedxganError(f"classifier {spec}: cannot import module {module_name!r} ({exc}); run from the folder that holds it "
                           "or put that folder on PYTHONPATH", arg="classifier") from None
    except (Exception, SystemExit) as exc:  # the user's module raised (or exited) while being imported
        raise UserCodeError(f"classifier {spec}: importing module {module_name!r} raised {type(exc).__name__}: {_first(exc)}", arg="classifier") from exc
    factory: Any = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
    if factory is None or not callable(factory):
        raise MedxganError(f"classifier {spec}: module {module_name!r} has no callable {attr!r}", arg="classifier")
    return factory


def build_from_factory(spec: str) -> torch.nn.Module:
    factory = import_factory(spec)
    try:
        model = factory()
    except (Exception, SystemExit) as exc:  # the user's factory raised (or exited)
        raise UserCodeError(f"classifier {spec}: the factory raised {type(exc).__name__}: {_first(exc)}", arg="classifier") from exc
    if not isinstance(model, torch.nn.Module):
        raise MedxganError(f"classifier {spec}: factory returned {type(model).__name__}, not an nn.Module", arg="classifier")
    return model


def _load_factory(spec: str, weights: Any, device: Any, output: str | None, pp: Preprocessing | None, pos: int | None,
                  target: Target | None) -> ClassifierAdapter:
    model = build_from_factory(spec)
    if weights is not None:
        wpath = Path(weights)
        load_state_into(model, read_state_dict(wpath), f"weights {wpath}", f"the model from {spec}", arg="weights")
    source = {"kind": "factory", "spec": spec, "weights": str(Path(weights).resolve()) if weights is not None else None}
    return _adapter(model, spec, output, pp, pos, target, source)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a torch.save checkpoint (weights_only), unwrapped from
    ``{"model"|"state_dict"|"model_state_dict"|...: state_dict}``."""
    if not path.is_file():
        raise MedxganError(f"weights {path}: file not found", arg="weights")
    if path.suffix == ".safetensors":
        return load_weights(path)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors of several types; weights_only refuses arbitrary objects
        raise MedxganError(f"weights {path}: cannot load as a state dict ({_first(exc)})", arg="weights") from None
    for _ in range(2):  # {"checkpoint": {"state_dict": ...}} is rare; two levels cover what training scripts write
        if isinstance(state, dict) and not _is_state_dict(state):
            inner = [k for k in _WRAPPER_KEYS if isinstance(state.get(k), dict)]
            if inner:
                state = state[inner[0]]
    if not isinstance(state, dict) or not _is_state_dict(state):
        keys = ", ".join(map(str, list(state)[:8])) if isinstance(state, dict) else type(state).__name__
        raise MedxganError(f"weights {path}: not a state dict (found {keys}; expected parameter names -> tensors, or a "
                           f"checkpoint holding one under {'/'.join(_WRAPPER_KEYS)})", arg="weights")
    return state


def _is_state_dict(d: dict) -> bool:
    return bool(d) and all(isinstance(k, str) for k in d) and all(isinstance(v, torch.Tensor) for v in d.values())


def load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str, target: str, arg: str | None = None) -> None:
    """``model.load_state_dict(state)`` with the ``module.`` prefix of (Distributed)DataParallel checkpoints
    removed when the model's own names lack it, and a key mismatch reported in full on one line."""
    own = model.state_dict()
    if state and all(k.startswith("module.") for k in state) and not any(k.startswith("module.") for k in own):
        state = {k[len("module."):]: v for k, v in state.items()}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {', '.join(unexpected)}")
        raise MedxganError(f"{what}: do not match {target} ({'; '.join(parts)})", arg=arg)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:  # same names, other shapes: torch lists every one; keep them all on one line
        raise MedxganError(f"{what}: do not match {target} ({' '.join(str(exc).split())})", arg=arg) from None


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]
