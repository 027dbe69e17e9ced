"""What a training configuration costs per parameter, and the shapes of its micro-batch.

Bytes per trainable parameter by role (weight, gradient, fp32 master, optimizer state), the frozen base (NF4 for
QLoRA), the micro-batch's shapes for the activation ledger (planner.training.activations) and which parts of a
block train.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

from planner.model.params import count_params, layer_kinds
from planner.model.precision import WeightFormat, linear_weight_bytes
from planner.model.spec import ModelSpec
from planner.training.activations import LayerGrads, TrainShapes
from planner.training.attention_core import sdpa_kernel
from planner.training.peft_params import TrainableParams, prefix_token_dim
from planner.training.spec import IA3Spec, LoRASpec, Precision, QLoRASpec, TrainingSpec

__all__ = ["ParamBytes", "buffer_bytes", "layer_grads", "param_bytes", "sharded", "train_shapes"]

ADAPTER_DTYPE_BYTES = 4  # peft keeps adapter weights in fp32 (autocast_adapter_dtype=True)
BNB_8BIT_BLOCK = 2048  # 8-bit optimizer state blocks (Dettmers et al. 2021, arXiv:2110.02861 §2)
ROPE_TABLE_BYTES = 4  # inv_freq is computed and kept in fp32 (transformers `_compute_default_rope_parameters`)
ROPE_TABLES = 2  # inv_freq and its clone original_inv_freq (for dynamic RoPE scaling to reset to)
# transformers 5.23 families whose rotary embedding keeps a table per distinct layer type (Gemma3RotaryEmbedding:
# f"{layer_type}_inv_freq" for sliding_attention and full_attention)
ROPE_PER_LAYER_TYPE = frozenset({"gemma3_text"})
EMBED_SCALE_FAMILIES = frozenset({"gemma", "gemma2", "gemma3_text"})  # ScaledWordEmbedding.embed_scale, a 0-d buffer
ROUTER_BIAS_BUFFER_FAMILIES = frozenset({"deepseek_v3", "minimax_m2"})  # router e_score_correction_bias, E wide


@dataclass(frozen=True, slots=True)
class ParamBytes:
    """Bytes per trainable parameter by role, and the bytes of the frozen base."""

    weight: int  # the trainable parameter itself
    grad: int
    master: int  # fp32 master copy (mixed precision with bf16 params)
    state: float  # optimizer state(s) per parameter
    state_elem: int  # bytes per optimizer-state element (sizes the foreach temporaries)
    frozen_bytes: int  # frozen base weights on one GPU before ZeRO-3 sharding


def _dense_param_bytes(precision: Precision) -> int:
    return 2 if precision in (Precision.BF16, Precision.BF16_FP32_MASTER) else 4


def _frozen_base_bytes(spec: ModelSpec, training: TrainingSpec) -> int:
    """Frozen weights: NF4 linears + 16-bit embeddings and norms for QLoRA, else every base weight."""
    b = _dense_param_bytes(training.precision)
    total = count_params(spec).total
    if not isinstance(training.method, QLoRASpec):
        return total * b
    quantized = linear_params = 0
    for layout, n in layer_kinds(spec):
        for lin in layout.linears:
            if lin.quantizable:
                quantized += n * lin.count * linear_weight_bytes(lin.d_in, lin.d_out, WeightFormat.NF4)
                linear_params += n * lin.weight_params
    return quantized + (total - linear_params) * 2  # QLoRA computes in bf16: the rest stays 16-bit


def param_bytes(spec: ModelSpec, training: TrainingSpec, trainable: TrainableParams) -> ParamBytes:
    """Bytes per trainable parameter for the precision and optimizer.

    bf16:              weight 2 + grad 2 + AdamW m, v in the param dtype 2 + 2 (torch keeps state in param dtype)
    bf16_fp32_master:  2 + 2 + fp32 master 4 + m 4 + v 4 = 16 B (ZeRO §3, mixed-precision Adam)
    bf16_autocast/fp32: 4 + 4 + 4 + 4
    PEFT adapters are fp32 whatever the base (peft autocast_adapter_dtype); 8-bit AdamW keeps 1 B per state
    plus an fp32 absmax per 2048-element block; SGD keeps one momentum buffer or none.
    """
    full = training.method.kind == "full"
    w = _dense_param_bytes(training.precision) if full else ADAPTER_DTYPE_BYTES
    master = 4 if full and training.precision is Precision.BF16_FP32_MASTER else 0
    state_elem = 4 if master else w
    opt = training.optimizer
    if opt.kind == "adamw":
        state: float = 2 * state_elem
    elif opt.kind == "adamw_8bit":
        state, state_elem = 2 * (1 + 4 / BNB_8BIT_BLOCK), 1
    else:
        state = state_elem if opt.momentum > 0 else 0
    frozen = 0 if full else _frozen_base_bytes(spec, training)
    return ParamBytes(weight=w, grad=w, master=master, state=state, state_elem=state_elem, frozen_bytes=frozen)


def buffer_bytes(spec: ModelSpec, training: TrainingSpec) -> int:
    """The model's buffers: RoPE's frequency tables, Gemma's embedding scale, DeepSeek-V3's router bias.

    Formula: R·2·⌈d_R/2⌉·4 (inv_freq and original_inv_freq, fp32; R = 1, or Gemma3's distinct layer types)
             + p (Gemma's 0-d embed_scale) + L_moe·E·p (DeepSeek-V3 / MiniMax-M2 e_score_correction_bias),
             p = the parameter dtype's bytes (the buffers are built in it).
    Source: transformers 5.23 modeling_llama.py LlamaRotaryEmbedding (`self.inv_freq = nn.Buffer(inv_freq)`,
      `self.original_inv_freq = nn.Buffer(inv_freq.clone())`, the same in every RoPE family),
      modeling_gemma3.py Gemma3RotaryEmbedding, modeling_gemma.py GemmaScaledWordEmbedding,
      modeling_deepseek_v3.py DeepseekV3TopkRouter; measured by the cpu probe (the 'buffers' it holds).
    Assumes: a QLoRA base keeps its buffers in bf16, as it computes.
    """
    rotary = spec.resolved_rotary_dim
    tables = 0
    if rotary:
        windowed = {spec.uses_sliding_window(layer) for layer in range(spec.num_layers)}
        tables = len(windowed) if spec.family in ROPE_PER_LAYER_TYPE else 1
    p = 4 if training.precision in (Precision.FP32, Precision.BF16_AUTOCAST) else 2
    moe_layers = sum(1 for layer in range(spec.num_layers) if spec.moe and spec.moe.is_moe_layer(layer))
    experts = spec.moe.num_experts if spec.moe and spec.family in ROUTER_BIAS_BUFFER_FAMILIES else 0
    rope = tables * ROPE_TABLES * ceil(rotary / 2) * ROPE_TABLE_BYTES
    return rope + (p if spec.family in EMBED_SCALE_FAMILIES else 0) + moe_layers * experts * p


def train_shapes(spec: ModelSpec, training: TrainingSpec, micro_batch: int | None = None) -> TrainShapes:
    """Rows × tokens of the largest micro-batch: packed rows are full; padded rows reach the longest sample.

    Prompt tuning lengthens every row by its virtual tokens; prefix tuning lengthens the keys only. The attention
    kernel is the one that runs on the device (planner.training.attention_core.sdpa_kernel).
    """
    seq = training.sequence_length
    if not training.packing and training.sample_lengths:
        seq = min(seq, max(training.sample_lengths))
    method = training.method
    prefix = method.num_virtual_tokens if method.kind == "prefix" else 0
    if method.kind == "prompt":
        seq += method.num_virtual_tokens
    p = 4 if training.precision is Precision.FP32 else 2
    virtual = method.num_virtual_tokens if method.kind in ("prefix", "prompt") else 0
    autocast = training.precision is Precision.BF16_AUTOCAST
    attention = sdpa_kernel(spec, training.attention, training.device)
    batch = micro_batch or training.micro_batch_size
    mlp = (0, 0)
    if method.kind == "prefix" and method.prefix_projection:
        t = prefix_token_dim(spec)
        mlp = (t, method.encoder_hidden_size or t)
    return TrainShapes(batch, seq, p, prefix, attention, virtual, autocast, training.device, mlp)


def layer_grads(training: TrainingSpec, trainable: TrainableParams) -> LayerGrads:
    method = training.method
    if method.kind == "full":
        return LayerGrads(weights=True)
    if isinstance(method, LoRASpec):
        return LayerGrads(lora=trainable.lora_targets, lora_rank=method.rank, lora_dropout=method.dropout > 0)
    if isinstance(method, IA3Spec):
        return LayerGrads(ia3=trainable.ia3_targets, ia3_feedforward=trainable.ia3_feedforward)
    if method.kind == "adapter":
        return LayerGrads(adapter_bottleneck=method.bottleneck)
    return LayerGrads()


def sharded(nbytes: float, dp: int, on: bool) -> int:
    """Bytes on one GPU: divided over the data-parallel degree when this ZeRO stage shards them."""
    return ceil(nbytes / dp) if on else ceil(nbytes)
