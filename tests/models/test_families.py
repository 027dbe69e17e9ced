"""Every family memplan imports, probed on the cpu backend: the same claims as the grid (tests/models/test_grid.py),
on small configs of each transformers model class, so a family's own layout (Gemma's fp32 norm scaling, Qwen3's
q/k norms, Phi-3's fused qkv, Gemma-2's soft-capping, Mistral's sliding window, each MoE router) stays exact.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("torch")

from models.runner import run_probe
from planner import SpecError, import_hf_config
from planner.probe import ProbeRequest

PEAK_TOLERANCE = 0.03
BASE = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 8,
        "num_key_value_heads": 2, "vocab_size": 1024, "head_dim": 32}  # fmt: skip
QWEN_MOE = {"num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 128}
DEEPSEEK = {"n_routed_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 128, "first_k_dense_replace": 1,
            "n_group": 1, "topk_group": 1, "q_lora_rank": None, "kv_lora_rank": 64, "qk_nope_head_dim": 32,
            "qk_rope_head_dim": 16, "v_head_dim": 32, "num_key_value_heads": 8}  # fmt: skip
FAMILIES: dict[str, tuple[dict[str, Any], str]] = {
    "llama": ({"model_type": "llama"}, "sdpa"),
    "mistral/window": ({"model_type": "mistral", "sliding_window": 64}, "sdpa"),  # 128 tokens > the window: a mask
    "qwen2": ({"model_type": "qwen2"}, "sdpa"),
    "qwen3": ({"model_type": "qwen3"}, "sdpa"),
    "gemma": ({"model_type": "gemma"}, "sdpa"),
    "gemma2": ({"model_type": "gemma2"}, "eager"),
    "phi3": ({"model_type": "phi3"}, "sdpa"),
    "phi3/eager": ({"model_type": "phi3"}, "eager"),
    "mixtral": ({"model_type": "mixtral", "num_local_experts": 8}, "sdpa"),
    "qwen2_moe": ({"model_type": "qwen2_moe", **QWEN_MOE, "shared_expert_intermediate_size": 256}, "sdpa"),
    "qwen3_moe": ({"model_type": "qwen3_moe", **QWEN_MOE}, "sdpa"),
    "qwen3_moe/norm_topk": ({"model_type": "qwen3_moe", **QWEN_MOE, "norm_topk_prob": True}, "sdpa"),
    "deepseek_v2": ({"model_type": "deepseek_v2", **DEEPSEEK}, "sdpa"),
    "deepseek_v3": ({"model_type": "deepseek_v3", **DEEPSEEK}, "sdpa"),
}


def _probe(config: dict[str, Any], attention: str) -> ProbeRequest:
    training = {"sequence_length": 128, "micro_batch_size": 2, "attention": attention}
    return ProbeRequest.model_validate({"kind": "training", "model": {**BASE, **config}, "backend": "cpu",
                                        "training": training})  # fmt: skip


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_probe_matches_planner(family: str) -> None:
    r = run_probe(_probe(*FAMILIES[family]))
    off = [f"{c.name}: measured {c.measured_bytes:,} B, planner {c.estimated_bytes:,} B"
           for c in r.comparisons if c.exact and c.measured_bytes != c.estimated_bytes]  # fmt: skip
    wide = [f"{c.name}: {100 * c.rel_error:+.2f} %" for c in r.comparisons
            if c.name.startswith("peak/") and abs(c.rel_error) > PEAK_TOLERANCE]  # fmt: skip
    assert not off + wide, off + wide


def test_deepseek_v3_saved_activations_are_claimed_approximate_only() -> None:
    # measured 11,337,764 B every run since the probe counts a storage at a reused address again (it measured
    # 10.22–11.34 MB before, by the allocator's reuse); planned 11,329,572 (−0.07 %): the router keeps tensors that
    # depend on the routing, which the ledger sizes for all tokens
    r = run_probe(_probe(*FAMILIES["deepseek_v3"]))
    saved = next(c for c in r.comparisons if c.name == "saved_activations")
    assert not saved.exact and abs(saved.rel_error) < PEAK_TOLERANCE


@pytest.mark.parametrize(("config", "renormalized"), [
    ({"model_type": "mixtral"}, True),
    ({"model_type": "qwen2_moe", **QWEN_MOE}, False),  # Qwen2MoeConfig and Qwen3MoeConfig default norm_topk_prob False
    ({"model_type": "qwen3_moe", **QWEN_MOE, "norm_topk_prob": True}, True),
    ({"model_type": "deepseek_v2", **DEEPSEEK, "norm_topk_prob": True}, False),  # V2's router never renormalizes
    ({"model_type": "deepseek_v3", **DEEPSEEK}, True),  # DeepseekV3Config defaults norm_topk_prob True
])  # fmt: skip
def test_norm_topk_prob_is_read_from_config_json(config: dict[str, Any], renormalized: bool) -> None:
    moe = import_hf_config({**BASE, **config}).spec.moe
    assert moe is not None and moe.renormalize_top_k is renormalized


def test_gemma2_has_no_sdpa_probe() -> None:
    with pytest.raises(SpecError) as err:
        run_probe(_probe({"model_type": "gemma2"}, "sdpa"))
    assert err.value.problems[0].loc == ("training", "attention")


def _serving(config: dict[str, Any], attention: str, concurrency: int, prompt: int) -> ProbeRequest:
    serving = {"engine": "transformers", "prompt_tokens": prompt, "output_tokens": 8, "concurrency": concurrency,
               "attention": attention}  # fmt: skip
    return ProbeRequest.model_validate({"kind": "inference", "model": {**BASE, **config}, "backend": "cpu",
                                        "serving": serving})  # fmt: skip


# Known misses, as measured: the transformers engine's prefill at moments the planner does not size yet.
SERVING_XFAIL = {
    ("phi3/eager", 16, 64): "−4.67 %: eager attention over Phi-3's split qkv output, short prompts",
    ("deepseek_v2", 16, 64): "−4.26 %: SDPA math for MLA peaks at probs·v (fp32 output, v copy), not the softmax",
    ("deepseek_v3", 16, 64): "−4.26 %: as deepseek_v2",
}


def _serving_param(family: str, concurrency: int, prompt: int) -> object:
    reason = SERVING_XFAIL.get((family, concurrency, prompt))
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(family, concurrency, prompt, id=f"{family}-{concurrency}x{prompt}", marks=marks)


@pytest.mark.parametrize(
    ("family", "concurrency", "prompt"),
    [_serving_param(f, c, s) for f in FAMILIES for c, s in ((4, 256), (16, 64))],
)
def test_family_serving_probe_matches_planner(family: str, concurrency: int, prompt: int) -> None:
    r = run_probe(_serving(*FAMILIES[family], concurrency, prompt))
    off = [c.name for c in r.comparisons if c.exact and c.measured_bytes != c.estimated_bytes]
    peak = next(c for c in r.comparisons if c.name == "peak/inference")
    assert not off and abs(peak.rel_error) <= PEAK_TOLERANCE, (off, peak.rel_error)
