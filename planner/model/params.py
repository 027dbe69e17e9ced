"""Parameter counts of a ModelSpec, exactly as `transformers` builds the same architecture.

Each block is described as its linear layers (shapes) plus its vector parameters (norms, biases), so the
same description serves parameter counts, quantized weight bytes and FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from pydantic import Field

from planner._base import FrozenSpec
from planner.model.spec import ModelSpec

__all__ = [
    "LayerKindParams",
    "LayerParams",
    "Linear",
    "ParamCounts",
    "attention_linears",
    "block_layout",
    "count_params",
    "layer_kinds",
    "mlp_linears",
]


@dataclass(frozen=True, slots=True)
class Linear:
    """`count` copies of a d_in×d_out weight matrix (count = E for stacked experts)."""

    name: str
    d_in: int
    d_out: int
    bias: bool = False
    count: int = 1
    # Routers and gates stay 16-bit in every quantized checkpoint we model; with ModelSpec.quantize_experts_only
    # so do attention and the dense/shared MLPs.
    quantizable: bool = True
    parallel: str = "column"  # tensor-parallel split: "column" (d_out), "row" (d_in), "kv" heads, "replicated"

    @property
    def weight_params(self) -> int:
        return self.count * self.d_in * self.d_out

    @property
    def bias_params(self) -> int:
        return self.count * self.d_out if self.bias else 0

    @property
    def params(self) -> int:
        return self.weight_params + self.bias_params


@dataclass(frozen=True, slots=True)
class LayerParams:
    """One kind of decoder block: its linears and its vector (norm) parameters."""

    kind: str  # "dense" or "moe"
    attention: tuple[Linear, ...]
    mlp: tuple[Linear, ...]
    norm_params: int
    attention_vector_params: int = 0  # learned per-head vectors that are no linear: gpt-oss attention sinks (n_h)

    @property
    def attention_params(self) -> int:
        return sum(lin.params for lin in self.attention) + self.attention_vector_params

    @property
    def mlp_params(self) -> int:
        return sum(lin.params for lin in self.mlp)

    @property
    def params(self) -> int:
        return self.attention_params + self.mlp_params + self.norm_params

    @property
    def vector_params(self) -> int:
        """Parameters outside the linears' weights and biases: norms and attention sinks (16-bit in every format)."""
        return self.norm_params + self.attention_vector_params

    @property
    def linears(self) -> tuple[Linear, ...]:
        return self.attention + self.mlp


def attention_linears(spec: ModelSpec) -> tuple[Linear, ...]:
    """Projections of one attention block (gpt-oss sinks are vectors: LayerParams.attention_vector_params).

    MHA/MQA/GQA: q h→n_h·d_h, k and v h→n_kv·d_h, o n_h·d_h→h (Vaswani et al. 2017 §3.2.2; GQA arXiv:2305.13245).
    MLA (DeepSeek-V2 §2.1.2, arXiv:2405.04434): q h→n_h·(d_nope+d_rope) or q_a h→d_c' then q_b d_c'→n_h·(d_nope+d_rope);
    kv_a h→d_c+d_rope; kv_b d_c→n_h·(d_nope+d_v); o n_h·d_v→h.
    """
    h, n_h = spec.hidden_size, spec.num_heads
    mla = spec.mla
    quantizable = not spec.quantize_experts_only  # expert-only checkpoints keep attention in 16-bit
    if mla is None:
        d_h, n_kv = spec.resolved_head_dim, spec.kv_heads
        return (
            Linear("q_proj", h, n_h * d_h, spec.qkv_bias, quantizable=quantizable),
            Linear("k_proj", h, n_kv * d_h, spec.qkv_bias, quantizable=quantizable, parallel="kv"),
            Linear("v_proj", h, n_kv * d_h, spec.qkv_bias, quantizable=quantizable, parallel="kv"),
            Linear("o_proj", n_h * d_h, h, spec.o_bias, quantizable=quantizable, parallel="row"),
        )
    q_out = n_h * mla.qk_head_dim
    # DeepSeek's attention_bias puts biases on q_a, kv_a and o only (transformers DeepseekV2Attention).
    if mla.q_lora_rank is None:
        q: tuple[Linear, ...] = (Linear("q_proj", h, q_out, quantizable=quantizable),)
    else:
        q = (
            Linear("q_a_proj", h, mla.q_lora_rank, spec.qkv_bias, quantizable=quantizable, parallel="replicated"),
            Linear("q_b_proj", mla.q_lora_rank, q_out, quantizable=quantizable),
        )
    kv_a_out = mla.kv_lora_rank + mla.qk_rope_head_dim
    return (
        *q,
        Linear("kv_a_proj_with_mqa", h, kv_a_out, spec.qkv_bias, quantizable=quantizable, parallel="replicated"),
        Linear("kv_b_proj", mla.kv_lora_rank, n_h * (mla.qk_nope_head_dim + mla.v_head_dim), quantizable=quantizable),
        Linear("o_proj", n_h * mla.v_head_dim, h, spec.o_bias, quantizable=quantizable, parallel="row"),
    )


