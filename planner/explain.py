"""Explainable quantities: every figure carries its formula, the numbers plugged in, and its source."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import Field

from planner._base import FrozenSpec

__all__ = ["MemoryBreakdown", "Term", "breakdown"]


class Term(FrozenSpec):
    """One named part of a memory total."""

    name: str = Field(description="Path-like key, e.g. 'weights/linear' or 'kv_cache'.")
    bytes: int = Field(description="Integer bytes (per GPU).")
    formula: str = Field(description="The formula in the papers' symbols.")
    detail: str = Field(description="The formula with this request's numbers.")
    source: str = Field(description="Paper and section, or 'derived here' with the assumption.")


class MemoryBreakdown(FrozenSpec):
    """Ordered terms and their sum (bytes per GPU)."""

    terms: tuple[Term, ...]
    total_bytes: int

    def get(self, name: str) -> int:
        """Bytes of the term called `name` (0 when absent)."""
        return next((t.bytes for t in self.terms if t.name == name), 0)


def breakdown(terms: Iterable[Term]) -> MemoryBreakdown:
    """Collect terms; the total is computed from the parts, never given."""
    kept = tuple(terms)
    return MemoryBreakdown(terms=kept, total_bytes=sum(t.bytes for t in kept))
