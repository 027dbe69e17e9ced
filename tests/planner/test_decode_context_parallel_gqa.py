"""Decode context parallelism for GQA/MQA models (vLLM 0.11.1+, planner/serving/context_parallel.py): the KV heads
tensor parallelism replicates, striped by position over their copies. Memory, step time, validation and plans.

Qwen3-235B-A22B has 4 KV heads of 128: at TP 8 each head sits on 2 GPUs, one head per GPU; 94 layers of K and V in
bf16 take 94 × 1 × 128 × 2 × 2 B = 48,128 B per token on every GPU. DCP 2 is the most vLLM allows (TP // KV heads)
and removes every copy."""

from __future__ import annotations

import pytest

from planner import ServingSpec, SpecError, estimate_inference, load_catalog
from planner.plans.families import context_parallel_degrees
from planner.plans.spec import PlanConstraints
from planner.serving.engines import resolve_profile
from planner.serving.inference import InferenceEstimate, InferenceRequest
from planner.serving.load import step_model_for
from planner.serving.spec import Engine

CATALOG = load_catalog()
QWEN = CATALOG.model("qwen3-235b-a22b").spec
PER_TOKEN = 94 * 1 * 128 * 2 * 2


def _serving(dcp: int, **changes: object) -> ServingSpec:
    fields: dict[str, object] = {"engine": "vllm", "tensor_parallel": 8, "decode_context_parallel": dcp}
    return ServingSpec.model_validate({**fields, **changes})


def _estimate(dcp: int, load: dict[str, object] | None = None, **changes: object) -> InferenceEstimate:
    body = {"prompt_tokens": 32768, "output_tokens": 1024, "concurrency": 64, **changes}
    request = {"model": "qwen3-235b-a22b", "gpu": "h200", "serving": _serving(dcp, **body), "load": load}
    return estimate_inference(InferenceRequest.model_validate(request), CATALOG)


def test_the_copies_of_each_kv_head_hold_alternate_tokens() -> None:
    # the same blocks on each GPU hold twice the tokens: a GPU keeps ⌈33,792 / 2⌉ = 16,896 tokens of a sequence
    plain, striped = _estimate(1), _estimate(2)
    assert striped.engine.kv_pool_bytes == plain.engine.kv_pool_bytes
    assert plain.engine.kv_pool_tokens is not None
    assert striped.engine.kv_pool_tokens == 2 * plain.engine.kv_pool_tokens
    assert plain.capacity.kv_bytes_per_sequence == PER_TOKEN * 33792
    assert striped.capacity.kv_bytes_per_sequence == PER_TOKEN * 16896  # 1,056 whole blocks of 16
    assert striped.capacity.max_concurrent_sequences >= 2 * plain.capacity.max_concurrent_sequences
    assert not plain.fits and striped.fits  # 64 × 33,792 tokens: 1.6 GB per sequence without DCP
    kv = next(t for t in striped.memory.terms if t.name == "kv_cache")
    assert "decode context parallel" in kv.detail and "16896 of each sequence" in kv.detail


def test_decode_reads_half_the_context_and_pays_the_exchange() -> None:
    # per layer: attention of 2 × 8 gathered query heads over ⌈ctx / 2⌉ keys, the new token's own attention and
    # the log-sum-exp merge; per step: the queries all-gathered, the log-sum-exp all-gathered, the partial outputs
    # reduce-scattered over the 2 GPUs, for every token (prompt tokens too)
    plain = step_model_for(QWEN, _serving(1), "h200")
    striped = step_model_for(QWEN, _serving(2), "h200")
    assert striped.gqa_dcp and not plain.gqa_dcp
    exchange = striped._gqa_dcp_exchange_s(64)
    assert exchange > 0
    long_plain, long_striped = plain.step(64, 131072.0), striped.step(64, 131072.0)
    assert long_striped.attention_s < 0.7 * long_plain.attention_s  # half the keys read, exchange included
    short_plain, short_striped = plain.step(64, 512.0), striped.step(64, 512.0)
    assert short_striped.total_s > short_plain.total_s  # at short contexts the exchange costs more than it saves
    # a prompt-only step changes by the exchange alone (the prompt's attention is the same pairs)
    prompt_plain, prompt_striped = plain.step(0, 0.0, [(4096, 0)]), striped.step(0, 0.0, [(4096, 0)])
    assert prompt_striped.total_s - prompt_plain.total_s == pytest.approx(striped._gqa_dcp_exchange_s(4096))
    assert prompt_striped.dense_s == prompt_plain.dense_s


def test_long_contexts_queue_less_under_load() -> None:
    # 16 clients of 131,072-token prompts: the plain pool holds a few of them at a time and queues the rest; the
    # striped pool every one of them, so prompts wait less (p50 52 → 11 s) and the decode batch is larger
    load = {"concurrency": 16, "num_requests": 32}
    plain, striped = (_estimate(d, load, prompt_tokens=131072, output_tokens=256, concurrency=16).load for d in (1, 2))
    assert plain is not None and striped is not None
    assert striped.ttft.p50_ms < plain.ttft.p50_ms / 3
    assert striped.mean_decode_batch > plain.mean_decode_batch


