"""Training memory per GPU as a two-phase peak: start of backward vs optimizer step.

Peak memory is a timeline, not a sum. Between the end of the forward pass and the optimizer step, memory
holds either all saved activations (start of backward) or all gradients (after backward); the sum of both is
never live at once (grads grow while activations shrink, linearly, so the maximum is at an end).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

from planner.activations import (
    LayerGrads,
    SavedActivations,
    SavedLedger,
    TrainShapes,
    attention_backward_temporaries,
    model_saved_bytes,
    rope_table_bytes,
)
from planner.block_backward import block_backward
from planner.explain import MemoryBreakdown, Term, breakdown
from planner.model_spec import ModelSpec
from planner.params import block_layout, count_params, layer_kinds
from planner.peft_params import TrainableParams
from planner.precision import WeightFormat, linear_weight_bytes
from planner.training_spec import AttentionImpl, Checkpointing, IA3Spec, LoRASpec, Precision, QLoRASpec, TrainingSpec

__all__ = ["CHECKPOINT_INPUTS_TERM", "ParamBytes", "TrainingPhases", "param_bytes", "train_shapes", "training_phases"]

ZERO_SOURCE = "ZeRO (Rajbhandari et al. 2020, arXiv:1910.02054) §3, §5: P_os, P_os+g, P_os+g+p"
ADAPTER_DTYPE_BYTES = 4  # peft keeps adapter weights in fp32 (autocast_adapter_dtype=True)
BNB_8BIT_BLOCK = 2048  # 8-bit optimizer state blocks (Dettmers et al. 2021, arXiv:2110.02861 §2)
INT64_BYTES = 8
CHECKPOINT_INPUTS_TERM = "activations/checkpoint_inputs"  # held by checkpoints, not saved by autograd
LOGITS_GRAD_BUFFERS = 2  # fp32 gradients of log-probs and of the upcast logits, live at once in backward


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


def train_shapes(spec: ModelSpec, training: TrainingSpec, micro_batch: int | None = None) -> TrainShapes:
    """Rows × tokens of the largest micro-batch: packed rows are full; padded rows reach the longest sample.

    Prompt tuning lengthens every row by its virtual tokens; prefix tuning lengthens the keys only.
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
    return TrainShapes(micro_batch or training.micro_batch_size, seq, p, prefix, training.attention, virtual, autocast)


def layer_grads(training: TrainingSpec, trainable: TrainableParams) -> LayerGrads:
    method = training.method
    if method.kind == "full":
        return LayerGrads(weights=True)
    if isinstance(method, LoRASpec):
        return LayerGrads(lora=trainable.lora_targets, lora_rank=method.rank, lora_dropout=method.dropout > 0)
    if isinstance(method, IA3Spec):
        return LayerGrads(ia3=trainable.ia3_targets)
    if method.kind == "adapter":
        return LayerGrads(adapter_bottleneck=method.bottleneck)
    return LayerGrads()


@dataclass(frozen=True, slots=True)
class TrainingPhases:
    """Candidate peaks by moment ('loss_backward', 'last_block_backward', 'attention_backward',
    'optimizer_step'), each a breakdown of bytes per GPU."""

    phases: dict[str, MemoryBreakdown]

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda name: self.phases[name].total_bytes)

    @property
    def peak(self) -> MemoryBreakdown:
        return self.phases[self.peak_phase]


def _sharded(nbytes: float, dp: int, on: bool) -> int:
    return ceil(nbytes / dp) if on else ceil(nbytes)


def _largest_trainable_tensor(spec: ModelSpec, full: bool, trainable: TrainableParams) -> int:
    """Elements of the biggest trainable tensor (the for-loop optimizer's transient)."""
    if not full:
        return max((m.d_in * m.d_out for m in trainable.modules), default=0)
    linears = (lin.d_in * lin.d_out * lin.count for layout, _ in layer_kinds(spec) for lin in layout.linears)
    return max(spec.vocab_size * spec.hidden_size, *linears)


