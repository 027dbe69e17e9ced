"""What a probe can run honestly on one device with transformers, peft and torch.optim, and why not otherwise.

Each refusal is a planner.SpecError located at the request field that asks for it (type "unsupported").
"""

from __future__ import annotations

import importlib.util

import peft
import torch
import transformers

from planner import FieldProblem, SpecError
from planner.model.precision import DType
from planner.model.spec import ModelSpec
from planner.serving.spec import Engine, ServingSpec
from planner.training.spec import AttentionImpl, Checkpointing, Precision, QLoRASpec, TrainingSpec

__all__ = [
    "check_attention_supported",
    "check_serving_supported",
    "check_training_supported",
    "training_dtypes",
    "unsupported",
]

_DTYPES = {DType.BF16: torch.bfloat16, DType.FP16: torch.float16}


def unsupported(loc: tuple[str | int, ...], msg: str) -> SpecError:
    """A SpecError for a well-formed request the probe cannot run."""
    return SpecError([FieldProblem(loc, msg, "unsupported")])


# families transformers builds with eager attention only, and why
EAGER_ONLY_FAMILIES = {"gemma2": "attention logit soft-capping", "gpt_oss": "attention sinks"}


def check_attention_supported(spec: ModelSpec, attention: AttentionImpl, where: str) -> None:
    """Refuse an SDPA probe of a family transformers cannot build with SDPA (`where`: 'training' or 'serving')."""
    if attention is not AttentionImpl.EAGER and spec.family in EAGER_ONLY_FAMILIES:
        raise unsupported(
            (where, "attention"),
            f"transformers {transformers.__version__} builds {spec.family} with eager attention only "
            f"({EAGER_ONLY_FAMILIES[spec.family]}); probe attention 'eager'",
        )


def training_dtypes(training: TrainingSpec) -> tuple[torch.dtype, torch.dtype | None]:
    """(parameter dtype, autocast dtype): bf16 params; fp32; fp32 params under bf16 autocast (HF Trainer bf16)."""
    if training.precision is Precision.BF16:
        return torch.bfloat16, None
    if training.precision is Precision.FP32:
        return torch.float32, None
    if training.precision is Precision.BF16_AUTOCAST:
        return torch.float32, torch.bfloat16
    raise unsupported(
        ("training", "precision"),
        "bf16_fp32_master needs a mixed-precision optimizer with fp32 master weights (DeepSpeed, Megatron); "
        "torch.optim has none, so the probe cannot run it — probe bf16 or bf16_autocast",
    )


def check_training_supported(training: TrainingSpec) -> None:
    """Raise SpecError for what a single-device transformers + peft + torch.optim step cannot run."""
    method = training.method
    if isinstance(method, QLoRASpec):
        why = "bitsandbytes is not installed" if importlib.util.find_spec("bitsandbytes") is None else ""
        raise unsupported(
            ("training", "method", "kind"),
            "QLoRA probes are not supported: the NF4 base needs bitsandbytes 4-bit layers on a CUDA device"
            + (f" ({why})" if why else "")
            + "; probe 'lora' for the adapters and activations",
        )
    if method.kind == "adapter":
        raise unsupported(("training", "method", "kind"), "peft has no Houlsby adapters; the probe cannot build them")
    if training.optimizer.kind == "adamw_8bit":
        raise unsupported(("training", "optimizer", "kind"), "8-bit AdamW needs bitsandbytes, which is not installed")
    if training.gradient_checkpointing is Checkpointing.SELECTIVE:
        raise unsupported(
            ("training", "gradient_checkpointing"),
            "transformers has no selective (attention-only) recomputation; probe 'none' or 'full'",
        )
    if method.kind == "prefix" and training.gradient_checkpointing is Checkpointing.FULL:
        raise unsupported(
            ("training", "gradient_checkpointing"),
            f"prefix tuning with activation checkpointing fails in transformers {transformers.__version__} + peft "
            f"{peft.__version__}: checkpointed decoder layers set past_key_values=None, which drops peft's prefix "
            "(a KV cache), while the mask was built for s + n_virtual keys; probe prefix tuning without it",
        )
    if training.data_parallel > 1 or training.zero_stage > 0:
        raise unsupported(("training", "data_parallel"), "probes run on one device: data_parallel 1, zero_stage 0")
    for name in ("tensor_parallel", "pipeline_parallel", "context_parallel"):
        if getattr(training, name) > 1:
            raise unsupported(("training", name), f"probes run on one device: {name} 1")
    training_dtypes(training)


def check_serving_supported(serving: ServingSpec) -> torch.dtype:
    """The activation dtype of a serving probe; SpecError for what transformers generate() does not do."""
    if serving.engine is not Engine.TRANSFORMERS:
        raise unsupported(
            ("serving", "engine"),
            f"the probe serves with transformers {transformers.__version__} (engine 'transformers'); "
            f"'{serving.engine}' has its own allocator and cache layout",
        )
    dtype = serving.activation_dtype
    if serving.weight_format.value != dtype.value or serving.embedding_dtype is not dtype:
        raise unsupported(
            ("serving", "weight_format"),
            f"the probe keeps weights in the activation dtype ({dtype}); quantized or mixed weights need their kernels",
        )
    if serving.kv_cache_dtype is not dtype:
        raise unsupported(("serving", "kv_cache_dtype"), f"transformers caches K/V in the model dtype ({dtype})")
    if serving.tensor_parallel != 1:
        raise unsupported(("serving", "tensor_parallel"), "probes run on one device (tensor_parallel 1)")
    return _DTYPES[dtype]