@pytest.mark.parametrize(
    ("model", "changes", "message"),
    [
        ("qwen3-235b-a22b", {"decode_context_parallel": 4}, r"exceeds tensor_parallel // KV heads = 8 // 4 = 2"),
        ("qwen3-235b-a22b", {"decode_context_parallel": 2, "tensor_parallel": 4}, "must exceed the model's 4 KV"),
        ("qwen3-235b-a22b", {"decode_context_parallel": 2, "engine_version": "0.11.0"}, "stripes MLA caches only"),
        ("gpt-oss-120b", {"decode_context_parallel": 2, "tensor_parallel": 16}, "sliding-window layers"),
    ],
)
def test_gqa_dcp_refusals_name_the_field_and_the_bound(model: str, changes: dict[str, object], message: str) -> None:
    body = {"engine": "vllm", "tensor_parallel": 8, **changes}
    with pytest.raises(SpecError, match=message) as info:
        estimate_inference(InferenceRequest.model_validate({"model": model, "gpu": "h200", "serving": body}), CATALOG)
    assert info.value.problems[0].loc == ("serving", "decode_context_parallel")


def test_vllm_0_11_1_is_the_first_profile_that_stripes_gqa() -> None:
    assert resolve_profile("vllm", "0.11.0").decode_context_parallel_gqa is None
    assert resolve_profile("vllm", "0.11.1").decode_context_parallel_gqa is not None
    assert resolve_profile("vllm", None).decode_context_parallel_gqa is not None


def test_plans_try_the_dcp_that_removes_every_copy() -> None:
    on, off = PlanConstraints(), PlanConstraints(decode_context_parallel=False)
    assert context_parallel_degrees(QWEN, Engine.VLLM, 8, 1, 1, on) == (1, 2)
    assert context_parallel_degrees(QWEN, Engine.VLLM, 4, 1, 1, on) == (1,)  # TP 4 = KV heads: no copies
    assert context_parallel_degrees(QWEN, Engine.VLLM, 8, 1, 1, off) == (1,)
    assert context_parallel_degrees(QWEN, Engine.SGLANG, 8, 1, 1, on) == (1,)
    llama = CATALOG.model("llama-3.1-8b").spec  # 32 heads, 8 KV heads: TP 16 → DCP 2 (4 queries per head / 2)
    assert context_parallel_degrees(llama, Engine.VLLM, 16, 1, 1, on) == (1, 2)
    oss = CATALOG.model("gpt-oss-120b").spec  # sliding-window layers: vLLM does not stripe them
    assert context_parallel_degrees(oss, Engine.VLLM, 16, 1, 1, on) == (1,)


def test_a_plan_halves_its_replicas_with_dcp_where_the_pool_binds() -> None:
    # Qwen3-235B-A22B in bf16 on H100s, TP 8: weights leave a pool of 320,864 tokens per replica, 9 sequences of
    # 32,768 + 1,024 = 33,792 tokens; 32 users need ⌈32 / 9⌉ = 4 replicas (32 GPUs). DCP 2 holds 641,728 tokens,
    # 18 sequences: ⌈32 / 18⌉ = 2 replicas (16 GPUs), within the 100 ms TPOT at a higher TPOT than plain TP
    from planner.plans.search import plan_serving
    from planner.plans.spec import PlanRequest

    body = {
        "model": "qwen3-235b-a22b",
        "workload": {"input_tokens": 32768, "output_tokens": 1024, "concurrency": 32},
        "slo": {"ttft_ms": 60000, "tpot_ms": 100},
        "constraints": {
            "gpus": ["h100-sxm"],
            "engines": ["vllm"],
            "weight_formats": ["bf16"],
            "kv_cache_dtypes": ["bf16"],
            "tensor_parallel": [8],
            "pipeline_parallel": [1],
            "expert_parallel": False,
            "attention_data_parallel": False,
            "max_num_seqs": [16, 32, 64],
            "max_gpus": 64,
        },
        "max_plans": 4,
    }
    r = plan_serving(PlanRequest.model_validate(body), CATALOG)
    assert r.summary.families == 2
    by_dcp = {p.pools[0].decode_context_parallel: p for p in r.plans}
    striped, plain = by_dcp[2], by_dcp[1]
    assert r.plans[0] is striped and "DCP2" in striped.label
    assert plain.pools[0].kv_pool_tokens == 320_864 and striped.pools[0].kv_pool_tokens == 2 * 320_864
    assert (plain.num_gpus, striped.num_gpus) == (32, 16)
    assert plain.tpot.p90_ms < striped.tpot.p90_ms <= 100
