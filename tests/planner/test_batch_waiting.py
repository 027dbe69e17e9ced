"""TensorRT-LLM's batch waiting (planner/serving/scheduler.py module doc): while requests decode, the prompts the
scheduler picked wait until the batch's tokens reach r × max_num_tokens or T iterations have been held back.

The toy step timer of test_arrival_lag makes every latency a sum of known iterations: a decode-only iteration takes
10 ms and one with a prompt in it 100 ms."""

from __future__ import annotations

from dataclasses import replace

import pytest

from planner import InferenceRequest, estimate_inference, load_catalog
from planner.serving.scheduler import Admission, EngineLimits, SchedulerPolicy, Workload, simulate
from tests.planner.scheduler_reference import simulate_reference
from tests.planner.test_arrival_lag import ToyTimer, _ms

BUDGET = 8192


def _limits(iters: int, ratio: float) -> EngineLimits:
    base = EngineLimits(SchedulerPolicy.MIXED_WHOLE, BUDGET, 256, 1_000_000, 32, Admission.RESERVE_FULL)
    return replace(base, batch_wait_iters=iters, batch_wait_tokens=ratio * BUDGET)


# two requests: request 0 alone (an idle engine, no decodes: no waiting), request 1 arriving while it decodes
WORKLOAD = Workload((1000, 1000), (50, 5), arrival_times_s=(0.0, 0.125))


def test_a_prompt_waits_the_timeout_when_the_tokens_stay_below_the_threshold() -> None:
    # request 1 reaches the engine 25 ms into request 0's decode and is scheduled 5 ms later; its 1,000 + 1 tokens
    # stay under 0.9 × 8,192, so it is held back 20 decode iterations (200 ms), then runs: TTFT 5 + 200 + 100 ms
    result = simulate(ToyTimer(), _limits(20, 0.9), WORKLOAD)
    assert _ms(result.timings[0].ttft_s) == 100.0  # nothing decoded when request 0 came: it never waits
    assert _ms(result.timings[1].ttft_s) == 5.0 + 200.0 + 100.0
    assert result == simulate_reference(ToyTimer(), _limits(20, 0.9), WORKLOAD)


def test_a_batch_that_reaches_the_token_threshold_runs_at_once() -> None:
    # 1,001 tokens ≥ 0.1 × 8,192: no waiting, as without the settings
    held = simulate(ToyTimer(), _limits(20, 0.1), WORKLOAD)
    plain = simulate(ToyTimer(), _limits(0, 0.0), WORKLOAD)
    assert held == plain
    assert _ms(held.timings[1].ttft_s) == 5.0 + 100.0


@pytest.mark.parametrize(("iters", "ratio"), [(0, 0.9), (20, 0.0)])
def test_either_setting_zero_never_waits(iters: int, ratio: float) -> None:
    # the engine's test `count >= T or tokens >= r × max_num_tokens` passes at once when T or r is 0
    assert simulate(ToyTimer(), _limits(iters, ratio), WORKLOAD) == simulate(ToyTimer(), _limits(0, 0.0), WORKLOAD)


def test_the_count_restarts_when_prompts_run() -> None:
    # three arrivals while request 0 decodes (it generates 400 tokens, 4 s): each waits its own 3 iterations
    workload = Workload((1000,) * 4, (400, 5, 5, 5), arrival_times_s=(0.0, 0.125, 1.0, 2.0))
    result = simulate(ToyTimer(), _limits(3, 0.9), workload)
    arrived_to_scheduled = [5.0, 0.0, 0.0]  # 0.125 s is 25 ms into a decode iteration; 1.0 and 2.0 s fall on ends
    for k, lead in enumerate(arrived_to_scheduled, start=1):
        assert _ms(result.timings[k].ttft_s) == pytest.approx(lead + 30.0 + 100.0, abs=1e-6), k
    assert result == simulate_reference(ToyTimer(), _limits(3, 0.9), workload)


def test_a_closed_loop_with_batch_waiting_jumps_to_the_same_answer(jumps: list[int]) -> None:
    # eight clients, two 3,000-token prompts per iteration: the second pair finds two decoding and 6,002 tokens,
    # under 0.9 × 8,192, so it waits 7 iterations; the loop settles and jumps, to the answer of every event
    limits = _limits(7, 0.9)
    workload = Workload((3000,) * 128, (40,) * 128, concurrency=8)
    fast, full = simulate(ToyTimer(), limits, workload), simulate(ToyTimer(), limits, workload, steady_state=False)
    assert jumps
    assert (fast.iterations, fast.events) == (full.iterations, full.events)
    assert all(_ms(a.ttft_s) == pytest.approx(_ms(b.ttft_s)) for a, b in zip(fast.timings, full.timings, strict=True))
    assert full == simulate_reference(ToyTimer(), limits, workload)
    plain = simulate(ToyTimer(), _limits(0, 0.0), workload)
    assert max(t.ttft_s for t in full.timings) > max(t.ttft_s for t in plain.timings)


def _request(**serving: object) -> InferenceRequest:
    settings = {"engine": "trtllm", "tensor_parallel": 2, "prompt_tokens": 1024, "output_tokens": 256}
    settings |= {"concurrency": 4, "max_num_batched_tokens": 16384, **serving}
    # lengths as InferenceX's client draws them (uniform on [0.8 L, L]), so the clients do not stay in lockstep
    spread = {
        f"{kind}_lengths": [{"tokens": round(n * (0.8 + 0.05 * i))} for i in range(5)]
        for kind, n in (("input", 1024), ("output", 256))
    }
    load = {"concurrency": 4, "num_requests": 40, **spread}
    return InferenceRequest.model_validate({"model": "llama-3.1-70b", "gpu": "h200", "serving": settings, "load": load})


def test_the_settings_reach_the_load_answer() -> None:
    # four clients, ≤ 1,024-token prompts: never 0.9 × 16,384 tokens, so every prompt that finds decodes waits
    catalog = load_catalog()
    plain = estimate_inference(_request(), catalog).load
    held = estimate_inference(_request(batch_wait_timeout_iters=20, batch_wait_max_tokens_ratio=0.9), catalog).load
    assert plain is not None and held is not None
    assert held.ttft.mean_ms > plain.ttft.mean_ms + 5 * held.tpot.mean_ms


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_batch_waiting_is_a_tensorrt_llm_setting(engine: str) -> None:
    with pytest.raises(ValueError, match="batch_wait_timeout_iters is a trtllm setting"):
        _request(engine=engine, batch_wait_timeout_iters=20)
