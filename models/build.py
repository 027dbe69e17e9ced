"""Probe models as users really train and serve them: the transformers class of the family, peft, torch optimizers.

Models are built from `probe_hf_config(spec)` with the dtype the TrainingSpec/ServingSpec names set as the default
dtype (on the CUDA device for cuda; on the meta device, then given fake cpu tensors, for fake); inputs and
optimizers inside the backend's `building()` context. What cannot be run honestly is refused in models.support.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import peft
import torch
import transformers
import transformers.masking_utils
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from models.backends import CpuBackend, CudaBackend, FakeBackend, default_dtype
from models.kernels import hf_attn_implementation
from models.support import check_serving_supported, check_training_supported, training_dtypes
from planner import ModelSpec
from planner.probe import probe_hf_config
from planner.serving.spec import ServingSpec
from planner.training.spec import (
    Checkpointing,
    IA3Spec,
    LoRASpec,
    OptimizerSpec,
    PrefixTuningSpec,
    PromptTuningSpec,
    TrainingSpec,
)

__all__ = [
    "BuiltModel",
    "ProbeTimeoutError",
    "build_inference_model",
    "build_optimizer",
    "build_training_model",
    "check_deadline",
    "input_ids",
    "peft_config",
    "quiet_build",
    "unpacked_rows",
]

AnyBackend = CpuBackend | FakeBackend | CudaBackend
SEED = 0
LEARNING_RATE = 1e-4

# Warnings peft raises while wrapping a transformers 5 model, each matched by its own text:
BUILD_WARNINGS = (
    # get_peft_model reads a transformers property deprecated in 5.x (every peft method, every family)
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
    # LoRA on MoE experts: peft's conversion sets rank/alpha patterns for gate_up_proj, then reports them unused
    (RuntimeWarning, r"The following (rank|alpha)_pattern keys did not match any targeted module"),
)


class ProbeTimeoutError(TimeoutError):
    """The probe ran past its `timeout_s` (checked between steps and decode tokens)."""


def check_deadline(began: float, timeout_s: float | None, where: str) -> None:
    """Raise ProbeTimeoutError when more than `timeout_s` has passed since `began` (time.perf_counter)."""
    elapsed = time.perf_counter() - began
    if timeout_s is not None and elapsed > timeout_s:
        raise ProbeTimeoutError(f"the probe ran {elapsed:.1f} s, past its timeout_s={timeout_s:g}, {where}")


def input_ids(vocab_size: int, shape: tuple[int, int], backend: AnyBackend) -> torch.Tensor:
    """Token ids drawn on the CPU from a fixed seed, then placed on the backend's device (fake: a fake tensor)."""
    with backend.building():
        generator = torch.Generator().manual_seed(SEED)
        ids = torch.randint(0, vocab_size, shape, generator=generator, device="cpu")
        return ids.to(backend.device)


@contextlib.contextmanager
def quiet_build() -> Iterator[None]:
    """Ignore exactly the known, harmless build-time warnings (tests run with warnings as errors)."""
    with warnings.catch_warnings():
        for category, pattern in BUILD_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern, category=category)
        yield


@contextlib.contextmanager
def unpacked_rows(backend: AnyBackend) -> Iterator[None]:
    """Under FakeTensorMode transformers cannot read the position ids to see that rows are not packed
    (masking_utils.find_packed_sequence_indices) and builds an explicit b·s² mask, which moves SDPA off its causal
    kernel. The probe's rows are single sequences (positions 0..s−1), which is what a real run concludes."""
    if not isinstance(backend, FakeBackend):
        yield
        return
    original = transformers.masking_utils.find_packed_sequence_indices
    transformers.masking_utils.find_packed_sequence_indices = lambda position_ids: None
    try:
        yield
    finally:
        transformers.masking_utils.find_packed_sequence_indices = original


@dataclass
class BuiltModel:
    """A probe model and what the step needs to know about it."""

    model: Any  # PreTrainedModel or peft.PeftModel
    hf_config: dict[str, Any]
    autocast_dtype: torch.dtype | None = None


def _model_context(backend: AnyBackend) -> contextlib.AbstractContextManager[Any]:
    """Where modules are created. The fake backend builds on the meta device and swaps in fake tensors afterwards
    (`_meta_to_fake`): transformers and peft move modules with Module.to(), which cannot swap fake parameters
    (FakeTensorMode holds weak references to them) and cannot copy meta ones to cpu."""
    return torch.device("meta") if isinstance(backend, FakeBackend) else backend.building()


def _from_config(spec: ModelSpec, backend: AnyBackend, dtype: torch.dtype, **extra: Any) -> PreTrainedModel:
    config = AutoConfig.for_model(**probe_hf_config(spec), **extra)
    torch.manual_seed(SEED)
    with _model_context(backend), default_dtype(dtype):
        model: PreTrainedModel = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    return model


