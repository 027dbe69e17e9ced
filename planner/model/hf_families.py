"""How each transformers family lays out its modules, with its config-class defaults (transformers 5.x), as data.

planner.model.hf_import reads a config.json through these tables: a decoder family (`FAMILIES`), a family only
found under a vision-language config's `text_config` (`TEXT_FAMILIES`), an alias transformers itself rewrites
(`MODEL_TYPE_ALIASES`), or a vision-language wrapper whose language model is counted alone (`COMPOSITES`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["COMPOSITES", "FAMILIES", "MODEL_TYPE_ALIASES", "TEXT_FAMILIES", "Composite", "Family"]


@dataclass(frozen=True)
class Family:
    """How one transformers family lays out its modules, and its config-class defaults."""

    defaults: dict[str, Any] = field(default_factory=dict)
    qkv_bias: str | bool = False  # a config key, or a constant for the family
    o_bias: str | bool = False
    mlp_bias: str | bool = False
    qk_norm: str | bool = False  # a config key (Cohere use_qk_norm), or a constant for the family
    qk_norm_type: str = "per_head"  # "per_layer": over the whole q and k projections (MiniMax-M2, OLMo-2)
    attention_sinks: bool = False  # gpt-oss: a learned logit per head
    norms_per_layer: int = 2
    moe: str | None = None  # "mixtral", "qwen", "deepseek", "gpt_oss", "minimax", "olmoe"
    shared_expert_gate: bool = False  # Qwen2-MoE: a sigmoid gate h->1 on the shared expert
    renormalize_top_k: bool | None = None  # None: from norm_topk_prob; a constant where the router ignores it
    mla: bool = False
    window: str = "none"  # "all", "qwen", "qwen_moe", "all_if_enabled", "pattern", "smollm3", "none"
    window_pattern: int = 2  # "pattern": layer i slides unless (i + 1) % pattern == 0
    layout: str | None = None  # the model_type whose modules these are (ModelSpec.family), when not its own
    # GPT-style blocks (planner.model.hf_layouts): a plain fc_in/fc_out MLP, LayerNorms with biases, learned positions
    mlp: str = "gated"  # ModelSpec.mlp_kind
    norm_bias: bool = False
    learned_positions: bool = False
    rotary: str = "full"  # "full" (d_h), "partial" (GPT-NeoX rotary_pct), "none" (learned positions), "falcon"
    key_aliases: dict[str, str] = field(default_factory=dict)  # attribute_map: canonical key -> the family's name,
    # read when the canonical key is absent (GPT2Config: a given hidden_size, null included, wins over n_embd)
    legacy_keys: dict[str, str] = field(default_factory=dict)  # canonical key -> a legacy name that wins when not null
    own_keys: dict[str, str] = field(default_factory=dict)  # canonical key -> the key read instead (canonical ignored)
    ignored_keys: tuple[str, ...] = ()  # canonical keys the family's transformers classes never read
    ffn_multiple: int | None = None  # f = multiple·h when the FFN width is absent or null (GPT-2 n_inner, Falcon)
    falcon: bool = False  # KV heads, biases and norms from Falcon's multi_query / new_decoder_architecture flags


_ATTN_BIAS = "attention_bias"  # llama-style: one flag for q, k, v and o biases
DEEPSEEK_MLA = {
    "q_lora_rank": 1536,
    "kv_lora_rank": 512,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
}
_QWEN3_MOE_DEFAULTS = {
    "num_key_value_heads": 4,
    "intermediate_size": 6144,
    "sliding_window": 4096,
    "max_position_embeddings": 32768,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "moe_intermediate_size": 768,
}

FAMILIES: dict[str, Family] = {
    "llama": Family({"max_position_embeddings": 2048}, mlp_bias="mlp_bias", qkv_bias=_ATTN_BIAS, o_bias=_ATTN_BIAS),
    "mistral": Family(
        {"num_key_value_heads": 8, "sliding_window": 4096, "max_position_embeddings": 131072}, window="all"
    ),
    "mixtral": Family(
        {"num_key_value_heads": 8, "max_position_embeddings": 131072, "num_local_experts": 8, "num_experts_per_tok": 2},
        moe="mixtral",
        window="all",
    ),
    "qwen2": Family(
        {"num_key_value_heads": 32, "sliding_window": 4096, "max_window_layers": 28, "max_position_embeddings": 32768},
        qkv_bias=True,
        window="qwen",
    ),
    "qwen2_moe": Family(
        {
            "num_key_value_heads": 16,
            "intermediate_size": 5632,
            "sliding_window": 4096,
            "max_window_layers": 28,
            "max_position_embeddings": 32768,
            "num_experts": 60,
            "num_experts_per_tok": 4,
            "moe_intermediate_size": 1408,
            "shared_expert_intermediate_size": 5632,
            "qkv_bias": True,
        },
        qkv_bias="qkv_bias",
        moe="qwen",
        shared_expert_gate=True,
        window="qwen_moe",
    ),
    "qwen3": Family(
        {
            "num_key_value_heads": 32,
            "head_dim": 128,
            "sliding_window": 4096,
            "max_window_layers": 28,
            "max_position_embeddings": 32768,
        },
        qk_norm=True,
        window="qwen",
        qkv_bias=_ATTN_BIAS,
        o_bias=_ATTN_BIAS,
    ),
    "qwen3_moe": Family(
        _QWEN3_MOE_DEFAULTS,
        qk_norm=True,
        moe="qwen",
        window="all_if_enabled",
        qkv_bias=_ATTN_BIAS,
        o_bias=_ATTN_BIAS,
    ),
    "deepseek_v2": Family(
        {
            "intermediate_size": 11008,
            "max_position_embeddings": 2048,
            "n_routed_experts": 64,
            "n_shared_experts": 2,
            "moe_intermediate_size": 1407,
            "first_k_dense_replace": 0,
            **DEEPSEEK_MLA,
        },
        mlp_bias="mlp_bias",
        moe="deepseek",
        renormalize_top_k=False,  # V2's router scales by routed_scaling_factor instead
        mla=True,
        qkv_bias=_ATTN_BIAS,
        o_bias=_ATTN_BIAS,
    ),
    "deepseek_v3": Family(
        {
            "intermediate_size": 18432,
            "max_position_embeddings": 4096,
            "n_routed_experts": 256,
            "n_shared_experts": 1,
            "num_experts_per_tok": 8,
            "moe_intermediate_size": 2048,
            "first_k_dense_replace": 3,
            "norm_topk_prob": True,
            **DEEPSEEK_MLA,
        },
        moe="deepseek",
        mla=True,
        qkv_bias=_ATTN_BIAS,
        o_bias=_ATTN_BIAS,
    ),
    "gemma": Family(
        {"num_key_value_heads": 16, "head_dim": 256, "tie_word_embeddings": True, "max_position_embeddings": 8192},
        qkv_bias=_ATTN_BIAS,
        o_bias=_ATTN_BIAS,
    ),
    "gemma2": Family(
        {
            "num_key_value_heads": 4,
            "head_dim": 256,
            "tie_word_embeddings": True,
            "sliding_window": 4096,
            "max_position_embeddings": 8192,
        },
        norms_per_layer=4,
        window="pattern",  # even layers slide
        qkv_bias=_ATTN_BIAS,
        o_bias=_ATTN_BIAS,
    ),
    # Gemma3TextConfig: 4 norms per block like Gemma2, per-head q/k norms like Qwen3, 5 sliding : 1 full layers
    "gemma3_text": Family(
        {
            "num_key_value_heads": 4,
            "head_dim": 256,
            "intermediate_size": 9216,
            "tie_word_embeddings": True,
            "sliding_window": 4096,
            "max_position_embeddings": 131072,
        },
        norms_per_layer=4,
        qk_norm=True,
        window="pattern",
        window_pattern=6,  # sliding_window_pattern, read from the config when given
        qkv_bias=_ATTN_BIAS,
        o_bias=_ATTN_BIAS,
    ),
    "phi3": Family({"max_position_embeddings": 4096}, window="all"),
    # GptOssConfig: biases on q, k, v, o (attention_bias defaults True), a sink logit per head, even layers slide
    # over 128 tokens, 128 experts of intermediate_size with biases and a biased router, softmax over the top k.
    "gpt_oss": Family(
        {
            "num_key_value_heads": 8,
            "head_dim": 64,
            "intermediate_size": 2880,
            "sliding_window": 128,
            "max_position_embeddings": 131072,
            "num_local_experts": 128,
            "num_experts_per_tok": 4,
            "attention_bias": True,
        },
        qkv_bias=_ATTN_BIAS,
        o_bias=_ATTN_BIAS,
        attention_sinks=True,
        moe="gpt_oss",
        renormalize_top_k=True,
        window="pattern",
    ),
    # MiniMaxM2Config: every layer MoE (experts intermediate_size wide), sigmoid router with a correction-bias
    # buffer (not a parameter), q/k RMSNorms over the whole projections built whatever use_qk_norm says.
    "minimax_m2": Family(
        {
            "num_key_value_heads": 8,
            "head_dim": 128,
            "intermediate_size": 1536,
            "max_position_embeddings": 196608,
            "num_local_experts": 256,
            "num_experts_per_tok": 8,
        },
        qk_norm=True,
        qk_norm_type="per_layer",
        moe="minimax",
        renormalize_top_k=True,
    ),
    # Olmo2Config: no pre-norms, a norm after attention and after the MLP; q/k norms over the whole projections
    "olmo2": Family(
        {"max_position_embeddings": 2048},
        qkv_bias=_ATTN_BIAS,
        o_bias=_ATTN_BIAS,
        qk_norm=True,
        qk_norm_type="per_layer",
    ),
    # OlmoeConfig: every layer MoE, 64 experts of intermediate_size, softmax router (norm_topk_prob default False);
    # q_norm h wide, k_norm (h / n_h)·n_kv (OlmoeAttention): per_layer when head_dim is h / n_h
    "olmoe": Family(
        {
            "intermediate_size": 2048,
            "max_position_embeddings": 4096,
            "num_experts": 64,
            "num_experts_per_tok": 8,
        },
        qkv_bias=_ATTN_BIAS,
        o_bias=_ATTN_BIAS,
        qk_norm=True,
        qk_norm_type="per_layer",
        moe="olmoe",
    ),
    # GraniteConfig: Llama's modules; its multipliers (embedding, residual, attention, logits) are scalars
    "granite": Family({"max_position_embeddings": 2048}, qkv_bias=_ATTN_BIAS, o_bias=_ATTN_BIAS, mlp_bias="mlp_bias"),
    # SmolLM3Config: Llama's modules, tied; NoPE layers have no parameters; windows only with use_sliding_window
    "smollm3": Family(
        {
            "num_key_value_heads": 4,
            "intermediate_size": 11008,
            "max_position_embeddings": 32768,
            "tie_word_embeddings": True,
        },
        qkv_bias=_ATTN_BIAS,
        o_bias=_ATTN_BIAS,
        mlp_bias="mlp_bias",
        window="smollm3",
    ),
    # Glm4Config: attention_bias (default True) on q, k, v only; fused gate_up_proj (2·h·f, as gate + up);
    # four norms per block (input, post_self_attn, post_attention, post_mlp)
    "glm4": Family(
        {
            "num_key_value_heads": 2,
            "head_dim": 128,
            "intermediate_size": 13696,
            "max_position_embeddings": 131072,
            "attention_bias": True,
        },
        qkv_bias=_ATTN_BIAS,
        norms_per_layer=4,
    ),
    # CohereConfig: one LayerNorm (weight only) feeds attention and the MLP in parallel; use_qk_norm adds
    # (n_h, d_h) and (n_kv, d_h) LayerNorm weights; tied by default
    "cohere": Family(
        {"intermediate_size": 22528, "max_position_embeddings": 8192, "tie_word_embeddings": True},
        qkv_bias=_ATTN_BIAS,
        o_bias=_ATTN_BIAS,
        qk_norm="use_qk_norm",
        qk_norm_type="per_layer",
        norms_per_layer=1,
    ),
    # GPT2Config: n_embd / n_layer / n_head / n_positions (attribute_map), Conv1D c_attn (q, k, v fused) and c_proj,
    # c_fc / c_proj MLP n_inner wide (null: 4·h), every one biased; LayerNorms ln_1, ln_2, ln_f with biases; learned
    # positions wpe (n_positions × h); lm_head tied by default. head_dim and num_key_value_heads are never read (MHA).
    "gpt2": Family(
        {"max_position_embeddings": 1024, "tie_word_embeddings": True},
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        mlp="plain",
        norm_bias=True,
        learned_positions=True,
        rotary="none",
        key_aliases={
            "hidden_size": "n_embd",
            "num_hidden_layers": "n_layer",
            "num_attention_heads": "n_head",
            "max_position_embeddings": "n_positions",
        },
        own_keys={"intermediate_size": "n_inner"},
        ignored_keys=("head_dim", "num_key_value_heads"),
        ffn_multiple=4,
    ),
    # GPTNeoXConfig: fused query_key_value h→3h and dense h→h (attention_bias, default True), MLP dense_h_to_4h /
    # dense_4h_to_h always biased, LayerNorms with biases, partial RoPE (rotary_pct 0.25), an untied lm_head
    # (embed_out in transformers 4); use_parallel_residual changes the dataflow, not the parameters (MHA only).
    "gpt_neox": Family(
        {"intermediate_size": 24576, "max_position_embeddings": 2048, "attention_bias": True},
        qkv_bias=_ATTN_BIAS,
        o_bias=_ATTN_BIAS,
        mlp_bias=True,
        mlp="plain",
        norm_bias=True,
        rotary="partial",
        ignored_keys=("head_dim", "num_key_value_heads"),
    ),
    # FalconConfig: fused query_key_value (n_h + 2·n_kv)·d_h with n_kv 1 (multi_query), n_h, or num_kv_heads
    # (new_decoder_architecture); `bias` on every linear; dense_h_to_4h / dense_4h_to_h ffn_hidden_size wide (4·h);
    # one LayerNorm (parallel_attn), ln_attn + ln_mlp (new architecture, num_ln_in_parallel_attn 2) or two in series;
    # RoPE or ALiBi (no parameters either way); tied by default. n_embed is a legacy name of hidden_size.
    "falcon": Family(
        {"max_position_embeddings": 2048, "tie_word_embeddings": True},
        mlp="plain",
        norm_bias=True,
        legacy_keys={"hidden_size": "n_embed"},  # FalconConfig.__post_init__
        own_keys={"num_key_value_heads": "num_kv_heads", "intermediate_size": "ffn_hidden_size"},
        ignored_keys=("head_dim",),
        ffn_multiple=4,
        falcon=True,
    ),
    # Starcoder2Config: GQA q/k/v/o and c_fc / c_proj MLP, all biased with use_bias (default True), LayerNorms with
    # biases (norm_epsilon), RoPE, every layer slides when sliding_window is set; tied by default.
    "starcoder2": Family(
        {
            "num_key_value_heads": 2,
            "intermediate_size": 12288,
            "max_position_embeddings": 4096,
            "use_bias": True,
            "tie_word_embeddings": True,
        },
        qkv_bias="use_bias",
        o_bias="use_bias",
        mlp_bias="use_bias",
        mlp="plain",
        norm_bias=True,
        window="all",
    ),
}

# Families transformers builds only inside a vision-language model (no ForCausalLM of their own).
TEXT_FAMILIES: dict[str, Family] = {
    # Qwen3VLTextConfig: Qwen3's modules, no sliding window
    "qwen3_vl_text": Family(
        {"num_key_value_heads": 32, "head_dim": 128, "intermediate_size": 22016, "max_position_embeddings": 128000},
        qk_norm=True,
        qkv_bias=_ATTN_BIAS,
        o_bias=_ATTN_BIAS,
        layout="qwen3",
    ),
    # Qwen3VLMoeTextConfig: Qwen3-MoE's modules, no sliding window, the router always renormalizes its top k
    "qwen3_vl_moe_text": Family(
        {
            "num_key_value_heads": 16,
            "intermediate_size": 5632,
            "max_position_embeddings": 128000,
            "num_experts": 60,
            "num_experts_per_tok": 4,
            "moe_intermediate_size": 1408,
        },
        qk_norm=True,
        moe="qwen",
        renormalize_top_k=True,
        qkv_bias=_ATTN_BIAS,
        o_bias=_ATTN_BIAS,
        layout="qwen3_moe",
    ),
}

# model_types transformers reads as another family (Kimi_K25Config.__post_init__: "kimi_k2" -> "deepseek_v3").
MODEL_TYPE_ALIASES: dict[str, str] = {"kimi_k2": "deepseek_v3"}


@dataclass(frozen=True)
class Composite:
    """A vision-language config: the language model under `text_config`, the rest left out of the counts."""

    text_model_type: str  # the config class's default text_config model_type
    tie_default: bool  # the wrapper config's tie_word_embeddings default: it, not text_config's, ties lm_head
    left_out: str  # what is not counted, for the warning
    tie_from_text: bool = False  # LlavaConfig.__post_init__ also ties when text_config ties


COMPOSITES: dict[str, Composite] = {
    "kimi_k25": Composite("deepseek_v3", True, "the MoonViT vision tower and the mm_projector (patch merger)"),
    "qwen3_vl": Composite("qwen3_vl_text", False, "the vision tower (visual) and its patch-merger projector"),
    "qwen3_vl_moe": Composite("qwen3_vl_moe_text", False, "the vision tower (visual) and its patch-merger projector"),
    "gemma3": Composite("gemma3_text", True, "the SigLIP vision tower and the multi_modal_projector"),
    "llava": Composite("llama", False, "the CLIP vision tower and the multi_modal_projector", tie_from_text=True),
    "mistral3": Composite("mistral", True, "the Pixtral vision tower and the multi_modal_projector"),
}
