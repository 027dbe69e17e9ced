"""Issue 12: on the CPU, running out of memory was not reported as out_of_memory (torch's CPU allocator raises a
plain RuntimeError). A real probe in its process, under a memory limit it cannot fit, ends done and out_of_memory."""

from __future__ import annotations

import pytest
import torch

from models.measurement import is_out_of_memory
from planner.probe import ProbeRequest
from service.probes.process import ProbeProcess

# About 1.7 GiB planned, most of it the logits of 2,048 tokens over a 65,536-token vocabulary (bf16, their fp32
# upcast and gradient); the probe process's interpreter, torch, transformers and peft take ~400 MB of the 768 MiB.
BIG = ProbeRequest.model_validate(
    {
        "model": "llama-3-8b",
        "backend": "cpu",
        "training": {"sequence_length": 2048, "micro_batch_size": 1},
        "scale": {"vocab_size": 65536},
    }
)
LIMIT_BYTES = 768 << 20


def test_the_cpu_allocators_failure_is_out_of_memory() -> None:
    try:
        torch.empty(1 << 62, dtype=torch.uint8)
    except RuntimeError as exc:
        assert is_out_of_memory(exc), str(exc)
    else:
        pytest.fail("allocated 4 EiB")
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_a_probe_past_its_memory_limit_is_an_out_of_memory_result() -> None:
    process = ProbeProcess("models.runner:run_probe", BIG, "cpu", "oom-test", memory_limit_bytes=LIMIT_BYTES)
    process.start()
    outcome = process.wait(timeout_s=120)
    assert outcome.result is not None, outcome.error
    assert outcome.result.out_of_memory
