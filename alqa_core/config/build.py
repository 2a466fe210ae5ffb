"""Frozen dataclasses from YAML mappings, field by field, and back to plain data.

Errors name the file and the field (``training.max_epochs: expected an
integer, got 'ten'``); a key is valid exactly when the dataclass has the field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from alqa_core.errors import AlqaInputError


def _coerce(value: Any, annotation: Any, where: str, source: Path | None) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where, source)
            except AlqaInputError as exc:
                errors.append(exc.reason)
        raise AlqaInputError(source, errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise AlqaInputError(source, f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]", source) for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise AlqaInputError(source, f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]", source) for i, (v, a) in enumerate(zip(value, args or [Any] * len(value))))
    if annotation is bool:
        if not isinstance(value, bool):
            raise AlqaInputError(source, f"{where}: expected true/false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise AlqaInputError(source, f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise AlqaInputError(source, f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise AlqaInputError(source, f"{where}: expected a string, got {value!r}")
        return value
    if annotation is Path:
        if not isinstance(value, str):
            raise AlqaInputError(source, f"{where}: expected a path, got {value!r}")
        p = Path(value).expanduser()
        return p if p.is_absolute() or source is None else (source.parent / p)
    if dataclasses.is_dataclass(annotation):
        return build_dataclass(annotation, value, where, source)
    return value


def build_dataclass(cls: type, mapping: Any, where: str, source: Path | None = None):
    """Build frozen dataclass ``cls`` from a YAML mapping; unknown or ill-typed keys name the field."""
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise AlqaInputError(source, f"{where}: expected a mapping, got {mapping!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise AlqaInputError(source, f"{where}: unknown key(s) {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in mapping.items():
        kwargs[name] = _coerce(value, hints[name], f"{where}.{name}" if where else name, source)
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise AlqaInputError(source, f"{where or 'config'}: missing required key(s) {missing}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, KeyError) as exc:
        raise AlqaInputError(source, f"{where}: {exc}") from exc


def plain_data(value: Any) -> Any:
    """Tuples -> lists, mappings -> dicts, paths -> str: what ``weights_only`` loading accepts."""
    if isinstance(value, Mapping):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"metadata must be plain data, got {type(value).__name__}: {value!r}")

