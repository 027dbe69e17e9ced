"""Latency under load: TTFT and TPOT percentiles at a concurrency or request rate, from the engine's iteration loop.

The step time of every iteration comes from measured kernels (planner.serving.step_time); the loop is the engine's
scheduler (planner.serving.scheduler) with its limits: the token budget, max_num_seqs and the KV pool sized as the
engine sizes it (planner.serving.engine_memory). The figures are those a serving benchmark reports
(`vllm bench serve --max-concurrency`, genai-perf, aiperf): per request TTFT = first token − send, TPOT =
(last token − first token) / (output − 1), then percentiles over the requests.
"""

from __future__ import annotations

import operator
import random
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from planner._base import FrozenSpec
from planner.calibration.kernels import load_kernel_tables
from planner.calibration.status import LatencyValidation, latency_validation
from planner.catalog import load_catalog
from planner.errors import FieldProblem, SpecError, UnknownIdError
from planner.model.spec import ModelSpec
from planner.serving.engine_memory import MIB, driver_memory_bytes
from planner.serving.engines import EngineDefaults, captured_sizes, engine_defaults, profile_overlap
from planner.serving.scheduler import (
    Admission,
    EngineLimits,
    SchedulerPolicy,
    SimulationTooLarge,
    StepTimer,
    Workload,
    simulate,
)
from planner.serving.spec import ServingSpec
from planner.serving.step_time import ServingShape, StepModel, build_step_model, kernel_format

__all__ = ["MIN_REQUEST_RATE", "LatencyPercentiles", "LoadEstimate", "LoadSpec", "estimate_load", "step_model_for"]

Count = Annotated[int, Field(ge=1, le=1 << 16)]
# below one request a day a Poisson arrival time overflows to inf (5e-324 requests/s did: found by schemathesis)
MIN_REQUEST_RATE = 1e-5


class LengthSample(FrozenSpec):
    """One length of a distribution and its weight."""

    tokens: Annotated[int, Field(ge=1, le=1 << 20)]
    weight: Annotated[float, Field(gt=0, le=1e9)] = 1.0


class LoadSpec(FrozenSpec):
    """The traffic: closed-loop clients (concurrency) or Poisson arrivals (request_rate), and the lengths."""

    concurrency: Annotated[int, Field(ge=1, le=4096)] | None = Field(
        default=None,
        description="Clients that each send their next request when the last one finished "
        "(vllm bench serve --max-concurrency).",
    )
    request_rate: Annotated[float, Field(ge=MIN_REQUEST_RATE, le=1e5)] | None = Field(
        default=None, description="Requests per second, Poisson arrivals (vllm bench serve --request-rate)."
    )
    num_requests: Count | None = Field(
        default=None,
        description="Requests sent; null = 8 per client (concurrency), as a benchmark of `--num-prompts` 8 × "
        "concurrency sends them, or 512 (request rate).",
    )
    warmup_requests: Annotated[int, Field(ge=0, le=1 << 16)] = Field(
        default=0, description="Requests excluded from the percentiles (a benchmark's warm-up); 0 = all count."
    )
    input_lengths: tuple[LengthSample, ...] | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Prompt lengths to sample from; null = serving.prompt_tokens.",
    )
    output_lengths: tuple[LengthSample, ...] | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Output lengths to sample from; null = serving.output_tokens.",
    )
    client_start: Literal["burst", "staggered"] = Field(
        default="burst",
        description="Closed loop: every client sends its first request at once, as `vllm bench serve "
        "--max-concurrency`, genai-perf and aiperf start ('burst'), or clients spread over one request lifetime "
        "('staggered', the steady state of a very long run). On the 1,483 H100/H200 runs of "
        "benchmarks/validate_serving.py, 'burst' with 8 requests per client gives TTFT median error 34 % against "
        "77 % staggered (TPOT 11.8 % and 11.7 %).",
    )
    seed: Annotated[int, Field(ge=0, le=2**31)] = 0

    @model_validator(mode="after")
    def _one_traffic(self) -> LoadSpec:
        if (self.concurrency is None) == (self.request_rate is None):
            raise ValueError("give exactly one of concurrency and request_rate")
        return self


class LatencyPercentiles(FrozenSpec):
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float


