"""Argument checks made once, before any work starts (and before anything is written).

``check_args(**values)`` checks every value whose name is in :data:`RULES` (the library's argument
names, which are also the CLI's flags with dashes: the CLI runs it over all its parsed options) and
raises a one-line :class:`MedxganError` naming the argument. ``None`` always passes (= "the default").
Commands keep their own, narrower checks (synth's size >= 32, translate's multiple of 4); these rules
are what holds for every command. ``check_writable_dir(path, arg)`` refuses an output directory that
cannot be created or written, without creating it. ``check_image_memory`` refuses sizes whose arrays
cannot fit in memory.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from medxgan.runtime.errors import MedxganError

__all__ = ["Rule", "RULES", "PRESET_RULES", "check_override", "check_args", "check_value", "check_writable_dir", "check_image_memory", "available_memory", "check_option_memory", "check_memory"]

MAX_SEED = 2**63 - 1  # torch.manual_seed takes a signed 64-bit integer
MAX_SIZE = 8192  # image side in pixels


@dataclass(frozen=True)
class Rule:
    """``kind``: "int" or "float"; ``low``/``high``: inclusive bounds unless ``open_low``; floats are finite."""

    kind: str = "float"
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def describe(self) -> str:
        what = "an integer" if self.kind == "int" else "a finite number"
        if self.low is not None and self.high is not None:
            return f"{what} in {'(' if self.open_low else '['}{_n(self.low)}, {_n(self.high)}{')' if self.open_high else ']'}"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.open_low else '>='} {_n(self.low)}")
        if self.high is not None:
            parts.append(f"{'<' if self.open_high else '<='} {_n(self.high)}")
        return f"{what} {' and '.join(parts)}" if parts else what


def _n(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


_POS = Rule("float", 0, open_low=True)
_NONNEG = Rule("float", 0)
_COUNT1 = Rule("int", 1)
_COUNT0 = Rule("int", 0)

RULES: dict[str, Rule] = {
    # optimisation
    "lr": _POS, "weight_decay": _NONNEG, "lambda_cls": _NONNEG, "lambda_cycle": _NONNEG, "lambda_l1": _NONNEG, "max_minutes": _NONNEG,
    # counts
    "epochs": _COUNT1, "epochs_decay": _COUNT0, "batch_size": _COUNT1, "steps": _COUNT0, "restarts": _COUNT1,
    "frames": Rule("int", 2), "lig_steps": _COUNT1, "tune_steps": _COUNT0, "keep_last": _COUNT1, "monitor_samples": Rule("int", 2),
    "oracle_epochs": _COUNT1, "eval_images": _COUNT1, "workers": _COUNT0, "n": _COUNT1, "max_sensitivity_n": _COUNT0, "sanity_n": _COUNT1,
    "max_rows": _COUNT0, "pool_size": _COUNT0, "width": _COUNT1, "ngf": _COUNT1, "ndf": _COUNT1, "blocks": _COUNT0,
    "log_every": _COUNT0, "sample_every": _COUNT0, "ckpt_every": _COUNT0, "checkpoint_every": _COUNT0,
    # sizes
    "size": Rule("int", 1, MAX_SIZE), "crop": Rule("int", 1, MAX_SIZE), "tile": Rule("int", 16, MAX_SIZE),
    "classifier_size": Rule("int", 1, MAX_SIZE),
    # seeds
    "seed": Rule("int", 0, MAX_SEED),
    # per-item lists
    "fractions": Rule("float", 0, 1, open_low=True), "noise_sigmas": _POS, "classifier_std": _POS, "classifier_mean": Rule("float"),
}


# ranges of the GAN preset options an experiment may override (``--set KEY=VALUE``): a wrong value must be
# one line before training, not an optimiser's ValueError or an EMA that diverges silently
_UNIT = Rule("float", 0, 1, open_high=True)
PRESET_RULES: dict[str, Rule] = {
    "lr": _POS, "lr_d": _POS, "ema_decay": _UNIT, "beta1": _UNIT, "beta2": _UNIT, "d_dropout": _UNIT,
    "lambda_cls": _NONNEG, "recon_weight": _NONNEG, "kl_weight": _NONNEG, "cf_weight": _NONNEG, "adv_weight": _NONNEG,
    "prox_weight": _NONNEG, "cf_adv_weight": _NONNEG, "mask_weight": _NONNEG, "tv_weight": _NONNEG, "r1_gamma": _NONNEG,
    "r1_every": _COUNT1, "lambda_warmup": _COUNT0, "nz1": _COUNT1, "nz2": _COUNT1, "g_width": _COUNT1, "d_width": _COUNT1,
    "size": Rule("int", 8, MAX_SIZE), "channels": Rule("int", 1, 3), "mask_scale": _POS,
}


def check_value(name: str, value: Any, rule: Rule) -> None:
    """One value (or each item of a list/tuple) against ``rule``; None passes."""
    if value is None or isinstance(value, bool):
        return
    items = value if isinstance(value, (list, tuple)) else [value]
    for v in items:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        if ok and rule.kind == "int":
            ok = isinstance(v, int) or (isinstance(v, float) and math.isfinite(v) and v.is_integer())
        if ok:
            f = float(v) if not isinstance(v, int) else v
            ok = (isinstance(f, int) or math.isfinite(f)) \
                and (rule.low is None or (f > rule.low if rule.open_low else f >= rule.low)) \
                and (rule.high is None or (f < rule.high if rule.open_high else f <= rule.high))
        if not ok:
            shown = " ".join(map(str, items)) if len(items) > 1 else str(v)
            each = "each value " if len(items) > 1 else ""
            raise MedxganError(f"{name} {shown}: {each}must be {rule.describe()}", arg=name)


def check_args(**values: Any) -> None:
    """Check every value whose name has a rule in :data:`RULES` (others are ignored)."""
    for name, value in values.items():
        rule = RULES.get(name)
        if rule is not None:
            check_value(name, value, rule)


def check_writable_dir(path: str | os.PathLike, arg: str = "out") -> None:
    """Refuse an output directory that is a file, lies below a file, or whose first existing ancestor is
    not writable (a read-only folder, /proc, /sys, ...). Creates nothing (a probe folder in the existing
    ancestor is made and removed at once)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise MedxganError(f"{arg} {path}: exists and is not a directory", arg=arg)
    probe = p.absolute()
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise MedxganError(f"{arg} {path}: {probe} is a file, not a directory", arg=arg)
    if p.exists():  # an existing directory: can we write into it?
        probe = p
    try:
        tmp = tempfile.mkdtemp(prefix=".medxgan-probe-", dir=probe)
        os.rmdir(tmp)
    except OSError as exc:
        raise MedxganError(f"{arg} {path}: cannot write there ({exc.strerror or type(exc).__name__} in {probe})", arg=arg) from None
    if str(p.absolute()).startswith(("/proc/", "/sys/")):  # pseudo file systems (writable to root in places)
        raise MedxganError(f"{arg} {path}: not a place for output (a pseudo file system)", arg=arg)


