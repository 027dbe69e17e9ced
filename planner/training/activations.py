"""Activations a training step saves for backward: a ledger of the tensors PyTorch keeps, layer by layer.

Derived here from what autograd saves in the transformers implementation of a Llama-style block (RMSNorm,
RoPE, SDPA or eager attention, SwiGLU), measured with `torch.autograd.graph.saved_tensors_hooks` on tiny real
models (tests/planner/test_activations.py). The starting point is Korthikanti et al. 2022 (arXiv:2205.05198,
§4.1: s·b·h·(34 + 5·a·s/h) per GPT layer); the differences are the model's, not fudge factors:
RMSNorm upcasts its input to fp32 and keeps it, RoPE keeps only cos/sin, SwiGLU keeps three f-wide tensors,
flash/SDPA keeps a log-sum-exp instead of the s² scores (SDPA's math fallback keeps fp32 q, k, v and the fp32
s² softmax), frozen linears keep nothing, and peft LoRA keeps an fp32 copy of each adapted input.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from planner.model.params import block_layout
from planner.model.spec import ModelSpec
from planner.training.attention_core import (
    FUSED_QKV_FAMILIES,
    SOFTCAPPED_FAMILIES,
    attention_backward_temporaries,
    attention_core,
    attention_head_dims,
)
from planner.training.spec import AttentionImpl, KernelDevice

__all__ = [
    "APPROXIMATE_LEDGER_FAMILIES",
    "ATTENTION_OUT_NORM",
    "DROPOUT_MASK_BYTES",
    "FUSED_QKV_FAMILIES",
    "MLP_OUT_NORM",
    "LayerGrads",
    "SavedActivations",
    "SavedLedger",
    "TrainShapes",
    "attention_backward_temporaries",
    "attention_head_dims",
    "layer_saved_bytes",
    "mlp_width",
    "model_saved_bytes",
    "moe_combine_bytes",
    "recomputed_bytes",
    "rope_table_bytes",
]

FP32 = 4  # RMSNorm statistics, softmax in eager attention, log-sum-exp, peft adapter inputs, loss log-probs
INT64 = 8  # input ids and labels
INT32 = 4
COMPLEX64 = 8
AUTOCAST_BYTES = 2  # torch.autocast(bf16) casts
PREFIX_KEY_AND_VALUE = 2  # a prefix holds keys and values (peft_params.KEY_AND_VALUE)
# A dropout mask per element: CUDA's fused native_dropout keeps a bool mask; on the CPU, dropout is
# input · (bernoulli noise / (1 − p)), and mul keeps the noise, in the input's dtype (peft's fp32 adapter input)
DROPOUT_MASK_BYTES = {KernelDevice.CUDA: 1, KernelDevice.CPU: FP32}


@dataclass(frozen=True, slots=True)
class TrainShapes:
    """Shapes of one micro-batch: b rows of s tokens, P prefix tokens on the key side, p bytes per activation."""

    batch: int
    seq: int
    act_bytes: int  # p: 2 for bf16 compute, 4 for fp32
    prefix_tokens: int = 0
    attention: AttentionImpl = AttentionImpl.SDPA  # the kernel: fused SDPA, SDPA's math fallback, or eager
    virtual_tokens: int = 0  # soft-prompt / prefix tokens whose int64 indices the prompt encoder keeps
    autocast: bool = False  # fp32 params under torch.autocast(bf16): fp32 residual stream, per-linear input casts
    device: KernelDevice = KernelDevice.CUDA  # where the kernels run (dropout masks differ)
    prefix_mlp: tuple[int, int] = (0, 0)  # prefix tuning's reparameterization MLP: (t, e) widths, (0, 0) without

    @property
    def tokens(self) -> int:
        return self.batch * self.seq

    @property
    def residual_bytes(self) -> int:
        """Bytes per element of the residual stream and its gradient: fp32 under autocast, else p."""
        return FP32 if self.autocast else self.act_bytes


@dataclass(frozen=True, slots=True)
class LayerGrads:
    """Which parts of a block train: weights (full fine-tuning), LoRA adapters (by linear name), norm weights."""

    weights: bool = False
    lora: frozenset[str] = frozenset()
    lora_rank: int = 0
    lora_dropout: bool = False
    ia3: frozenset[str] = frozenset()
    ia3_feedforward: frozenset[str] = frozenset()  # IA3 targets scaled on their input (peft feedforward_modules)
    adapter_bottleneck: int = 0


RELEASED_BEFORE_SOFTMAX_BACKWARD = ("attention/probs", "attention/v", "attention/v_fp32")  # kept by probs·v only
PRE_MLP_PREFIXES = (
    "input_norm/", "attention_in/", "mla/", "attention/", "lora/q", "lora/k", "lora/v", "ia3/q", "ia3/k", "ia3/v",
)  # fmt: skip


class SavedLedger(dict[str, int]):
    """Saved-tensor bytes by name; repeated names add up."""

    def add(self, name: str, nbytes: int) -> None:
        if nbytes:
            self[name] = self.get(name, 0) + nbytes

    @property
    def total(self) -> int:
        return sum(self.values())

    @property
    def through_attention(self) -> int:
        """Bytes still saved when the block's softmax is differentiated (eager, SDPA math): everything up to the
        attention core, less what only probs·v keeps (v, and eager's probabilities), released once probs·v has
        been differentiated."""
        kept = sum(v for k, v in self.items() if k.startswith(PRE_MLP_PREFIXES))
        return kept - sum(self.get(name, 0) for name in RELEASED_BEFORE_SOFTMAX_BACKWARD)


@dataclass(frozen=True, slots=True)
class SavedActivations:
    """Saved bytes at the end of the forward pass, and what the last block holds during its backward."""

    blocks: SavedLedger
    outer: SavedLedger
    recomputed_block: int  # full checkpointing: one block's ledger, rebuilt during backward (else 0)
    last_block: int  # the last block's saved bytes (0 under full checkpointing: only its input is kept)
    last_block_through_attention: int
    first_ledger: SavedLedger  # block 0's saved tensors (whether or not they are kept through the forward)
    last_ledger: SavedLedger
    first_moe: bool  # block 0 / the last block is an MoE layer
    last_moe: bool
    moe_start: int = 0  # the first MoE layer after dense ones (first_k_dense_replace) when not the last; else 0
    moe_start_ledger: SavedLedger = field(default_factory=SavedLedger)  # its saved tensors
    before_moe_start: int = 0  # the blocks before it: their saved bytes (their inputs under full checkpointing)


def rope_table_bytes(spec: ModelSpec, shp: TrainShapes) -> int:
    """The RoPE table the blocks share: cos and sin, 2·p·s·d_R (fp32 under autocast); DeepSeek-V2's complex64
    table, 8·s·d_R/2, whatever the dtype."""
    d_rope = spec.resolved_rotary_dim  # MLA d_R, GPT-NeoX's partial rotary; 0 for learned positions (GPT-2)
    if spec.family == "deepseek_v2":
        return COMPLEX64 * shp.seq * d_rope // 2
    return 2 * (FP32 if shp.autocast else shp.act_bytes) * shp.seq * d_rope


# DeepSeek-V3's sigmoid, group-limited router keeps group top-k indices and masks the ledger does not count,
# and what it keeps varies with the routing (probe: ±1 %): its saved bytes are approximate, the others' exact.
# Families imported exactly but whose block the ledger does not model yet (cpu probes of small configs, saved
# activations): gpt_oss −24 % (sinks, clamped SwiGLU, expert biases), gemma3_text −11 %, olmo2 −11 % (norms after
# the sublayers), glm4 −3 %, cohere −1.6 % (parallel block), minimax_m2 −0.8 %, olmoe +0.1 %. GPT-2, GPT-NeoX,
# Falcon and StarCoder2 (plain GELU MLPs, LayerNorms with biases, fused qkv, parallel blocks) are not measured yet.
APPROXIMATE_LEDGER_FAMILIES = frozenset(
    {"deepseek_v3", "gpt_oss", "gemma3_text", "olmo2", "glm4", "cohere", "minimax_m2", "olmoe"}
)
# transformers 5.23 builds these MoE blocks' shared MLP whatever its width (DeepseekV2Moe, DeepseekV3MoE
# `self.shared_experts = ...MLP(intermediate_size=moe_intermediate_size·n_shared_experts)`, Qwen2MoeSparseMoeBlock
# `self.shared_expert`, `self.shared_expert_gate`): 0 wide, its three weights are empty tensors
ALWAYS_SHARED_MLP = frozenset({"deepseek_v2", "deepseek_v3", "qwen2_moe"})
# Gemma's RMSNorm scales by (1 + w) in fp32 before casting back (GemmaRMSNorm, Gemma2RMSNorm)
FP32_SCALED_NORM_FAMILIES = frozenset({"gemma", "gemma2"})
# Norms after the sublayers as well as before (Gemma2DecoderLayer: post_attention_layernorm on the attention output,
# pre_feedforward_layernorm as the MLP's input norm, post_feedforward_layernorm on the MLP output): 4 per block
SANDWICH_NORMS = 4
# the ledger's names of Gemma-2's post_attention_layernorm and post_feedforward_layernorm; its
# pre_feedforward_layernorm, the MLP's input norm, is the ledger's post_attention_norm like any block's
ATTENTION_OUT_NORM = "attention_out_norm"
MLP_OUT_NORM = "mlp_out_norm"


def _norm(
    ledger: SavedLedger,
    shp: TrainShapes,
    h: int,
    x_grad: bool,
    weight_grad: bool,
    name: str,
    *,
    fp32_scale: bool = False,
    rows: int = 1,
    input_bytes: int | None = None,
) -> None:
    """RMSNorm (transformers): x.float() and rsqrt(mean(x²)+ε) if x needs grad; the normalized x if w trains.

    `fp32_scale` (Gemma): the normalized x is kept in fp32 and, for x's gradient, the fp32 (1 + w); `rows`:
    normalized vectors per token (a per-head q/k norm: one per head, of width h / rows). The normalized x is cast
    back to x's dtype before w scales it (`input_bytes`; default the residual stream's, fp32 under autocast): Qwen3's
    q/k norms read a linear's output, bf16 under autocast.
    """
    if x_grad:
        ledger.add(f"{name}/input_fp32", FP32 * shp.tokens * h)
        ledger.add(f"{name}/rsqrt", FP32 * shp.tokens * rows)
        if fp32_scale:
            ledger.add(f"{name}/weight_plus_one_fp32", FP32 * h)
    if weight_grad:  # under autocast the residual stream, and so the normalized x, is fp32
        x_bytes = (FP32 if shp.autocast else shp.act_bytes) if input_bytes is None else input_bytes
        ledger.add(f"{name}/normalized", (FP32 if fp32_scale else x_bytes) * shp.tokens * h)


def _linear_inputs(
    ledger: SavedLedger,
    shp: TrainShapes,
    grads: LayerGrads,
    names: tuple[str, ...],
    d_in: int,
    where: str,
    input_grad: bool,
    already_saved: bool = False,
    d_outs: dict[str, int] | None = None,
) -> None:
    """What linears reading one tensor keep: the tensor once if any weight trains; per LoRA an fp32 copy.

    LoRA (peft): x is cast to the adapter dtype (fp32) per adapter, lora_A keeps its input (T·d_in·4) and lora_B
    keeps lora_A's output (T·r·4). In fp32 the cast is a no-op: one shared tensor. Dropout gives each adapter its
    own input and, when x needs grad (`input_grad`; not block 0's q/k/v when nothing before it trains), a mask:
    T·d_in·m, m = 1 on CUDA (bool), 4 on the CPU (DROPOUT_MASK_BYTES).
    Under autocast each matmul runs on bf16 casts (`_autocast_weights`); LoRA then keeps lora_A's bf16 input and
    output (2·T·d_in, 2·T·r).
    `already_saved`: the tensor is in the ledger already (the SDPA output read by o_proj).
    """
    tokens, p = shp.tokens, shp.act_bytes
    adapted = [n for n in names if n in grads.lora]
    shares_input = grads.weights or (p == FP32 and bool(adapted) and not grads.lora_dropout)
    if shares_input and not already_saved:
        # autocast casts an fp32 input to bf16 once per linear: each keeps its own copy
        copies = len(names) if shp.autocast and grads.weights else 1
        ledger.add(f"{where}/input", copies * p * tokens * d_in)
    lora_bytes = AUTOCAST_BYTES if shp.autocast else FP32
    for name in adapted:
        if grads.lora_dropout and input_grad:
            ledger.add(f"lora/{name}/dropout_mask", DROPOUT_MASK_BYTES[shp.device] * tokens * d_in)
        if grads.lora_dropout or p != FP32:
            ledger.add(f"lora/{name}/input_fp32", lora_bytes * tokens * d_in)
        ledger.add(f"lora/{name}/a_output", lora_bytes * tokens * grads.lora_rank)
    if shp.autocast and d_outs:
        _autocast_weights(ledger, grads, names, d_in, d_outs, where, input_grad)


def _autocast_weights(
    ledger: SavedLedger,
    grads: LayerGrads,
    names: tuple[str, ...],
    d_in: int,
    d_outs: dict[str, int],
    where: str,
    input_grad: bool,
) -> None:
    """The bf16 weight casts torch.autocast's matmuls keep for backward: a weight's cast is kept for its input's
    gradient, so a frozen linear keeps one only when its input needs grad, a trained one always (2·d_in·d_out);
    LoRA's lora_A cast when x needs grad (2·r·d_in), lora_B's always (2·d_out·r). A linear whose input IA3 scales
    (peft feedforward_modules) reads x · l, which needs grad: it keeps its weight cast.
    Source: PyTorch automatic mixed precision (autocast casts matmul inputs to bf16; mm saves the operand the other's
      gradient needs); measured by the probe campaign (models.campaign)."""
    r, present = grads.lora_rank, [n for n in names if n in d_outs]  # an MoE layer's FFN: `_moe_autocast_weights`
    # an IA3 vector scaling a linear's input makes that input need grad
    weights = sum(d_in * d_outs[n] for n in present if grads.weights or input_grad or n in grads.ia3_feedforward)
    lora = sum((r * d_in if input_grad else 0) + d_outs[n] * r for n in present if n in grads.lora)
    ledger.add(f"{where}/autocast_weights", AUTOCAST_BYTES * (weights + lora))


# Phi-3's fused linears and the planner names (planner.model.params) peft's one adapter on each stands for
FUSED_LINEARS = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def _as_built(spec: ModelSpec, grads: LayerGrads) -> tuple[LayerGrads, tuple[str, ...], tuple[str, ...]]:
    """The block's linears as transformers builds them: grads with LoRA/IA3 names of the fused modules added, the
    linears reading the normed input of attention, and those reading the MLP's input."""
    if spec.family in FUSED_QKV_FAMILIES:

        def fused(names: frozenset[str]) -> frozenset[str]:
            return names | {name for name, parts in FUSED_LINEARS.items() if set(parts) & names}

        built = replace(
            grads, lora=fused(grads.lora), ia3=fused(grads.ia3), ia3_feedforward=fused(grads.ia3_feedforward)
        )
        return built, ("qkv_proj",), ("gate_up_proj",)
    if spec.mla is None:
        return grads, ("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj")
    q = ("q_a_proj",) if spec.mla.q_lora_rank else ("q_proj",)
    return grads, (*q, "kv_a_proj_with_mqa"), ("gate_proj", "up_proj")


def _d_outs(spec: ModelSpec, moe_layer: bool) -> dict[str, int]:
    """Output width of each linear of the block by name (planner.model.params), Phi-3's fused ones too."""
    outs = {lin.name: lin.d_out for lin in block_layout(spec, moe_layer).linears}
    if moe_layer and spec.moe is not None and _has_shared_expert(spec):  # Qwen2-MoE's shared expert, also 0 wide
        f_s = spec.moe.shared_expert_ffn_dim
        outs |= {f"{SHARED}gate_proj": f_s, f"{SHARED}up_proj": f_s, f"{SHARED}down_proj": spec.hidden_size}
    for fused, parts in FUSED_LINEARS.items():
        if all(part in outs for part in parts):
            outs[fused] = sum(outs[part] for part in parts)
    return outs


def _has_shared_expert(spec: ModelSpec) -> bool:
    """The MoE layers build a shared expert's nn.Linears: a nonzero width, or a family that builds it whatever its
    width (ALWAYS_SHARED_MLP; Qwen2-MoE's 0-wide linears peft still adapts). A 0-wide one still reads the layer
    input: under autocast its gate_proj and up_proj each keep their own bf16 cast of it when the weights train
    (measured: DeepSeek-V2 full fine-tuning, tests/models/test_training_misses_14.py)."""
    moe = spec.moe
    return moe is not None and (
        moe.shared_expert_ffn_dim > 0 or moe.shared_expert_gate or spec.family in ALWAYS_SHARED_MLP
    )


def _qkv_grads(spec: ModelSpec, grads: LayerGrads, x_grad: bool) -> tuple[bool, bool, bool]:
    """Whether q, k and v need grad: the block input does, weights train, or an adapter sits on their path
    (MLA: q from q_proj or q_a/q_b; k and v from kv_a and kv_b; Phi-3: one qkv_proj)."""
    trained, base = grads.lora | grads.ia3, x_grad or grads.weights
    if spec.mla is not None:
        q_path = {"q_a_proj", "q_b_proj"} if spec.mla.q_lora_rank else {"q_proj"}
        kv = base or bool(trained & {"kv_a_proj_with_mqa", "kv_b_proj"})
        return base or bool(trained & q_path), kv, kv
    if spec.family in FUSED_QKV_FAMILIES:
        fused = base or bool(trained & set(FUSED_LINEARS["qkv_proj"]))
        return fused, fused, fused
    q, k, v = (base or name in trained for name in ("q_proj", "k_proj", "v_proj"))
    return q, k, v


def layer_saved_bytes(
    spec: ModelSpec, shp: TrainShapes, grads: LayerGrads, x_grad: bool, moe_layer: bool = False, masked: bool = False
) -> tuple[SavedLedger, bool]:
    """Saved bytes of one block, and whether its output needs grad.

    Formula (bf16, full fine-tuning, SDPA), T = b·s tokens:
      2 norms × (4·T·h + 4·T + 2·T·h + 2·T·h)  +  2·T·(2·n_h + 2·n_kv)·d_h + 4·b·n_h·s  +  4 · 2·T·f
    `masked`: transformers passes SDPA an explicit mask (prefix keys, a sliding window shorter than the keys).
    Source: derived here (module docstring); measured exactly on tiny transformers Llama models.
    """
    h = spec.hidden_size
    ledger = SavedLedger()
    grads, attention_readers, mlp_readers = _as_built(spec, grads)
    readers_grads = grads
    outs = _d_outs(spec, moe_layer)
    if moe_layer and spec.moe is not None and shp.autocast:  # the router and the shared expert cast the input
        shared: tuple[str, ...] = (
            ("shared_experts.gate_proj", "shared_experts.up_proj") if _has_shared_expert(spec) else ()
        )
        shared += ("shared_expert_gate",) if spec.moe.shared_expert_gate else ()  # Qwen2-MoE's h→1 nn.Linear
        mlp_readers = ("router", *shared)
        # LoRA on the router weight is peft's ParamWrapper, no nn.Linear adapter: _moe_param_lora
        readers_grads = replace(grads, lora=grads.lora - {ROUTER})
    elif moe_layer and spec.moe is not None:
        # no dense gate_proj / up_proj reads an MoE layer's input: its shared expert's linears do (_moe_mlp), and
        # LoRA on the dense MLP's names adapts the dense layers only
        mlp_readers = ()
    trained = grads.lora | grads.ia3
    gemma = spec.family in FP32_SCALED_NORM_FAMILIES
    _norm(ledger, shp, h, x_grad, grads.weights, "input_norm", fp32_scale=gemma)
    _linear_inputs(ledger, shp, grads, attention_readers, h, "attention_in", x_grad or grads.weights, d_outs=outs)
    _ia3(ledger, shp, grads, attention_readers, h, outs, x_grad, input_bytes=_normed_bytes(shp))
    if spec.mla is not None:
        _mla_latents(ledger, shp, spec, grads, x_grad)
    q_grad, k_grad, v_grad = _qkv_grads(spec, grads, x_grad)
    if spec.qk_norm:  # Qwen3: an RMSNorm per head on q and on k, before RoPE (and before a prefix is concatenated)
        d = spec.resolved_head_dim
        proj = AUTOCAST_BYTES if shp.autocast else shp.act_bytes  # q_proj's / k_proj's output
        _norm(ledger, shp, spec.num_heads * d, q_grad, grads.weights, "q_norm", rows=spec.num_heads, input_bytes=proj)
        _norm(ledger, shp, spec.kv_heads * d, k_grad, grads.weights, "k_norm", rows=spec.kv_heads, input_bytes=proj)
    k_grad = k_grad or shp.prefix_tokens > 0  # trainable prefix keys and values
    v_grad = v_grad or shp.prefix_tokens > 0
    attn_grad = q_grad or k_grad or v_grad
    if attn_grad:
        attention_core(ledger, shp, spec, q_grad, k_grad, v_grad, masked)
    d_o = spec.num_heads * (spec.mla.v_head_dim if spec.mla else spec.resolved_head_dim)
    # fused SDPA's output is o_proj's input; eager and math copy theirs, as does SDPA on Phi-3's split q
    fused = shp.attention is AttentionImpl.SDPA and spec.family not in FUSED_QKV_FAMILIES
    _linear_inputs(
        ledger, shp, grads, ("o_proj",), d_o, "o_proj_in", attn_grad, already_saved=fused and attn_grad, d_outs=outs
    )
    _ia3(ledger, shp, grads, ("o_proj",), d_o, outs, attn_grad, input_bytes=shp.act_bytes, saved=fused and attn_grad)
    mid_grad = attn_grad or grads.weights or bool(trained & {"o_proj"})
    if grads.adapter_bottleneck:
        _adapter(ledger, shp, h, grads.adapter_bottleneck, "adapter_attention")
        mid_grad = True
    sandwich = spec.norms_per_layer >= SANDWICH_NORMS
    if sandwich:  # Gemma-2's post_attention_layernorm, on the attention output before the residual sum
        _norm(ledger, shp, h, mid_grad, grads.weights, ATTENTION_OUT_NORM, fp32_scale=gemma)
    _norm(ledger, shp, h, mid_grad, grads.weights, "post_attention_norm", fp32_scale=gemma)
    _linear_inputs(ledger, shp, readers_grads, mlp_readers, h, "mlp_in", mid_grad or grads.weights, d_outs=outs)
    if not moe_layer or spec.moe is None:  # (IA3 on an MoE layer's shared expert is not modelled)
        _ia3(ledger, shp, grads, mlp_readers, h, outs, mid_grad, input_bytes=_normed_bytes(shp))
    _mlp(ledger, shp, spec, grads, mid_grad, moe_layer, outs)
    ffn_trained = {"gate_proj", "up_proj", "down_proj", "shared_expert_gate", EXPERT_GATE_UP, EXPERT_DOWN, ROUTER} | {
        f"{SHARED}{name}" for name in ("gate_proj", "up_proj", "down_proj")
    }
    out_grad = mid_grad or grads.weights or bool(trained & ffn_trained)
    if sandwich:  # Gemma-2's post_feedforward_layernorm, on the MLP output: its input needs grad as the MLP's does
        _norm(ledger, shp, h, out_grad, grads.weights, MLP_OUT_NORM, fp32_scale=gemma)
    if grads.adapter_bottleneck:
        _adapter(ledger, shp, h, grads.adapter_bottleneck, "adapter_mlp")
        out_grad = True
    return ledger, out_grad


def _mla_latents(ledger: SavedLedger, shp: TrainShapes, spec: ModelSpec, grads: LayerGrads, x_grad: bool) -> None:
    """MLA's compressed paths (DeepSeek-V2 §2.1.2): kv_a_layernorm (and q_a_layernorm) as RMSNorms of width d_c
    (d_c'), whose input needs grad when the block input does or a weight before it trains (kv_a, q_a), and the
    up-projections kv_b (q_b) keeping their inputs when they train."""
    assert spec.mla is not None
    base, trained = x_grad or grads.weights, grads.lora | grads.ia3
    widths = [("kv_a_norm", "kv_a_proj_with_mqa", "kv_b_proj", spec.mla.kv_lora_rank)]
    if spec.mla.q_lora_rank:
        widths.append(("q_a_norm", "q_a_proj", "q_b_proj", spec.mla.q_lora_rank))
    for norm, down, up, width in widths:
        latent_grad = base or down in trained
        # the latent is the down projection's output: bf16 under autocast, the dtype its normalized x is cast back to
        latent_bytes = AUTOCAST_BYTES if shp.autocast else None
        _norm(ledger, shp, width, latent_grad, grads.weights, f"mla/{norm}", input_bytes=latent_bytes)
        outs = _d_outs(spec, False)
        _linear_inputs(ledger, shp, grads, (up,), width, f"mla/{up}_in", latent_grad or grads.weights, d_outs=outs)
        _ia3(ledger, shp, grads, (up,), width, outs, latent_grad, input_bytes=_normed_bytes(shp))
        # .float() is a no-op in fp32: the norm keeps a view of kv_a's whole d_c + d_R output
        if norm == "kv_a_norm" and shp.act_bytes == FP32 and latent_grad:
            ledger.add("mla/kv_a_norm/rope_columns", FP32 * shp.tokens * spec.mla.qk_rope_head_dim)


def _normed_bytes(shp: TrainShapes) -> int:
    """Bytes per element of an RMSNorm's output: p; fp32 under autocast, where the fp32 weight promotes w · x."""
    return FP32 if shp.autocast else shp.act_bytes


def _ia3(
    ledger: SavedLedger,
    shp: TrainShapes,
    grads: LayerGrads,
    names: tuple[str, ...],
    d_in: int,
    d_outs: dict[str, int],
    input_grad: bool,
    *,
    input_bytes: int,
    saved: bool = False,
) -> None:
    """peft IA3 on the linears reading one tensor x (d_in wide, `input_bytes` per element), l an fp32 vector.

    Output scaling, (W·x · l).to(p): the mul keeps W·x (p·T·d_out) for l's gradient and, when x needs grad
    (`input_grad`; W is frozen), the fp32 vector peft builds as 1 · l (4·d_out); the cast back keeps nothing.
    Input scaling (feedforward_modules), W·(x.to(fp32) · l).to(p): the mul keeps the fp32 x (4·T·d_in) and, when x
    needs grad, 1 · l (4·d_in). The cast of a p-byte x is a copy per linear; an fp32 x (fp32 training, the normed
    residual under autocast) is kept itself, once for the linears that share it, and not at all where the ledger
    holds it already (`saved`: fused SDPA's output, read by o_proj).
    Source: peft 0.21.2 tuners/ia3/layer.py Linear.forward; measured with saved_tensors_hooks
      (tests/planner/test_activations.py) and by the probe campaign (models.campaign).
    """
    tokens, shared = shp.tokens, saved
    for name in names:
        if name not in grads.ia3:
            continue
        width = d_in if name in grads.ia3_feedforward else d_outs[name]
        if name not in grads.ia3_feedforward:
            ledger.add(f"ia3/{name}/output", shp.act_bytes * tokens * width)
        elif input_bytes != FP32 or not shared:
            ledger.add(f"ia3/{name}/input_fp32", FP32 * tokens * width)
            shared = input_bytes == FP32
        if input_grad:
            ledger.add(f"ia3/{name}/scaling_fp32", FP32 * width)


def _mlp(
    ledger: SavedLedger,
    shp: TrainShapes,
    spec: ModelSpec,
    grads: LayerGrads,
    x_grad: bool,
    moe_layer: bool,
    d_outs: dict[str, int],
) -> None:
    """SwiGLU: silu keeps gate(x), the product keeps silu(gate(x)) and up(x); down_proj keeps the product."""
    p, tokens = shp.act_bytes, shp.tokens
    f = mlp_width(spec, moe_layer)
    adapted = grads.lora | grads.ia3  # an adapted linear's output needs grad
    gate_grad = x_grad or grads.weights or "gate_proj" in adapted
    up_grad = x_grad or grads.weights or "up_proj" in adapted
    if moe_layer and spec.moe is not None and shp.autocast:
        _moe_autocast_mlp(ledger, shp, spec, grads, x_grad, gate_grad or up_grad, d_outs)
        return
    if moe_layer and spec.moe is not None:
        _moe_mlp(ledger, shp, spec, grads, x_grad, d_outs)
        return
    if gate_grad:
        ledger.add("mlp/gate_output", p * tokens * f)
        ledger.add("mlp/up_output", p * tokens * f)
    if up_grad:
        ledger.add("mlp/act_output", p * tokens * f)
    _linear_inputs(ledger, shp, grads, ("down_proj",), f, "mlp_down_in", gate_grad or up_grad, d_outs=d_outs)
    _ia3(ledger, shp, grads, ("down_proj",), f, d_outs, gate_grad or up_grad, input_bytes=p)


SHARED = "shared_experts."  # planner.model.params names of the shared expert's linears
EXPERT_GATE_UP, EXPERT_DOWN, ROUTER = "experts.gate_proj", "experts.down_proj", "router"  # ParamWrapper targets
EXPERT_GATE_UP_RANK = 2  # peft's rank_pattern for the fused gate_up_proj: 2·r (peft_params.FUSED_RANK_FACTOR)


@dataclass(frozen=True, slots=True)
class MoEGrads:
    """Which parts of an MoE layer's routed path need grad: its input (`x`), the weights (full fine-tuning), and
    peft's LoRA on the stacked expert parameters and the router weight (ParamWrapper: `gate_up`, `down`,
    `router`)."""

    x: bool
    weights: bool
    gate_up: bool = False
    down: bool = False
    router: bool = False

    @classmethod
    def of(cls, grads: LayerGrads, x_grad: bool) -> MoEGrads:
        lora = grads.lora
        return cls(x_grad, grads.weights, EXPERT_GATE_UP in lora, EXPERT_DOWN in lora, ROUTER in lora)

    @property
    def gate_up_out(self) -> bool:
        """The gate/up grouped matmul's output (and SwiGLU's product) needs grad."""
        return self.x or self.weights or self.gate_up

    @property
    def expert_out(self) -> bool:
        """The down grouped matmul's output needs grad."""
        return self.gate_up_out or self.down

    @property
    def routing(self) -> bool:
        """The router's logits, and so the routing weights, need grad."""
        return self.x or self.weights or self.router

    @property
    def any(self) -> bool:
        return self.expert_out or self.routing


def _moe_mlp(
    ledger: SavedLedger, shp: TrainShapes, spec: ModelSpec, grads: LayerGrads, x_grad: bool, d_outs: dict[str, int]
) -> None:
    """An MoE layer: the k routed experts' intermediates like one k·f_e-wide SwiGLU when their gate/up output needs
    grad (the layer's input does, weights train, or LoRA sits on the experts' gate_up_proj), and the shared
    expert's own (f_s wide), which also need grad when an adapter sits on it (peft's LoRA on Qwen2-MoE's
    shared_expert.gate_proj / up_proj / down_proj): the adapters' inputs, and the shared expert gate's sigmoid
    (p·T), which scales the adapted output. LoRA on the expert parameters and the router: `_moe_param_lora`.
    Source: transformers 5 Qwen2MoeSparseMoeBlock, DeepseekV2Moe; measured by the probe campaign (models.campaign)."""
    assert spec.moe is not None
    p, t, h = shp.act_bytes, shp.tokens, spec.hidden_size
    f_r, f_s = spec.moe.experts_per_token * spec.moe.expert_ffn_dim, spec.moe.shared_expert_ffn_dim
    m = MoEGrads.of(grads, x_grad)
    base = x_grad or grads.weights
    gate_s = base or f"{SHARED}gate_proj" in grads.lora
    up_s = base or f"{SHARED}up_proj" in grads.lora
    routed = f_r if m.gate_up_out else 0
    if routed or gate_s:
        ledger.add("mlp/gate_output", p * t * (routed + (f_s if gate_s else 0)))
        ledger.add("mlp/up_output", p * t * (routed + (f_s if gate_s else 0)))
    if routed or up_s:
        ledger.add("mlp/act_output", p * t * (routed + (f_s if up_s else 0)))
    if grads.weights:
        ledger.add("mlp_down_in/input", p * t * (f_r + f_s))
    else:  # the shared expert's linears (and Qwen2-MoE's shared gate, an h→1 nn.Linear) read the layer input
        if m.down:  # the down grouped matmul keeps its input (SwiGLU's product) for the adapted weight's gradient
            ledger.add("mlp_down_in/input", p * t * f_r)
        shared_in: tuple[str, ...] = (f"{SHARED}gate_proj", f"{SHARED}up_proj") if _has_shared_expert(spec) else ()
        shared_in += ("shared_expert_gate",) if spec.moe.shared_expert_gate else ()
        _linear_inputs(ledger, shp, grads, shared_in, h, "moe_shared_in", base, d_outs=d_outs)
        if _has_shared_expert(spec):
            down = (f"{SHARED}down_proj",)
            _linear_inputs(ledger, shp, grads, down, f_s, "moe_shared_down_in", gate_s or up_s, d_outs=d_outs)
    if m.any:
        _moe_routing(ledger, shp, spec, m)
        _moe_param_lora(ledger, shp, spec, grads, m)
    if not base and spec.moe.shared_expert_gate:
        # sigmoid(gate(x)) · shared(x) keeps the sigmoid for the adapted shared output's gradient, and the shared
        # output (and the sigmoid for its own backward) when the gate is adapted
        if "shared_expert_gate" in grads.lora:
            ledger.add("moe/shared_expert_gated", p * t * (h + 1))
        elif gate_s or up_s or f"{SHARED}down_proj" in grads.lora:
            ledger.add("moe/shared_expert_gated", p * t)


def _moe_param_lora(ledger: SavedLedger, shp: TrainShapes, spec: ModelSpec, grads: LayerGrads, m: MoEGrads) -> None:
    """peft's LoRA on the stacked expert parameters and the router weight (ParamWrapper, `target_parameters`).

    While the wrapped module runs, each adapted parameter is parametrized: with one adapter on an [E, ·, ·] stack,
    W' = baddbmm(W, B.to(p), A.to(p), alpha=α/r') (`_LoraFactorsProxy`), a new p·E·d_in·d_out tensor computed once
    per forward (`parametrize.cached()`); on the 2-D router weight W' = W + (B·A·α/r).to(p) (`_LoraParameterProxy`).
    What autograd keeps:
    - baddbmm keeps both factor casts, p·E·r'·(d_in + d_out) (r' = 2r for gate_up_proj); in fp32, and for the fp32
      weights of autocast, `.to` returns the parameter's own view: nothing;
    - the gate/up grouped matmul keeps W'_gate_up (E·2f_e·h) when its input (the gathered tokens) needs grad, and
      those tokens (k·T·h, `moe/gathered_tokens`) for W'; the down grouped matmul W'_down (E·h·f_e) when SwiGLU's
      product needs grad, and the product (k·T·f_e, `mlp_down_in/input`) for W';
    - the router's F.linear keeps its input x (p·T·h) for W' and W' (p·E·h) when x needs grad; DeepSeek's router
      keeps its fp32 casts instead (`moe/router_fp32_copies`).
    Bytes are those of the weights' dtype: p, fp32 under autocast (the grouped matmul runs in the weights' dtype).
    Source: peft 0.21.2 tuners/lora/layer.py ParamWrapper._activate_lora, _LoraFactorsProxy,
      _LoraParameterProxy, get_delta_factors; transformers 5.23 integrations/moe.py grouped_mm_experts_forward,
      MixtralTopKRouter, Qwen3MoeTopKRouter; measured with saved-tensor hooks by the cpu probe
      (tests/models/test_training_misses.py).
    """
    assert spec.moe is not None
    moe, t, h, r = spec.moe, shp.tokens, spec.hidden_size, grads.lora_rank
    e, f_e = moe.num_experts, moe.expert_ffn_dim
    w = FP32 if shp.autocast else shp.act_bytes  # the weights' dtype
    cast = w != FP32  # the factors' .to(weight dtype) copies
    if m.gate_up:
        rank = EXPERT_GATE_UP_RANK * r
        ledger.add("moe/expert_lora/gate_up_factors", (w * e * rank * (h + 2 * f_e)) if cast else 0)
        ledger.add("moe/expert_lora/gate_up_weight", w * e * 2 * f_e * h if m.x or m.weights else 0)
    if m.down:
        ledger.add("moe/expert_lora/down_factors", (w * e * r * (f_e + h)) if cast else 0)
        ledger.add("moe/expert_lora/down_weight", w * e * f_e * h if m.gate_up_out else 0)
    if m.router and shp.autocast:
        # the delta's B·A is an autocast mm: it keeps bf16 casts of both factors; F.linear casts x (kept for W') and
        # W' (kept for x's gradient, counted with the router's weight cast: mlp_in/autocast_weights)
        ledger.add("moe/router_lora/factors", AUTOCAST_BYTES * r * (h + e))
        if not spec.family.startswith("deepseek"):
            ledger.add("moe/router_lora/input", AUTOCAST_BYTES * t * h)
    elif m.router and not spec.family.startswith("deepseek"):
        ledger.add("moe/router_lora/input", w * t * h)
        ledger.add("moe/router_lora/weight", w * e * h if m.x else 0)


def _moe_autocast_mlp(
    ledger: SavedLedger,
    shp: TrainShapes,
    spec: ModelSpec,
    grads: LayerGrads,
    x_grad: bool,
    gate_grad: bool,
    d_outs: dict[str, int],
) -> None:
    """An MoE layer under autocast: the routed experts' grouped matmul is no autocast op, so it runs in the fp32 of
    the weights (transformers casts the tokens to the weight dtype): their intermediates and routing tensors are
    fp32; the shared expert's nn.Linears run in bf16 (p), keeping their bf16 weight casts.
    Source: transformers 5 integrations/moe.py `_grouped_mm` (input.to(weight.dtype)); measured by the probes."""
    assert spec.moe is not None
    moe, t, p = spec.moe, shp.tokens, shp.act_bytes
    m = MoEGrads.of(grads, x_grad)
    routed, shared_width = FP32 * moe.experts_per_token * moe.expert_ffn_dim, p * moe.shared_expert_ffn_dim
    # LoRA on the shared expert's gate_proj (up_proj) makes its output need grad: silu keeps its input and the
    # product up's output (silu's output)
    gate_s = gate_grad or f"{SHARED}gate_proj" in grads.lora
    up_s = gate_grad or f"{SHARED}up_proj" in grads.lora
    gate_up = (routed if m.gate_up_out else 0) + (shared_width if gate_s else 0)
    act = (routed if m.gate_up_out else 0) + (shared_width if up_s else 0)
    if gate_up:
        ledger.add("mlp/gate_output", t * gate_up)
        ledger.add("mlp/up_output", t * gate_up)
    if act:
        ledger.add("mlp/act_output", t * act)
    if grads.weights:
        ledger.add("mlp_down_in/input", t * (routed + shared_width))
    elif m.down:  # the down grouped matmul keeps its fp32 input for the adapted weight's gradient
        ledger.add("mlp_down_in/input", t * routed)
    if _has_shared_expert(spec):
        shared, f_s = (f"{SHARED}down_proj",), moe.shared_expert_ffn_dim
        down_grad = gate_grad or bool(grads.lora & {f"{SHARED}gate_proj", f"{SHARED}up_proj"})
        if grads.weights:  # its input is counted with mlp_down_in/input
            _autocast_weights(ledger, grads, shared, f_s, d_outs, "mlp_down_in", down_grad)
        else:  # LoRA on the shared down_proj keeps its bf16 input and lora_A's output (_linear_inputs)
            _linear_inputs(ledger, shp, grads, shared, f_s, "mlp_down_in", down_grad, d_outs=d_outs)
    if m.any:
        # the routing weights: Qwen-MoE casts them to the router logits' dtype, bf16 under autocast
        # the gated shared expert's output and sigmoid come from nn.Linears: bf16
        _moe_routing(
            ledger, replace(shp, act_bytes=FP32), spec, m, moe_combine_bytes(spec, AUTOCAST_BYTES), AUTOCAST_BYTES
        )
        _moe_param_lora(ledger, shp, spec, grads, m)
    if not (x_grad or grads.weights) and moe.shared_expert_gate:  # as in _moe_mlp, in bf16
        if "shared_expert_gate" in grads.lora:
            ledger.add("moe/shared_expert_gated", AUTOCAST_BYTES * t * (spec.hidden_size + 1))
        elif gate_s or up_s or f"{SHARED}down_proj" in grads.lora:
            ledger.add("moe/shared_expert_gated", AUTOCAST_BYTES * t)


def _moe_routing(
    ledger: SavedLedger,
    shp: TrainShapes,
    spec: ModelSpec,
    m: MoEGrads,
    combine: int | None = None,
    shared_bytes: int | None = None,
) -> None:
    """What a transformers-5 MoE layer (grouped-matmul experts) keeps besides the expert MLPs.

    k·T expert outputs (k·T·h·p, for the routing weights' gradient) and, when the experts train (their weights, or
    LoRA on gate_up_proj), the k·T gathered tokens their gate/up grouped matmul keeps (k·T·h·p); the fp32 router
    softmax (4·T·E), int64 top-k indices (8·T·k) and three int64 permutation vectors (8·k·T each: the tokens'
    gather, when the input needs grad; the routing weights', when they need grad; the restoring one), routing
    weights (k·T in fp32, in p for Qwen-MoE; + fp32 4·T·k + 4·T where the router renormalizes its top-k), a gated
    shared expert's output and gate (p·T·(h + 1), Qwen2-MoE), int32 expert offsets (4·E); DeepSeek's router runs
    in fp32 and keeps an fp32 copy of its input (when its weight trains or is LoRA-adapted) and of its weight
    (when the input needs grad), none in fp32 training but for the adapted weight W' and its input.
    What the routing weights' path keeps needs the router's logits to need grad (`m.routing`), what the experts'
    path keeps their output to (`m.expert_out`). `combine`: the routing weights' bytes where they are not
    the model dtype's (autocast); `shared_bytes`: the gated shared expert's (autocast's bf16 nn.Linear outputs).
    Source: measured by the probe grid (models/, live storages at the peak) on Mixtral and DeepSeek-V2 layouts,
      and with saved-tensor hooks for LoRA on the expert parameters (tests/models/test_training_misses.py).
    """
    assert spec.moe is not None
    p, t, h = shp.act_bytes, shp.tokens, spec.hidden_size
    k, e = spec.moe.experts_per_token, spec.moe.num_experts
    x_grad = m.x or m.weights
    if m.routing:
        ledger.add("moe/expert_outputs", k * t * h * p)
    if m.weights or m.gate_up:
        ledger.add("moe/gathered_tokens", k * t * h * p)
    if m.routing:
        ledger.add("moe/router_softmax_fp32", FP32 * t * e)
        ledger.add("moe/topk_indices", INT64 * t * k)
    ledger.add("moe/permutation", INT64 * k * t * (int(x_grad) + int(m.routing) + 1))
    # the k·T weights in expert order; a renormalizing router (w / Σw) also keeps the top-k values and their sum
    gathered = moe_combine_bytes(spec, p) if combine is None else combine
    renormalized = spec.moe.renormalize_top_k and m.routing
    weights = gathered * k * t if m.expert_out else 0
    ledger.add("moe/routing_weights", weights + (FP32 * (t * k + t) if renormalized else 0))
    if spec.moe.shared_expert_gate and m.routing:  # Qwen2-MoE: sigmoid(gate(x)) · shared(x) keeps both factors
        ledger.add("moe/shared_expert_gated", (shared_bytes or p) * t * (h + 1))
    if m.expert_out:
        ledger.add("moe/expert_offsets", INT32 * e)
    # DeepSeek: F.linear(x.float(), w.float()) keeps x for w's gradient, w for x's; in fp32 both casts are no-ops,
    # w is the parameter and x the MoE input, kept already by the linears reading it (mlp_in/input); an adapted
    # router's W' is no parameter, and nothing else keeps x. Under autocast x and the fp32 parameter are fp32
    # already, so both .float() are no-ops, and the linear runs on autocast's bf16 casts: w's (kept for x's
    # gradient) is the router's mlp_in/autocast_weights, x's is kept for w's gradient when the router trains
    # (counted with the linears reading x, mlp_in/input, when the weights train; here for peft's router LoRA)
    if spec.family.startswith("deepseek"):
        router_trains = m.weights or m.router
        if shp.autocast:
            ledger.add("moe/router_input_cast", AUTOCAST_BYTES * t * h if m.router and not m.weights else 0)
        elif shp.act_bytes != FP32:
            ledger.add("moe/router_fp32_copies", FP32 * ((t * h if router_trains else 0) + (h * e if x_grad else 0)))
        elif m.router:
            ledger.add("moe/router_fp32_copies", FP32 * (t * h + (h * e if x_grad else 0)))


def moe_combine_bytes(spec: ModelSpec, act_bytes: int) -> int:
    """Bytes per element of an MoE layer's routing weights and weighted expert outputs: Qwen-MoE casts the
    weights to the model dtype (p) before the experts; Mixtral and DeepSeek keep them, and the products, fp32."""
    return act_bytes if spec.family in ("qwen2_moe", "qwen3_moe") else FP32


def mlp_width(spec: ModelSpec, moe_layer: bool) -> int:
    """FFN width whose intermediates one token keeps: dense f, or k·f_e (+ shared) in a MoE layer.

    Assumes: a MoE token's k expert intermediates are kept like one k·f_e-wide MLP (router logits aside).
    """
    if spec.moe is None or not moe_layer:
        return spec.ffn_dim
    return spec.moe.experts_per_token * spec.moe.expert_ffn_dim + spec.moe.shared_expert_ffn_dim


def _adapter(ledger: SavedLedger, shp: TrainShapes, h: int, m: int, name: str) -> None:
    """Houlsby adapter x + up(act(down(x))): down keeps x, act keeps down(x), up keeps act(down(x))."""
    p, tokens = shp.act_bytes, shp.tokens
    ledger.add(f"{name}/input", p * tokens * h)
    ledger.add(f"{name}/bottleneck", 2 * p * tokens * m)


def model_saved_bytes(
    spec: ModelSpec,
    shp: TrainShapes,
    grads: LayerGrads,
    *,
    embeddings_train: bool,
    head_trains: bool,
    inputs_need_grad: bool,
    checkpointing: str = "none",
) -> SavedActivations:
    """Blocks' saved bytes, model-level saved bytes, and the last block's (recomputed) bytes.

    The first block's input needs grad only when something before it trains (embeddings, soft prompts).
    Full checkpointing (non-reentrant, per block) keeps each block's input, p·T·h, and recomputes one block
    at a time in backward; selective recomputation drops the attention core's s² and log-sum-exp terms
    (Korthikanti et al. 2022 §4.3).
    """
    blocks, cache = SavedLedger(), dict[tuple[bool, bool, bool], tuple[SavedLedger, bool]]()
    x_grad = inputs_need_grad or embeddings_train
    last, first, key = SavedLedger(), SavedLedger(), (False, False, False)
    first_key = key
    moe_start, moe_start_ledger, before_moe_start = 0, SavedLedger(), 0
    s_k = shp.seq + shp.prefix_tokens
    for layer in range(spec.num_layers):
        window = spec.sliding_window if spec.uses_sliding_window(layer) else None
        # transformers skips SDPA's window mask only where the keys are fewer than the window (masking_utils)
        masked = shp.prefix_tokens > 0 or (window is not None and window <= s_k)
        key = (x_grad, bool(spec.moe and spec.moe.is_moe_layer(layer)), masked)
        if key not in cache:
            cache[key] = layer_saved_bytes(spec, shp, grads, *key)
        after_dense = layer > 0 and not (spec.moe and spec.moe.is_moe_layer(layer - 1))
        ledger, x_grad = cache[key]
        last = ledger
        if layer == 0:
            first, first_key = ledger, key
        elif key[1] and after_dense and layer < spec.num_layers - 1:
            moe_start, moe_start_ledger, before_moe_start = layer, ledger, blocks.total
        if checkpointing == "full":
            blocks.add("checkpoint/block_inputs", shp.residual_bytes * shp.tokens * spec.hidden_size)
            continue
        for name, nbytes in ledger.items():
            if checkpointing == "selective" and name in SELECTIVE_RECOMPUTED:
                continue
            blocks.add(name, nbytes)
    recomputed = recomputed_bytes(last, shp) if checkpointing == "full" else 0
    outer = SavedLedger()
    p, tokens, v = shp.act_bytes, shp.tokens, spec.vocab_size
    if embeddings_train:
        outer.add("embedding/input_ids", INT64 * tokens)
    if spec.family in FP32_SCALED_NORM_FAMILIES and embeddings_train:
        # Gemma's embedding scales its output by √h (a p-byte tensor), inside the module: when only the output is
        # made to need grad (peft's enable_input_require_grads), that product saves nothing
        outer.add("embedding/normalizer", FP32 if shp.autocast else p)  # the embedding is fp32 under autocast
    if checkpointing != "full":  # RoPE tables are kept outside the blocks unless the blocks are recomputed
        outer.add("rope/cos_sin", rope_table_bytes(spec, shp))
    _norm(
        outer,
        shp,
        spec.hidden_size,
        x_grad,
        grads.weights,
        "final_norm",
        fp32_scale=spec.family in FP32_SCALED_NORM_FAMILIES,
    )
    if head_trains:
        outer.add("lm_head/input", p * tokens * spec.hidden_size)
    if shp.autocast and (head_trains or x_grad):  # lm_head's bf16 weight cast, kept for its input's gradient
        outer.add("lm_head/autocast_weights", AUTOCAST_BYTES * v * spec.hidden_size)
    if spec.family in SOFTCAPPED_FAMILIES:  # final logit soft-capping keeps tanh(logits / c), in p
        outer.add("lm_head/softcap_tanh", p * tokens * v)
    outer.add("loss/log_probs_fp32", FP32 * tokens * v)
    # labels are padded by one and shifted: a view of the padded tensor for one row, a copy otherwise
    outer.add("loss/labels", INT64 * (tokens + 1 if shp.batch == 1 else tokens))
    outer.add("prompt_encoder/indices", INT64 * shp.virtual_tokens)
    # peft's prefix MLP (fp32) on b·n virtual tokens: Linear(t, e) keeps its input, tanh its output (Linear(e, ·)'s
    # input). Under autocast both linears run in bf16: Linear(t, e) keeps its input's and its weight's bf16 casts,
    # tanh its bf16 output, Linear(e, L·2·t) its weight's cast (for the gradient of its input)
    t, e = shp.prefix_mlp
    rows = shp.batch * shp.virtual_tokens
    if shp.autocast:
        kv_width = spec.num_layers * PREFIX_KEY_AND_VALUE * t
        outer.add("prefix_encoder/mlp", AUTOCAST_BYTES * (rows * (t + e) + t * e + e * kv_width))
    else:
        outer.add("prefix_encoder/mlp", FP32 * rows * (t + e))
    outer.add("loss/scalar", FP32)
    recomputed_in_last = sum(v for k, v in last.items() if k in SELECTIVE_RECOMPUTED)
    kept_last = {"full": 0, "selective": last.total - recomputed_in_last}.get(checkpointing, last.total)
    return SavedActivations(
        blocks,
        outer,
        recomputed,
        kept_last,
        last.through_attention,
        first,
        last,
        first_key[1],
        key[1],
        moe_start,
        moe_start_ledger,
        before_moe_start,
    )


def recomputed_bytes(ledger: SavedLedger, shp: TrainShapes) -> int:
    """A block's saved tensors when its checkpoint recomputes it: its ledger, less the input norm's fp32 input where
    the residual stream is fp32 already (fp32, autocast): `.float()` is then a no-op, and that tensor is the
    checkpoint's own input, counted with the checkpoints."""
    alias = ledger.get("input_norm/input_fp32", 0) if shp.residual_bytes == FP32 else 0
    return ledger.total - alias


SELECTIVE_RECOMPUTED = frozenset({"attention/softmax_fp32", "attention/probs", "attention/logsumexp"})
