"""The serving workload: engine and version, precision, parallelism, sequence lengths and concurrency."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from planner._base import FrozenSpec
from planner.errors import SpecError
from planner.model.kv_cache import KVLayout
from planner.model.precision import DType, WeightFormat
from planner.serving.engines import EngineProfile, resolve_profile
from planner.training.spec import AttentionImpl

__all__ = ["Efficiency", "Engine", "EngineKernels", "ServingSpec", "engine_kernels"]

Tokens = Annotated[int, Field(ge=1, le=1 << 30)]
Fraction = Annotated[float, Field(gt=0.0, le=1.0)]
KernelEfficiency = Annotated[float, Field(ge=0.01, le=1.0)]  # below 1 % of peak no roofline answer means anything
EngineVersion = Annotated[str, Field(pattern=r"^v?\d+(\.\d+){0,3}([.\-+]?[A-Za-z0-9]+)*$", max_length=40)]
MiB = 1 << 20


class Engine(StrEnum):
    """Serving engines whose memory and scheduling memplan models (versioned in planner/catalog/engines.json)."""

    VLLM = "vllm"
    SGLANG = "sglang"
    TRTLLM = "trtllm"  # TensorRT-LLM, PyTorch backend (trtllm-serve, LLM API)
    TRANSFORMERS = "transformers"  # transformers 5.x generate(): dynamic cache, MLA latent
    TRANSFORMERS_4 = "transformers4"  # transformers 4.x: MLA cached as expanded per-head K and V


@dataclass(frozen=True, slots=True)
class EngineKernels:
    """How an engine's forward pass holds activations (its versioned memory policy is in engines.json)."""

    logits_all_positions: bool
    chunked_prefill: bool  # prefill forwards are capped at the engine's token budget
    hidden_copies: int  # T×h tensors alive at a layer's peak: residual + normed input (fused engines), more in eager
    source: str
    grouped_mm_experts: bool = False  # transformers 5's grouped-matmul MoE (planner.serving.memory), else fused MoE


FUSED_ATTENTION_ENGINES = frozenset({Engine.VLLM, Engine.SGLANG, Engine.TRTLLM})  # no eager or math attention path
POOLED_ENGINES = FUSED_ATTENTION_ENGINES  # engines that allocate their KV pool up front from a memory budget

# transformers keeps the embedding output, the layer input, the residual and the normed input alive at the MLP:
# 4·T·h (measured by the probe grid, infer/*); fused add-norm engines keep the residual and the normed input.
_TRANSFORMERS_HIDDEN_COPIES = 4
_FUSED_HIDDEN_COPIES = 2
_FUSED = EngineKernels(
    False, True, _FUSED_HIDDEN_COPIES, "fused residual-add RMSNorm; logits for the sampled rows; chunked prefill"
)
_KERNELS = {
    Engine.VLLM: _FUSED,
    Engine.SGLANG: _FUSED,
    Engine.TRTLLM: _FUSED,
    Engine.TRANSFORMERS: EngineKernels(
        False,
        False,
        _TRANSFORMERS_HIDDEN_COPIES,
        "transformers 5 generate(): logits for the last position (logits_to_keep=1), grouped-matmul MoE experts",
        grouped_mm_experts=True,
    ),
    Engine.TRANSFORMERS_4: EngineKernels(
        False, False, _TRANSFORMERS_HIDDEN_COPIES, "transformers 4.x generate(): logits for the last position"
    ),
}


def engine_kernels(engine: Engine) -> EngineKernels:
    return _KERNELS[engine]


class Efficiency(FrozenSpec):
    """Roofline efficiencies for GPUs and engines without measured kernel tables (the fallback step-time model)."""

    prefill_compute: KernelEfficiency = Field(
        default=0.6, description="Achieved / peak tensor FLOP/s in prefill GEMMs."
    )
    decode_bandwidth: KernelEfficiency = Field(default=0.8, description="Achieved / peak HBM bandwidth in decode.")
    decode_compute: KernelEfficiency = Field(default=0.5, description="Achieved / peak FLOP/s for decode GEMMs.")
    interconnect: KernelEfficiency = Field(default=0.7, description="Achieved / peak GPU-link bandwidth in all-reduce.")