def _meta_to_fake(model: torch.nn.Module, backend: FakeBackend) -> None:
    """Replace every meta parameter, buffer and tensor attribute (or dict entry) by an empty fake cpu tensor, keeping
    ties (one replacement per original tensor)."""
    replaced: dict[int, torch.Tensor] = {}

    def fake(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in replaced:
            empty = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=backend.device)
            is_param = isinstance(t, torch.nn.Parameter)
            replaced[id(t)] = torch.nn.Parameter(empty, t.requires_grad) if is_param else empty
        return replaced[id(t)]

    def fake_param(p: torch.nn.Parameter) -> torch.nn.Parameter:
        out = fake(p)
        assert isinstance(out, torch.nn.Parameter)
        return out

    with backend.fake_mode:
        for module in model.modules():
            for name, p in list(module._parameters.items()):
                if p is not None and p.device.type == "meta":
                    module._parameters[name] = fake_param(p)
            for name, b in list(module._buffers.items()):
                if b is not None and b.device.type == "meta":
                    module._buffers[name] = fake(b)
            for name, value in list(vars(module).items()):
                if isinstance(value, torch.Tensor) and value.device.type == "meta":
                    setattr(module, name, fake(value))
                elif isinstance(value, dict):  # e.g. peft's prompt_tokens {adapter: arange(n_virtual)}
                    for key, item in list(value.items()):
                        if isinstance(item, torch.Tensor) and item.device.type == "meta":
                            value[key] = fake(item)


def peft_config(method: Any) -> peft.PeftConfig:
    """The peft config a memplan MethodSpec stands for (task CAUSAL_LM, LoRA bias='none')."""
    if isinstance(method, LoRASpec):
        targets = method.target_modules
        return peft.LoraConfig(
            task_type="CAUSAL_LM",
            r=method.rank,
            lora_alpha=method.alpha,  # type: ignore[arg-type]  # annotated int, used as a number (α / r)
            lora_dropout=method.dropout,
            target_modules=list(targets) if isinstance(targets, tuple) else targets,
            bias="none",
        )
    if isinstance(method, IA3Spec):
        return peft.IA3Config(
            task_type="CAUSAL_LM",
            target_modules=None if method.target_modules is None else list(method.target_modules),
            feedforward_modules=None if method.feedforward_modules is None else list(method.feedforward_modules),
        )
    if isinstance(method, PrefixTuningSpec):
        return peft.PrefixTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=method.num_virtual_tokens,
            prefix_projection=method.prefix_projection,
            encoder_hidden_size=method.encoder_hidden_size,  # type: ignore[arg-type]  # None = peft's default
        )
    if isinstance(method, PromptTuningSpec):
        return peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=method.num_virtual_tokens)
    raise TypeError(f"peft has no {type(method).__name__}")


def build_training_model(spec: ModelSpec, training: TrainingSpec, backend: AnyBackend) -> BuiltModel:
    """The family's transformers model in the training precision, peft-wrapped, checkpointed as asked, in train mode.

    peft adapters are created in fp32 (the default dtype outside the build; peft also upcasts LoRA/IA3 adapters).
    """
    check_training_supported(training)
    dtype, autocast = training_dtypes(training)
    extra = {"attn_implementation": hf_attn_implementation(training.attention), "use_cache": False}
    model: Any = _from_config(spec, backend, dtype, **extra)
    method = training.method
    if method.kind != "full":
        model = _wrap_peft(model, method, backend)
    if isinstance(backend, FakeBackend):
        _meta_to_fake(model, backend)
    with quiet_build(), backend.building():
        if training.gradient_checkpointing is Checkpointing.FULL:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            if method.kind != "full":
                model.enable_input_require_grads()
    model.train()
    return BuiltModel(model, _hf_config_run(spec, model, extra), autocast)


def _hf_config_run(spec: ModelSpec, model: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """The config.json the model was built from, with the kernels transformers picked for it."""
    config = model.config
    picked = {"attn_implementation": config._attn_implementation}
    if spec.moe is not None:
        picked["experts_implementation"] = config._experts_implementation
    return probe_hf_config(spec) | extra | picked


def _wrap_peft(model: PreTrainedModel, method: Any, backend: AnyBackend) -> Any:
    with quiet_build(), _model_context(backend):
        return peft.get_peft_model(model, peft_config(method))


def build_optimizer(
    params: list[torch.nn.Parameter], spec: OptimizerSpec, backend: AnyBackend
) -> torch.optim.Optimizer:
    """torch AdamW or SGD with the implementation the spec names (foreach, fused, for-loop)."""
    impl = {"foreach": {"foreach": True}, "fused": {"fused": True}, "for_loop": {"foreach": False}}
    kwargs: dict[str, Any] = impl[spec.implementation]
    with backend.building():
        if spec.kind == "sgd":
            return torch.optim.SGD(params, lr=LEARNING_RATE, momentum=spec.momentum, **kwargs)
        return torch.optim.AdamW(params, lr=LEARNING_RATE, **kwargs)


def build_inference_model(spec: ModelSpec, serving: ServingSpec, backend: AnyBackend) -> BuiltModel:
    """The family's transformers model in the serving dtype, eval mode, the serving attention, with a KV cache."""
    dtype = check_serving_supported(serving)
    extra = {"attn_implementation": hf_attn_implementation(serving.attention), "use_cache": True}
    model = _from_config(spec, backend, dtype, **extra)
    if isinstance(backend, FakeBackend):
        _meta_to_fake(model, backend)
    model.eval()  # type: ignore[no-untyped-call]
    return BuiltModel(model, _hf_config_run(spec, model, extra))
