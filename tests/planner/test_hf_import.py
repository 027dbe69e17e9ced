"""import_hf_config: the decoder families, vision-language wrappers, aliases, unknown families, missing keys,
explicit nulls, quantization configs, keys transformers ignores."""

from __future__ import annotations

import json
from typing import Any

import pytest

from planner import (
    SUPPORTED_FAMILIES,
    SpecError,
    WeightFormat,
    count_params,
    import_hf_config,
    load_catalog,
)
from tests.planner.hf_configs import COMPOSITE_CASES, COMPOSITE_FAMILIES, FAMILIES
from tests.planner.oracle import build_meta_model, oracle_counts

CATALOG = load_catalog()
_MLA = {"kv_lora_rank": 8, "qk_nope_head_dim": 4, "qk_rope_head_dim": 2, "v_head_dim": 6, "q_lora_rank": 12}
_FAMILY_KEYS: dict[str, dict[str, Any]] = {
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen2_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 8},
    "qwen3_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 8},
    "deepseek_v2": {"n_routed_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 8, **_MLA},
    "deepseek_v3": {"n_routed_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 8, **_MLA},
    "qwen3": {"head_dim": 16},
    "gemma": {"head_dim": 16},
    "gemma2": {"head_dim": 16},
    "phi3": {"pad_token_id": 0, "eos_token_id": None},  # the defaults (32000) lie outside the vocabulary
    "gpt_oss": {"num_local_experts": 4, "num_experts_per_tok": 2, "head_dim": 16},
    "minimax_m2": {"num_local_experts": 4, "num_experts_per_tok": 2, "head_dim": 16, "bos_token_id": None},
    "gemma3_text": {"head_dim": 16},
    "olmoe": {"num_experts": 4, "num_experts_per_tok": 2},
    "glm4": {"head_dim": 16, "pad_token_id": None},
    "smollm3": {"pad_token_id": None},
    "cohere": {"use_qk_norm": True},
    "gpt2": {"bos_token_id": None, "eos_token_id": None},  # the defaults (50256) lie outside the vocabulary
    "falcon": {"new_decoder_architecture": True, "num_kv_heads": 2},
    "starcoder2": {"bos_token_id": None, "eos_token_id": None},
}


def _family_config(family: str) -> dict[str, Any]:
    """A small config as a user would write it: the family's own keys, the rest left to defaults."""
    config = {
        "model_type": family,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "vocab_size": 128,
        **_FAMILY_KEYS.get(family, {}),
    }
    if family.startswith("deepseek"):
        config |= {"first_k_dense_replace": 1}  # MLA ignores num_key_value_heads; published configs set it to n_h
    else:
        config |= {"num_key_value_heads": 2}
    return config


def _counts(config: dict[str, Any]) -> tuple[int, int]:
    counts = count_params(import_hf_config(config).spec)
    return counts.total, counts.active_per_token


def _oracle(config: dict[str, Any]) -> tuple[int, int]:
    oracle = oracle_counts(config)
    return oracle.total, oracle.active_per_token


def test_supported_families_are_the_tested_ones() -> None:
    # 25 decoder families, the kimi_k2 alias of deepseek_v3, 6 vision-language wrappers
    assert sorted(SUPPORTED_FAMILIES) == sorted((*FAMILIES, "kimi_k2", *COMPOSITE_FAMILIES))


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_imports_exactly(family: str) -> None:
    config = _family_config(family)
    imported = import_hf_config(config)
    assert (imported.family, imported.spec.family, imported.exact, imported.warnings) == (family, family, True, ())
    assert (imported.spec.num_layers, imported.spec.hidden_size, imported.spec.vocab_size) == (3, 64, 128)
    assert _counts(config) == _oracle(config)


@pytest.mark.parametrize("family", FAMILIES)
def test_config_as_transformers_5_saves_it_imports_the_same(family: str) -> None:
    # save_pretrained writes config.to_dict(): canonical key names and every default filled in
    # (transformers 5 writes qwen3_moe's num_experts as num_local_experts, deepseek_v3's num_key_value_heads = 128).
    config = _family_config(family)
    saved = json.loads(build_meta_model(config).config.to_json_string())
    assert _counts(saved) == _oracle(config)


@pytest.mark.parametrize("config", [c for _, c in COMPOSITE_CASES], ids=[i for i, _ in COMPOSITE_CASES])
def test_vision_language_config_as_transformers_5_saves_it_imports_the_same(config: dict[str, Any]) -> None:
    # The saved wrapper spells out text_config (kimi_k2 rewritten to deepseek_v3) and its own tie_word_embeddings.
    saved = json.loads(build_meta_model(config).config.to_json_string())
    assert _counts(saved) == _oracle(config)


# --- vision-language wrappers and aliases ------------------------------------------------------------------------


def test_kimi_k25_counts_its_language_model_and_names_what_is_left_out() -> None:
    model = CATALOG.model("kimi-k2.5")
    imported = import_hf_config(model.config)
    assert (imported.family, imported.spec.family, imported.exact) == ("kimi_k25", "deepseek_v3", True)
    assert imported.warnings == (
        "kimi_k25 is a vision-language model: only its language model (text_config, read as deepseek_v3) is "
        "counted; the MoonViT vision tower and the mm_projector (patch merger) are left out",
    )
    assert [name for name, _ in oracle_counts(model.config).left_out] == ["vision_tower", "mm_projector"]
    assert model.params.total == 1_026_408_209_408  # language model + lm_head (transformers 5.23, meta device)


def test_kimi_k2_model_type_reads_as_deepseek_v3() -> None:
    # Kimi-K2's own config.json says model_type "kimi_k2" (remote code); transformers reads it as deepseek_v3
    # inside Kimi-K2.5 (Kimi_K25Config.__post_init__), so the oracle is the deepseek_v3 build of the same keys.
    deepseek = _family_config("deepseek_v3")
    imported = import_hf_config({**deepseek, "model_type": "kimi_k2"})
    assert (imported.family, imported.spec.family, imported.exact, imported.warnings) == (
        "kimi_k2",
        "deepseek_v3",
        True,
        (),
    )
    assert _counts({**deepseek, "model_type": "kimi_k2"}) == _oracle(deepseek)


def test_unknown_wrapper_reads_its_text_config_with_a_warning() -> None:
    llama = CATALOG.model("llama-3-8b")
    imported = import_hf_config({"model_type": "my_vlm", "text_config": llama.config})
    assert imported.exact is False and imported.spec.family == "llama"
    assert len(imported.warnings) == 1 and "'my_vlm'" in imported.warnings[0]
    assert "not checked" in imported.warnings[0]
    assert count_params(imported.spec).total == llama.params.total


def test_problems_inside_text_config_are_located_there() -> None:
    text = {k: v for k, v in CATALOG.model("llama-3-8b").config.items() if k != "hidden_size"}
    with pytest.raises(SpecError) as caught:
        import_hf_config({"model_type": "llava", "text_config": text})
    assert [p.loc for p in caught.value.problems] == [("text_config", "hidden_size")]
    with pytest.raises(SpecError) as caught:
        import_hf_config({"model_type": "llava", "text_config": {**text, "hidden_size": 0}})
    assert [p.loc for p in caught.value.problems] == [("text_config", "hidden_size")]


# --- keys of published configs that transformers does not build ---------------------------------------------------


def test_minimax_m2_mtp_modules_are_not_counted() -> None:
    # MiniMax-M2.5 config.json: use_mtp true, num_mtp_modules 3 (multi-token prediction, like DeepSeek's nextn).
    imported = import_hf_config(CATALOG.model("minimax-m2.5").config)
    assert imported.warnings == (
        "use_mtp with num_mtp_modules=3: the multi-token-prediction modules are not built by transformers and are "
        "not counted",
    )


def test_minimax_m2_keys_transformers_ignores_warn_and_count_what_is_built() -> None:
    config = {**_family_config("minimax_m2"), "use_qk_norm": False, "shared_intermediate_size": 32}
    imported = import_hf_config(config)
    assert len(imported.warnings) == 2 and imported.spec.qk_norm and imported.spec.moe is not None
    assert imported.spec.moe.shared_expert_ffn_dim == 0
    assert _counts(config) == _oracle(config)


def test_gpt_oss_experts_per_token_is_not_the_routing_width() -> None:
    # openai/gpt-oss config.json carries experts_per_token beside num_experts_per_tok; transformers reads the latter.
    config = {**_family_config("gpt_oss"), "experts_per_token": 1}
    imported = import_hf_config(config)
    assert imported.spec.moe is not None and imported.spec.moe.experts_per_token == 2
    assert len(imported.warnings) == 1 and "experts_per_token=1" in imported.warnings[0]
    assert _counts(config) == _oracle(config)


def test_unknown_model_type_reads_as_llama_with_a_warning() -> None:
    llama = CATALOG.model("llama-3-8b")
    imported = import_hf_config({**llama.config, "model_type": "my_llama_fork"})
    assert imported.exact is False
    assert len(imported.warnings) == 1 and "'my_llama_fork'" in imported.warnings[0]
    assert count_params(imported.spec).total == llama.params.total == 8_030_261_248  # Meta's "8B"


def test_missing_required_keys_are_all_reported() -> None:
    with pytest.raises(SpecError) as caught:
        import_hf_config({"model_type": "llama", "num_key_value_heads": 8})
    required = ["hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "intermediate_size"]
    assert sorted(p.loc for p in caught.value.problems) == sorted((key,) for key in required)
    assert {p.type for p in caught.value.problems} == {"missing"}


def test_missing_keys_of_a_published_config_are_named() -> None:
    config = {
        k: v for k, v in CATALOG.model("mistral-7b-v0.1").config.items() if k not in ("hidden_size", "vocab_size")
    }
    with pytest.raises(SpecError) as caught:
        import_hf_config(config)
    assert sorted(p.loc for p in caught.value.problems) == [("hidden_size",), ("vocab_size",)]


def test_invalid_values_are_reported_under_the_config_key() -> None:
    config = {**_family_config("mixtral"), "num_experts_per_tok": 5}  # 5 of 4 experts
    with pytest.raises(SpecError) as caught:
        import_hf_config(config)
    assert [p.loc for p in caught.value.problems] == [("num_experts_per_tok",)]
    with pytest.raises(SpecError) as caught:
        import_hf_config({**_family_config("llama"), "num_key_value_heads": 3})  # 4 heads
    assert [p.loc for p in caught.value.problems] == [("num_key_value_heads",)]


# --- explicit null vs absent --------------------------------------------------------------------------------------


def test_explicit_null_q_lora_rank_overrides_the_family_default() -> None:
    # DeepSeek-V2-Lite publishes "q_lora_rank": null (a full-rank q_proj); the family default is 1536.
    with_null = {**_family_config("deepseek_v2"), "q_lora_rank": None}
    absent = {k: v for k, v in with_null.items() if k != "q_lora_rank"}
    null_spec, absent_spec = import_hf_config(with_null).spec, import_hf_config(absent).spec
    assert null_spec.mla is not None and null_spec.mla.q_lora_rank is None
    assert absent_spec.mla is not None and absent_spec.mla.q_lora_rank == 1536
    assert _counts(with_null) == _oracle(with_null)
    assert _counts(absent) == _oracle(absent)
    lite = CATALOG.model("deepseek-v2-lite").spec.mla
    assert lite is not None and lite.q_lora_rank is None


def test_qwen2_moe_without_experts_builds_dense_layers() -> None:
    config = {**_family_config("qwen2_moe"), "num_experts": 0}
    assert import_hf_config(config).spec.moe is None
    assert _counts(config) == _oracle(config)


# --- quantization_config ------------------------------------------------------------------------------------------


def test_deepseek_v3_fp8_block_checkpoint() -> None:
    # DeepSeek-V3 config.json: quantization_config {"quant_method": "fp8", "weight_block_size": [128, 128]}.
    imported = import_hf_config(CATALOG.model("deepseek-v3").config)
    assert imported.suggested_weight_format is WeightFormat.FP8_BLOCK
    assert imported.suggested_quant_group_size is None
    assert imported.checkpoint_dtype == "bfloat16"
    assert any("num_nextn_predict_layers=1" in w for w in imported.warnings)  # MTP module: not built, not counted


@pytest.mark.parametrize(
    ("quantization_config", "weight_format", "group_size"),
    [
        ({"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False}, WeightFormat.INT4_GPTQ, 128),
        ({"quant_method": "awq", "bits": 4, "group_size": 64, "version": "gemm"}, WeightFormat.INT4_AWQ, 64),
        ({"quant_method": "bitsandbytes", "load_in_4bit": True}, WeightFormat.NF4, None),
        ({"quant_method": "bitsandbytes", "load_in_8bit": True}, WeightFormat.INT8, None),
        ({"quant_method": "fp8", "activation_scheme": "dynamic"}, WeightFormat.FP8, None),
    ],
)
def test_quantization_config_suggests_a_weight_format(
    quantization_config: dict[str, Any], weight_format: WeightFormat, group_size: int | None
) -> None:
    config = {**CATALOG.model("llama-3-8b").config, "quantization_config": quantization_config}
    imported = import_hf_config(config)
    assert (imported.suggested_weight_format, imported.suggested_quant_group_size) == (weight_format, group_size)
    assert imported.warnings == ()


def test_unmodelled_quantization_is_a_warning_not_a_guess() -> None:
    config = {**CATALOG.model("llama-3-8b").config, "quantization_config": {"quant_method": "gptq", "bits": 8}}
    imported = import_hf_config(config)
    assert imported.suggested_weight_format is None
    assert len(imported.warnings) == 1 and "gptq" in imported.warnings[0]
