"""Small config.json dicts for every supported family: seeded random ones, and ones that lean on family defaults."""

from __future__ import annotations

import random
from typing import Any

__all__ = [
    "COMPOSITE_CASES",
    "COMPOSITE_FAMILIES",
    "DEFAULTS_CASES",
    "FAMILIES",
    "GPT_FAMILIES",
    "PUBLISHED_CONFIGS",
    "PUBLISHED_TOTALS",
    "SLIDING_FAMILIES",
    "random_composite_configs",
    "random_config",
    "random_configs",
]

FAMILIES = (
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen2_moe",
    "qwen3",
    "qwen3_moe",
    "deepseek_v2",
    "deepseek_v3",
    "gemma",
    "gemma2",
    "phi3",
    "gpt_oss",
    "minimax_m2",
    "gemma3_text",
    "olmo2",
    "olmoe",
    "granite",
    "smollm3",
    "glm4",
    "cohere",
    "gpt2",
    "gpt_neox",
    "falcon",
    "starcoder2",
)
MOE_FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3", "gpt_oss", "minimax_m2", "olmoe")
# Vision-language wrappers and the text model types each is generated with (transformers reads "kimi_k2" as
# deepseek_v3, Kimi_K25Config.__post_init__).
COMPOSITE_FAMILIES: dict[str, tuple[str, ...]] = {
    "kimi_k25": ("kimi_k2", "deepseek_v3"),
    "qwen3_vl": ("qwen3_vl_text",),
    "qwen3_vl_moe": ("qwen3_vl_moe_text",),
    "gemma3": ("gemma3_text",),
    "llava": ("llama", "mistral", "qwen2"),
    "mistral3": ("mistral",),
}
# Families whose config class defines sliding_window. transformers 5 gives any config carrying the key a sliding
# cache (cache_utils.get_layer_types_and_kwargs), so the key is not sprinkled on the others.
SLIDING_FAMILIES = (
    "mistral",
    "mixtral",
    "qwen2",
    "qwen2_moe",
    "qwen3",
    "qwen3_moe",
    "gemma2",
    "phi3",
    "gpt_oss",
    "gemma3_text",
    "starcoder2",
)
# Families whose config class gives head_dim a default of its own (qwen3: 128, gemma/gemma2/gemma3: 256,
# gpt-oss: 64, MiniMax-M2: 128).
HEAD_DIM_DEFAULT = ("qwen3", "gemma", "gemma2", "qwen3_vl_text", "gpt_oss", "minimax_m2", "gemma3_text", "glm4")
# Families whose layer_types (sliding / full per layer) config.json may give explicitly.
LAYER_TYPES_FAMILIES = ("gpt_oss", "gemma3_text")
# Families whose attention width is always h / n_h: they never read head_dim (FalconConfig.head_dim is a read-only
# property, so the key cannot even be given) nor num_key_value_heads.
NO_HEAD_DIM_FAMILIES = ("gpt2", "gpt_neox", "falcon")
_OMIT = object()


