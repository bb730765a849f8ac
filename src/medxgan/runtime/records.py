"""Stored records read back (run configs, encoder and translate runs, classifier copies, dataset.json):
checked against a small schema before anything is built from them, so that a hand-edited or foreign file
is refused in one line naming the file and the field, instead of a TypeError from deep inside torch.

    from medxgan.runtime.records import check_record, integer, obj, text

    SCHEMA = {"arch": text(required=True), "arch_kwargs": obj({"in_channels": integer(min=1)}, closed=True, null=True)}
    check_record(config, SCHEMA, where=run.config_path)
    # -> MedxganError("runs/clf/config.json: field arch_kwargs.in_channels: 0 is too small (at least 1)")

Keys a schema does not name are accepted at the top level of a record (a newer medxgan may add settings,
and ``runtime.runs`` warns about newer runs) and in objects that are not ``closed``; a ``closed`` object
(one whose keys become keyword arguments: preprocessing, target, network settings) refuses them.

Written by hand rather than with jsonschema/pydantic: the checks are a few types and ranges, the message
must name the file and the field on one line in this project's words, and it adds no dependency.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

from medxgan.runtime.errors import MedxganError

__all__ = ["Field", "integer", "number", "text", "flag", "obj", "array", "check_record", "check_field"]

_WORDS = {"int": "an integer", "number": "a number", "str": "a string", "bool": "true or false", "object": "an object",
          "list": "a list"}


@dataclass(frozen=True)
class Field:
    """What one value of a record may be: one of ``types`` ("int", "number", "str", "bool", "object",
    "list"), or null when ``null``; numbers within [``min``, ``max``]; strings among ``choices``; lists
    of ``length`` items each a ``item``; objects with ``fields`` (``closed``: no other keys)."""

    types: tuple[str, ...]
    required: bool = False
    null: bool = False
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    item: "Field | None" = None
    length: int | None = None
    fields: "Mapping[str, Field] | None" = None
    closed: bool = False


def integer(min: float | None = None, max: float | None = None, *, required: bool = False, null: bool = False) -> Field:
    return Field(("int",), required, null, min, max)


def number(min: float | None = None, max: float | None = None, *, required: bool = False, null: bool = False) -> Field:
    return Field(("number",), required, null, min, max)


def text(choices: tuple[str, ...] | None = None, *, required: bool = False, null: bool = False) -> Field:
    return Field(("str",), required, null, choices=choices)


def flag(*, required: bool = False, null: bool = False) -> Field:
    return Field(("bool",), required, null)


def obj(fields: Mapping[str, Field] | None = None, *, closed: bool = False, required: bool = False, null: bool = False) -> Field:
    return Field(("object",), required, null, fields=fields, closed=closed)


def array(item: Field | None = None, length: int | None = None, *, required: bool = False, null: bool = False) -> Field:
    return Field(("list",), required, null, item=item, length=length)


# the type names of JSON values, in the order they are tried: bool first, since a bool is also an int
_JSON_TYPES = ((bool, "bool"), (int, "int"), (float, "number"), (str, "str"), (dict, "object"), (list, "list"))


def _type_of(value: Any) -> str:
    for python_type, name in _JSON_TYPES:
        if isinstance(value, python_type):
            return name
    return "null" if value is None else type(value).__name__


def _shown(value: Any) -> str:
    try:
        s = json.dumps(value)
    except (TypeError, ValueError):
        s = repr(value)
    return s if len(s) <= 60 else s[:57] + "..."


def _expected(spec: Field) -> str:
    words = [_WORDS.get(t, t) for t in spec.types] + (["null"] if spec.null else [])
    return " or ".join(words) if len(words) < 3 else f"{', '.join(words[:-1])} or {words[-1]}"


def check_field(value: Any, spec: Field, where: str, name: str) -> None:
    """Check one value against ``spec``; ``name``: its dotted path in the record (for the message)."""

    def refuse(problem: str) -> None:
        raise MedxganError(f"{where}: field {name}: {problem}")

    kind = _type_of(value)
    if value is None:
        if not spec.null:
            refuse(f"null, expected {_expected(spec)}")
        return
    accepted = set(spec.types) | ({"int"} if "number" in spec.types else set())  # an integer is a number
    if kind not in accepted:
        refuse(f"{_shown(value)} is {_WORDS.get(kind, kind)}, expected {_expected(spec)}")
    if kind in ("int", "number"):
        if not math.isfinite(value):
            refuse(f"{_shown(value)} is not a finite number")
        if spec.min is not None and value < spec.min:
            refuse(f"{_shown(value)} is too small (at least {spec.min:g})")
        if spec.max is not None and value > spec.max:
            refuse(f"{_shown(value)} is too large (at most {spec.max:g})")
    if kind == "str" and spec.choices is not None and value not in spec.choices:
        refuse(f"{_shown(value)} is not one of {', '.join(map(str, spec.choices))}")
    if kind == "list":
        if spec.length is not None and len(value) != spec.length:
            refuse(f"{_shown(value)} has {len(value)} items, expected {spec.length}")
        if spec.item is not None:
            for i, v in enumerate(value):
                check_field(v, spec.item, where, f"{name}[{i}]")
    if kind == "object" and spec.fields is not None:
        _check_keys(value, spec.fields, where, f"{name}.", spec.closed)


def _check_keys(record: Mapping[str, Any], fields: Mapping[str, Field], where: str, prefix: str, closed: bool) -> None:
    if closed:
        unknown = sorted(str(k) for k in record if k not in fields)
        if unknown:
            raise MedxganError(f"{where}: field {prefix}{unknown[0]}: unknown key (known: {', '.join(fields)})")
    for key, spec in fields.items():
        if key not in record:
            if spec.required:
                raise MedxganError(f"{where}: field {prefix}{key}: missing (expected {_expected(spec)})")
            continue
        check_field(record[key], spec, where, f"{prefix}{key}")


def check_record(record: Any, fields: Mapping[str, Field], where: str | os.PathLike, *, closed: bool = False) -> dict[str, Any]:
    """``record`` (a parsed JSON file) checked against ``fields``; returned as is. ``where``: the file,
    named in every message. Keys outside ``fields`` are accepted unless ``closed``."""
    where = str(where)
    if not isinstance(record, dict):
        raise MedxganError(f"{where}: holds {_WORDS.get(_type_of(record), _type_of(record))} ({_shown(record)}), expected a JSON object")
    _check_keys(record, fields, where, "", closed)
    return record
