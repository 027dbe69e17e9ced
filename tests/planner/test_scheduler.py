"""The engine iteration loop: exact in the cases that can be worked by hand, and the laws measured runs follow."""

from __future__ import annotations

import pytest

from planner import load_catalog
from planner.calibration.kernels import load_kernel_tables
from planner.serving.scheduler import Admission, EngineLimits, SchedulerPolicy, Workload, simulate
from planner.serving.step_time import ServingShape, StepModel, build_step_model


@pytest.fixture(scope="module")
def model() -> StepModel:
    spec = load_catalog().model("llama-3.1-8b").spec
    tables = load_kernel_tables("h100-sxm", "vllm")
    assert tables is not None
    return build_step_model(ServingShape(spec, 1, 1, 1, "bf16", "bf16", "bf16", 0.0, 0.0), tables)


def _limits(policy: SchedulerPolicy = SchedulerPolicy.MIXED_CHUNKED, **kw: int) -> EngineLimits:
    base = {"token_budget": 8192, "max_num_seqs": 1024, "kv_capacity_tokens": 400_000, "block_size": 16}
    base.update(kw)
    return EngineLimits(policy=policy, admission=Admission.ON_DEMAND, **base)  # type: ignore[arg-type]


def test_one_client_is_one_prefill_then_decode_steps(model: StepModel) -> None:
    # c = 1: TTFT is the prefill iteration; every later token one decode step at a context growing by one.
    r = simulate(model, _limits(), Workload((1024,), (64,), concurrency=1))
    (t,) = r.timings
    assert t.ttft_s == pytest.approx(model.step(0, 0.0, [(1024, 0)]).total_s)
    # 63 decode steps, contexts 1025..1087, timed at the run's mean context
    assert t.tpot_s == pytest.approx(model.step(1, 1024 + 1 + 31).total_s, rel=1e-3)


def test_every_request_finishes_and_counts(model: StepModel) -> None:
    r = simulate(model, _limits(), Workload((1000,) * 40, (50,) * 40, concurrency=8))
    assert len(r.timings) == 40
    assert all(t.ttft_s > 0 and t.tpot_s > 0 and t.e2e_s >= t.ttft_s for t in r.timings)


def test_tpot_follows_a_plus_b_over_output_length(model: StepModel) -> None:
    # Measured TPOT at a fixed concurrency fits a + b/osl, b ≈ (c − 1) prefills stalling the decode (the
    # staggered steady state): fit a and b on two output lengths, predict the third.
    def tpot(osl: int) -> float:
        starts = tuple(i * 0.05 for i in range(16))
        r = simulate(model, _limits(), Workload((2048,) * 64, (osl,) * 64, concurrency=16, client_start_s=starts))
        return sum(t.tpot_s for t in r.timings[16:]) / 48

    t128, t256, t512 = tpot(128), tpot(256), tpot(512)
    b = (t128 - t512) / (1 / 128 - 1 / 512)
    a = t512 - b / 512
    assert a + b / 256 == pytest.approx(t256, rel=0.03)
    # b is about (c − 1) = 15 stalls per request lifetime, each the extra time of a mixed iteration
    stall = model.step(15, 2048 + 128, [(2048, 0)]).total_s - model.step(15, 2048 + 128).total_s
    assert b == pytest.approx(15 * stall, rel=0.3)


def test_sglang_prefill_first_stalls_decodes_more_than_mixed_batches(model: StepModel) -> None:
    w = Workload((4096,) * 48, (256,) * 48, concurrency=16, client_start_s=tuple(i * 0.1 for i in range(16)))
    mixed = simulate(model, _limits(SchedulerPolicy.MIXED_CHUNKED), w)
    first = simulate(model, _limits(SchedulerPolicy.PREFILL_FIRST), w)
    mean = lambda r: sum(t.tpot_s for t in r.timings) / len(r.timings)  # noqa: E731
    assert mean(first) > mean(mixed)


def test_a_small_kv_pool_preempts_and_reserving_engines_never_do(model: StepModel) -> None:
    w = Workload((2000,) * 32, (2000,) * 32, concurrency=32)
    tight = simulate(model, _limits(kv_capacity_tokens=40_000), w)
    assert tight.preemptions > 0
    reserve = EngineLimits(SchedulerPolicy.MIXED_WHOLE, 8192, 1024, 40_000, 32, Admission.RESERVE_FULL)
    assert simulate(model, reserve, w).preemptions == 0


def test_max_num_seqs_bounds_the_decode_batch(model: StepModel) -> None:
    r = simulate(model, _limits(max_num_seqs=4), Workload((512,) * 32, (64,) * 32, concurrency=16))
    assert r.mean_decode_batch <= 4


def test_open_loop_at_a_low_rate_sees_no_queue(model: StepModel) -> None:
    arrivals = tuple(float(i) for i in range(1, 21))  # one request a second, each done in well under a second
    r = simulate(model, _limits(), Workload((1024,) * 20, (32,) * 20, arrival_times_s=arrivals))
    alone = model.step(0, 0.0, [(1024, 0)]).total_s
    assert max(t.ttft_s for t in r.timings) == pytest.approx(alone, rel=1e-6)
