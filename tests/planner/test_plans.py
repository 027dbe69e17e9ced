"""Plans: worked examples with the arithmetic written out, pruning by memory, rejections, the frontier, prices."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from planner import ServingSpec, SpecError, estimate_inference, load_catalog
from planner.calibration.kernels import KernelTables, load_kernel_tables
from planner.plans.disagg import kv_transfer_s
from planner.plans.frontier import dominates
from planner.plans.search import plan_serving
from planner.plans.spec import PlanRequest
from planner.plans.static import (
    LITTLE_ITERATIONS,
    OVERLOAD_UTILIZATION,
    BatchCore,
    batch_core,
    closed_loop_at,
    mixed_prefill_s,
    open_loop,
    prefill_alone_s,
    prefill_stall_s,
)
from planner.serving.pipeline import replica_step_model
from planner.serving.step_time import StepCost

CATALOG = load_catalog()
GIB = 1 << 30
ONE_FAMILY = {
    "gpus": ["h100-sxm"],
    "engines": ["vllm"],
    "weight_formats": ["bf16"],
    "kv_cache_dtypes": ["bf16"],
    "tensor_parallel": [1],
    "pipeline_parallel": [1],
    "max_num_seqs": [64],
    "max_gpus": 8,
}


def _plan(**body: Any) -> Any:
    return plan_serving(PlanRequest.model_validate(body), CATALOG)


@dataclass
class LinearTimer:
    """A stub replica: 10 ms per iteration + 0.1 ms per decoding sequence + 0.02 ms per prompt token."""

    @property
    def tables(self) -> KernelTables:
        tables = load_kernel_tables("h100-sxm", "vllm")
        assert tables is not None
        return tables

    def step(self, decode_seqs: int, decode_context: float, prefill: Sequence[tuple[int, int]] = ()) -> StepCost:
        total = 0.010 + 0.0001 * decode_seqs + 0.00002 * sum(q for q, _ in prefill)
        return StepCost(total, total, 0.0, 0.0)


def test_static_closed_loop_worked_example() -> None:
    # 32 clients, prompts of 1000 tokens (one chunk under the 8192 budget), 100 output tokens, room for 64:
    #   t(32) = 10 + 3.2 = 13.2 ms; a prompt among 31 decodes: 10 + 3.1 + 20 = 33.1 ms, so it stalls them 20 ms;
    #   TPOT = 13.2 + 31·20/100 = 19.4 ms; one cycle = 33.1 + q + 99·19.4 = 1953.7 ms + q, prompts arrive at
    #   λ = 32 / cycle ≈ 16.3 /s and take 20 ms of the GPU each: ρ = 0.327, M/D/1 wait q = ρ·20/(2(1 − ρ)) = 4.86 ms;
    #   TTFT = 33.1 + 4.86 = 37.96 ms; throughput = 32·100 / (1953.7 + 4.86 ms) = 1634 tokens/s.
    core = batch_core(LinearTimer(), 32, 1000, 100, 8192)
    assert (core.step_s, core.stall_s, core.own_prefill_s) == pytest.approx((0.0132, 0.020, 0.0331))
    st = closed_loop_at(core, 32, 100)
    assert st.tpot_s == pytest.approx(0.0194)
    assert st.queue_s == pytest.approx(0.00486, abs=2e-5)
    assert st.ttft_s == pytest.approx(0.03796, abs=2e-5)
    assert st.output_tokens_per_s == pytest.approx(1634, abs=1)
    # 96 clients on 64 slots: t(64) = 16.4 ms, TPOT = 16.4 + 63·20/100 = 29.0 ms, own prefill 10 + 6.3 + 20 = 36.3 ms;
    # the 32 beyond the slots wait (96 − 64)/64 = half a cycle for one: TTFT = 36.3 + q + (36.3 + q + 99·29.0)/2
    full = closed_loop_at(batch_core(LinearTimer(), 64, 1000, 100, 8192), 96, 100)
    assert full.tpot_s == pytest.approx(0.029)
    q = full.queue_s
    assert full.ttft_s == pytest.approx(0.0363 + q + (0.0363 + q + 99 * 0.029) / 2)


def test_static_open_loop_worked_example() -> None:
    # 5 requests/s of 1000 + 100 tokens: each prompt stalls the decodes 20 ms, ρ = 5·0.02 = 0.1; TPOT = t(B)/(1 − ρ)
    # with B from Little's law: B = 5·(TTFT + 100·TPOT) ≈ 5·(0.05 + 100·0.0117) ≈ 6.1, t(6) = 10.6 ms, TPOT = 11.8 ms
    timer = LinearTimer()
    st = open_loop(lambda b: batch_core(timer, b, 1000, 100, 8192), 5.0, 64, 100)
    assert st.running == pytest.approx(6.2, abs=0.2)
    assert st.tpot_s == pytest.approx((0.010 + 0.0001 * 6) / 0.9, rel=0.02)
    assert not st.overloaded
    # at 50 requests/s the prompts alone need 50·20 ms = the whole GPU: overloaded
    assert open_loop(lambda b: batch_core(timer, b, 1000, 100, 8192), 50.0, 64, 100).overloaded


def test_a_batch_core_is_its_stall_and_its_own_prefill_exactly() -> None:
    # the core times its prompt's chunk steps once for both: bit for bit prefill_stall_s and mixed_prefill_s at B − 1
    # decodes, on measured timers (TP4 and a PP2 pipeline), for one chunk and for three (20,000 tokens, budget 8,192)
    spec = CATALOG.model("llama-3-70b").spec
    timers = [
        replica_step_model(spec, ServingSpec(tensor_parallel=4, pipeline_parallel=pp), "h100-sxm") for pp in (1, 2)
    ]
    for timer, (batch, prompt) in itertools.product(
        timers, [(1, 1000), (2, 1000), (37, 4096), (200, 20_000), (1, 20_000)]
    ):
        ctx = prompt + 128 / 2
        core = batch_core(timer, batch, prompt, 128, 8192)
        assert core.step_s == timer.step(batch, ctx).total_s
        assert core.stall_s == prefill_stall_s(timer, prompt, 8192, batch - 1, ctx)
        assert core.own_prefill_s == mixed_prefill_s(timer, prompt, 8192, batch - 1, ctx)
        alone = prefill_alone_s(timer, prompt, 8192)
        assert batch_core(timer, batch, prompt, 128, 8192, prefill_first=True) == BatchCore(
            batch, core.step_s, alone, alone
        )


def _open_loop_every_iteration(core_at: Any, rate: float, slots: int, output: int) -> tuple[float, ...]:
    """open_loop's fixed-point loop run all LITTLE_ITERATIONS times, never stopping early (the oracle of its stop)."""
    b, own, tpot, queue, stall = 1.0, 0.0, 0.0, 0.0, 0.0
    for _ in range(LITTLE_ITERATIONS):
        core = core_at(max(1, min(slots, round(b))))
        stall, rho = core.stall_s, rate * core.stall_s
        if rho >= OVERLOAD_UTILIZATION:
            return (float("inf"),)
        tpot, queue = core.step_s / (1 - rho), rho * stall / (2 * (1 - rho))
        own = core.step_s / 2 + core.own_prefill_s + queue
        b = rate * (own + output * tpot)
    return own, tpot, b, queue


