"""When a request reaches the engine loop (planner/serving/scheduler.py module doc): a busy engine schedules it in
the iteration after the one it is running, one later with overlap scheduling; a closed-loop client's next request
reaches the engine after the iteration following its last token has begun; an idle engine starts it at once.

A toy step timer makes every latency a sum of known iterations: a decode-only iteration takes 10 ms and one with a
prompt in it 100 ms, whatever the batch."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from planner import InferenceRequest, estimate_inference, load_catalog
from planner.calibration.kernels import KernelTables
from planner.serving.scheduler import Admission, EngineLimits, SchedulerPolicy, Workload, simulate
from planner.serving.step_time import StepCost
from tests.planner.scheduler_reference import simulate_reference

DECODE_S, PREFILL_S = 0.010, 0.100


class ToyTimer:
    @property
    def tables(self) -> KernelTables:
        raise AssertionError("the loop does not read the tables")

    def step(self, decode_seqs: int, decode_context: float, prefill: Sequence[tuple[int, int]] = ()) -> StepCost:
        total = PREFILL_S if prefill else DECODE_S
        return StepCost(total_s=total, dense_s=total, attention_s=0.0, outside_s=0.0)


def _limits(overlap: bool) -> EngineLimits:
    return EngineLimits(SchedulerPolicy.MIXED_CHUNKED, 8192, 256, 1_000_000, 16, Admission.ON_DEMAND, overlap)


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 6)


@pytest.mark.parametrize("overlap", [False, True])
def test_one_client_finds_an_idle_engine_every_time(overlap: bool) -> None:
    # nothing else runs when its request finishes: the next one is prefilled at once, TTFT = one prompt iteration
    result = simulate(ToyTimer(), _limits(overlap), Workload((100,) * 3, (5,) * 3, concurrency=1))
    assert [_ms(t.ttft_s) for t in result.timings] == [100.0, 100.0, 100.0]
    assert [_ms(t.tpot_s) for t in result.timings] == [10.0, 10.0, 10.0]


@pytest.mark.parametrize(("overlap", "waits"), [(False, 1), (True, 2)])
def test_a_re_sent_request_waits_for_the_iterations_the_busy_engine_started(overlap: bool, waits: int) -> None:
    # two clients, the second starting 15 ms late (during the first one's prompt iteration, so it waits for that
    # one to end: TTFT 85 + 100 ms). When request 0 finishes, request 1 still decodes: request 2 misses the next
    # iteration (and, with overlap, the one after), decode-only ones of 10 ms, then takes a prompt iteration.
    workload = Workload((100,) * 3, (20,) * 3, concurrency=2, client_start_s=(0.0, 0.015))
    result = simulate(ToyTimer(), _limits(overlap), workload)
    ttft = [_ms(t.ttft_s) for t in result.timings]
    assert ttft[0] == 100.0
    assert ttft[1] == (85.0 + 100.0 if not overlap else 85.0 + 10.0 + 100.0)  # overlap: an arrival waits one more
    assert ttft[2] == waits * 10.0 + 100.0
    assert result == simulate_reference(ToyTimer(), _limits(overlap), workload)


def test_without_the_lag_the_old_loop_prefilled_a_re_sent_request_at_once() -> None:
    # the same two clients, the second never overlapping the first: request 2 is not prefilled in the iteration
    # right after request 0's last token (which the loop did before requests reached the engine late)
    workload = Workload((100,) * 3, (20,) * 3, concurrency=2, client_start_s=(0.0, 0.015))
    ttft = simulate(ToyTimer(), _limits(False), workload).timings[2].ttft_s
    assert _ms(ttft) > 100.0


def test_open_loop_arrivals_wait_one_more_iteration_with_overlap() -> None:
    # request 0 decodes alone; request 1 arrives 25 ms after request 0's prompt iteration (in its third decode
    # iteration): without overlap it joins the next iteration (5 ms later), with overlap the one after (15 ms)
    workload = Workload((100, 100), (50, 5), arrival_times_s=(0.0, 0.125))
    plain = simulate(ToyTimer(), _limits(False), workload).timings[1]
    overlapped = simulate(ToyTimer(), _limits(True), workload).timings[1]
    assert _ms(plain.ttft_s) == 5.0 + 100.0
    assert _ms(overlapped.ttft_s) == 15.0 + 100.0


def test_the_engine_profiles_set_overlap_scheduling_by_version() -> None:
    from planner.serving.engines import engine_defaults, resolve_profile

    def overlapped(engine: str, version: str) -> bool:
        return engine_defaults(resolve_profile(engine, version), 80 << 30, 81559, "H100", 1).overlap_scheduling

    # vLLM turned async scheduling on by default in 0.14.0 (vllm/config/vllm.py); TensorRT-LLM's PyTorch executor
    # and SGLang run their overlap loops by default
    assert not overlapped("vllm", "0.12.0") and not overlapped("vllm", "0.13.0")
    assert overlapped("vllm", "0.14.0") and overlapped("vllm", "0.19.0")
    assert overlapped("trtllm", "1.0.0rc3") and overlapped("sglang", "0.5.6")


def _ttft_ms(**serving: object) -> float:
    base = {"prompt_tokens": 1024, "output_tokens": 128, "concurrency": 8}
    request = InferenceRequest(
        model="llama-3.1-8b",
        gpu="h100-sxm",
        serving={**base, **serving},
        load={"concurrency": 8, "client_start": "staggered"},
    )
    load = estimate_inference(request, load_catalog()).load
    assert load is not None
    return load.ttft.mean_ms


def test_pipeline_parallel_turns_vllm_s_async_scheduling_off() -> None:
    # vllm/config/vllm.py @ v0.14.0: async scheduling is disabled with pipeline_parallel_size > 1
    from planner.serving.engines import engine_defaults, resolve_profile
    from planner.serving.load import overlap_scheduling
    from planner.serving.spec import ServingSpec

    defaults = engine_defaults(resolve_profile("vllm", "0.19.0"), 80 << 30, 81559, "H100", 2)
    one = ServingSpec.model_validate({"engine": "vllm", "prompt_tokens": 8, "output_tokens": 8, "concurrency": 1})
    two = ServingSpec.model_validate(
        {"engine": "vllm", "prompt_tokens": 8, "output_tokens": 8, "concurrency": 1, "pipeline_parallel": 2}
    )
    assert overlap_scheduling(defaults, one) and not overlap_scheduling(defaults, two)


def test_an_overlapping_engine_answers_a_later_first_token() -> None:
    # the same deployment on vLLM 0.13 (no async scheduling) and 0.14 (async by default), its clients spread over a
    # request's lifetime (together, all eight prompts share one iteration and finish together: the engine is idle
    # when they come back): TTFT grows by about one decode iteration
    assert _ttft_ms(engine="vllm", engine_version="0.14.0") > _ttft_ms(engine="vllm", engine_version="0.13.0")
