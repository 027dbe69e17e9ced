"""trainable_params against peft 0.21.2 itself: `get_peft_model` on meta-device transformers 5 models, exactly.

The oracle (tests/planner/peft_oracle.py) reads `get_nb_trainable_parameters()` and the adapter parameters of every
wrapped module; nothing below is a hand-typed count except the golden table, whose provenance is given there.
"""

from __future__ import annotations

from typing import Any

import peft
import pytest
import torch
from peft.utils import constants as peft_constants
from peft.utils import transformers_weight_conversion as peft_conversion
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.conversion_mapping import get_checkpoint_conversion_mapping

from planner import SpecError, import_hf_config, load_catalog
from planner.model.hf_import import SUPPORTED_FAMILIES
from planner.model.params import layer_kinds
from planner.model.spec import ModelSpec
from planner.training.peft_params import (
    IA3_DEFAULT_FEEDFORWARD,
    IA3_DEFAULT_TARGETS,
    LORA_DEFAULT_TARGETS,
    MOE_TARGET_CONVERSION,
    TrainableParams,
    prefix_token_dim,
    trainable_params,
)
from planner.training.spec import (
    AdapterSpec,
    FullFineTune,
    IA3Spec,
    LoRASpec,
    MethodSpec,
    PrefixTuningSpec,
    PromptTuningSpec,
    QLoRASpec,
)
from tests.planner.hf_configs import DEFAULTS_CASES, random_configs
from tests.planner.peft_oracle import build_fresh_meta_model, peft_config, peft_counts, peft_warnings_silenced

