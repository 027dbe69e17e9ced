"""The candidate peaks inside backward: which tensors are alive at each moment, as explainable terms.

loss_backward (every saved tensor and the cross-entropy gradients), the last block's backward, block 0's (every
other gradient already produced), the eager or math attention backward, and the embedding's at the end of backward.
What a block's backward adds to its saved tensors is planner.training.block_backward's.
"""

from __future__ import annotations

from planner.explain import Term
from planner.model.params import block_layout, count_params
from planner.model.spec import ModelSpec
from planner.training.activations import (
    PRE_MLP_PREFIXES,
    SavedActivations,
    SavedLedger,
    TrainShapes,
    attention_backward_temporaries,
    model_saved_bytes,
    recomputed_bytes,
    rope_table_bytes,
)
from planner.training.attention_core import attention_kernel_locals, prefix_cache_unsaved_bytes
from planner.training.block_backward import block_backward, forward_peak
from planner.training.forward_moments import checkpointed_loss_forward
from planner.training.norm_backward import norm_backward_bytes
from planner.training.peft_params import TrainableParams, block_trainable_params
from planner.training.spec import AttentionImpl, Checkpointing, TrainingSpec
from planner.training.state import layer_grads, param_bytes, sharded, train_shapes

__all__ = ["CHECKPOINT_INPUTS_TERM", "LOSS_TERM", "backward_moments"]

INT64_BYTES = 8
FP32_BYTES = 4
AUTOCAST_BYTES = 2  # torch.autocast(bf16) casts
CHECKPOINT_INPUTS_TERM = "activations/checkpoint_inputs"  # held by checkpoints, not saved by autograd
LOSS_TERM = "activations/loss"  # the loss scalar and backward's seed gradient, not saved by autograd
LOSS_TENSORS = 2  # the fp32 loss and its ones_like seed
LOGITS_GRAD_BUFFERS = 2  # fp32 gradients of log-probs and of the upcast logits, live at once in backward
SAVED_SOURCE = "derived here from the tensors autograd saves (planner.training.activations)"
# models that build the causal and the sliding-window mask whatever their layers use (transformers 5.23
# Gemma2Model.forward, Gemma3TextModel.forward, GptOssModel.forward: both in `causal_mask_mapping`; eager
# materializes each, the probe's Gemma-2 config keeps Gemma2Config's 4096-token window where the spec has none)
BOTH_MASKS_FAMILIES = frozenset({"gemma2", "gemma3_text", "gpt_oss"})
# models that build both masks whatever their layers use, though all their layers use the causal one (transformers
# 5.23 Qwen2MoeModel.forward: `causal_mask_mapping` always holds both): the forward holds both through its layers,
# the checkpoints only the causal one (measured: eager Qwen2-MoE without checkpointing, a second p·b·s·s mask)
FORWARD_BOTH_MASKS_FAMILIES = frozenset({"qwen2_moe"})


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
    nbytes = sharded(n * param_bytes(spec, t, tp).grad, t.data_parallel, t.zero_stage >= 2)
    return Term(
        name="gradients/lm_head_and_final_norm",
        bytes=nbytes,
        formula="(V·h + h)·b_g",
        detail="produced before the last block's backward",
        source="derived here (backward order)",
    )


def _tied_head_pending(spec: ModelSpec, t: TrainingSpec, tp: TrainableParams) -> Term | None:
    """Accumulating with a tied lm_head (full fine-tuning): lm_head's new gradient waits in autograd's input buffer
    of the shared weight until the embedding's backward adds its own (planner.training.memory counts the held
    gradients, not this one), through every block's backward.
    Source: torch autograd InputBuffer (one AccumulateGrad node per leaf, run once all its inputs arrived); measured
    by the cpu probe (tests/models/test_training_misses_9.py)."""
    if t.method.kind != "full" or t.gradient_accumulation_steps == 1 or not spec.tie_embeddings:
        return None
    nbytes = sharded(
        spec.vocab_size * spec.hidden_size * param_bytes(spec, t, tp).grad, t.data_parallel, t.zero_stage >= 2
    )
    return Term(
        name="gradients/tied_lm_head_pending",
        bytes=nbytes,
        formula="V·h·b_g",
        detail="lm_head's new gradient, waiting for the tied embedding's",
        source="derived here (torch autograd InputBuffer); measured by the cpu probe (models/)",
    )


