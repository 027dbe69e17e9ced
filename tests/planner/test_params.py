"""count_params against transformers, exactly: every catalog model, random tiny configs of all 21 decoder families
and of the vision-language wrappers (their language model alone).

The oracle is the model `AutoModelForCausalLM.from_config` builds on the meta device (tests/planner/oracle.py);
nothing here is a hand-typed expectation.
"""

from __future__ import annotations

from typing import Any

import pytest

from planner import CatalogModel, ModelSpec, ParamCounts, count_params, import_hf_config, load_catalog
from tests.planner.hf_configs import (
    COMPOSITE_CASES,
    COMPOSITE_FAMILIES,
    DEFAULTS_CASES,
    FAMILIES,
    GPT_FAMILIES,
    PUBLISHED_CONFIGS,
    PUBLISHED_TOTALS,
    random_composite_configs,
    random_configs,
)
from tests.planner.oracle import OracleCounts, attention_dims, build_meta_model, oracle_counts

CATALOG = load_catalog().models
RANDOM_CASES = random_configs(per_family=6, seed=20_240_507)
COMPOSITE_RANDOM_CASES = random_composite_configs(per_text_type=3, seed=20_250_901)


def _summary(counts: ParamCounts | OracleCounts) -> dict[str, int]:
    return {
        "total": counts.total,
        "embedding": counts.embedding,
        "lm_head": counts.lm_head,
        "position_embedding": counts.position_embedding,
        "final_norm": counts.final_norm,
        "active_per_token": counts.active_per_token,
    }


def _planner_layers(spec: ModelSpec, counts: ParamCounts) -> list[dict[str, Any]]:
    """Each layer index, described by the planner layer kind that layer belongs to."""
    by_kind = {kind.kind: kind for kind in counts.layers}
    rows = []
    for i in range(spec.num_layers):
        kind = by_kind["moe" if spec.moe is not None and spec.moe.is_moe_layer(i) else "dense"]
        rows.append(
            {
                "kind": kind.kind,
                "total": kind.params_per_layer,
                "attention": kind.attention_params_per_layer,
                "mlp": kind.mlp_params_per_layer,
                "norms": kind.norm_params_per_layer,
                "active": kind.active_params_per_layer,
            }
        )
    return rows


def _oracle_layers(oracle: OracleCounts) -> list[dict[str, Any]]:
    return [
        {
            "kind": "moe" if layer.is_moe else "dense",
            "total": layer.total,
            "attention": layer.attention,
            "mlp": layer.mlp,
            "norms": layer.norms,
            "active": layer.active,
        }
        for layer in oracle.layers
    ]


def _imported_counts(config: dict[str, Any]) -> tuple[ModelSpec, ParamCounts]:
    spec = import_hf_config(config).spec
    return spec, count_params(spec)


# --- the catalog: published config.json files, up to DeepSeek-V3 (671B) and Llama-3.1-405B ---------------------


@pytest.mark.parametrize("model", CATALOG, ids=lambda m: m.id)
def test_catalog_counts_equal_transformers(model: CatalogModel) -> None:
    assert _summary(model.params) == _summary(oracle_counts(model.config))


@pytest.mark.parametrize("model", CATALOG, ids=lambda m: m.id)
def test_catalog_per_layer_counts_equal_transformers(model: CatalogModel) -> None:
    assert _planner_layers(model.spec, model.params) == _oracle_layers(oracle_counts(model.config))


def test_catalog_covers_dense_moe_and_mla() -> None:
    # Guards the two tests above against a catalog that silently loses its hard cases.
    specs = {m.id: m.spec for m in CATALOG}
    assert len(specs) == 22
    assert specs["deepseek-v3"].mla is not None and specs["deepseek-v3"].moe is not None
    assert specs["mixtral-8x7b"].moe is not None and specs["llama-3.1-405b"].moe is None
    oss = specs["gpt-oss-120b"]
    assert oss.attention_sinks and oss.qkv_bias and oss.o_bias and oss.sliding_window_layers == tuple(range(0, 36, 2))
    assert oss.moe is not None and oss.moe.expert_bias and oss.moe.router_bias
    assert specs["minimax-m2.5"].qk_norm_type == "per_layer"
    assert specs["kimi-k2.5"].mla is not None and specs["kimi-k2.5"].family == "deepseek_v3"


# --- published config.json files of the GPT-style families (tests/planner/hf_configs.py, with their URLs) ---------