class ServingSpec(FrozenSpec):
    """How the model is served. Unset engine-dependent fields take the engine version's defaults for the GPU."""

    engine: Engine = Field(
        default=Engine.VLLM,
        description="Serving engine: decides the memory budget, KV page size, MLA cache layout, batch limits and "
        "scheduling (planner/catalog/engines.json, one profile per version range).",
    )
    engine_version: EngineVersion | None = Field(
        default=None, description="Engine version, e.g. '0.19.0'; null = the newest modelled version."
    )
    attention: AttentionImpl = Field(
        default=AttentionImpl.SDPA,
        description="Attention kernel of the prefill: 'sdpa' (fused flash/memory-efficient, no s² scores), "
        "'sdpa_math' (PyTorch's SDPA math fallback: fp32 q, k, v copies and s² fp32 scores) or 'eager' "
        "(s² scores in the activation dtype and fp32 softmax). vllm, sglang and trtllm run fused kernels only.",
    )
    weight_format: WeightFormat = Field(default=WeightFormat.BF16, description="Format of the decoder linears.")
    expert_weight_format: WeightFormat | None = Field(
        default=None,
        description="Format of the routed MoE experts when it differs from weight_format (gpt-oss: MXFP4 experts "
        "with bf16 attention; Kimi-K2.5: int4 experts); null = weight_format.",
    )
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
    expert_parallel: Annotated[int, Field(ge=1, le=1024)] = Field(
        default=1,
        description="MoE experts split across this many of the TP GPUs (EP); the rest of the TP group slices each "
        "expert (vLLM --enable-expert-parallel sets EP = TP). Must divide tensor_parallel.",
    )
    pipeline_parallel: Annotated[int, Field(ge=1, le=256)] = Field(
        default=1,
        description="Pipeline stages per replica (PP): each stage holds its contiguous layers and their KV cache on "
        "tensor_parallel GPUs, so a replica is TP × PP GPUs (vLLM --pipeline-parallel-size). Pooled engines only.",
    )
    attention_data_parallel: Annotated[int, Field(ge=1, le=1024)] = Field(
        default=1,
        description="Data-parallel attention (MoE models, pooled engines): the tensor_parallel GPUs form this many "
        "attention ranks of tensor_parallel / attention_data_parallel GPUs each; a rank holds the attention, dense "
        "MLPs, shared experts and embeddings whole (split only over its own GPUs) and the KV cache of its own "
        "sequences, while the routed experts are split over all tensor_parallel GPUs (expert_parallel × the rest). "
        "SGLang --enable-dp-attention --dp-size D (tensor_parallel = --tp-size); TensorRT-LLM enable_attention_dp "
        "(D = tensor_parallel); vLLM --data-parallel-size D --enable-expert-parallel (tensor_parallel = D × "
        "--tensor-parallel-size). Must divide tensor_parallel.",
    )
    decode_context_parallel: Annotated[int, Field(ge=1, le=1024)] = Field(
        default=1,
        description="Decode context parallelism (vLLM --decode-context-parallel-size): a cache that several GPUs of "
        "the TP group otherwise hold whole is striped by position over this many of them, so each holds and reads "
        "1/DCP of every sequence's cache; attention all-gathers the queries over those GPUs and merges the partial "
        "outputs by their log-sum-exp. MLA models (the latent every TP GPU holds; vLLM 0.11 and later): must divide "
        "tensor_parallel. GQA/MQA models (KV heads TP replicates; vLLM 0.11.1 and later): tensor_parallel must exceed "
        "the KV heads, DCP at most tensor_parallel / KV heads and dividing the query heads per KV head, no "
        "sliding-window layers.",
    )
    gpu_memory_utilization: Fraction | None = Field(
        default=None,
        description="vLLM --gpu-memory-utilization: share of the device memory (as the driver reports it) the engine "
        "may use; null = the version's default (0.9; 0.92 from vLLM 0.20). The budget of transformers engines too "
        "(null = 0.9 there).",
    )
    mem_fraction_static: Fraction | None = Field(
        default=None,
        description="SGLang --mem-fraction-static: weights + KV pool as a share of the free memory before the "
        "weights load; null = SGLang's default for this GPU and TP.",
    )
    free_gpu_memory_fraction: Fraction | None = Field(
        default=None,
        description="TensorRT-LLM KvCacheConfig.free_gpu_memory_fraction: share of the memory left after the profiled "
        "peak that becomes KV cache; null = the version's default (0.9).",
    )
    max_num_seqs: Annotated[int, Field(ge=1, le=1 << 20)] | None = Field(
        default=None,
        description="Most sequences in one batch (vLLM --max-num-seqs, TensorRT-LLM max_batch_size, SGLang "
        "--max-running-requests); null = the engine's default for this GPU.",
    )
    max_num_batched_tokens: Tokens | None = Field(
        default=None,
        description="Token budget of one forward: vLLM --max-num-batched-tokens, SGLang --chunked-prefill-size, "
        "TensorRT-LLM max_num_tokens; null = the engine's default for this GPU. transformers runs the whole batch "
        "of prompts in one forward.",
    )
    batch_wait_timeout_iters: Annotated[int, Field(ge=0, le=1 << 16)] | None = Field(
        default=None,
        description="TensorRT-LLM batch_wait_timeout_iters: while requests decode, hold the prompts the scheduler "
        "picked back for up to this many iterations, until the batch reaches batch_wait_max_tokens_ratio × "
        "max_num_tokens tokens (tensorrt_llm/_torch/pyexecutor/py_executor.py _waiting_requests); waits only when "
        "both are set above 0. null = 0, the engine's default (off).",
    )
    batch_wait_max_tokens_ratio: Fraction | None = Field(
        default=None,
        description="TensorRT-LLM batch_wait_max_tokens_ratio: the share of max_num_tokens a batch's tokens (the "
        "prompts picked and one per decoding request) must reach for held-back prompts to run before "
        "batch_wait_timeout_iters. null = 0, the engine's default (off).",
    )
    scheduler_recv_interval: Annotated[int, Field(ge=1, le=1 << 16)] | None = Field(
        default=None,
        description="SGLang --scheduler-recv-interval: while only decodes run, the scheduler reads the requests "
        "that reached it once every this many iterations (after a prefill at once), so a request may wait that "
        "many decode steps before its prefill (sglang/srt/managers/scheduler_recv_skipper.py). null = 1, the "
        "engine's default (every iteration).",
    )
    enforce_eager: bool = Field(default=False, description="No CUDA graphs (vLLM --enforce-eager).")
    cuda_graph_max_batch_size: Annotated[int, Field(ge=1, le=1 << 16)] | None = Field(
        default=None,
        description="The largest iteration the engine replays as a CUDA graph: vLLM max_cudagraph_capture_size (the "
        "tokens of a step, prompt tokens included), SGLang --cuda-graph-max-bs and TensorRT-LLM "
        "cuda_graph_config.max_batch_size with enable_padding (decode batches only); larger iterations run eagerly "
        "and wait for the host's kernel launches. null = the engine's default (vLLM min(2 · max_num_seqs, 512), "
        "SGLang by GPU memory and TP, TensorRT-LLM 128).",
    )
    prompt_tokens: Tokens = Field(default=2048, description="Prompt length per sequence.")
    output_tokens: Tokens = Field(default=256, description="Generated tokens per sequence.")
    concurrency: Annotated[int, Field(ge=1, le=1 << 20)] = Field(
        default=1, description="Sequences decoding at once (decode batch B)."
    )
    logits_all_positions: bool | None = Field(
        default=None, description="Project every prompt position to the vocabulary (true) or the last only."
    )
    cuda_context_bytes: Annotated[int, Field(ge=0, le=1 << 40)] = Field(
        default=512 * MiB,
        description="transformers engines: CUDA context, kernels and NCCL buffers outside PyTorch's allocator "
        "(assumption; measure as nvidia-smi used minus torch.cuda.memory_reserved()). Pooled engines use the "
        "measured non-torch memory of their profile instead.",
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

    @field_validator("expert_parallel")
    @classmethod
    def _ep_divides_tp(cls, ep: int, info: ValidationInfo) -> int:
        tp = info.data.get("tensor_parallel")
        if tp is not None and tp % ep:
            raise ValueError(f"expert_parallel={ep} must divide tensor_parallel={tp}")
        return ep

    @field_validator("attention_data_parallel")
    @classmethod
    def _dp_attention_layout(cls, dp: int, info: ValidationInfo) -> int:
        """What the engines accept for data-parallel attention.

        Source: SGLang python/sglang/srt/server_args.py _handle_data_parallelism (assert tp_size % dp_size == 0
          under --enable-dp-attention, 0.4.x-0.5.x); vLLM --data-parallel-size multiplies the GPUs (each DP rank runs
          --tensor-parallel-size GPUs, vllm/config/parallel.py), so tensor_parallel here is their product; TensorRT-LLM
          enable_attention_dp runs attention with no tensor parallelism (tensorrt_llm/mapping.py: the attention TP
          size is 1 under enable_attention_dp; read from our knowledge of 1.x, not re-read for this check).
        """
        if dp == 1:
            return dp
        engine, tp, pp = info.data.get("engine"), info.data.get("tensor_parallel"), info.data.get("pipeline_parallel")
        if engine is not None and engine not in POOLED_ENGINES:
            raise ValueError(f"engine '{engine}' runs one process per model: attention_data_parallel must be 1")
        if tp is not None and tp % dp:
            raise ValueError(
                f"attention_data_parallel={dp} must divide tensor_parallel={tp}: the {tp} GPUs form {dp} attention "
                "ranks of tensor_parallel / attention_data_parallel GPUs each (SGLang server_args.py asserts "
                "tp_size % dp_size == 0 under --enable-dp-attention)"
            )
        if engine is Engine.TRTLLM and tp is not None and dp != tp:
            raise ValueError(
                f"attention_data_parallel={dp} must equal tensor_parallel={tp} for trtllm: enable_attention_dp "
                "runs attention with no tensor parallelism, one rank per GPU (tensorrt_llm/mapping.py)"
            )
        if pp is not None and pp > 1:
            raise ValueError("attention_data_parallel > 1 with pipeline_parallel > 1 is not modelled")
        return dp

    @field_validator("decode_context_parallel")
    @classmethod
    def _dcp_layout(cls, dcp: int, info: ValidationInfo) -> int:
        """What vLLM accepts for decode context parallelism, as modelled here.

        Source: vllm/config/parallel.py @ v0.11.0 decode_context_parallel_size (the DCP group is carved out of the
          TP group: tensor_parallel_size % decode_context_parallel_size == 0); the MLA attention backends shard the
          latent cache by position (vllm/v1/attention/backends/mla/common.py, dcp_world_size). The bounds that
          depend on the model (GQA/MQA) are planner.serving.context_parallel's, checked with the model."""
        if dcp == 1:
            return dcp
        engine, tp = info.data.get("engine"), info.data.get("tensor_parallel")
        if engine is not None and engine is not Engine.VLLM:
            raise ValueError(f"decode_context_parallel is modelled for vllm (--decode-context-parallel-size); "
                             f"engine is '{engine}'")  # fmt: skip
        if engine is not None:
            profile = resolve_profile(engine.value, info.data.get("engine_version"))
            if profile.decode_context_parallel is None:
                raise ValueError(f"{profile.label} has no decode context parallelism (vLLM 0.11 and later)")
        if tp is not None and tp % dcp:
            raise ValueError(
                f"decode_context_parallel={dcp} must divide tensor_parallel={tp}: its GPUs are a subgroup of the TP "
                "group (vllm/config/parallel.py)"
            )
        if info.data.get("attention_data_parallel", 1) > 1 or info.data.get("pipeline_parallel", 1) > 1:
            raise ValueError("decode_context_parallel > 1 with attention_data_parallel or pipeline_parallel > 1 is "
                             "not modelled")  # fmt: skip
        return dcp

    @field_validator("engine_version")
    @classmethod
    def _version_modelled(cls, version: str | None, info: ValidationInfo) -> str | None:
        engine = info.data.get("engine")
        if version is not None and engine is not None:
            try:
                resolve_profile(engine.value, version)
            except SpecError as exc:
                raise ValueError(exc.problems[0].msg) from None
        return version

    @field_validator("gpu_memory_utilization", "mem_fraction_static", "free_gpu_memory_fraction")
    @classmethod
    def _engine_setting(cls, value: float | None, info: ValidationInfo) -> float | None:
        engine, name = info.data.get("engine"), info.field_name
        owner = {"mem_fraction_static": Engine.SGLANG, "free_gpu_memory_fraction": Engine.TRTLLM}.get(name or "")
        if value is None or engine is None:
            return value
        if owner is not None and engine is not owner:
            raise ValueError(f"{name} is a {owner} setting; engine is '{engine}'")
        if owner is None and engine in (Engine.SGLANG, Engine.TRTLLM):
            other = "mem_fraction_static" if engine is Engine.SGLANG else "free_gpu_memory_fraction"
            raise ValueError(f"gpu_memory_utilization is a vLLM setting; {engine} sizes memory by {other}")
        return value

    @field_validator("batch_wait_timeout_iters", "batch_wait_max_tokens_ratio")
    @classmethod
    def _trtllm_setting(cls, value: float | None, info: ValidationInfo) -> float | None:
        engine = info.data.get("engine")
        if value is not None and engine is not None and engine is not Engine.TRTLLM:
            raise ValueError(f"{info.field_name} is a {Engine.TRTLLM} setting; engine is '{engine}'")
        return value

    @field_validator("scheduler_recv_interval")
    @classmethod
    def _sglang_setting(cls, value: int | None, info: ValidationInfo) -> int | None:
        engine = info.data.get("engine")
        if value is not None and engine is not None and engine is not Engine.SGLANG:
            raise ValueError(f"scheduler_recv_interval is a {Engine.SGLANG} setting; engine is '{engine}'")
        return value

    @field_validator("cuda_graph_max_batch_size")
    @classmethod
    def _pooled_setting(cls, value: int | None, info: ValidationInfo) -> int | None:
        engine = info.data.get("engine")
        if value is not None and engine is not None and engine not in POOLED_ENGINES:
            raise ValueError(
                f"cuda_graph_max_batch_size is a setting of the serving engines (vLLM, SGLang, TensorRT-LLM); "
                f"engine '{engine}' captures no CUDA graphs"
            )
        return value

    @property
    def gpus_per_replica(self) -> int:
        """GPUs one replica occupies: TP × PP."""
        return self.tensor_parallel * self.pipeline_parallel

    @property
    def attention_tensor_parallel(self) -> int:
        """GPUs of one attention rank: tensor_parallel / attention_data_parallel (= tensor_parallel without DP)."""
        return self.tensor_parallel // self.attention_data_parallel

    def context_per_gpu(self, tokens: int) -> int:
        """Tokens of a `tokens`-long sequence whose KV one GPU holds: ⌈tokens / decode_context_parallel⌉ (vLLM
        stripes the latent cache by position over the DCP GPUs, cp_kv_cache_interleave_size 1)."""
        return -(-tokens // self.decode_context_parallel)

    @property
    def rank_concurrency(self) -> int:
        """Sequences on the busiest attention rank: ⌈concurrency / attention_data_parallel⌉ (the engines spread
        requests over the ranks round-robin or by load; the busiest sets the pace)."""
        return -(-self.concurrency // self.attention_data_parallel)

    @property
    def context_tokens(self) -> int:
        """Tokens a sequence holds at the end of generation: prompt + output."""
        return self.prompt_tokens + self.output_tokens

    @property
    def kernels(self) -> EngineKernels:
        return engine_kernels(self.engine)

    @property
    def engine_profile(self) -> EngineProfile:
        """The versioned profile of the engine (planner/catalog/engines.json)."""
        return resolve_profile(self.engine.value, self.engine_version)

    @property
    def pooled(self) -> bool:
        """The engine allocates a KV pool up front (vLLM, SGLang, TensorRT-LLM)."""
        return self.engine in POOLED_ENGINES

    @property
    def prefill_tokens_per_forward(self) -> int:
        """T: tokens in the largest prefill forward (the budget, or all prompts at once without chunking)."""
        if self.kernels.chunked_prefill:
            if self.max_num_batched_tokens is None:
                raise ValueError("engine defaults are resolved for a GPU first (planner.serving.inference)")
            return self.max_num_batched_tokens
        return self.prompt_tokens * self.concurrency

    @property
    def resolved_block_size(self) -> int:
        return self.block_size or int(self.engine_profile.block_size.value)

    @property
    def resolved_mla_layout(self) -> KVLayout:
        return self.mla_layout or KVLayout(self.engine_profile.mla_layout.value)

    @property
    def resolved_logits_all_positions(self) -> bool:
        if self.logits_all_positions is None:
            return self.kernels.logits_all_positions
        return self.logits_all_positions

    @property
    def resolved_expert_format(self) -> WeightFormat:
        return self.expert_weight_format or self.weight_format
