"""The external oracle for trainable parameters: peft 0.21.2 wrapping a transformers model on the meta device.

`get_peft_model` mutates the model it wraps, so every call builds a fresh one (tests/planner/oracle.py caches its
builds and must not be handed to peft). Wrapping happens under `torch.device("meta")`: peft then creates adapter
weights without storage; outside it, a prefix-projection MLP for Llama-2-7B (1.1B weights) takes ~16 s to initialize.
"""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import peft
import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from models.build import peft_config
from planner.training.spec import AdapterSpec, FullFineTune, MethodSpec

__all__ = ["PeftCounts", "build_fresh_meta_model", "peft_config", "peft_counts", "peft_warnings_silenced"]

# Warnings peft 0.21.2 / transformers 5.23 raise while wrapping, each matched by its own text:
PEFT_WARNINGS = (
    # transformers deprecation hit by peft's get_peft_model (prepare for gradient checkpointing)
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
    # MoE conversion sets rank/alpha_pattern for gate_up_proj, then reports it unused although ParamWrapper applies it
    (RuntimeWarning, r"The following (rank|alpha)_pattern keys did not match any targeted module"),
    # MoE conversion of all-linear on a model whose MoE layers are all dense (mlp_only_layers, first_k_dense)
    (RuntimeWarning, r"target_parameters=.* were set but no parameter was matched"),
    # LoRA on embed_tokens / lm_head of a tied model without ensure_weight_tying
    (UserWarning, r"Model has `tie_word_embeddings=True` and a tied layer is part of the adapter"),
    # LoRA on a 0-wide shared expert (qwen2_moe with shared_expert_intermediate_size 0): torch's kaiming init warns
    (UserWarning, r"Initializing zero-element tensors is a no-op"),
    # LoRA on GPT-2's Conv1D modules: peft sets fan_in_fan_out itself (the adapter's shape does not change)
    (UserWarning, r"fan_in_fan_out is set to False but the target module is `Conv1D`"),
)


@contextmanager
def peft_warnings_silenced() -> Any:
    with warnings.catch_warnings():
        for category, pattern in PEFT_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern, category=category)
        yield


def build_fresh_meta_model(config_dict: dict[str, Any]) -> PreTrainedModel:
    """`AutoModelForCausalLM.from_config` on the meta device, not cached."""
    # Scoped: config classes may warn about unused or legacy keys of a published config.json.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = AutoConfig.for_model(**config_dict)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)


@dataclass(frozen=True)
class PeftCounts:
    trainable: int  # get_nb_trainable_parameters()[0]
    base: int  # get_nb_trainable_parameters()[1] - trainable
    per_module: dict[str, int]  # adapter parameters per module name, named like PeftModule.name


# The decoder stack under the causal LM (Llama model, GPT-2 and Falcon transformer, GPT-NeoX gpt_neox) and its blocks
# (layers; GPT-2 and Falcon h).
_BASE = re.compile(r"^(model|transformer|gpt_neox)\.")
_BLOCK = re.compile(r"^(layers|h)\.\d+\.(self_attn\.|mlp\.)?")


def _module_name(key: str, wrapper: BaseTunerLayer) -> str:
    """'base_model.model.model.layers.3.mlp.experts.base_layer' → 'experts.gate_up_proj', 'base_model.model.
    transformer.h.0.attn.c_attn' → 'attn.c_attn' (PeftModule naming)."""
    key = _BASE.sub("", key.replace(".base_layer", "").removeprefix("base_model.model."))
    key = _BLOCK.sub("", key)
    parameter = getattr(wrapper, "parameter_name", None)  # lora.ParamWrapper adapts one nn.Parameter
    return f"{key}.{parameter}" if parameter else key


def peft_counts(config_dict: dict[str, Any], method: MethodSpec) -> PeftCounts:
    """Trainable parameters of `get_peft_model(model, peft_config(method))`, in total and per adapted module."""
    model = build_fresh_meta_model(config_dict)
    if isinstance(method, FullFineTune):
        total = sum(p.numel() for p in model.parameters())
        return PeftCounts(trainable=total, base=total, per_module={})
    if isinstance(method, AdapterSpec):
        raise TypeError("peft has no Houlsby adapters")
    with peft_warnings_silenced(), torch.device("meta"):
        wrapped = peft.get_peft_model(model, peft_config(method))
    trainable, total = wrapped.get_nb_trainable_parameters()
    per_module: dict[str, int] = defaultdict(int)
    for key, module in wrapped.named_modules():
        if isinstance(module, BaseTunerLayer):
            own = (p for name, p in module.named_parameters() if not name.startswith("base_layer."))
            per_module[_module_name(key, module)] += sum(p.numel() for p in own if p.requires_grad)
    return PeftCounts(trainable=trainable, base=total - trainable, per_module=dict(per_module))