def test_open_loop_stops_at_its_fixed_point_with_the_values_of_every_iteration() -> None:
    # once an iteration lands on the batch of the one before, every later one repeats it: stopping there answers the
    # same numbers, bit for bit, as running all LITTLE_ITERATIONS (rates from idle to overloaded, slots that clip)
    timer = LinearTimer()
    asked: list[int] = []

    def core_at(b: int) -> Any:
        asked.append(b)
        return batch_core(timer, b, 1000, 100, 8192)

    stopped = []
    for rate in (0.5, 5.0, 12.0, 25.0, 40.0, 50.0):
        for slots in (4, 16, 64):
            full = _open_loop_every_iteration(core_at, rate, slots, 100)
            asked.clear()
            st = open_loop(core_at, rate, slots, 100)
            got = (float("inf"),) if st.ttft_s == float("inf") else (st.ttft_s, st.tpot_s, st.running, st.queue_s)
            assert got == full, (rate, slots)
            if len(full) > 1:
                stopped.append(len(asked))
    assert max(stopped) <= LITTLE_ITERATIONS and min(stopped) < LITTLE_ITERATIONS  # some converged and stopped


def test_one_family_plan_worked_example() -> None:
    # Llama-3.1-8B, 64 users of 2048 + 256 tokens, TTFT ≤ 500 ms and TPOT ≤ 30 ms at p90, vLLM bf16 on H100s only:
    # one family (TP1 PP1, max_num_seqs 64) × 1…8 replicas = 8 candidates; the static model passes one replica
    # (TPOT ≈ 19 ms at 64), the simulation confirms it and the other 7 replica counts are dominated.
    r = _plan(
        model="llama-3.1-8b",
        workload={"input_tokens": 2048, "output_tokens": 256, "concurrency": 64},
        slo={"ttft_ms": 500, "tpot_ms": 30},
        constraints=ONE_FAMILY,
    )
    assert (r.summary.candidates, r.summary.families, r.summary.simulated) == (8, 1, 1)
    assert r.summary.reasons == {"dominated": 7}
    (plan,) = r.plans
    assert (plan.num_gpus, plan.pools[0].replicas, plan.pools[0].max_num_seqs) == (1, 1, 64)
    # steady-state throughput by Little's law over one cycle: 64·256 / (TTFT + 255·TPOT), means of the simulation
    cycle_s = (plan.ttft.mean_ms + 255 * plan.tpot.mean_ms) / 1e3
    assert plan.output_tokens_per_s == pytest.approx(64 * 256 / cycle_s)
    # cost per million output tokens: 1 GPU × $3.99/h / (tokens/s × 3600 s) × 10⁶ (Lambda's 8x H100 on-demand)
    assert plan.price.usd_per_gpu_hour == 3.99
    assert plan.cost_per_million_output_tokens_usd == pytest.approx(3.99 / (plan.output_tokens_per_s * 3600) * 1e6)
    assert plan.cost_per_hour_usd == 3.99
    # headroom at p90 against the SLO
    assert plan.headroom.ttft == pytest.approx(1 - plan.ttft.p90_ms / 500)
    assert plan.headroom.tpot == pytest.approx(1 - plan.tpot.p90_ms / 30)
    # the replica's request reproduces the plan's latency and memory through /v1/estimates/inference
    e = estimate_inference(plan.pools[0].request, CATALOG)
    assert e.load is not None and e.load.ttft == plan.ttft and e.load.tpot == plan.tpot
    assert e.memory == plan.pools[0].memory
    assert e.engine.kv_pool_tokens == plan.pools[0].kv_pool_tokens


