"""Readable figures beside the planner's exact ones: bytes also in GiB, seconds also in ms, ratios also in %.

The planner answers in integer bytes and float seconds. An HTTP answer keeps every planner field as it is and adds
a rounded sibling after it: `total_bytes` → `total_gib`, `bytes` → `gib`, `ttft_s` → `ttft_ms`, `mfu` →
`mfu_pct`. `readable_json` adds them to a dumped answer; `readable_model` builds the pydantic class that
documents them (OpenAPI), subclassing each planner schema that holds such a figure. 1 GiB = 2^30 B.
"""

from __future__ import annotations

import types
import typing
from functools import cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Field, create_model

__all__ = ["GIB", "planner_json", "readable_json", "readable_model", "round_figure", "sibling"]

GIB = 1 << 30
MS_PER_S = 1000
PERCENT = 100
DECIMALS = 2  # figures ≥ 1 keep 2 decimals (14.96 GiB, 191.24 ms, 45.00 %)
SMALL_SIGNIFICANT = 3  # figures below 1 keep 3 significant digits (0.00195 GiB), so that a small term is not 0
RATIO_KEYS = frozenset({"mfu", "useful_token_fraction"})
RATIO_SUFFIXES = ("_error", "_ape", "_fraction", "_utilization")

Kind = Literal["gib", "ms", "pct"]
_UNIT_TEXT = {"gib": "in GiB (2^30 B)", "ms": "in milliseconds", "pct": "in percent"}


def sibling(key: str) -> tuple[str, Kind] | None:
    """The readable key beside a planner key and its unit; None for keys that keep no sibling.

    Bytes: the 'bytes' word becomes 'gib' (`kv_bytes_per_sequence` → `kv_gib_per_sequence`), except rates
    (`*_per_s`) and per-token sizes (KiB, read as they are). Seconds: `*_s` → `*_ms`, except rates. Ratios:
    `mfu`, `useful_token_fraction`, `*_error`, `*_ape`, `*_fraction`, `*_utilization` → `*_pct`.
    """
    words = key.split("_")
    if "bytes" in words and not key.endswith(("_per_s", "_per_token")):
        return "_".join("gib" if w == "bytes" else w for w in words), "gib"
    if key.endswith("_s") and not key.endswith("_per_s"):
        return key[:-2] + "_ms", "ms"
    if key in RATIO_KEYS or key.endswith(RATIO_SUFFIXES):
        return key + "_pct", "pct"
    return None


def round_figure(value: float) -> float:
    """2 decimals from 1 up, 3 significant digits below."""
    if abs(value) >= 1 or value == 0:
        return round(value, DECIMALS)
    return float(f"{value:.{SMALL_SIGNIFICANT}g}")


def _convert(value: float, kind: Kind) -> float:
    scale = {"gib": 1 / GIB, "ms": MS_PER_S, "pct": PERCENT}[kind]
    return round_figure(value * scale)


def readable_json(data: Any) -> Any:
    """A dumped (JSON-mode) answer with each byte, second and ratio figure followed by its readable sibling."""
    if isinstance(data, list):
        return [readable_json(item) for item in data]
    if not isinstance(data, dict):
        return data
    out: dict[str, Any] = {}
    for key, value in data.items():
        out[key] = readable_json(value)
        found = sibling(key) if isinstance(key, str) else None
        if found is None or isinstance(value, bool) or not isinstance(value, int | float | None):
            continue
        name, kind = found
        if name not in data:
            out[name] = None if value is None else _convert(value, kind)
    return out


def planner_json(data: Any) -> Any:
    """The inverse of readable_json, with the top-level `summary` dropped: what the planner's schema validates."""
    if isinstance(data, dict):
        data = {key: value for key, value in data.items() if key != "summary"}
    return _without_siblings(data)


def _without_siblings(data: Any) -> Any:
    if isinstance(data, list):
        return [_without_siblings(item) for item in data]
    if not isinstance(data, dict):
        return data
    added = {found[0] for key in data if isinstance(key, str) and (found := sibling(key)) is not None}
    return {key: _without_siblings(value) for key, value in data.items() if key not in added}


# --- the documented schema -------------------------------------------------------------------------------------


def _numeric(annotation: Any) -> bool:
    """int, float, or an optional/annotated one."""
    if annotation in (int, float):
        return True
    origin = get_origin(annotation)
    if origin is Annotated:
        return _numeric(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return bool(args) and all(_numeric(a) for a in args)
    return False


def _readable_type(annotation: Any) -> Any:
    """The annotation with every BaseModel inside replaced by its readable subclass (when it has one)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return readable_model(annotation)
    origin = get_origin(annotation)
    if origin is None:
        return annotation
    args = get_args(annotation)
    if origin is Annotated:
        inner = _readable_type(args[0])
        return annotation if inner is args[0] else Annotated[(inner, *args[1:])]
    new_args = tuple(_readable_type(a) for a in args)
    if new_args == args:
        return annotation
    if origin in (Union, types.UnionType):
        return Union[new_args]  # noqa: UP007  # built from a runtime tuple
    if origin is tuple:
        return tuple[new_args]  # type: ignore[valid-type]
    if origin is dict:
        key, value = new_args
        return dict[key, value]  # type: ignore[valid-type]
    return annotation


@cache
def readable_model(cls: type[BaseModel]) -> type[BaseModel]:
    """`cls` itself when nothing inside it gets a sibling; else `<cls>Readable`, with the siblings declared."""
    fields: dict[str, Any] = {}
    hints = typing.get_type_hints(cls, include_extras=True)
    for name, info in cls.model_fields.items():
        annotation = hints.get(name, info.annotation)
        readable = _readable_type(annotation)
        if readable is not annotation:
            fields[name] = (readable, info)
        key = info.alias or name
        found = sibling(key)
        if found is not None and _numeric(annotation) and found[0] not in cls.model_fields:
            sibling_key, kind = found
            text = f"`{key}` {_UNIT_TEXT[kind]}, rounded (added by the service)."
            fields[sibling_key] = (float | None, Field(default=None, description=text))
    if not fields:
        return cls
    return create_model(f"{cls.__name__}Readable", __base__=cls, __module__=__name__, **fields)
