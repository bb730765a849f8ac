"""Device selection: the user asks for auto/cpu/cuda[:k]/mps; auto takes a GPU when there is one."""

from __future__ import annotations

import torch

from medxgan.runtime.errors import MedxganError


def pick_device(name: str | None = "auto") -> torch.device:
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MedxganError(f"device {name}: CUDA is not available on this machine (use --device cpu)", arg="device")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise MedxganError("device mps: MPS is not available on this machine", arg="device")
    try:
        return torch.device(name)
    except RuntimeError:
        raise MedxganError(f"device {name}: unknown device (use auto, cpu, cuda, cuda:N or mps)", arg="device") from None
