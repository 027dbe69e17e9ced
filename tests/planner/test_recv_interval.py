"""SGLang's receive interval (planner/serving/scheduler.py module doc): each pass of the scheduler loop adds its last
batch's weight to a counter (a decode batch 1, a batch with prompt tokens 1000) and reads the requests that reached
it only where the counter reaches --scheduler-recv-interval N, resetting it; an idle engine reads at once.

The toy step timer of test_arrival_lag makes every latency a sum of known iterations: a decode-only iteration takes
10 ms and one with a prompt in it 100 ms. SGLang schedules prefill first and overlaps scheduling, so a request
reaching the busy engine during iteration n is schedulable from iteration n + 2."""

from __future__ import annotations

from dataclasses import replace

import pytest

from planner import InferenceRequest, estimate_inference, load_catalog
from planner.serving.load import describe_limits
from planner.serving.scheduler import Admission, EngineLimits, SchedulerPolicy, Workload, simulate
from tests.planner.scheduler_reference import simulate_reference
from tests.planner.test_arrival_lag import ToyTimer, _ms

SGLANG = EngineLimits(SchedulerPolicy.PREFILL_FIRST, 8192, 256, 1_000_000, 16, Admission.ON_DEMAND, True)


def _gated(interval: int) -> EngineLimits:
    return replace(SGLANG, recv_interval=interval)


# request 0 alone at t = 0 (prompt 0-100 ms, then decodes of 10 ms: 100-110, 110-120, 120-130, ...); request 1
# arrives 125 ms in, during the third decode
LATE = Workload((1000, 1000), (400, 5), arrival_times_s=(0.0, 0.125))


def test_without_an_interval_a_request_runs_two_iterations_after_it_arrived() -> None:
    # reaches the engine in decode 3 (iteration 4), schedulable from iteration 6: decode 4 runs (130-140), then its
    # prompt (140-240): TTFT 5 + 10 + 100 ms
    result = simulate(ToyTimer(), SGLANG, LATE)
    assert _ms(result.timings[1].ttft_s) == 5.0 + 10.0 + 100.0


def test_a_request_waits_for_the_pass_that_reads() -> None:
    # N = 8: the pass after request 0's prompt read (weight 1000) and restarted the counter; decodes 1-8 count 1-8,
    # so the pass after decode 8 (at 180 ms) is the first to read: decodes 4-8 run before its prompt (180-280)
    result = simulate(ToyTimer(), _gated(8), LATE)
    assert _ms(result.timings[1].ttft_s) == 5.0 + 5 * 10.0 + 100.0
    assert _ms(result.timings[0].ttft_s) == 100.0  # an idle engine reads at once
    assert result == simulate_reference(ToyTimer(), _gated(8), LATE)


def test_an_arrival_just_after_a_read_waits_almost_the_whole_interval() -> None:
    # N = 8 reads after decodes 8 and 16; arriving at 185 ms (in decode 9) it waits for decodes 10-16 (190-260)
    workload = Workload((1000, 1000), (400, 5), arrival_times_s=(0.0, 0.185))
    result = simulate(ToyTimer(), _gated(8), workload)
    assert _ms(result.timings[1].ttft_s) == 5.0 + 7 * 10.0 + 100.0
    assert result == simulate_reference(ToyTimer(), _gated(8), workload)


def test_an_interval_the_request_would_wait_anyway_changes_nothing() -> None:
    # N = 2 reads after decodes 2, 4, ...: the pass after decode 4, the first it could be scheduled at, reads
    assert simulate(ToyTimer(), _gated(2), LATE) == simulate(ToyTimer(), SGLANG, LATE)


def test_one_client_finds_an_idle_engine_that_reads_at_once() -> None:
    result = simulate(ToyTimer(), _gated(30), Workload((100,) * 3, (5,) * 3, concurrency=1))
    assert [_ms(t.ttft_s) for t in result.timings] == [100.0, 100.0, 100.0]


def test_a_gated_closed_loop_jumps_to_the_answer_of_every_event(jumps: list[int]) -> None:
    # eight clients of fixed lengths, started 35 ms apart so they stay apart: the re-sent requests find the engine
    # decoding and wait for reads, the loop settles and jumps (clients in lockstep all finish together and find it
    # idle: nothing waits)
    starts = tuple(i * 0.035 for i in range(8))
    limits, workload = _gated(10), Workload((1000,) * 128, (40,) * 128, concurrency=8, client_start_s=starts)
    fast, full = simulate(ToyTimer(), limits, workload), simulate(ToyTimer(), limits, workload, steady_state=False)
    assert jumps
    assert (fast.iterations, fast.events) == (full.iterations, full.events)
    assert all(_ms(a.ttft_s) == pytest.approx(_ms(b.ttft_s)) for a, b in zip(fast.timings, full.timings, strict=True))
    assert full == simulate_reference(ToyTimer(), limits, workload)
    plain = simulate(ToyTimer(), SGLANG, workload)
    assert sum(t.ttft_s for t in full.timings) > 1.5 * sum(t.ttft_s for t in plain.timings)


def _request(**serving: object) -> InferenceRequest:
    settings = {"engine": "sglang", "tensor_parallel": 8, "prompt_tokens": 1024, "output_tokens": 256, **serving}
    # lengths as InferenceX's client draws them (uniform on [0.8 L, L]), so the clients drift apart
    spread = {
        f"{kind}_lengths": [{"tokens": round(n * (0.8 + 0.05 * i))} for i in range(5)]
        for kind, n in (("input", 1024), ("output", 256))
    }
    load = {"concurrency": 16, "num_requests": 160, **spread}
    return InferenceRequest.model_validate({"model": "llama-3.1-70b", "gpu": "h200", "serving": settings, "load": load})


def test_the_setting_reaches_the_load_answer() -> None:
    # 16 clients of ≤ 256 tokens: most requests reach an engine that is decoding and wait for a read, on average
    # about half the interval of decode steps more than without it; the decode batch barely changes
    catalog = load_catalog()
    plain = estimate_inference(_request(), catalog).load
    gated = estimate_inference(_request(scheduler_recv_interval=30), catalog).load
    assert plain is not None and gated is not None
    assert gated.ttft.mean_ms > plain.ttft.mean_ms + 5 * plain.tpot.mean_ms
    assert gated.tpot.mean_ms == pytest.approx(plain.tpot.mean_ms, rel=0.1)
    assert "receive interval 30" in describe_limits(_gated(30))


@pytest.mark.parametrize("engine", ["vllm", "trtllm"])
def test_the_receive_interval_is_an_sglang_setting(engine: str) -> None:
    with pytest.raises(ValueError, match="scheduler_recv_interval is a sglang setting"):
        _request(engine=engine, scheduler_recv_interval=10)
