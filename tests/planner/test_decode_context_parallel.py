"""Decode context parallelism (vLLM --decode-context-parallel-size) for MLA models: memory, step time, validation
(GQA/MQA models: tests/planner/test_decode_context_parallel_gqa.py)."""

from __future__ import annotations

import pytest

from planner import ServingSpec, SpecError, estimate_inference, load_catalog
from planner.serving.inference import InferenceRequest
from planner.serving.load import step_model_for

CATALOG = load_catalog()
DSV3 = CATALOG.model("deepseek-v3").spec


def _serving(dcp: int, **changes: object) -> ServingSpec:
    fields: dict[str, object] = {"engine": "vllm", "weight_format": "fp8_block", "tensor_parallel": 8}
    return ServingSpec.model_validate({**fields, "decode_context_parallel": dcp, **changes})


def test_the_latent_cache_is_striped_over_the_dcp_gpus() -> None:
    # DeepSeek-V3 on 8 H200s, 64 sequences of 32,768 + 1,024 tokens. Without DCP every GPU holds every sequence's
    # latent (61 layers × (512 + 64) × 2 B = 70,272 B per token, 1,124,352 B per 16-token block): 141.5 GiB, no fit.
    # With DCP 8 a GPU holds every 8th token, ⌈33,792 / 8⌉ = 4,224 per sequence: the same blocks hold 8 times the
    # tokens, and 64 sequences need 17.7 GiB.
    body = {"prompt_tokens": 32768, "output_tokens": 1024, "concurrency": 64}
    plain, striped = (
        estimate_inference(InferenceRequest(model="deepseek-v3", gpu="h200", serving=_serving(d, **body)), CATALOG)
        for d in (1, 8)
    )
    assert striped.engine.kv_pool_bytes == plain.engine.kv_pool_bytes  # the same blocks on each GPU
    assert plain.engine.kv_pool_tokens is not None and plain.engine.kv_pool_tokens % 16 == 0
    assert striped.engine.kv_pool_tokens == 8 * plain.engine.kv_pool_tokens
    assert not plain.fits and striped.fits
    per_seq = 61 * (512 + 64) * 2 * 4224  # 4,224 tokens = 264 whole blocks of 16
    assert striped.capacity.kv_bytes_per_sequence == per_seq
    assert plain.capacity.kv_bytes_per_sequence == 61 * (512 + 64) * 2 * 33792
    assert striped.capacity.max_concurrent_sequences >= 8 * plain.capacity.max_concurrent_sequences
    # the longest context 64 sequences can each have: 8 times one GPU's share (79,872 = 8 × 9,984 tokens)
    assert striped.capacity.max_context_tokens == 8 * plain.capacity.max_context_tokens < DSV3.max_context
    kv = next(t for t in striped.memory.terms if t.name == "kv_cache")
    assert "× 8 (decode context parallel" in kv.detail and "4224 of each sequence" in kv.detail


