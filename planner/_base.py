"""The base every memplan schema derives from: frozen, strict about unknown fields, finite numbers only."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Bytes", "Count", "FrozenSpec", "Positive", "Source"]

# Bounds that reject absurd sizes early with a clear message instead of overflowing later.
MAX_BYTES = 2**60
MAX_COUNT = 2**40

Positive = Annotated[int, Field(ge=1, le=MAX_COUNT)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Bytes = Annotated[int, Field(ge=0, le=MAX_BYTES)]


class FrozenSpec(BaseModel):
    """Immutable, hashable, rejects unknown fields, NaN and infinity."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Source(FrozenSpec):
    """Where a catalog fact comes from."""

    title: str = Field(max_length=300)
    url: str = Field(max_length=500)
