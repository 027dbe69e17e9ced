"""Turn a Hugging Face `config.json` into a ModelSpec, family by family, as transformers reads it.

Defaults for absent keys are the defaults of each family's transformers config class (transformers 5.x), so
an imported spec builds the same modules as `AutoModelForCausalLM.from_config(config)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, ValidationError

from planner._base import FrozenSpec
from planner.errors import FieldProblem, SpecError
from planner.model.hf_config import HF_FIELD_OF_SPEC, HFConfig
from planner.model.precision import WeightFormat
from planner.model.spec import ModelSpec

__all__ = ["SUPPORTED_FAMILIES", "ImportedModel", "import_hf_config"]

REQUIRED_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


@dataclass(frozen=True)
class Family:
    """How one transformers family lays out its modules, and its config-class defaults."""

    defaults: dict[str, Any] = field(default_factory=dict)
    qkv_bias: str | bool = False  # a config key, or a constant for the family
    o_bias: str | bool = False
    mlp_bias: str | bool = False
    qk_norm: bool = False
    norms_per_layer: int = 2
    moe: str | None = None  # "mixtral", "qwen", "deepseek"
    mla: bool = False
    window: str = "none"  # "all", "qwen", "qwen_moe", "alternate", "none"


_ATTN_BIAS = "attention_bias"  # llama-style: one flag for q, k, v and o biases
_DEEPSEEK_MLA = {
    "q_lora_rank": 1536,
    "kv_lora_rank": 512,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
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
        {
            "num_key_value_heads": 4,
            "intermediate_size": 6144,
            "sliding_window": 4096,
            "max_position_embeddings": 32768,
            "num_experts": 128,
            "num_experts_per_tok": 8,
            "moe_intermediate_size": 768,
        },
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
            **_DEEPSEEK_MLA,
        },
        mlp_bias="mlp_bias",
        moe="deepseek",
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
            **_DEEPSEEK_MLA,
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
        window="alternate",
        qkv_bias=_ATTN_BIAS,
        o_bias=_ATTN_BIAS,
    ),
    "phi3": Family({"max_position_embeddings": 4096}, window="all"),
}
SUPPORTED_FAMILIES = tuple(FAMILIES)

_WEIGHT_FORMAT_OF_QUANT = {"gptq": WeightFormat.INT4_GPTQ, "awq": WeightFormat.INT4_AWQ, "fp8": WeightFormat.FP8}


class ImportedModel(FrozenSpec):
    """A config.json read into a ModelSpec, with how far the import can be trusted."""

    spec: ModelSpec
    family: str = Field(description="The config's model_type.")
    exact: bool = Field(description="True when the family is one memplan builds exactly as transformers does.")
    warnings: tuple[str, ...] = ()
    checkpoint_dtype: str | None = Field(default=None, description="torch_dtype/dtype of the saved weights.")
    suggested_weight_format: WeightFormat | None = Field(
        default=None, description="Weight format implied by the config's quantization_config, if any."
    )
    suggested_quant_group_size: int | None = None


def import_hf_config(raw: dict[str, Any] | HFConfig) -> ImportedModel:
    """Read a Hugging Face config.json (as a dict) into a ModelSpec; raise SpecError naming the bad keys."""
    try:
        cfg = raw if isinstance(raw, HFConfig) else HFConfig.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_problems(exc)) from None
    missing = [key for key in REQUIRED_FIELDS if getattr(cfg, key) is None]
    model_type = cfg.model_type or "unknown"
    family = FAMILIES.get(model_type)
    warnings: list[str] = []
    if family is None:
        family = _guess_family(cfg)
        warnings.append(
            f"model_type '{model_type}' is not one of the supported families ({', '.join(SUPPORTED_FAMILIES)}); "
            "read as a Llama-style decoder (gated MLP, RMSNorm, no biases): counts are approximate"
        )
    if cfg.value("intermediate_size", family.defaults.get("intermediate_size")) is None:
        missing.append("intermediate_size")
    if missing:
        raise SpecError([FieldProblem((key,), "field required", "missing") for key in missing])
    spec_fields = _spec_fields(cfg, family, warnings)
    try:
        spec = ModelSpec.model_validate(spec_fields)
    except ValidationError as exc:
        # ModelSpec checks MoE layer ids on `moe`; in config.json they are first_k_dense_replace / mlp_only_layers.
        moe_key = {"deepseek": "first_k_dense_replace", "qwen": "mlp_only_layers"}.get(family.moe or "", "moe")
        raise SpecError(_problems(exc, {**HF_FIELD_OF_SPEC, "moe": moe_key})) from None
    fmt, group = _quantization(cfg, warnings)
    return ImportedModel(
        spec=spec,
        family=model_type,
        exact=model_type in FAMILIES,
        warnings=tuple(warnings),
        checkpoint_dtype=cfg.torch_dtype or cfg.dtype,
        suggested_weight_format=fmt,
        suggested_quant_group_size=group,
    )


def _spec_fields(cfg: HFConfig, family: Family, warnings: list[str]) -> dict[str, Any]:
    d = family.defaults
    n_h = cfg.num_attention_heads
    window, window_layers = _sliding_window(cfg, family)
    fields: dict[str, Any] = {
        "name": cfg.name_or_path,
        "family": cfg.model_type or "llama",
        "num_layers": cfg.num_hidden_layers,
        "hidden_size": cfg.hidden_size,
        "num_heads": n_h,
        # MLA has no KV heads of its own (transformers ignores num_key_value_heads there)
        "num_kv_heads": n_h if family.mla else cfg.value("num_key_value_heads", d.get("num_key_value_heads")) or n_h,
        "head_dim": None if family.mla else cfg.value("head_dim", d.get("head_dim")),
        "ffn_dim": cfg.value("intermediate_size", d.get("intermediate_size")),
        "vocab_size": cfg.vocab_size,
        "tie_embeddings": bool(cfg.value("tie_word_embeddings", d.get("tie_word_embeddings", False))),
        "qkv_bias": _flag(cfg, family.qkv_bias, d),
        "o_bias": _flag(cfg, family.o_bias, d),
        "mlp_bias": _flag(cfg, family.mlp_bias, d),
        "qk_norm": family.qk_norm,
        "norms_per_layer": family.norms_per_layer,
        "max_context": cfg.value("max_position_embeddings", d.get("max_position_embeddings")) or 4096,
        "sliding_window": window,
        "sliding_window_layers": window_layers,
    }
    if family.mla:
        fields["mla"] = {key: cfg.value(key, d.get(key)) for key in _DEEPSEEK_MLA}
        fields["attention"] = "MLA"
    if family.moe:
        fields["moe"] = _moe_fields(cfg, family, warnings)
    if cfg.num_nextn_predict_layers:
        warnings.append(
            f"num_nextn_predict_layers={cfg.num_nextn_predict_layers}: the multi-token-prediction module is "
            "not built by transformers and is not counted"
        )
    return fields


def _flag(cfg: HFConfig, rule: str | bool, defaults: dict[str, Any]) -> bool:
    if isinstance(rule, bool):
        return rule
    return bool(cfg.value(rule, defaults.get(rule, False)))


def _sliding_window(cfg: HFConfig, family: Family) -> tuple[int | None, tuple[int, ...] | None]:
    """The window and the layers using it, following each family's config class."""
    d, n_layers = family.defaults, cfg.num_hidden_layers or 0
    window = cfg.value("sliding_window", d.get("sliding_window"))
    if family.window == "none" or not window:
        return None, None
    if family.window in ("qwen", "qwen_moe", "all_if_enabled") and not cfg.use_sliding_window:
        return None, None
    if cfg.layer_types is not None:
        layers = tuple(i for i, kind in enumerate(cfg.layer_types) if kind == "sliding_attention")
        return (window, layers) if layers else (None, None)
    if family.window in ("all", "all_if_enabled"):
        return window, None
    if family.window == "alternate":  # Gemma2: even layers slide
        return window, tuple(range(0, n_layers, 2))
    max_window_layers = cfg.value("max_window_layers", d.get("max_window_layers"))
    if family.window == "qwen":  # Qwen2/3: layers from max_window_layers on slide
        layers = tuple(range(max_window_layers, n_layers))
    else:  # Qwen2-MoE: even layers below max_window_layers slide
        layers = tuple(i for i in range(min(max_window_layers, n_layers)) if i % 2 == 0)
    return (window, layers) if layers else (None, None)