@pytest.mark.parametrize("model_id", PUBLISHED_CONFIGS)
def test_published_gpt_style_configs_count_exactly_as_transformers(model_id: str) -> None:
    _, config = PUBLISHED_CONFIGS[model_id]
    imported = import_hf_config(config)
    assert imported.exact and imported.warnings == ()
    spec, counts = imported.spec, count_params(imported.spec)
    oracle = oracle_counts(config)
    assert _summary(counts) == _summary(oracle)
    assert _planner_layers(spec, counts) == _oracle_layers(oracle)
    assert counts.total == PUBLISHED_TOTALS.get(model_id, counts.total)


def test_published_gpt_style_configs_keep_their_architecture() -> None:
    specs = {model_id: import_hf_config(config).spec for model_id, (_, config) in PUBLISHED_CONFIGS.items()}
    gpt2, neox = specs["openai-community/gpt2"], specs["EleutherAI/gpt-neox-20b"]
    assert (gpt2.learned_positions, gpt2.max_context, gpt2.tie_embeddings, gpt2.ffn_dim) == (True, 1024, True, 3072)
    assert (neox.rotary_dim, neox.resolved_head_dim, neox.tie_embeddings, neox.mlp_kind) == (24, 96, False, "plain")
    falcon_7b, falcon_40b = specs["tiiuae/falcon-7b"], specs["tiiuae/falcon-40b"]
    assert (falcon_7b.attention_kind.value, falcon_7b.kv_heads, falcon_7b.norms_per_layer) == ("MQA", 1, 1)
    assert (falcon_40b.attention_kind.value, falcon_40b.kv_heads, falcon_40b.norms_per_layer) == ("GQA", 8, 2)
    assert (falcon_7b.ffn_dim, falcon_7b.qkv_bias, falcon_7b.tie_embeddings) == (4 * 4544, False, True)
    starcoder = specs["bigcode/starcoder2-15b"]
    assert (starcoder.kv_heads, starcoder.sliding_window, starcoder.sliding_window_layers) == (4, 4096, None)
    assert starcoder.qkv_bias and starcoder.o_bias and starcoder.mlp_bias and starcoder.norm_bias
    assert all(s.norm_bias and s.mlp_kind == "plain" for s in specs.values())


# --- random tiny configs of every family --------------------------------------------------------------------------


@pytest.mark.parametrize("config", [c for _, c in RANDOM_CASES], ids=[i for i, _ in RANDOM_CASES])
def test_random_config_counts_equal_transformers(config: dict[str, Any]) -> None:
    spec, counts = _imported_counts(config)
    oracle = oracle_counts(config)
    assert _summary(counts) == _summary(oracle)
    assert _planner_layers(spec, counts) == _oracle_layers(oracle)


def test_random_configs_exercise_every_branch() -> None:
    # The generator must actually produce the cases the test above claims to cover.
    specs = [import_hf_config(c).spec for _, c in RANDOM_CASES]
    assert {s.family for s in specs} == set(FAMILIES)
    assert any(s.tie_embeddings for s in specs) and not all(s.tie_embeddings for s in specs)
    assert any(s.qkv_bias for s in specs) and any(s.o_bias for s in specs) and any(s.mlp_bias for s in specs)
    assert {s.attention_kind.value for s in specs} == {"MHA", "GQA", "MQA", "MLA"}
    assert any(s.head_dim is not None and s.head_dim * s.num_heads != s.hidden_size for s in specs)
    moes = [s.moe for s in specs if s.moe is not None]
    assert any(m.first_dense_layers for m in moes) and any(m.dense_layer_ids for m in moes)
    assert any(m.layer_step == 2 for m in moes) and any(m.experts_per_token == m.num_experts for m in moes)
    assert any(s.mla is not None and s.mla.q_lora_rank is None for s in specs)
    assert any(s.mla is not None and s.mla.q_lora_rank is not None for s in specs)
    assert any(s.attention_sinks for s in specs) and any(s.qk_norm_type == "per_layer" for s in specs)
    assert any(m.expert_bias and m.router_bias for m in moes)
    gpt = [s for s in specs if s.family in GPT_FAMILIES]
    assert all(s.mlp_kind == "plain" and s.norm_bias for s in gpt) and any(s.learned_positions for s in gpt)
    assert {s.norms_per_layer for s in gpt if s.family == "falcon"} == {1, 2}
    assert any(s.rotary_dim for s in gpt) and any(s.rotary_dim is None for s in gpt if s.family == "gpt_neox")
    patterned = [s for s in specs if s.family in ("gpt_oss", "gemma3_text")]
    assert any(s.sliding_window_layers for s in patterned) and any(s.sliding_window is None for s in patterned)


