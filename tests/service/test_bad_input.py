"""Bad input across endpoints: each is a 4xx (never a 500) whose error names the offending field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.examples import QWEN2_5_0_5B_CONFIG as CONFIG
from tests.service.conftest import MAX_BODY_BYTES, SPEC_8B, error_text

ESTIMATE, IMPORT, TRAIN = "/v1/estimates/inference", "/v1/models/import", "/v1/estimates/training"
MAX_ERROR_BYTES = 4096  # no error body echoes the input back

MLA = {"kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128}
MOE = {"num_experts": 8, "experts_per_token": 2, "expert_ffn_dim": 1024}


def spec(**changes: Any) -> dict[str, Any]:
    """An estimate body with an inline ModelSpec (Llama-3-8B shape) changed."""
    return {"model": {**SPEC_8B, **changes}}


def serving(**changes: Any) -> dict[str, Any]:
    return {"model": "llama-3-8b", "serving": changes}


def training(**changes: Any) -> dict[str, Any]:
    """A training-estimate body for Llama-3-8B with TrainingSpec fields changed."""
    return {"model": "llama-3-8b", "training": changes}


def method(kind: str, **changes: Any) -> dict[str, Any]:
    return training(method={"kind": kind, **changes})


def config(**changes: Any) -> dict[str, Any]:
    """A config.json (Qwen2.5-0.5B shape) with keys changed or added (None is an explicit null)."""
    return {**CONFIG, **changes}


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in CONFIG.items() if k != key}


def raw(text: str) -> bytes:
    """A body sent verbatim (JSON with NaN/Infinity literals, which Python's json accepts, or broken JSON)."""
    return text.encode()


def row(path: str, body: Any, status: int, field: str, id_: str, method: str = "POST") -> Any:
    return pytest.param(method, path, body, status, field, id=id_)


CASES = [
    # --- inline ModelSpec in an estimate ---
    row(ESTIMATE, spec(num_layers=0), 422, "num_layers", "spec-zero-layers"),
    row(ESTIMATE, spec(hidden_size=-1), 422, "hidden_size", "spec-negative-hidden"),
    row(ESTIMATE, spec(num_heads=1e30), 422, "num_heads", "spec-1e30-heads"),
    row(ESTIMATE, spec(vocab_size=10**30), 422, "vocab_size", "spec-huge-int-vocab"),
    row(ESTIMATE, spec(ffn_dim="wide"), 422, "ffn_dim", "spec-string-ffn"),
    row(ESTIMATE, spec(num_kv_heads=5), 422, "num_kv_heads", "spec-heads-not-divisible-by-kv"),
    row(ESTIMATE, spec(hidden_size=4097), 422, "head_dim", "spec-hidden-not-divisible-by-heads"),
    row(ESTIMATE, spec(attention="MLA", num_kv_heads=None), 422, "mla", "spec-mla-without-ranks"),
    row(ESTIMATE, spec(attention="MQA"), 422, "attention", "spec-attention-contradicts-heads"),
    row(ESTIMATE, spec(mla={**MLA, "kv_lora_rank": 0}), 422, "kv_lora_rank", "spec-mla-zero-rank"),
    row(ESTIMATE, spec(moe={**MOE, "experts_per_token": 9}), 422, "experts_per_token", "spec-k-above-experts"),
    row(ESTIMATE, spec(moe={**MOE, "first_dense_layers": 40}), 422, "first_dense_layers", "spec-dense-beyond-layers"),
    row(ESTIMATE, spec(moe={**MOE, "num_experts": 0}), 422, "num_experts", "spec-zero-experts"),
    row(
        ESTIMATE,
        spec(sliding_window=4096, sliding_window_layers=[40]),
        422,
        "sliding_window_layers",
        "spec-window-layer-beyond",
    ),
    row(ESTIMATE, spec(sliding_window=0), 422, "sliding_window", "spec-zero-window"),
    row(ESTIMATE, spec(weights="x"), 422, "weights", "spec-extra-field"),
    # --- model and GPU references ---
    row(ESTIMATE, {"gpu": "h100-sxm"}, 422, "model", "missing-model"),
    row(ESTIMATE, {"model": None}, 422, "model", "null-model"),
    row(ESTIMATE, {"model": "gpt-9"}, 422, "model", "unknown-model-id"),
    row(ESTIMATE, {"model": "x" * 100_000}, 422, "model", "huge-model-id"),
    row(ESTIMATE, {"model": "llama 3"}, 422, "model", "model-id-with-space"),
    row(ESTIMATE, {"model": "llama-3-8b", "gpu": "tpu-v9"}, 422, "gpu", "unknown-gpu-id"),
    row(
        ESTIMATE,
        {"model": "llama-3-8b", "gpu": {"id": "x", "memory_bytes": 0}},
        422,
        "memory_bytes",
        "inline-gpu-zero-memory",
    ),
    # --- raw config.json as the model ---
    row(ESTIMATE, {"model": config(num_key_value_heads=5)}, 422, "num_key_value_heads", "config-heads-not-divisible"),
    row(ESTIMATE, {"model": without("hidden_size")}, 422, "hidden_size", "config-missing-hidden"),
    row(ESTIMATE, {"model": config(num_hidden_layers="abc")}, 422, "num_hidden_layers", "config-layers-abc"),
    # --- ServingSpec and Efficiency ---
    row(
        ESTIMATE,
        raw('{"model":"llama-3-8b","serving":{"gpu_memory_utilization":NaN}}'),
        422,
        "gpu_memory_utilization",
        "nan",
    ),
    row(ESTIMATE, raw('{"model":"llama-3-8b","serving":{"prompt_tokens":Infinity}}'), 422, "prompt_tokens", "infinity"),
    row(
        ESTIMATE,
        raw('{"model":"llama-3-8b","efficiency":{"decode_bandwidth":-Infinity}}'),
        422,
        "decode_bandwidth",
        "minus-inf",
    ),
    row(ESTIMATE, serving(gpu_memory_utilization=0), 422, "gpu_memory_utilization", "utilization-0"),
    row(ESTIMATE, serving(gpu_memory_utilization=1.5), 422, "gpu_memory_utilization", "utilization-1.5"),
    row(ESTIMATE, serving(tensor_parallel=3), 422, "tensor_parallel", "tp-3-vs-8-kv-heads"),
    row(ESTIMATE, serving(tensor_parallel=0), 422, "tensor_parallel", "tp-0"),
    row(ESTIMATE, serving(tensor_parallel=8, decode_context_parallel=8), 422, "decode_context_parallel", "dcp-gqa"),
    row(ESTIMATE, serving(tensor_parallel=8, decode_context_parallel=3), 422, "decode_context_parallel", "dcp-3-tp8"),
    row(ESTIMATE, serving(engine="sglang", tensor_parallel=8, decode_context_parallel=8), 422, "engine", "dcp-sglang"),
    row(ESTIMATE, serving(weight_format="int3"), 422, "weight_format", "unknown-weight-format"),
    row(ESTIMATE, serving(kv_cache_dtype="int2"), 422, "kv_cache_dtype", "unknown-kv-dtype"),
    row(ESTIMATE, serving(engine="tensorrt"), 422, "engine", "unknown-engine"),
    row(ESTIMATE, serving(mla_layout="sideways"), 422, "mla_layout", "unknown-mla-layout"),
    row(ESTIMATE, serving(engine="vllm", attention="sdpa_math"), 422, "attention", "vllm-runs-no-math-attention"),
    row(ESTIMATE, serving(engine="sglang", attention="eager"), 422, "attention", "sglang-runs-no-eager-attention"),
    row(ESTIMATE, serving(engine="transformers", attention="flash"), 422, "attention", "unknown-attention"),
    row(ESTIMATE, serving(batch_size=8), 422, "batch_size", "serving-extra-field"),
    row(ESTIMATE, {"model": "llama-3-8b", "seed": 1}, 422, "seed", "request-extra-field"),
    row(ESTIMATE, serving(concurrency=0), 422, "concurrency", "concurrency-0"),
    row(ESTIMATE, serving(concurrency=2**21), 422, "concurrency", "concurrency-2^21"),
    row(ESTIMATE, serving(prompt_tokens=2**40), 422, "prompt_tokens", "prompt-2^40"),
    row(ESTIMATE, serving(output_tokens=-5), 422, "output_tokens", "negative-output"),
    row(ESTIMATE, serving(quant_group_size=0), 422, "quant_group_size", "group-size-0"),
    row(ESTIMATE, serving(block_size=0), 422, "block_size", "block-size-0"),
    row(ESTIMATE, serving(cuda_context_bytes=-1), 422, "cuda_context_bytes", "negative-context-bytes"),
    row(
        ESTIMATE, {"model": "llama-3-8b", "efficiency": {"prefill_compute": 0}}, 422, "prefill_compute", "efficiency-0"
    ),
    row(ESTIMATE, {"model": "llama-3-8b", "serving": [1, 2]}, 422, "serving", "serving-is-a-list"),
    # --- the body itself ---
    row(ESTIMATE, raw('{"model": "llama-3-8b",'), 422, "body", "malformed-json"),
    row(ESTIMATE, raw(""), 422, "body", "empty-body"),
    row(ESTIMATE, [{"model": "llama-3-8b"}], 422, "body", "body-is-an-array"),
    row(ESTIMATE, "llama-3-8b", 422, "body", "body-is-a-string"),
    row(ESTIMATE, raw("[" * 100_000), 422, "body", "100k-nested-brackets"),
    row(ESTIMATE, raw('{"model":' + '{"a":' * 50_000), 422, "body", "50k-nested-objects"),
    row(ESTIMATE, raw(json.dumps({"model": "llama-3-8b", "pad": "x" * MAX_BODY_BYTES})), 413, "body", "oversized-body"),
    # --- config.json import: the body is the config ---
    row(IMPORT, without("hidden_size"), 422, "hidden_size", "import-missing-hidden"),
    row(IMPORT, {"model_type": "llama"}, 422, "num_hidden_layers", "import-missing-everything"),
    row(IMPORT, config(num_hidden_layers="abc"), 422, "num_hidden_layers", "import-layers-abc"),
    row(IMPORT, config(num_hidden_layers=0), 422, "num_hidden_layers", "import-zero-layers"),
    row(IMPORT, config(hidden_size=-1), 422, "hidden_size", "import-negative-hidden"),
    row(IMPORT, config(hidden_size=1e30), 422, "hidden_size", "import-1e30-hidden"),
    row(IMPORT, raw('{"model_type":"llama","hidden_size":NaN}'), 422, "hidden_size", "import-nan"),
    row(IMPORT, config(num_key_value_heads=5), 422, "num_key_value_heads", "import-heads-not-divisible"),
    row(
        IMPORT,
        config(
            model_type="mistral",
            num_hidden_layers=2,
            sliding_window=64,
            layer_types=["full_attention"] * 2 + ["sliding_attention"],
        ),
        422,
        "layer_types",
        "import-sliding-layer-beyond",
    ),
    row(
        IMPORT,
        config(model_type="mixtral", num_local_experts=8, num_experts_per_tok=9),
        422,
        "num_experts_per_tok",
        "import-k-above-experts",
    ),
    row(IMPORT, config(model_type="deepseek_v3", kv_lora_rank=None), 422, "kv_lora_rank", "import-mla-null-rank"),
    row(IMPORT, config(model_type="deepseek_v3", qk_rope_head_dim=0), 422, "qk_rope_head_dim", "import-mla-zero-rope"),
    row(IMPORT, config(quantization_config=[4]), 422, "quantization_config", "import-quant-config-list"),
    row(IMPORT, config(model_type=7), 422, "model_type", "import-model-type-number"),
    row(IMPORT, [CONFIG], 422, "body", "import-body-is-an-array"),
    row(IMPORT, raw("{" * 1000), 422, "body", "import-deeply-nested"),
    # --- training estimates: the method ---
    row(TRAIN, method("lora", rank=-8), 422, "training.method.lora.rank", "train-negative-rank"),
    row(TRAIN, method("lora", rank=0), 422, "training.method.lora.rank", "train-rank-0"),
    row(TRAIN, method("qlora", rank=2**20), 422, "training.method.qlora.rank", "train-rank-2^20"),
    row(TRAIN, method("lora", alpha=0), 422, "training.method.lora.alpha", "train-alpha-0"),
    row(TRAIN, method("lora", dropout=1.0), 422, "training.method.lora.dropout", "train-dropout-1"),
    row(
        TRAIN,
        raw('{"model":"llama-3-8b","training":{"method":{"kind":"lora","dropout":NaN}}}'),
        422,
        "dropout",
        "train-nan-dropout",
    ),
    # peft matches names by suffix and refuses a list of which nothing matches (a partial match is answered with a
    # warning: tests/service/test_training.py)
    row(TRAIN, method("lora", target_modules=["bar_proj", "foo_proj"]), 422, "target_modules", "train-unknown-target"),
    row(TRAIN, method("qlora", target_modules=["foo_proj"]), 422, "target_modules", "train-qlora-unknown-target"),
    row(TRAIN, method("lora", target_modules=[]), 422, "target_modules", "train-empty-targets"),
    row(TRAIN, method("lora", target_modules=["q proj"]), 422, "target_modules", "train-target-with-space"),
    row(TRAIN, method("ia3", target_modules=["all-linear"]), 422, "target_modules", "train-ia3-all-linear"),
    row(
        TRAIN,
        method("ia3", target_modules=["q_proj"], feedforward_modules=["down_proj"]),
        422,
        "feedforward_modules",
        "train-ia3-ff-not-subset",
    ),
    row(
        TRAIN,
        {"model": "deepseek-v2-lite", "training": {"method": {"kind": "ia3"}}},
        422,
        "training.method.target_modules",
        "train-ia3-no-default",
    ),
    row(
        TRAIN,
        {"model": "mixtral-8x7b", "training": {"method": {"kind": "lora"}}},
        422,
        "target_modules",
        "train-mixtral-lora-no-default",
    ),
    row(
        TRAIN,
        {"model": "deepseek-v2-lite", "training": {"method": {"kind": "prefix"}}},
        422,
        "training.method.kind",
        "train-prefix-on-mla",
    ),
    row(TRAIN, method("dora"), 422, "training.method", "train-unknown-method"),
    row(TRAIN, training(method={"rank": 16}), 422, "training.method", "train-method-without-kind"),
    row(TRAIN, training(method="lora"), 422, "training.method", "train-method-is-a-string"),
    row(TRAIN, method("lora", rnak=16), 422, "rnak", "train-method-extra-field"),
    row(TRAIN, method("full", rank=16), 422, "training.method.full.rank", "train-full-with-rank"),
    row(TRAIN, method("prefix", num_virtual_tokens=0), 422, "num_virtual_tokens", "train-prefix-0-tokens"),
    row(TRAIN, method("prompt", num_virtual_tokens=-1), 422, "num_virtual_tokens", "train-prompt-negative-tokens"),
    row(
        TRAIN, method("adapter", bottleneck=0), 422, "training.method.adapter.bottleneck", "train-adapter-bottleneck-0"
    ),
    # --- training estimates: optimizer, precision, kernels ---
    row(TRAIN, training(optimizer={"kind": "lion"}), 422, "training.optimizer.kind", "train-unknown-optimizer"),
    row(
        TRAIN,
        training(optimizer={"kind": "sgd", "momentum": 1.0}),
        422,
        "training.optimizer.momentum",
        "train-momentum-1",
    ),
    row(TRAIN, training(optimizer={"implementation": "apex"}), 422, "implementation", "train-unknown-optimizer-impl"),
    row(TRAIN, training(precision="fp8"), 422, "training.precision", "train-unknown-precision"),
    row(
        TRAIN,
        training(gradient_checkpointing="partial"),
        422,
        "training.gradient_checkpointing",
        "train-unknown-checkpointing",
    ),
    row(TRAIN, training(attention="flash3"), 422, "training.attention", "train-unknown-attention"),
    # --- training estimates: batch, data and parallelism ---
    row(TRAIN, training(zero_stage=4), 422, "training.zero_stage", "train-zero-4"),
    row(TRAIN, training(micro_batch_size=0), 422, "training.micro_batch_size", "train-micro-batch-0"),
    row(TRAIN, training(sequence_length=0), 422, "training.sequence_length", "train-seq-0"),
    row(TRAIN, training(sequence_length=2**40), 422, "training.sequence_length", "train-seq-2^40"),
    row(TRAIN, training(data_parallel=0), 422, "training.data_parallel", "train-dp-0"),
    row(
        TRAIN,
        training(gradient_accumulation_steps=-1),
        422,
        "training.gradient_accumulation_steps",
        "train-accum-negative",
    ),
    row(
        TRAIN,
        training(packing=False, sample_lengths=[512, 0]),
        422,
        "training.sample_lengths.1",
        "train-sample-length-0",
    ),
    # 100,001 lengths are ~300 KB of JSON, under the body limit, so the spec's max_length answers.
    row(TRAIN, training(sample_lengths=[1] * 100_001), 422, "training.sample_lengths", "train-100001-sample-lengths"),
    row(TRAIN, training(sample_lengths=[2**24] * 200_000), 413, "body", "train-sample-lengths-over-body-limit"),
    row(TRAIN, training(first_step="maybe"), 422, "training.first_step", "train-first-step-not-bool"),
    row(TRAIN, training(learning_rate=1e-4), 422, "training.learning_rate", "train-extra-field"),
    row(TRAIN, training(gpu_memory_utilization=1.5), 422, "training.gpu_memory_utilization", "train-utilization-1.5"),
    row(TRAIN, training(cuda_context_bytes=-1), 422, "training.cuda_context_bytes", "train-negative-context"),
    row(TRAIN, {"model": "llama-3-8b", "efficiency": {"compute": 0}}, 422, "efficiency.compute", "train-efficiency-0"),
    row(
        TRAIN,
        {"model": "llama-3-8b", "efficiency": {"interconnect": 2}},
        422,
        "efficiency.interconnect",
        "train-interconnect-2",
    ),
    row(TRAIN, {"training": {}}, 422, "model", "train-missing-model"),
    row(TRAIN, {"model": "llama-3-8b", "gpu": "tpu-v9"}, 422, "gpu", "train-unknown-gpu"),
    row(TRAIN, {"model": "llama-3-8b", "training": [1]}, 422, "training", "train-training-is-a-list"),
    # --- ids in the path ---
    row("/v1/models/gpt-9", None, 404, "gpt-9", "path-unknown-model", method="GET"),
    row("/v1/models/" + "x" * 2000, None, 404, "model id", "path-huge-model-id", method="GET"),
    row("/v1/gpus/tpu-v9", None, 404, "tpu-v9", "path-unknown-gpu", method="GET"),
]


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 35
    assert sum(case.values[1] == TRAIN for case in CASES) >= 20


@pytest.mark.parametrize(("method", "path", "body", "status", "field"), CASES)
def test_bad_input(client: TestClient, method: str, path: str, body: Any, status: int, field: str) -> None:
    if isinstance(body, bytes):
        response = client.request(method, path, content=body, headers={"content-type": "application/json"})
    elif body is None:
        response = client.request(method, path)
    else:
        response = client.request(method, path, json=body)
    assert response.status_code == status, response.text[:1000]
    assert field in error_text(response), response.text[:1000]
    assert len(response.content) < MAX_ERROR_BYTES
