"""Save and load nested training state (model/optimiser state dicts, RNG states, counters) without pickle.

Tensors go to one safetensors file under flat keys; everything else (numbers, strings, lists, dicts,
None) goes to a JSON skeleton that refers to the tensors by key. torch.save/pickle would be shorter but
loading a pickle executes arbitrary code, which a checkpoint shared between users must never do.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from medxgan.runtime.atomic import atomic_write_bytes, atomic_write_text
from medxgan.runtime.errors import MedxganError

_TENSOR = "__tensor__"
_TUPLE = "__tuple__"
_INTKEYS = "__intkeys__"


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = prefix or "_"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {_TENSOR: key}
    if isinstance(obj, dict):
        int_keys = all(isinstance(k, int) for k in obj) and len(obj) > 0
        out = {str(k): _flatten(v, f"{prefix}.{k}" if prefix else str(k), tensors) for k, v in obj.items()}
        if int_keys:
            out = {_INTKEYS: out}
        return out
    if isinstance(obj, tuple):
        return {_TUPLE: [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix!r} in a checkpoint")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if _TUPLE in obj:
            return tuple(_unflatten(v, tensors) for v in obj[_TUPLE])
        if _INTKEYS in obj:
            return {int(k): _unflatten(v, tensors) for k, v in obj[_INTKEYS].items()}
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_state(directory: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write `state.json` + `state.safetensors` into `directory` (each atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "", tensors)
    from safetensors.torch import save as save_bytes

    atomic_write_bytes(directory / "state.safetensors", save_bytes(tensors) if tensors else save_bytes({"_empty": torch.zeros(0)}))
    atomic_write_text(directory / "state.json", json.dumps(skeleton))


def _referenced(obj: Any) -> list[str]:
    """The tensor keys a skeleton refers to."""
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return [obj[_TENSOR]]
        return [k for v in obj.values() for k in _referenced(v)]
    if isinstance(obj, list):
        return [k for v in obj for k in _referenced(v)]
    return []


def check_state(directory: str | os.PathLike) -> None:
    """Cheap check of a checkpoint without loading its tensors: state.json is a JSON object, the safetensors
    header is whole and the file as long as it says, every tensor state.json names is there. MedxganError
    naming the file and what is wrong."""
    from safetensors import safe_open

    directory = Path(directory)
    try:
        skeleton = json.loads((directory / "state.json").read_text())
    except (OSError, ValueError) as exc:
        raise MedxganError(f"{directory / 'state.json'}: unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(skeleton, dict):
        raise MedxganError(f"{directory / 'state.json'}: holds a JSON {type(skeleton).__name__}, not a checkpoint's object")
    try:
        with safe_open(str(directory / "state.safetensors"), framework="pt") as fh:
            keys = set(fh.keys())
    except Exception as exc:  # safetensors raises its own error types for truncated or foreign files
        raise MedxganError(f"{directory / 'state.safetensors'}: not a whole safetensors file ({type(exc).__name__}: {exc})") from None
    missing = [k for k in _referenced(skeleton) if k not in keys]
    if missing:
        raise MedxganError(f"{directory / 'state.json'}: names tensor(s) that state.safetensors lacks ({', '.join(missing[:3])})")


def load_state(directory: str | os.PathLike) -> dict[str, Any]:
    directory = Path(directory)
    check_state(directory)
    try:
        skeleton = json.loads((directory / "state.json").read_text())
        tensors = load_file(str(directory / "state.safetensors"))
    except Exception as exc:  # OSError, ValueError, safetensors' own errors
        raise MedxganError(f"{directory}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None
    return _unflatten(skeleton, tensors)


def save_weights(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Model weights as a plain safetensors file, written atomically."""
    from safetensors.torch import save as save_bytes

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    atomic_write_bytes(path, save_bytes(tensors, metadata=metadata))


def load_weights(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device=str(device))
    except FileNotFoundError:
        raise MedxganError(f"{path}: weights file not found") from None
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise MedxganError(f"{path}: not a readable safetensors file ({exc})") from None


__all__ = ["save_state", "load_state", "check_state", "save_weights", "load_weights", "save_file"]
