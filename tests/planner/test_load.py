"""Latency under load through the public API: the request's load, its refusals and the shape of the answer."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from planner import InferenceRequest, SpecError, estimate_inference, load_catalog
from planner.serving.load import LoadSpec


def _request(load: dict[str, Any] | None, **serving: Any) -> InferenceRequest:
    gpu = serving.pop("gpu", "h100-sxm")
    model = serving.pop("model", "llama-3.1-8b")
    body = {"engine": "vllm", "prompt_tokens": 1024, "output_tokens": 128, "concurrency": 8} | serving
    return InferenceRequest(model=model, gpu=gpu, serving=body, load=load)


def _problems(exc: pytest.ExceptionInfo[SpecError]) -> dict[tuple[str | int, ...], str]:
    return {p.loc: p.msg for p in exc.value.problems}


@pytest.mark.parametrize(
    "load",
    [
        {},
        {"concurrency": 4, "request_rate": 2.0},
        {"concurrency": 0},
        {"request_rate": 0},
        {"request_rate": 5e-324},  # found by schemathesis: arrivals at infinity
        {"concurrency": 4, "input_lengths": []},
        {"concurrency": 4, "client_start": "sometime"},
        {"concurrency": "4"},
    ],
)
def test_bad_loads_are_refused(load: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        LoadSpec.model_validate(load)


def test_gpu_without_kernel_tables_is_refused_at_load() -> None:
    with pytest.raises(SpecError) as exc:
        estimate_inference(_request({"concurrency": 4}, gpu="rtx-4090"), load_catalog())
    problems = _problems(exc)
    assert ("load",) in problems and "kernel tables" in problems[("load",)]


def test_without_load_the_same_request_answers() -> None:
    estimate = estimate_inference(_request(None, gpu="rtx-4090"), load_catalog())
    assert estimate.load is None and estimate.fits


def test_a_request_longer_than_the_kv_pool_is_refused_at_load() -> None:
    with pytest.raises(SpecError) as exc:
        estimate_inference(
            _request(
                {"concurrency": 1},
                model="llama-3.1-70b",
                tensor_parallel=2,
                prompt_tokens=120_000,
                output_tokens=8_000,
                gpu_memory_utilization=0.6,
            ),
            load_catalog(),
        )
    assert "KV pool" in _problems(exc)[("load",)]


def test_closed_loop_answer_is_consistent() -> None:
    estimate = estimate_inference(_request({"concurrency": 8}), load_catalog())
    load = estimate.load
    assert load is not None
    for p in (load.ttft, load.tpot, load.e2e):
        assert 0 < p.p50_ms <= p.p90_ms <= p.p99_ms
    assert load.requests_measured == 64  # 8 requests per client by default
    assert 1 <= load.mean_decode_batch <= 8
    assert load.preemptions == 0
    assert load.kv_pool_tokens == estimate.engine.kv_pool_tokens  # type: ignore[union-attr]
    # e2e ≈ TTFT + (output − 1) · TPOT for the mean request
    assert load.e2e.mean_ms == pytest.approx(load.ttft.mean_ms + 127 * load.tpot.mean_ms, rel=0.05)
    assert "h100-sxm" in load.kernel_tables and "vllm" in load.kernel_tables


def test_latency_grows_with_concurrency_and_throughput_too() -> None:
    answers = [estimate_inference(_request({"concurrency": c}), load_catalog()).load for c in (1, 8, 64)]
    assert all(a is not None for a in answers)
    tpot = [a.tpot.mean_ms for a in answers if a]
    throughput = [a.output_tokens_per_s for a in answers if a]
    # measured GEMMs at M = 1 and M = 8 take about the same time (the weight read), so only 64 must be slower
    assert tpot[2] > max(tpot[:2]) and throughput == sorted(throughput)
    assert throughput[-1] > 10 * throughput[0]


def test_a_low_request_rate_sees_single_request_latency() -> None:
    one = estimate_inference(_request({"concurrency": 1}), load_catalog()).load
    slow = estimate_inference(_request({"request_rate": 0.05, "num_requests": 16}), load_catalog()).load
    assert one is not None and slow is not None
    assert slow.ttft.p50_ms == pytest.approx(one.ttft.p50_ms, rel=0.05)
    assert slow.tpot.p50_ms == pytest.approx(one.tpot.p50_ms, rel=0.05)


def test_int4_weights_decode_faster_than_bf16_without_their_own_table() -> None:
    """Weight-only int4 has no Hopper table: it runs at bf16's measured efficiency on its own (4-bit) roofline."""
    bf16 = estimate_inference(_request({"concurrency": 1}), load_catalog()).load
    int4 = estimate_inference(_request({"concurrency": 1}, weight_format="int4_awq"), load_catalog()).load
    assert bf16 is not None and int4 is not None
    assert int4.tpot.mean_ms < 0.7 * bf16.tpot.mean_ms


