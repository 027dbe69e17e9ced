"""Measurement backends against an oracle nobody here wrote: torch's MemTracker, on a tiny transformers Llama step.

MemTracker (torch.distributed._tools.mem_tracker) follows every tensor of a step by category. Its grad hooks raise
on frozen parameters (LoRA), so for the oracle they are skipped: gradients are then counted as op outputs, which
changes their category, not the total.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
mem_tracker = pytest.importorskip("torch.distributed._tools.mem_tracker")

from models.backends import (  # noqa: E402
    BackendUnavailableError,
    CpuBackend,
    CudaBackend,
    FakeBackend,
    default_dtype,
    get_backend,
    storage_bytes,
)
from models.measurement import StepContext  # noqa: E402
from models.runner import run_probe_detailed  # noqa: E402
from planner.probe import ProbeRequest  # noqa: E402

B, S, H, F, HEADS, KV, V = 4, 128, 64, 160, 4, 2, 300
MiB = 1 << 20


class _NoGradHooks(mem_tracker.MemTracker):  # type: ignore[misc]
    def _track_module_params_and_buffers(self, module: Any, install_grad_hooks: bool = True) -> Any:
        return super()._track_module_params_and_buffers(module, install_grad_hooks=False)


def _tiny_step(attn: str, checkpointing: bool, lora: bool) -> tuple[Any, Any, Any, Callable[..., None]]:
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
        # Scoped: peft reads a transformers property deprecated in 5.x while wrapping.
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        with default_dtype(torch.bfloat16):
            model = transformers.LlamaForCausalLM(config)
        if lora:
            model = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        if lora:
            model.enable_input_require_grads()
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, foreach=True)
    ids = torch.randint(0, V, (B, S))

    def step(ctx: StepContext | None = None) -> None:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        del loss
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return model, optimizer, ids, step


def _held(model: Any, optimizer: Any, ids: Any) -> dict[str, list[Any]]:
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return {"parameters": list(model.parameters()), "buffers": list(model.buffers()), "state": state, "ids": [ids]}


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("checkpointing", [False, True], ids=["no-ckpt", "ckpt"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_cpu_backend_equals_mem_tracker(attn: str, checkpointing: bool, lora: bool) -> None:
    model, optimizer, ids, step = _tiny_step(attn, checkpointing, lora)
    first = CpuBackend().measure_step(step, _held(model, optimizer, ids))  # creates AdamW's state
    tracker = _NoGradHooks()
    tracker.track_external(model, optimizer, ids)
    with tracker:
        step()
    oracle = next(iter(tracker.get_tracker_snapshot("peak").values()))["Total"]
    steady = CpuBackend().measure_step(step, _held(model, optimizer, ids))
    assert steady.peak_bytes == oracle
    assert first.peak_bytes < steady.peak_bytes or lora  # the steady step holds the state through backward
    assert steady.start_bytes == steady.end_bytes  # nothing of the step outlives it


def test_views_and_tied_storages_count_once() -> None:
    t = torch.empty(1024, dtype=torch.float32)
    assert storage_bytes([t, t[10:], t.view(32, 32), t.T if t.dim() == 2 else t]) == 4096
    assert storage_bytes([t, torch.empty(10, dtype=torch.int64)]) == 4096 + 80


def test_freed_storages_leave_the_count() -> None:
    def step(ctx: StepContext) -> None:
        for _ in range(3):  # each MiB is freed before the next: the peak holds one
            x = torch.ones(MiB, dtype=torch.uint8)
            ctx.mark("loop")
            del x
        y = torch.ones(2 * MiB, dtype=torch.uint8)
        z = y.view(2, MiB)  # a view: no new storage
        del y, z

    held = torch.empty(MiB, dtype=torch.uint8)
    m = CpuBackend().measure_step(step, {"inputs": [held]})
    assert (m.start_bytes, m.peak_bytes, m.end_bytes) == (MiB, 3 * MiB, MiB)
    assert m.categories_at_peak == {"inputs": MiB, "allocated/loop": 2 * MiB}


def test_out_of_memory_is_a_measurement() -> None:
    def step(ctx: StepContext) -> None:
        x = torch.ones(MiB, dtype=torch.uint8)
        raise torch.OutOfMemoryError(f"simulated, {x.numel()} B held")

    m = CpuBackend().measure_step(step)
    assert m.out_of_memory and m.peak_bytes == MiB


LORA_ALL = {"kind": "lora", "rank": 4, "target_modules": "all-linear"}
FAKE_CASES = {
    "gqa-sdpa": ("llama-3-8b", {"attention": "sdpa"}),
    "gqa-eager-ckpt": ("llama-3-8b", {"attention": "eager", "gradient_checkpointing": "full"}),
    "gqa-lora-ckpt": ("llama-3-8b", {"method": LORA_ALL, "gradient_checkpointing": "full"}),
    "gqa-prompt-autocast": ("llama-3-8b", {"method": {"kind": "prompt"}, "precision": "bf16_autocast"}),
    "mha-prefix-eager": ("llama-2-7b", {"method": {"kind": "prefix", "num_virtual_tokens": 8}, "attention": "eager"}),
    # MoE traces because transformers picks grouped_mm experts on this torch: static shapes, no routing loop
    "moe-sdpa": ("mixtral-8x7b", {"attention": "sdpa"}),
    "mla-moe-lora-ckpt": ("deepseek-v2-lite", {"method": {**LORA_ALL, "rank": 4}, "gradient_checkpointing": "full"}),
}


@pytest.mark.parametrize(("model", "training"), FAKE_CASES.values(), ids=FAKE_CASES.keys())
def test_fake_backend_equals_cpu_backend(model: str, training: dict[str, Any]) -> None:
    # Same shapes, same code paths: the fake trace must count what the real run allocates, byte for byte.
    request = {"model": model, "training": {"sequence_length": 64, "micro_batch_size": 2, **training}}
    cpu, cpu_details = run_probe_detailed(ProbeRequest.model_validate({**request, "backend": "cpu"}))
    fake, fake_details = run_probe_detailed(ProbeRequest.model_validate({**request, "backend": "fake"}))
    measured = [(c.name, c.measured_bytes) for c in cpu.comparisons]
    assert [(c.name, c.measured_bytes) for c in fake.comparisons] == measured
    for step in ("first_step", "steady"):
        assert fake_details.measurements[step].region_peaks == cpu_details.measurements[step].region_peaks


def test_fake_backend_allocates_nothing() -> None:
    backend = FakeBackend()
    with backend.building():
        huge = torch.empty(1 << 40, dtype=torch.uint8)  # 1 TiB

    def step(ctx: StepContext) -> None:
        (huge + 1).sum()

    m = backend.measure_step(step, {"inputs": [huge]})
    assert m.peak_bytes == (2 << 40) + 8  # the input, huge + 1, and the int64 sum


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only fallback")
def test_auto_is_cpu_and_cuda_refuses_without_a_device() -> None:
    assert get_backend("auto").name == "cpu"
    with pytest.raises(BackendUnavailableError, match="CUDA device"):
        get_backend("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_backend_sees_an_allocation() -> None:
    backend = CudaBackend()

    def step(ctx: StepContext) -> None:
        ctx.mark("alloc")
        x = torch.empty(64 * MiB, dtype=torch.uint8, device=backend.device)
        del x

    m = backend.measure_step(step)
    assert m.peak_bytes - m.start_bytes >= 64 * MiB
    assert m.region_peaks["alloc"] == m.peak_bytes and m.device_s is not None
