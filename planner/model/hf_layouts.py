"""The GPT-style families' own config keys and block layouts: GPT-2, GPT-NeoX, Falcon, StarCoder2.

Their config classes name the dimensions their own way (GPT-2's n_embd, Falcon's num_kv_heads and ffn_hidden_size),
ignore keys other families read (head_dim, num_key_value_heads), and build blocks with a plain MLP, LayerNorms with
biases, learned or partial rotary positions and, for Falcon, a KV layout chosen by three flags. `canonical_config`
rewrites a config into the canonical keys hf_import reads; `layout_fields` gives the ModelSpec fields of the block.
"""

from __future__ import annotations

import math
from typing import Any

from planner.model.hf_config import HFConfig
from planner.model.hf_families import Family

__all__ = ["DEFAULT_ROTARY_PCT", "canonical_config", "config_key", "layout_fields", "rotary_pct"]

DEFAULT_ROTARY_PCT = 0.25  # GPTNeoXConfig.convert_rope_params_to_dict: partial_rotary_factor from rotary_pct
FALCON_LN_IN_PARALLEL_NEW = 2  # FalconDecoderLayer: num_ln_in_parallel_attn defaults to 2 with the new architecture


def config_key(family: Family, canonical: str) -> str:
    """The key a config of this family holds `canonical` under (GPT-2: hidden_size is n_embd), for error messages."""
    return family.own_keys.get(canonical) or family.key_aliases.get(canonical) or canonical


def canonical_config(cfg: HFConfig, family: Family) -> HFConfig:
    """The config in canonical keys, as the family's config class reads it.

    An own key (Falcon num_kv_heads, GPT-2 n_inner) replaces the canonical key, which that class ignores, as it ignores
    `ignored_keys`; an attribute_map alias (GPT-2 n_embd) is read when the canonical key is absent; a legacy key
    (Falcon n_embed) wins when not null; a null or absent FFN width is ffn_multiple·h (GPT2MLP: 4·h when n_inner is
    None; FalconConfig.__post_init__).
    """
    if not (family.own_keys or family.key_aliases or family.legacy_keys or family.ignored_keys):
        return cfg
    given = cfg.model_dump(by_alias=True, exclude_unset=True)
    data = {k: v for k, v in given.items() if k not in family.ignored_keys and k not in family.own_keys}
    for canonical, own in family.own_keys.items():
        if own in given:
            data[canonical] = given[own]
    for canonical, alias in family.key_aliases.items():
        if alias in given and canonical not in given:
            data[canonical] = given[alias]
    for canonical, legacy in family.legacy_keys.items():
        if given.get(legacy) is not None:
            data[canonical] = given[legacy]
    if family.ffn_multiple and data.get("intermediate_size") is None and isinstance(data.get("hidden_size"), int):
        data["intermediate_size"] = family.ffn_multiple * data["hidden_size"]
    return HFConfig.model_validate(data)


def layout_fields(cfg: HFConfig, family: Family) -> dict[str, Any]:
    """ModelSpec fields of the family's block beyond heads and widths: MLP kind, norms, positions, Falcon's layout."""
    fields: dict[str, Any] = {
        "mlp_kind": family.mlp,
        "norm_bias": family.norm_bias,
        "learned_positions": family.learned_positions,
    }
    if family.rotary == "none":
        fields["rotary_dim"] = 0
    elif family.rotary == "partial":
        fields["rotary_dim"] = _partial_rotary_dim(cfg)
    if family.falcon:
        fields |= _falcon_fields(cfg)
    return fields


def _partial_rotary_dim(cfg: HFConfig) -> int | None:
    """GPT-NeoX: int(d_h · partial_rotary_factor), the factor from rope_parameters (or rope_scaling, which replaces
    it), else rotary_pct, else 0.25 (GPTNeoXAttention.rotary_ndims); null when it is the whole head."""
    rope = getattr(cfg, "rope_scaling", None) or cfg.rope_parameters or {}
    factor = rope.get("partial_rotary_factor") if isinstance(rope, dict) else None
    if not isinstance(factor, int | float) or isinstance(factor, bool):
        factor = cfg.rotary_pct if cfg.rotary_pct is not None else DEFAULT_ROTARY_PCT
    d_h = (cfg.hidden_size or 0) // (cfg.num_attention_heads or 1)
    rotary = int(d_h * factor)
    return None if rotary == d_h else rotary


def rotary_pct(rotary_dim: int, head_dim: int) -> float:
    """The smallest rotary_pct whose int(d_h · pct) is `rotary_dim` (r / d_h can round just below it)."""
    pct = rotary_dim / head_dim
    while int(head_dim * pct) < rotary_dim:
        pct = math.nextafter(pct, math.inf)
    return pct


def _falcon_fields(cfg: HFConfig) -> dict[str, Any]:
    """Falcon's attention and norms, as FalconAttention and FalconDecoderLayer build them.

    KV heads: num_kv_heads (default n_h) with new_decoder_architecture, 1 with multi_query (default), else n_h;
    query_key_value is h→(n_h + 2·n_kv)·d_h. Norms: two (input and post-attention) without parallel_attn; else ln_attn
    and ln_mlp when num_ln_in_parallel_attn is 2 (the new architecture's default), one input_layernorm otherwise.
    `bias` (default False) biases every linear; ALiBi replaces RoPE.
    """
    n_h = cfg.num_attention_heads
    new_arch = bool(cfg.new_decoder_architecture)
    old_arch_kv = 1 if cfg.value("multi_query", True) else n_h
    n_kv = (cfg.num_key_value_heads or n_h) if new_arch else old_arch_kv
    num_ln = cfg.num_ln_in_parallel_attn or (FALCON_LN_IN_PARALLEL_NEW if new_arch else None)
    parallel = cfg.value("parallel_attn", True)
    norms = 2 if not parallel or num_ln == FALCON_LN_IN_PARALLEL_NEW else 1
    bias = bool(cfg.bias)
    return {
        "num_kv_heads": n_kv,
        "norms_per_layer": norms,
        "qkv_bias": bias,
        "o_bias": bias,
        "mlp_bias": bias,
        "rotary_dim": 0 if cfg.alibi else None,
    }
