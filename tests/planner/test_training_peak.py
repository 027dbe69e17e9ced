"""The training peak against a real step: torch's MemTracker on a tiny transformers Llama (CPU, bf16, AdamW).

MemTracker (torch.distributed._tools.mem_tracker) follows every tensor of the step by category; its peak is
what the planner's phases must reproduce. This is the CPU check; the probe runs do the same on CUDA.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
mem_tracker = pytest.importorskip("torch.distributed._tools.mem_tracker")

from planner.model.spec import ModelSpec  # noqa: E402
from planner.training.memory import training_phases  # noqa: E402
from planner.training.peft_params import trainable_params  # noqa: E402
from planner.training.spec import TrainingSpec  # noqa: E402

B, S, H, F, HEADS, KV, V = 8, 256, 64, 160, 4, 2, 300
SPEC = ModelSpec(num_layers=2, hidden_size=H, num_heads=HEADS, num_kv_heads=KV, ffn_dim=F, vocab_size=V,
                 max_context=S)  # fmt: skip


def measured_peak(attn: str, checkpointing: bool) -> int:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        hidden_size=H,
        intermediate_size=F,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        num_key_value_heads=KV,
        vocab_size=V,
        max_position_embeddings=S,
        attn_implementation=attn,
        use_cache=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.set_default_dtype(torch.bfloat16)
        try:
            model = transformers.LlamaForCausalLM(config)
        finally:
            torch.set_default_dtype(torch.float32)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)

    def step() -> None:
        ids = torch.randint(0, V, (B, S))
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        del loss, ids
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        step()  # the first step creates AdamW's state: measure the steady state
        tracker = mem_tracker.MemTracker()
        tracker.track_external(model, optimizer)
        with tracker:
            step()
    peak: dict[Any, dict[Any, int]] = tracker.get_tracker_snapshot("peak")
    return next(iter(peak.values()))["Total"]


def planned_peak(attn: str, checkpointing: bool) -> int:
    training = TrainingSpec(
        micro_batch_size=B,
        sequence_length=S,
        attention=attn,
        gradient_checkpointing="full" if checkpointing else "none",
    )
    return training_phases(SPEC, training, trainable_params(SPEC, training.method)).peak.total_bytes


@pytest.mark.parametrize(
    ("attn", "checkpointing", "tolerance"),
    [
        ("sdpa", False, 0.002),
        ("sdpa", True, 0.002),
        ("eager", False, 0.005),
        ("eager", True, 0.01),
    ],
)
def test_training_peak_matches_mem_tracker(attn: str, checkpointing: bool, tolerance: float) -> None:
    measured, planned = measured_peak(attn, checkpointing), planned_peak(attn, checkpointing)
    assert abs(planned / measured - 1) <= tolerance, (planned, measured)