def _moe_fields(cfg: HFConfig, family: Family, warnings: list[str]) -> dict[str, Any] | None:
    d = family.defaults
    k = cfg.value("num_experts_per_tok", d.get("num_experts_per_tok"))
    if family.moe == "mixtral":
        experts = cfg.num_local_experts or cfg.num_experts or d["num_local_experts"]
        return {"num_experts": experts, "experts_per_token": k, "expert_ffn_dim": cfg.intermediate_size}
    if family.moe == "qwen":
        # transformers 5 saves Qwen3-MoE's num_experts under its attribute_map name num_local_experts
        alias = "num_experts" if cfg.given("num_experts") else "num_local_experts"
        experts = cfg.value(alias, d["num_experts"])
        if not experts:
            return None  # Qwen-MoE with num_experts = 0 builds dense layers only
        return {
            "num_experts": experts,
            "experts_per_token": k,
            "expert_ffn_dim": cfg.value("moe_intermediate_size", d["moe_intermediate_size"]),
            "shared_expert_ffn_dim": cfg.value(
                "shared_expert_intermediate_size", d.get("shared_expert_intermediate_size", 0)
            )
            or 0,
            "shared_expert_gate": cfg.model_type == "qwen2_moe",
            "layer_step": cfg.decoder_sparse_step or 1,
            "dense_layer_ids": tuple(cfg.mlp_only_layers or ()),
            "renormalize_top_k": bool(cfg.value("norm_topk_prob", False)),  # both Qwen-MoE configs default False
        }
    if (cfg.moe_layer_freq or 1) != 1:
        warnings.append(f"moe_layer_freq={cfg.moe_layer_freq} is ignored, as transformers ignores it")
    f_e = cfg.value("moe_intermediate_size", d["moe_intermediate_size"])
    shared = cfg.value("n_shared_experts", d["n_shared_experts"]) or 0
    return {
        # num_local_experts is the attribute_map alias of n_routed_experts in transformers' DeepSeek configs
        "num_experts": cfg.value(
            "n_routed_experts" if cfg.given("n_routed_experts") else "num_local_experts", d["n_routed_experts"]
        ),
        "experts_per_token": k,
        "expert_ffn_dim": f_e,
        "shared_expert_ffn_dim": (f_e or 0) * shared,
        "first_dense_layers": cfg.value("first_k_dense_replace", d["first_k_dense_replace"]),
        # DeepSeek-V2's router scales by routed_scaling_factor instead; V3 follows norm_topk_prob (default True)
        "renormalize_top_k": cfg.model_type != "deepseek_v2" and bool(cfg.value("norm_topk_prob", True)),
    }


