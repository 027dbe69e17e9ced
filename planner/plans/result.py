"""The answer to a plan request: ranked plans, the frontier, and why every other family of candidates was rejected."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from planner._base import FrozenSpec
from planner.explain import MemoryBreakdown
from planner.plans.prices import GpuPrice
from planner.plans.spec import SLOSpec, WorkloadSpec
from planner.serving.inference import InferenceRequest
from planner.serving.load import LatencyPercentiles

__all__ = [
    "FrontierPoint",
    "Headroom",
    "Plan",
    "PlanResult",
    "PlanSummary",
    "Pool",
    "RejectedFamily",
    "Rejection",
]

Rejection = Literal[
    "does_not_fit",
    "kv_pool_too_small",
    "precision_not_measured",
    "not_divisible",
    "exceeds_max_gpus",
    "misses_ttft",
    "misses_tpot",
    "overloaded",
    "below_tokens_per_day",
    "simulated_misses_slo",
    "dominated",
    "dearer_than_plans",
]
REJECTION_TEXT: dict[str, str] = {
    "does_not_fit": "weights, activations and overhead exceed the engine's memory budget on one GPU",
    "kv_pool_too_small": "the KV pool left cannot hold the longest request",
    "precision_not_measured": "no measured kernels for this weight format on this GPU and engine",
    "not_divisible": "the parallel layout does not divide the model (heads, KV heads or layers)",
    "exceeds_max_gpus": "more GPUs than constraints.max_gpus allow",
    "misses_ttft": "predicted TTFT above the SLO",
    "misses_tpot": "predicted TPOT above the SLO",
    "overloaded": "the request rate exceeds what the replicas can serve (the queue grows without bound)",
    "below_tokens_per_day": "serves fewer output tokens per day than workload.tokens_per_day",
    "simulated_misses_slo": "met the SLO in the static bounds, missed it in the load simulation",
    "dominated": "meets the SLO, but the same family meets it with fewer replicas (cheaper)",
    "dearer_than_plans": "meets the SLO by the static model but costs more than the plans returned (not simulated)",
}


class Headroom(FrozenSpec):
    """How much slack a plan leaves: 1 − predicted / limit (0.25 = a quarter below the limit)."""

    ttft: float | None = Field(description="Of the TTFT SLO at its percentile (null without a TTFT target).")
    tpot: float | None = Field(description="Of the TPOT SLO at its percentile (null without a TPOT target).")
    kv_pool: float = Field(description="Of the KV pool: 1 − tokens the running requests hold / pool tokens.")


class Pool(FrozenSpec):
    """One group of identical replicas (the only pool of an aggregated plan; prefill or decode when disaggregated)."""

    role: Literal["aggregated", "prefill", "decode"]
    tensor_parallel: int
    pipeline_parallel: int
    expert_parallel: int
    attention_data_parallel: int = Field(
        default=1, description="Data-parallel attention ranks over the tensor_parallel GPUs (1 = none)."
    )
    decode_context_parallel: int = Field(
        default=1,
        description="GPUs striping each MLA latent cache, or the copies of GQA KV heads, by position (vLLM DCP; 1 = "
        "none).",
    )
    max_num_seqs: int
    replicas: int
    gpus_per_replica: int
    kv_pool_tokens: int = Field(
        description="Tokens one replica's KV pool holds (one attention rank's under data-parallel attention)."
    )
    memory: MemoryBreakdown = Field(description="Per-GPU memory of one replica (the fullest pipeline stage).")
    request: InferenceRequest = Field(
        description="The serving request for one replica, with the load it carries: POST it to "
        "/v1/estimates/inference to see the full estimate."
    )


class Plan(FrozenSpec):
    """A deployment that meets the SLO."""

    rank: int
    mode: Literal["aggregated", "disaggregated"]
    label: str = Field(description="e.g. 'h100-sxm vllm fp8/kv-fp8 TP2 PP1 EP1 × 3 replicas, max_num_seqs 64'.")
    gpu: str
    engine: str
    weight_format: str
    kv_cache_dtype: str
    pools: tuple[Pool, ...]
    num_gpus: int
    price: GpuPrice
    cost_per_hour_usd: float
    cost_per_million_output_tokens_usd: float
    output_tokens_per_s: float = Field(description="All replicas together, at the workload.")
    tokens_per_s_per_gpu: float
    tokens_per_s_per_user: float = Field(description="1000 / mean TPOT.")
    ttft: LatencyPercentiles
    tpot: LatencyPercentiles
    headroom: Headroom
    latency_method: str = Field(description="'simulated' (the engine's iteration loop) or 'static' (rate matching).")


class FrontierPoint(FrozenSpec):
    """One configuration at one batch: the two axes of the throughput-interactivity trade-off."""

    label: str
    gpu: str
    engine: str
    tensor_parallel: int
    pipeline_parallel: int
    expert_parallel: int
    attention_data_parallel: int = Field(
        default=1, description="Data-parallel attention ranks over the tensor_parallel GPUs (1 = none)."
    )
    decode_context_parallel: int = Field(
        default=1,
        description="GPUs striping each MLA latent cache, or the copies of GQA KV heads, by position (vLLM DCP; 1 = "
        "none).",
    )
    weight_format: str
    kv_cache_dtype: str
    concurrency_per_replica: int
    tokens_per_s_per_gpu: float
    tokens_per_s_per_user: float
    ttft_ms: float
    tpot_ms: float
    meets_slo: bool
    method: str = Field(description="'static' (steady-state closed loop) or 'simulated'.")


class RejectedFamily(FrozenSpec):
    """Every candidate of one family (GPU, engine, precisions, TP × PP × EP) failed: counts per reason, and the
    nearest miss."""

    family: str
    gpu: str
    engine: str
    weight_format: str
    kv_cache_dtype: str
    tensor_parallel: int
    pipeline_parallel: int
    expert_parallel: int
    attention_data_parallel: int = Field(
        default=1, description="Data-parallel attention ranks over the tensor_parallel GPUs (1 = none)."
    )
    decode_context_parallel: int = Field(
        default=1,
        description="GPUs striping each MLA latent cache, or the copies of GQA KV heads, by position (vLLM DCP; 1 = "
        "none).",
    )
    candidates: int
    reason: Rejection = Field(
        description="Why the family has no plan: dearer_than_plans when some candidate met the SLO (the plans "
        "returned are cheaper), else its most frequent failure besides `dominated`."
    )
    reasons: dict[str, int] = Field(description="Candidates per rejection reason (see PlanSummary.reason_text).")
    closest: str = Field(description="The nearest miss, with its numbers.")


class PlanSummary(FrozenSpec):
    """How the search went."""

    candidates: int = Field(description="GPU × engine × precisions × TP × PP × EP × max_num_seqs × replicas.")
    families: int
    pruned_by_memory: int = Field(description="Candidates rejected before any latency was computed.")
    screened_by_static_bounds: int
    simulated: int = Field(description="Load simulations run.")
    plans: int
    reasons: dict[str, int] = Field(description="All rejected candidates per reason.")
    reason_text: dict[str, str] = REJECTION_TEXT


class PlanResult(FrozenSpec):
    """Plans that meet the SLO, cheapest per million output tokens first; an impossible request has none, and the
    rejections say why."""

    model: str
    workload: WorkloadSpec
    slo: SLOSpec
    plans: tuple[Plan, ...]
    frontier: tuple[FrontierPoint, ...] = Field(
        description="Pareto frontier of tokens/s per GPU against tokens/s per user over the configurations that fit."
    )
    rejected: tuple[RejectedFamily, ...]
    summary: PlanSummary
    prices: tuple[GpuPrice, ...]
    warnings: tuple[str, ...] = ()