def available_memory() -> int | None:
    """Bytes of memory available (MemAvailable on Linux), or None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_image_memory(arg: str, size: int, *, arrays: float, channels: int = 1, bytes_per: int = 4, what: str = "") -> None:
    """Refuse ``size`` when ``arrays`` float arrays of size x size x channels would not fit in the
    available memory (estimated before allocating anything)."""
    need = float(arrays) * size * size * channels * bytes_per
    avail = available_memory()
    if avail is not None and need > 0.8 * avail:
        raise MedxganError(f"{arg} {size}: needs about {need / 2**30:.1f} GiB of memory{(' ' + what) if what else ''}, "
                           f"{avail / 2**30:.1f} GiB available; choose a smaller {arg}", arg=arg)



def check_override(key: str, value: Any, current: Any, arg: str = "preset_overrides") -> Any:
    """An experiment override (``--set KEY=VALUE``) must have the type of the option it replaces
    (``current``; None = any); an int is accepted for a float option (returned as float)."""
    def bad(what: str) -> MedxganError:
        return MedxganError(f"preset_overrides {key}={value!r}: {key} takes {what}", arg=arg)

    value = _typed_override(key, value, current, bad)
    rule = PRESET_RULES.get(key)
    if rule is not None and value is not None:
        try:
            check_value(key, value, rule)
        except MedxganError:
            raise MedxganError(f"preset_overrides {key}={value!r}: {key} must be {rule.describe()}", arg=arg) from None
    if key in _OPTION_NEED and isinstance(value, (int, float)):
        try:
            check_option_memory(**{key: value})
        except MedxganError as exc:
            raise MedxganError(f"preset_overrides {key}={value!r}: {str(exc).split(': ', 1)[1]}", arg=arg) from None
    return value


def _typed_override(key: str, value: Any, current: Any, bad: Any) -> Any:
    if current is None:
        return value
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
            raise bad("a finite number")
        return float(value)
    if isinstance(current, str):
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if isinstance(current, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        return type(current)(value)
    return value


def check_memory(name: str, value: Any, need: float, what: str = "") -> None:
    """Refuse option ``name`` = ``value`` when its estimated ``need`` (bytes) exceeds 80% of the memory available."""
    avail = available_memory()
    if avail is not None and need > 0.8 * avail:
        raise MedxganError(f"{name} {value}: needs about {need / 2**30:.3g} GiB of memory{(' ' + what) if what else ''}, "
                           f"{avail / 2**30:.1f} GiB available; choose a smaller value", arg=name)


# Lower-bound estimates (bytes per unit of the option) of what each size option makes the commands hold at once; meant
# to turn an absurd value (frames 1e8, lig_steps 1e9, ngf 1e6) into one line before any work, never to refuse a
# plausible one, so each counts only the tensors that must exist (an image per frame, per LIG step, ...), not peaks.
def _image_bytes(v: dict[str, Any]) -> float:
    size = v.get("size") if isinstance(v.get("size"), int) else 64
    return 3.0 * size * size * 4  # one float32 image (colour at worst)


def _batch(v: dict[str, Any]) -> int:
    b = v.get("batch_size")
    return b if isinstance(b, int) and b > 0 else 1


def _conv_params_bytes(width: float, layers: int = 8) -> float:
    return 16.0 * 9 * layers * float(width) ** 2  # 3x3 convolutions width->width: weights, gradients, 2 Adam moments


_OPTION_NEED = {
    "frames": (lambda x, v: x * _batch(v) * _image_bytes(v), "for the interpolation frames"),
    "lig_steps": (lambda x, v: x * _batch(v) * _image_bytes(v), "for the LIG path images"),
    "batch_size": (lambda x, v: x * 16 * _image_bytes(v), "for one batch and its activations"),
    "monitor_samples": (lambda x, v: x * _image_bytes(v), "for the monitor images"),
    "width": (lambda x, v: _conv_params_bytes(x), "for the encoder's weights and optimiser state"),
    "ngf": (lambda x, v: _conv_params_bytes(4 * x, 10), "for the generators' weights and optimiser state"),
    "ndf": (lambda x, v: _conv_params_bytes(8 * x, 4), "for the discriminators' weights and optimiser state"),
    "g_width": (lambda x, v: _conv_params_bytes(x), "for the generator's weights and optimiser state"),
    "d_width": (lambda x, v: _conv_params_bytes(x), "for the discriminator's weights and optimiser state"),
}


def check_option_memory(given: Iterable[str] = (), **values: Any) -> None:
    """The memory each size option given would need (rough lower bound), against what the machine has.
    ``given``: the options written on the command line; a batch too large for memory is blamed on ``size``
    when only the image size was given (``--size 8000`` with the default batch), else on ``batch_size``."""
    given = set(given)
    for name, (need, what) in _OPTION_NEED.items():
        x = values.get(name)
        if isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0:
            if name == "batch_size" and "size" in given and "batch_size" not in given and isinstance(values.get("size"), int):
                check_memory("size", values["size"], need(float(x), values), f"{what} (batches of {x})")
                continue
            check_memory(name, x, need(float(x), values), what)