def _attention_norm_params(spec: ModelSpec) -> int:
    """Norms inside attention: q/k RMSNorm per head (Qwen3: 2·d_h) or over the whole projections
    (MiniMax-M2 per_layer: (n_h + n_kv)·d_h); MLA q_a and kv_a RMSNorms (d_c' + d_c)."""
    if spec.mla is not None:
        return (spec.mla.q_lora_rank or 0) + spec.mla.kv_lora_rank
    if not spec.qk_norm:
        return 0
    if spec.qk_norm_type == "per_layer":
        return (spec.num_heads + spec.kv_heads) * spec.resolved_head_dim
    return 2 * spec.resolved_head_dim


def _attention_vector_params(spec: ModelSpec) -> int:
    """gpt-oss attention sinks: one learned logit per query head (transformers GptOssAttention.sinks, n_h)."""
    return spec.num_heads if spec.attention_sinks else 0


def _gated_mlp(
    prefix: str, h: int, f: int, bias: bool = False, count: int = 1, quantizable: bool = True
) -> tuple[Linear, ...]:
    """SwiGLU/GeGLU MLP: gate and up h→f, down f→h (Shazeer 2020, arXiv:2002.05202): 3·h·f weights."""
    return (
        Linear(f"{prefix}gate_proj", h, f, bias, count, quantizable),
        Linear(f"{prefix}up_proj", h, f, bias, count, quantizable),
        Linear(f"{prefix}down_proj", f, h, bias, count, quantizable, parallel="row"),
    )


def _plain_mlp(h: int, f: int, bias: bool, quantizable: bool = True) -> tuple[Linear, ...]:
    """Non-gated MLP: fc_in h→f, activation, fc_out f→h (Vaswani et al. 2017 §3.3; GPT-2 c_fc/c_proj, GPT-NeoX
    dense_h_to_4h/dense_4h_to_h, Falcon, StarCoder2 c_fc/c_proj): 2·h·f weights [+ f + h biases].

    Named up_proj and down_proj here (the roles of a gated MLP's up and down), whatever the family calls them.
    """
    return (
        Linear("up_proj", h, f, bias, quantizable=quantizable),
        Linear("down_proj", f, h, bias, quantizable=quantizable, parallel="row"),
    )


def mlp_linears(spec: ModelSpec, moe_layer: bool) -> tuple[Linear, ...]:
    """FFN of one block: dense gated (or plain) MLP, or router h→E + E experts + shared expert(s) (+ Qwen shared
    gate h→1).

    gpt-oss: the router and every expert's gate/up and down carry biases (MoESpec.router_bias, expert_bias).
    With `quantize_experts_only` only the routed experts take a quantized format (gpt-oss MXFP4, Kimi-K2.5 int4).
    """
    h = spec.hidden_size
    moe = spec.moe
    dense_quantizable = not spec.quantize_experts_only
    if (not moe_layer or moe is None) and spec.mlp_kind == "plain":
        return _plain_mlp(h, spec.ffn_dim, spec.mlp_bias, quantizable=dense_quantizable)
    if not moe_layer or moe is None:
        return _gated_mlp("", h, spec.ffn_dim, spec.mlp_bias, quantizable=dense_quantizable)
    linears = (
        Linear("router", h, moe.num_experts, moe.router_bias, quantizable=False, parallel="replicated"),
        *_gated_mlp("experts.", h, moe.expert_ffn_dim, moe.expert_bias, count=moe.num_experts),
    )
    if moe.shared_expert_ffn_dim or spec.mlp_bias:  # a 0-wide DeepSeek shared MLP still has its biases
        linears += _gated_mlp(
            "shared_experts.", h, moe.shared_expert_ffn_dim, spec.mlp_bias, quantizable=dense_quantizable
        )
    if moe.shared_expert_gate:
        linears += (Linear("shared_expert_gate", h, 1, quantizable=False, parallel="replicated"),)
    return linears


@lru_cache(maxsize=4096)
def block_layout(spec: ModelSpec, moe_layer: bool) -> LayerParams:
    """The linears and norms of one decoder block (dense or MoE); a LayerNorm with bias holds 2·h."""
    norms = spec.norms_per_layer * spec.norm_params + _attention_norm_params(spec)
    return LayerParams(
        kind="moe" if moe_layer and spec.moe else "dense",
        attention=attention_linears(spec),
        mlp=mlp_linears(spec, moe_layer),
        norm_params=norms,
        attention_vector_params=_attention_vector_params(spec),
    )