def test_memory_prunes_whole_families_first() -> None:
    # Llama-3-70B bf16: 70.55e9 params × 2 B = 131.4 GiB of weights: on one H100 (vLLM budget 0.92 × 79.19 GiB =
    # 72.9 GiB) TP1 cannot fit, so all its 1 × 8 candidates are rejected before any step time is computed.
    r = _plan(
        model="llama-3-70b",
        workload={"input_tokens": 1024, "output_tokens": 256, "concurrency": 16},
        slo={"tpot_ms": 100},
        constraints={**ONE_FAMILY, "tensor_parallel": [1, 4]},
    )
    tp1 = next(f for f in r.rejected if f.tensor_parallel == 1)
    assert tp1.reasons == {"does_not_fit": 8} and tp1.reason == "does_not_fit"
    assert "(131.4 GiB)" in tp1.closest and "budget is 72.9 GiB" in tp1.closest
    assert r.summary.pruned_by_memory == 8
    assert r.plans and r.plans[0].pools[0].tensor_parallel == 4


def test_an_impossible_request_has_no_plans_and_says_why() -> None:
    r = _plan(
        model="llama-3.1-405b",
        workload={"input_tokens": 2048, "output_tokens": 256, "concurrency": 32},
        slo={"ttft_ms": 500, "tpot_ms": 20},
        constraints={"gpus": ["l40s"], "engines": ["vllm"]},
    )
    assert r.plans == ()
    assert r.warnings and "no configuration meets the SLO" in r.warnings[-1]
    assert len(r.rejected) == r.summary.families
    assert {reason for f in r.rejected for reason in f.reasons} <= {"does_not_fit", "not_divisible"}
    assert sum(r.summary.reasons.values()) == r.summary.candidates


