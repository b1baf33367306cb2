"""Dataclass <-> plain JSON data, driven by the type hints (lossless round trip).

Supported field types: dataclasses, ``list[T]``, ``dict[str, T]``, ``T | None``, ``Literal[...]``,
``int``, ``float``, ``str``, ``bool`` and ``Any`` (kept as is). Unknown keys in the input are an error,
so a file written by a newer schema is not silently half-read.

Figures are checked on the way in: every float is finite (``to_data`` writes NaN/inf as null, so a file holding
one was not written by gpuprobe), and a number in a field whose name carries a unit (``_gbps``, ``_us``, ``_ms``,
``_s``, ``_bytes``, ...; elements of lists and values of dicts included) or that its class lists in
``NONNEGATIVE`` is >= 0 (a class names its signed exceptions in ``SIGNED``). A class may also declare
``RANGES``: ``{field: (low, high, low_open)}``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")

UNIT_SUFFIXES = ("_gbps", "_us", "_ms", "_s", "_seconds", "_bytes", "_gib", "_mib", "_tokens", "_mhz", "_w")
"""Field names ending in one of these hold amounts of a unit: never negative."""


def _nonnegative(cls: type, name: str) -> bool:
    if name in getattr(cls, "SIGNED", ()):
        return False
    return name.endswith(UNIT_SUFFIXES) or name in getattr(cls, "NONNEGATIVE", ())


class SerdeError(ValueError):
    """The data does not match the dataclass it is loaded into; the message names the path."""


def to_data(obj: Any) -> Any:
    """Dataclass tree -> dicts/lists/scalars. NaN/inf floats become None (JSON has no such numbers)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_data(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_data(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def from_data(cls: type[T], data: Any, path: str = "$") -> T:
    """Build ``cls`` (a dataclass) from ``data``; raises SerdeError naming the offending path."""
    try:
        return _convert(cls, data, path)
    except RecursionError:
        raise SerdeError(f"{path}: nested too deeply") from None


def _check_range(cls: type, name: str, value: Any, path: str) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    if value < 0 and _nonnegative(cls, name):
        raise SerdeError(f"{path}: {value!r} is negative; {name} is >= 0")
    bounds = getattr(cls, "RANGES", {}).get(name)
    if bounds is not None:
        low, high, low_open = bounds
        if value < low or (low_open and value == low) or value > high:
            raise SerdeError(f"{path}: {value!r} is outside {'(' if low_open else '['}{low:g}, {high:g}]")


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [x for v in value for x in _leaves(v)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    return [value]


def _convert(tp: Any, data: Any, path: str) -> Any:
    if tp is Any:
        return data
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if data is None:
            if type(None) in args:
                return None
            raise SerdeError(f"{path}: null is not allowed here")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, data, path)
            except SerdeError as exc:
                errors.append(str(exc))
        raise SerdeError(errors[0] if len(errors) == 1 else f"{path}: matches none of {args}")
    if origin is typing.Literal:
        if data not in typing.get_args(tp):
            raise SerdeError(f"{path}: {data!r} is not one of {typing.get_args(tp)}")
        return data
    if origin is list:
        if not isinstance(data, list):
            raise SerdeError(f"{path}: expected a list, got {type(data).__name__}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(data)]
    if origin is dict:
        if not isinstance(data, dict):
            raise SerdeError(f"{path}: expected an object, got {type(data).__name__}")
        _, val = typing.get_args(tp) or (str, Any)
        return {str(k): _convert(val, v, f"{path}.{k}") for k, v in data.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise SerdeError(f"{path}: expected an object for {tp.__name__}, got {type(data).__name__}")
        hints = _hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp)}
        unknown = set(data) - set(fields)
        if unknown:
            raise SerdeError(f"{path}: unknown field(s) {sorted(unknown)} for {tp.__name__}")
        kwargs = {}
        for name, f in fields.items():
            if name in data:
                kwargs[name] = value = _convert(hints[name], data[name], f"{path}.{name}")
                if not dataclasses.is_dataclass(value):
                    for leaf in _leaves(value):
                        _check_range(tp, name, leaf, f"{path}.{name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SerdeError(f"{path}: missing field {name!r} for {tp.__name__}")
        return tp(**kwargs)
    if tp is float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise SerdeError(f"{path}: expected a number, got {data!r}")
        try:
            value = float(data)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise SerdeError(f"{path}: {data!r} is not a finite number")
        return value
    if tp is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise SerdeError(f"{path}: expected an integer, got {data!r}")
        return data
    if tp is bool:
        if not isinstance(data, bool):
            raise SerdeError(f"{path}: expected true/false, got {data!r}")
        return data
    if tp is str:
        if not isinstance(data, str):
            raise SerdeError(f"{path}: expected a string, got {data!r}")
        return data
    raise SerdeError(f"{path}: unsupported type {tp!r}")
