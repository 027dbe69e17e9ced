from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from planner import InferenceEstimate, InferenceRequest, estimate_inference, load_catalog
from service.app import create_app
from service.examples import INFERENCE_EXAMPLES, QWEN2_5_0_5B_CONFIG
from service.readable import planner_json
from service.settings import Settings
from tests.service.conftest import SPEC_8B

PATH = "/v1/estimates/inference"


def _estimate(client: TestClient, body: dict[str, Any]) -> InferenceEstimate:
    response = client.post(PATH, json=body)
    assert response.status_code == 200, response.text
    return InferenceEstimate.model_validate(planner_json(response.json()))


def _assert_consistent(e: InferenceEstimate) -> None:
    assert sum(t.bytes for t in e.memory.terms) == e.memory.total_bytes
    assert e.device_bytes >= e.memory.total_bytes  # CUDA graphs captured outside the engine's budget add to it
    assert e.fits is (not e.fit_reasons)


def test_catalog_model_matches_the_planner(client: TestClient) -> None:
    body = {
        "model": "llama-3-8b",
        "gpu": "h100-sxm",
        "serving": {
            "engine_version": "0.19.0",
            "gpu_memory_utilization": 0.9,
            "prompt_tokens": 7168,
            "output_tokens": 1024,
        },
    }
    e = _estimate(client, body)
    _assert_consistent(e)
    assert e == estimate_inference(InferenceRequest.model_validate(body), load_catalog())
    assert (e.model.catalog_id, e.gpu.id, e.fits) == ("llama-3-8b", "h100-sxm", True)
    # Worked in tests/planner/test_worked_examples.py: 27,786 KV blocks, 54 sequences of 8K tokens.
    assert (e.capacity.kv_blocks, e.capacity.max_concurrent_sequences) == (27_786, 54)


def test_inline_spec(client: TestClient) -> None:
    e = _estimate(client, {"model": {"name": "my-8b", **SPEC_8B}, "gpu": "l40s", "serving": {"kv_cache_dtype": "fp8"}})
    _assert_consistent(e)
    assert e.model.catalog_id is None
    assert e.model.spec.name == "my-8b"
    # Same architecture as Llama-3-8B, so the same parameter count.
    assert e.model.params.total == load_catalog().model("llama-3-8b").params.total
    # fp8 cache: 2 · 32 · 8 · 128 · 1 B per token.
    assert e.capacity.kv_bytes_per_token == 65_536


def test_raw_config_json(client: TestClient) -> None:
    e = _estimate(client, {"model": QWEN2_5_0_5B_CONFIG, "gpu": "l4", "serving": {"concurrency": 8}})
    _assert_consistent(e)
    assert (e.model.catalog_id, e.model.exact, e.model.spec.family) == (None, True, "qwen2")
    assert e.model.params.total == 494_032_768
    assert e.fits


def test_inline_gpu_spec(client: TestClient) -> None:
    gpu = (
        load_catalog()
        .gpu("h100-sxm")
        .model_copy(update={"id": "h100-half", "memory_bytes": 40 * 2**30, "driver_memory_bytes": 39 * 2**30})
    )
    body = {"model": "llama-3-8b", "gpu": gpu.model_dump(mode="json"), "serving": {"gpu_memory_utilization": 0.9}}
    e = _estimate(client, body)
    _assert_consistent(e)
    assert e.gpu.id == "h100-half"
    assert e.capacity.budget_bytes == int(0.9 * 39 * 2**30)  # vLLM budgets the memory the driver reports


def test_deepseek_v3_fp8_block_on_8_h200_fits(client: TestClient) -> None:
    body = {"model": "deepseek-v3", "gpu": "h200", "serving": {"weight_format": "fp8_block", "tensor_parallel": 8}}
    e = _estimate(client, body)
    _assert_consistent(e)
    assert e.fits, e.fit_reasons
    assert e.num_gpus == 8
    assert e.model.spec.attention_kind == "MLA"
    assert e.serving.mla_layout == "mla_latent"  # vLLM's default for MLA


def test_llama_3_1_405b_bf16_on_one_a100_does_not_fit(client: TestClient) -> None:
    # 405.85e9 params · 2 B ≈ 756 GiB of weights against a 72 GiB budget (0.92 · 79.19 GiB).
    e = _estimate(client, {"model": "llama-3.1-405b", "gpu": "a100-80gb"})
    _assert_consistent(e)
    assert not e.fits
    assert len(e.fit_reasons) == 1
    assert "budget" in e.fit_reasons[0]
    assert e.capacity.max_concurrent_sequences == 0


def test_context_beyond_the_model_warns(client: TestClient) -> None:
    e = _estimate(client, {"model": "llama-3-8b", "serving": {"prompt_tokens": 16384}})
    assert any("max_context" in w for w in e.warnings)


@pytest.mark.parametrize("name", sorted(INFERENCE_EXAMPLES))
def test_openapi_examples_are_valid_requests(client: TestClient, name: str) -> None:
    _assert_consistent(_estimate(client, INFERENCE_EXAMPLES[name]["value"]))


def test_every_catalog_model_answers(client: TestClient) -> None:
    for model in load_catalog().models:
        _assert_consistent(_estimate(client, {"model": model.id, "gpu": "h200"}))


def _tiny_gpu(**changes: Any) -> dict[str, Any]:
    gpu = load_catalog().gpu("h100-sxm").model_copy(update={"id": "tiny"}).model_dump(mode="json")
    return {**gpu, **changes}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        # Rates that would overflow the roofline times to inf are rejected by GpuSpec's lower bounds.
        ({"gpu": _tiny_gpu(memory_bandwidth_bytes_per_s=1e-300)}, "memory_bandwidth_bytes_per_s"),
        ({"gpu": _tiny_gpu(peak_flops_per_s={"bf16": 1e-300})}, "peak_flops_per_s"),
        # An efficiency that would underflow peak × efficiency to 0.
        ({"efficiency": {"prefill_compute": 1e-300}}, "prefill_compute"),
        # An empty peak table.
        ({"gpu": _tiny_gpu(peak_flops_per_s={})}, "peak_flops_per_s"),
    ],
    ids=["tiny-bandwidth", "tiny-flops", "tiny-efficiency", "empty-peaks"],
)
def test_extreme_inline_gpus_are_422(settings: Settings, body: dict[str, Any], field: str) -> None:
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    response = client.post(PATH, json={"model": "llama-3-8b", **body})
    assert response.status_code == 422
    assert field in str(response.json()["detail"])
