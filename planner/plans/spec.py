"""The deployment question: this model, this traffic, these latency targets and limits — what should I run?"""

from __future__ import annotations

from math import prod
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from planner._base import FrozenSpec
from planner.calibration.kernels import available_tables
from planner.model.precision import DType, WeightFormat
from planner.refs import CatalogId, ModelRef
from planner.serving.load import MIN_REQUEST_RATE, LengthSample
from planner.serving.spec import Engine

__all__ = ["PlanConstraints", "PlanRequest", "SLOSpec", "WorkloadSpec"]

SECONDS_PER_DAY = 86_400
MAX_FAMILIES = 5_000  # the default search is 1,440 (720 without MoE); each costs up to a few ms
Lengths = (
    Annotated[int, Field(ge=1, le=1 << 20)] | Annotated[tuple[LengthSample, ...], Field(min_length=1, max_length=256)]
)
Degrees = Annotated[tuple[Annotated[int, Field(ge=1, le=64)], ...], Field(min_length=1, max_length=16)]


def _mean(lengths: int | tuple[LengthSample, ...]) -> float:
    if isinstance(lengths, int):
        return float(lengths)
    total = sum(s.weight for s in lengths)
    return sum(s.tokens * s.weight for s in lengths) / total


def _longest(lengths: int | tuple[LengthSample, ...]) -> int:
    return lengths if isinstance(lengths, int) else max(s.tokens for s in lengths)


class WorkloadSpec(FrozenSpec):
    """The traffic to serve: lengths (fixed or a distribution) and how much of it."""

    input_tokens: Lengths = Field(description="Prompt tokens per request: a number or [{tokens, weight}, …].")
    output_tokens: Lengths = Field(description="Generated tokens per request: a number or [{tokens, weight}, …].")
    concurrency: Annotated[int, Field(ge=1, le=1 << 20)] | None = Field(
        default=None, description="Users with a request in flight at all times (closed loop), all replicas together."
    )
    request_rate: Annotated[float, Field(ge=MIN_REQUEST_RATE, le=1e6)] | None = Field(
        default=None, description="Requests per second arriving (Poisson), all replicas together."
    )
    tokens_per_day: Annotated[float, Field(gt=0, le=1e15)] | None = Field(
        default=None,
        description="Output tokens per day to serve. Alone it sets the request rate (tokens/day ÷ 86,400 ÷ mean "
        "output); with a concurrency it is a throughput floor.",
    )
    client_start: Literal["staggered", "burst"] = Field(
        default="staggered",
        description="Closed loop: clients spread over a request's lifetime (a service's steady state) or all at "
        "once (a benchmark's start, as `vllm bench serve --max-concurrency`).",
    )

    @model_validator(mode="after")
    def _some_traffic(self) -> WorkloadSpec:
        if self.concurrency is not None and self.request_rate is not None:
            raise ValueError("give a concurrency or a request_rate, not both")
        if self.concurrency is None and self.request_rate is None and self.tokens_per_day is None:
            raise ValueError("give a concurrency, a request_rate or tokens_per_day")
        return self

    @property
    def mean_input(self) -> float:
        return _mean(self.input_tokens)

    @property
    def mean_output(self) -> float:
        return _mean(self.output_tokens)

    def input_at(self, quantile: float) -> int:
        """The prompt length at a quantile of the input distribution (the fixed length when fixed)."""
        if isinstance(self.input_tokens, int):
            return self.input_tokens
        total = sum(s.weight for s in self.input_tokens)
        seen = 0.0
        for sample in sorted(self.input_tokens, key=lambda s: s.tokens):
            seen += sample.weight
            if seen >= quantile * total:
                return sample.tokens
        return max(s.tokens for s in self.input_tokens)

    def input_buckets(self, most: int = 4) -> tuple[tuple[int, float], ...]:
        """(prompt length, weight) of at most `most` representative lengths: the distinct lengths, or the weighted
        quantile midpoints of `most` equal-weight buckets when there are more."""
        if isinstance(self.input_tokens, int):
            return ((self.input_tokens, 1.0),)
        distinct = sorted({s.tokens for s in self.input_tokens})
        if len(distinct) <= most:
            weights = {t: sum(s.weight for s in self.input_tokens if s.tokens == t) for t in distinct}
            return tuple((t, weights[t]) for t in distinct)
        return tuple((self.input_at((i + 0.5) / most), 1.0) for i in range(most))

    @property
    def longest_request(self) -> int:
        """Tokens the largest request holds at its end (largest prompt + largest output)."""
        return _longest(self.input_tokens) + _longest(self.output_tokens)

    @property
    def rate(self) -> float | None:
        """Requests per second: given, or from tokens_per_day when no concurrency is given."""
        if self.request_rate is not None:
            return self.request_rate
        if self.concurrency is None and self.tokens_per_day is not None:
            return self.tokens_per_day / SECONDS_PER_DAY / self.mean_output
        return None

    @property
    def min_output_tokens_per_s(self) -> float:
        """The throughput floor tokens_per_day sets (0 without it)."""
        return (self.tokens_per_day or 0.0) / SECONDS_PER_DAY


