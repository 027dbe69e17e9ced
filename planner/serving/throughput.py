"""Roofline serving throughput: prefill is compute-bound, decode is memory-bound (each checked against the other)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from planner._base import FrozenSpec
from planner.gpu_spec import ComputeDType, GpuSpec
from planner.model.kv_cache import KVLayout, kv_bytes_per_sequence
from planner.model.params import count_params, layer_kinds
from planner.model.precision import WeightFormat, dtype_bytes
from planner.model.spec import ModelSpec
from planner.serving.spec import Efficiency, ServingSpec

__all__ = [
    "DecodeEstimate",
    "PrefillEstimate",
    "attention_flops",
    "decode_estimate",
    "expected_experts_touched",
    "prefill_estimate",
    "with_step_time",
]

FLOPS_PER_MAC = 2  # one multiply-accumulate = 2 FLOPs (Kaplan et al. 2020 §2.1)
ALL_REDUCES_PER_LAYER = 2  # after attention and after the MLP (Megatron-LM §3, Figure 3)

_COMPUTE_DTYPE: dict[WeightFormat, ComputeDType] = {
    WeightFormat.FP8: "fp8",
    WeightFormat.FP8_BLOCK: "fp8",
    WeightFormat.INT8: "int8",
    WeightFormat.FP32: "fp32",
}


class PrefillEstimate(FrozenSpec):
    """One prompt's prefill on one replica."""

    flops: float = Field(description="Forward FLOPs of the whole prompt (all GPUs of the replica).")
    compute_s: float
    weight_read_s: float
    communication_s: float
    ttft_s: float = Field(description="Time to first token: max(compute, weight read) + all-reduces.")
    tokens_per_s: float
    bound: str = Field(description="'compute' or 'memory' (of the roofline).")
    method: str = Field(
        default="roofline",
        description="'kernel tables <gpu>/<engine> <version>' when the time comes from measured kernels, else "
        "'roofline' (datasheet peaks × the request's efficiencies).",
    )
    formula: str = "TTFT = max(F/(P·η_c·TP), W/(BW·η_bw)) + 2·L·allreduce(P·h·b); F = 2·N·s + attention"
    source: str = "Kaplan et al. 2020 §2.1 (C ≈ 2N + 2·n_layer·n_ctx·d_attn); roofline (Williams et al. 2009)"


class DecodeEstimate(FrozenSpec):
    """One decode step of B sequences at their mean context."""

    batch: int
    mean_context_tokens: int
    bytes_read: int = Field(description="Weights touched + KV cache read per step, per GPU.")
    flops: float
    memory_s: float
    compute_s: float
    communication_s: float
    tpot_s: float = Field(description="Time per output token = step time.")
    tokens_per_s: float = Field(description="B / TPOT, the replica's generation throughput.")
    bound: str
    experts_touched_per_layer: float | None = None
    method: str = "roofline"
    formula: str = "TPOT = max(bytes/(BW·η_bw), F/(P·η_c)) + 2·L·allreduce(B·h·b)"
    source: str = "Pope et al. 2022 §3 (decode is memory-bound); MoE reads E·(1−(1−k/E)^B) experts"


def peak_flops(gpu: GpuSpec, fmt: WeightFormat) -> float:
    """Tensor peak for the GEMM dtype: fp8/int8 checkpoints run W8A8, 4-bit formats dequantize to 16-bit."""
    dtype = _COMPUTE_DTYPE.get(fmt, "bf16")
    return gpu.peak_flops_per_s.get(dtype) or gpu.peak_flops_per_s.get("bf16") or max(gpu.peak_flops_per_s.values())


