"""Decoder-only LLM architecture: dense or MoE, with MHA, MQA, GQA or MLA attention."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from planner._base import FrozenSpec

__all__ = ["AttentionKind", "MLASpec", "MoESpec", "ModelSpec"]

# Bounds well beyond any published model, small enough that products of them stay exact integers.
Layers = Annotated[int, Field(ge=1, le=1024)]
Width = Annotated[int, Field(ge=1, le=1_048_576)]
Heads = Annotated[int, Field(ge=1, le=16_384)]
Vocab = Annotated[int, Field(ge=1, le=16_777_216)]
Experts = Annotated[int, Field(ge=1, le=16_384)]
Context = Annotated[int, Field(ge=1, le=1 << 30)]


class AttentionKind(StrEnum):
    """How keys and values are shared across query heads."""

    MHA = "MHA"  # one KV head per query head (Vaswani et al. 2017)
    MQA = "MQA"  # one KV head for all query heads (Shazeer 2019)
    GQA = "GQA"  # groups of query heads share a KV head (Ainslie et al. 2023)
    MLA = "MLA"  # low-rank latent KV (DeepSeek-V2, arXiv:2405.04434 §2.1)


class MLASpec(FrozenSpec):
    """Multi-head latent attention dimensions (DeepSeek-V2 §2.1.2, arXiv:2405.04434)."""

    q_lora_rank: Annotated[int, Field(ge=1, le=1_048_576)] | None = Field(
        default=None, description="Rank d_c' of the query compression; null = full-rank q_proj (V2-Lite)."
    )
    kv_lora_rank: Width = Field(description="Latent KV width d_c.")
    qk_nope_head_dim: Width = Field(description="Per-head query/key width without RoPE.")
    qk_rope_head_dim: Width = Field(description="Decoupled RoPE key width d_h^R, shared by all heads.")
    v_head_dim: Width = Field(description="Per-head value width.")

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim


class MoESpec(FrozenSpec):
    """Mixture-of-experts feed-forward layers (Shazeer et al. 2017; DeepSeekMoE arXiv:2401.06066)."""

    num_experts: Experts = Field(description="Routed experts E per MoE layer.")
    experts_per_token: Experts = Field(description="Routed experts k chosen per token.")
    expert_ffn_dim: Width = Field(description="FFN width of one routed expert.")
    shared_expert_ffn_dim: Annotated[int, Field(ge=0, le=16_777_216)] = Field(
        default=0, description="Total FFN width of the always-active shared expert(s); 0 = none."
    )
    shared_expert_gate: bool = Field(default=False, description="Sigmoid gate h->1 on the shared expert (Qwen-MoE).")
    first_dense_layers: Annotated[int, Field(ge=0, le=1024)] = Field(
        default=0, description="The first k layers keep a dense FFN (DeepSeek first_k_dense_replace)."
    )
    layer_step: Annotated[int, Field(ge=1, le=1024)] = Field(
        default=1, description="Layer i is MoE when (i + 1) % layer_step == 0 (Qwen-MoE decoder_sparse_step)."
    )
    dense_layer_ids: tuple[Annotated[int, Field(ge=0, le=1023)], ...] = Field(
        default=(), description="Layers forced to a dense FFN (Qwen-MoE mlp_only_layers)."
    )
    expert_bias: bool = Field(
        default=False,
        description="Routed experts' projections carry biases (gpt-oss: E·(2·f_e + h) per layer, gate/up and down).",
    )
    router_bias: bool = Field(default=False, description="The router h->E carries an E-sized bias (gpt-oss).")
    renormalize_top_k: bool = Field(
        default=True,
        description="The router rescales its k weights to sum to 1 (Mixtral; norm_topk_prob in Qwen-MoE and "
        "DeepSeek-V3 configs; DeepSeek-V2 never does). Sizes the routing tensors training keeps.",
    )

    @field_validator("experts_per_token")
    @classmethod
    def _k_at_most_e(cls, k: int, info: ValidationInfo) -> int:
        e = info.data.get("num_experts")
        if e is not None and k > e:
            raise ValueError(f"experts_per_token ({k}) exceeds num_experts ({e})")
        return k

    def is_moe_layer(self, layer: int) -> bool:
        return (
            layer >= self.first_dense_layers
            and (layer + 1) % self.layer_step == 0
            and layer not in self.dense_layer_ids
        )


class ModelSpec(FrozenSpec):
    """A decoder-only transformer, in the symbols of the papers: L, h, n_h, n_kv, d_h, f, V."""

    name: str | None = Field(default=None, max_length=300)
    family: str = Field(default="llama", max_length=64, description="Hugging Face model_type this layout follows.")
    num_layers: Layers = Field(description="L, decoder blocks.")
    hidden_size: Width = Field(description="h, residual stream width.")
    num_heads: Heads = Field(description="n_h, query heads.")
    num_kv_heads: Heads | None = Field(
        default=None, validate_default=True, description="n_kv, KV heads; default from `attention` (MHA: n_h, MQA: 1)."
    )
    head_dim: Width | None = Field(default=None, validate_default=True, description="d_h; default h / n_h.")
    ffn_dim: Width = Field(description="f, FFN width of dense layers (gated MLP: 3·h·f weights).")
    vocab_size: Vocab = Field(description="V.")
    tie_embeddings: bool = Field(default=False, description="lm_head shares the embedding matrix.")
    qkv_bias: bool = Field(default=False, description="q, k, v projections carry biases (e.g. Qwen2).")
    o_bias: bool = Field(default=False, description="Output projection carries a bias.")
    mlp_bias: bool = Field(default=False, description="Dense MLP projections carry biases.")
    qk_norm: bool = Field(default=False, description="RMSNorm on q and k before RoPE (Qwen3, MiniMax-M2).")
    qk_norm_type: Literal["per_head", "per_layer"] = Field(
        default="per_head",
        description="With qk_norm: over each head's d_h (Qwen3: 2·d_h weights) or over the whole q and k projections "
        "(MiniMax-M2 qk_norm_type 'per_layer': (n_h + n_kv)·d_h weights).",
    )
    attention_sinks: bool = Field(
        default=False,
        description="A learned logit per query head that joins every softmax (gpt-oss sinks): n_h weights per layer.",
    )
    norms_per_layer: Annotated[int, Field(ge=0, le=8)] = Field(
        default=2, description="Hidden-width norms per block (2 pre-norms; Gemma2 adds 2 post-norms)."
    )
    norm_bias: bool = Field(
        default=False,
        description="Norms are LayerNorms with a bias (2·h parameters each, final norm too: GPT-2, GPT-NeoX, Falcon, "
        "StarCoder2); false = RMSNorm or a weight-only LayerNorm (h each).",
    )
    mlp_kind: Literal["gated", "plain"] = Field(
        default="gated",
        description="Dense FFN: 'gated' gate and up h→f, down f→h (SwiGLU/GeGLU, 3·h·f weights); 'plain' fc_in h→f, "
        "activation, fc_out f→h (GPT-2, GPT-NeoX, Falcon, StarCoder2: 2·h·f weights).",
    )
    learned_positions: bool = Field(
        default=False, description="Learned absolute position embeddings, max_context × h (GPT-2 wpe)."
    )
    rotary_dim: Annotated[int, Field(ge=0, le=1_048_576)] | None = Field(
        default=None,
        description="d_R, rotary dimensions per head: null = all of d_h (MLA: qk_rope_head_dim); fewer with partial "
        "rotary (GPT-NeoX rotary_pct); 0 = no RoPE (learned positions, ALiBi).",
    )
    mla: MLASpec | None = None
    moe: MoESpec | None = None
    attention: AttentionKind | None = Field(
        default=None,
        validate_default=True,
        description="MHA/MQA/GQA/MLA; derived from num_kv_heads and mla when omitted.",
    )
    sliding_window: Annotated[int, Field(ge=1, le=1 << 30)] | None = Field(
        default=None, description="Sliding attention window in tokens."
    )
    sliding_window_layers: tuple[Annotated[int, Field(ge=0, le=1023)], ...] | None = Field(
        default=None, description="Layers that use the window; null with a window = every layer."
    )
    max_context: Context = Field(default=4096, description="Longest context the model was trained for.")
    quantize_experts_only: bool = Field(
        default=False,
        description="A quantized weight_format applies to the routed experts only; attention, dense and shared MLPs "
        "stay 16-bit, as the checkpoint stores them (gpt-oss MXFP4, Kimi-K2.5 int4: their modules_to_not_convert).",
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_kv_heads(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("num_kv_heads") is not None:
            return data
        kind = data.get("attention")
        if kind in ("MQA", AttentionKind.MQA):
            return {**data, "num_kv_heads": 1}
        if kind in ("MLA", AttentionKind.MLA, "MHA", AttentionKind.MHA, None):
            return {**data, "num_kv_heads": data.get("num_heads")}
        return data

    @field_validator("num_kv_heads")
    @classmethod
    def _kv_divides_heads(cls, n_kv: int | None, info: ValidationInfo) -> int | None:
        n_h = info.data.get("num_heads")
        if n_kv is None:
            raise ValueError("num_kv_heads is required when attention is GQA")
        if n_h is not None and n_h % n_kv:
            raise ValueError(f"num_heads ({n_h}) must be a multiple of num_kv_heads ({n_kv})")
        return n_kv

    @field_validator("head_dim")
    @classmethod
    def _head_dim_or_divisible(cls, d_h: int | None, info: ValidationInfo) -> int | None:
        h, n_h = info.data.get("hidden_size"), info.data.get("num_heads")
        if d_h is None and h is not None and n_h is not None and h % n_h:
            raise ValueError(f"hidden_size ({h}) is not divisible by num_heads ({n_h}); give head_dim")
        return d_h

    @field_validator("moe")
    @classmethod
    def _moe_layers_exist(cls, moe: MoESpec | None, info: ValidationInfo) -> MoESpec | None:
        n_layers = info.data.get("num_layers")
        if moe is None or n_layers is None:
            return moe
        if moe.first_dense_layers > n_layers:
            raise ValueError(f"first_dense_layers ({moe.first_dense_layers}) exceeds num_layers ({n_layers})")
        if moe.dense_layer_ids and max(moe.dense_layer_ids) >= n_layers:
            raise ValueError(f"dense_layer_ids names layer {max(moe.dense_layer_ids)} of {n_layers}")
        return moe

    @field_validator("attention")
    @classmethod
    def _attention_matches_heads(cls, kind: AttentionKind | None, info: ValidationInfo) -> AttentionKind | None:
        d = info.data
        if "mla" not in d or "num_kv_heads" not in d or "num_heads" not in d:
            return kind  # an earlier field failed and is reported on its own
        has_mla = d["mla"] is not None
        if kind is AttentionKind.MLA and not has_mla:
            raise ValueError("attention 'MLA' requires the `mla` dimensions (kv_lora_rank, qk_*_head_dim, v_head_dim)")
        derived = _derive_attention(d["num_heads"], d["num_kv_heads"], has_mla)
        if kind is not None and kind is not derived:
            raise ValueError(
                f"'{kind}' contradicts num_heads={d['num_heads']}, num_kv_heads={d['num_kv_heads']}"
                + (", mla given" if has_mla else "")
            )
        return kind

    @field_validator("sliding_window_layers")
    @classmethod
    def _window_layers_exist(cls, ids: tuple[int, ...] | None, info: ValidationInfo) -> tuple[int, ...] | None:
        if ids is None:
            return None
        if info.data.get("sliding_window") is None and "sliding_window" in info.data:
            raise ValueError("sliding_window_layers given without sliding_window")
        n_layers = info.data.get("num_layers")
        if ids and n_layers is not None and max(ids) >= n_layers:
            raise ValueError(f"names layer {max(ids)} but the model has {n_layers} layers")
        return tuple(sorted(set(ids)))

    @property
    def kv_heads(self) -> int:
        """n_kv, resolved (the validator guarantees it is set)."""
        return self.num_kv_heads or self.num_heads

    @property
    def attention_kind(self) -> AttentionKind:
        return self.attention or _derive_attention(self.num_heads, self.kv_heads, self.mla is not None)

    @property
    def resolved_head_dim(self) -> int:
        """d_h for MHA/MQA/GQA layouts."""
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def sliding_layer_count(self) -> int:
        """Layers that attend within the window (the validator keeps sliding_window_layers unique and in range)."""
        if self.sliding_window is None:
            return 0
        return self.num_layers if self.sliding_window_layers is None else len(self.sliding_window_layers)

    @property
    def resolved_rotary_dim(self) -> int:
        """d_R: the rotated width of each query/key head (0 without RoPE)."""
        if self.rotary_dim is not None:
            return self.rotary_dim
        return self.mla.qk_rope_head_dim if self.mla else self.resolved_head_dim

    @property
    def norm_params(self) -> int:
        """Parameters of one hidden-width norm: h (RMSNorm, weight-only LayerNorm) or 2·h (LayerNorm with bias)."""
        return (2 if self.norm_bias else 1) * self.hidden_size

    def uses_sliding_window(self, layer: int) -> bool:
        if self.sliding_window is None:
            return False
        return self.sliding_window_layers is None or layer in self.sliding_window_layers


def _derive_attention(n_h: int, n_kv: int, has_mla: bool) -> AttentionKind:
    if has_mla:
        return AttentionKind.MLA
    if n_kv == n_h:
        return AttentionKind.MHA
    if n_kv == 1:
        return AttentionKind.MQA
    return AttentionKind.GQA