class SLOSpec(FrozenSpec):
    """Latency targets at a percentile of the requests."""

    ttft_ms: Annotated[float, Field(gt=0, le=1e7)] | None = Field(default=None, description="Time to first token.")
    tpot_ms: Annotated[float, Field(gt=0, le=1e6)] | None = Field(default=None, description="Time per output token.")
    min_tokens_per_s_per_user: Annotated[float, Field(gt=0, le=1e6)] | None = Field(
        default=None, description="Output tokens per second each user sees: a TPOT of 1000 / this ms."
    )
    percentile: Literal["p50", "p90", "p99"] = Field(default="p90", description="Of the requests' TTFT and TPOT.")

    @model_validator(mode="after")
    def _some_target(self) -> SLOSpec:
        if self.ttft_ms is None and self.tpot_ms is None and self.min_tokens_per_s_per_user is None:
            raise ValueError("give ttft_ms, tpot_ms or min_tokens_per_s_per_user")
        return self

    @property
    def tpot_limit_ms(self) -> float | None:
        """The tighter of tpot_ms and 1000 / min_tokens_per_s_per_user."""
        limits = [] if self.tpot_ms is None else [self.tpot_ms]
        if self.min_tokens_per_s_per_user is not None:
            limits.append(1e3 / self.min_tokens_per_s_per_user)
        return min(limits) if limits else None


class PlanConstraints(FrozenSpec):
    """What the search may choose from."""

    gpus: Annotated[tuple[CatalogId, ...], Field(min_length=1, max_length=16)] | None = Field(
        default=None, description="GPU types allowed (catalog ids); null = every GPU with measured kernel tables."
    )
    gpus_per_node: Annotated[int, Field(ge=1, le=64)] = Field(
        default=8, description="A replica (TP × PP GPUs) stays within one node."
    )
    max_gpus: Annotated[int, Field(ge=1, le=4096)] = Field(default=64, description="GPUs of all replicas together.")
    engines: Annotated[tuple[Engine, ...], Field(min_length=1, max_length=3)] = (
        Engine.VLLM,
        Engine.SGLANG,
        Engine.TRTLLM,
    )
    weight_formats: Annotated[tuple[WeightFormat, ...], Field(min_length=1, max_length=12)] = (
        WeightFormat.BF16,
        WeightFormat.FP8,
    )
    kv_cache_dtypes: Annotated[tuple[DType, ...], Field(min_length=1, max_length=4)] = (DType.BF16, DType.FP8)
    tensor_parallel: Degrees = (1, 2, 4, 8)
    pipeline_parallel: Degrees = (1, 2, 4)
    expert_parallel: bool = Field(default=True, description="MoE models: also try EP = TP (experts split by count).")
    attention_data_parallel: bool = Field(
        default=True,
        description="MoE models on SGLang, vLLM and TensorRT-LLM (PP 1): also try data-parallel attention with one "
        "attention rank per GPU (DP = TP): each rank holds its own sequences and their KV, the experts span all GPUs.",
    )
    decode_context_parallel: bool = Field(
        default=True,
        description="vLLM (PP 1, no data-parallel attention): also try the decode context parallelism that removes "
        "every copy of the cache: DCP = TP for MLA models (each GPU holds every TP-th token of each latent cache), "
        "DCP = TP / KV heads for GQA/MQA models whose KV heads TP replicates (vLLM 0.11.1 and later).",
    )
    max_num_seqs: Annotated[tuple[Annotated[int, Field(ge=1, le=4096)], ...], Field(min_length=1, max_length=16)] = (
        8,
        16,
        32,
        64,
        128,
        256,
        512,
    )
    disaggregated: bool = Field(
        default=False, description="Also plan separate prefill and decode pools sized by rate matching."
    )

    @field_validator("engines")
    @classmethod
    def _pooled_engines(cls, engines: tuple[Engine, ...]) -> tuple[Engine, ...]:
        if bad := [e for e in engines if e not in (Engine.VLLM, Engine.SGLANG, Engine.TRTLLM)]:
            raise ValueError(f"plans size serving engines with a KV pool (vllm, sglang, trtllm), not {bad[0]}")
        return engines


class PlanRequest(FrozenSpec):
    """What to deploy: the cheapest configurations that meet the SLO, the frontier, and why the rest fail."""

    model: ModelRef
    workload: WorkloadSpec
    slo: SLOSpec
    constraints: PlanConstraints = PlanConstraints()
    prices: dict[CatalogId, Annotated[float, Field(gt=0, le=1e4)]] = Field(
        default_factory=dict,
        max_length=32,
        description="USD per GPU-hour by GPU id, overriding the public defaults (planner/catalog/prices.json).",
    )
    max_plans: Annotated[int, Field(ge=1, le=50)] = Field(default=5, description="Plans to return, cheapest first.")
    max_simulations: Annotated[int, Field(ge=1, le=200)] = Field(
        default=16, description="Load simulations to confirm candidates with (each 5-100 ms)."
    )

    @model_validator(mode="after")
    def _bounded(self) -> PlanRequest:
        c = self.constraints
        gpus = len(c.gpus) if c.gpus else len({gpu for gpu, _ in available_tables()})
        families = prod(
            (gpus, len(c.engines), len(c.weight_formats), len(c.kv_cache_dtypes), len(c.tensor_parallel),
             len(c.pipeline_parallel), 2 if c.expert_parallel else 1,
             1 + c.attention_data_parallel + c.decode_context_parallel)
        )  # fmt: skip
        if families > MAX_FAMILIES:
            raise ValueError(f"the constraints span {families:,} families; at most {MAX_FAMILIES:,} (narrow them)")
        return self
