"""Batches: items in order with an error per bad item, grids as cartesian products, training and inference mixed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from planner import InferenceEstimate, InferenceRequest, TrainingEstimate, estimate_inference, load_catalog
from planner.batch import BatchRequest, expand, run_batch

CATALOG = load_catalog()


def test_items_come_back_in_order_with_their_own_errors() -> None:
    request = BatchRequest.model_validate(
        {
            "items": [
                {"model": "llama-3-8b", "serving": {"concurrency": 32}},
                {"model": "no-such-model"},
                {"kind": "training", "model": "llama-3-8b", "training": {"method": {"kind": "lora"}}},
                {"model": "llama-3-8b", "serving": {"tensor_parallel": 3}},
                {"model": "llama-3-8b", "serving": {"concurrency": "many"}},
            ]
        }
    )
    items = list(run_batch(request, CATALOG))
    assert [(i.index, i.kind, i.ok) for i in items] == [
        (0, "inference", True),
        (1, "inference", False),
        (2, "training", True),
        (3, "inference", False),
        (4, "inference", False),
    ]
    assert isinstance(items[0].estimate, InferenceEstimate) and isinstance(items[2].estimate, TrainingEstimate)
    # each error is what the single request would have answered, located inside the item
    errors = [i.error for i in items if i.error is not None]
    assert [(e.status, e.problems[0]["loc"]) for e in errors] == [
        (422, ["model"]),
        (422, ["serving", "tensor_parallel"]),
        (422, ["serving", "concurrency"]),
    ]
    # the estimate is the one /v1/estimates/inference answers
    single = estimate_inference(InferenceRequest(model="llama-3-8b", serving={"concurrency": 32}), CATALOG)
    assert items[0].estimate == single


def test_a_grid_is_the_cartesian_product_first_axis_slowest() -> None:
    request = BatchRequest.model_validate(
        {
            "grid": {
                "base": {"model": "llama-3-8b", "serving": {"prompt_tokens": 1024}},
                "axes": {"gpu": ["h100-sxm", "h200"], "serving.concurrency": [1, 8, 64]},
            }
        }
    )
    points = [body for _, _, body in expand(request)]
    assert len(points) == request.size == 6
    assert [(p["gpu"], p["serving"]["concurrency"]) for p in points] == [
        ("h100-sxm", 1), ("h100-sxm", 8), ("h100-sxm", 64), ("h200", 1), ("h200", 8), ("h200", 64)
    ]  # fmt: skip
    assert all(p["serving"]["prompt_tokens"] == 1024 for p in points)  # the base stays, the axes override it
    assert request.grid is not None and request.grid.base["serving"] == {"prompt_tokens": 1024}  # not mutated
    assert all(item.ok for item in run_batch(request, CATALOG))


def test_batches_are_bounded_and_need_one_source() -> None:
    with pytest.raises(ValidationError, match="at most 100,000"):
        BatchRequest.model_validate(
            {"grid": {"base": {}, "axes": {f"a{i}": list(range(10)) for i in range(6)}}}  # 10^6 points
        )
    with pytest.raises(ValidationError, match="items or a grid"):
        BatchRequest.model_validate({})


def test_items_past_the_time_limit_are_answered_with_a_503_each_in_order() -> None:
    ticks = iter(range(100))  # a clock that advances 1 s per reading: the deadline is 2.5 s after the first reading

    def clock() -> float:
        return float(next(ticks))

    request = BatchRequest.model_validate({"items": [{"model": "llama-3-8b"}, {"model": "no-such-model"}] * 3})
    items = list(run_batch(request, CATALOG, time_limit_s=2.5, clock=clock))
    assert [i.index for i in items] == list(range(6))
    assert [i.error.status if i.error else 200 for i in items] == [200, 422, 503, 503, 503, 503]
    late = items[2].error
    assert late is not None and late.problems[0]["loc"] == ["items", 2]
    assert "time limit of 2.5 s" in late.problems[0]["msg"]