def test_length_distributions_are_sampled_with_the_seed() -> None:
    load = {"concurrency": 4, "input_lengths": [{"tokens": 256}, {"tokens": 2048, "weight": 3}], "seed": 7}
    a = estimate_inference(_request(load), load_catalog()).load
    b = estimate_inference(_request(load), load_catalog()).load
    c = estimate_inference(_request(load | {"seed": 8}), load_catalog()).load
    assert a == b
    assert c is not None and a is not None and c.ttft.mean_ms != a.ttft.mean_ms


def test_a_load_past_the_simulation_bound_is_refused_at_load() -> None:
    load = {"request_rate": 0.5, "num_requests": 65_536}
    with pytest.raises(SpecError) as exc:
        estimate_inference(_request(load, prompt_tokens=100, output_tokens=100_000), load_catalog())
    assert "simulates at most" in _problems(exc)[("load",)]


def test_an_overloaded_open_loop_is_refused_not_simulated_for_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    from planner.serving import scheduler

    monkeypatch.setattr(scheduler, "MAX_SIMULATION_WORK", 20_000)
    load = {"request_rate": 50.0, "num_requests": 4096}
    with pytest.raises(SpecError) as exc:
        estimate_inference(_request(load, prompt_tokens=100, output_tokens=4000), load_catalog())
    assert "too large to simulate" in _problems(exc)[("load",)]


@pytest.mark.parametrize("gpu", ["a100-80gb", "l40s"])
def test_mla_models_answer_where_the_engine_has_no_mla_kernel_table(gpu: str) -> None:
    """A100 and L40S have no measured MLA kernels: the MLA roofline runs at the measured attention efficiency."""
    estimate = estimate_inference(
        _request({"concurrency": 2}, model="deepseek-v2-lite", gpu=gpu, prompt_tokens=512, output_tokens=32),
        load_catalog(),
    )
    assert estimate.load is not None and estimate.load.tpot.mean_ms > 0
    assert estimate.prefill.ttft_s > 0  # type: ignore[union-attr]


def test_staggered_clients_do_not_start_bunched() -> None:
    # 256 clients of 2048 + 256 tokens on one B200 (Llama-3.1-8B, fp8): each decode iteration of 255 others is
    # ~9 ms, a prompt mixed into it ~26 ms, so a request's cycle is ~6 s rather than the 2.3 s of decode steps alone.
    # Spread over the shorter period, the clients arrive in a bunch that a closed loop keeps (TTFT p90 of seconds);
    # spread over the cycle with the other prompts' stalls, TTFT stays within a few iterations: the two the engine
    # runs before a re-sent request reaches it (vLLM's async scheduling) and the one that prefills it.
    request = InferenceRequest(
        model="llama-3.1-8b",
        gpu="b200",
        serving={
            "weight_format": "fp8",
            "kv_cache_dtype": "fp8",
            "max_num_seqs": 256,
            "prompt_tokens": 2048,
            "output_tokens": 256,
            "concurrency": 256,
        },
        load={"concurrency": 256, "client_start": "staggered", "num_requests": 1024},
    )
    load = estimate_inference(request, load_catalog()).load
    assert load is not None
    assert load.ttft.p90_ms < 180
    assert load.ttft.p50_ms < 130
