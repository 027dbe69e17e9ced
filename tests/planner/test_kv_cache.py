"""KV cache bytes against the cache transformers 5 really fills, plus paged rounding, tensor parallelism and MLA."""

from __future__ import annotations

from math import ceil
from typing import Any

import pytest
import torch

from planner import (
    AttentionKind,
    KVLayout,
    SpecError,
    import_hf_config,
    kv_bytes_per_sequence,
    kv_bytes_per_token,
    load_catalog,
)
from planner.model.kv_cache import kv_split
from tests.planner.hf_configs import SLIDING_FAMILIES, random_configs
from tests.planner.oracle import cache_layer_windows, prefill_cache, tensor_bytes

BF16 = 2
CATALOG = load_catalog()
PROMPT = 6  # tokens; below every window here minus one, so no layer has started dropping tokens
WINDOW = 8  # for the past-the-window cases: PROMPT_LONG > WINDOW
PROMPT_LONG = 12


def _tiny(family: str, **extra: Any) -> dict[str, Any]:
    base = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4}
    return {"model_type": family, "vocab_size": 128, **base, **extra}


# Tiny DeepSeek MoE + MLA: d_c = 8, d_R = 2 (the latent cache), d_nope = 4, d_v = 6 (the expanded one).
_MLA = {"kv_lora_rank": 8, "qk_nope_head_dim": 4, "qk_rope_head_dim": 2, "v_head_dim": 6}
_MOE = {"n_routed_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 8, "first_k_dense_replace": 1}
KV_CASES = [
    ("mha", AttentionKind.MHA, _tiny("llama", num_key_value_heads=4)),
    ("gqa", AttentionKind.GQA, _tiny("llama", num_key_value_heads=2)),
    ("mqa", AttentionKind.MQA, _tiny("llama", num_key_value_heads=1)),
    ("mla-v2", AttentionKind.MLA, _tiny("deepseek_v2", q_lora_rank=16, **_MLA, **_MOE)),
    ("mla-v3", AttentionKind.MLA, _tiny("deepseek_v3", q_lora_rank=None, n_group=1, topk_group=1, **_MLA, **_MOE)),
    ("mistral-window", AttentionKind.GQA, _tiny("mistral", num_key_value_heads=2, sliding_window=32)),
    ("gemma2-alternating", AttentionKind.GQA, _tiny("gemma2", num_hidden_layers=3, num_key_value_heads=2, head_dim=16)),
    ("gpt2", AttentionKind.MHA, _tiny("gpt2", bos_token_id=None, eos_token_id=None)),
    ("gpt_neox-partial-rotary", AttentionKind.MHA, _tiny("gpt_neox", rotary_pct=0.25)),
    ("falcon-7b-multi-query", AttentionKind.MQA, _tiny("falcon")),
    ("falcon-mha", AttentionKind.MHA, _tiny("falcon", multi_query=False)),
    (
        "starcoder2-gqa",
        AttentionKind.GQA,
        _tiny("starcoder2", num_key_value_heads=2, bos_token_id=None, eos_token_id=None),
    ),
]
# Not here: Falcon's new_decoder_architecture (Falcon-40B/180B). FalconAttention broadcasts its num_kv_heads K/V heads
# to n_h before the transformers cache stores them; memplan counts the num_kv_heads that vLLM, SGLang and TRT-LLM cache.
SLIDING_CASES = [
    ("mistral", _tiny("mistral", num_key_value_heads=2, sliding_window=WINDOW)),
    ("gemma2", _tiny("gemma2", num_hidden_layers=3, num_key_value_heads=2, head_dim=16, sliding_window=WINDOW)),
]


@pytest.mark.parametrize(("kind", "config"), [c[1:] for c in KV_CASES], ids=[c[0] for c in KV_CASES])
def test_kv_bytes_per_token_equal_transformers_cache(kind: AttentionKind, config: dict[str, Any]) -> None:
    # transformers 5 caches MLA's latent: keys (b, 1, s, d_c), values (b, 1, s, d_R), i.e. KVLayout.MLA_LATENT.
    spec = import_hf_config(config).spec
    assert spec.attention_kind is kind
    assert spec.sliding_window is None or spec.sliding_window - 1 > PROMPT
    cache = prefill_cache(config, PROMPT)
    assert {t.dtype for layer in cache.layers for t in (layer.keys, layer.values)} == {torch.bfloat16}
    assert tensor_bytes(cache) == kv_bytes_per_token(spec, BF16, KVLayout.MLA_LATENT) * PROMPT


def test_kv_cases_include_sliding_layers() -> None:
    windows = {name: cache_layer_windows(config) for name, _, config in KV_CASES}
    assert windows["mistral-window"] == [32, 32]
    assert windows["gemma2-alternating"] == [4096, None, 4096]  # even layers slide (Gemma2 config default window)


# --- sliding windows --------------------------------------------------------------------------------------------

_WINDOW_CASES = [(m.id, m.config) for m in CATALOG.models] + [
    (i, c) for i, c in random_configs(per_family=16, seed=7) if c["model_type"] in SLIDING_FAMILIES
]


@pytest.mark.parametrize("config", [c for _, c in _WINDOW_CASES], ids=[i for i, _ in _WINDOW_CASES])
def test_sliding_window_layers_match_transformers_cache(config: dict[str, Any]) -> None:
    # Which layers slide, and by how much, as the DynamicCache transformers builds for this config.
    spec = import_hf_config(config).spec
    planner = [spec.sliding_window if spec.uses_sliding_window(i) else None for i in range(spec.num_layers)]
    assert planner == cache_layer_windows(config)


_SMOLLM3 = _tiny("smollm3", num_hidden_layers=8, pad_token_id=None, sliding_window=16)


@pytest.mark.parametrize(
    "extra",
    [{}, {"use_sliding_window": True}, {"use_sliding_window": True, "no_rope_layer_interval": 3}],
    ids=["window-off", "nope-every-4th", "nope-every-3rd"],
)
def test_smollm3_nope_layers_slide_with_use_sliding_window(extra: dict[str, Any]) -> None:
    # SmolLM3Config: with use_sliding_window, the NoPE layers (every no_rope_layer_interval-th) slide.
    config = {**_SMOLLM3, **extra}
    spec = import_hf_config(config).spec
    planner = [spec.sliding_window if spec.uses_sliding_window(i) else None for i in range(spec.num_layers)]
    assert planner == cache_layer_windows(config)


def test_window_cases_cover_mixed_layouts() -> None:
    # Qwen2/Qwen3 (layers from max_window_layers on), Qwen2-MoE (even layers below it), Gemma2 and gpt-oss (even
    # layers), Gemma3 (5 sliding : 1 full or layer_types).
    mixed = {c["model_type"] for _, c in _WINDOW_CASES if len({w is None for w in cache_layer_windows(c)}) == 2}
    assert {"qwen2", "qwen2_moe", "qwen3", "gemma2", "gpt_oss", "gemma3_text"} <= mixed


@pytest.mark.parametrize("config", [c for _, c in SLIDING_CASES], ids=[i for i, _ in SLIDING_CASES])
def test_transformers_keeps_window_minus_one_past_the_window(config: dict[str, Any]) -> None:
    # transformers 5 DynamicSlidingWindowLayer keeps the last w-1 tokens between steps; the next query brings the
    # w-th. The planner counts min(s, w), the peak during a step: exactly one token per sliding layer more.
    spec = import_hf_config(config).spec
    split = kv_split(spec, BF16, KVLayout.MLA_LATENT)
    assert split.sliding > 0
    expected = split.full * PROMPT_LONG + split.sliding * (WINDOW - 1)
    assert tensor_bytes(prefill_cache(config, PROMPT_LONG)) == expected
    assert kv_bytes_per_sequence(spec, PROMPT_LONG, BF16) - expected == split.sliding


# --- MLA: latent vs expanded, DeepSeek-V2 -------------------------------------------------------------------------


def test_deepseek_v2_mla_expanded_vs_latent() -> None:
    # DeepSeek-V2 config.json: L=60, n_h=128, d_nope=128, d_R=64, d_v=128, d_c=512; bf16 (2 B).
    #   expanded (per-head K of d_nope + d_R, V of d_v): 60 · 128 · (128 + 64 + 128) · 2 = 4,915,200 B/token
    #   latent (c_KV and k_R):                          60 · (512 + 64) · 2             =    69,120 B/token
    #   69,120 / 4,915,200 = 1.406 % → the latent cache is 98.6 % smaller than the expanded one.
    spec = CATALOG.model("deepseek-v2").spec
    expanded = kv_bytes_per_token(spec, BF16, KVLayout.MLA_EXPANDED)
    latent = kv_bytes_per_token(spec, BF16, KVLayout.MLA_LATENT)
    assert (expanded, latent) == (60 * 128 * (128 + 64 + 128) * 2, 60 * (512 + 64) * 2) == (4_915_200, 69_120)
    assert round(100 * (1 - latent / expanded), 1) == 98.6
    # DeepSeek-V2 Table 1 (arXiv:2405.04434) gives MLA (d_c + d_h^R)·l elements per token and sets d_c = 4·d_h,
    # d_h^R = d_h/2, "equal to GQA with only 2.25 groups" (wording as quoted in
    # hmellor.github.io/ml-notes/models/deepseek/DeepSeek-V2; the PDF was not at hand). With d_h = 128:
    d_h, n_layers = 128, 60
    assert latent == 2 * 2.25 * d_h * n_layers * BF16
    # Not compared with the abstract's "93.3 %": that figure is measured against DeepSeek 67B, another model.


def test_mla_latent_is_replicated_under_tensor_parallelism() -> None:
    # The latent has no head axis to split; every TP rank keeps all of it (planner assumption, kv_cache.py).
    spec = CATALOG.model("deepseek-v2").spec
    assert kv_bytes_per_token(spec, BF16, KVLayout.MLA_LATENT, tensor_parallel=8) == 69_120
    assert kv_bytes_per_token(spec, BF16, KVLayout.MLA_EXPANDED, tensor_parallel=8) == 4_915_200 // 8


# --- paged blocks and tensor parallelism --------------------------------------------------------------------------


@pytest.mark.parametrize(("seq_len", "tokens_allocated"), [(1, 16), (16, 16), (17, 32)])
def test_paged_blocks_round_up_to_block_size(seq_len: int, tokens_allocated: int) -> None:
    # vLLM PagedAttention (Kwon et al. 2023): whole blocks of 16 tokens per sequence.
    spec = CATALOG.model("llama-3-8b").spec
    per_token = kv_bytes_per_token(spec, BF16)
    assert tokens_allocated == ceil(seq_len / 16) * 16
    assert kv_bytes_per_sequence(spec, seq_len, BF16, block_size=16) == tokens_allocated * per_token


def test_llama_3_70b_kv_heads_split_over_tensor_parallel() -> None:
    # Llama-3-70B: L=80, n_kv=8, d_h=128; per token 2 · 80 · 8 · 128 · 2 B = 327,680 B on one GPU.
    spec = CATALOG.model("llama-3-70b").spec
    one_gpu = kv_bytes_per_token(spec, BF16)
    assert one_gpu == 2 * 80 * 8 * 128 * 2 == 327_680
    assert kv_bytes_per_token(spec, BF16, tensor_parallel=8) == one_gpu // 8  # one KV head per GPU
    # TP=16 > 8 KV heads: each head is replicated on two GPUs, every GPU still holds one head.
    assert kv_bytes_per_token(spec, BF16, tensor_parallel=16) == 2 * 80 * 1 * 128 * 2 == 40_960


def test_tensor_parallel_that_does_not_divide_kv_heads_is_rejected() -> None:
    spec = CATALOG.model("llama-3-70b").spec
    with pytest.raises(SpecError, match="tensor_parallel=3"):
        kv_bytes_per_token(spec, BF16, tensor_parallel=3)
