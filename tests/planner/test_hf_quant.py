"""checkpoint_quantization: the weight format of gpt-oss MXFP4, MiniMax fp8 blocks and Kimi-K2.5 compressed-tensors
int4, and which linears each covers (planner.model.params marks the rest 16-bit)."""

from __future__ import annotations

from typing import Any

import pytest

from planner import WeightFormat, import_hf_config, load_catalog
from planner.model.hf_quant import checkpoint_quantization
from planner.model.params import layer_kinds

CATALOG = load_catalog()
# Kimi-K2.5 config.json text_config.quantization_config, as published (moonshotai/Kimi-K2.5).
_KIMI_IGNORE = ["lm_head", "re:.*self_attn.*", "re:.*shared_experts.*", r"re:.*mlp\.(gate|up|gate_up|down)_proj.*"]


def _compressed_tensors(weights: dict[str, Any], ignore: list[str], fmt: str = "pack-quantized") -> dict[str, Any]:
    return {
        "quant_method": "compressed-tensors",
        "format": fmt,
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights}},
        "ignore": ignore,
    }


_INT4_G32 = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 32}


def _quantized_linears(model_id: str) -> set[str]:
    spec = CATALOG.model(model_id).spec
    return {lin.name for layout, _ in layer_kinds(spec) for lin in layout.linears if lin.quantizable}


@pytest.mark.parametrize("model_id", ["gpt-oss-120b", "gpt-oss-20b"])
def test_gpt_oss_mxfp4_covers_the_experts_only(model_id: str) -> None:
    # config.json: {"quant_method": "mxfp4", "modules_to_not_convert": [self_attn, mlp.router, embed_tokens, lm_head]}
    imported = import_hf_config(CATALOG.model(model_id).config)
    assert (imported.suggested_weight_format, imported.suggested_quant_group_size) == (WeightFormat.MXFP4, None)
    assert imported.spec.quantize_experts_only and imported.warnings == ()
    assert _quantized_linears(model_id) == {"experts.gate_proj", "experts.up_proj", "experts.down_proj"}


def test_kimi_k25_int4_covers_the_routed_experts_only() -> None:
    # text_config.quantization_config: compressed-tensors pack-quantized, symmetric int4, group 32; ignore list
    # lm_head, self_attn, shared_experts and the dense MLP of layer 0 (first_k_dense_replace = 1).
    imported = import_hf_config(CATALOG.model("kimi-k2.5").config)
    assert (imported.suggested_weight_format, imported.suggested_quant_group_size) == (WeightFormat.INT4_SYM, 32)
    assert imported.spec.quantize_experts_only
    assert _quantized_linears("kimi-k2.5") == {"experts.gate_proj", "experts.up_proj", "experts.down_proj"}


def test_minimax_m2_fp8_blocks_cover_every_linear() -> None:
    # config.json: fp8 e4m3, weight_block_size [128, 128]; modules_to_not_convert: gate, e_score_correction_bias,
    # lm_head, which memplan keeps 16-bit in every format anyway.
    imported = import_hf_config(CATALOG.model("minimax-m2.5").config)
    assert imported.suggested_weight_format is WeightFormat.FP8_BLOCK
    assert not imported.spec.quantize_experts_only
    assert _quantized_linears("minimax-m2.5") == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "experts.gate_proj",
        "experts.up_proj",
        "experts.down_proj",
    }


def test_compressed_tensors_int4_without_ignores_covers_every_linear() -> None:
    warnings: list[str] = []
    quant = checkpoint_quantization(_compressed_tensors(_INT4_G32, ["lm_head"]), warnings)
    assert (quant.weight_format, quant.group_size, quant.experts_only, warnings) == (
        WeightFormat.INT4_SYM,
        32,
        False,
        [],
    )


def test_compressed_tensors_ignoring_part_of_the_rest_warns() -> None:
    warnings: list[str] = []
    quant = checkpoint_quantization(_compressed_tensors(_INT4_G32, ["lm_head", "re:.*self_attn.*"]), warnings)
    assert quant.weight_format is WeightFormat.INT4_SYM and not quant.experts_only
    assert warnings == ["compressed-tensors ignores only some non-expert linears (attention); read as int4 on all"]


@pytest.mark.parametrize(
    "quantization_config",
    [
        _compressed_tensors(
            {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True}, [], "float-quantized"
        ),
        _compressed_tensors({**_INT4_G32, "symmetric": False}, []),  # asymmetric: zero points stored too
        _compressed_tensors(_INT4_G32, [*_KIMI_IGNORE, "re:.*experts.*"]),  # nothing routed is quantized
    ],
    ids=["fp8-channel", "int4-asymmetric", "experts-ignored"],
)
def test_unmodelled_compressed_tensors_is_a_warning_not_a_guess(quantization_config: dict[str, Any]) -> None:
    warnings: list[str] = []
    quant = checkpoint_quantization(quantization_config, warnings)
    assert quant.weight_format is None and len(warnings) == 1 and "compressed-tensors" in warnings[0]


def test_kimi_ignore_list_read_against_module_names() -> None:
    # The published list leaves exactly the routed experts quantized.
    quant = checkpoint_quantization(_compressed_tensors(_INT4_G32, _KIMI_IGNORE), [])
    assert quant.experts_only
