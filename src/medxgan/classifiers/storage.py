"""A GAN run's own copy of its classifier, and loading it back with its fingerprint checked.

A GAN's latent space means what *its* classifier saw, so a run must be able to rebuild exactly that
classifier on every later command, with the same output decoding, target and preprocessing, without
the user giving the flags again:

* a built-in classifier run directory is copied whole (``RUN/classifier/``, by ``gan.run.copy_into_run``);
* a TorchScript or ``.pt2`` file is copied as is (its weights cannot be separated from its code);
* a ``package.module:factory`` classifier (and a Python object given to ``train_gan``) is stored by
  :func:`store_classifier` as ``RUN/classifier/model.safetensors`` + ``classifier.json`` (the factory
  spec, the adapter settings, the fingerprint): the factory is imported again, the stored weights are
  loaded into it.

:func:`load_recorded_classifier` rebuilds the classifier from a run's ``config.json`` record and
refuses, in one line naming both fingerprints, one whose weights differ from those the GAN was trained
against (a factory whose code changed, a replaced file): explanations of another classifier's weights
would look plausible and be wrong.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from medxgan.classifiers.adapter import ClassifierAdapter, Preprocessing, Target
from medxgan.classifiers.checks import warn_recorded
from medxgan.classifiers.loading import build_from_factory, load_classifier, load_state_into
from medxgan.classifiers.records import COPY_RECORD_FIELDS
from medxgan.runtime.atomic import atomic_write_json
from medxgan.runtime.errors import MedxganError
from medxgan.runtime.records import check_record
from medxgan.runtime.state import load_weights, save_weights

COPY_FILE = "classifier.json"
COPY_WEIGHTS = "model.safetensors"
COPY_KIND = "medxgan-classifier-copy"


def adapter_kwargs(record: dict[str, Any] | None) -> dict[str, Any]:
    """The adapter settings of a recorded ``adapter.describe()`` as keyword arguments of
    :func:`~medxgan.classifiers.loading.load_classifier` (output, positive index, target, preprocessing)."""
    ad = record or {}
    if not ad:
        return {}
    return dict(output=ad.get("output"), positive_index=ad.get("positive_index"), target=Target.from_dict(ad.get("target")),
                preprocessing=Preprocessing.from_dict(ad.get("preprocessing")))


def store_classifier(adapter: torch.nn.Module, dst: str | os.PathLike) -> str | None:
    """Store a factory-built (or Python object) classifier's weights and settings in ``dst``; returns the
    folder's name (the run-relative path) or None when the classifier came from a file or run
    directory (copied as is by the caller)."""
    source = getattr(adapter, "source", None)
    if source is not None and source.get("kind") != "factory":
        return None
    model = getattr(adapter, "model", adapter)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    save_weights(dst / COPY_WEIGHTS, model.state_dict())
    record = {
        "kind": COPY_KIND,
        "format": "factory" if source else "object",
        "spec": source.get("spec") if source else None,
        "weights_given": source.get("weights") if source else None,
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "weights": COPY_WEIGHTS,
        "fingerprint": getattr(adapter, "fingerprint", None),
        "adapter": adapter.describe() if hasattr(adapter, "describe") else None,
    }
    atomic_write_json(dst / COPY_FILE, record)
    return dst.name


def load_stored_classifier(folder: Path, device: str | torch.device = "cpu") -> ClassifierAdapter:
    """Rebuild a classifier written by :func:`store_classifier` (factory imported again, stored weights)."""
    try:
        record = json.loads((folder / COPY_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise MedxganError(f"{folder / COPY_FILE}: unreadable ({exc})") from None
    if not isinstance(record, dict) or record.get("kind") != COPY_KIND:
        raise MedxganError(f"{folder / COPY_FILE}: not a medxgan classifier record")
    check_record(record, COPY_RECORD_FIELDS, folder / COPY_FILE)
    if record.get("format") != "factory" or not record.get("spec"):
        raise MedxganError(f"{folder}: the run holds no copy of its classifier that medxgan can rebuild: it was trained with a Python "
                           f"object ({record.get('class')}) whose weights and settings are kept here; pass it again (Python classifier=) "
                           "or use --classifier")
    spec = str(record["spec"])
    model = build_from_factory(spec)
    load_state_into(model, load_weights(folder / COPY_WEIGHTS), f"{folder / COPY_WEIGHTS}", f"the model built by {spec} today")
    kw = adapter_kwargs(record.get("adapter"))
    ad = ClassifierAdapter(model, output=kw.get("output") or "auto", positive_index=1 if kw.get("positive_index") is None else kw["positive_index"],
                           preprocessing=kw.get("preprocessing"), name=spec, target=kw.get("target"))
    ad.source = {"kind": "factory", "spec": spec, "weights": str(folder / COPY_WEIGHTS)}
    return ad.to(device)


def load_recorded_classifier(run_path: Path, record: dict[str, Any], device: str | torch.device = "cpu") -> ClassifierAdapter:
    """The classifier a GAN run was trained against, from its ``config.json`` ``classifier`` record:
    the run's own copy when there is one, else the recorded source; adapter settings re-applied;
    refused when its fingerprint is not the recorded one."""
    local = run_path / record["local"] if record.get("local") else None
    kw = adapter_kwargs(record.get("adapter"))
    if local is not None and (local / COPY_FILE).is_file():
        clf, what = load_stored_classifier(local, device), f"{record.get('source') or 'a factory'} with the weights stored in {local}"
    elif local is not None and local.is_dir():
        clf, what = load_classifier(local, device=device), str(local)
    elif local is not None and local.is_file():
        clf, what = load_classifier(local, device=device, **kw), str(local)
    elif record.get("source"):
        src = str(record["source"])
        if not os.path.exists(src) and ":" not in src:  # moved or deleted since training: say whose classifier
            raise MedxganError(f"{run_path}: the classifier it was trained against, {src}, is not there and the run holds no copy "
                               "of it; pass the classifier with --classifier")
        clf, what = load_classifier(src, device=device, **kw), src
    else:
        raise MedxganError(f"{run_path}: the run holds no copy of its classifier; pass classifier= (Python) or --classifier")
    check_fingerprint(clf, record.get("fingerprint"), f"{run_path}: its classifier, rebuilt from {what},")
    warn_recorded(record.get("check"), str(run_path))
    return clf


def check_fingerprint(clf: Any, expected: str | None, what: str) -> None:
    """Refuse ``clf`` when its weights' fingerprint is not ``expected`` (one line naming both)."""
    fp = getattr(clf, "fingerprint", None)
    if expected and fp is not None and fp != expected:
        raise MedxganError(f"{what} has fingerprint {fp} but the GAN was trained against fingerprint {expected}: other weights "
                           "(a changed factory or file?); restore the original classifier, or pass another one knowingly with --classifier")