def _state_terms(spec: ModelSpec, t: TrainingSpec, tp: TrainableParams, pb: ParamBytes) -> dict[str, Term]:
    """Weights, gradients, optimizer states and temporaries on one GPU, with ZeRO sharding."""
    n, dp, z = tp.trainable, t.data_parallel, t.zero_stage
    full = t.method.kind == "full"
    # for-loop AdamW holds exp_avg_sq.sqrt() and the quotient of the largest tensor at once (measured by probe)
    temp_elems = {"foreach": n, "for_loop": 2 * _largest_trainable_tensor(spec, full, tp), "fused": 0}
    temp = 0 if t.optimizer.kind == "adamw_8bit" else temp_elems[t.optimizer.implementation] * pb.state_elem
    shard = f" ÷ DP={dp}" if dp > 1 else ""
    rows = {
        "weights/trainable": (n * pb.weight, z >= 3, "N_train·b_w", f"{n:,} params × {pb.weight} B"),
        "weights/frozen": (pb.frozen_bytes, z >= 3, "N_frozen·b_w (NF4 linears for QLoRA)", "frozen base"),
        "gradients": (n * pb.grad, z >= 2, "N_train·b_g", f"{n:,} × {pb.grad} B"),
        "optimizer/master_weights": (n * pb.master, z >= 1, "N_train·4", f"fp32 master copy, {pb.master} B/param"),
        "optimizer/states": (n * pb.state, z >= 1, "N_train·states·b_s", f"{t.optimizer.kind}: {pb.state:g} B/param"),
        "optimizer/temporaries": (
            temp,
            z >= 1,
            "foreach: N_train·b_s; for-loop: largest tensor; fused: 0",
            f"{t.optimizer.implementation} implementation",
        ),
    }
    return {
        name: Term(
            name=name,
            bytes=_sharded(nbytes, dp, sharded),
            formula=formula + (shard if sharded else ""),
            detail=detail,
            source=ZERO_SOURCE if sharded else "derived here (torch.optim state layout)",
        )
        for name, (nbytes, sharded, formula, detail) in rows.items()
        if nbytes
    }


def _saved(spec: ModelSpec, t: TrainingSpec, tp: TrainableParams, micro_batch: int | None) -> SavedActivations:
    full = t.method.kind == "full"
    return model_saved_bytes(
        spec,
        train_shapes(spec, t, micro_batch),
        layer_grads(t, tp),
        embeddings_train=full,
        head_trains=full,
        inputs_need_grad=t.method.kind == "prompt" or t.gradient_checkpointing is not Checkpointing.NONE,
        checkpointing=t.gradient_checkpointing.value,
    )


def _top(ledger: dict[str, int], n: int = 4) -> str:
    return ", ".join(f"{k} {v:,} B" for k, v in sorted(ledger.items(), key=lambda kv: -kv[1])[:n])


def _head_gradients(spec: ModelSpec, t: TrainingSpec, tp: TrainableParams) -> Term | None:
    """Gradients that exist once backward has passed the loss: lm_head and final norm (full fine-tuning)."""
    if t.method.kind != "full" or t.gradient_accumulation_steps > 1:  # accumulating: all grads are counted
        return None
    params = count_params(spec)
    n = (params.lm_head or params.embedding) + params.final_norm
    nbytes = _sharded(n * param_bytes(spec, t, tp).grad, t.data_parallel, t.zero_stage >= 2)
    return Term(
        name="gradients/lm_head_and_final_norm",
        bytes=nbytes,
        formula="(V·h + h)·b_g",
        detail="produced before the last block's backward",
        source="derived here (backward order)",
    )


def _checkpoint_inputs(spec: ModelSpec, t: TrainingSpec, shp: TrainShapes) -> Term | None:
    """Full checkpointing: each block's checkpoint holds its inputs through backward, the shared ones too.

    The RoPE cos/sin tables (2·p·s·d_R; fp32 under autocast), the position ids (8·s) and, under eager
    attention, the explicit 4-D causal mask (p·b·s·s_k); SDPA runs causal without a mask.
    Source: measured by the probe grid (models/: live storages of checkpointed steps).
    """
    if t.gradient_checkpointing is not Checkpointing.FULL:
        return None
    p = shp.act_bytes
    rope = rope_table_bytes(spec, shp)
    positions = INT64_BYTES * shp.seq
    eager = t.attention is AttentionImpl.EAGER
    mask = p * shp.batch * shp.seq * (shp.seq + shp.prefix_tokens) if eager else 0
    # peft methods make the input embeddings require grad: a graph leaf; prompt tuning then concatenates
    prompt = t.method.kind == "prompt"
    words = p * _text_tokens(t, shp) * spec.hidden_size if prompt else 0
    return Term(
        name=CHECKPOINT_INPUTS_TERM,
        bytes=rope + positions + mask + words,
        formula="2·p·s·d_R + 8·s" + (" + p·b·s·s_k" if eager else "") + (" + p·b·s_text·h" if prompt else ""),
        detail=f"RoPE tables {rope:,} B, position ids {positions:,} B"
        + (f", causal mask {mask:,} B" if eager else "")
        + (f", word embeddings before the soft prompt {words:,} B" if prompt else ""),
        source="derived here; measured by the probe grid (models/) on checkpointed steps",
    )