DENSE_CATALOG = ("llama-2-7b", "llama-3-8b", "mistral-7b-v0.1", "qwen2.5-7b")
CATALOG_METHODS: dict[str, MethodSpec] = {
    "lora-r16-default": LoRASpec(rank=16),
    "lora-r16-all-linear": LoRASpec(rank=16, target_modules="all-linear"),
    "prefix-20": PrefixTuningSpec(num_virtual_tokens=20),
    "prefix-20-projection": PrefixTuningSpec(num_virtual_tokens=20, prefix_projection=True),
    "prompt-20": PromptTuningSpec(num_virtual_tokens=20),
    "ia3-default": IA3Spec(),
}
DEEPSEEK_TARGETS = ("q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
RANDOM_CASES = random_configs(per_family=2, seed=20_250_611)


def _config(model_id: str) -> tuple[ModelSpec, dict[str, Any]]:
    model = load_catalog().model(model_id)
    return model.spec, model.config


def _assert_equals_peft(spec: ModelSpec, config: dict[str, Any], method: MethodSpec) -> TrainableParams:
    ours = trainable_params(spec, method)
    oracle = peft_counts(config, method)
    assert (ours.trainable, ours.base_params) == (oracle.trainable, oracle.base)
    if isinstance(method, LoRASpec | IA3Spec):
        per_module: dict[str, int] = {}
        for module in ours.modules:
            per_module[module.name] = per_module.get(module.name, 0) + module.trainable_params
        assert per_module == oracle.per_module
    return ours


def _peft_refuses(config: dict[str, Any], method: MethodSpec) -> Exception:
    with pytest.raises(ValueError) as refused, peft_warnings_silenced(), torch.device("meta"):
        peft.get_peft_model(build_fresh_meta_model(config), peft_config(method))
    return refused.value


def _locs(err: pytest.ExceptionInfo[SpecError]) -> list[tuple[str | int, ...]]:
    return [p.loc for p in err.value.problems]


# --- the catalog ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method_id", CATALOG_METHODS)
@pytest.mark.parametrize("model_id", DENSE_CATALOG)
def test_catalog_trainable_equals_peft(model_id: str, method_id: str) -> None:
    _assert_equals_peft(*_config(model_id), CATALOG_METHODS[method_id])


# Recorded from peft 0.21.2 get_nb_trainable_parameters() on these catalog configs (transformers 5.23, meta device);
# the LoRA q,v r=16 Llama-2-7B figure is twice the r=8 "trainable params: 4,194,304" printed in peft's docs.
GOLDEN = {
    ("llama-2-7b", "lora-r16-default"): 8_388_608,
    ("llama-2-7b", "prefix-20-projection"): 1_090_867_200,
    ("llama-3-8b", "prefix-20"): 1_310_720,
    ("qwen2.5-7b", "ia3-default"): 645_120,
}


@pytest.mark.parametrize(("model_id", "method_id"), GOLDEN)
def test_catalog_golden_counts(model_id: str, method_id: str) -> None:
    spec, _ = _config(model_id)
    assert trainable_params(spec, CATALOG_METHODS[method_id]).trainable == GOLDEN[model_id, method_id]


@pytest.mark.parametrize("model_id", DENSE_CATALOG)
def test_full_fine_tune_trains_every_parameter(model_id: str) -> None:
    spec, config = _config(model_id)
    result = trainable_params(spec, FullFineTune())
    assert result.trainable == result.base_params == peft_counts(config, FullFineTune()).trainable
    assert result.modules == () and not result.lora_targets


def test_deepseek_v2_lite_explicit_lora_adapts_the_routed_experts_not_the_dense_mlps() -> None:
    # peft converts gate/up/down_proj to the stacked experts' parameters (gate_up_proj at rank 2r), so the dense
    # layer-0 MLP and the shared experts get no adapter from those names.
    ours = _assert_equals_peft(*_config("deepseek-v2-lite"), LoRASpec(rank=16, target_modules=DEEPSEEK_TARGETS))
    attention = {"q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"}
    assert ours.lora_targets == attention | {"experts.gate_proj", "experts.up_proj", "experts.down_proj"}
    fused = next(m for m in ours.modules if m.name == "experts.gate_up_proj")
    assert (fused.rank, fused.layers) == (32, 26)


@pytest.mark.parametrize("model_id", ["deepseek-v2-lite", "mixtral-8x7b"])
def test_catalog_moe_all_linear_equals_peft(model_id: str) -> None:
    ours = _assert_equals_peft(*_config(model_id), LoRASpec(rank=16, target_modules="all-linear"))
    assert {"router", "experts.gate_proj", "experts.up_proj", "experts.down_proj"} <= ours.lora_targets


@pytest.mark.parametrize("model_id", ["deepseek-v2-lite", "mixtral-8x7b"])
def test_moe_lora_without_targets_is_refused_like_peft(model_id: str) -> None:
    # mixtral has a peft default (q_proj, v_proj), but the MoE conversion empties target_modules before it applies.
    spec, config = _config(model_id)
    with pytest.raises(SpecError, match="no usable default") as err:
        trainable_params(spec, LoRASpec())
    assert _locs(err) == [("training", "method", "target_modules")]
    _peft_refuses(config, LoRASpec())


def test_ia3_on_deepseek_has_no_default_like_peft() -> None:
    spec, config = _config("deepseek-v2-lite")
    with pytest.raises(SpecError, match="no default IA3 target_modules for model_type 'deepseek_v2'") as err:
        trainable_params(spec, IA3Spec())
    assert _locs(err) == [("training", "method", "target_modules")]
    assert "Please specify `target_modules`" in str(_peft_refuses(config, IA3Spec()))


def test_prefix_tuning_on_mla_is_refused_although_peft_builds_it() -> None:
    # peft sizes the prefix from config.head_dim (= qk_rope_head_dim in DeepSeek configs) times the KV heads: it
    # builds without complaint, and the first forward fails on the shape mismatch.
    spec, config = _config("deepseek-v2-lite")
    method = PrefixTuningSpec(num_virtual_tokens=20)
    with pytest.raises(SpecError, match="MLA") as err:
        trainable_params(spec, method)
    assert _locs(err) == [("training", "method", "kind")]
    assert peft_counts(config, method).trainable == 20 * spec.num_layers * 2 * prefix_token_dim(spec)
    tiny = {
        "model_type": "deepseek_v2", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "vocab_size": 64, "intermediate_size": 16, "q_lora_rank": None, "kv_lora_rank": 8, "qk_nope_head_dim": 4,
        "qk_rope_head_dim": 4, "v_head_dim": 4, "n_routed_experts": 2, "moe_intermediate_size": 8,
    }  # fmt: skip
    with peft_warnings_silenced():  # a real (CPU) model this time: peft only fails once it runs
        model = peft.get_peft_model(AutoModelForCausalLM.from_config(AutoConfig.for_model(**tiny)), peft_config(method))
    with pytest.raises(RuntimeError, match="Sizes of tensors must match"):
        model(input_ids=torch.zeros(1, 3, dtype=torch.long))


def test_prefix_tuning_on_multi_query_falcon_is_refused_although_peft_builds_it() -> None:
    # peft reads no num_key_value_heads in FalconConfig and sizes the prefix h wide (n_h heads); falcon-7b's
    # multi-query attention caches one K/V head, so the forward fails. The new architecture broadcasts its K/V heads
    # to n_h before the cache, and there the prefix fits.
    tiny = {
        "model_type": "falcon",
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "vocab_size": 64,
    }
    method = PrefixTuningSpec(num_virtual_tokens=3)
    with pytest.raises(SpecError, match="multi-query Falcon") as err:
        trainable_params(_spec(tiny), method)
    assert _locs(err) == [("training", "method", "kind")]
    new_arch = {**tiny, "new_decoder_architecture": True, "num_kv_heads": 2}
    _assert_equals_peft(_spec(new_arch), new_arch, method)
    for config, fails in ((tiny, True), (new_arch, False)):
        with peft_warnings_silenced():  # real (CPU) models: peft only fails once it runs
            model = peft.get_peft_model(
                AutoModelForCausalLM.from_config(AutoConfig.for_model(**config)), peft_config(method)
            )
        if fails:
            with pytest.raises(RuntimeError, match="Sizes of tensors must match"):
                model(input_ids=torch.zeros(1, 3, dtype=torch.long))
        else:
            model(input_ids=torch.zeros(1, 3, dtype=torch.long))


# --- tiny random configs of every family --------------------------------------------------------------------

# One tiny model per MoE layout peft treats differently: a qwen2_moe with dense, MoE and shared-expert layers
# (not converted: shared_expert_gate is an nn.Linear(h, 1)), a qwen2_moe with a 0-wide shared expert, and a
# deepseek_v3 whose first layer is dense (converted: the dense MLP loses gate/up/down_proj).
MOE_CASES: list[tuple[str, dict[str, Any]]] = [
    ("qwen2_moe-shared-gate", {
        "model_type": "qwen2_moe", "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 64, "intermediate_size": 24, "num_experts": 4,
        "num_experts_per_tok": 2, "moe_intermediate_size": 12, "shared_expert_intermediate_size": 20,
        "mlp_only_layers": [1],
    }),
    ("qwen2_moe-zero-shared", {
        "model_type": "qwen2_moe", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
        "num_key_value_heads": 4, "vocab_size": 64, "intermediate_size": 24, "num_experts": 4, "num_experts_per_tok": 2,
        "moe_intermediate_size": 12, "shared_expert_intermediate_size": 0,
    }),
    ("deepseek_v3-first-dense", {
        "model_type": "deepseek_v3", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "vocab_size": 64, "intermediate_size": 24, "q_lora_rank": 8, "kv_lora_rank": 8, "qk_nope_head_dim": 4,
        "qk_rope_head_dim": 4, "v_head_dim": 4, "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2,
        "moe_intermediate_size": 8, "first_k_dense_replace": 1, "n_group": 1, "topk_group": 1,
    }),
]  # fmt: skip
TINY_CASES = RANDOM_CASES + DEFAULTS_CASES + MOE_CASES


def _spec(config: dict[str, Any]) -> ModelSpec:
    return import_hf_config(config).spec


@pytest.mark.parametrize(("case_id", "config"), TINY_CASES, ids=[c for c, _ in TINY_CASES])
def test_all_linear_lora_equals_peft(case_id: str, config: dict[str, Any]) -> None:
    _assert_equals_peft(_spec(config), config, LoRASpec(rank=3, target_modules="all-linear"))


@pytest.mark.parametrize(("case_id", "config"), TINY_CASES, ids=[c for c, _ in TINY_CASES])
def test_q_v_lora_equals_peft(case_id: str, config: dict[str, Any]) -> None:
    method = LoRASpec(rank=2, target_modules=("q_proj", "v_proj"))
    spec = _spec(config)
    fused_qkv = ("phi3", "gpt2", "gpt_neox", "falcon")  # qkv_proj, c_attn, query_key_value
    if spec.family in fused_qkv or (spec.mla is not None and spec.mla.q_lora_rank):  # q_a/q_b
        with pytest.raises(SpecError):
            trainable_params(spec, method)
        return
    ours = _assert_equals_peft(spec, config, method)  # MLA without q_lora_rank: peft adapts q_proj alone
    assert ours.unmatched_targets == (("v_proj",) if spec.mla is not None else ())


@pytest.mark.parametrize("method", [LoRASpec(rank=2), IA3Spec(), PromptTuningSpec(num_virtual_tokens=3)], ids=str)
@pytest.mark.parametrize(("case_id", "config"), TINY_CASES, ids=[c for c, _ in TINY_CASES])
def test_family_defaults_equal_peft_or_both_refuse(case_id: str, config: dict[str, Any], method: MethodSpec) -> None:
    spec = _spec(config)
    try:
        trainable_params(spec, method)
    except SpecError:
        _peft_refuses(config, method)
        return
    _assert_equals_peft(spec, config, method)


# MLA is refused: test_prefix_tuning_on_mla_is_refused_although_peft_builds_it
NON_MLA_CASES = [(case_id, config) for case_id, config in TINY_CASES if _spec(config).mla is None]


@pytest.mark.parametrize("encoder", [None, 7])
@pytest.mark.parametrize("projection", [False, True])
@pytest.mark.parametrize(("case_id", "config"), NON_MLA_CASES, ids=[c for c, _ in NON_MLA_CASES])
def test_prefix_tuning_equals_peft(case_id: str, config: dict[str, Any], projection: bool, encoder: int | None) -> None:
    method = PrefixTuningSpec(num_virtual_tokens=3, prefix_projection=projection, encoder_hidden_size=encoder)
    spec = _spec(config)
    if spec.family == "falcon" and spec.kv_heads == 1 < spec.num_heads:  # test_prefix_tuning_on_multi_query_falcon
        with pytest.raises(SpecError, match="multi-query Falcon"):
            trainable_params(spec, method)
        return
    _assert_equals_peft(spec, config, method)


IA3_TARGETS = {  # every layer MoE: no nn.Linear down_proj
    **{family: ("k_proj", "o_proj") for family in ("mixtral", "qwen3_moe", "gpt_oss", "minimax_m2", "olmoe")},
    "gpt2": ("c_proj", "c_fc"),  # attn.c_proj and mlp.c_proj: both Conv1D, both selected by "c_proj"
    "gpt_neox": ("dense", "dense_h_to_4h"),  # "dense" selects attention.dense alone
    "falcon": ("query_key_value", "dense_4h_to_h"),
    "starcoder2": ("o_proj", "c_proj"),
}


@pytest.mark.parametrize(("case_id", "config"), TINY_CASES, ids=[c for c, _ in TINY_CASES])
def test_explicit_ia3_equals_peft(case_id: str, config: dict[str, Any]) -> None:
    spec = _spec(config)
    targets = IA3_TARGETS.get(spec.family, ("o_proj", "down_proj"))
    if spec.family == "qwen2_moe" and spec.moe is not None and spec.moe.dense_layer_ids == ():
        targets = ("o_proj", "shared_expert.down_proj")  # every layer MoE: down_proj only in the shared expert
    ours = _assert_equals_peft(spec, config, IA3Spec(target_modules=targets, feedforward_modules=targets[1:]))
    assert ours.ia3_targets and not ours.lora_targets


def test_lora_targets_are_planner_linear_names() -> None:
    for _, config in TINY_CASES:
        spec = _spec(config)
        linears = {lin.name for layout, _ in layer_kinds(spec) for lin in layout.linears}
        if (
            spec.moe is not None and not spec.moe.shared_expert_ffn_dim
        ):  # planner.model.params omits a 0-wide shared MLP
            linears |= {"shared_experts.gate_proj", "shared_experts.up_proj", "shared_experts.down_proj"}
        assert trainable_params(spec, LoRASpec(target_modules="all-linear")).lora_targets <= linears


def test_phi3_fused_projections_map_to_planner_names() -> None:
    config = dict(DEFAULTS_CASES)["phi3-kv-from-heads"]
    ours = _assert_equals_peft(_spec(config), config, LoRASpec(rank=4, target_modules=("qkv_proj", "gate_up_proj")))
    assert ours.lora_targets == {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"}
    assert {m.name: (m.d_in, m.d_out) for m in ours.modules} == {"qkv_proj": (64, 192), "gate_up_proj": (64, 80)}


def test_qwen2_moe_all_linear_adapts_shared_expert_and_its_gate() -> None:
    config = dict(MOE_CASES)["qwen2_moe-shared-gate"]
    ours = _assert_equals_peft(_spec(config), config, LoRASpec(rank=2, target_modules="all-linear"))
    assert {"shared_experts.gate_proj", "shared_experts.down_proj", "shared_expert_gate", "gate_proj"} <= (
        ours.lora_targets
    )
    assert not ours.lora_targets & {"router", "experts.gate_proj", "experts.down_proj"}


def test_qwen2_moe_gate_proj_reaches_dense_and_shared_expert_mlps() -> None:
    config = dict(MOE_CASES)["qwen2_moe-shared-gate"]
    ours = _assert_equals_peft(_spec(config), config, LoRASpec(rank=2, target_modules=("gate_proj",)))
    assert {m.name for m in ours.modules} == {"gate_proj", "shared_expert.gate_proj"}


@pytest.mark.parametrize("targets", [("embed_tokens", "q_proj"), ("lm_head",)])
@pytest.mark.parametrize("case_id", ["llama-kv-from-heads", "gemma-tied-head_dim-256-kv-16"])
def test_lora_on_embedding_and_lm_head_equals_peft(case_id: str, targets: tuple[str, ...]) -> None:
    config = dict(DEFAULTS_CASES)[case_id]
    _assert_equals_peft(_spec(config), config, LoRASpec(rank=4, target_modules=targets))


def test_qlora_trains_what_lora_trains() -> None:
    spec, _ = _config("llama-3-8b")
    lora = trainable_params(spec, LoRASpec(rank=8, target_modules="all-linear"))
    assert trainable_params(spec, QLoRASpec(rank=8, target_modules="all-linear")) == lora


# --- refusals ------------------------------------------------------------------------------------------------


def test_targets_that_match_nothing_are_refused_like_peft() -> None:
    spec, config = _config("llama-3-8b")
    with pytest.raises(SpecError, match=r"\['qkv'\] match no module") as err:
        trainable_params(spec, LoRASpec(target_modules=("qkv",)))
    assert _locs(err) == [("training", "method", "target_modules")]
    assert "not found in the base model" in str(_peft_refuses(config, LoRASpec(target_modules=("qkv",))))
    with pytest.raises(SpecError, match=r"\['wq'\]"):
        trainable_params(spec, IA3Spec(target_modules=("wq",)))


# issue 10: q_proj, v_proj on DeepSeek-V2 (which has no v_proj) was a 422; peft adapts q_proj alone
@pytest.mark.parametrize(
    ("config_id", "method"),
    [
        ("deepseek_v2-mla-defaults", LoRASpec(rank=4, target_modules=("q_proj", "v_proj"))),
        ("deepseek_v2-mla-defaults", LoRASpec(rank=4, target_modules=("kv_a_proj_with_mqa", "k_proj"))),
        ("llama-kv-from-heads", LoRASpec(rank=4, target_modules=("q_proj", "qkv"))),
        ("llama-kv-from-heads", IA3Spec(target_modules=("wq", "k_proj"), feedforward_modules=())),
    ],
)
def test_partly_matching_targets_are_answered_as_peft_builds_them(config_id: str, method: MethodSpec) -> None:
    config = dict(DEFAULTS_CASES + MOE_CASES)[config_id]
    if config_id.startswith("deepseek"):  # DeepSeek-V2-Lite's layout: q_proj, no q_lora_rank
        config = {**config, "q_lora_rank": None}
    ours = _assert_equals_peft(_spec(config), config, method)
    given = set(method.target_modules or ())  # type: ignore[union-attr]
    assert ours.unmatched_targets and set(ours.unmatched_targets) < given
    assert ours.trainable > 0


def test_phi3_has_no_default_lora_targets_and_no_q_proj() -> None:
    config = dict(DEFAULTS_CASES)["phi3-kv-from-heads"]
    with pytest.raises(SpecError, match="no default LoRA target_modules for model_type 'phi3'"):
        trainable_params(_spec(config), LoRASpec())
    with pytest.raises(SpecError, match=r"\['q_proj'\] match no module .* 'qkv_proj'"):
        trainable_params(_spec(config), LoRASpec(target_modules=("q_proj",)))


@pytest.mark.parametrize("targets", [("gate_proj",), ("q_proj", "up_proj")])
def test_half_of_the_fused_expert_projection_is_refused_like_peft(targets: tuple[str, ...]) -> None:
    config = dict(MOE_CASES)["deepseek_v3-first-dense"]
    with pytest.raises(SpecError, match="target both or neither"):
        trainable_params(_spec(config), LoRASpec(target_modules=targets))
    assert "without also targeting" in str(_peft_refuses(config, LoRASpec(target_modules=targets)))


def test_lora_dropout_on_expert_parameters_is_refused_like_peft() -> None:
    config = dict(MOE_CASES)["deepseek_v3-first-dense"]
    method = LoRASpec(rank=2, dropout=0.1, target_modules="all-linear")
    with pytest.raises(SpecError) as err:
        trainable_params(_spec(config), method)
    assert _locs(err) == [("training", "method", "dropout")]
    assert "lora_dropout != 0" in str(_peft_refuses(config, method))


def test_converted_names_with_no_moe_layer_are_answered_as_peft_drops_them() -> None:
    # on an all-dense qwen3_moe peft quietly trains only q_proj; the estimate names the names it dropped
    config = {**dict(DEFAULTS_CASES)["qwen3_moe-defaults"], "mlp_only_layers": [0, 1]}
    method = LoRASpec(rank=2, target_modules=("q_proj", "gate_proj", "up_proj"))
    ours = _assert_equals_peft(_spec(config), config, method)
    assert ours.unmatched_targets == ("gate_proj", "up_proj")
    assert peft_counts(config, method).per_module.keys() == {"q_proj"}


def test_ia3_feedforward_must_be_a_subset_of_targets() -> None:
    spec, _ = _config("llama-3-8b")
    with pytest.raises(SpecError) as err:
        trainable_params(spec, IA3Spec(target_modules=("k_proj",), feedforward_modules=("down_proj",)))
    assert _locs(err) == [("training", "method", "feedforward_modules")]


# --- adapters (not in peft) and peft's own tables ------------------------------------------------------------


@pytest.mark.parametrize("model_id", DENSE_CATALOG)
def test_houlsby_adapters_count_two_bottlenecks_per_layer(model_id: str) -> None:
    spec, _ = _config(model_id)
    m = 64
    with torch.device("meta"):  # Houlsby et al. 2019 Figure 2: down-projection, nonlinearity, up-projection
        adapter = nn.Sequential(nn.Linear(spec.hidden_size, m), nn.GELU(), nn.Linear(m, spec.hidden_size))
    per_adapter = sum(p.numel() for p in adapter.parameters())
    assert trainable_params(spec, AdapterSpec(bottleneck=m)).trainable == spec.num_layers * 2 * per_adapter


def test_default_tables_are_pefts_own() -> None:
    for family in SUPPORTED_FAMILIES:
        lora = peft_constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(family)
        ia3 = peft_constants.TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING.get(family)
        ff = peft_constants.TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING.get(family)
        assert LORA_DEFAULT_TARGETS.get(family) == (tuple(lora) if lora else None), family
        assert IA3_DEFAULT_TARGETS.get(family) == (tuple(ia3) if ia3 else None), family
        assert IA3_DEFAULT_FEEDFORWARD.get(family) == (tuple(ff) if ff else None), family


def test_moe_conversion_table_is_pefts_own() -> None:
    for family in SUPPORTED_FAMILIES:
        pattern = peft_conversion._MODEL_TO_CONVERSION_PATTERN.get(family)
        converted = get_checkpoint_conversion_mapping(family) is not None and pattern is not None
        expected = peft_conversion._MOE_TARGET_MODULE_MAPPING.get(pattern or "") if converted else None
        assert MOE_TARGET_CONVERSION.get(family) == expected, family
