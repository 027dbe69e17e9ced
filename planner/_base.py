"""The base every memplan schema derives from: frozen, strict about unknown fields and scalar types, finite numbers."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

__all__ = ["Bytes", "Count", "FrozenSpec", "Positive", "Source", "StrictScalars"]

# Bounds that reject absurd sizes early with a clear message instead of overflowing later.
MAX_BYTES = 2**60
MAX_COUNT = 2**40

Positive = Annotated[int, Field(ge=1, le=MAX_COUNT)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Bytes = Annotated[int, Field(ge=0, le=MAX_BYTES)]


_STRICT_TYPES = frozenset({"int", "bool", "float"})
_GUARDED = "memplan_bool_guard"


def _not_a_bool(value: Any) -> Any:
    """Literal[0, 1, …] matches False and True by equality; a boolean is not one of those integers."""
    if isinstance(value, bool):
        raise PydanticCustomError("literal_error", "Input should be an integer, not a boolean")
    return value


def _unguarded_int_literal(schema: dict[str, Any]) -> bool:
    if schema.get("type") != "literal" or schema.get("metadata", {}).get(_GUARDED):
        return False
    return any(isinstance(v, int) and not isinstance(v, bool) for v in schema["expected"])


def _make_scalars_strict(schema: Any) -> Any:
    """The core schema with every int, bool and float schema inside it strict (marked in place), and integer
    literals guarded against booleans (wrapped)."""
    if isinstance(schema, list):
        schema[:] = [_make_scalars_strict(value) for value in schema]
    elif isinstance(schema, dict):
        for key, value in schema.items():
            schema[key] = _make_scalars_strict(value)
        if schema.get("type") in _STRICT_TYPES:
            schema["strict"] = True
        elif _unguarded_int_literal(schema):
            schema.setdefault("metadata", {})[_GUARDED] = True  # nested schemas are walked again by their users
            return core_schema.no_info_before_validator_function(_not_a_bool, schema)
    return schema


class StrictScalars(BaseModel):
    """Integers, booleans and floats are taken as they are, never coerced: JSON `true` is not 1, `"8"` is not 8,
    `4.0` is not an integer and `1` is not a boolean (an int is still a float). Enums, tuples and nested models keep
    pydantic's usual (lax) validation, so the JSON forms of the API and the Python API's dicts both work."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return _make_scalars_strict(handler(source))  # type: ignore[no-any-return]


class FrozenSpec(StrictScalars):
    """Immutable, hashable, rejects unknown fields, NaN, infinity and coerced scalars (StrictScalars)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Source(FrozenSpec):
    """Where a catalog fact comes from."""

    title: str = Field(max_length=300)
    url: str = Field(max_length=500)