def _mask_kinds(spec: ModelSpec, shp: TrainShapes) -> tuple[bool, bool]:
    """(full-attention layers, sliding-window layers whose window is not longer than the keys) in the model:
    transformers 5.23 masking_utils skips the SDPA window mask only where kv_length < sliding_window."""
    s_k = shp.seq + shp.prefix_tokens
    windows = [spec.sliding_window if spec.uses_sliding_window(i) else None for i in range(spec.num_layers)]
    return any(w is None for w in windows), any(w is not None and w <= s_k for w in windows)


def _checkpoint_inputs(spec: ModelSpec, t: TrainingSpec, shp: TrainShapes) -> Term | None:
    """Full checkpointing: each block's checkpoint holds its inputs through backward, the shared ones too.

    The RoPE cos/sin tables (2·p·s·d_R; fp32 under autocast), the position ids (8·s) and the attention masks:
    eager's 4-D additive masks, p·b·s·s_k for each kind its layers use (causal; sliding window when the window
    is shorter than the keys, both for Gemma-2's alternating layers); SDPA runs full layers causal without a
    mask, and window layers with one boolean s·s_k mask shared over the batch. Prompt tuning: the word
    embeddings the soft prompt is concatenated with, p·b·s_text·h (p = 4 under autocast: the table is fp32).
    Source: transformers 5 masking_utils (create_causal_mask, create_sliding_window_causal_mask, sdpa_mask);
      measured by the probe grid and campaign (models/: live storages of checkpointed steps).
    """
    if t.gradient_checkpointing is not Checkpointing.FULL:
        return None
    p = shp.residual_bytes  # the word embeddings' dtype: fp32 under autocast (an fp32 embedding table)
    rope = rope_table_bytes(spec, shp)
    positions = INT64_BYTES * shp.seq
    mask, mask_formula = _attention_masks(spec, shp)
    # peft methods make the input embeddings require grad: a graph leaf; prompt tuning then concatenates
    prompt = t.method.kind == "prompt"
    words = p * _text_tokens(t, shp) * spec.hidden_size if prompt else 0
    return Term(
        name=CHECKPOINT_INPUTS_TERM,
        bytes=rope + positions + mask + words,
        formula="2·p·s·d_R + 8·s" + mask_formula + (" + p·b·s_text·h" if prompt else ""),
        detail=f"RoPE tables {rope:,} B, position ids {positions:,} B"
        + (f", attention masks {mask:,} B" if mask else "")
        + (f", word embeddings before the soft prompt {words:,} B" if prompt else ""),
        source="derived here; measured by the probe grid (models/) on checkpointed steps",
    )


def _attention_masks(spec: ModelSpec, shp: TrainShapes, in_forward: bool = False) -> tuple[int, str]:
    """The masks the model builds once for its layers: eager's 4-D additive masks, p·b·s·s_k for each kind its
    layers use (both for BOTH_MASKS_FAMILIES, and `in_forward` for FORWARD_BOTH_MASKS_FAMILIES), in the embeddings'
    dtype (p = 4 under autocast, whose embedding output is fp32: transformers 5.23 masking_utils takes
    `inputs_embeds.dtype`); SDPA's one boolean s·s_k mask for window layers shorter than the keys (none for full
    layers)."""
    p, s_k = shp.residual_bytes, shp.seq + shp.prefix_tokens  # the masks take the embeddings' dtype
    full_layers, window_layers = _mask_kinds(spec, shp)
    if shp.attention is AttentionImpl.EAGER:
        both = spec.family in BOTH_MASKS_FAMILIES or (in_forward and spec.family in FORWARD_BOTH_MASKS_FAMILIES)
        windows = both or any(spec.uses_sliding_window(i) for i in range(spec.num_layers))
        kinds = int(full_layers or both) + int(windows)
        return kinds * p * shp.batch * shp.seq * s_k, f" + {kinds}·p·b·s·s_k"
    return (shp.seq * s_k, " + s·s_k") if window_layers else (0, "")


