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
    INT4_SYM = "int4_sym"  # 4-bit packed 8 per int32 + per-group 16-bit scale, no zero (compressed-tensors symmetric)
    MXFP4 = "mxfp4"  # OCP MX FP4 (E2M1) + one E8M0 scale byte per 32 input elements (gpt-oss experts)
    NF4 = "nf4"  # QLoRA NormalFloat4 with double quantization
    NVFP4 = "nvfp4"  # FP4 E2M1 + one FP8 E4M3 scale per 16 inputs + FP32 tensor scales (NVIDIA ModelOpt, Blackwell)


# Named constants of the formats' layouts.
FP32_SCALE_BYTES = 4
FP16_SCALE_BYTES = 2
INT4_BITS = 4
GPTQ_G_IDX_BYTES = 4  # int32 group index per input row (AutoGPTQ/vLLM GPTQ layout)
FP8_SCALE_BLOCK = 128  # DeepSeek-V3 weight_block_size [128, 128] (arXiv:2412.19437 §3.3.2)
NF4_BLOCK = 64  # elements per absmax block (QLoRA §3, "blocksize 64")
MX_BLOCK = 32  # elements sharing one E8M0 scale (OCP Microscaling Formats (MX) v1.0 Table 1: MXFP4 block size k = 32)
MX_SCALE_BYTES = 1  # E8M0 scale (OCP MX v1.0 Table 1)
INT32_BYTES = 4
PACKED_INT4_PER_INT32 = 8  # compressed-tensors pack-quantized: eight 4-bit values per int32 along d_in
CT_SHAPE_BYTES = 8  # compressed-tensors weight_shape: an int32 (d_out, d_in) pair per matrix
NF4_ABSMAX_BYTES = 1  # absmax re-quantized to 8 bits (double quantization, QLoRA §3)
NF4_SECOND_BLOCK = 256  # absmax values per second-level fp32 scale (QLoRA §3)
NVFP4_BLOCK = 16  # elements per FP8 E4M3 scale (NVIDIA NVFP4: ModelOpt weight_scale)
NVFP4_TENSOR_SCALES = 2  # fp32 weight_scale_2 and input_scale per matrix (ModelOpt NVFP4 checkpoints)
FP8_SCALE_BYTES = 1  # E4M3 block scale of NVFP4

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
      int4 sym:   4·d_out·⌈d_in/8⌉ + 2·d_out·⌈d_in/g⌉ + 8   (int32-packed, 16-bit scale per group, weight_shape)
      MXFP4:      d_in·d_out/2 + d_out·⌈d_in/32⌉         (E2M1 pairs per byte + E8M0 scale per 32-block)
      NF4:        n/2 + ⌈n/64⌉ + 4·⌈n/(64·256)⌉, n = d_in·d_out   (≈ 4.127 bits/param)
      NVFP4:      n/2 + ⌈d_in/16⌉·d_out + 2·4                (FP8 scale per 16 inputs, fp32 tensor scales; 4.5 bits)
    Source: QLoRA (Dettmers et al. 2023, §3 double quantization: 4 + 8/64 + 32/(64·256) bits); NVIDIA NVFP4
      (TensorRT Model Optimizer checkpoints such as nvidia/DeepSeek-R1-NVFP4: E2M1 weights, weight_scale E4M3 per
      16 inputs, fp32 weight_scale_2 and input_scale);
      GPTQ (Frantar et al. 2022) and AWQ (Lin et al. 2023) packed layouts as stored by AutoGPTQ/AutoAWQ/vLLM;
      compressed-tensors PackedQuantizationCompressor.compression_param_info (weight_packed, weight_shape; no
      weight_zero_point when symmetric); OCP Microscaling Formats (MX) v1.0 Table 1 and the gpt-oss checkpoint layout
      (*_blocks uint8 (d_out, d_in/32, 16), *_scales uint8 (d_out, d_in/32)).
    Assumes: every group is full (⌈·⌉ on the group count); the zero points are packed 8 per int32; int4 sym scales
      are bf16/fp16 (the checkpoint dtype).
    """
    n = d_in * d_out
    if fmt in _DENSE_FORMAT_BYTES:
        return n * _DENSE_FORMAT_BYTES[fmt]
    if fmt is WeightFormat.MXFP4:
        return n * INT4_BITS // 8 + d_out * ceil(d_in / MX_BLOCK) * MX_SCALE_BYTES
    if fmt is WeightFormat.INT4_SYM:
        packed_words = d_out * ceil(d_in / PACKED_INT4_PER_INT32)
        return packed_words * INT32_BYTES + d_out * ceil(d_in / group_size) * FP16_SCALE_BYTES + CT_SHAPE_BYTES
    if fmt is WeightFormat.FP8:
        return n + FP32_SCALE_BYTES
    if fmt is WeightFormat.FP8_BLOCK:
        return n + FP32_SCALE_BYTES * ceil(d_in / FP8_SCALE_BLOCK) * ceil(d_out / FP8_SCALE_BLOCK)
    if fmt is WeightFormat.INT8:
        return n + FP32_SCALE_BYTES * d_out
    if fmt is WeightFormat.NVFP4:
        scales = FP8_SCALE_BYTES * ceil(d_in / NVFP4_BLOCK) * d_out
        return n * INT4_BITS // 8 + scales + FP32_SCALE_BYTES * NVFP4_TENSOR_SCALES
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
        WeightFormat.INT4_SYM: f"symmetric int4, group {group_size}: 4 bits + 16-bit scale per group, no zero "
        "(compressed-tensors pack-quantized)",
        WeightFormat.MXFP4: "MXFP4: 4-bit E2M1 + one 8-bit E8M0 scale per 32 elements (OCP MX v1.0), 4.25 bits/param",
        WeightFormat.NF4: "NF4 with double quantization, ≈4.127 bits/param (QLoRA §3)",
        WeightFormat.NVFP4: "NVFP4: 4-bit E2M1 + FP8 scale per 16 inputs + fp32 tensor scales, ≈4.5 bits/param",
    }
    return notes[fmt]
