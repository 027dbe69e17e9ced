"""Number formats: bytes per element for activations/KV, and exact storage of quantized weight matrices."""

from __future__ import annotations

from enum import StrEnum
from math import ceil

__all__ = [
    "DType",
    "WeightFormat",
    "dtype_bytes",
    "format_bits_note",
    "linear_weight_bytes",
]


class DType(StrEnum):
    """Element types of dense tensors (activations, KV cache, unquantized weights)."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    FP8 = "fp8"


_DTYPE_BYTES = {DType.FP32: 4, DType.BF16: 2, DType.FP16: 2, DType.FP8: 1}


def dtype_bytes(dtype: DType) -> int:
    """b_x: bytes per element of a dense tensor of `dtype`."""
    return _DTYPE_BYTES[dtype]


class WeightFormat(StrEnum):
    """Storage formats of linear-layer weights."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    FP8 = "fp8"  # e4m3 weights + one fp32 scale per matrix (vLLM per-tensor FP8)
    FP8_BLOCK = "fp8_block"  # e4m3 weights + one fp32 scale per 128×128 block (DeepSeek-V3 checkpoints)
    INT8 = "int8"  # int8 weights + one fp32 scale per output channel (LLM.int8 / W8A8)
    INT4_GPTQ = "int4_gptq"  # 4-bit packed + per-group fp16 scale and 4-bit zero + int32 g_idx per input row
    INT4_AWQ = "int4_awq"  # 4-bit packed + per-group fp16 scale and 4-bit zero
    NF4 = "nf4"  # QLoRA NormalFloat4 with double quantization


# Named constants of the formats' layouts.
FP32_SCALE_BYTES = 4
FP16_SCALE_BYTES = 2
INT4_BITS = 4
GPTQ_G_IDX_BYTES = 4  # int32 group index per input row (AutoGPTQ/vLLM GPTQ layout)
FP8_SCALE_BLOCK = 128  # DeepSeek-V3 weight_block_size [128, 128] (arXiv:2412.19437 §3.3.2)
NF4_BLOCK = 64  # elements per absmax block (QLoRA §3, "blocksize 64")
NF4_ABSMAX_BYTES = 1  # absmax re-quantized to 8 bits (double quantization, QLoRA §3)
NF4_SECOND_BLOCK = 256  # absmax values per second-level fp32 scale (QLoRA §3)

_DENSE_FORMAT_BYTES = {WeightFormat.FP32: 4, WeightFormat.BF16: 2, WeightFormat.FP16: 2}


def linear_weight_bytes(d_in: int, d_out: int, fmt: WeightFormat, group_size: int = 128) -> int:
    """Bytes that one d_in×d_out weight matrix occupies in `fmt` (bias excluded).

    Formula:
      dense:      d_in·d_out·b_w
      fp8:        d_in·d_out + 4                       (per-tensor fp32 scale)
      fp8 block:  d_in·d_out + 4·⌈d_in/128⌉·⌈d_out/128⌉    (fp32 scale per 128×128 block)
      int8:       d_in·d_out + 4·d_out                 (per-output-channel fp32 scale)
      int4 AWQ:   d_in·d_out/2 + ⌈d_in/g⌉·d_out·(2 + ½)  (fp16 scale + packed 4-bit zero per group)
      int4 GPTQ:  AWQ + 4·d_in                          (int32 g_idx)
      NF4:        n/2 + ⌈n/64⌉ + 4·⌈n/(64·256)⌉, n = d_in·d_out   (≈ 4.127 bits/param)
    Source: QLoRA (Dettmers et al. 2023, §3 double quantization: 4 + 8/64 + 32/(64·256) bits);
      GPTQ (Frantar et al. 2022) and AWQ (Lin et al. 2023) packed layouts as stored by AutoGPTQ/AutoAWQ/vLLM.
    Assumes: every group is full (⌈·⌉ on the group count); the zero points are packed 8 per int32.
    """
    n = d_in * d_out
    if fmt in _DENSE_FORMAT_BYTES:
        return n * _DENSE_FORMAT_BYTES[fmt]
    if fmt is WeightFormat.FP8:
        return n + FP32_SCALE_BYTES
    if fmt is WeightFormat.FP8_BLOCK:
        return n + FP32_SCALE_BYTES * ceil(d_in / FP8_SCALE_BLOCK) * ceil(d_out / FP8_SCALE_BLOCK)
    if fmt is WeightFormat.INT8:
        return n + FP32_SCALE_BYTES * d_out
    if fmt is WeightFormat.NF4:
        blocks = ceil(n / NF4_BLOCK)
        return n * INT4_BITS // 8 + blocks * NF4_ABSMAX_BYTES + FP32_SCALE_BYTES * ceil(blocks / NF4_SECOND_BLOCK)
    groups = ceil(d_in / group_size)
    packed = n * INT4_BITS // 8
    # per group and output column: an fp16 scale and a 4-bit zero point (8 per int32)
    group_meta = groups * d_out * FP16_SCALE_BYTES + groups * ceil(d_out * INT4_BITS / 8)
    g_idx = GPTQ_G_IDX_BYTES * d_in if fmt is WeightFormat.INT4_GPTQ else 0
    return packed + group_meta + g_idx


def format_bits_note(fmt: WeightFormat, group_size: int) -> str:
    """A one-line description of a weight format for explanations."""
    notes = {
        WeightFormat.FP32: "fp32, 4 B/param",
        WeightFormat.BF16: "bf16, 2 B/param",
        WeightFormat.FP16: "fp16, 2 B/param",
        WeightFormat.FP8: "fp8 e4m3, 1 B/param + fp32 per-tensor scale",
        WeightFormat.FP8_BLOCK: "fp8 e4m3, 1 B/param + fp32 scale per 128×128 block (DeepSeek-V3 §3.3.2)",
        WeightFormat.INT8: "int8, 1 B/param + fp32 per-output-channel scale",
        WeightFormat.INT4_GPTQ: f"GPTQ int4, group {group_size}: 4 bits + fp16 scale and 4-bit zero per group, "
        "int32 g_idx",
        WeightFormat.INT4_AWQ: f"AWQ int4, group {group_size}: 4 bits + fp16 scale and 4-bit zero per group",
        WeightFormat.NF4: "NF4 with double quantization, ≈4.127 bits/param (QLoRA §3)",
    }
    return notes[fmt]
