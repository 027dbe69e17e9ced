"""linear_weight_bytes for the 4-bit formats of published MoE checkpoints, against the tensors those files store."""

from __future__ import annotations

from math import ceil, prod

from planner import WeightFormat, linear_weight_bytes, load_catalog
from planner.model.params import layer_kinds

CATALOG = load_catalog()
UINT8, INT32, BF16 = 1, 4, 2


def test_mxfp4_matches_the_gpt_oss_checkpoint_tensors() -> None:
    # openai/gpt-oss-120b safetensors, one MoE layer (transformers integrations/mxfp4.py reads the same shapes):
    #   mlp.experts.gate_up_proj_blocks uint8 (128, 5760, 90, 16), gate_up_proj_scales uint8 (128, 5760, 90)
    #   mlp.experts.down_proj_blocks    uint8 (128, 2880, 90, 16), down_proj_scales    uint8 (128, 2880, 90)
    # i.e. 16 bytes of E2M1 pairs and one E8M0 scale per 32 input elements of every output row.
    stored = sum(
        prod(shape) * UINT8 for shape in [(128, 5760, 90, 16), (128, 5760, 90), (128, 2880, 90, 16), (128, 2880, 90)]
    )
    spec = CATALOG.model("gpt-oss-120b").spec
    (moe_layout, _n), *_ = [(layout, n) for layout, n in layer_kinds(spec) if layout.kind == "moe"]
    experts = [lin for lin in moe_layout.mlp if lin.name.startswith("experts.")]
    planned = sum(lin.count * linear_weight_bytes(lin.d_in, lin.d_out, WeightFormat.MXFP4) for lin in experts)
    assert planned == stored == 128 * (5760 + 2880) * 90 * 17


def test_int4_sym_matches_the_compressed_tensors_layout() -> None:
    # compressed-tensors PackedQuantizationCompressor, symmetric int4 per group of 32 (Kimi-K2.5's experts):
    #   weight_packed int32 (d_out, ⌈d_in/8⌉), weight_scale bf16 (d_out, ⌈d_in/32⌉), weight_shape int32 (2,);
    #   no weight_zero_point when symmetric. One Kimi-K2.5 expert gate_proj: d_in = h = 7168, d_out = f_e = 2048.
    d_in, d_out = 7168, 2048
    stored = d_out * ceil(d_in / 8) * INT32 + d_out * ceil(d_in / 32) * BF16 + 2 * INT32
    assert linear_weight_bytes(d_in, d_out, WeightFormat.INT4_SYM, group_size=32) == stored == 8_257_544


def test_four_bit_formats_cost_what_their_scales_cost() -> None:
    # per weight: MXFP4 4 + 8/32 bits; symmetric int4 g=128 4 + 16/128 bits; AWQ g=128 adds a 4-bit zero
    d = 4096
    bits = {
        fmt: 8 * linear_weight_bytes(d, d, fmt, group_size=128) / (d * d)
        for fmt in (WeightFormat.MXFP4, WeightFormat.INT4_SYM, WeightFormat.INT4_AWQ)
    }
    assert bits[WeightFormat.MXFP4] == 4.25
    assert bits[WeightFormat.INT4_SYM] == 4.125 + 64 / (d * d)  # + the 8-byte weight_shape
    assert bits[WeightFormat.INT4_AWQ] == 4 + (16 + 4) / 128
