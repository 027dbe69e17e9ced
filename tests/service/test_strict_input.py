"""Issue 12, loose parsing: scalars are strict, and a body the JSON parser cannot take is a 422 with a location."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from planner import load_catalog
from planner.training.estimate import TrainingRequest, estimate_training
from service.examples import QWEN2_5_0_5B_CONFIG

ESTIMATE, IMPORT, TRAIN = "/v1/estimates/inference", "/v1/models/import", "/v1/estimates/training"
JSON = {"content-type": "application/json"}


def serving(**changes: Any) -> dict[str, Any]:
    return {"model": "llama-3-8b", "serving": changes}


def training(**changes: Any) -> dict[str, Any]:
    return {"model": "llama-3-8b", "training": changes}


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        (ESTIMATE, serving(prompt_tokens=True), ["body", "serving", "prompt_tokens"]),  # was read as 1
        (ESTIMATE, serving(prompt_tokens="128"), ["body", "serving", "prompt_tokens"]),
        (ESTIMATE, serving(concurrency=4.0), ["body", "serving", "concurrency"]),
        (ESTIMATE, serving(tensor_parallel=False), ["body", "serving", "tensor_parallel"]),
        (ESTIMATE, serving(gpu_memory_utilization=True), ["body", "serving", "gpu_memory_utilization"]),
        (ESTIMATE, serving(gpu_memory_utilization="0.9"), ["body", "serving", "gpu_memory_utilization"]),
        (TRAIN, training(first_step=1), ["body", "training", "first_step"]),
        (TRAIN, training(first_step="true"), ["body", "training", "first_step"]),
        (TRAIN, training(packing="yes"), ["body", "training", "packing"]),
        (TRAIN, training(zero_stage=False, data_parallel=2), ["body", "training", "zero_stage"]),  # Literal[0, …]
        (TRAIN, training(sample_lengths=[512, "256"]), ["body", "training", "sample_lengths", 1]),
        (IMPORT, {**QWEN2_5_0_5B_CONFIG, "num_hidden_layers": "24"}, ["body", "num_hidden_layers"]),
        (IMPORT, {**QWEN2_5_0_5B_CONFIG, "tie_word_embeddings": 1}, ["body", "tie_word_embeddings"]),
        ("/v1/probes", {"model": "llama-3-8b", "scale": {"num_layers": True}}, ["body", "scale", "num_layers"]),
    ],
    ids=lambda v: v if isinstance(v, str) and not v.startswith("/") else None,
)
def test_booleans_strings_and_floats_are_not_integers(
    client: TestClient, path: str, body: dict[str, Any], loc: list[Any]
) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert loc in [problem["loc"] for problem in response.json()["detail"]], response.text


def test_an_int_is_still_a_float(client: TestClient) -> None:
    assert client.post(ESTIMATE, json=serving(gpu_memory_utilization=1)).status_code == 200


def test_a_5000_digit_integer_is_a_422_at_its_field(client: TestClient) -> None:
    """Issue 12: it was a 400 naming no field (Python's json refuses to convert more than 4,300 digits)."""
    body = '{"model": "llama-3-8b", "serving": {"prompt_tokens": ' + "9" * 5000 + "}}"
    response = client.post(ESTIMATE, content=body.encode(), headers=JSON)
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == [
        {
            "loc": ["body", "serving", "prompt_tokens"],
            "msg": "an integer of 5,000 digits; at most 4,300 are read",
            "type": "int_too_long",
        }
    ]


def test_a_long_digit_string_is_just_a_string(client: TestClient) -> None:
    body = json.dumps({**QWEN2_5_0_5B_CONFIG, "notes": "7" * 5000})
    assert client.post(IMPORT, content=body.encode(), headers=JSON).status_code == 200


def test_invalid_utf8_is_a_422_at_its_byte(client: TestClient) -> None:
    """Issue 12: it was a 400 naming no location."""
    body = b'{"model": "llama-\xff-8b"}'
    response = client.post(ESTIMATE, content=body, headers=JSON)
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert (problem["loc"], problem["type"]) == (["body", 17], "json_invalid")
    assert "UTF-8" in problem["msg"]


def test_malformed_json_is_a_422_at_its_position(client: TestClient) -> None:
    response = client.post(ESTIMATE, content=b'{"model": "llama-3-8b",', headers=JSON)
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert (problem["loc"], problem["type"]) == (["body", 23], "json_invalid")


def test_a_training_suggestion_past_the_accumulation_limit_is_skipped(client: TestClient) -> None:
    """Issue 12: halving the micro-batch doubled accumulation past TrainingSpec's limit (65,536), and building
    that suggestion raised: a 500."""
    body = training(micro_batch_size=2, gradient_accumulation_steps=32769)
    response = client.post(TRAIN, json=body)
    assert response.status_code == 200, response.text
    changes = [s["change"] for s in response.json()["suggestions"]]
    assert changes and not any("micro-batch" in change for change in changes)
    at_limit = estimate_training(TrainingRequest.model_validate(training(micro_batch_size=2)), load_catalog())
    assert any("micro-batch" in s.change for s in at_limit.suggestions)  # still offered where it can be built