def test_every_candidate_is_accounted_for_and_the_frontier_is_pareto() -> None:
    r = _plan(
        model="qwen3-32b",
        workload={
            "input_tokens": [{"tokens": 512, "weight": 3}, {"tokens": 4096}],
            "output_tokens": 512,
            "request_rate": 4.0,
        },
        slo={"ttft_ms": 2000, "min_tokens_per_s_per_user": 25, "percentile": "p99"},
        constraints={"gpus": ["h100-sxm", "h200"], "engines": ["vllm"], "pipeline_parallel": [1, 2]},
    )
    aggregated = sum(1 for p in r.plans if p.mode == "aggregated")
    assert sum(r.summary.reasons.values()) + aggregated == r.summary.candidates
    assert r.plans, r.rejected[:3]
    for family in r.rejected:  # a family that met the SLO somewhere lost on price, whatever else its candidates did
        assert (family.reason == "dearer_than_plans") == ("dearer_than_plans" in family.reasons), family
        assert family.reason in family.reasons
    costs = [p.cost_per_million_output_tokens_usd for p in r.plans]
    assert costs == sorted(costs)
    for plan in r.plans:
        assert plan.tpot.p99_ms <= 1e3 / 25 and plan.ttft.p99_ms <= 2000
        assert plan.output_tokens_per_s == pytest.approx(4.0 * 512)  # the rate × the mean output
    front = r.frontier
    assert front
    assert not any(dominates(a, b) for a in front for b in front)
    users = [p.tokens_per_s_per_user for p in front]
    assert users == sorted(users)


def test_prices_can_be_overridden_and_must_exist() -> None:
    body = {
        "model": "llama-3.1-8b",
        "workload": {"input_tokens": 1024, "output_tokens": 128, "concurrency": 16},
        "slo": {"tpot_ms": 50},
        "constraints": {**ONE_FAMILY, "gpus": ["h100-sxm"]},
    }
    base = plan_serving(PlanRequest.model_validate(body), CATALOG).plans[0]
    cheap = plan_serving(PlanRequest.model_validate({**body, "prices": {"h100-sxm": 1.995}}), CATALOG).plans[0]
    assert cheap.cost_per_million_output_tokens_usd == pytest.approx(base.cost_per_million_output_tokens_usd / 2)
    assert cheap.price.via == "request"
    with pytest.raises(SpecError, match="no public price for 'h100-pcie'") as info:
        plan_serving(
            PlanRequest.model_validate({**body, "constraints": {**ONE_FAMILY, "gpus": ["h100-pcie"]}}), CATALOG
        )
    assert info.value.problems[0].loc == ("prices", "h100-pcie")


def test_disaggregated_pools_are_rate_matched() -> None:
    r = _plan(
        model="llama-3.1-8b",
        workload={"input_tokens": 4096, "output_tokens": 256, "request_rate": 8.0},
        slo={"ttft_ms": 800, "tpot_ms": 25},
        constraints={**ONE_FAMILY, "tensor_parallel": [1, 2], "max_num_seqs": [64, 256], "disaggregated": True},
        max_plans=10,
    )
    disagg = [p for p in r.plans if p.mode == "disaggregated"]
    assert disagg
    plan = disagg[0]
    prefill, decode = plan.pools
    assert (prefill.role, decode.role) == ("prefill", "decode")
    assert plan.num_gpus == prefill.replicas * prefill.gpus_per_replica + decode.replicas * decode.gpus_per_replica
    # both pools serve the same 8 requests/s: the output is 8 × 256 tokens/s
    assert plan.output_tokens_per_s == pytest.approx(8.0 * 256)
    assert plan.tpot.p90_ms <= 25 and plan.ttft.p90_ms <= 800
    assert plan.latency_method.startswith("static")


