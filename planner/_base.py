"""The base every memplan schema derives from: frozen, strict about unknown fields and scalar types, finite numbers."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler
from pydantic_core import CoreSchema

__all__ = ["Bytes", "Count", "FrozenSpec", "Positive", "Source", "StrictScalars"]

# Bounds that reject absurd sizes early with a clear message instead of overflowing later.
MAX_BYTES = 2**60
MAX_COUNT = 2**40

Positive = Annotated[int, Field(ge=1, le=MAX_COUNT)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Bytes = Annotated[int, Field(ge=0, le=MAX_BYTES)]


_STRICT_TYPES = frozenset({"int", "bool", "float"})


def _make_scalars_strict(schema: Any) -> None:
    """Mark every int, bool and float schema inside a core schema strict (in place)."""
    if isinstance(schema, dict):
        if schema.get("type") in _STRICT_TYPES:
            schema["strict"] = True
        for value in schema.values():
            _make_scalars_strict(value)
    elif isinstance(schema, list):
        for value in schema:
            _make_scalars_strict(value)


class StrictScalars(BaseModel):
    """Integers, booleans and floats are taken as they are, never coerced: JSON `true` is not 1, `"8"` is not 8,
    `4.0` is not an integer and `1` is not a boolean (an int is still a float). Enums, tuples and nested models keep
    pydantic's usual (lax) validation, so the JSON forms of the API and the Python API's dicts both work."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        schema = handler(source)
        _make_scalars_strict(schema)
        return schema


class FrozenSpec(StrictScalars):
    """Immutable, hashable, rejects unknown fields, NaN, infinity and coerced scalars (StrictScalars)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Source(FrozenSpec):
    """Where a catalog fact comes from."""

    title: str = Field(max_length=300)
    url: str = Field(max_length=500)
