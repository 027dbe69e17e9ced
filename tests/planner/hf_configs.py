"""Small config.json dicts for every supported family: seeded random ones, and ones that lean on family defaults."""

from __future__ import annotations

import random
from typing import Any

__all__ = [
    "COMPOSITE_CASES",
    "COMPOSITE_FAMILIES",
    "DEFAULTS_CASES",
    "FAMILIES",
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
)
# Families whose config class gives head_dim a default of its own (qwen3: 128, gemma/gemma2/gemma3: 256,
# gpt-oss: 64, MiniMax-M2: 128).
HEAD_DIM_DEFAULT = ("qwen3", "gemma", "gemma2", "qwen3_vl_text", "gpt_oss", "minimax_m2", "gemma3_text", "glm4")
# Families whose layer_types (sliding / full per layer) config.json may give explicitly.
LAYER_TYPES_FAMILIES = ("gpt_oss", "gemma3_text")
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
        windows = (None, rng.randint(4, 64)) if family in ("mistral", "mixtral", "phi3") else (rng.randint(4, 64),)
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
    return cfg


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