@lru_cache(maxsize=8192)  # pure; a batch or a plan asks the same shapes again
def attention_flops(spec: ModelSpec, context: int, queries: int, layout: KVLayout) -> float:
    """Score and value FLOPs of `queries` new tokens attending to a cache ending at `context` tokens.

    Formula: Σ_layers Σ_queries 2·n_h·(d_qk + d_v)·ctx_i, ctx_i = min(i, w) (causal; window w).
      MLA latent decode (weights absorbed): 2·n_h·(2·d_c + d_R) per cached token.
    Source: Kaplan et al. 2020 Table 1 (2·n_layer·n_ctx·d_attn per token, forward); DeepSeek-V2 §2.1.2.
    """
    if spec.mla is not None and layout is KVLayout.MLA_LATENT and queries == 1:
        per_pair = FLOPS_PER_MAC * spec.num_heads * (2 * spec.mla.kv_lora_rank + spec.mla.qk_rope_head_dim)
    elif spec.mla is not None:
        per_pair = FLOPS_PER_MAC * spec.num_heads * (spec.mla.qk_head_dim + spec.mla.v_head_dim)
    else:
        per_pair = FLOPS_PER_MAC * spec.num_heads * 2 * spec.resolved_head_dim
    first = context - queries + 1
    n_sliding = spec.sliding_layer_count
    full = _sum_min(first, context, None)
    windowed = _sum_min(first, context, spec.sliding_window) if n_sliding else 0
    return float(per_pair * ((spec.num_layers - n_sliding) * full + n_sliding * windowed))


def _sum_min(first: int, last: int, window: int | None) -> int:
    """Σ_{i=first..last} min(i, w): keys each query attends to, causal, within a window w (None = ∞)."""
    if window is None or last <= window:
        return (first + last) * (last - first + 1) // 2
    if first > window:
        return window * (last - first + 1)
    return (first + window) * (window - first + 1) // 2 + window * (last - window)


def _allreduce_s(payload_bytes: float, gpu: GpuSpec, tp: int, eff: Efficiency, layers: int) -> float:
    """Ring all-reduce: 2·(TP−1)/TP·bytes over the link, twice per layer (Patarasuk & Yuan 2009)."""
    if tp == 1:
        return 0.0
    per = 2 * (tp - 1) / tp * payload_bytes / (gpu.interconnect_bandwidth_bytes_per_s * eff.interconnect)
    return ALL_REDUCES_PER_LAYER * layers * per


def prefill_estimate(
    spec: ModelSpec, serving: ServingSpec, gpu: GpuSpec, eff: Efficiency, weight_bytes_per_gpu: int
) -> PrefillEstimate:
    """TTFT of one prompt of `prompt_tokens` tokens on one replica of TP GPUs."""
    s, tp = serving.prompt_tokens, serving.tensor_parallel
    params = count_params(spec)
    lm_head_rows = s if serving.resolved_logits_all_positions else 1
    lm_head_macs = spec.vocab_size * spec.hidden_size
    matmul = FLOPS_PER_MAC * ((params.forward_matmul_params - lm_head_macs) * s + lm_head_macs * lm_head_rows)
    flops = matmul + attention_flops(spec, s, s, KVLayout.MLA_EXPANDED)
    compute_s = flops / (peak_flops(gpu, serving.weight_format) * eff.prefill_compute * tp)
    read_s = weight_bytes_per_gpu / (gpu.memory_bandwidth_bytes_per_s * eff.decode_bandwidth)
    comm_s = _allreduce_s(s * spec.hidden_size * dtype_bytes(serving.activation_dtype), gpu, tp, eff, spec.num_layers)
    ttft = max(compute_s, read_s) + comm_s
    return PrefillEstimate(
        flops=flops,
        compute_s=compute_s,
        weight_read_s=read_s,
        communication_s=comm_s,
        ttft_s=ttft,
        tokens_per_s=s / ttft,
        bound="compute" if compute_s >= read_s else "memory",
    )


def expected_experts_touched(num_experts: int, k: int, batch: int) -> float:
    """Expected distinct experts a batch of B tokens routes to: E·(1 − (1 − k/E)^B).

    Assumes: uniform, independent routing (a balanced router's steady state).
    """
    return num_experts * (1.0 - (1.0 - k / num_experts) ** batch)


