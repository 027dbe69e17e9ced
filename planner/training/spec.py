"""The fine-tuning workload: method (full or PEFT), optimizer, precision, checkpointing, batch and parallelism."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from planner._base import FrozenSpec

__all__ = [
    "AdapterSpec",
    "AttentionImpl",
    "Checkpointing",
    "FullFineTune",
    "IA3Spec",
    "KernelDevice",
    "LoRASpec",
    "MethodSpec",
    "OptimizerSpec",
    "Precision",
    "PrefixTuningSpec",
    "PromptTuningSpec",
    "QLoRASpec",
    "TrainingSpec",
]

MAX_ACCUMULATION_STEPS = 1 << 16  # gradient accumulation steps a TrainingSpec accepts

Tokens = Annotated[int, Field(ge=1, le=1 << 24)]
ModuleName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.]+$")]


class FullFineTune(FrozenSpec):
    """Every parameter is trained."""

    kind: Literal["full"] = "full"


class LoRASpec(FrozenSpec):
    """Low-rank adapters B·A on target linears (Hu et al. 2021, arXiv:2106.09685 §4.1), as peft builds them."""

    kind: Literal["lora"] = "lora"
    rank: Annotated[int, Field(ge=1, le=65536)] = Field(default=16, description="r.")
    alpha: Annotated[float, Field(gt=0, le=1e6)] = Field(default=32, description="Scaling α (scale = α / r).")
    dropout: Annotated[float, Field(ge=0, lt=1)] = Field(default=0.0, description="Dropout on the adapter input.")
    target_modules: tuple[ModuleName, ...] | Literal["all-linear"] | None = Field(
        default=None,
        description="Linear names (e.g. ['q_proj', 'v_proj']), 'all-linear' (every linear but lm_head), "
        "or null for peft's default targets of the family.",
    )

    @field_validator("target_modules")
    @classmethod
    def _not_empty(cls, targets: tuple[str, ...] | str | None) -> tuple[str, ...] | str | None:
        if isinstance(targets, tuple) and not targets:
            raise ValueError("give at least one target module, 'all-linear', or null for the family default")
        return targets


class QLoRASpec(LoRASpec):
    """LoRA over a frozen NF4 base with double quantization (Dettmers et al. 2023, arXiv:2305.14314 §3)."""

    kind: Literal["qlora"] = "qlora"  # type: ignore[assignment]


class PrefixTuningSpec(FrozenSpec):
    """Trainable key/value prefixes in every layer (Li & Liang 2021, arXiv:2101.00190 §4)."""

    kind: Literal["prefix"] = "prefix"
    num_virtual_tokens: Annotated[int, Field(ge=1, le=65536)] = 20
    prefix_projection: bool = Field(default=False, description="Reparameterize through an MLP (paper §4.3).")
    encoder_hidden_size: Annotated[int, Field(ge=1, le=1 << 20)] | None = Field(
        default=None, description="Hidden width of the reparameterization MLP; null = peft's default."
    )


class PromptTuningSpec(FrozenSpec):
    """Trainable soft-prompt embeddings prepended to the input (Lester et al. 2021, arXiv:2104.08691 §2)."""

    kind: Literal["prompt"] = "prompt"
    num_virtual_tokens: Annotated[int, Field(ge=1, le=65536)] = 20


class AdapterSpec(FrozenSpec):
    """Houlsby bottleneck adapters after attention and after the MLP (Houlsby et al. 2019, arXiv:1902.00751 §2)."""

    kind: Literal["adapter"] = "adapter"
    bottleneck: Annotated[int, Field(ge=1, le=1 << 20)] = Field(default=64, description="Bottleneck width m.")


class IA3Spec(FrozenSpec):
    """Learned rescaling vectors (Liu et al. 2022, arXiv:2205.05638 §3.3), as peft builds them."""

    kind: Literal["ia3"] = "ia3"
    target_modules: tuple[ModuleName, ...] | None = Field(default=None, description="null = peft's default.")
    feedforward_modules: tuple[ModuleName, ...] | None = Field(
        default=None, description="Targets scaled on their input (null = peft's default)."
    )


MethodSpec = Annotated[
    FullFineTune | LoRASpec | QLoRASpec | PrefixTuningSpec | PromptTuningSpec | AdapterSpec | IA3Spec,
    Field(discriminator="kind"),
]


class OptimizerSpec(FrozenSpec):
    """Optimizer and its state layout."""

    kind: Literal["adamw", "adamw_8bit", "sgd"] = "adamw"
    momentum: Annotated[float, Field(ge=0, lt=1)] = Field(default=0.0, description="SGD momentum (0 = no state).")
    implementation: Literal["fused", "foreach", "for_loop"] = Field(
        default="foreach", description="torch.optim implementation (foreach is the CUDA default)."
    )


class Precision(StrEnum):
    """Where parameters, gradients and optimizer states live."""

    BF16 = "bf16"  # bf16 params and grads; torch AdamW states in the param dtype (bf16)
    BF16_AUTOCAST = "bf16_autocast"  # fp32 params/grads/states, bf16 autocast (HF Trainer bf16=True)
    BF16_FP32_MASTER = "bf16_fp32_master"  # bf16 params/grads + fp32 master, m, v (ZeRO §3: 16 B/param)
    FP32 = "fp32"


class Checkpointing(StrEnum):
    NONE = "none"
    FULL = "full"  # recompute every decoder block (Chen et al. 2016)
    SELECTIVE = "selective"  # recompute attention only (Korthikanti et al. 2022 §4.3)


class AttentionImpl(StrEnum):
    """The attention kernel: what it keeps for backward and what it materializes (s² scores or not)."""

    EAGER = "eager"  # materializes s² scores, softmax kept in fp32
    SDPA = "sdpa"  # flash / memory-efficient kernels: O(s), log-sum-exp only
    # PyTorch's SDPA math fallback: runs when no fused kernel supports the shapes/dtype/device, e.g. MLA's unequal
    # q/k and v head dims on CPU; bf16 inputs upcast to fp32, s² scores materialized
    SDPA_MATH = "sdpa_math"


class KernelDevice(StrEnum):
    """Where the kernels run. CUDA and the CPU save different tensors in a few places, and the planner sizes the
    one asked for: dropout keeps a bool mask on CUDA (torch's fused native_dropout) and a mask in the input's dtype
    on the CPU (input · bernoulli noise); SDPA's fused kernels accept different shapes (the CPU flash kernel needs
    equal q/k and v head dims, so MLA runs the math kernel there)."""

    CUDA = "cuda"  # the product models GPUs
    CPU = "cpu"  # what a cpu (or fake) probe runs


class TrainingSpec(FrozenSpec):
    """One fine-tuning configuration on data-parallel GPUs."""

    method: MethodSpec = Field(default_factory=FullFineTune)
    optimizer: OptimizerSpec = OptimizerSpec()
    precision: Precision = Precision.BF16
    gradient_checkpointing: Checkpointing = Checkpointing.NONE
    attention: AttentionImpl = Field(
        default=AttentionImpl.SDPA,
        description="Attention kernel: 'sdpa' (fused flash/memory-efficient: O(s), a log-sum-exp), 'sdpa_math' "
        "(PyTorch's SDPA math fallback: fp32 q, k, v and fp32 s² softmax kept for backward) or 'eager' "
        "(fp32 s² softmax and its copy in the activation dtype).",
    )
    device: KernelDevice = Field(
        default=KernelDevice.CUDA,
        description="Where the kernels run: 'cuda' (the default: GPUs) or 'cpu'. Dropout masks (1 B per element "
        "on CUDA, the input's dtype on the CPU) and which fused SDPA kernel can run (MLA falls back to SDPA's math "
        "kernel on the CPU) depend on it.",
    )
    micro_batch_size: Annotated[int, Field(ge=1, le=1 << 16)] = 1
    sequence_length: Tokens = Field(default=4096, description="Tokens per row (padded or packed).")
    packing: bool = Field(default=True, description="Pack samples into full rows (no padding).")
    sample_lengths: tuple[Annotated[int, Field(ge=1, le=1 << 24)], ...] | None = Field(
        default=None,
        max_length=100_000,
        description="Sample lengths of the data set; without packing rows are padded to the longest in the batch.",
    )
    gradient_accumulation_steps: Annotated[int, Field(ge=1, le=MAX_ACCUMULATION_STEPS)] = 1
    data_parallel: Annotated[int, Field(ge=1, le=1 << 16)] = Field(default=1, description="GPUs (DP degree).")
    zero_stage: Literal[0, 1, 2, 3] = Field(
        default=0, description="ZeRO: 1 shards optimizer states, 2 + grads, 3 + weights."
    )
    tensor_parallel: Annotated[int, Field(ge=1, le=1024)] = Field(
        default=1,
        description="Megatron tensor parallel: GPUs splitting every linear of a layer (column/row parallel) and the "
        "vocabulary. GPUs in all: data_parallel × tensor_parallel × pipeline_parallel × context_parallel.",
    )
    sequence_parallel: bool = Field(
        default=True,
        description="With tensor_parallel > 1, split the norms, dropouts and residuals along the sequence too "
        "(Korthikanti et al. 2022 §4.2.2); false keeps them replicated on every TP rank.",
    )
    pipeline_parallel: Annotated[int, Field(ge=1, le=1024)] = Field(
        default=1,
        description="Pipeline stages (1F1B schedule); gradient_accumulation_steps is the number of micro-batches "
        "per step, so the bubble is (stages − 1)/micro-batches.",
    )
    context_parallel: Annotated[int, Field(ge=1, le=1024)] = Field(
        default=1,
        description="Context parallel (ring attention): each GPU holds sequence_length / CP tokens of every row.",
    )
    offload_optimizer: bool = Field(
        default=False,
        description="ZeRO-Offload: fp32 master weights and AdamW states live in CPU memory and the step runs on the "
        "CPU (DeepSpeed offload_optimizer); needs zero_stage ≥ 1 and AdamW.",
    )
    first_step: bool = Field(default=False, description="The first step: AdamW has not created its state yet.")
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 1.0
    cuda_context_bytes: Annotated[int, Field(ge=0, le=1 << 40)] = 512 << 20

    @field_validator("offload_optimizer")
    @classmethod
    def _offload_needs_zero_and_adamw(cls, offload: bool, info: ValidationInfo) -> bool:
        optimizer, stage = info.data.get("optimizer"), info.data.get("zero_stage")
        if offload and (stage == 0 or (optimizer is not None and optimizer.kind != "adamw")):
            raise ValueError("offload_optimizer needs zero_stage ≥ 1 and optimizer 'adamw' (DeepSpeed's CPU Adam)")
        return offload

    @property
    def num_gpus(self) -> int:
        """GPUs the configuration runs on: DP × TP × PP × CP."""
        return self.data_parallel * self.tensor_parallel * self.pipeline_parallel * self.context_parallel
