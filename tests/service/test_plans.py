"""POST /v1/plans, /v1/plans/training and /v1/estimates/batch over HTTP."""

from __future__ import annotations

import csv
import io
import json

from fastapi.testclient import TestClient

from planner import InferenceRequest, estimate_inference, load_catalog
from planner.batch import BatchResult
from planner.plans.result import PlanResult
from service.app import create_app
from service.settings import Settings
from tests.service.conftest import error_text

SMALL = {
    "gpus": ["h100-sxm"],
    "engines": ["vllm"],
    "weight_formats": ["bf16", "fp8"],
    "kv_cache_dtypes": ["bf16"],
    "tensor_parallel": [1, 2],
    "pipeline_parallel": [1],
    "max_num_seqs": [64, 256],
    "max_gpus": 8,
}


def test_a_plan_ranks_by_cost_and_explains_the_rest(client: TestClient) -> None:
    body = {
        "model": "llama-3.1-8b",
        "workload": {"input_tokens": 2048, "output_tokens": 256, "concurrency": 128},
        "slo": {"ttft_ms": 800, "tpot_ms": 30},
        "constraints": SMALL,
    }
    r = client.post("/v1/plans", json=body)
    assert r.status_code == 200, r.text
    result = PlanResult.model_validate(r.json())
    assert result.plans
    costs = [p.cost_per_million_output_tokens_usd for p in result.plans]
    assert costs == sorted(costs)
    # 2 formats × 2 max_num_seqs × (1…8 replicas of TP1 + 1…4 of TP2) = 4 × 12
    assert result.summary.candidates == 2 * 2 * (8 + 4)
    assert result.prices[0].url.startswith("https://")
    for plan in result.plans:
        assert plan.tpot.p90_ms <= 30 and plan.ttft.p90_ms <= 800
        assert plan.pools[0].memory.terms


def test_an_impossible_request_is_a_200_with_reasons(client: TestClient) -> None:
    body = {
        "model": "llama-3.1-405b",
        "workload": {"input_tokens": 1024, "output_tokens": 128, "concurrency": 8},
        "slo": {"tpot_ms": 10},
        "constraints": {**SMALL, "gpus": ["l40s"]},
    }
    r = client.post("/v1/plans", json=body)
    assert r.status_code == 200
    assert r.json()["plans"] == []
    assert {reason for f in r.json()["rejected"] for reason in f["reasons"]} == {"does_not_fit"}


def test_plan_input_errors_are_422s_that_name_the_field(client: TestClient) -> None:
    base = {"model": "llama-3-8b", "workload": {"input_tokens": 1, "output_tokens": 1, "concurrency": 1}}
    r = client.post("/v1/plans", json={**base, "slo": {}})
    assert r.status_code == 422 and "ttft_ms, tpot_ms or min_tokens_per_s_per_user" in error_text(r)
    both = {**base["workload"], "request_rate": 1.0}  # type: ignore[dict-item]
    r = client.post("/v1/plans", json={**base, "workload": both, "slo": {"tpot_ms": 50}})
    assert r.status_code == 422 and "not both" in error_text(r)
    r = client.post("/v1/plans", json={**base, "slo": {"tpot_ms": 50}, "constraints": {"engines": ["transformers"]}})
    assert r.status_code == 422 and "constraints.engines" in error_text(r)


def test_training_plan(client: TestClient) -> None:
    body = {
        "model": "llama-3-8b",
        "gpu": "l40s",
        "training": {"micro_batch_size": 4},
        "search": {"tensor_parallel": [1], "pipeline_parallel": [1], "methods": ["keep", "lora"]},
    }
    r = client.post("/v1/plans/training", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert not answer["fits"] and answer["options"]
    assert answer["options"][0]["peak_bytes"] <= answer["budget_bytes"]


BATCH = {
    "items": [
        {"model": "llama-3-8b", "serving": {"concurrency": 16}},
        {"model": "no-such-model"},
        {"kind": "training", "model": "llama-3-8b", "training": {"method": {"kind": "lora"}}},
    ]
}


def test_batch_json_keeps_order_and_per_item_errors(client: TestClient) -> None:
    r = client.post("/v1/estimates/batch", json=BATCH)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    result = BatchResult.model_validate(r.json())
    assert (result.items, result.ok, result.errors) == (3, 2, 1)
    assert [x.ok for x in result.results] == [True, False, True]
    assert result.results[1].error is not None and result.results[1].error.status == 422
    # an item is the planner's exact estimate (no readable siblings or summary: the sweep tools' table), the same
    # numbers the single endpoint answers
    exact = estimate_inference(InferenceRequest.model_validate(BATCH["items"][0]), load_catalog())
    assert r.json()["results"][0]["result"] == exact.model_dump(mode="json")
    single = client.post("/v1/estimates/inference", json=BATCH["items"][0]).json()
    assert single["memory"]["total_bytes"] == exact.memory.total_bytes


def test_a_batch_past_its_time_limit_still_answers_every_item(settings: Settings) -> None:
    # MEMPLAN_BATCH_TIME_LIMIT_S: a limit far below one estimate's time leaves at most the first item estimated
    body = {"grid": {"base": {"model": "llama-3-8b"}, "axes": {"serving.concurrency": list(range(1, 41))}}}
    with TestClient(create_app(settings.model_copy(update={"batch_time_limit_s": 1e-6}))) as fast:
        r = fast.post("/v1/estimates/batch", json=body, headers={"Accept": "application/x-ndjson"})
    assert r.status_code == 200
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert [line["index"] for line in lines] == list(range(40))
    late = [line for line in lines if not line["ok"]]
    assert len(late) >= 39 and {line["error"]["status"] for line in late} == {503}
    assert "time limit" in late[-1]["error"]["problems"][0]["msg"]


def test_batch_streams_ndjson_and_projects_fields(client: TestClient) -> None:
    body = {**BATCH, "fields": ["fits", "capacity.max_concurrent_sequences"]}
    r = client.post("/v1/estimates/batch", json=body, headers={"Accept": "application/x-ndjson"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert [line["index"] for line in lines] == [0, 1, 2]
    assert set(lines[0]["result"]) == {"fits", "capacity.max_concurrent_sequences"}
    assert lines[2]["result"]["capacity.max_concurrent_sequences"] is None  # a training estimate has no capacity


def test_batch_csv_is_a_flat_table(client: TestClient) -> None:
    grid = {
        "grid": {"base": {"model": "llama-3-8b"}, "axes": {"gpu": ["h100-sxm", "h200"], "serving.concurrency": [1, 8]}}
    }
    r = client.post("/v1/estimates/batch", json=grid, headers={"Accept": "text/csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(row["gpu.id"], row["serving.concurrency"]) for row in rows] == [
        ("h100-sxm", "1"), ("h100-sxm", "8"), ("h200", "1"), ("h200", "8")
    ]  # fmt: skip
    assert all(row["ok"] == "true" and row["fits"] == "true" for row in rows)


def test_a_batch_beyond_its_bound_is_a_422(client: TestClient) -> None:
    grid = {"grid": {"base": {}, "axes": {"a": list(range(400)), "b": list(range(400))}}}
    r = client.post("/v1/estimates/batch", json=grid)
    assert r.status_code == 422 and "at most 100,000" in error_text(r)
