"""Prices per GPU-hour: public on-demand list prices with their sources (planner/catalog/prices.json), overridable."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib import resources

from pydantic import Field

from planner._base import FrozenSpec
from planner.errors import FieldProblem, SpecError

__all__ = ["GpuPrice", "default_prices", "resolve_prices"]


class GpuPrice(FrozenSpec):
    """What one GPU-hour costs and where that number comes from."""

    gpu: str
    usd_per_gpu_hour: float = Field(gt=0)
    provider: str
    offer: str
    url: str
    read_on: str = Field(description="Date the price was read on the provider's page (YYYY-MM-DD).")
    via: str = Field(description="Where the number was transcribed from, or 'request' for an override.")


@lru_cache(maxsize=1)
def default_prices() -> dict[str, GpuPrice]:
    """The public defaults by GPU id."""
    raw = json.loads(resources.files("planner.catalog").joinpath("prices.json").read_text(encoding="utf-8"))
    return {p["gpu"]: GpuPrice.model_validate(p) for p in raw["prices"]}


def resolve_prices(gpu_ids: Iterable[str], overrides: Mapping[str, float]) -> dict[str, GpuPrice]:
    """The price of every GPU the search may use: the request's override, else the public default; a GPU with
    neither is a SpecError at `prices.<gpu>` (the search cannot rank what it cannot price)."""
    defaults, out, problems = default_prices(), {}, []
    for gpu in gpu_ids:
        if gpu in overrides:
            out[gpu] = GpuPrice(
                gpu=gpu, usd_per_gpu_hour=overrides[gpu], provider="request", offer="override", url="",
                read_on="", via="request",
            )  # fmt: skip
        elif gpu in defaults:
            out[gpu] = defaults[gpu]
        else:
            problems.append(FieldProblem(("prices", gpu), f"no public price for '{gpu}': give one in prices"))
    if problems:
        raise SpecError(problems)
    return out
