"""Settings objects (frozen dataclasses: InversionConfig, EvaluateConfig, ...): the one way to change fields by name."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from medxgan.runtime.errors import MedxganError

T = TypeVar("T")


def replace_fields(config: T, what: str, **options: Any) -> T:
    """``dataclasses.replace(config, **options)``; an unknown name is a one-line MedxganError naming it
    (``"<what> 'stepz': unknown (choose from ...)"``), a call without options returns ``config`` itself."""
    names = [f.name for f in dataclasses.fields(config)]
    bad = [k for k in options if k not in names]
    if bad:
        raise MedxganError(f"{what} {bad[0]!r}: unknown (choose from {', '.join(names)})", arg=bad[0])
    return dataclasses.replace(config, **options) if options else config
