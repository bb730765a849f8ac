"""The GPU path's speed options, shared by both trainers and inversion: mixed precision (autocast),
channels-last memory layout, torch.compile.

* ``amp``: "off" (float32 everywhere; the default, and the only mode covered by "same seed -> same
  numbers"), "bf16" (CUDA with bfloat16 support, or CPU) or "fp16" (CUDA only, with a GradScaler).
  Only network forward passes run under autocast (`forward`); their outputs come back as float32, so
  losses, penalties (R1), EMA, BatchNorm statistics and optimiser state stay in float32.
* ``channels_last``: 4-d weights and image batches in NHWC order (faster convolutions on tensor cores).
* ``compile``: torch.compile of the training networks; a clear MedxganError when it cannot work here.
"""

from __future__ import annotations

import contextlib
import shutil
from typing import Any, Callable, ContextManager

import torch
from torch import nn

from medxgan.runtime.errors import MedxganError

AMP_MODES = ("off", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_amp(amp: str | None, device: torch.device | str) -> str:
    """Validate an --amp value for `device`; returns it normalised ("off" for None)."""
    amp = (amp or "off").lower()
    dev = torch.device(device)
    if amp not in AMP_MODES:
        raise MedxganError(f"amp {amp}: choose off, bf16 or fp16", arg="amp")
    if amp != "off" and dev.type not in ("cuda", "cpu"):
        raise MedxganError(f"amp {amp}: mixed precision runs on cuda or cpu, not {dev.type} (use --amp off)", arg="amp")
    if amp == "fp16" and dev.type != "cuda":
        raise MedxganError("amp fp16: needs a CUDA device (on the CPU use --amp bf16)", arg="amp")
    if amp == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise MedxganError("amp bf16: this GPU has no bfloat16 support (use --amp fp16)", arg="amp")
    return amp


def autocast(amp: str, device: torch.device | str) -> ContextManager[Any]:
    """torch.autocast for `amp` on `device`'s type; a no-op context for "off"."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=_DTYPES[amp])


def forward(amp: str, device: torch.device | str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """fn(*args, **kwargs) under autocast, with floating outputs (a tensor or a tuple of tensors) cast
    back to float32 so that whatever follows (losses, penalties) computes in float32. "off": fn(...)."""
    if amp == "off":
        return fn(*args, **kwargs)
    with autocast(amp, device):
        out = fn(*args, **kwargs)
    if isinstance(out, tuple):
        return tuple(o.float() if torch.is_tensor(o) and o.is_floating_point() else o for o in out)
    return out.float() if torch.is_tensor(out) and out.is_floating_point() else out


def grad_scaler(amp: str, device: torch.device | str) -> "torch.amp.GradScaler | None":
    """A GradScaler for fp16 (its small range underflows gradients without loss scaling); None otherwise."""
    if amp != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)


def backward_step(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: "torch.amp.GradScaler | None") -> None:
    """loss.backward(); opt.step() -- through the GradScaler when there is one."""
    if scaler is None:
        loss.backward()
        opt.step()
        return
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()


def to_channels_last(x: Any) -> Any:
    """A module's 4-d parameters/buffers, or a 4-d tensor, in channels-last (NHWC) memory order."""
    if isinstance(x, nn.Module):
        return x.to(memory_format=torch.channels_last)
    if torch.is_tensor(x) and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def compile_module(module: nn.Module, device: torch.device | str) -> nn.Module:
    """torch.compile(module), or a MedxganError naming --compile when it cannot work on this machine
    (compilation itself happens lazily, at the first forward)."""
    dev = torch.device(device)
    if not hasattr(torch, "compile"):
        raise MedxganError(f"compile: torch.compile needs PyTorch >= 2.0 (this is {torch.__version__})", arg="compile")
    try:
        import torch._dynamo as dynamo

        supported = dynamo.is_dynamo_supported()
    except Exception:  # pragma: no cover - exotic builds
        supported = False
    if not supported:
        import sys

        raise MedxganError(f"compile: torch.compile is not supported by torch {torch.__version__} on Python "
                           f"{sys.version_info.major}.{sys.version_info.minor} (drop --compile)", arg="compile")
    if dev.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise MedxganError("compile: compiling for CUDA needs the triton package (pip install triton, or drop --compile)", arg="compile")
    elif dev.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        raise MedxganError("compile: compiling for the CPU needs a C++ compiler (g++ or clang++) on PATH (or drop --compile)", arg="compile")
    return torch.compile(module)
