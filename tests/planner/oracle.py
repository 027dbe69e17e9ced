"""The external oracle for parameter counts: the model transformers builds from a config.json, on the meta device.

A meta build allocates no storage, so even DeepSeek-V3 (671B) builds in well under a second; every count
below is read off the module tree, never recomputed from the config.
"""

from __future__ import annotations

import functools
import json
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    Cache,
    DynamicCache,
    PreTrainedModel,
)

__all__ = [
    "LayerCounts",
    "OracleCounts",
    "attention_dims",
    "build_meta_model",
    "cache_layer_windows",
    "decoder_layers",
    "language_model",
    "oracle_counts",
    "prefill_cache",
    "tensor_bytes",
]


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_meta_model(config_dict: dict[str, Any]) -> PreTrainedModel:
    """`AutoModelForCausalLM.from_config(AutoConfig.for_model(**config_dict))` on the meta device, cached.

    A config with a `text_config` (a vision-language model) builds its `AutoModelForImageTextToText` class whole:
    the planner's count is then compared with the language model inside it.
    """
    return _build(json.dumps(config_dict, sort_keys=True))


def _without_remote_code(config: dict[str, Any]) -> dict[str, Any]:
    """Drop `auto_map` (top level and text_config): transformers 5 has native classes for these model types,
    and from_config would otherwise ask to run the repository's own code."""
    out = {k: v for k, v in config.items() if k != "auto_map"}
    if isinstance(out.get("text_config"), dict):
        out["text_config"] = _without_remote_code(out["text_config"])
    return out


@functools.cache
def _build(config_json: str) -> PreTrainedModel:
    # Scoped: config classes may warn about unused or legacy keys of a published config.json.
    raw = _without_remote_code(json.loads(config_json))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = AutoConfig.for_model(**raw)
        auto = AutoModelForImageTextToText if "text_config" in raw else AutoModelForCausalLM
        with torch.device("meta"):
            return auto.from_config(config)


@dataclass(frozen=True)
class LayerCounts:
    """One decoder block as transformers built it."""

    total: int
    attention: int  # self_attn parameters except the norms inside it (Qwen3 q/k norm, MLA q_a/kv_a norms)
    mlp: int
    norms: int  # every parameter whose name contains "norm", inside attention or around it
    active: int  # total − (E − k)·(one routed expert), k and E read from the router and the expert stack
    is_moe: bool


@dataclass(frozen=True)
class OracleCounts:
    total: int  # model.parameters() yields a tied weight once
    embedding: int
    lm_head: int  # 0 when the output embedding is the input embedding tensor
    position_embedding: int  # GPT-2's learned positions (wpe); 0 elsewhere
    final_norm: int
    layers: tuple[LayerCounts, ...]
    left_out: tuple[tuple[str, int], ...] = ()  # (module, params) outside the language model: vision tower, projector

    @property
    def active_per_token(self) -> int:
        outer = self.total - sum(layer.total for layer in self.layers)
        return outer + sum(layer.active for layer in self.layers)


# What each family calls a block's attention (Llama self_attn, GPT-2 attn, GPT-NeoX attention, Falcon self_attention)
_ATTENTION_MODULES = ("self_attn.", "attn.", "attention.", "self_attention.")
_FINAL_NORMS = ("norm", "ln_f", "final_layer_norm")  # Llama, GPT-2 / Falcon, GPT-NeoX


def _is_norm(name: str) -> bool:
    return "norm" in name or name.startswith("ln_")  # GPT-2 ln_1 / ln_2, Falcon ln_attn / ln_mlp


