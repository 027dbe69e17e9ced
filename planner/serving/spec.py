"""The serving workload: engine, precision, parallelism, sequence lengths and concurrency."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from planner._base import FrozenSpec
from planner.model.kv_cache import KVLayout
from planner.model.precision import DType, WeightFormat
from planner.training.spec import AttentionImpl

__all__ = ["Efficiency", "Engine", "EngineProfile", "ServingSpec", "engine_profile"]

Tokens = Annotated[int, Field(ge=1, le=1 << 30)]
Fraction = Annotated[float, Field(gt=0.0, le=1.0)]
KernelEfficiency = Annotated[float, Field(ge=0.01, le=1.0)]  # below 1 % of peak no roofline answer means anything
MiB = 1 << 20


class Engine(StrEnum):
    """Serving engines whose cache layout memplan models."""

    VLLM = "vllm"
    SGLANG = "sglang"
    TRANSFORMERS = "transformers"  # transformers 5.x generate(): dynamic cache, MLA latent
    TRANSFORMERS_4 = "transformers4"  # transformers 4.x: MLA cached as expanded per-head K and V


@dataclass(frozen=True, slots=True)
class EngineProfile:
    """What an engine decides for the user: MLA cache layout, KV page size, which positions get logits."""

    mla_layout: KVLayout
    block_size: int
    logits_all_positions: bool
    chunked_prefill: bool  # prefill forwards are capped at max_num_batched_tokens
    hidden_copies: int  # T×h tensors alive at a layer's peak: residual + normed input (fused engines), more in eager
    source: str
    grouped_mm_experts: bool = False  # transformers 5's grouped-matmul MoE (planner.serving.memory), else fused MoE


FUSED_ATTENTION_ENGINES = frozenset({Engine.VLLM, Engine.SGLANG})  # no eager or math attention path

# transformers keeps the embedding output, the layer input, the residual and the normed input alive at the MLP:
# 4·T·h (measured by the probe grid, infer/*); fused add-norm engines keep the residual and the normed input.
_TRANSFORMERS_HIDDEN_COPIES = 4
_FUSED_HIDDEN_COPIES = 2

_PROFILES = {
    Engine.VLLM: EngineProfile(
        KVLayout.MLA_LATENT,
        16,
        False,
        True,
        _FUSED_HIDDEN_COPIES,
        "vLLM: PagedAttention block_size 16 default (Kwon et al. 2023 §4); MLA latent cache",
    ),
    Engine.SGLANG: EngineProfile(
        KVLayout.MLA_LATENT,
        1,
        False,
        True,
        _FUSED_HIDDEN_COPIES,
        "SGLang: token-granular KV pool (page_size 1 default); MLA latent cache",
    ),
    Engine.TRANSFORMERS: EngineProfile(
        KVLayout.MLA_LATENT,
        1,
        False,
        False,
        _TRANSFORMERS_HIDDEN_COPIES,
        "transformers 5 generate(): DynamicCache, MLA caches the latent, logits for the last position "
        "(logits_to_keep=1), grouped-matmul MoE experts",
        grouped_mm_experts=True,
    ),
    Engine.TRANSFORMERS_4: EngineProfile(
        KVLayout.MLA_EXPANDED,
        1,
        False,
        False,
        _TRANSFORMERS_HIDDEN_COPIES,
        "transformers 4.x generate(): DynamicCache, MLA caches per-head K and V",
    ),
}


def engine_profile(engine: Engine) -> EngineProfile:
    return _PROFILES[engine]


class Efficiency(FrozenSpec):
    """Fractions of datasheet peaks that kernels reach. Defaults are assumptions until a probe calibrates them."""

    prefill_compute: KernelEfficiency = Field(
        default=0.6, description="Achieved / peak tensor FLOP/s in prefill GEMMs."
    )
    decode_bandwidth: KernelEfficiency = Field(default=0.8, description="Achieved / peak HBM bandwidth in decode.")
    decode_compute: KernelEfficiency = Field(default=0.5, description="Achieved / peak FLOP/s for decode GEMMs.")
    interconnect: KernelEfficiency = Field(default=0.7, description="Achieved / peak GPU-link bandwidth in all-reduce.")


class ServingSpec(FrozenSpec):
    """How the model is served. Unset engine-dependent fields take the engine's defaults."""

    engine: Engine = Field(default=Engine.VLLM, description="Decides MLA cache layout, KV page size, logits.")
    attention: AttentionImpl = Field(
        default=AttentionImpl.SDPA,
        description="Attention kernel of the prefill: 'sdpa' (fused flash/memory-efficient, no s² scores), "
        "'sdpa_math' (PyTorch's SDPA math fallback: fp32 q, k, v copies and s² fp32 scores) or 'eager' "
        "(s² scores in the activation dtype and fp32 softmax). vllm and sglang run fused kernels only.",
    )
    weight_format: WeightFormat = Field(default=WeightFormat.BF16, description="Format of the decoder linears.")
    quant_group_size: Annotated[int, Field(ge=8, le=65536)] = Field(
        default=128, description="Group size g of int4 GPTQ/AWQ weights."
    )
    embedding_dtype: Literal[DType.BF16, DType.FP16, DType.FP32] = Field(
        default=DType.BF16, description="Embedding, lm_head, norms and routers stay in this 16/32-bit dtype."
    )
    activation_dtype: Literal[DType.BF16, DType.FP16] = Field(default=DType.BF16)
    kv_cache_dtype: DType = Field(default=DType.BF16, description="fp8 halves the cache (vLLM kv_cache_dtype).")
    mla_layout: KVLayout | None = Field(default=None, description="Override the engine's MLA cache layout.")
    block_size: Annotated[int, Field(ge=1, le=4096)] | None = Field(
        default=None, description="KV page size in tokens; null = the engine's default."
    )
    tensor_parallel: Annotated[int, Field(ge=1, le=1024)] = Field(default=1, description="GPUs per replica (TP).")
    gpu_memory_utilization: Fraction = Field(
        default=0.9, description="Share of device memory the engine may use (vLLM --gpu-memory-utilization)."
    )
    prompt_tokens: Tokens = Field(default=2048, description="Prompt length per sequence.")
    output_tokens: Tokens = Field(default=256, description="Generated tokens per sequence.")
    concurrency: Annotated[int, Field(ge=1, le=1 << 20)] = Field(
        default=1, description="Sequences decoding at once (decode batch B)."
    )
    max_num_batched_tokens: Tokens = Field(
        default=8192,
        description="Chunked-prefill token budget per forward (vLLM max_num_batched_tokens); engines without "
        "chunked prefill run the whole batch of prompts in one forward.",
    )
    logits_all_positions: bool | None = Field(
        default=None, description="Project every prompt position to the vocabulary (true) or the last only."
    )
    cuda_context_bytes: Annotated[int, Field(ge=0, le=1 << 40)] = Field(
        default=512 * MiB,
        description="CUDA context, kernels and NCCL buffers outside PyTorch's allocator (assumption; measure "
        "as nvidia-smi used minus torch.cuda.memory_reserved()).",
    )
    cublas_workspace_bytes: Annotated[int, Field(ge=0, le=1 << 40)] = Field(
        default=32 * MiB, description="cuBLAS/cuBLASLt workspace (PyTorch default :4096:8 = 8 × 4 MiB)."
    )

    @field_validator("attention")
    @classmethod
    def _engine_runs_it(cls, attention: AttentionImpl, info: ValidationInfo) -> AttentionImpl:
        engine = info.data.get("engine")
        if engine in FUSED_ATTENTION_ENGINES and attention is not AttentionImpl.SDPA:
            raise ValueError(
                f"engine '{engine}' runs fused attention kernels only (FlashAttention, FlashInfer): use 'sdpa', "
                f"or engine 'transformers' to size '{attention}'"
            )
        return attention

    @property
    def context_tokens(self) -> int:
        """Tokens a sequence holds at the end of generation: prompt + output."""
        return self.prompt_tokens + self.output_tokens

    @property
    def profile(self) -> EngineProfile:
        return engine_profile(self.engine)

    @property
    def prefill_tokens_per_forward(self) -> int:
        """T: tokens in the largest prefill forward (the budget, or all prompts at once without chunking)."""
        if self.profile.chunked_prefill:
            return self.max_num_batched_tokens
        return self.prompt_tokens * self.concurrency

    @property
    def resolved_block_size(self) -> int:
        return self.block_size or self.profile.block_size

    @property
    def resolved_mla_layout(self) -> KVLayout:
        return self.mla_layout or self.profile.mla_layout

    @property
    def resolved_logits_all_positions(self) -> bool:
        if self.logits_all_positions is None:
            return self.profile.logits_all_positions
        return self.logits_all_positions