def test_moe_families_try_expert_parallel_and_pipelines_appear() -> None:
    r = _plan(
        model="mixtral-8x7b",
        workload={"input_tokens": 1024, "output_tokens": 256, "concurrency": 32},
        slo={"tpot_ms": 60},
        constraints={
            "gpus": ["h100-sxm"],
            "engines": ["vllm"],
            "weight_formats": ["fp8"],
            "kv_cache_dtypes": ["fp8"],
            "tensor_parallel": [2],
            "pipeline_parallel": [1, 2],
            "max_num_seqs": [32],
            "max_gpus": 8,
        },
        max_plans=4,
    )
    seen = {(p.pools[0].expert_parallel, p.pools[0].pipeline_parallel) for p in r.plans}
    seen |= {(f.expert_parallel, f.pipeline_parallel) for f in r.rejected}
    assert seen == {(1, 1), (2, 1), (1, 2), (2, 2)}


DSV3_SGLANG = {
    "gpus": ["h200"],
    "engines": ["sglang"],
    "weight_formats": ["fp8_block"],
    "kv_cache_dtypes": ["bf16"],
    "tensor_parallel": [8],
    "pipeline_parallel": [1],
    "max_num_seqs": [512],
    "max_gpus": 16,
}


def test_moe_plans_search_data_parallel_attention() -> None:
    # DeepSeek-V3 on 8 H200s with SGLang: EP 1 / 8 × attention DP 1 / 8 = 4 families of 2 replica counts each. Under
    # DP 8 every GPU is an attention rank with its own sequences and MLA latent cache (61 layers × (512 + 64) × 2 B
    # = 70,272 B per token, the same per GPU as without DP, where all 8 GPUs hold every sequence's latent): a rank's
    # pool is smaller (each GPU holds the whole attention) but the replica holds 8 such pools.
    r = _plan(
        model="deepseek-v3",
        workload={"input_tokens": 1024, "output_tokens": 1024, "concurrency": 512},
        # 65 ms: with SGLang's host cost per sequence on H200 (25 µs, engine_terms.json) plain TP8 at 256 users per
        # replica runs a TPOT p90 of about 61 ms, at 512 about 72 ms
        slo={"tpot_ms": 65},
        constraints=DSV3_SGLANG,
        max_plans=4,
    )
    assert (r.summary.families, r.summary.candidates) == (4, 8)
    by_layout = {(p.pools[0].expert_parallel, p.pools[0].attention_data_parallel): p for p in r.plans}
    dp8, tp8 = by_layout[(1, 8)], by_layout[(1, 1)]
    assert "DP8" in dp8.label and "DP" not in tp8.label.split("×")[0]
    assert 8 * dp8.pools[0].kv_pool_tokens > 5 * tp8.pools[0].kv_pool_tokens
    # the DP plan's replica request is an SGLang --enable-dp-attention --dp-size 8 deployment, and reproduces the
    # plan's latency and pool through /v1/estimates/inference (one rank simulated with ⌈512 / 8⌉ = 64 clients)
    request = dp8.pools[0].request
    assert request.serving.attention_data_parallel == 8 and request.serving.tensor_parallel == 8
    e = estimate_inference(request, CATALOG)
    assert e.load is not None and e.load.ttft == dp8.ttft and e.load.tpot == dp8.tpot
    assert e.engine.kv_pool_tokens == dp8.pools[0].kv_pool_tokens
    # the cheapest plan here is the data-parallel one: one replica meets the SLO where plain TP needs two
    assert r.plans[0].pools[0].attention_data_parallel == 8 and r.plans[0].num_gpus == 8
    assert tp8.num_gpus == 16