def test_decode_reads_a_stripe_and_pays_the_gathers() -> None:
    # One MLA layer's decode under DCP D: the MLA kernel over D·n_h heads (the gathered queries) and ⌈ctx / D⌉ keys,
    # the absorbed W_UK / W_UV matmuls, an all-gather of the queries (d_c + d_R = 576 wide), an all-gather of the
    # fp32 LSE and a reduce-scatter of the partial outputs (d_c = 512 wide), all over D GPUs.
    plain, striped = (step_model_for(DSV3, _serving(d), "h200") for d in (1, 8))
    layer, tables = striped.layers[0], striped.tables
    assert (layer.dcp, layer.latent, layer.head_dim, layer.n_h) == (8, 512, 576, 16)
    b, ctx = 32, 65536
    expected = (
        tables.mla_s("generation", b, ctx // 8, 128, "bf16")
        + sum(tables.gemm_s(b, g.n, g.k, g.fmt) for g in layer.decode_only)
        + tables.allgather_s(b * 128 * 576, 8)
        + tables.allgather_s(b * 128 * 2, 8)
        + tables.reducescatter_s(b * 128 * 512, 8)
    )
    assert striped._dcp_decode_s(layer, b, ctx) == pytest.approx(expected, rel=1e-12)
    # long contexts read an eighth of the cache per GPU; a short one pays the collectives for nothing
    assert striped.step(128, 131072).attention_s < plain.step(128, 131072).attention_s / 3
    assert striped.step(1, 4096).total_s > plain.step(1, 4096).total_s
    # a prefill chunk over a striped context gathers the cached latents first
    chunk = ((2048, 30000),)
    assert striped.step(0, 0, chunk).attention_s > plain.step(0, 0, chunk).attention_s
    # the dense part (GEMMs, MoE, norms, all-reduces) does not change
    assert striped.step(64, 8192).dense_s == plain.step(64, 8192).dense_s


def test_load_under_dcp_holds_what_plain_tp_cannot() -> None:
    body = {"prompt_tokens": 32768, "output_tokens": 256, "concurrency": 64}
    plain, striped = (
        estimate_inference(
            InferenceRequest(model="deepseek-v3", gpu="h200", serving=_serving(d, **body), load={"concurrency": 64}),
            CATALOG,
        )
        for d in (1, 8)
    )
    assert plain.load is not None and striped.load is not None
    # plain TP queues most prompts behind a pool of 18 sequences; DCP 8 admits all 64 at once
    assert striped.load.ttft.p50_ms < plain.load.ttft.p50_ms / 3
    assert striped.load.mean_decode_batch > 2 * plain.load.mean_decode_batch


@pytest.mark.parametrize(
    ("model", "changes", "message"),
    [
        ("llama-3.1-70b", {"decode_context_parallel": 8}, "must exceed the model.s 8 KV heads"),
        ("deepseek-v3", {"decode_context_parallel": 3}, "must divide tensor_parallel=8"),
        ("deepseek-v3", {"decode_context_parallel": 2, "engine_version": "0.10.2"}, "vLLM 0.11 and later"),
        ("deepseek-v3", {"decode_context_parallel": 2, "engine": "sglang", "weight_format": "fp8_block"}, "for vllm"),
        ("deepseek-v3", {"decode_context_parallel": 2, "attention_data_parallel": 8}, "not modelled"),
    ],
)
def test_dcp_refusals_name_the_field(model: str, changes: dict[str, object], message: str) -> None:
    body = {"engine": "vllm", "weight_format": "fp8_block", "tensor_parallel": 8, **changes}
    with pytest.raises((SpecError, ValueError), match=message) as info:
        estimate_inference(InferenceRequest.model_validate({"model": model, "gpu": "h200", "serving": body}), CATALOG)
    assert "decode_context_parallel" in str(info.value)


def test_plans_try_dcp_for_mla_models_on_vllm() -> None:
    # DeepSeek-V3 on H200 with vLLM, 128 users of 32,768 → 1,024 tokens: TP 8 × EP 1 / 8 × (plain, DP 8, DCP 8) =
    # 6 families. The DCP families hold 8 times the tokens per replica (the same blocks, every 8th token each); the
    # cheapest plan uses DCP 8 on fewer replicas than plain TP needs, and its replica request reproduces the pool.
    from planner.plans.search import plan_serving
    from planner.plans.spec import PlanRequest

    body = {
        "model": "deepseek-v3",
        "workload": {"input_tokens": 32768, "output_tokens": 1024, "concurrency": 128},
        "slo": {"ttft_ms": 30000, "tpot_ms": 100},
        "constraints": {
            "gpus": ["h200"],
            "engines": ["vllm"],
            "weight_formats": ["fp8_block"],
            "kv_cache_dtypes": ["bf16"],
            "tensor_parallel": [8],
            "pipeline_parallel": [1],
            "max_num_seqs": [64, 128, 256],
            "max_gpus": 64,
        },
        "max_plans": 6,
    }
    r = plan_serving(PlanRequest.model_validate(body), CATALOG)
    assert r.summary.families == 6
    by_layout = {(p.pools[0].expert_parallel, p.pools[0].decode_context_parallel): p for p in r.plans}
    dcp, plain = by_layout[(1, 8)], by_layout[(1, 1)]
    assert "DCP8" in dcp.label and dcp.pools[0].kv_pool_tokens == 8 * plain.pools[0].kv_pool_tokens
    assert r.plans[0] is dcp or r.plans[0].pools[0].decode_context_parallel == 8
    assert dcp.num_gpus < plain.num_gpus
    request = dcp.pools[0].request
    assert request.serving.decode_context_parallel == 8
    e = estimate_inference(request, CATALOG)
    assert e.load is not None and e.load.tpot == dcp.tpot and e.engine.kv_pool_tokens == dcp.pools[0].kv_pool_tokens
    off = plan_serving(
        PlanRequest.model_validate({**body, "constraints": {**body["constraints"], "decode_context_parallel": False}}),
        CATALOG,
    )
    assert off.summary.families == 4 and all(p.pools[0].decode_context_parallel == 1 for p in off.plans)
