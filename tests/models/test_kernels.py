"""Which SDPA kernel a probe runs: torch's dispatch asked up front, the run spec that says so, and forced math."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

from models.kernels import forced_kernel, hf_attn_implementation, kernel_run, sdpa_picks_math  # noqa: E402
from models.runner import run_probe  # noqa: E402
from planner import ServingSpec, TrainingSpec, load_catalog, resolve_model  # noqa: E402
from planner.probe import ProbeRequest, ProbeResult, ProbeScale, scale_down  # noqa: E402
from planner.training.spec import AttentionImpl  # noqa: E402

CPU = torch.device("cpu")
TINY = {"sequence_length": 64, "micro_batch_size": 2}


def probe_spec(model: str) -> Any:
    return scale_down(resolve_model(model, load_catalog()).spec, ProbeScale())


def probe(**request: Any) -> ProbeResult:
    return run_probe(ProbeRequest.model_validate({"backend": "cpu", **request}))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_cpu_serves_mla_with_the_math_kernel_and_llama_with_flash(dtype: Any) -> None:
    # MLA: q/k head dim d_nope + d_R = 48 ≠ v head dim 32, which CPU flash attention does not take
    assert sdpa_picks_math(probe_spec("deepseek-v2-lite"), dtype, CPU, requires_grad=True)
    for model in ("llama-3-8b", "llama-2-7b"):  # GQA through enable_gqa, MHA
        assert not sdpa_picks_math(probe_spec(model), dtype, CPU, requires_grad=True)
        assert not sdpa_picks_math(probe_spec(model), dtype, CPU, requires_grad=True, masked=True)


def test_the_run_spec_names_the_kernel_torch_picks() -> None:
    mla, llama = probe_spec("deepseek-v2-lite"), probe_spec("llama-3-8b")
    assert kernel_run(mla, TrainingSpec(), CPU).attention is AttentionImpl.SDPA_MATH
    assert kernel_run(llama, TrainingSpec(), CPU).attention is AttentionImpl.SDPA
    assert kernel_run(mla, TrainingSpec(attention="eager"), CPU).attention is AttentionImpl.EAGER
    serving = ServingSpec(engine="transformers")
    assert kernel_run(mla, serving, CPU).attention is AttentionImpl.SDPA_MATH
    assert kernel_run(llama, serving, CPU) == serving


def test_sdpa_math_builds_transformers_sdpa_and_forces_the_math_kernel() -> None:
    assert hf_attn_implementation(AttentionImpl.SDPA_MATH) == "sdpa"
    assert hf_attn_implementation(AttentionImpl.EAGER) == "eager"
    q = torch.randn(1, 2, 4, 8, requires_grad=True)
    with forced_kernel(AttentionImpl.SDPA_MATH):
        out = torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    assert out.grad_fn is not None and "Flash" not in type(out.grad_fn).__name__
    with forced_kernel(AttentionImpl.SDPA):
        out = torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    assert "Flash" in type(out.grad_fn).__name__


def test_an_mla_probe_compares_with_the_math_kernel_it_ran() -> None:
    result = probe(model="deepseek-v2-lite", training={**TINY, "attention": "sdpa"})
    assert result.training is not None and result.training.attention is AttentionImpl.SDPA_MATH
    assert result.hf_config["attn_implementation"] == "sdpa"
    serving = {"engine": "transformers", "prompt_tokens": 32, "output_tokens": 2, "concurrency": 2}
    served = probe(kind="inference", model="deepseek-v2-lite", serving=serving)
    assert served.serving is not None and served.serving.attention is AttentionImpl.SDPA_MATH


def test_sdpa_math_asked_where_flash_would_run_is_forced_and_matches_to_the_byte() -> None:
    result = probe(model="llama-3-8b", training={**TINY, "attention": "sdpa_math"})
    assert result.training is not None and result.training.attention is AttentionImpl.SDPA_MATH
    saved = next(c for c in result.comparisons if c.name == "saved_activations")
    assert saved.exact and saved.measured_bytes == saved.estimated_bytes
    fused = next(c for c in probe(model="llama-3-8b", training=TINY).comparisons if c.name == "saved_activations")
    assert fused.measured_bytes < saved.measured_bytes  # the fp32 s² softmax and fp32 q, k, v are really there
