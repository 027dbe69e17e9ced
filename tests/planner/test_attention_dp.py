"""Data-parallel attention (serving.attention_data_parallel): worked examples of the weights, the KV cache and the
MoE dispatch/combine one GPU sees, the step paced by the busiest rank, and the 4xx messages for what the engines
refuse."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from planner import InferenceRequest, SpecError, estimate_inference, load_catalog
from planner.calibration.kernels import AG_PER_ALLREDUCE, KernelTables, load_kernel_tables
from planner.model.kv_cache import kv_split
from planner.serving import step_time
from planner.serving.load import rank_limit, step_model_for
from planner.serving.memory import weight_terms
from planner.serving.spec import ServingSpec


def _weights(model: str, **serving: Any) -> dict[str, int]:
    spec = load_catalog().model(model).spec
    return {t.name: t.bytes for t in weight_terms(spec, ServingSpec(**serving))}


def test_each_rank_holds_the_attention_whole_and_a_share_of_the_experts() -> None:
    # Qwen3-235B-A22B in bf16 on 8 GPUs, EP 8: L = 94, h = 4096, 64 query heads, 4 KV heads of d_h = 128,
    # 128 experts of f_e = 1536, V = 151,936 (untied).
    tp8 = _weights("qwen3-235b-a22b", engine="sglang", tensor_parallel=8, expert_parallel=8)
    dp4 = _weights("qwen3-235b-a22b", engine="sglang", tensor_parallel=8, expert_parallel=8, attention_data_parallel=4)
    # routed experts: 94 layers × 128 experts × 3·4096·1536 params × 2 B / 8 GPUs, with or without attention DP
    assert dp4["weights/experts"] == tp8["weights/experts"] == 94 * 128 * 3 * 4096 * 1536 * 2 // 8 == 56_774_098_944
    # attention at the rank's TP = 8 / 4 = 2: q and o (4096 × 8192 each) halved, k and v on 4 / 2 = 2 KV heads:
    # 94 × 2 B × (2 · 4096·8192/2 + 2 · 4096·256) = 94 × 71,303,168 = 6,702,497,792 B (4× the TP-8 share,
    # where q and o are split 8 ways and the 4 KV heads are replicated to one per GPU)
    assert dp4["weights/linear"] == 94 * 2 * (2 * 4096 * 8192 // 2 + 2 * 4096 * 256) == 6_702_497_792
    assert tp8["weights/linear"] == 94 * 2 * (2 * 4096 * 8192 // 8 + 2 * 4096 * 128) == 1_774_190_592
    # the vocabulary is split over the rank's 2 GPUs: ⌈151936 / 2⌉ · 4096 · 2 B
    assert dp4["weights/embedding"] == dp4["weights/lm_head"] == 75_968 * 4096 * 2 == 622_329_856
    # the router (4096 × 128, bf16) is replicated either way
    assert dp4["weights/unquantized_linears"] == tp8["weights/unquantized_linears"] == 94 * 4096 * 128 * 2
    # the same rank at plain TP 2 holds the same attention, but 4× the experts
    tp2 = _weights("qwen3-235b-a22b", engine="sglang", tensor_parallel=2)
    assert tp2["weights/linear"] == dp4["weights/linear"]
    assert tp2["weights/experts"] == 4 * dp4["weights/experts"]


def test_kv_per_token_per_gpu_is_the_rank_share_and_the_mla_latent_is_never_split() -> None:
    catalog = load_catalog()
    qwen, dsv3 = catalog.model("qwen3-235b-a22b").spec, catalog.model("deepseek-v3").spec
    dp4 = ServingSpec(engine="sglang", tensor_parallel=8, expert_parallel=8, attention_data_parallel=4)
    tp8 = ServingSpec(engine="sglang", tensor_parallel=8, expert_parallel=8)
    # GQA: 2 · L · (n_kv / TP_attention) · d_h · b = 2 · 94 · (4 / 2) · 128 · 2 = 96,256 B per token on each GPU of a
    # rank (TP 8 without DP: the 4 heads replicated to 1 per GPU, 48,128 B), for that rank's sequences only
    assert kv_split(qwen, 2, dp4.resolved_mla_layout, dp4.attention_tensor_parallel).full == 2 * 94 * 2 * 128 * 2
    assert kv_split(qwen, 2, tp8.resolved_mla_layout, tp8.attention_tensor_parallel).full == 2 * 94 * 1 * 128 * 2
    # MLA latent: L · (d_c + d_R) · b = 61 · (512 + 64) · 2 = 70,272 B per token on every GPU, DP or not
    for serving in (dp4, tp8):
        assert kv_split(dsv3, 2, serving.resolved_mla_layout, serving.attention_tensor_parallel).full == 70_272


def test_the_replica_holds_d_pools_of_sequences() -> None:
    # DeepSeek-V3 FP8 on 8 H200, TensorRT-LLM with enable_attention_dp (8 ranks of one GPU, EP 8), 256 sequences of
    # 2,048 + 256 tokens: each GPU's pool holds its own rank's ⌈256 / 8⌉ = 32
    request = InferenceRequest(
        model="deepseek-v3",
        gpu="h200",
        serving={"engine": "trtllm", "tensor_parallel": 8, "expert_parallel": 8, "attention_data_parallel": 8,
                 "weight_format": "fp8_block", "kv_cache_dtype": "fp8", "concurrency": 256},
    )  # fmt: skip
    est = estimate_inference(request, load_catalog())
    cap = est.capacity
    assert est.num_gpus == 8 and est.serving.rank_concurrency == 32
    # fp8 latent: 61 · 576 · 1 B per token = 35,136 B; pages of 32 tokens: 72 pages for 2,304 tokens
    assert cap.kv_bytes_per_token == 61 * 576
    assert cap.kv_bytes_per_sequence == 72 * 32 * 61 * 576
    assert cap.max_concurrent_sequences == 8 * (cap.kv_cache_capacity_bytes // cap.kv_bytes_per_sequence)
    assert est.fits
    kv = est.memory.get("kv_cache")
    assert kv == est.engine.kv_pool_bytes


def test_moe_dispatch_gathers_every_rank_tokens_and_the_busiest_rank_sets_the_pace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # DeepSeek-V3 on 8 H200 under TensorRT-LLM with attention DP 8: a rank's T tokens reach the experts as
    # D·T = 8·T rows; the all-gather and the reduce-scatter each move a buffer of D·T·h = 8·T·7,168 bf16 values
    # across the 8 GPUs (at T = 32 decode tokens per rank: 1,835,008 values, 3,670,016 B, per MoE layer and way)
    calls: dict[str, list[tuple[int, ...]]] = {"ag": [], "rs": [], "moe": []}
    ag, rs, moe = KernelTables.allgather_s, KernelTables.reducescatter_s, KernelTables.moe_s

    def record(name: str, fn: Any) -> Any:
        def wrapped(self: KernelTables, *args: Any) -> float:
            calls[name].append(args)
            return float(fn(self, *args))

        return wrapped

    monkeypatch.setattr(KernelTables, "allgather_s", record("ag", ag))
    monkeypatch.setattr(KernelTables, "reducescatter_s", record("rs", rs))
    monkeypatch.setattr(KernelTables, "moe_s", record("moe", moe))
    step_time._token_grid.cache_clear()
    step_time._build.cache_clear()
    spec = load_catalog().model("deepseek-v3").spec
    serving = ServingSpec(engine="trtllm", tensor_parallel=8, expert_parallel=8, attention_data_parallel=8,
                          weight_format="fp8_block")  # fmt: skip
    step_model_for(spec, serving, "h200", 8)
    step_time._token_grid.cache_clear()
    step_time._build.cache_clear()
    assert calls["ag"] and len(calls["ag"]) == len(calls["rs"]) == len(step_time._T_GRID)  # one MoE layer kind
    assert (32 * 8 * 7168, 8) in calls["ag"] and (32 * 8 * 7168, 8) in calls["rs"]
    assert {args[0] for args in calls["moe"]} == {8 * t for t in step_time._T_GRID}
    tables = load_kernel_tables("h200", "trtllm")
    assert tables is not None
    assert tables.allgather_s(1_835_008, 8) != AG_PER_ALLREDUCE * tables.allreduce_s(1_835_008, 8)  # NCCL's table


def test_a_rank_attends_to_its_own_sequences_at_its_own_tp() -> None:
    # the attention of 32 sequences per rank at attention TP 1 is the attention of 32 sequences on a one-GPU model:
    # each rank holds all 128 heads; the MoE and the collectives are what the other ranks add
    spec = load_catalog().model("deepseek-v3").spec
    serving = ServingSpec(
        engine="trtllm", tensor_parallel=8, expert_parallel=8, attention_data_parallel=8, weight_format="fp8_block"
    )
    dp8 = step_model_for(spec, serving, "h200", 8)
    tp1 = step_model_for(spec, ServingSpec(engine="trtllm", weight_format="fp8_block"), "h200", 1)
    a, b = dp8.step(32, 2048.0), tp1.step(32, 2048.0)
    assert a.attention_s == b.attention_s
    assert a.outside_s == b.outside_s  # lm_head over the rank's own 32 rows, the full vocabulary on its one GPU
    # the experts split 8 ways read an eighth of the expert weights per GPU, even over 8× the tokens
    assert a.dense_s < b.dense_s


def test_dp_one_is_the_tensor_parallel_model() -> None:
    spec = load_catalog().model("deepseek-v3").spec
    plain = ServingSpec(engine="sglang", tensor_parallel=8, expert_parallel=8, weight_format="fp8_block")
    explicit = plain.model_copy(update={"attention_data_parallel": 1})
    assert step_model_for(spec, plain, "h200", 8) is step_model_for(spec, explicit, "h200", 8)
    assert weight_terms(spec, plain) == weight_terms(spec, explicit)


def test_sglang_divides_its_batch_limits_over_the_ranks() -> None:
    # server_args.py: chunked_prefill_size // dp_size under --enable-dp-attention; max_running_requests // dp_size
    sglang = ServingSpec(engine="sglang", tensor_parallel=8, expert_parallel=8, attention_data_parallel=8)
    vllm = ServingSpec(engine="vllm", tensor_parallel=8, expert_parallel=8, attention_data_parallel=8)
    assert rank_limit(sglang, 16384) == 2048
    assert rank_limit(vllm, 16384) == 16384


@pytest.mark.parametrize(
    ("serving", "message"),
    [
        ({"engine": "sglang", "tensor_parallel": 8, "attention_data_parallel": 3}, "must divide tensor_parallel=8"),
        ({"engine": "trtllm", "tensor_parallel": 8, "attention_data_parallel": 4}, "must equal tensor_parallel=8"),
        ({"engine": "transformers", "attention_data_parallel": 2}, "attention_data_parallel must be 1"),
        ({"engine": "vllm", "tensor_parallel": 4, "pipeline_parallel": 2, "attention_data_parallel": 2},
         "pipeline_parallel > 1 is not modelled"),
    ],
)  # fmt: skip
def test_what_the_engines_refuse_is_a_422_naming_the_field(serving: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        ServingSpec(**serving)
    errors = info.value.errors()
    assert errors[0]["loc"] == ("attention_data_parallel",)
    assert message in errors[0]["msg"]


def test_a_dense_model_under_attention_dp_is_refused() -> None:
    request = InferenceRequest(
        model="llama-3.1-8b", gpu="h100-sxm", serving={"engine": "sglang", "tensor_parallel": 2,
                                                       "attention_data_parallel": 2},
    )  # fmt: skip
    with pytest.raises(SpecError) as info:
        estimate_inference(request, load_catalog())
    problem = info.value.problems[0]
    assert problem.loc == ("serving", "attention_data_parallel")
    assert "MoE models only" in problem.msg


def test_attention_tp_must_divide_the_heads_not_the_whole_group() -> None:
    # MiniMax-M2.5 has 48 query heads: TP 32 alone would not divide them, 8 ranks of TP 4 do (vLLM -dp 8 -tp 4
    # --enable-expert-parallel: EP 32 over its 256 experts)
    request = InferenceRequest(
        model="minimax-m2.5",
        gpu="h100-sxm",
        serving={"engine": "vllm", "tensor_parallel": 32, "expert_parallel": 32, "attention_data_parallel": 8,
                 "weight_format": "fp8_block", "concurrency": 16},
        load={"concurrency": 16},
    )  # fmt: skip
    est = estimate_inference(request, load_catalog())
    assert est.load is not None and est.load.tpot.mean_ms > 0
    with pytest.raises(SpecError):
        estimate_inference(request.model_copy(update={"serving": request.serving.model_copy(
            update={"attention_data_parallel": 1})}), load_catalog())  # fmt: skip