def _decode_weight_bytes(spec: ModelSpec, weight_bytes_per_gpu: int, batch: int) -> tuple[int, float | None]:
    """Weights one decode step reads: everything but the routed experts nobody in the batch chose."""
    moe = spec.moe
    if moe is None:
        return weight_bytes_per_gpu, None
    touched = expected_experts_touched(moe.num_experts, moe.experts_per_token, batch)
    expert_params = sum(
        lin.params * n for layout, n in layer_kinds(spec) for lin in layout.mlp if lin.name.startswith("experts.")
    )
    total_params = count_params(spec).total
    expert_share = expert_params / total_params  # the experts' share of the stored bytes
    untouched = expert_share * (1.0 - touched / moe.num_experts)
    return round(weight_bytes_per_gpu * (1.0 - untouched)), touched


def decode_estimate(
    spec: ModelSpec, serving: ServingSpec, gpu: GpuSpec, eff: Efficiency, weight_bytes_per_gpu: int
) -> DecodeEstimate:
    """One decode step of B = concurrency sequences at the mean context prompt + output/2."""
    batch, tp = serving.concurrency, serving.tensor_parallel
    context = serving.prompt_tokens + serving.output_tokens // 2
    layout = serving.resolved_mla_layout
    # decode context parallelism: a GPU reads its 1/DCP stripe of each MLA latent cache (gather traffic not counted)
    per_gpu = serving.context_per_gpu(context)
    kv_read = batch * kv_bytes_per_sequence(spec, per_gpu, dtype_bytes(serving.kv_cache_dtype), layout, tp)
    weights_read, touched = _decode_weight_bytes(spec, weight_bytes_per_gpu, batch)
    bytes_read = weights_read + kv_read
    flops = batch * (
        FLOPS_PER_MAC * count_params(spec).forward_matmul_params + attention_flops(spec, context, 1, layout)
    )
    memory_s = bytes_read / (gpu.memory_bandwidth_bytes_per_s * eff.decode_bandwidth)
    compute_s = flops / (peak_flops(gpu, serving.weight_format) * eff.decode_compute * tp)
    comm_s = _allreduce_s(
        batch * spec.hidden_size * dtype_bytes(serving.activation_dtype), gpu, tp, eff, spec.num_layers
    )
    step = max(memory_s, compute_s) + comm_s
    return DecodeEstimate(
        batch=batch,
        mean_context_tokens=context,
        bytes_read=bytes_read,
        flops=flops,
        memory_s=memory_s,
        compute_s=compute_s,
        communication_s=comm_s,
        tpot_s=step,
        tokens_per_s=batch / step,
        bound="memory" if memory_s >= compute_s else "compute",
        experts_touched_per_layer=touched,
    )


STEP_FORMULA_PREFILL = (
    "TTFT = Σ_layers (GEMMs + attention + norms + all-reduces) + lm_head + engine step, measured kernels"
)
STEP_FORMULA_DECODE = "TPOT = one decode iteration of B sequences: Σ_layers (GEMMs + paged attention + ...) + sampling"
STEP_SOURCE = "planner.serving.step_time: per-operator latencies of planner/calibration/kernels (aiconfigurator-core)"


def with_step_time(prefill: PrefillEstimate, decode: DecodeEstimate, ttft_s: float, tpot_s: float, method: str,
                   prompt_tokens: int) -> tuple[PrefillEstimate, DecodeEstimate]:  # fmt: skip
    """The roofline estimates with their times replaced by the measured-kernel step times (the roofline terms stay
    as the floor and the explanation)."""
    p = prefill.model_copy(
        update={
            "ttft_s": ttft_s,
            "tokens_per_s": prompt_tokens / ttft_s,
            "method": method,
            "formula": STEP_FORMULA_PREFILL,
            "source": STEP_SOURCE,
        }
    )
    d = decode.model_copy(
        update={
            "tpot_s": tpot_s,
            "tokens_per_s": decode.batch / tpot_s,
            "method": method,
            "formula": STEP_FORMULA_DECODE,
            "source": STEP_SOURCE,
        }
    )
    return p, d