def _guess_family(cfg: HFConfig) -> Family:
    """A generic family for an unknown model_type: Llama-style, with MoE or MLA when their keys are present."""
    if cfg.kv_lora_rank is not None:
        return FAMILIES["deepseek_v3"]
    if cfg.n_routed_experts:
        return FAMILIES["deepseek_v3"]
    if cfg.num_local_experts:
        return FAMILIES["mixtral"]
    if cfg.num_experts and cfg.moe_intermediate_size:
        return FAMILIES["qwen3_moe"]
    return Family(window="all", qkv_bias="attention_bias", o_bias="attention_bias", mlp_bias="mlp_bias")


def _quantization(cfg: HFConfig, warnings: list[str]) -> tuple[WeightFormat | None, int | None]:
    q = cfg.quantization_config
    if not q:
        return None, None
    method = str(q.get("quant_method", "")).lower()
    if method == "bitsandbytes" and q.get("load_in_4bit"):
        return WeightFormat.NF4, None
    if method == "bitsandbytes" and q.get("load_in_8bit"):
        return WeightFormat.INT8, None
    fmt = _WEIGHT_FORMAT_OF_QUANT.get(method)
    if fmt is None or (fmt is not WeightFormat.FP8 and q.get("bits", 4) != 4):
        warnings.append(f"quantization_config method '{method}' is not modelled; give weight_format yourself")
        return None, None
    block = q.get("weight_block_size")
    if fmt is WeightFormat.FP8 and block == [128, 128]:
        return WeightFormat.FP8_BLOCK, None
    if fmt is WeightFormat.FP8 and block:
        warnings.append(f"fp8 weight_block_size {block} is not modelled; read as per-tensor fp8 (fewer scale bytes)")
    group = q.get("group_size")
    return fmt, group if isinstance(group, int) and group > 0 else None


def _problems(exc: ValidationError, rename: dict[str, str] | None = None) -> list[FieldProblem]:
    rename = rename or {}
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        # A nested spec error (moe.experts_per_token) is reported under the config key it came from.
        leaf = next((rename[str(part)] for part in reversed(loc) if str(part) in rename), None)
        out.append(FieldProblem((leaf,) if leaf else loc, err["msg"], err["type"]))
    return out
