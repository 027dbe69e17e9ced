"""Latency under load: the closed loop's staggered clients keep the spacing they start with."""

from __future__ import annotations

from planner import InferenceRequest, estimate_inference, load_catalog


def test_staggered_clients_do_not_start_bunched() -> None:
    # 256 clients of 2048 + 256 tokens on one B200 (Llama-3.1-8B, fp8): each decode iteration of 255 others is
    # ~9 ms, a prompt mixed into it ~26 ms, so a request's cycle is ~6 s rather than the 2.3 s of decode steps alone.
    # Spread over the shorter period, the clients arrive in a bunch that a closed loop keeps (TTFT p90 of seconds);
    # spread over the cycle with the other prompts' stalls, TTFT stays within a few iterations.
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
    assert load.ttft.p90_ms < 150
    assert load.ttft.p50_ms < 80
