"""Readable answers: a summary on top, GiB/ms/% beside the exact figures, ?detail=summary, CSV tables."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from fastapi.testclient import TestClient

from planner import InferenceEstimate, InferenceRequest, estimate_inference, load_catalog
from planner.training.estimate import TrainingEstimate, TrainingRequest, estimate_training
from service.answers import InferenceAnswer, InferenceBriefReadable, TrainingAnswer, TrainingBriefReadable
from service.readable import GIB, planner_json, readable_json, round_figure, sibling

INFERENCE = "/v1/estimates/inference"
TRAINING = "/v1/estimates/training"
BODY: dict[str, Any] = {"model": "llama-3-8b", "gpu": "h100-sxm", "serving": {"concurrency": 32}}
LOAD_BODY: dict[str, Any] = {**BODY, "load": {"concurrency": 8}}


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("total_bytes", ("total_gib", "gib")),
        ("bytes", ("gib", "gib")),
        ("kv_bytes_per_sequence", ("kv_gib_per_sequence", "gib")),
        ("ttft_s", ("ttft_ms", "ms")),
        ("mfu", ("mfu_pct", "pct")),
        ("peak_rel_error", ("peak_rel_error_pct", "pct")),
        ("tokens_per_s", None),
        ("memory_bandwidth_bytes_per_s", None),
        ("kv_bytes_per_token", None),
        ("p50_ms", None),
    ],
)
def test_sibling_names(key: str, expected: tuple[str, str] | None) -> None:
    assert sibling(key) == expected


def test_rounding_keeps_small_terms_visible() -> None:
    assert round_figure(14.9567) == 14.96
    assert round_figure(0.0019531) == 0.00195
    assert round_figure(0.0) == 0.0


def test_full_answer_keeps_every_planner_field_exactly(client: TestClient) -> None:
    response = client.post(INFERENCE, json=BODY)
    assert response.status_code == 200
    data = response.json()
    assert next(iter(data)) == "summary"  # the summary block comes first
    expected = estimate_inference(InferenceRequest.model_validate(BODY), load_catalog())
    assert InferenceEstimate.model_validate(planner_json(data)) == expected
    assert planner_json(data) == expected.model_dump(mode="json")
    InferenceAnswer.model_validate(data)  # every added field is documented (extra fields are forbidden)


def test_full_answer_adds_readable_siblings(client: TestClient) -> None:
    data = client.post(INFERENCE, json=BODY).json()
    e = InferenceEstimate.model_validate(planner_json(data))
    assert data["memory"]["total_gib"] == round(e.memory.total_bytes / GIB, 2)
    for term in data["memory"]["terms"]:
        assert term["gib"] == round_figure(term["bytes"] / GIB)
    keys = list(data["prefill"])
    assert keys.index("ttft_ms") == keys.index("ttft_s") + 1  # right after the exact figure
    assert data["prefill"]["ttft_ms"] == round(e.prefill.ttft_s * 1000, 2)
    assert data["gpu"]["memory_gib"] == 80.0


def test_summary_block(client: TestClient) -> None:
    data = client.post(INFERENCE, json=BODY).json()
    e = estimate_inference(InferenceRequest.model_validate(BODY), load_catalog())
    assert data["summary"] == {
        "model": "llama-3-8b",
        "exact": True,
        "fits": e.fits,
        "gib_per_gpu": round(e.memory.total_bytes / GIB, 2),
        "gpus": 1,
        "max_concurrent_sequences": e.capacity.max_concurrent_sequences,
        "max_context_tokens": e.capacity.max_context_tokens,
        "ttft_ms": round(e.prefill.ttft_s * 1000, 2),
        "tpot_ms": round(e.decode.tpot_s * 1000, 2),
        "output_tokens_per_s": round(e.decode.tokens_per_s, 1),
        "latency_from": "static",
    }


def test_summary_latency_comes_from_the_load_when_given(client: TestClient) -> None:
    data = client.post(INFERENCE, json=LOAD_BODY).json()
    assert data["summary"]["latency_from"] == "load"
    assert data["summary"]["ttft_ms"] == round(data["load"]["ttft"]["p50_ms"], 2)
    assert data["summary"]["tpot_ms"] == round(data["load"]["tpot"]["p50_ms"], 2)


def test_detail_summary_echoes_no_spec_and_no_datasheet(client: TestClient) -> None:
    full = client.post(INFERENCE, json=LOAD_BODY)
    brief = client.post(f"{INFERENCE}?detail=summary", json=LOAD_BODY)
    assert brief.status_code == 200
    data = brief.json()
    InferenceBriefReadable.model_validate(data)
    assert "spec" not in data["model"] and "serving" not in data
    assert set(data["gpu"]) == {"id", "name", "memory_bytes", "memory_gib"}
    assert data["summary"] == full.json()["summary"]
    assert data["memory"] == full.json()["memory"]
    assert len(brief.content) < 0.6 * len(full.content)


def test_training_answers(client: TestClient) -> None:
    body = {"model": "llama-3-8b", "training": {"method": {"kind": "lora", "rank": 16}}}
    data = client.post(TRAINING, json=body).json()
    TrainingAnswer.model_validate(data)
    e = estimate_training(TrainingRequest.model_validate(body), load_catalog())
    assert TrainingEstimate.model_validate(planner_json(data)) == e
    assert data["summary"]["peak_phase"] == e.peak_phase
    assert data["summary"]["mfu_pct"] == round(e.throughput.mfu * 100, 2)
    assert data["throughput"]["mfu_pct"] == data["summary"]["mfu_pct"]
    brief = client.post(f"{TRAINING}?detail=summary", json=body).json()
    TrainingBriefReadable.model_validate(brief)
    assert "spec" not in brief["model"] and "training" not in brief


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize(("query", "headers"), [("?format=csv", {}), ("", {"accept": "text/csv"})])
def test_memory_terms_as_csv(client: TestClient, query: str, headers: dict[str, str]) -> None:
    response = client.post(INFERENCE + query, json=BODY, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = _rows(response.text)
    e = estimate_inference(InferenceRequest.model_validate(BODY), load_catalog())
    assert [r["term"] for r in rows] == [t.name for t in e.memory.terms] + ["total"]
    assert int(rows[-1]["bytes"]) == e.memory.total_bytes
    assert set(rows[0]) == {"term", "bytes", "gib", "formula", "detail", "source"}


def test_training_phases_as_csv(client: TestClient) -> None:
    response = client.post(f"{TRAINING}?format=csv", json={"model": "llama-3-8b"})
    rows = _rows(response.text)
    e = estimate_training(TrainingRequest(model="llama-3-8b"), load_catalog())
    totals = {r["phase"]: int(r["bytes"]) for r in rows if r["term"] == "total"}
    assert totals == {name: p.total_bytes for name, p in e.phases.items()}
    assert {r["phase"] for r in rows if r["peak"] == "yes"} == {e.peak_phase}


def test_json_stays_the_default_for_browsers_and_clients(client: TestClient) -> None:
    accept = "application/json, text/csv;q=0.5"
    assert client.post(INFERENCE, json=BODY, headers={"accept": accept}).headers["content-type"] == "application/json"


def test_bad_detail_or_format_is_a_422(client: TestClient) -> None:
    assert client.post(f"{INFERENCE}?detail=all", json=BODY).status_code == 422
    assert client.post(f"{INFERENCE}?format=xml", json=BODY).status_code == 422


def test_openapi_documents_the_readable_answer(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert "summary" in schemas["InferenceAnswer"]["properties"]
    assert "ttft_ms" in schemas["PrefillEstimateReadable"]["properties"]
    assert "gib" in schemas["TermReadable"]["properties"]
    ok = spec["paths"][INFERENCE]["post"]["responses"]["200"]["content"]
    assert {"application/json", "text/csv"} <= set(ok)
    params = {p["name"] for p in spec["paths"][INFERENCE]["post"]["parameters"]}
    assert {"detail", "format", "validate"} <= params


def test_readable_json_is_additive() -> None:
    data = {"a_bytes": 3 * GIB, "nested": [{"bytes": GIB // 2, "x_s": 0.25}], "n": 1, "mfu": 0.44999999999999996}
    out = readable_json(data)
    assert out == {
        "a_bytes": 3 * GIB,
        "a_gib": 3.0,
        "nested": [{"bytes": GIB // 2, "gib": 0.5, "x_s": 0.25, "x_ms": 250.0}],
        "n": 1,
        "mfu": 0.44999999999999996,
        "mfu_pct": 45.0,
    }
    assert planner_json(out) == data


def test_the_summary_keeps_the_calibrated_figures(client: TestClient) -> None:
    # H200 vLLM: the learned residual's TTFT ships there (planner/calibration/residual.json); H100 vLLM: it does not
    body = {**LOAD_BODY, "gpu": "h200"}
    full = client.post(INFERENCE, json=body).json()
    brief = client.post(f"{INFERENCE}?detail=summary", json=body).json()
    assert full["calibrated"] is not None and brief["calibrated"] == full["calibrated"]
    assert full["calibrated"]["ttft_mean_ms"] > 0 and full["calibrated"]["tpot_mean_ms"] is None
    assert client.post(INFERENCE, json=LOAD_BODY).json()["calibrated"] is None
