from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from planner import load_catalog
from planner.training.estimate import TrainingEstimate, TrainingRequest, estimate_training
from service.examples import QWEN2_5_0_5B_CONFIG, TRAINING_EXAMPLES
from service.readable import planner_json
from tests.service.conftest import error_text

PATH = "/v1/estimates/training"
LORA_R16 = {"method": {"kind": "lora", "rank": 16}}


def _estimate(client: TestClient, body: dict[str, Any]) -> TrainingEstimate:
    response = client.post(PATH, json=body)
    assert response.status_code == 200, response.text
    return TrainingEstimate.model_validate(planner_json(response.json()))


def _assert_consistent(e: TrainingEstimate) -> None:
    for phase in e.phases.values():
        assert sum(t.bytes for t in phase.terms) == phase.total_bytes
    assert e.peak_phase in e.phases
    assert e.memory == e.phases[e.peak_phase]
    assert e.memory.total_bytes == max(p.total_bytes for p in e.phases.values())
    assert e.allocated_peak_bytes == e.memory.total_bytes
    assert e.device_bytes == e.memory.total_bytes + e.training.cuda_context_bytes
    assert e.fits is (not e.fit_reasons) is (e.memory.total_bytes <= e.budget_bytes)
    assert e.num_gpus == e.training.data_parallel


def test_catalog_model_matches_the_planner(client: TestClient) -> None:
    body = {"model": "llama-3-8b", "gpu": "h100-sxm", "training": {**LORA_R16, "sequence_length": 4096}}
    e = _estimate(client, body)
    _assert_consistent(e)
    assert e == estimate_training(TrainingRequest.model_validate(body), load_catalog())
    assert (e.model.catalog_id, e.gpu.id, e.training.method.kind) == ("llama-3-8b", "h100-sxm", "lora")
    assert {"loss_backward", "optimizer_step"} <= set(e.phases)
    assert e.fits
    assert e.max_micro_batch_size >= 1
    assert e.throughput.tokens_per_s > 0
    assert 0 < e.throughput.mfu <= 1


def test_lora_trains_a_small_share_of_the_base(client: TestClient) -> None:
    e = _estimate(client, {"model": "llama-3-8b", "training": LORA_R16})
    tp = e.trainable_params
    assert 0 < tp.trainable < tp.base_params == e.model.params.total
    # peft's default LoRA targets for llama are q_proj and v_proj: 32 layers · 16 · ((4096 + 4096) + (4096 + 1024)).
    assert tp.trainable == 6_815_744


def test_raw_config_json(client: TestClient) -> None:
    e = _estimate(client, {"model": QWEN2_5_0_5B_CONFIG, "gpu": "l4", "training": LORA_R16})
    _assert_consistent(e)
    assert (e.model.catalog_id, e.model.spec.family) == (None, "qwen2")
    # q_proj and v_proj in 24 layers: 24 · 16 · ((896 + 896) + (896 + 128)), as peft prints for Qwen2.5-0.5B.
    assert e.trainable_params.trainable == 1_081_344
    assert e.fits


def test_full_fine_tune_of_llama_3_70b_on_one_a100_does_not_fit(client: TestClient) -> None:
    # 70.55e9 params · (2 B weights + 2 B grads + 4 B AdamW states) ≈ 526 GiB before activations, against 80 GiB.
    e = _estimate(client, {"model": "llama-3-70b", "gpu": "a100-80gb", "training": {"method": {"kind": "full"}}})
    _assert_consistent(e)
    assert not e.fits
    assert len(e.fit_reasons) == 1
    assert e.max_micro_batch_size == 0
    assert e.suggestions
    assert all(0 < s.saves_bytes == e.memory.total_bytes - s.peak_bytes for s in e.suggestions)


def test_data_parallel_zero_3_shards_the_states(client: TestClient) -> None:
    one = _estimate(client, {"model": "qwen2.5-7b", "training": {"gradient_checkpointing": "full"}})
    eight = _estimate(
        client,
        {"model": "qwen2.5-7b", "training": {"gradient_checkpointing": "full", "data_parallel": 8, "zero_stage": 3}},
    )
    _assert_consistent(eight)
    assert eight.num_gpus == 8
    assert eight.memory.get("optimizer/states") * 8 == one.memory.get("optimizer/states")
    assert eight.throughput.communication_s > 0 == one.throughput.communication_s


def test_partly_matching_targets_are_a_warning_not_a_422(client: TestClient) -> None:
    # issue 10: q_proj, v_proj on DeepSeek-V2-Lite (no v_proj) was a 422; peft adapts q_proj alone
    method = {"kind": "lora", "rank": 8, "target_modules": ["q_proj", "v_proj"]}
    response = client.post(PATH, json={"model": "deepseek-v2-lite", "training": {"method": method}})
    assert response.status_code == 200
    body = response.json()
    assert any("['v_proj'] match no module" in w for w in body["warnings"])
    assert body["trainable_params"]["unmatched_targets"] == ["v_proj"]


def test_ia3_on_deepseek_v2_lite_has_no_default_targets(client: TestClient) -> None:
    response = client.post(PATH, json={"model": "deepseek-v2-lite", "training": {"method": {"kind": "ia3"}}})
    assert response.status_code == 422
    assert "training.method.target_modules" in error_text(response)


@pytest.mark.parametrize("name", sorted(TRAINING_EXAMPLES))
def test_openapi_examples_are_valid_requests(client: TestClient, name: str) -> None:
    e = _estimate(client, TRAINING_EXAMPLES[name]["value"])
    _assert_consistent(e)
    assert e.fits, e.fit_reasons


def test_every_catalog_model_answers(client: TestClient) -> None:
    for model in load_catalog().models:
        _assert_consistent(_estimate(client, {"model": model.id, "gpu": "h200"}))