def _layer_counts(layer: nn.Module) -> LayerCounts:
    named = dict(layer.named_parameters())
    norms = sum(p.numel() for name, p in named.items() if _is_norm(name))
    attention = sum(
        p.numel() for name, p in named.items() if name.startswith(_ATTENTION_MODULES) and not _is_norm(name)
    )
    mlp = sum(p.numel() for name, p in named.items() if name.startswith("mlp."))
    total = sum(p.numel() for p in named.values())
    assert attention + mlp + norms == total, f"unclassified parameters in {sorted(named)}"
    experts = getattr(layer.mlp, "experts", None)
    if experts is None:
        return LayerCounts(total, attention, mlp, norms, active=total, is_moe=False)
    # Routed experts are stacked tensors (E, ...) in transformers 5; one expert is 1/E of the stack.
    router = getattr(layer.mlp, "gate", None) or layer.mlp.router  # gpt-oss names it router
    n_experts, top_k = experts.num_experts, router.top_k
    stacked = _numel(experts)
    assert all(p.shape[0] == n_experts for p in experts.parameters())
    active = total - (n_experts - top_k) * (stacked // n_experts)
    return LayerCounts(total, attention, mlp, norms, active=active, is_moe=True)


def language_model(model: PreTrainedModel) -> nn.Module:
    """The decoder stack: the base model (`model.model`, GPT-2's `transformer`, `gpt_neox`), or the `language_model`
    inside a vision-language model."""
    inner: nn.Module = getattr(model, model.base_model_prefix)
    return getattr(inner, "language_model", inner)


def decoder_layers(decoder: nn.Module) -> nn.ModuleList:
    """The blocks of a decoder stack (`layers`; GPT-2 and Falcon call them `h`)."""
    layers = getattr(decoder, "layers", None)
    return layers if layers is not None else decoder.h


def attention_dims(model: PreTrainedModel) -> tuple[int, int]:
    """(KV heads, head dim) of the first block's attention as transformers built it (Falcon's num_kv_heads is 1 with
    multi_query; GPT-2 and GPT-NeoX are MHA and name the head width head_dim / head_size)."""
    block = decoder_layers(language_model(model))[0]
    attention = next(
        getattr(block, name.rstrip(".")) for name in _ATTENTION_MODULES if hasattr(block, name.rstrip("."))
    )
    head_dim = getattr(attention, "head_dim", None) or attention.head_size
    n_kv = getattr(attention, "num_kv_heads", None)
    if n_kv is None:
        config = model.config.get_text_config()
        n_kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return n_kv, head_dim


def _final_norm(decoder: nn.Module) -> nn.Module:
    return next(getattr(decoder, name) for name in _FINAL_NORMS if hasattr(decoder, name))


def oracle_counts(config_dict: dict[str, Any]) -> OracleCounts:
    """Parameter counts of the model transformers builds from `config_dict`."""
    return _oracle_counts(json.dumps(config_dict, sort_keys=True))


@functools.cache
def _oracle_counts(config_json: str) -> OracleCounts:
    model = _build(config_json)
    embedding = model.get_input_embeddings().weight
    output = model.get_output_embeddings().weight
    lm_head = 0 if output is embedding else output.numel()
    # A vision-language model: only its language model (and lm_head) is counted; the rest is named.
    decoder = language_model(model)
    base = getattr(model, model.base_model_prefix)
    left_out = tuple(
        (name, _numel(child))
        for name, child in base.named_children()
        if decoder is not base and child is not decoder and _numel(child)
    )
    wpe = getattr(decoder, "wpe", None)
    return OracleCounts(
        total=_numel(decoder) + lm_head if left_out else _numel(model),
        embedding=embedding.numel(),
        lm_head=lm_head,
        position_embedding=0 if wpe is None else _numel(wpe),
        final_norm=_numel(_final_norm(decoder)),
        layers=tuple(_layer_counts(layer) for layer in decoder_layers(decoder)),
        left_out=left_out,
    )


# --- the KV cache oracle: what transformers 5 actually keeps after a prefill -------------------------------------


def prefill_cache(config_dict: dict[str, Any], seq_len: int, dtype: torch.dtype = torch.bfloat16) -> Cache:
    """The `past_key_values` of one forward over (1, seq_len) token ids, real weights on the CPU."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = AutoConfig.for_model(**config_dict)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    input_ids = torch.arange(seq_len).unsqueeze(0) % config.vocab_size  # (1, s)
    with torch.no_grad():
        return model(input_ids=input_ids, use_cache=True).past_key_values


def tensor_bytes(cache: Cache) -> int:
    """Bytes of every key and value tensor the cache holds (numel · itemsize), all layers."""
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))


def cache_layer_windows(config_dict: dict[str, Any]) -> list[int | None]:
    """Per layer, the window transformers 5 caches (DynamicSlidingWindowLayer), or None for a full layer."""
    cache = DynamicCache(config=build_meta_model(config_dict).config)
    return [getattr(layer, "sliding_window", None) for layer in cache.layers]