def _text_tokens(t: TrainingSpec, shp: TrainShapes) -> int:
    """Tokens of the batch itself: prompt tuning's rows also hold the virtual tokens."""
    return shp.batch * (shp.seq - (shp.virtual_tokens if t.method.kind == "prompt" else 0))


def _block_backward_terms(
    spec: ModelSpec, t: TrainingSpec, tp: TrainableParams, shp: TrainShapes, saved: SavedLedger, moe: bool, which: str
) -> list[Term]:
    """The gradient entering a block (p·T·h) and what its backward holds at its peak (planner.block_backward)."""
    grad_bytes = param_bytes(spec, t, tp).grad
    recomputed = t.gradient_checkpointing is Checkpointing.FULL
    peak = block_backward(
        spec, shp, layer_grads(t, tp), saved, moe_layer=moe, recomputed=recomputed, grad_bytes=grad_bytes
    )
    src = "derived here (planner.block_backward); measured by the probe grid (models/)"
    return [
        Term(
            name="activations/block_output_grad",
            bytes=shp.act_bytes * shp.tokens * spec.hidden_size,
            formula="p·T·h",
            detail=f"the gradient entering {which}",
            source=src,
        ),
        Term(
            name="activations/block_backward_temporaries",
            bytes=peak.bytes,
            formula=peak.formula,
            detail=f"{which}, at its {peak.moment} ({'MoE' if moe else 'dense'} block)",
            source=src,
        ),
    ]


def _first_block_backward(
    spec: ModelSpec, t: TrainingSpec, tp: TrainableParams, shp: TrainShapes, a: SavedActivations
) -> list[Term]:
    """Full checkpointing: block 0 (processed last) recomputed, with every later gradient already produced.

    Gradients live: all trainable but block 0's and the embedding's; block 0's input; the recomputed block;
    the gradient entering it and its backward's own temporaries (planner.block_backward).
    Source: measured by the probe grid (models/, live storages at the peak of checkpointed steps).
    """
    pb = param_bytes(spec, t, tp)
    params = count_params(spec)
    if t.method.kind == "full":
        first_layer = params.layers[0].params_per_layer
        grads = (params.total - params.embedding * (0 if spec.tie_embeddings else 1) - first_layer) * pb.grad
    else:
        grads = tp.trainable * pb.grad * (spec.num_layers - 1) // spec.num_layers
    src = "derived here; measured by the probe grid (models/) on checkpointed steps"
    return [
        Term(
            name="gradients/all_but_first_block",
            bytes=_sharded(grads, t.data_parallel, t.zero_stage >= 2),
            formula="(N_train − block 0 − embedding)·b_g",
            detail="produced before block 0's backward",
            source=src,
        ),
        Term(
            name="activations/first_block_input",
            bytes=shp.act_bytes * shp.tokens * spec.hidden_size,
            formula="p·T·h",
            detail="the checkpoint input of block 0",
            source=src,
        ),
        Term(
            name="activations/recomputed_block",
            bytes=a.first_ledger.total,
            formula="one block's saved tensors",
            detail="block 0, recomputed: " + _top(a.first_ledger),
            source="Chen et al. 2016 (arXiv:1604.06174) §3",
        ),
        *_block_backward_terms(spec, t, tp, shp, a.first_ledger, a.first_moe, "block 0"),
    ]


