"""Many estimates at once: a list of inference or training requests, or a grid (the cartesian product of listed field
values over a base request), answered in order with an error per bad item instead of a failed batch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import product
from math import prod
from time import monotonic
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from planner._base import FrozenSpec
from planner.catalog import Catalog
from planner.errors import SpecError, UnknownIdError
from planner.serving.inference import InferenceEstimate, InferenceRequest, estimate_inference
from planner.training.estimate import TrainingEstimate, TrainingRequest, estimate_training

__all__ = [
    "BatchItem",
    "BatchItemResult",
    "BatchRequest",
    "BatchResult",
    "GridSpec",
    "ItemError",
    "expand",
    "run_batch",
]

MAX_ITEMS = 100_000  # items (or grid points) one batch may hold
MAX_AXES = 16
MAX_AXIS_VALUES = 4096
Kind = Literal["inference", "training"]
Path = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")]


class GridSpec(FrozenSpec):
    """A base request and, for dotted field paths, the values to try: every combination becomes one item."""

    kind: Kind = "inference"
    base: dict[str, Any] = Field(description="An InferenceRequest or TrainingRequest as JSON (axes override it).")
    axes: dict[Path, Annotated[list[Any], Field(min_length=1, max_length=MAX_AXIS_VALUES)]] = Field(
        max_length=MAX_AXES,
        description="e.g. {'gpu': ['h100-sxm', 'h200'], 'serving.tensor_parallel': [1, 2, 4, 8]}; the first axis "
        "varies slowest.",
    )

    @model_validator(mode="after")
    def _bounded(self) -> GridSpec:
        points = prod(len(v) for v in self.axes.values())
        if points > MAX_ITEMS:
            raise ValueError(f"the grid has {points:,} points; at most {MAX_ITEMS:,}")
        return self

    @property
    def size(self) -> int:
        return prod(len(v) for v in self.axes.values())


class BatchRequest(FrozenSpec):
    """{"items": [...]} or {"grid": {...}}: each item an inference or a training request ("kind" or its "training"
    section says which)."""

    items: Annotated[list[dict[str, Any]], Field(max_length=MAX_ITEMS)] | None = None
    grid: GridSpec | None = None
    fields: Annotated[tuple[Path, ...], Field(min_length=1, max_length=64)] | None = Field(
        default=None,
        description="Keep only these dotted paths of each result (e.g. 'fits', 'capacity.max_concurrent_sequences'); "
        "null = the whole estimate.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> BatchRequest:
        if (self.items is None) == (self.grid is None):
            raise ValueError("give items or a grid, not both")
        return self

    @property
    def size(self) -> int:
        return len(self.items) if self.items is not None else (self.grid.size if self.grid else 0)


class ItemError(FrozenSpec):
    """Why one item has no estimate: its status as a single request would have it, and the located problems."""

    status: int = Field(
        description="422 invalid, 404 unknown id, 500 internal error, 503 not estimated (the batch's time limit)."
    )
    problems: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One answered item: the estimate, or the error."""

    index: int
    kind: Kind
    estimate: BaseModel | None
    error: ItemError | None

    @property
    def ok(self) -> bool:
        return self.error is None


def _set(tree: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `tree` with the dotted `path` set to `value` (intermediate objects created or copied)."""
    head, _, rest = path.partition(".")
    out = dict(tree)
    if rest:
        child = out.get(head)
        out[head] = _set(child if isinstance(child, dict) else {}, rest, value)
    else:
        out[head] = value
    return out


def _kind(item: dict[str, Any]) -> Kind:
    kind = item.get("kind")
    if kind == "training" or (kind != "inference" and "training" in item):
        return "training"
    return "inference"


def expand(request: BatchRequest) -> Iterator[tuple[int, Kind, Any]]:
    """(index, kind, raw item) in order: the items as given, or every grid point (first axis slowest)."""
    if request.items is not None:
        for i, item in enumerate(request.items):
            body = {k: v for k, v in item.items() if k != "kind"} if isinstance(item, dict) else item
            yield i, _kind(item) if isinstance(item, dict) else "inference", body
        return
    grid = request.grid
    assert grid is not None
    names = list(grid.axes)
    for i, values in enumerate(product(*(grid.axes[n] for n in names))):
        body = grid.base
        for name, value in zip(names, values, strict=True):
            body = _set(body, name, value)
        yield i, grid.kind, body


def _problems(exc: Exception) -> ItemError:
    if isinstance(exc, ValidationError):
        return ItemError(
            status=422,
            problems=tuple(
                {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors(include_url=False)
            ),
        )
    if isinstance(exc, SpecError):
        return ItemError(status=422, problems=tuple({"loc": list(p.loc), "msg": p.msg, "type": p.type}
                                                    for p in exc.problems))  # fmt: skip
    if isinstance(exc, UnknownIdError):
        return ItemError(status=404, problems=({"loc": [], "msg": str(exc), "type": "unknown_id"},))
    return ItemError(status=500, problems=({"loc": [], "msg": f"internal error ({type(exc).__name__})", "type":
                                            "internal_error"},))  # fmt: skip


def _estimate(kind: Kind, body: Any, catalog: Catalog) -> BaseModel:
    if kind == "training":
        return estimate_training(TrainingRequest.model_validate(body), catalog)
    return estimate_inference(InferenceRequest.model_validate(body), catalog)


def _out_of_time(index: int, time_limit_s: float) -> ItemError:
    msg = (
        f"not estimated: the batch ran past its time limit of {time_limit_s:g} s (items with `load` simulate the "
        "engine and cost up to seconds each); send the items from this one on as another batch"
    )
    return ItemError(status=503, problems=({"loc": ["items", index], "msg": msg, "type": "batch_time_limit"},))


def run_batch(
    request: BatchRequest, catalog: Catalog, time_limit_s: float | None = None, clock: Callable[[], float] = monotonic
) -> Iterator[BatchItem]:
    """Answer every item in order, lazily (a caller can stream them); a bad item yields its error, never raises.

    `time_limit_s` bounds the whole batch: once it has passed (checked before each item, measured by `clock` from
    the first item), every remaining item is answered with a 503 error saying so, still in order, so 100,000 items
    with load simulations cannot hold a worker for hours.

    Assumes: an unexpected exception in one item is reported as that item's 500, so one bug cannot fail 10,000
      answers; the message names the exception type only.
    """
    deadline = None if time_limit_s is None else clock() + time_limit_s
    for index, kind, body in expand(request):
        if deadline is not None and clock() > deadline:
            assert time_limit_s is not None
            yield BatchItem(index, kind, None, _out_of_time(index, time_limit_s))
            continue
        try:
            yield BatchItem(index, kind, _estimate(kind, body, catalog), None)
        except Exception as exc:
            yield BatchItem(index, kind, None, _problems(exc))


class BatchItemResult(FrozenSpec):
    """One item's answer as the batch endpoint writes it (a JSON object, or an NDJSON line)."""

    index: int
    kind: Kind
    ok: bool
    result: InferenceEstimate | TrainingEstimate | dict[str, Any] | None = Field(
        default=None, description="The estimate, or only BatchRequest.fields of it (keyed by path)."
    )
    error: ItemError | None = None


class BatchResult(FrozenSpec):
    """Every item's answer, in order."""

    items: int
    ok: int
    errors: int
    results: tuple[BatchItemResult, ...]