def _forward_moment(
    spec: ModelSpec, t: TrainingSpec, tp: TrainableParams, shp: TrainShapes, a: SavedActivations, blocks: Term
) -> list[Term] | None:
    """The forward's own peak inside the last block (planner.training.block_backward.forward_peak), without
    checkpointing: every block's saved tensors, what outside the blocks is saved before them (RoPE tables, a
    soft prompt's indices, a prefix MLP's), the position ids (8·s) and attention masks the model holds through
    its layers, and the block's live locals. None where block_backward models no such moment.
    Source: transformers 5.23 LlamaModel.forward (position_ids, the causal mask and the rotary tables are made
      once before the layers); measured by the cpu probe (tests/models/test_training_misses.py).
    """
    if t.gradient_checkpointing is not Checkpointing.NONE:
        return None
    grads = layer_grads(t, tp)
    peak = forward_peak(
        spec, shp, grads, a.last_ledger, moe_layer=a.last_moe, layers=spec.num_layers, first_saved=a.first_ledger
    )
    if peak is None:
        return None
    before = {k: v for k, v in a.outer.items() if k in OUTER_THROUGH_BLOCKS and not k.startswith("loss/")}
    mask, mask_formula = _attention_masks(spec, shp, in_forward=True)
    positions = INT64_BYTES * shp.seq
    src = "derived here (planner.training.block_backward.forward_peak); measured by the cpu probe (models/)"
    return [
        blocks,
        Term(
            name="activations/outside_blocks_before",
            bytes=sum(before.values()),
            formula="RoPE tables, soft-prompt indices, prefix MLP",
            detail=_top(before),
            source=SAVED_SOURCE,
        ),
        Term(
            name="activations/forward_inputs",
            bytes=positions + mask,
            formula="8·s" + mask_formula,
            detail=f"position ids {positions:,} B" + (f", attention masks {mask:,} B" if mask else ""),
            source=src,
        ),
        Term(
            name="activations/forward_temporaries",
            bytes=peak.bytes,
            formula=peak.formula,
            detail="the last block's down_proj, at lora_B's scaled output",
            source=src,
        ),
    ]


def _attention_forward(
    spec: ModelSpec, t: TrainingSpec, shp: TrainShapes, a: SavedActivations, earlier: Term
) -> list[Term] | None:
    """Without checkpointing, the forward at the end of the last block's SDPA math kernel: the earlier blocks'
    saved tensors, the last block's up to its attention core (their own, and the kernel's q, k, v and
    probabilities), what outside the blocks is saved before them, the position ids (8·s) and masks, the
    embedding output and the block input the model's loop holds (p·T·h each, unless the block's fp32 input norm
    keeps its input), the attention module's and kernel's locals (attention_core.attention_kernel_locals), and
    for prompt tuning peft's locals: the soft prompt cast to the embeddings' dtype (p·b·n_v·h), the labels with
    the virtual tokens' -100 (8·b·s) and those -100s (8·b·n_v). Sets the peak where s² is large next to the
    vocabulary and the hidden size. None where no such moment is modelled.
    Source: transformers 5.23 DeepseekV2Model.forward, LlamaModel.forward; peft 0.21.2 PeftModelForCausalLM.forward
      (prompt tuning: torch.cat of the prompts and of the prefix labels); measured by the cpu probe (the storages
      live at the forward's peak op, tests/models/test_training_misses_12.py)."""
    if t.gradient_checkpointing is not Checkpointing.NONE:
        return None
    local_bytes, formula = attention_kernel_locals(spec, shp, a.last_ledger)
    if not local_bytes:
        return None
    p, h = shp.act_bytes, spec.hidden_size
    through = {k: v for k, v in a.last_ledger.items() if k.startswith(PRE_MLP_PREFIXES)}
    before = {k: v for k, v in a.outer.items() if k in OUTER_THROUGH_BLOCKS and not k.startswith("loss/")}
    mask, mask_formula = _attention_masks(spec, shp, in_forward=True)
    inputs, inputs_formula = INT64_BYTES * shp.seq + mask, "8·s" + mask_formula
    if t.method.kind == "prompt":
        n_v = shp.virtual_tokens
        inputs += p * shp.batch * n_v * h + INT64_BYTES * shp.batch * (shp.seq + n_v)
        inputs_formula += " + p·b·n_v·h + 8·b·s + 8·b·n_v"
    held = 0 if shp.residual_bytes == FP32_BYTES else (1 if spec.num_layers == 1 else 2) * p * shp.tokens * h
    src = "derived here (planner.training.attention_core.attention_kernel_locals); measured by the cpu probe"
    return [
        earlier,
        Term(
            name="activations/last_block_through_attention",
            bytes=sum(through.values()),
            formula="the last block's saved tensors up to its attention core",
            detail=_top(SavedLedger(through)),
            source=SAVED_SOURCE,
        ),
        Term(
            name="activations/outside_blocks_before",
            bytes=sum(before.values()),
            formula="RoPE tables, soft-prompt indices",
            detail=_top(before),
            source=SAVED_SOURCE,
        ),
        Term(
            name="activations/forward_inputs",
            bytes=inputs,
            formula=inputs_formula,
            detail="position ids, attention masks, prompt tuning's cast prompts and labels",
            source=src,
        ),
        Term(
            name="activations/forward_temporaries",
            bytes=held + local_bytes,
            formula="2·p·T·h + " + formula,
            detail="the embedding output, the last block's input, its attention's locals at the math kernel's end",
            source=src,
        ),
    ]


