"""Roofline times of the serving operators: the normalization every kernel table's efficiency is relative to.

A kernel table stores η = roofline / measured for each shape, so a latency is read back as roofline / η. The
roofline is the larger of compute time (FLOPs ÷ peak FLOP/s of the GEMM dtype) and memory time (bytes that must
move ÷ HBM bandwidth). benchmarks/fit_kernels.py and planner.calibration.kernels call these same functions, so the
fit and its use cannot drift apart.
Source: Williams, Waterman & Patterson 2009 (roofline); operator FLOPs and bytes as derived in each docstring.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Roofline",
    "allreduce_roofline_s",
    "causal_pairs",
    "context_attention_roofline_s",
    "elementwise_roofline_s",
    "gemm_roofline_s",
    "generation_attention_roofline_s",
    "mla_roofline_s",
    "moe_roofline_s",
]

FLOPS_PER_MAC = 2
ACT_BYTES = 2  # bf16 activations in and out of every kernel
# Bytes per weight element as the GEMM streams it (scales included for the block formats).
WEIGHT_BYTES = {"bf16": 2.0, "fp8": 1.0, "fp8_block": 1.0 + 4 / (128 * 128), "int8": 1.0, "int4": 0.5 + 2 / 128,
                "nvfp4": 0.5 + 1 / 16, "mxfp4": 0.5 + 1 / 32}  # fmt: skip
# Activation bytes the GEMM reads: W8A8 formats quantize activations to 8 bits, weight-only formats keep bf16.
ACTIVATION_IN_BYTES = {"bf16": 2.0, "fp8": 1.0, "fp8_block": 1.0, "int8": 1.0, "int4": 2.0, "nvfp4": 0.5625,
                       "mxfp4": 2.0}  # fmt: skip
# The tensor-core dtype a GEMM of this weight format runs in (weight-only formats dequantize to bf16).
COMPUTE_DTYPE = {"bf16": "bf16", "fp8": "fp8", "fp8_block": "fp8", "int8": "int8", "int4": "bf16", "nvfp4": "fp4",
                 "mxfp4": "bf16"}  # fmt: skip
GATED_MATRICES = 3  # gate, up and down projections of a SwiGLU expert


@dataclass(frozen=True, slots=True)
class Roofline:
    """The peaks a table was normalized with: dense FLOP/s per compute dtype, HBM and GPU-link bytes/s."""

    flops_per_s: dict[str, float]
    bytes_per_s: float
    link_bytes_per_s: float

    def peak(self, compute_dtype: str) -> float:
        return self.flops_per_s.get(compute_dtype) or self.flops_per_s["bf16"]


def gemm_roofline_s(m: int, n: int, k: int, fmt: str, roof: Roofline) -> float:
    """max(2·M·N·K / P_dtype, (M·K·b_a + N·K·b_w + M·N·2) / BW) for an (M×K)·(K×N) GEMM."""
    flops = FLOPS_PER_MAC * m * n * k
    moved = m * k * ACTIVATION_IN_BYTES[fmt] + n * k * WEIGHT_BYTES[fmt] + m * n * ACT_BYTES
    return max(flops / roof.peak(COMPUTE_DTYPE[fmt]), moved / roof.bytes_per_s)


def causal_pairs(s: int, window: int = 0) -> int:
    """Σ_{i=1..s} min(i, w): (query, key) pairs of a causal prompt of s tokens; w = 0 means no window."""
    if window <= 0 or s <= window:
        return s * (s + 1) // 2
    return window * (window + 1) // 2 + window * (s - window)


def context_attention_roofline_s(
    b: int, s: int, n_h: int, n_kv: int, d: int, window: int, kv_bytes: float, roof: Roofline
) -> float:
    """Prefill attention of b prompts of s tokens: QKᵀ and PV, 2·2·n_h·d FLOPs per causal pair (bf16 tensor cores);
    bytes: q and output (2·n_h·d·2) plus k and v (2·n_kv·d·b_kv) per token."""
    flops = 2 * FLOPS_PER_MAC * b * n_h * d * causal_pairs(s, window)
    moved = b * s * d * (2 * n_h * ACT_BYTES + 2 * n_kv * kv_bytes)
    return max(flops / roof.peak("bf16"), moved / roof.bytes_per_s)


def generation_attention_roofline_s(
    b: int, s: int, n_h: int, n_kv: int, d: int, window: int, kv_bytes: float, roof: Roofline
) -> float:
    """One decode step of b sequences, each attending to min(s, w) cached tokens: the cache read dominates,
    2·n_kv·d·b_kv bytes per cached token; 2·2·n_h·d FLOPs per (query, key) pair."""
    keys = min(s, window) if window > 0 else s
    flops = 2 * FLOPS_PER_MAC * b * n_h * d * keys
    moved = b * (keys * 2 * n_kv * d * kv_bytes + 2 * n_h * d * ACT_BYTES)
    return max(flops / roof.peak("bf16"), moved / roof.bytes_per_s)


# DeepSeek-V3 MLA dimensions the MLA kernel tables were measured at (arXiv:2412.19437 Table; config.json)
MLA_LATENT = 512  # d_c, kv_lora_rank
MLA_ROPE = 64  # d_R, qk_rope_head_dim
MLA_QK = 192  # qk_nope_head_dim + qk_rope_head_dim
MLA_V = 128  # v_head_dim


def mla_roofline_s(b: int, s: int, n_h: int, kv_dtype: str, phase: str, roof: Roofline) -> float:
    """MLA attention core on one GPU with n_h local heads.

    decode (absorbed, FlashMLA): each of n_h heads attends over the latent cache, 2·n_h·(2·d_c + d_R) FLOPs per
      cached token; the cache read is s·(d_c + d_R)·b_kv bytes per sequence.
    prefill (expanded heads): causal attention with d_qk = 192 and d_v = 128, 2·n_h·(d_qk + d_v) FLOPs per pair.
    Source: DeepSeek-V2 §2.1.2 (weight absorption); dimensions of DeepSeek-V3.
    """
    kv_bytes = 1.0 if kv_dtype == "fp8" else 2.0
    if phase == "generation":
        flops = FLOPS_PER_MAC * b * n_h * (2 * MLA_LATENT + MLA_ROPE) * s
        moved = b * s * (MLA_LATENT + MLA_ROPE) * kv_bytes
    else:
        flops = FLOPS_PER_MAC * b * n_h * (MLA_QK + MLA_V) * causal_pairs(s)
        moved = b * s * n_h * (2 * MLA_QK + 2 * MLA_V) * ACT_BYTES
    return max(flops / roof.peak("bf16"), moved / roof.bytes_per_s)


def moe_roofline_s(
    tokens: int, h: int, f: int, k: int, experts: int, tp: int, ep: int, fmt: str, roof: Roofline
) -> float:
    """Routed experts of one MoE layer on one GPU: 2·T·k·3·h·f/(TP·EP) FLOPs; the weights of the local experts the
    batch touches, (E/EP)·(1 − (1 − k/E)^T)·3·h·(f/TP)·b_w bytes, plus the tokens in and out.
    Source: expected distinct experts under uniform routing, E·(1 − (1 − k/E)^T) (planner.serving.throughput)."""
    touched = experts / ep * (1.0 - (1.0 - k / experts) ** tokens)
    flops = FLOPS_PER_MAC * tokens * k * GATED_MATRICES * h * f / (tp * ep)
    moved = touched * GATED_MATRICES * h * (f / tp) * WEIGHT_BYTES[fmt] + 2 * tokens * h * ACT_BYTES
    return max(flops / roof.peak(COMPUTE_DTYPE[fmt]), moved / roof.bytes_per_s)


def allreduce_roofline_s(elements: int, n_gpus: int, roof: Roofline) -> float:
    """Ring all-reduce of `elements` bf16 values: each GPU sends 2·(n − 1)/n of the buffer over its link.
    Source: Patarasuk & Yuan 2009 (bandwidth-optimal all-reduce); NCCL's bus-bandwidth convention."""
    return 2 * (n_gpus - 1) / n_gpus * elements * ACT_BYTES / roof.link_bytes_per_s


def elementwise_roofline_s(moved_bytes: float, roof: Roofline) -> float:
    """A memory-bound kernel (norm, activation, residual add, RoPE, quantize): bytes ÷ HBM bandwidth."""
    return moved_bytes / roof.bytes_per_s
