"""Turn a Hugging Face `config.json` into a ModelSpec, family by family, as transformers reads it.

Defaults for absent keys are the defaults of each family's transformers config class (transformers 5.x, tables in
planner.model.hf_families), so an imported spec builds the same modules as `AutoModelForCausalLM.from_config(config)`
— for a vision-language config, the same as the language model (and lm_head) inside
`AutoModelForImageTextToText.from_config(config)`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError

from planner._base import FrozenSpec
from planner.errors import FieldProblem, SpecError
from planner.model.hf_config import HF_FIELD_OF_SPEC, HFConfig
from planner.model.hf_families import COMPOSITES, DEEPSEEK_MLA, FAMILIES, MODEL_TYPE_ALIASES, TEXT_FAMILIES, Family
from planner.model.hf_layouts import canonical_config, config_key, layout_fields
from planner.model.hf_quant import CheckpointQuantization, checkpoint_quantization
from planner.model.precision import WeightFormat
from planner.model.spec import ModelSpec

__all__ = ["SUPPORTED_FAMILIES", "ImportedModel", "import_hf_config"]

REQUIRED_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


SUPPORTED_FAMILIES = (*FAMILIES, *MODEL_TYPE_ALIASES, *COMPOSITES)


class ImportedModel(FrozenSpec):
    """A config.json read into a ModelSpec, with how far the import can be trusted."""

    spec: ModelSpec
    family: str = Field(description="The config's model_type.")
    exact: bool = Field(
        description="True when the family (for a vision-language config: the wrapper and its language model) is one "
        "memplan builds exactly as transformers does."
    )
    warnings: tuple[str, ...] = ()
    checkpoint_dtype: str | None = Field(default=None, description="torch_dtype/dtype of the saved weights.")
    suggested_weight_format: WeightFormat | None = Field(
        default=None, description="Weight format implied by the config's quantization_config, if any."
    )
    suggested_quant_group_size: int | None = None


def import_hf_config(raw: dict[str, Any] | HFConfig) -> ImportedModel:
    """Read a Hugging Face config.json (as a dict) into a ModelSpec; raise SpecError naming the bad keys.

    A vision-language config (a `text_config` inside) is read as its language model alone, with a warning that
    names what is left out; errors inside it are located under `text_config`.
    """
    try:
        top = raw if isinstance(raw, HFConfig) else HFConfig.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_problems(exc)) from None
    model_type = top.model_type or "unknown"
    warnings: list[str] = []
    if top.text_config is None:
        cfg, known_wrapper = top, True
        spec, exact, quant = _decoder_spec(cfg, warnings, in_text=False)
    else:
        cfg, known_wrapper = _text_part(top, warnings)
        try:
            spec, exact, quant = _decoder_spec(cfg, warnings, in_text=True)
        except SpecError as exc:
            raise exc.prefixed("text_config") from None
    return ImportedModel(
        spec=spec,
        family=model_type,
        exact=exact and known_wrapper,
        warnings=tuple(warnings),
        checkpoint_dtype=cfg.torch_dtype or cfg.dtype,
        suggested_weight_format=quant.weight_format,
        suggested_quant_group_size=quant.group_size,
    )


def _decoder_spec(cfg: HFConfig, warnings: list[str], in_text: bool) -> tuple[ModelSpec, bool, CheckpointQuantization]:
    """One decoder config: its ModelSpec, whether its family is one memplan builds exactly, its quantization."""
    model_type = cfg.model_type or "unknown"
    name = MODEL_TYPE_ALIASES.get(model_type, model_type)
    family = FAMILIES.get(name) or (TEXT_FAMILIES.get(name) if in_text else None)
    exact = family is not None
    if family is None:
        family = _guess_family(cfg)
        warnings.append(
            f"model_type '{model_type}' is not one of the supported families ({', '.join(SUPPORTED_FAMILIES)}); "
            "read as a Llama-style decoder (gated MLP, RMSNorm, no biases): counts are approximate"
        )
    cfg = canonical_config(cfg, family)  # GPT-2's n_embd, Falcon's num_kv_heads, ... under the canonical keys
    missing = [key for key in REQUIRED_FIELDS if getattr(cfg, key) is None]
    ffn = cfg.value("intermediate_size", family.defaults.get("intermediate_size"))
    if ffn is None and not family.ffn_multiple:  # GPT-2, Falcon: 4·h, once hidden_size is known
        missing.append("intermediate_size")
    if missing:
        raise SpecError([FieldProblem((config_key(family, key),), "field required", "missing") for key in missing])
    spec_fields = _spec_fields(cfg, family, family.layout or (name if exact else cfg.model_type or "llama"), warnings)
    quant = checkpoint_quantization(cfg.quantization_config, warnings)
    spec_fields["quantize_experts_only"] = quant.experts_only and spec_fields.get("moe") is not None
    try:
        spec = ModelSpec.model_validate(spec_fields)
    except ValidationError as exc:
        # ModelSpec checks MoE layer ids on `moe`; in config.json they are first_k_dense_replace / mlp_only_layers.
        moe_key = {"deepseek": "first_k_dense_replace", "qwen": "mlp_only_layers"}.get(family.moe or "", "moe")
        keys = {spec_key: config_key(family, key) for spec_key, key in HF_FIELD_OF_SPEC.items()}
        raise SpecError(_problems(exc, {**keys, "moe": moe_key})) from None
    return spec, exact, quant


def _text_part(top: HFConfig, warnings: list[str]) -> tuple[HFConfig, bool]:
    """A vision-language config's text_config as a decoder config of its own, tied as the wrapper ties it.

    transformers 5 builds `language_model` from text_config and puts lm_head on the wrapper, which ties it per the
    wrapper's tie_word_embeddings (PreTrainedModel.get_expanded_tied_weights_keys reads self.config).
    """
    model_type = top.model_type or "unknown"
    composite = COMPOSITES.get(model_type)
    text: dict[str, Any] = dict(top.text_config or {})
    text_type = text.setdefault("model_type", composite.text_model_type if composite else None) or "unknown"
    text_family = FAMILIES.get(MODEL_TYPE_ALIASES.get(text_type, text_type)) or TEXT_FAMILIES.get(text_type)
    tie = bool(top.value("tie_word_embeddings", composite.tie_default if composite else False))
    if composite is not None and composite.tie_from_text and not tie:
        tie = bool(text.get("tie_word_embeddings", (text_family or Family()).defaults.get("tie_word_embeddings")))
    text["tie_word_embeddings"] = tie
    outer = top.model_dump(by_alias=True, include={"name_or_path", "torch_dtype", "dtype", "quantization_config"})
    for key, given in outer.items():  # the wrapper's name and dtype where text_config has none; its quantization
        if given and (key == "quantization_config" or not text.get(key)):
            text[key] = given
    try:
        cfg = HFConfig.model_validate(text)
    except ValidationError as exc:
        raise SpecError(_problems(exc)).prefixed("text_config") from None
    read_as = text_family.layout if text_family and text_family.layout else MODEL_TYPE_ALIASES.get(text_type, text_type)
    if composite is None:
        warnings.append(
            f"model_type '{model_type}' holds a text_config: only that language model ({text_type}) is counted; "
            "its vision tower and projector are left out, and lm_head tying is read from the top-level "
            "tie_word_embeddings without a family default: not checked against transformers"
        )
    else:
        warnings.append(
            f"{model_type} is a vision-language model: only its language model (text_config, read as {read_as}) is "
            f"counted; {composite.left_out} are left out"
        )
    return cfg, composite is not None


def _spec_fields(cfg: HFConfig, family: Family, family_name: str, warnings: list[str]) -> dict[str, Any]:
    d = family.defaults
    n_h = cfg.num_attention_heads
    window, window_layers = _sliding_window(cfg, family)
    fields: dict[str, Any] = {
        "name": cfg.name_or_path,
        "family": family_name,
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
        "qk_norm": _flag(cfg, family.qk_norm, d),
        "qk_norm_type": family.qk_norm_type,
        "attention_sinks": family.attention_sinks,
        "norms_per_layer": family.norms_per_layer,
        "max_context": cfg.value("max_position_embeddings", d.get("max_position_embeddings")) or 4096,
        "sliding_window": window,
        "sliding_window_layers": window_layers,
    }
    if family.mla:
        fields["mla"] = {key: cfg.value(key, d.get(key)) for key in DEEPSEEK_MLA}
        fields["attention"] = "MLA"
    if family.moe:
        fields["moe"] = _moe_fields(cfg, family, warnings)
    fields |= layout_fields(cfg, family)
    _not_built_warnings(cfg, family, warnings)
    return fields


def _not_built_warnings(cfg: HFConfig, family: Family, warnings: list[str]) -> None:
    """Keys of a published config.json that transformers does not build: say what is not counted."""
    if family.learned_positions and cfg.add_cross_attention:
        warnings.append(
            "add_cross_attention: the cross-attention and its LayerNorm each GPT-2 block adds for an encoder are not "
            "counted (a decoder-only model has no encoder to attend to)"
        )
    if cfg.num_nextn_predict_layers:
        warnings.append(
            f"num_nextn_predict_layers={cfg.num_nextn_predict_layers}: the multi-token-prediction module is "
            "not built by transformers and is not counted"
        )
    if cfg.use_mtp and cfg.num_mtp_modules:
        warnings.append(
            f"use_mtp with num_mtp_modules={cfg.num_mtp_modules}: the multi-token-prediction modules are not built "
            "by transformers and are not counted"
        )
    if family.moe == "minimax" and cfg.shared_intermediate_size:
        warnings.append(
            f"shared_intermediate_size={cfg.shared_intermediate_size}: transformers' MiniMax-M2 builds no shared "
            "expert; not counted"
        )
    if family.moe == "minimax" and (cfg.use_qk_norm is False or cfg.value("qk_norm_type", "per_layer") != "per_layer"):
        warnings.append(
            "use_qk_norm / qk_norm_type are ignored by transformers, which always builds per-layer q and k norms; "
            "counted as built"
        )
    head_dim = cfg.value("head_dim", family.defaults.get("head_dim"))
    if (
        family.moe == "olmoe"
        and head_dim
        and cfg.hidden_size
        and head_dim * (cfg.num_attention_heads or 1) != cfg.hidden_size
    ):
        warnings.append(
            f"head_dim={head_dim} is not hidden_size / num_attention_heads: OLMoE's q/k norms stay h and "
            "(h / n_h)·n_kv wide, counted here as n_h·head_dim and n_kv·head_dim"
        )
    if family.moe == "gpt_oss" and cfg.experts_per_token not in (None, cfg.num_experts_per_tok):
        warnings.append(
            f"experts_per_token={cfg.experts_per_token} is ignored: transformers routes to num_experts_per_tok"
        )


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
    if family.window in ("qwen", "qwen_moe", "all_if_enabled", "smollm3") and not cfg.use_sliding_window:
        return None, None
    if cfg.use_bidirectional_attention and family.window_pattern == 6:  # Gemma3TextConfig.__post_init__
        window = window // 2 + 1
    if cfg.layer_types is not None:
        layers = tuple(i for i, kind in enumerate(cfg.layer_types) if kind == "sliding_attention")
        return (window, layers) if layers else (None, None)
    if family.window in ("all", "all_if_enabled"):
        return window, None
    if family.window == "smollm3":  # SmolLM3Config: the NoPE layers slide (no_rope_layers[i] == 0)
        interval = cfg.no_rope_layer_interval or 4
        no_rope = cfg.no_rope_layers or [int((i + 1) % interval != 0) for i in range(n_layers)]
        layers = tuple(i for i, has_rope in enumerate(no_rope) if not has_rope)
        return (window, layers) if layers else (None, None)
    if family.window == "pattern":  # Gemma2, gpt-oss: every 2nd layer full; Gemma3: every 6th
        pattern = cfg.sliding_window_pattern or family.window_pattern
        layers = tuple(i for i in range(n_layers) if (i + 1) % pattern)
        return (window, layers) if layers else (None, None)
    max_window_layers = cfg.value("max_window_layers", d.get("max_window_layers"))
    if family.window == "qwen":  # Qwen2/3: layers from max_window_layers on slide
        layers = tuple(range(max_window_layers, n_layers))
    else:  # Qwen2-MoE: even layers below max_window_layers slide
        layers = tuple(i for i in range(min(max_window_layers, n_layers)) if i % 2 == 0)
    return (window, layers) if layers else (None, None)


def _moe_fields(cfg: HFConfig, family: Family, warnings: list[str]) -> dict[str, Any] | None:
    d = family.defaults
    k = cfg.value("num_experts_per_tok", d.get("num_experts_per_tok"))
    renormalize = family.renormalize_top_k
    if renormalize is None:
        renormalize = bool(cfg.value("norm_topk_prob", d.get("norm_topk_prob", False)))
    if family.moe in ("mixtral", "gpt_oss", "minimax", "olmoe"):
        # experts intermediate_size wide; num_experts is the attribute_map alias of num_local_experts
        experts = cfg.num_local_experts or cfg.num_experts or d.get("num_local_experts") or d["num_experts"]
        biased = family.moe == "gpt_oss"
        out = {
            "num_experts": experts,
            "experts_per_token": k,
            "expert_ffn_dim": cfg.value("intermediate_size", d.get("intermediate_size")),
        }
        if family.moe == "mixtral":
            return out
        return {**out, "expert_bias": biased, "router_bias": biased, "renormalize_top_k": renormalize}
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
            "shared_expert_gate": family.shared_expert_gate,
            "layer_step": cfg.decoder_sparse_step or 1,
            "dense_layer_ids": tuple(cfg.mlp_only_layers or ()),
            "renormalize_top_k": renormalize,
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
        "renormalize_top_k": renormalize,
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


def _problems(exc: ValidationError, rename: dict[str, str] | None = None) -> list[FieldProblem]:
    rename = rename or {}
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        # A nested spec error (moe.experts_per_token) is reported under the config key it came from.
        leaf = next((rename[str(part)] for part in reversed(loc) if str(part) in rename), None)
        out.append(FieldProblem((leaf,) if leaf else loc, err["msg"], err["type"]))
    return out