# --- vision-language configs: the language model under text_config, counted alone -----------------------------


@pytest.mark.parametrize("config", [c for _, c in COMPOSITE_RANDOM_CASES], ids=[i for i, _ in COMPOSITE_RANDOM_CASES])
def test_random_vision_language_configs_count_their_language_model(config: dict[str, Any]) -> None:
    imported = import_hf_config(config)
    counts, oracle = count_params(imported.spec), oracle_counts(config)
    assert _summary(counts) == _summary(oracle)
    assert _planner_layers(imported.spec, counts) == _oracle_layers(oracle)
    # what transformers builds besides the language model is left out, and the warning says so
    assert oracle.left_out and imported.exact
    assert any("vision tower" in w and "projector" in w and "left out" in w for w in imported.warnings)


def test_random_vision_language_configs_cover_every_wrapper() -> None:
    imported = [import_hf_config(c) for _, c in COMPOSITE_RANDOM_CASES]
    assert {i.family for i in imported} == set(COMPOSITE_FAMILIES)
    assert {i.spec.tie_embeddings for i in imported} == {False, True}
    assert {i.spec.family for i in imported if i.family == "kimi_k25"} == {"deepseek_v3"}  # kimi_k2 included


# --- configs that leave keys out, so the family defaults of transformers 5 apply ----------------------------------


_DEFAULTS_AND_WRAPPERS = DEFAULTS_CASES + COMPOSITE_CASES


@pytest.mark.parametrize("config", [c for _, c in _DEFAULTS_AND_WRAPPERS], ids=[i for i, _ in _DEFAULTS_AND_WRAPPERS])
def test_family_defaults_match_transformers(config: dict[str, Any]) -> None:
    spec, counts = _imported_counts(config)
    model = build_meta_model(config)
    if spec.mla is None:  # name the resolved dimension first: a bare count mismatch says little
        assert (spec.kv_heads, spec.resolved_head_dim) == attention_dims(model)
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert spec.tie_embeddings is tied  # a wrapper's own tie_word_embeddings default, not text_config's
    assert _summary(counts) == _summary(oracle_counts(config))


def test_deepseek_zero_shared_experts_with_mlp_bias() -> None:
    # n_shared_experts = 0 still builds DeepseekV2MLP(intermediate_size=0): its down_proj (0 -> h) keeps an
    # h-sized bias when mlp_bias is set, so transformers has h extra parameters per MoE layer.
    config = {
        "model_type": "deepseek_v2",
        "hidden_size": 32,
        "intermediate_size": 40,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 64,
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "n_shared_experts": 0,
        "moe_intermediate_size": 8,
        "mlp_bias": True,
        "q_lora_rank": None,
        "kv_lora_rank": 8,
        "qk_nope_head_dim": 4,
        "qk_rope_head_dim": 2,
        "v_head_dim": 4,
    }
    _, counts = _imported_counts(config)
    assert _summary(counts) == _summary(oracle_counts(config))


# --- the parts add up (planner-internal, no oracle) ---------------------------------------------------------------

_CONSISTENCY_CASES = [(m.id, m.spec) for m in CATALOG] + [
    (i, import_hf_config(c).spec) for i, c in RANDOM_CASES + COMPOSITE_RANDOM_CASES
]


@pytest.mark.parametrize("spec", [s for _, s in _CONSISTENCY_CASES], ids=[i for i, _ in _CONSISTENCY_CASES])
def test_components_sum_to_total(spec: ModelSpec) -> None:
    counts = count_params(spec)
    layers = sum(kind.params_per_layer * kind.layers for kind in counts.layers)
    outer = counts.embedding + counts.lm_head + counts.position_embedding + counts.final_norm
    assert counts.total == outer + layers
    assert sum(kind.layers for kind in counts.layers) == spec.num_layers
    for kind in counts.layers:
        parts = kind.attention_params_per_layer + kind.mlp_params_per_layer + kind.norm_params_per_layer
        assert kind.params_per_layer == parts
        assert kind.active_params_per_layer <= kind.params_per_layer
    assert (counts.lm_head == 0) is spec.tie_embeddings
