"""Probes: what to run to check an estimate, and the comparison that comes back. Pure schemas and shapes.

The PyTorch side (models/) builds the probe model from `probe_hf_config`, runs it on a backend, measures,
and asks the planner for the same configuration; this module only says what is run and how it is reported.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from planner._base import FrozenSpec
from planner.model.hf_families import FAMILIES
from planner.model.hf_layouts import rotary_pct
from planner.model.spec import MLASpec, ModelSpec, MoESpec
from planner.refs import CatalogId, ModelRef
from planner.serving.spec import Engine, ServingSpec
from planner.training.spec import TrainingSpec

__all__ = [
    "MAX_PROBE_TOKENS",
    "Comparison",
    "ProbeRequest",
    "ProbeResult",
    "ProbeScale",
    "probe_hf_config",
    "scale_down",
]

Backend = Literal["auto", "cuda", "cpu", "fake"]
MAX_PROBE_TOKENS = 65_536  # cpu/cuda: tokens per step (training: rows × length × accumulation; serving: B × context)


class ProbeScale(FrozenSpec):
    """How far a probe shrinks the model: the family, attention kind, MoE routing and windows stay."""

    num_layers: Annotated[int, Field(ge=1, le=8)] = 2
    head_dim: Annotated[int, Field(ge=8, le=256)] = 32
    max_heads: Annotated[int, Field(ge=1, le=64)] = 8
    ffn_multiple: Annotated[float, Field(gt=0, le=8)] = Field(default=2.5, description="f = multiple × h.")
    vocab_size: Annotated[int, Field(ge=16, le=65536)] = 1024
    max_experts: Annotated[int, Field(ge=2, le=64)] = 8


class ProbeRequest(FrozenSpec):
    """A real run of a small model of the same architecture, measured and compared with the planner."""

    kind: Literal["training", "inference"] = "training"
    model: ModelRef = "llama-3-8b"
    training: TrainingSpec = TrainingSpec(sequence_length=128, micro_batch_size=2)
    serving: ServingSpec = ServingSpec(engine=Engine.TRANSFORMERS, prompt_tokens=128, output_tokens=8)
    backend: Backend = Field(default="auto", description="auto = cuda when available, else cpu.")
    gpu: CatalogId | None = Field(
        default=None,
        description="Catalog GPU id a cuda probe runs on: on a Ray cluster the probe asks for that accelerator type "
        "(an H100 estimate is probed on an H100 node); the local executor runs it on its listed devices.",
    )
    scale_down: bool = Field(default=True, description="Shrink the model (required except on the fake backend).")
    scale: ProbeScale = ProbeScale()
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 300.0


class Comparison(FrozenSpec):
    """One component, measured and estimated."""

    name: str = Field(description="e.g. 'weights', 'trainable_weights', 'saved_activations', 'peak/steady'.")
    measured_bytes: int
    estimated_bytes: int
    rel_error: float = Field(description="(estimated − measured) / measured; 0 when both are 0.")
    exact: bool = Field(description="True where the planner claims exactness (weights, KV cache, saved tensors).")


class ProbeResult(FrozenSpec):
    """What a probe ran, where, and how far formula and measurement are apart."""

    backend: Literal["cuda", "cpu", "fake"]
    device: str
    torch_version: str
    transformers_version: str
    peft_version: str | None
    kind: Literal["training", "inference"]
    spec: ModelSpec = Field(description="The (scaled-down) architecture that was run.")
    hf_config: dict[str, Any] = Field(description="The config.json transformers built it from.")
    training: TrainingSpec | None = None
    serving: ServingSpec | None = None
    comparisons: tuple[Comparison, ...]
    peak_rel_error: float = Field(description="Relative error of the peak (steady state for training).")
    timings_s: dict[str, float] = Field(default_factory=dict, description="Wall times; CUDA events on cuda.")
    out_of_memory: bool = False


_EXPERTS_F_WIDE = ("mixtral", "gpt_oss", "minimax_m2", "olmoe")  # experts intermediate_size wide
# families whose one attention_bias flag sets the q/k/v (and, but for glm4, o) biases
_ATTENTION_BIAS_FAMILIES = (
    "llama",
    "qwen3",
    "qwen3_moe",
    "gemma",
    "gemma2",
    "gemma3_text",
    "deepseek_v2",
    "deepseek_v3",
    "gpt_oss",
    "olmo2",
    "olmoe",
    "granite",
    "smollm3",
    "glm4",
    "cohere",
    "gpt_neox",
)
_MLP_BIAS_FAMILIES = ("llama", "deepseek_v2", "granite", "smollm3")


def _scaled_heads(spec: ModelSpec, scale: ProbeScale) -> tuple[int, int]:
    """(n_h, n_kv) with the same attention kind: MHA n_kv = n_h, MQA n_kv = 1, GQA 2 KV heads of ≥ 2 queries."""
    n_h, n_kv = spec.num_heads, spec.kv_heads
    heads = min(n_h, scale.max_heads)
    if n_kv == n_h:
        return heads, heads
    if n_kv == 1:
        return heads, 1
    group = max(2, min(n_h // n_kv, scale.max_heads // 2))
    return 2 * group, 2


def scale_down(spec: ModelSpec, scale: ProbeScale) -> ModelSpec:
    """A small model of the same family: fewer layers, narrow, small vocab; same attention kind, MoE layout,
    biases, norms, tying and window pattern (the window shrinks with the sequence the probe runs)."""
    n_h, n_kv = _scaled_heads(spec, scale)
    d = scale.head_dim
    h = n_h * d
    layers = min(spec.num_layers, scale.num_layers)
    update: dict[str, Any] = {
        "name": f"{spec.name or spec.family} (probe scale)",
        "num_layers": layers,
        "hidden_size": h,
        "num_heads": n_h,
        "num_kv_heads": n_kv,
        "head_dim": d,
        "ffn_dim": max(8, int(scale.ffn_multiple * h)),
        "vocab_size": scale.vocab_size,
        "max_context": min(spec.max_context, 4096),
        "attention": None,
        "quantize_experts_only": False,  # probes run 16-bit weights
    }
    if spec.mla is not None:
        update["head_dim"], update["attention"] = None, "MLA"
        update["mla"] = MLASpec(
            q_lora_rank=None if spec.mla.q_lora_rank is None else 3 * d,
            kv_lora_rank=2 * d,
            qk_nope_head_dim=d,
            qk_rope_head_dim=d // 2,
            v_head_dim=d,
        )
    if spec.moe is not None:
        e = min(spec.moe.num_experts, scale.max_experts)
        # Mixtral, gpt-oss, MiniMax-M2: experts are intermediate_size (f) wide
        f_e = update["ffn_dim"] if spec.family in _EXPERTS_F_WIDE else max(8, h // 2)
        update["moe"] = MoESpec(
            num_experts=e,
            experts_per_token=min(spec.moe.experts_per_token, e),
            expert_ffn_dim=f_e,
            shared_expert_ffn_dim=f_e if spec.moe.shared_expert_ffn_dim else 0,
            shared_expert_gate=spec.moe.shared_expert_gate,
            first_dense_layers=min(spec.moe.first_dense_layers, layers - 1),
            layer_step=spec.moe.layer_step,
            dense_layer_ids=tuple(i for i in spec.moe.dense_layer_ids if i < layers),
            expert_bias=spec.moe.expert_bias,
            router_bias=spec.moe.router_bias,
            renormalize_top_k=spec.moe.renormalize_top_k,
        )
    if _ignores_head_dim(spec):  # GPT-2, GPT-NeoX, Falcon: d_h is h / n_h, which the scaled h keeps
        update["head_dim"] = None
    if spec.rotary_dim and spec.mla is None:  # GPT-NeoX partial rotary: the same fraction of the narrower head
        update["rotary_dim"] = int(d * spec.rotary_dim / spec.resolved_head_dim) or None
    if spec.sliding_window is not None:
        update["sliding_window"] = 64
        if spec.sliding_window_layers is not None:
            update["sliding_window_layers"] = tuple(i for i in spec.sliding_window_layers if i < layers) or None
            if update["sliding_window_layers"] is None:
                update["sliding_window"] = None
    return ModelSpec.model_validate({**spec.model_dump(), **update})


def _ignores_head_dim(spec: ModelSpec) -> bool:
    family = FAMILIES.get(spec.family)
    return family is not None and "head_dim" in family.ignored_keys


def probe_hf_config(spec: ModelSpec) -> dict[str, Any]:
    """The config.json transformers builds `spec` from (the inverse of planner.model.hf_import for its families)."""
    if spec.family in _GPT_STYLE:
        return _gpt_style_config(spec)
    d_h = spec.resolved_head_dim
    config: dict[str, Any] = {
        "model_type": spec.family,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.ffn_dim,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.kv_heads,
        "vocab_size": spec.vocab_size,
        "max_position_embeddings": spec.max_context,
        "tie_word_embeddings": spec.tie_embeddings,
        "pad_token_id": None,  # a family default (Phi-3: 32000) can lie outside the probe's small vocabulary
    }
    if spec.mla is None:
        config["head_dim"] = d_h
    if spec.family in _ATTENTION_BIAS_FAMILIES:
        config["attention_bias"] = spec.qkv_bias
    if spec.family in _MLP_BIAS_FAMILIES:
        config["mlp_bias"] = spec.mlp_bias
    if spec.family == "cohere":
        config["use_qk_norm"] = spec.qk_norm
    if spec.family == "qwen2_moe":
        config["qkv_bias"] = spec.qkv_bias
    if spec.family == "minimax_m2":
        config |= {"bos_token_id": None, "eos_token_id": None}  # the defaults lie outside the probe's vocabulary
    config |= _moe_config(spec) | _mla_config(spec) | _window_config(spec)
    return config


def _moe_config(spec: ModelSpec) -> dict[str, Any]:
    moe = spec.moe
    if moe is None:
        return {}
    if spec.family == "olmoe":
        return {
            "num_experts": moe.num_experts,
            "num_experts_per_tok": moe.experts_per_token,
            "norm_topk_prob": moe.renormalize_top_k,
        }
    if spec.family in _EXPERTS_F_WIDE:  # gpt-oss's expert and router biases come with the family
        return {"num_local_experts": moe.num_experts, "num_experts_per_tok": moe.experts_per_token}
    if spec.family in ("qwen2_moe", "qwen3_moe"):
        out = {
            "num_experts": moe.num_experts,
            "num_experts_per_tok": moe.experts_per_token,
            "moe_intermediate_size": moe.expert_ffn_dim,
            "decoder_sparse_step": moe.layer_step,
            "mlp_only_layers": list(moe.dense_layer_ids),
            "norm_topk_prob": moe.renormalize_top_k,
        }
        if spec.family == "qwen2_moe":
            out["shared_expert_intermediate_size"] = moe.shared_expert_ffn_dim
        return out
    return {
        "n_routed_experts": moe.num_experts,
        "num_experts_per_tok": moe.experts_per_token,
        "moe_intermediate_size": moe.expert_ffn_dim,
        "n_shared_experts": moe.shared_expert_ffn_dim // moe.expert_ffn_dim,
        "first_k_dense_replace": moe.first_dense_layers,
        "n_group": 1,
        "topk_group": 1,
        **({"norm_topk_prob": moe.renormalize_top_k} if spec.family == "deepseek_v3" else {}),
    }


def _mla_config(spec: ModelSpec) -> dict[str, Any]:
    mla = spec.mla
    if mla is None:
        return {}
    return {
        "q_lora_rank": mla.q_lora_rank,
        "kv_lora_rank": mla.kv_lora_rank,
        "qk_nope_head_dim": mla.qk_nope_head_dim,
        "qk_rope_head_dim": mla.qk_rope_head_dim,
        "v_head_dim": mla.v_head_dim,
    }


def _window_config(spec: ModelSpec) -> dict[str, Any]:
    if spec.sliding_window is None and spec.family in ("gpt_oss", "gemma3_text"):  # their default pattern slides
        return {"layer_types": ["full_attention"] * spec.num_layers}
    if spec.sliding_window is None:
        return {"sliding_window": None} if spec.family in ("mistral", "mixtral", "phi3") else {}
    config: dict[str, Any] = {"sliding_window": spec.sliding_window}
    if spec.family in ("qwen2", "qwen2_moe", "qwen3", "qwen3_moe"):
        config["use_sliding_window"] = True
    if spec.sliding_window_layers is not None:
        config["layer_types"] = [
            "sliding_attention" if spec.uses_sliding_window(i) else "full_attention" for i in range(spec.num_layers)
        ]
    return config


_GPT_STYLE = ("gpt2", "gpt_neox", "falcon", "starcoder2")


def _gpt_style_config(spec: ModelSpec) -> dict[str, Any]:
    """GPT-2, GPT-NeoX, Falcon, StarCoder2: canonical dimensions (GPT2Config maps hidden_size to n_embd, ...) and each
    family's own keys; no head_dim or num_key_value_heads where the config class has none (peft would read them)."""
    config: dict[str, Any] = {
        "model_type": spec.family,
        "hidden_size": spec.hidden_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "vocab_size": spec.vocab_size,
        "max_position_embeddings": spec.max_context,
        "tie_word_embeddings": spec.tie_embeddings,
        "pad_token_id": None,
    }
    if spec.family == "gpt2":
        config |= {"n_inner": spec.ffn_dim, "bos_token_id": None, "eos_token_id": None}  # 50256: outside the vocab
    elif spec.family == "gpt_neox":
        rotary = spec.resolved_rotary_dim
        config |= {"intermediate_size": spec.ffn_dim, "attention_bias": spec.qkv_bias}
        config["rotary_pct"] = rotary_pct(rotary, spec.resolved_head_dim)
    elif spec.family == "falcon":
        config |= _falcon_config(spec)
    else:  # starcoder2
        config |= {
            "intermediate_size": spec.ffn_dim,
            "num_key_value_heads": spec.kv_heads,
            "head_dim": spec.resolved_head_dim,  # Starcoder2Attention reads it (h / n_h when absent)
            "use_bias": spec.qkv_bias,
            "bos_token_id": None,
            "eos_token_id": None,
        }
        config |= _window_config(spec)
    return config


def _falcon_config(spec: ModelSpec) -> dict[str, Any]:
    """Falcon-7B's multi-query layout (one norm, one K/V head) as published; any other as the new architecture
    (num_kv_heads K/V heads; ln_attn and ln_mlp, or one norm with num_ln_in_parallel_attn 1)."""
    config: dict[str, Any] = {
        "ffn_hidden_size": spec.ffn_dim,
        "bias": spec.qkv_bias,
        "alibi": spec.resolved_rotary_dim == 0,
        "parallel_attn": True,
    }
    if spec.kv_heads == 1 and spec.norms_per_layer == 1:
        return config | {"multi_query": True, "new_decoder_architecture": False}
    return config | {
        "new_decoder_architecture": True,
        "num_kv_heads": spec.kv_heads,
        "num_ln_in_parallel_attn": spec.norms_per_layer,
    }
