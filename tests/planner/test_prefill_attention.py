"""The prefill moment of s²-materializing attention (SDPA math, eager) in a serving estimate.

Golden numbers are the live storages at the measured peak of the cpu probe grid (models/: infer/mla-moe, and
infer/gqa with `attention` sdpa_math or eager; 2 layers, B = 4 prompts of s = 256 tokens, bf16; torch 2.13 CPU,
transformers 5.23), summed by hand from `/tmp/d/peak.py`-style listings of the storages created in the prefill.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from planner import InferenceRequest, ServingSpec, estimate_inference, load_catalog, resolve_model
from planner.probe import ProbeScale, scale_down
from planner.serving.memory import activation_terms

PROBE = {"engine": "transformers", "prompt_tokens": 256, "output_tokens": 8, "concurrency": 4}


def terms(model: str, full_size: bool = False, **serving: Any) -> dict[str, int]:
    spec = resolve_model(model, load_catalog()).spec
    spec = spec if full_size else scale_down(spec, ProbeScale())
    return {t.name: t.bytes for t in activation_terms(spec, ServingSpec.model_validate(PROBE | serving))}


def test_mla_math_kernel_moment_is_what_the_probe_holds_at_its_softmax() -> None:
    t = terms("deepseek-v2-lite", attention="sdpa_math")
    # fp32 q, k (4·T·n_h·48 each), v (4·T·n_h·32), q·√scale, the fp32 causal mask 4·s², scores and probabilities
    assert t["activations/attention_scores"] == 3 * 1_572_864 + 1_048_576 + 262_144 + 2 * 8_388_608
    # 3 hidden copies (embedding, layer input, normed input) + q, q_proj out, q_pe, k, kv_b out, kv_a out (bf16)
    assert t["activations/prefill_peak"] == 3 * 524_288 + 786_432 + 786_432 + 262_144 + 786_432 + 1_048_576 + 163_840


def test_gqa_math_kernel_repeats_k_and_v_in_fp32() -> None:
    t = terms("llama-3-8b", attention="sdpa_math")
    # fp32 q and q·√scale, fp32 k and v (2 KV heads), both repeated to 8 heads, the mask, scores and probabilities
    assert t["activations/attention_scores"] == 2 * 1_048_576 + 2 * 262_144 + 2 * 1_048_576 + 262_144 + 2 * 8_388_608
    assert t["activations/prefill_peak"] == 3 * 524_288 + 524_288  # k, v are the KV cache entries


def test_eager_keeps_bf16_scores_their_fp32_copy_and_a_causal_mask() -> None:
    t = terms("llama-3-8b", attention="eager")
    # bf16 scores + mask, their fp32 copy, fp32 probabilities, repeat_kv's k and v
    assert t["activations/attention_scores"] == 4_194_304 + 2 * 8_388_608 + 2 * 524_288
    assert t["activations/attention_mask"] == 524_288


def test_fused_sdpa_has_no_score_terms_and_short_prompts_peak_in_the_ffn() -> None:
    fused = terms("llama-3-8b")
    assert "activations/attention_scores" not in fused and "activations/attention_mask" not in fused
    # Llama-3-8B's FFN (f = 3.5·h) outweighs math's fp32 q, k, v copies and its s² scores at 8-token prompts
    short = terms("llama-3-8b", full_size=True, attention="sdpa_math", prompt_tokens=8)
    assert "activations/attention_scores" not in short
    fused = terms("llama-3-8b", full_size=True, prompt_tokens=8)
    assert short["activations/prefill_peak"] == fused["activations/prefill_peak"]


def test_the_math_kernel_grows_quadratically_in_the_estimate() -> None:
    def activations(attention: str, prompt: int) -> int:
        serving = ServingSpec(engine="transformers", attention=attention, prompt_tokens=prompt, concurrency=1)
        request = InferenceRequest(model="llama-3-8b", gpu="h100-sxm", serving=serving)
        memory = estimate_inference(request, load_catalog()).memory
        return sum(t.bytes for t in memory.terms if t.name.startswith("activations/"))

    fused, math = activations("sdpa", 16384), activations("sdpa_math", 16384)
    assert math - fused > 2 * 4 * 32 * 16384**2  # two fp32 B·n_h·s² tensors for Llama-3-8B's 32 heads
    assert activations("sdpa_math", 32768) > 3.5 * activations("sdpa_math", 16384)


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
@pytest.mark.parametrize("attention", ["sdpa_math", "eager"])
def test_fused_only_engines_refuse_other_kernels(engine: str, attention: str) -> None:
    with pytest.raises(ValidationError) as err:
        ServingSpec(engine=engine, attention=attention)
    assert err.value.errors()[0]["loc"] == ("attention",)
    assert ServingSpec(engine="transformers4", attention=attention).attention == attention