def test_disaggregated_pools_can_use_data_parallel_attention() -> None:
    # DeepSeek-V3 on H200 with SGLang, 4 requests/s of 4,096 → 1,024 tokens, TPOT 50 ms: the cheapest plan is a
    # prefill replica of TP 8 and a decode replica of 8 attention ranks (DP 8), each rank a server with its own
    # batch and latent KV pool. Rate matching: 4 req/s × 1,024 tokens × TPOT decoding at once fit in 1 replica × 8
    # ranks × the rank batch, which SGLang's max_running_requests 512 caps at 512 / 8 = 64 per rank.
    r = _plan(
        model="deepseek-v3",
        workload={"input_tokens": 4096, "output_tokens": 1024, "request_rate": 4.0},
        slo={"ttft_ms": 2000, "tpot_ms": 50},
        constraints={**DSV3_SGLANG, "max_gpus": 64, "disaggregated": True},
        max_plans=6,
    )
    plan = r.plans[0]
    assert plan.mode == "disaggregated"
    prefill, decode = plan.pools
    assert (prefill.attention_data_parallel, decode.attention_data_parallel) == (1, 8)
    assert "decode TP8 EP1 DP8" in plan.label and "per DP rank" in plan.label
    batch = int(plan.label.split("(batch ")[1].split()[0])  # sequences one decode rank runs
    in_flight = 4.0 * 1024 * plan.tpot.p50_ms / 1e3
    assert decode.replicas * 8 * batch >= in_flight and batch <= 512 // 8
    # the decode replica is an SGLang --dp-size 8 server: max_running_requests counts all ranks' sequences, and the
    # request reproduces the rank's KV pool through /v1/estimates/inference
    assert decode.request.serving.attention_data_parallel == 8
    assert decode.max_num_seqs == decode.request.serving.concurrency == 8 * batch
    e = estimate_inference(decode.request, CATALOG)
    assert e.engine.kv_pool_tokens == decode.kv_pool_tokens
    assert plan.num_gpus == 8 * (prefill.replicas + decode.replicas)
    # cheaper than every aggregated plan of the same search
    aggregated = [p for p in r.plans if p.mode == "aggregated"]
    assert aggregated and all(plan.cost_per_million_output_tokens_usd < p.cost_per_million_output_tokens_usd
                              for p in aggregated)  # fmt: skip


def test_kv_transfer_moves_each_gpu_s_shard() -> None:
    # Llama-3.1-8B (32 layers, 8 KV heads of 128, bf16): 131,072 B per token. From prefill TP 4 (2 heads per GPU)
    # to decode TP 2 (4 heads per GPU): each decode GPU receives half the cache over its own 50 GB/s NIC. An MLA
    # latent (DeepSeek-V3: 61 layers × (512 + 64) × 2 B = 70,272 B per token) goes whole to every GPU of the decode
    # rank, whatever its TP.
    llama, dsv3 = CATALOG.model("llama-3.1-8b").spec, CATALOG.model("deepseek-v3").spec
    assert kv_transfer_s(llama, 1000, 2, 4, 2) == pytest.approx(1000 * 131_072 * 0.5 / 50e9)
    assert kv_transfer_s(llama, 1000, 2, 1, 8) == pytest.approx(1000 * 131_072 / 50e9)
    assert kv_transfer_s(llama, 1000, 2, 16, 16) == pytest.approx(1000 * 131_072 / 8 / 50e9)  # heads replicated
    for tps in ((1, 1), (8, 8), (8, 1)):
        assert kv_transfer_s(dsv3, 1000, 2, *tps) == pytest.approx(1000 * 70_272 / 50e9)


def test_data_parallel_attention_is_for_moe_models_and_can_be_turned_off() -> None:
    off = _plan(
        model="deepseek-v3",
        workload={"input_tokens": 1024, "output_tokens": 1024, "concurrency": 512},
        slo={"tpot_ms": 60},
        constraints={**DSV3_SGLANG, "attention_data_parallel": False},
    )
    assert off.summary.families == 2
    assert all(p.pools[0].attention_data_parallel == 1 for p in off.plans)
    dense = _plan(
        model="llama-3.1-8b",
        workload={"input_tokens": 1024, "output_tokens": 256, "concurrency": 16},
        slo={"tpot_ms": 100},
        constraints={**ONE_FAMILY, "tensor_parallel": [1, 2]},
    )
    assert dense.summary.families == 2  # TP 1 and 2, no DP families for a dense model
    assert all(f.attention_data_parallel == 1 for f in dense.rejected)