def _maybe(rng: random.Random, out: dict[str, Any], key: str, *choices: Any) -> None:
    """Set `key` to one of `choices`, or leave it out of the config (the family default applies)."""
    value = rng.choice((_OMIT, *choices))
    if value is not _OMIT:
        out[key] = value


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def random_config(family: str, rng: random.Random) -> dict[str, Any]:
    """A tiny config of `family` with random dims, bias flags, tying, sliding-window and MoE keys."""
    hidden = rng.randrange(16, 129, 16)
    n_heads = rng.choice([n for n in (1, 2, 4, 8, 16) if (hidden // n) % 2 == 0])  # RoPE needs an even head_dim
    layers = rng.randint(1, 4)
    vocab = rng.randint(32, 512)
    cfg: dict[str, Any] = {
        "model_type": family,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": n_heads,
        "vocab_size": vocab,
        "intermediate_size": rng.randint(8, 160),
    }
    if family.startswith("deepseek"):
        _maybe(rng, cfg, "num_key_value_heads", n_heads)
    elif family in NO_HEAD_DIM_FAMILIES:
        pass  # no num_key_value_heads in their config classes (Falcon: num_kv_heads); peft would read a stray one
    else:
        cfg["num_key_value_heads"] = rng.choice(_divisors(n_heads))
        if family in HEAD_DIM_DEFAULT:
            _maybe(rng, cfg, "head_dim", 4, 8, 12)  # omitted: the 128/256 default, fine on the meta device
        elif family == "olmoe":
            pass  # OLMoE sizes its q/k norms from h / n_h whatever head_dim says (a warning, not a count)
        elif rng.random() < 0.4:
            cfg["head_dim"] = rng.choice((4, 8, 12, 20))  # deliberately not hidden / heads
    # Every family gets every flag: the planner must read exactly the ones transformers reads.
    for flag in ("attention_bias", "mlp_bias", "qkv_bias", "tie_word_embeddings"):
        _maybe(rng, cfg, flag, False, True)
    if family in SLIDING_FAMILIES:
        # null is "no window" only where the config class allows it; elsewhere transformers 5 marks layers
        # sliding and then fails to build a cache for them (a window of None).
        nullable = ("mistral", "mixtral", "phi3", "starcoder2")
        windows = (None, rng.randint(4, 64)) if family in nullable else (rng.randint(4, 64),)
        _maybe(rng, cfg, "sliding_window", *windows)
        _maybe(rng, cfg, "use_sliding_window", False, True)
        _maybe(rng, cfg, "max_window_layers", *range(layers + 1))
    if family in LAYER_TYPES_FAMILIES:
        kinds = ("sliding_attention", "full_attention")
        _maybe(rng, cfg, "layer_types", [rng.choice(kinds) for _ in range(layers)])
    if family == "gemma3_text":
        _maybe(rng, cfg, "sliding_window_pattern", 1, 2, 3)
        _maybe(rng, cfg, "use_bidirectional_attention", False, True)
    if family == "cohere":
        _maybe(rng, cfg, "use_qk_norm", False, True)
    if family == "minimax_m2":  # keys of the published config that transformers ignores (each warns)
        _maybe(rng, cfg, "use_qk_norm", True, False)
        _maybe(rng, cfg, "shared_intermediate_size", 0, rng.randint(4, 32))
        _maybe(rng, cfg, "use_mtp", True)
        _maybe(rng, cfg, "num_mtp_modules", 1, 3)
    if family == "phi3":
        cfg |= {"pad_token_id": 0, "eos_token_id": None}  # the defaults (32000) lie outside a tiny vocabulary
    if family == "minimax_m2":
        cfg |= {"bos_token_id": None, "eos_token_id": None}  # the defaults (200034, 200020) likewise
    if family in ("smollm3", "glm4"):
        cfg |= {"pad_token_id": None}  # likewise (128004, 151329)
    if family in MOE_FAMILIES:
        cfg.update(_random_moe(family, rng, layers))
    if family in GPT_FAMILIES:
        cfg.update(_random_gpt_keys(family, rng, cfg))
    return cfg


GPT_FAMILIES = ("gpt2", "gpt_neox", "falcon", "starcoder2")
_GPT2_NAMES = {"hidden_size": "n_embd", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head"}


def _random_gpt_keys(family: str, rng: random.Random, cfg: dict[str, Any]) -> dict[str, Any]:
    """The GPT-style families' own keys: GPT-2's n_* names, GPT-NeoX's partial rotary, Falcon's layout flags."""
    out: dict[str, Any] = {}
    if family in ("gpt2", "starcoder2"):
        out |= {"bos_token_id": None, "eos_token_id": None}  # the defaults (50256) lie outside a tiny vocabulary
    if family == "gpt2":
        for key, name in _GPT2_NAMES.items():  # either spelling: GPT2Config.attribute_map
            if rng.random() < 0.5:
                out[name] = cfg.pop(key)
        _maybe(rng, out, "n_inner", None, rng.randint(8, 160))
        _maybe(rng, out, "n_positions", rng.randint(8, 256))
    if family == "gpt_neox":
        _maybe(rng, out, "rotary_pct", 0.5, 1.0)
        _maybe(rng, out, "use_parallel_residual", False, True)
    if family == "starcoder2":
        _maybe(rng, out, "use_bias", False, True)
    if family == "falcon":
        n_heads = cfg["num_attention_heads"]
        for flag in ("multi_query", "new_decoder_architecture", "parallel_attn", "bias", "alibi"):
            _maybe(rng, out, flag, False, True)
        _maybe(rng, out, "num_kv_heads", *_divisors(n_heads))
        _maybe(rng, out, "num_ln_in_parallel_attn", 1, 2)
        _maybe(rng, out, "ffn_hidden_size", None, rng.randint(8, 160))
    return out


def _random_moe(family: str, rng: random.Random, layers: int) -> dict[str, Any]:
    n_experts = rng.randint(2, 8)
    moe: dict[str, Any] = {"num_experts_per_tok": rng.randint(1, n_experts)}
    if family in ("mixtral", "gpt_oss", "minimax_m2"):
        return {**moe, "num_local_experts": n_experts}
    if family == "olmoe":
        _maybe(rng, moe, "norm_topk_prob", False, True)
        return {**moe, "num_experts": n_experts}
    moe["moe_intermediate_size"] = rng.randint(4, 48)
    if family.startswith("qwen"):
        moe["num_experts"] = n_experts
        moe["decoder_sparse_step"] = rng.randint(1, 2)
        moe["mlp_only_layers"] = sorted(rng.sample(range(layers), rng.randint(0, layers)))
        if family == "qwen2_moe":
            moe["shared_expert_intermediate_size"] = rng.choice((0, rng.randint(4, 64)))
        return moe
    qk_rope = rng.choice((2, 4, 8))
    moe |= {
        "n_routed_experts": n_experts,
        "n_shared_experts": rng.randint(1, 2),  # 0 has its own test (a zero-width shared expert)
        "first_k_dense_replace": rng.randint(0, min(2, layers)),
        "q_lora_rank": rng.choice((None, rng.randint(4, 48))),
        "kv_lora_rank": rng.randint(4, 48),
        "qk_nope_head_dim": rng.randint(2, 16),
        "qk_rope_head_dim": qk_rope,
        "v_head_dim": rng.randint(2, 16),
    }
    if family == "deepseek_v3":
        moe |= {"n_group": 1, "topk_group": 1}
    return moe


def random_configs(per_family: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """`per_family` random configs of each family as (test id, config)."""
    rng = random.Random(seed)
    return [(f"{family}-{i}", random_config(family, rng)) for family in FAMILIES for i in range(per_family)]


def random_composite_config(composite: str, text_type: str, rng: random.Random) -> dict[str, Any]:
    """A vision-language config: a random language model under text_config, the vision side left at defaults."""
    layout = {"kimi_k2": "deepseek_v3", "qwen3_vl_text": "qwen3", "qwen3_vl_moe_text": "qwen3_moe"}
    text = random_config(layout.get(text_type, text_type), rng)
    text["model_type"] = text_type
    if text_type in ("qwen3_vl_text", "qwen3_vl_moe_text"):  # their config classes have no sliding window
        text = {k: v for k, v in text.items() if k not in ("sliding_window", "use_sliding_window", "max_window_layers")}
    cfg: dict[str, Any] = {"model_type": composite, "text_config": text}
    _maybe(rng, cfg, "tie_word_embeddings", False, True)
    return cfg


def random_composite_configs(per_text_type: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """`per_text_type` random configs of each wrapper and text model type, as (test id, config)."""
    rng = random.Random(seed)
    return [
        (f"{composite}-{text_type}-{i}", random_composite_config(composite, text_type, rng))
        for composite, text_types in COMPOSITE_FAMILIES.items()
        for text_type in text_types
        for i in range(per_text_type)
    ]


_NO_SPECIAL_TOKENS = {"bos_token_id": None, "eos_token_id": None}  # GPT-2's 50256 lies outside a tiny vocabulary


def _base(family: str, hidden: int, heads: int, **extra: Any) -> dict[str, Any]:
    return {
        "model_type": family,
        "hidden_size": hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": heads,
        "vocab_size": 96,
        **extra,
    }


# Configs that leave optional keys out, so each family's config-class default (transformers 5.x) applies.
# Heads are chosen so the default num_key_value_heads is a proper divisor (GQA), which tells
# "the family default" apart from "num_attention_heads".
DEFAULTS_CASES: list[tuple[str, dict[str, Any]]] = [
    ("llama-kv-from-heads", _base("llama", 64, 4, intermediate_size=40)),
    ("mistral-kv-default-8", _base("mistral", 64, 16, intermediate_size=40)),
    ("mixtral-kv-8-experts-8-top-2", _base("mixtral", 64, 16, intermediate_size=40)),
    ("qwen2-kv-default-32", _base("qwen2", 128, 64, intermediate_size=40)),
    ("qwen2_moe-defaults", _base("qwen2_moe", 64, 32, intermediate_size=40)),
    ("qwen3-head_dim-128-kv-32", _base("qwen3", 64, 64, intermediate_size=40)),
    ("qwen3_moe-defaults", _base("qwen3_moe", 64, 8, intermediate_size=40)),
    ("deepseek_v2-mla-defaults", _base("deepseek_v2", 64, 4, intermediate_size=40, num_experts_per_tok=2)),
    ("deepseek_v3-defaults", _base("deepseek_v3", 64, 4, num_hidden_layers=4, intermediate_size=40)),
    ("deepseek_v3-no-intermediate_size", _base("deepseek_v3", 64, 4, num_hidden_layers=4)),
    ("gemma-tied-head_dim-256-kv-16", _base("gemma", 64, 32, intermediate_size=40)),
    ("gemma2-tied-head_dim-256-kv-4", _base("gemma2", 64, 8, intermediate_size=40)),
    ("phi3-kv-from-heads", _base("phi3", 64, 4, intermediate_size=40, pad_token_id=0, eos_token_id=None)),
    ("gpt_oss-defaults-head_dim-64-kv-8", _base("gpt_oss", 64, 16, intermediate_size=40)),
    (
        "minimax_m2-defaults-head_dim-128-kv-8",
        _base("minimax_m2", 64, 16, intermediate_size=40, bos_token_id=None, eos_token_id=None),
    ),
    ("gemma3_text-tied-head_dim-256-kv-4", _base("gemma3_text", 64, 8, intermediate_size=40)),
    ("olmo2-kv-from-heads", _base("olmo2", 64, 4, intermediate_size=40)),
    ("olmoe-64-experts-top-8", _base("olmoe", 64, 4, intermediate_size=40)),
    ("granite-kv-from-heads", _base("granite", 64, 4, intermediate_size=40)),
    ("smollm3-tied-kv-default-4", _base("smollm3", 64, 8, intermediate_size=40, pad_token_id=None)),
    ("glm4-head_dim-128-kv-2", _base("glm4", 64, 8, intermediate_size=40, pad_token_id=None)),
    ("cohere-tied-kv-from-heads", _base("cohere", 64, 4, intermediate_size=40)),
    (
        "gpt2-n_embd-keys-tied-ffn-4h-1024-positions",
        {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 96, **_NO_SPECIAL_TOKENS},
    ),
    ("gpt_neox-untied-biased-quarter-rotary", _base("gpt_neox", 64, 4, intermediate_size=40)),
    ("falcon-multi-query-one-norm-ffn-4h", _base("falcon", 64, 4)),
    ("falcon-new-architecture-kv-from-heads-two-norms", _base("falcon", 64, 4, new_decoder_architecture=True)),
    (
        "starcoder2-tied-kv-default-2-biased",
        _base("starcoder2", 64, 8, intermediate_size=40, **_NO_SPECIAL_TOKENS),
    ),
]


def _without_model_type(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "model_type"}


# Wrappers that leave text_config keys (and tie_word_embeddings) to their config classes' defaults.
COMPOSITE_CASES: list[tuple[str, dict[str, Any]]] = [
    (
        "kimi_k25-tied-by-default",
        {"model_type": "kimi_k25", "text_config": _base("kimi_k2", 64, 4, num_hidden_layers=4)},
    ),
    ("qwen3_vl-text-defaults", {"model_type": "qwen3_vl", "text_config": _base("qwen3_vl_text", 64, 64)}),
    ("qwen3_vl_moe-text-defaults", {"model_type": "qwen3_vl_moe", "text_config": _base("qwen3_vl_moe_text", 64, 32)}),
    ("gemma3-tied-by-default", {"model_type": "gemma3", "text_config": _base("gemma3_text", 64, 8)}),
    (
        "llava-text-model_type-default",
        {"model_type": "llava", "text_config": _without_model_type(_base("llama", 64, 4, intermediate_size=40))},
    ),
    ("llava-tied-by-text", {"model_type": "llava", "text_config": _base("gemma", 64, 32, intermediate_size=40)}),
    (
        "mistral3-tied-by-default",
        {"model_type": "mistral3", "text_config": _base("mistral", 64, 16, intermediate_size=40)},
    ),
]


# Published config.json files of the GPT-style families, transcribed from the Hugging Face Hub (the URL of each;
# keys as published, auto_map left out: transformers 5 has these classes natively). With the total parameter count
# their model cards or papers give, where one is given to the parameter.
_HUB = "https://huggingface.co/{}/blob/main/config.json"
PUBLISHED_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "openai-community/gpt2": (_HUB.format("openai-community/gpt2"), {
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
        "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12,
        "n_positions": 1024, "resid_pdrop": 0.1, "summary_activation": None, "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True, "summary_type": "cls_index", "summary_use_proj": True,
        "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}}, "vocab_size": 50257,
    }),
    "EleutherAI/pythia-70m": (_HUB.format("EleutherAI/pythia-70m"), {
        "architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu",
        "hidden_size": 512, "initializer_range": 0.02, "intermediate_size": 2048, "layer_norm_eps": 1e-05,
        "max_position_embeddings": 2048, "model_type": "gpt_neox", "num_attention_heads": 8, "num_hidden_layers": 6,
        "rotary_emb_base": 10000, "rotary_pct": 0.25, "tie_word_embeddings": False, "torch_dtype": "float16",
        "transformers_version": "4.24.0", "use_cache": True, "use_parallel_residual": True, "vocab_size": 50304,
    }),
    "EleutherAI/gpt-neox-20b": (_HUB.format("EleutherAI/gpt-neox-20b"), {
        "architectures": ["GPTNeoXForCausalLM"], "attention_probs_dropout_prob": 0, "bos_token_id": 0,
        "eos_token_id": 0, "hidden_act": "gelu_fast", "hidden_dropout_prob": 0, "hidden_size": 6144,
        "initializer_range": 0.02, "intermediate_size": 24576, "layer_norm_eps": 1e-05, "max_position_embeddings": 2048,
        "model_type": "gpt_neox", "num_attention_heads": 64, "num_hidden_layers": 44, "rotary_emb_base": 10000,
        "rotary_pct": 0.25, "tie_word_embeddings": False, "torch_dtype": "float16",
        "transformers_version": "4.21.0.dev0", "use_cache": True, "use_parallel_residual": True, "vocab_size": 50432,
    }),
    "tiiuae/falcon-7b": (_HUB.format("tiiuae/falcon-7b"), {
        "alibi": False, "apply_residual_connection_post_layernorm": False, "architectures": ["FalconForCausalLM"],
        "attention_dropout": 0.0, "bias": False, "bos_token_id": 11, "eos_token_id": 11, "hidden_dropout": 0.0,
        "hidden_size": 4544, "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "falcon",
        "multi_query": True, "new_decoder_architecture": False, "num_attention_heads": 71, "num_hidden_layers": 32,
        "parallel_attn": True, "torch_dtype": "bfloat16", "transformers_version": "4.33.0.dev0", "use_cache": True,
        "vocab_size": 65024,
    }),
    "tiiuae/falcon-40b": (_HUB.format("tiiuae/falcon-40b"), {
        "alibi": False, "apply_residual_connection_post_layernorm": False, "architectures": ["FalconForCausalLM"],
        "attention_dropout": 0.0, "bias": False, "bos_token_id": 11, "eos_token_id": 11, "hidden_dropout": 0.0,
        "hidden_size": 8192, "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "falcon",
        "new_decoder_architecture": True, "num_attention_heads": 128, "num_hidden_layers": 60, "num_kv_heads": 8,
        "parallel_attn": True, "torch_dtype": "bfloat16", "transformers_version": "4.33.0.dev0", "use_cache": True,
        "vocab_size": 65024,
    }),
    "bigcode/starcoder2-3b": (_HUB.format("bigcode/starcoder2-3b"), {
        "architectures": ["Starcoder2ForCausalLM"], "attention_dropout": 0.1, "residual_dropout": 0.1,
        "embedding_dropout": 0.1, "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 3072, "initializer_range": 0.018042, "intermediate_size": 12288, "layer_norm_epsilon": 1e-05,
        "max_position_embeddings": 16384, "mlp_type": "default", "model_type": "starcoder2", "norm_type": "layer_norm",
        "num_attention_heads": 24, "num_hidden_layers": 30, "num_key_value_heads": 2, "rope_theta": 999999.4420358813,
        "sliding_window": 4096, "torch_dtype": "bfloat16", "transformers_version": "4.37.0.dev0", "use_bias": True,
        "use_cache": True, "vocab_size": 49152,
    }),
    "bigcode/starcoder2-7b": (_HUB.format("bigcode/starcoder2-7b"), {
        "architectures": ["Starcoder2ForCausalLM"], "attention_dropout": 0.1, "residual_dropout": 0.1,
        "embedding_dropout": 0.1, "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 4608, "initializer_range": 0.018042, "intermediate_size": 18432, "layer_norm_epsilon": 1e-05,
        "max_position_embeddings": 16384, "mlp_type": "default", "model_type": "starcoder2", "norm_type": "layer_norm",
        "num_attention_heads": 36, "num_hidden_layers": 32, "num_key_value_heads": 4, "rope_theta": 1000000,
        "sliding_window": 4096, "torch_dtype": "bfloat16", "transformers_version": "4.37.0.dev0", "use_bias": True,
        "use_cache": True, "vocab_size": 49152,
    }),
    "bigcode/starcoder2-15b": (_HUB.format("bigcode/starcoder2-15b"), {
        "architectures": ["Starcoder2ForCausalLM"], "attention_dropout": 0.1, "residual_dropout": 0.1,
        "embedding_dropout": 0.1, "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 6144, "initializer_range": 0.01275, "intermediate_size": 24576, "layer_norm_epsilon": 1e-05,
        "max_position_embeddings": 16384, "mlp_type": "default", "model_type": "starcoder2", "norm_type": "layer_norm",
        "num_attention_heads": 48, "num_hidden_layers": 40, "num_key_value_heads": 4, "rope_theta": 100000,
        "sliding_window": 4096, "torch_dtype": "float32", "transformers_version": "4.37.0.dev0", "use_bias": True,
        "use_cache": True, "vocab_size": 49152,
    }),
}  # fmt: skip
# Totals published to the parameter: GPT-2 small 124,439,808 (the count transformers' documentation and every
# GPT2LMHeadModel report, tied); Pythia-70M 70,426,624 (Biderman et al. 2023, arXiv:2304.01373, Table 1, total
# params); GPT-NeoX-20B 20,554,567,680 (Black et al. 2022, arXiv:2204.06745, §2 / Table 1).
PUBLISHED_TOTALS = {
    "openai-community/gpt2": 124_439_808,
    "EleutherAI/pythia-70m": 70_426_624,
    "EleutherAI/gpt-neox-20b": 20_554_567_680,
}