@lru_cache(maxsize=4096)
def layer_kinds(spec: ModelSpec) -> tuple[tuple[LayerParams, int], ...]:
    """Distinct block layouts with how many layers use each, dense first."""
    n_moe = sum(1 for i in range(spec.num_layers) if spec.moe and spec.moe.is_moe_layer(i))
    kinds = [(block_layout(spec, False), spec.num_layers - n_moe), (block_layout(spec, True), n_moe)]
    return tuple((layout, n) for layout, n in kinds if n)


class LayerKindParams(FrozenSpec):
    """Parameters of one kind of decoder block and how many layers use it."""

    kind: str = Field(description="'dense' or 'moe'.")
    layers: int
    params_per_layer: int
    attention_params_per_layer: int
    mlp_params_per_layer: int
    norm_params_per_layer: int
    active_params_per_layer: int = Field(description="Parameters one token uses: k of the E routed experts.")


class ParamCounts(FrozenSpec):
    """Parameter counts; `total` equals sum(p.numel() for p in model.parameters()) in transformers."""

    total: int
    embedding: int = Field(description="Input embedding V·h.")
    position_embedding: int = Field(default=0, description="Learned absolute positions max_context·h (GPT-2 wpe).")
    lm_head: int = Field(description="Output projection V·h; 0 when tied to the embedding.")
    final_norm: int
    layers: tuple[LayerKindParams, ...]
    active_per_token: int = Field(description="Parameters a token touches (MoE: k routed + shared experts).")
    forward_matmul_params: int = Field(
        description="N in the 2·N forward FLOPs per token: active linear weights + the lm_head matmul."
    )


def _active_layer_params(layout: LayerParams, spec: ModelSpec) -> int:
    """Block params with only k of the E routed experts: total − (E − k)·(one expert's params)."""
    if layout.kind != "moe" or spec.moe is None:
        return layout.params
    experts = [lin for lin in layout.mlp if lin.name.startswith("experts.")]
    per_expert = sum(lin.params for lin in experts) // spec.moe.num_experts
    return layout.params - (spec.moe.num_experts - spec.moe.experts_per_token) * per_expert


def _active_matmul_weights(layout: LayerParams, spec: ModelSpec) -> int:
    k = spec.moe.experts_per_token if spec.moe else 1
    return sum(lin.d_in * lin.d_out * (k if lin.name.startswith("experts.") else lin.count) for lin in layout.linears)


@lru_cache(maxsize=4096)
def count_params(spec: ModelSpec) -> ParamCounts:
    """Total, embedding, lm_head, per-layer and active-per-token parameter counts.

    Formula: V·h (embedding) + [V·h unless tied] + [n_pos·h learned positions] + h (final norm; 2·h with bias)
             + Σ_layers (attention projections [+ biases] [+ n_h sinks] + FFN + norms),
             FFN = 3·h·f gated (2·h·f plain [+ f + h biases])
                   or h·E [+ E router bias] + E·(3·h·f_e [+ 2·f_e + h expert biases]) + shared.
    Source: derived here from the module shapes of the transformers implementations of each family;
      MoE active parameters as in DeepSeekMoE (arXiv:2401.06066 §2) — only the k routed experts count.
    Assumes: norms, biases and embeddings as ModelSpec describes them; RoPE and ALiBi hold no parameters.
    """
    h, vocab = spec.hidden_size, spec.vocab_size
    embedding = vocab * h
    lm_head = 0 if spec.tie_embeddings else vocab * h
    positions = spec.max_context * h if spec.learned_positions else 0
    final_norm = spec.norm_params
    kinds = tuple(
        LayerKindParams(
            kind=layout.kind,
            layers=n,
            params_per_layer=layout.params,
            attention_params_per_layer=layout.attention_params,
            mlp_params_per_layer=layout.mlp_params,
            norm_params_per_layer=layout.norm_params,
            active_params_per_layer=_active_layer_params(layout, spec),
        )
        for layout, n in layer_kinds(spec)
    )
    outer = embedding + lm_head + positions + final_norm
    return ParamCounts(
        total=outer + sum(k.params_per_layer * k.layers for k in kinds),
        embedding=embedding,
        position_embedding=positions,
        lm_head=lm_head,
        final_norm=final_norm,
        layers=kinds,
        active_per_token=outer + sum(k.active_params_per_layer * k.layers for k in kinds),
        forward_matmul_params=vocab * h
        + sum(_active_matmul_weights(layout, spec) * n for layout, n in layer_kinds(spec)),
    )