class LoadEstimate(FrozenSpec):
    """TTFT, TPOT and end-to-end latency percentiles under the load, and what the engine loop did."""

    ttft: LatencyPercentiles
    tpot: LatencyPercentiles
    e2e: LatencyPercentiles
    output_tokens_per_s: float = Field(description="Generated tokens per second of the replica.")
    requests_per_s: float
    requests_measured: int
    mean_decode_batch: float = Field(
        description="Average sequences per decode iteration (of one attention rank under data-parallel attention)."
    )
    iterations: int
    preemptions: int
    kv_pool_tokens: int
    kernel_tables: str = Field(description="The kernel tables the step times come from (GPU, engine, version).")
    scheduling: str = Field(
        default="",
        description="The engine loop simulated: its policy, limits, overlap scheduling and batch waiting "
        "(planner.serving.scheduler module doc).",
    )
    validation: LatencyValidation
    formula: str = "TTFT = first token − send; TPOT = (last − first token) / (output − 1); iteration loop simulated"
    source: str = (
        "step time from measured kernels (planner.serving.step_time); engine schedulers after vllm/v1/core/sched/"
        "scheduler.py, sglang/srt/managers/scheduler.py, tensorrt_llm/_torch/pyexecutor/scheduler.py"
    )


def step_model_for(spec: ModelSpec, serving: ServingSpec, gpu_id: str, moe_ep: int = 1) -> StepModel:
    """The StepModel of this configuration on the GPU's measured kernel tables for the engine."""
    engine = serving.engine.value if serving.pooled else "vllm"
    tables = load_kernel_tables(gpu_id, engine, engine_terms=serving.pooled)  # transformers: vLLM's kernels only
    if tables is None:
        raise SpecError(
            [
                FieldProblem(
                    ("gpu",),
                    f"no measured kernel tables for {gpu_id} with {engine}; latency under load "
                    "needs them (planner/calibration/kernels)",
                )
            ]
        )
    moe_tp = max(1, serving.tensor_parallel // moe_ep)
    shape = ServingShape(
        spec=spec,
        tp=serving.tensor_parallel,
        moe_tp=moe_tp,
        moe_ep=moe_ep,
        weight_fmt=kernel_format(serving.weight_format.value),
        expert_fmt=kernel_format(serving.resolved_expert_format.value),
        kv_dtype="fp8" if serving.kv_cache_dtype.value == "fp8" else "bf16",
        fixed_s=tables.step_overhead_s,
        per_seq_s=tables.step_per_sequence_s,
        # with overlap scheduling the host prepares iteration n + 1 while the GPU runs n (planner.serving.step_time)
        host_overlap=serving.pooled and _overlapping(*profile_overlap(serving.engine_profile), serving),
        attention_dp=serving.attention_data_parallel,
        qk_norm_kernels=int(qk.value) if (qk := serving.engine_profile.qk_norm_kernels) else 0,
        decode_context_parallel=serving.decode_context_parallel,
        **_graphs(serving, gpu_id, tables.eager_dense_layer_s, tables.eager_moe_layer_s),
    )
    return build_step_model(shape, tables)


def _graphs(serving: ServingSpec, gpu_id: str, dense_s: float, moe_s: float) -> dict[str, Any]:
    """Which iterations replay CUDA graphs (planner.serving.step_time StepModel.graphed) and the host time per layer
    of those that do not. Without the engine term, or for a GPU outside the catalog, no iteration is timed eagerly."""
    profile = serving.engine_profile
    if not (dense_s or moe_s) or not serving.pooled:
        return {}
    eager = {"eager_dense_s": dense_s, "eager_moe_s": moe_s}
    if serving.enforce_eager:
        return eager
    try:
        gpu = load_catalog().gpu(gpu_id)
    except UnknownIdError:
        return {}
    smi = gpu.smi_memory_mib or gpu.memory_bytes // MIB
    defaults = engine_defaults(profile, driver_memory_bytes(gpu), smi, gpu.name, serving.tensor_parallel)
    sizes = captured_sizes(
        profile, defaults, serving.max_num_seqs, serving.max_num_batched_tokens, serving.cuda_graph_max_batch_size
    )
    limit = max(sizes, default=0)
    prefill = bool(profile.cudagraph_prefill and profile.cudagraph_prefill.value)
    return {"graph_tokens": limit, "graph_prefill": prefill, **eager}


def _rank_load(load: LoadSpec, dp: int) -> LoadSpec:
    """The share of the traffic one of `dp` data-parallel attention ranks serves: ⌈clients / dp⌉ closed-loop clients
    (or rate / dp), ⌈requests / dp⌉ and ⌈warm-up / dp⌉. The ranks are symmetric under fixed or sampled lengths, so the
    busiest one is simulated and its steps (which time the experts over every rank's tokens) pace them all.
    Source: the engines give each attention rank its own scheduler and KV pool (SGLang data_parallel_controller.py
      round-robin dispatch to the DP schedulers; vLLM one EngineCore per DP rank; TensorRT-LLM one executor per rank
      under enable_attention_dp) and run the MoE layers in lockstep."""

    def share(n: int | None) -> int | None:
        return None if n is None else -(-n // dp)

    return load.model_copy(
        update={
            "concurrency": share(load.concurrency),
            "request_rate": None if load.request_rate is None else load.request_rate / dp,
            "num_requests": share(load.num_requests),
            "warmup_requests": share(load.warmup_requests) or 0,
        }
    )


def rank_limit(serving: ServingSpec, value: int) -> int:
    """A batch limit as one data-parallel attention rank applies it. SGLang takes --chunked-prefill-size and
    --max-running-requests for the whole server and divides them by dp_size under --enable-dp-attention
    (server_args.py _handle_data_parallelism: chunked_prefill_size // dp_size; the scheduler's
    max_running_requests // dp_size); vLLM (per EngineCore) and TensorRT-LLM (per rank) apply theirs per rank."""
    dp = serving.attention_data_parallel
    if dp == 1 or serving.engine.value != "sglang":
        return value
    return max(1, value // dp)


def _lengths(samples: tuple[LengthSample, ...] | None, fixed: int, n: int, rng: random.Random) -> tuple[int, ...]:
    if not samples:
        return (fixed,) * n
    lengths = [s.tokens for s in samples]
    weights = [s.weight for s in samples]
    return tuple(rng.choices(lengths, weights=weights, k=n))


def _percentiles(values: Sequence[float]) -> LatencyPercentiles:
    ordered = sorted(values)
    n = len(ordered)

    def pct(q: float) -> float:
        # linear interpolation between closest ranks, as numpy.percentile's default
        pos = q * (n - 1)
        lo = int(pos)
        hi = min(lo + 1, n - 1)
        return (ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)) * 1e3

    return LatencyPercentiles(mean_ms=sum(ordered) / n * 1e3, p50_ms=pct(0.5), p90_ms=pct(0.9), p99_ms=pct(0.99))


def _lifetime_s(model: StepTimer, prompt: int, output: int, concurrency: int) -> float:
    """The period of a closed loop: one request's prefill alone plus its decode steps at full concurrency, and the
    other c − 1 requests' prefills, each stalling those decode steps once (TPOT = t(c) + (c − 1)·stall/O,
    planner.plans.static.closed_loop_at). Without the stalls the staggered clients start too close together and stay
    bunched, as a closed loop keeps its phases."""
    ctx = prompt + output / 2
    prefill = model.step(0, 0.0, [(prompt, 0)]).total_s
    others = concurrency - 1
    stall = model.step(others, ctx, [(prompt, 0)]).total_s - model.step(others, ctx).total_s if others else 0.0
    return prefill + output * model.step(concurrency, ctx).total_s + others * stall


# The simulation's cost grows with the tokens it moves: 2^30 tokens is about 5 s on one core (32,768 requests of
# 32K tokens at concurrency 4,096), the bound that keeps every answer from hanging the service.
MAX_SIMULATED_TOKENS = 1 << 30


def overlap_scheduling(defaults: EngineDefaults, serving: ServingSpec) -> bool:
    """Whether the engine schedules iteration n + 1 while iteration n runs (its profile's default, off under the
    parallelism the profile names: pipeline parallel for vLLM and SGLang, SGLang 0.4.0-0.4.5's DP attention)."""
    return _overlapping(defaults.overlap_scheduling, defaults.overlap_off_with, serving)


def _overlapping(on: bool, off_with: tuple[str, ...], serving: ServingSpec) -> bool:
    off = {
        "pipeline_parallel": serving.pipeline_parallel > 1,
        "attention_data_parallel": serving.attention_data_parallel > 1,
    }
    return on and not any(off[name] for name in off_with)


def batch_waiting(serving: ServingSpec, token_budget: int) -> dict[str, Any]:
    """TensorRT-LLM's batch waiting as the loop's limits (planner.serving.scheduler module doc): off with
    attention DP, as in py_executor.py `_schedule`."""
    if serving.attention_data_parallel > 1:
        return {}
    ratio = serving.batch_wait_max_tokens_ratio or 0.0
    return {"batch_wait_iters": serving.batch_wait_timeout_iters or 0, "batch_wait_tokens": ratio * token_budget}


def describe_limits(limits: EngineLimits) -> str:
    """The loop's policy and limits in words, for the answer."""
    parts = [
        f"{limits.policy.value}, token budget {limits.token_budget:,}, at most {limits.max_num_seqs:,} sequences, "
        f"KV pool {limits.kv_capacity_tokens:,} tokens ({limits.admission.value})",
        "overlap scheduling: a request reaching a busy engine during iteration n runs in n + 2"
        if limits.overlap_scheduling
        else "no overlap scheduling: a request reaching a busy engine during iteration n runs in n + 1",
    ]
    if limits.batch_wait_iters > 0 and limits.batch_wait_tokens > 0:
        parts.append(
            f"batch waiting: prompts wait while requests decode, up to {limits.batch_wait_iters} iterations or "
            f"until the batch holds {limits.batch_wait_tokens:,.0f} tokens"
        )
    if limits.recv_interval > 1:
        parts.append(
            f"receive interval {limits.recv_interval}: while only decodes run, requests that reach the engine are "
            f"read every {limits.recv_interval} iterations"
        )
    return "; ".join(parts)


def _load_problem(message: str) -> SpecError:
    return SpecError([FieldProblem(("load",), message)])


def estimate_load(
    model: StepTimer,
    serving: ServingSpec,
    defaults: EngineDefaults,
    kv_pool_tokens: int,
    load: LoadSpec,
    gpu_id: str,
) -> LoadEstimate:
    """Simulate the load on one replica and summarize it (percentiles over the measured requests). With
    data-parallel attention, one rank's share of the load on its own limits and KV pool (`_rank_load`), and the
    replica's throughput is the ranks' sum."""
    dp = serving.attention_data_parallel
    if dp > 1:
        load = _rank_load(load, dp)
    rng = random.Random(load.seed)
    closed = load.concurrency is not None
    n = load.num_requests or (8 * (load.concurrency or 1) if closed else 512)
    prompts = _lengths(load.input_lengths, serving.prompt_tokens, n, rng)
    outputs = _lengths(load.output_lengths, serving.output_tokens, n, rng)
    sent = sum(prompts) + sum(outputs)
    if sent > MAX_SIMULATED_TOKENS:
        raise _load_problem(
            f"the load sends {sent:,} tokens ({n:,} requests); one answer simulates at most "
            f"{MAX_SIMULATED_TOKENS:,} (2^30): send fewer requests (load.num_requests) or shorter ones"
        )
    arrivals = None
    if not closed:
        rate, t, times = load.request_rate or 1.0, 0.0, []
        for _ in range(n):
            t += rng.expovariate(rate)
            times.append(t)
        arrivals = tuple(times)
    policy = SchedulerPolicy(defaults.scheduler) if defaults.scheduler != "static" else SchedulerPolicy.MIXED_WHOLE
    token_budget = rank_limit(serving, serving.max_num_batched_tokens or defaults.token_budget)
    limits = EngineLimits(
        policy=policy,
        token_budget=token_budget,
        max_num_seqs=rank_limit(serving, serving.max_num_seqs or defaults.max_num_seqs),
        kv_capacity_tokens=kv_pool_tokens,
        block_size=serving.resolved_block_size * serving.decode_context_parallel,  # vLLM's block under DCP
        admission=Admission(defaults.admission),
        overlap_scheduling=overlap_scheduling(defaults, serving),
        **batch_waiting(serving, token_budget),
        recv_interval=serving.scheduler_recv_interval or 1,
    )
    starts = None
    if closed and load.client_start == "staggered":
        c = load.concurrency or 1
        life = _lifetime_s(model, serving.prompt_tokens, serving.output_tokens, c)
        starts = tuple(i * life / c for i in range(c))
    longest = max(map(operator.add, prompts, outputs))  # the longest request (prompts and outputs pair up)
    if longest > kv_pool_tokens:
        raise _load_problem(
            f"a request of {longest} tokens does not fit in the KV pool of {kv_pool_tokens} "
            "tokens this configuration leaves (see engine.kv_pool_tokens)"
        )
    try:
        result = simulate(model, limits, Workload(prompts, outputs, load.concurrency, arrivals, starts))
    except SimulationTooLarge as exc:
        raise _load_problem(
            f"this load is too large to simulate: {exc} (an open loop whose rate the replica cannot drain, or a KV "
            "pool that preempts at every block); send fewer requests (load.num_requests), a lower rate or a "
            "concurrency"
        ) from exc
    kept = list(result.timings[load.warmup_requests :]) or list(result.timings)
    ttfts, tpots, e2es = zip(*kept, strict=True)  # the three columns, in request order
    produced = sum(outputs)
    tables = model.tables
    return LoadEstimate(
        ttft=_percentiles(ttfts),
        tpot=_percentiles([t for t in tpots if t > 0] or [0.0]),
        e2e=_percentiles(e2es),
        output_tokens_per_s=dp * produced / result.makespan_s if result.makespan_s else 0.0,
        requests_per_s=dp * n / result.makespan_s if result.makespan_s else 0.0,
        requests_measured=len(kept),
        mean_decode_batch=result.mean_decode_batch,
        iterations=result.iterations,
        preemptions=result.preemptions,
        kv_pool_tokens=kv_pool_tokens,
        kernel_tables=f"{tables.gpu}/{tables.engine} {tables.engine_version} ({tables.device})",
        scheduling=describe_limits(limits),
        validation=latency_validation(gpu_id, serving.engine.value),
    )