def _last_block_backward(
    spec: ModelSpec, t: TrainingSpec, tp: TrainableParams, shp: TrainShapes, a: SavedActivations, earlier: Term
) -> list[Term]:
    """The last block's backward: earlier blocks' saved tensors (or checkpoint inputs), the last block's
    (recomputed under full checkpointing), what outside the blocks is still alive, and the block's own
    backward (planner.block_backward). Selective recomputation is not modelled at this moment."""
    src = "derived here from the tensors autograd saves (planner.activations)"
    if a.recomputed_block:
        own = Term(
            name="activations/recomputed_block",
            bytes=a.recomputed_block,
            formula="one block's saved tensors",
            detail="the last block, recomputed for its backward",
            source="Chen et al. 2016 (arXiv:1604.06174) §3",
        )
        rest = []
    else:
        own = Term(
            name="activations/last_block",
            bytes=a.last_block,
            formula="the last block's saved tensors",
            detail=_top(a.last_ledger),
            source=src,
        )
        kept = {k: v for k, v in a.outer.items() if k in OUTER_THROUGH_BLOCKS}
        rest = [
            Term(
                name="activations/outside_blocks_kept",
                bytes=sum(kept.values()),
                formula="RoPE tables, labels, soft-prompt indices",
                detail=_top(kept),
                source=src,
            )
        ]
    return [earlier, own, *rest, *_block_backward_terms(spec, t, tp, shp, a.last_ledger, a.last_moe, "the last block")]


# outside-block tensors still alive when backward reaches the blocks (the loss's and lm_head's are freed)
OUTER_THROUGH_BLOCKS = frozenset({"rope/cos_sin", "loss/labels", "prompt_encoder/indices", "loss/scalar"})


def _mlp_and_o_proj_grads(spec: ModelSpec, t: TrainingSpec, tp: TrainableParams, moe: bool) -> Term | None:
    """Full fine-tuning: the block's MLP, post-attention norm and o_proj gradients exist when its attention's
    backward runs (backward order)."""
    if t.method.kind != "full":
        return None
    layout = block_layout(spec, moe)
    o_proj = sum(lin.params for lin in layout.attention if lin.name == "o_proj")
    n = layout.mlp_params + o_proj + spec.hidden_size
    return Term(
        name="gradients/block_mlp_and_o_proj",
        bytes=_sharded(n * param_bytes(spec, t, tp).grad, t.data_parallel, t.zero_stage >= 2),
        formula="(MLP + o_proj + post-attention norm)·b_g",
        detail=f"{n:,} parameters of the block whose attention is differentiated",
        source="derived here (backward order); measured by the probe grid (models/)",
    )