def _text_tokens(t: TrainingSpec, shp: TrainShapes) -> int:
    """Tokens of the batch itself: prompt tuning's rows also hold the virtual tokens."""
    return shp.batch * (shp.seq - (shp.virtual_tokens if t.method.kind == "prompt" else 0))


def _block_backward_terms(
    spec: ModelSpec, t: TrainingSpec, tp: TrainableParams, shp: TrainShapes, saved: SavedLedger, moe: bool, which: str
) -> list[Term]:
    """The gradient entering a block (p·T·h) and what its backward holds at its peak (training.block_backward)."""
    grad_bytes = param_bytes(spec, t, tp).grad
    recomputed = t.gradient_checkpointing is Checkpointing.FULL
    peak = block_backward(
        spec,
        shp,
        layer_grads(t, tp),
        saved,
        moe_layer=moe,
        recomputed=recomputed,
        grad_bytes=grad_bytes,
        accumulating=t.gradient_accumulation_steps > 1,
    )
    src = "derived here (planner.training.block_backward); measured by the probe grid (models/)"
    return [
        Term(
            name="activations/block_output_grad",
            bytes=shp.residual_bytes * shp.tokens * spec.hidden_size,
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


def _outside_blocks_kept(a: SavedActivations) -> Term:
    """What outside the blocks is still alive once backward reaches them (OUTER_THROUGH_BLOCKS; the RoPE tables
    are in the ledger only without full checkpointing, else they are checkpoint inputs)."""
    kept = {k: v for k, v in a.outer.items() if k in OUTER_THROUGH_BLOCKS}
    return Term(
        name="activations/outside_blocks_kept",
        bytes=sum(kept.values()),
        formula="RoPE tables, labels, soft-prompt indices",
        detail=_top(kept),
        source=SAVED_SOURCE,
    )


def _first_block_backward(
    spec: ModelSpec, t: TrainingSpec, tp: TrainableParams, shp: TrainShapes, a: SavedActivations
) -> list[Term]:
    """Block 0 (processed last), with every later gradient already produced.

    Gradients live: all trainable but block 0's and the embedding's; block 0's saved tensors (under full
    checkpointing: its input and the recomputed block); the gradient entering it and its backward's own
    temporaries (planner.training.block_backward). Matters when weights are large next to activations (MoE experts,
    few tokens): the gradients have grown to nearly all of them.
    When accumulating, every gradient is held already (the phase's base), and none is counted here.
    Source: measured by the probe grid (models/, live storages at the peak of backward).
    """
    pb = param_bytes(spec, t, tp)
    params = count_params(spec)
    if t.method.kind == "full":
        first_layer = params.layers[0].params_per_layer
        grads = (params.total - params.embedding * (0 if spec.tie_embeddings else 1) - first_layer) * pb.grad
    else:
        grads = tp.trainable * pb.grad * (spec.num_layers - 1) // spec.num_layers
    src = "derived here; measured by the probe grid (models/)"
    produced = [
        Term(
            name="gradients/all_but_first_block",
            bytes=sharded(grads, t.data_parallel, t.zero_stage >= 2),
            formula="(N_train − block 0 − embedding)·b_g",
            detail="produced before block 0's backward",
            source=src,
        )
    ][: 1 if t.gradient_accumulation_steps == 1 else 0]
    own = _block_backward_terms(spec, t, tp, shp, a.first_ledger, a.first_moe, "block 0")
    if not a.recomputed_block:
        return [
            *produced,
            Term(
                name="activations/first_block",
                bytes=a.first_ledger.total,
                formula="block 0's saved tensors",
                detail=_top(a.first_ledger),
                source=SAVED_SOURCE,
            ),
            _outside_blocks_kept(a),
            *own,
        ]
    return [
        *produced,
        Term(
            name="activations/first_block_input",
            bytes=shp.residual_bytes * shp.tokens * spec.hidden_size,
            formula="p·T·h",
            detail="the checkpoint input of block 0",
            source=src,
        ),
        Term(
            name="activations/recomputed_block",
            bytes=recomputed_bytes(a.first_ledger, shp),
            formula="one block's saved tensors",
            detail="block 0, recomputed: " + _top(a.first_ledger),
            source="Chen et al. 2016 (arXiv:1604.06174) §3",
        ),
        _outside_blocks_kept(a),
        *own,
    ]


def _later_blocks_grads(spec: ModelSpec, t: TrainingSpec, tp: TrainableParams, block: int) -> int:
    """Gradient bytes the blocks after `block` have produced (the lm_head's and final norm's are _head_gradients).
    Formula: Σ_{i > block} N_train(i)·b_g, N_train(i) the trainable parameters of block i's kind."""
    per_kind = {
        moe: (block_layout(spec, moe).params if t.method.kind == "full" else block_trainable_params(spec, tp, moe))
        for moe in (False, True)
    }
    later = sum(per_kind[bool(spec.moe and spec.moe.is_moe_layer(i))] for i in range(block + 1, spec.num_layers))
    return sharded(later * param_bytes(spec, t, tp).grad, t.data_parallel, t.zero_stage >= 2)


def _moe_start_backward(
    spec: ModelSpec, t: TrainingSpec, tp: TrainableParams, shp: TrainShapes, a: SavedActivations
) -> list[Term] | None:
    """The first MoE layer after dense ones (DeepSeek's first_k_dense_replace), neither block 0 nor the last: every
    later block's gradients are held, and its backward is an MoE layer's (the dense block 0's is lighter).

    Along one run of blocks of a kind, what a block's backward holds is linear in its index (gradients of the later
    blocks grow as the earlier blocks' saved tensors shrink), so its peak is at the run's first or last block: the
    last block and block 0 are their own candidates, this is the MoE run's first. Held: the later blocks'
    gradients (and the lm_head's, full fine-tuning; none counted when accumulating, as held already), the saved
    tensors of the blocks before it (their checkpoint inputs under full checkpointing), its own (its input and the
    recomputed block), what outside the blocks is still alive, and its backward (planner.training.block_backward).
    Source: derived here (backward order); measured by the cpu probe (tests/models/test_training_misses_14.py).
    """
    if not a.moe_start or t.gradient_checkpointing is Checkpointing.SELECTIVE:
        return None
    k, ledger = a.moe_start, a.moe_start_ledger
    src = "derived here; measured by the cpu probe (models/)"
    produced = []
    if t.gradient_accumulation_steps == 1:
        produced.append(
            Term(
                name="gradients/later_blocks",
                bytes=_later_blocks_grads(spec, t, tp, k),
                formula="Σ_{i > k} N_train(i)·b_g",
                detail=f"produced by blocks {k + 1}..{spec.num_layers - 1} before block {k}'s backward",
                source=src,
            )
        )
        head = _head_gradients(spec, t, tp)
        produced += [head] if head else []
    earlier = Term(
        name="activations/earlier_blocks",
        bytes=a.before_moe_start,
        formula="Σ_{i < k} saved tensors (checkpoint inputs)",
        detail=f"blocks 0..{k - 1}",
        source=SAVED_SOURCE,
    )
    if a.recomputed_block:
        own = [
            Term(
                name="activations/block_input",
                bytes=shp.residual_bytes * shp.tokens * spec.hidden_size,
                formula="p·T·h",
                detail=f"the checkpoint input of block {k}",
                source=src,
            ),
            Term(
                name="activations/recomputed_block",
                bytes=recomputed_bytes(ledger, shp),
                formula="one block's saved tensors",
                detail=f"block {k}, recomputed: " + _top(ledger),
                source="Chen et al. 2016 (arXiv:1604.06174) §3",
            ),
        ]
    else:
        own = [
            Term(
                name="activations/block",
                bytes=ledger.total,
                formula="the block's saved tensors",
                detail=f"block {k}: " + _top(ledger),
                source=SAVED_SOURCE,
            )
        ]
    rest = [_outside_blocks_kept(a), *_block_backward_terms(spec, t, tp, shp, ledger, True, f"block {k}")]
    return [*produced, earlier, *own, *rest]


def _last_block_backward(
    spec: ModelSpec, t: TrainingSpec, tp: TrainableParams, shp: TrainShapes, a: SavedActivations, earlier: Term
) -> list[Term]:
    """The last block's backward: earlier blocks' saved tensors (or checkpoint inputs), the last block's
    (recomputed under full checkpointing), what outside the blocks is still alive, and the block's own
    backward (planner.training.block_backward). Selective recomputation is not modelled at this moment."""
    src = SAVED_SOURCE
    if a.recomputed_block:
        own = Term(
            name="activations/recomputed_block",
            bytes=a.recomputed_block,
            formula="one block's saved tensors",
            detail="the last block, recomputed for its backward",
            source="Chen et al. 2016 (arXiv:1604.06174) §3",
        )
    else:
        own = Term(
            name="activations/last_block",
            bytes=a.last_block,
            formula="the last block's saved tensors",
            detail=_top(a.last_ledger),
            source=src,
        )
    rest = [_outside_blocks_kept(a)]  # under full checkpointing the RoPE tables are checkpoint inputs instead
    return [earlier, own, *rest, *_block_backward_terms(spec, t, tp, shp, a.last_ledger, a.last_moe, "the last block")]


def _embedding_backward(spec: ModelSpec, t: TrainingSpec, tp: TrainableParams, shp: TrainShapes) -> list[Term]:
    """Full fine-tuning, the end of backward: every gradient exists but the embedding's, being produced.

    Two moments. The embedding backward's output: its new V·h·b_g gradient while the gradient entering it (p·T·h;
    fp32 under autocast, whose residual stream is fp32) is alive. Then its accumulation: a tied lm_head's
    gradient waits in autograd's input buffer and is summed with the embedding's out of place (both and their sum
    alive: two V·h beyond the final gradient); a gradient held from an earlier micro-batch takes the new one in
    place (one V·h beyond it). Sets the peak when no optimizer temporaries outgrow it (SGD).
    Source: derived here (torch autograd InputBuffer::accumulate, AccumulateGrad, embedding_dense_backward);
      measured by the probes (models/).
    """
    pb = param_bytes(spec, t, tp)
    src = "derived here (backward order); measured by the probes (models/)"
    accumulating, tied = t.gradient_accumulation_steps > 1, spec.tie_embeddings
    table = sharded(spec.vocab_size * spec.hidden_size * pb.grad, t.data_parallel, t.zero_stage >= 2)
    incoming = shp.residual_bytes * shp.tokens * spec.hidden_size
    # beyond every final gradient: (output moment, accumulation moment)
    output = incoming + (table if tied else 0) + (table if accumulating else 0)
    summed = (2 * table if tied else 0) + (table if accumulating else 0)
    terms = [
        Term(
            name="activations/embedding_backward",
            bytes=max(output, summed),
            formula="max(p·T·h + V·h·b_g·(tied + accumulating), V·h·b_g·(2·tied + accumulating))",
            detail=f"the gradient entering the embedding {incoming:,} B; its new gradient"
            + (", summed with the tied lm_head's out of place" if tied else "")
            + (", added into the one held from earlier micro-batches" if accumulating else ""),
            source=src,
        )
    ]
    if not accumulating:  # else every gradient is held already
        terms.insert(
            0,
            Term(
                name="gradients/all",
                bytes=sharded(tp.trainable * pb.grad, t.data_parallel, t.zero_stage >= 2),
                formula="N_train·b_g",
                detail="every gradient, the embedding's being produced",
                source=src,
            ),
        )
    return terms


# the moments after lm_head's backward and before the embedding's
BLOCK_MOMENTS = frozenset(
    {"last_block_backward", "first_block_backward", "moe_start_backward", "attention_backward", "final_norm_backward"}
)
# outside-block tensors still alive when backward reaches the blocks (the loss's and lm_head's are freed, the
# shifted labels with the cross-entropy's node: transformers 5.23 loss/loss_utils.py ForCausalLMLoss; so is
# nll_loss's saved total_weight, `loss/scalar`: the loss itself and its seed are LOSS_TERM)
OUTER_THROUGH_BLOCKS = frozenset({"rope/cos_sin", "prompt_encoder/indices", "prefix_encoder/mlp"})


def _final_norm_backward(
    spec: ModelSpec, t: TrainingSpec, tp: TrainableParams, shp: TrainShapes, a: SavedActivations, blocks: Term
) -> list[Term] | None:
    """The final norm's backward, once the loss and lm_head backward have released theirs: every block's saved
    tensors (or checkpoint inputs), what outside the blocks is kept, the norm's fp32 input, lm_head's and the
    norm's gradients (full fine-tuning) and the RMSNorm backward's five fp32 T·h tensors
    (planner.training.norm_backward). None where the norm's input needs no grad. Sets the peak when the vocabulary
    is small next to the hidden size (5·4·T·h against the loss's 2·4·T·V).
    Source: derived here (planner.training.norm_backward); measured by the cpu probe (models/)."""
    if "final_norm/input_fp32" not in a.outer:
        return None
    kept = {k: v for k, v in a.outer.items() if k in OUTER_THROUGH_BLOCKS or k == "final_norm/input_fp32"}
    head_grads = _head_gradients(spec, t, tp)
    temps = norm_backward_bytes(shp, spec.hidden_size)
    return [
        blocks,
        *([head_grads] if head_grads else []),
        Term(
            name="activations/outside_blocks_kept",
            bytes=sum(kept.values()),
            formula="the final norm's fp32 input, RoPE tables, soft-prompt indices",
            detail=_top(kept),
            source=SAVED_SOURCE,
        ),
        Term(
            name="activations/norm_backward_temporaries",
            bytes=temps,
            formula="5·4·T·h",
            detail="the final RMSNorm's PowBackward: five fp32 T·h tensors",
            source="derived here (planner.training.norm_backward); measured by the cpu probe (models/)",
        ),
    ]


def _prefix_loss_forward(
    spec: ModelSpec, t: TrainingSpec, shp: TrainShapes, a: SavedActivations, blocks: Term
) -> list[Term] | None:
    """Prefix tuning without checkpointing: the forward's own peak, at the loss (nll_loss of the fp32 log-probs).
    Beyond every saved tensor (blocks and outside them):
    - the DynamicCache each layer's attention fills with cat(prefix, k) and cat(prefix, v), in c bytes (fp32 under
      autocast, where RoPE's k and the prefix are fp32; else p: peft casts the prefix to the model's dtype),
      2·L·c·b·n_kv·(P + s)·d_h, not saved (the attention keeps its own q, k, v);
    - the final norm's output, lm_head's input (r·T·h, r the residual stream's bytes; lm_head keeps its cast under
      autocast);
    - lm_head's logits (p·T·V) and, where they are not fp32, their fp32 copy (4·T·V; log_softmax keeps its output
      only);
    - the labels padded by one (8·b·(s + 1), when the shifted labels are a copy: b > 1) and the loss (4);
    - under autocast, its cached bf16 casts of the prefix MLP's trained biases (2·(e + L·2·t)), kept by its cast
      cache until autocast exits; the weights' casts are saved.
    Source: transformers 5.23 loss_utils.py ForCausalLMLoss, cache_utils.py DynamicLayer.update (torch.cat);
      peft 0.21.2 PrefixEncoder, PeftModelForCausalLM.get_prompt (`.to(base_model_torch_dtype)`); measured by the
      cpu probe (the storages live at the forward's peak op, tests/models/test_training_misses_8.py, _12.py)."""
    if not shp.prefix_tokens or t.gradient_checkpointing is not Checkpointing.NONE:
        return None
    fp32, tokens, h, v = FP32_BYTES, shp.tokens, spec.hidden_size, spec.vocab_size
    s_k = shp.seq + shp.prefix_tokens
    # block 0's q needs no grad (only the prefix, from its keys on, trains); the later blocks' inputs do
    cache = prefix_cache_unsaved_bytes(spec, shp, q_grad=False)
    cache += (spec.num_layers - 1) * prefix_cache_unsaved_bytes(spec, shp, q_grad=True)
    logits_fp32_copy = fp32 * tokens * v if shp.act_bytes != fp32 else 0
    logits = shp.act_bytes * tokens * v + logits_fp32_copy
    labels = INT64_BYTES * shp.batch * (shp.seq + 1) if shp.batch > 1 else 0
    t_dim, e = shp.prefix_mlp
    biases = AUTOCAST_BYTES * (e + spec.num_layers * 2 * t_dim) if t_dim and shp.autocast else 0
    return [
        blocks,
        Term(
            name="activations/outside_blocks",
            bytes=a.outer.total,
            formula="final norm, lm_head, log-probs, labels, prefix MLP",
            detail=_top(a.outer),
            source=SAVED_SOURCE,
        ),
        Term(
            name="activations/prefix_kv_cache",
            bytes=cache,
            formula="Σ_layers 2·c·b·n_kv·(P + s)·d_h, less what the attention saves",
            detail=f"cat(prefix, k), cat(prefix, v) of {spec.num_layers} layers no saved tensor views, P + s = {s_k}",
            source="transformers 5.23 cache_utils.py DynamicLayer.update; measured by the cpu probe",
        ),
        Term(
            name="activations/loss_forward_temporaries",
            bytes=shp.residual_bytes * tokens * h + logits + labels + fp32 + biases,
            formula="r·T·h + p·T·V + 4·T·V [p ≠ 4] + 8·b·(s + 1) [b > 1] + 4 + 2·(e + 2·L·t) [autocast]",
            detail="the final norm's output, the logits and their fp32 copy, padded labels, the loss, the prefix "
            "MLP's cached bias casts",
            source="transformers 5.23 loss_utils.py ForCausalLMLoss; measured by the cpu probe",
        ),
    ]


def _mlp_and_o_proj_grads(spec: ModelSpec, t: TrainingSpec, tp: TrainableParams, moe: bool) -> Term | None:
    """Full fine-tuning: the block's MLP, post-attention norm and o_proj gradients exist when its attention's
    backward runs (backward order). Not when accumulating: every gradient is held already (the phase's base) and
    AccumulateGrad adds the new ones into them in place (measured: tests/models/test_training_misses_14.py)."""
    if t.method.kind != "full" or t.gradient_accumulation_steps > 1:
        return None
    layout = block_layout(spec, moe)
    o_proj = sum(lin.params for lin in layout.attention if lin.name == "o_proj")
    n = layout.mlp_params + o_proj + spec.hidden_size
    return Term(
        name="gradients/block_mlp_and_o_proj",
        bytes=sharded(n * param_bytes(spec, t, tp).grad, t.data_parallel, t.zero_stage >= 2),
        formula="(MLP + o_proj + post-attention norm)·b_g",
        detail=f"{n:,} parameters of the block whose attention is differentiated",
        source="derived here (backward order); measured by the probe grid (models/)",
    )


def backward_moments(
    spec: ModelSpec, t: TrainingSpec, tp: TrainableParams, micro_batch: int | None
) -> dict[str, list[Term]]:
    """Activation terms at each candidate peak inside backward.

    loss_backward: every saved tensor + two fp32 T×V logits gradients (cross-entropy backward).
    last_block_backward: earlier blocks' tensors (block inputs when checkpointing) + the last block's saved
      (recomputed) tensors + its backward's temporaries; first_block_backward (full checkpointing): block 0
      recomputed with every later gradient produced.
    attention_backward (eager): the block's tensors up to attention + fp32 s² gradients.
    embedding_backward (full fine-tuning): every gradient + the gradient entering the embedding.
    forward (no checkpointing, LoRA on a dense MLP linear): every saved tensor + the last block's forward locals.
    Source: derived here; checked with torch.distributed._tools.mem_tracker on tiny transformers Llamas and by
    the probe grid (models/).
    """
    shp = train_shapes(spec, t, micro_batch)
    a = _saved(spec, t, tp, micro_batch)
    src = f"{SAVED_SOURCE}; Korthikanti et al. 2022 §4"
    blocks = Term(
        name="activations/blocks",
        bytes=a.blocks.total,
        formula="Σ_layers saved tensors",
        detail=f"b={shp.batch}, s={shp.seq}, {shp.attention} on {t.device}, checkpointing {t.gradient_checkpointing}: "
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
    if t.gradient_checkpointing is not Checkpointing.SELECTIVE:
        moments["first_block_backward"] = _first_block_backward(spec, t, tp, shp, a)
    moe_start = _moe_start_backward(spec, t, tp, shp, a)
    if moe_start:
        moments["moe_start_backward"] = moe_start
    if t.method.kind == "full":
        moments["embedding_backward"] = _embedding_backward(spec, t, tp, shp)
    final_norm = _final_norm_backward(spec, t, tp, shp, a, blocks)
    if final_norm:
        moments["final_norm_backward"] = final_norm
    forward = _forward_moment(spec, t, tp, shp, a, blocks)
    if forward:
        moments["forward"] = forward
    attention_forward = _attention_forward(spec, t, shp, a, earlier)
    if attention_forward:
        moments["attention_forward"] = attention_forward
    loss_forward = _prefix_loss_forward(spec, t, shp, a, blocks) or checkpointed_loss_forward(
        spec, t, tp, shp, a, blocks
    )
    if loss_forward:
        moments["loss_forward"] = loss_forward
    temps = attention_backward_temporaries(spec, shp)
    if temps:  # eager, SDPA math: the softmax backward of the block processed last (block 0 when checkpointed)
        held = (
            [
                term
                for term in moments["first_block_backward"]
                if term.name in ("gradients/all_but_first_block", "activations/first_block_input")
            ]
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
                detail=f"{shp.attention}: fp32 s² gradients, v's (b_v = 4 math, p eager), the block output's",
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
    loss = Term(
        name=LOSS_TERM,
        bytes=LOSS_TENSORS * 4,
        formula="2·4",
        detail="the fp32 loss and the ones_like gradient backward() seeds it with, alive through backward",
        source="transformers 5.23 loss_utils.py ForCausalLMLoss (logits.float()); torch 2.13 "
        "torch/autograd/__init__.py `_make_grads` (torch.ones_like(out))",
    )
    ckpt_inputs = _checkpoint_inputs(spec, t, shp)
    pending = _tied_head_pending(spec, t, tp)
    if pending:
        for name in BLOCK_MOMENTS & moments.keys():
            moments[name].append(pending)
    for name, terms in moments.items():
        if not (name == "loss_backward" and "embedding/input_ids" in a.outer):  # else saved by the embedding
            terms.append(ids)
        if name not in ("forward", "loss_forward", "attention_forward"):
            terms.append(loss)
        if ckpt_inputs:
            terms.append(ckpt_inputs)
    return moments