def _backward_moments(
    spec: ModelSpec, t: TrainingSpec, tp: TrainableParams, micro_batch: int | None
) -> dict[str, list[Term]]:
    """Activation terms at each candidate peak inside backward.

    loss_backward: every saved tensor + two fp32 T×V logits gradients (cross-entropy backward).
    last_block_backward: earlier blocks' tensors (block inputs when checkpointing) + the last block's saved
      (recomputed) tensors + its backward's temporaries; first_block_backward (full checkpointing): block 0
      recomputed with every later gradient produced.
    attention_backward (eager): the block's tensors up to attention + fp32 s² gradients.
    Source: derived here; checked with torch.distributed._tools.mem_tracker on tiny transformers Llamas and by
    the probe grid (models/).
    """
    shp = train_shapes(spec, t, micro_batch)
    a = _saved(spec, t, tp, micro_batch)
    src = "derived here from the tensors autograd saves (planner.activations); Korthikanti et al. 2022 §4"
    blocks = Term(
        name="activations/blocks",
        bytes=a.blocks.total,
        formula="Σ_layers saved tensors",
        detail=f"b={shp.batch}, s={shp.seq}, {t.attention}, checkpointing {t.gradient_checkpointing}: "
        + _top(a.blocks),
        source=src,
    )
    earlier = Term(
        name="activations/earlier_blocks",
        bytes=a.blocks.total - a.last_block,
        formula="Σ_layers saved tensors − last block",
        detail=_top(a.blocks),
        source=src,
    )
    outer = Term(
        name="activations/outside_blocks",
        bytes=a.outer.total,
        formula="final norm, lm_head input, 4·T·V log-probs, labels",
        detail=_top(a.outer),
        source=src,
    )
    logits = Term(
        name="activations/logits_grads",
        bytes=LOGITS_GRAD_BUFFERS * 4 * shp.tokens * spec.vocab_size,
        formula="2·4·T·V",
        detail=f"two fp32 T×V gradients, T={shp.tokens}, V={spec.vocab_size}",
        source="derived here, measured: cross-entropy backward on fp32 logits (transformers loss)",
    )
    head_grads = _head_gradients(spec, t, tp)
    moments = {"loss_backward": [blocks, outer, logits]}
    if t.gradient_checkpointing is not Checkpointing.SELECTIVE:
        last = _last_block_backward(spec, t, tp, shp, a, earlier)
        moments["last_block_backward"] = [*last, *([head_grads] if head_grads else [])]
    if a.recomputed_block:
        moments["first_block_backward"] = _first_block_backward(spec, t, tp, shp, a)
    temps = attention_backward_temporaries(spec, shp)
    if temps:  # eager, SDPA math: the softmax backward of the block processed last (block 0 when checkpointed)
        held = (
            moments["first_block_backward"][:2]
            if a.recomputed_block
            else [*([head_grads] if head_grads else []), earlier]
        )
        own_grads = _mlp_and_o_proj_grads(spec, t, tp, a.first_moe if a.recomputed_block else a.last_moe)
        moments["attention_backward"] = [
            *held,
            *([own_grads] if own_grads else []),
            Term(
                name="activations/block_through_attention",
                bytes=a.last_block_through_attention,
                formula="the block's tensors up to attention, less v and the probabilities",
                detail="block 0 recomputed" if a.recomputed_block else "the last block",
                source=src,
            ),
            Term(
                name="activations/attention_grad_temporaries",
                bytes=temps,
                formula="2·4·b·n_h·s·s_k + b_v·b·n_h·s_k·d_v + p·T·h",
                detail=f"{t.attention}: fp32 s² gradients, v's (b_v = 4 math, p eager), the block output's",
                source=src,
            ),
        ]
    ids = Term(
        name="inputs/input_ids",
        bytes=INT64_BYTES * _text_tokens(t, shp),
        formula="8·T",
        detail="the batch's token ids, alive through backward",
        source="derived here",
    )
    ckpt_inputs = _checkpoint_inputs(spec, t, shp)
    for name, terms in moments.items():
        if not (name == "loss_backward" and "embedding/input_ids" in a.outer):  # else saved by the embedding
            terms.append(ids)
        if ckpt_inputs:
            terms.append(ckpt_inputs)
    if t.precision is Precision.BF16_AUTOCAST:
        copies = Term(
            name="activations/autocast_weight_copies",
            bytes=_sharded(2 * count_params(spec).forward_matmul_params, t.data_parallel, t.zero_stage >= 3),
            formula="2·N_matmul",
            detail="bf16 casts of the fp32 weights, kept for backward",
            source="torch.autocast weight-cast cache (PyTorch automatic mixed precision docs)",
        )
        for terms in moments.values():
            terms.append(copies)
    return moments


def training_phases(
    spec: ModelSpec, training: TrainingSpec, trainable: TrainableParams, micro_batch: int | None = None
) -> TrainingPhases:
    """Each candidate peak as a breakdown: the moments inside backward, and the optimizer step.

    Inside backward: weights + states (not on the first step) + grads (when accumulating) + activations.
    Optimizer step: weights + gradients + states + the optimizer's temporaries.
    Source: two-phase form measured on this machine (DESIGN.md §4); ZeRO sharding §5 of arXiv:1910.02054.
    """
    pb = param_bytes(spec, training, trainable)
    states = _state_terms(spec, training, trainable, pb)
    held = ["weights/trainable", "weights/frozen", "optimizer/master_weights"]
    if not training.first_step:
        held.append("optimizer/states")
    if training.gradient_accumulation_steps > 1:
        held.append("gradients")
    base = [states[k] for k in held if k in states]
    phases = {
        name: breakdown(base + terms)
        for name, terms in _backward_moments(spec, training, trainable, micro_batch).items()
    }
    step = (
        "weights/trainable",
        "weights/frozen",
        "gradients",
        "optimizer/master_weights",
        "optimizer/states",
        "optimizer/temporaries",
    )
    phases["optimizer_step"] = breakdown(states[k] for k in step if k in states)
    return TrainingPhases(phases)
