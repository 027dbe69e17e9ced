"""Training memory per GPU: the largest of the candidate peaks inside backward and at the optimizer step.

Peak memory is a timeline, not a sum. Between the end of the forward pass and the optimizer step, memory
holds either all saved activations (start of backward) or all gradients (after backward); the sum of both is
never live at once (grads grow while activations shrink), so each candidate moment is sized on its own:
planner.training.backward_moments inside backward, the optimizer step here.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.explain import MemoryBreakdown, Term, breakdown
from planner.model.params import block_layout, count_params
from planner.model.spec import ModelSpec
from planner.training.activations import ALWAYS_SHARED_MLP  # 0 wide: empty weights, which AdamW gives a step counter
from planner.training.backward_moments import backward_moments
from planner.training.parallel import is_parallel, parallel_phases
from planner.training.peft_params import PeftModule, TrainableParams
from planner.training.spec import KernelDevice, TrainingSpec
from planner.training.state import ParamBytes, buffer_bytes, param_bytes, sharded

__all__ = ["TrainingPhases", "training_phases"]

ZERO_SOURCE = "ZeRO (Rajbhandari et al. 2020, arXiv:1910.02054) §3, §5: P_os, P_os+g, P_os+g+p"


@dataclass(frozen=True, slots=True)
class TrainingPhases:
    """Candidate peaks by moment ('loss_backward', 'last_block_backward', 'first_block_backward',
    'moe_start_backward' (the first MoE layer after dense ones), 'embedding_backward', 'attention_backward',
    'final_norm_backward', 'forward' (the last block's LoRA MLP linear, no checkpointing),
    'optimizer_step'), each a breakdown of bytes per GPU."""

    phases: dict[str, MemoryBreakdown]

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda name: self.phases[name].total_bytes)

    @property
    def peak(self) -> MemoryBreakdown:
        return self.phases[self.peak_phase]


def _module_largest_tensor(m: PeftModule) -> int:
    """Elements of the largest tensor peft gives one adapted module: LoRA's A (r·d_in) or B (d_out·r), per expert
    stack E·r·d; a prefix or prompt embedding whole; the prefix MLP's weight d_in·d_out; an IA3 vector."""
    per_layer = m.trainable_params // m.layers
    if m.rank:
        return per_layer * max(m.d_in, m.d_out) // (m.d_in + m.d_out)
    if m.name.startswith("prefix_encoder.transform"):
        return m.d_in * m.d_out
    if m.name == "adapter":
        return m.d_in * m.d_out
    return per_layer if m.layers > 1 and m.name != "prefix_encoder" else m.trainable_params


# transformers builds these linears as one parameter: Phi-3's qkv_proj and gate_up_proj (Phi3Attention registers
# o_proj first), every grouped-mm MoE's experts.gate_up_proj [E, 2·f_e, h] (MixtralExperts and the like)
FUSED_PARAMETERS = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj"),
                    "experts.gate_up_proj": ("experts.gate_proj", "experts.up_proj")}  # fmt: skip
FUSED_PARAMETER_FAMILIES = frozenset({"phi3"})


def _block_tensors(spec: ModelSpec, moe_layer: bool) -> list[int]:
    """Elements of a block's parameter tensors in transformers' registration order: attention, MLP, norms."""
    layout = block_layout(spec, moe_layer)
    fused = {
        name: parts
        for name, parts in FUSED_PARAMETERS.items()
        if name.startswith("experts.") or spec.family in FUSED_PARAMETER_FAMILIES
    }
    attention = list(layout.attention)
    if spec.family in FUSED_PARAMETER_FAMILIES:
        attention = [lin for lin in attention if lin.name == "o_proj"] + [
            lin for lin in attention if lin.name != "o_proj"
        ]
    out: list[int] = []
    pending = 0  # the parts of a fused parameter seen so far
    for lin in (*attention, *layout.mlp):
        group = next((parts for parts in fused.values() if lin.name in parts), None)
        pending += lin.weight_params
        if group is not None and lin.name != group[-1]:
            continue
        out += [pending, *([lin.bias_params] if lin.bias else [])]
        pending = 0
    return out + [spec.hidden_size] * spec.norms_per_layer


def _block_tensor_count(spec: ModelSpec, moe_layer: bool) -> int:
    """Parameter tensors of one block: its (fused) weights and biases, each hidden-width norm's weight [and bias],
    the q/k norms (Qwen3: q_norm, k_norm) or MLA's q_a/kv_a norms, and gpt-oss's sinks."""
    attention_norms = (1 + bool(spec.mla.q_lora_rank)) if spec.mla is not None else 2 if spec.qk_norm else 0
    norm_biases = spec.norms_per_layer if spec.norm_bias else 0
    return (
        len(_block_tensors(spec, moe_layer))
        + norm_biases
        + attention_norms
        + int(spec.attention_sinks)
        + _empty_shared_mlp_tensors(spec, moe_layer)
    )


GATED_MLP_WEIGHTS = 3  # gate_proj, up_proj, down_proj


def _empty_shared_mlp_tensors(spec: ModelSpec, moe_layer: bool) -> int:
    """Parameter tensors of a 0-wide shared MLP the planner's layout leaves out (no parameters)."""
    moe = spec.moe
    if moe is None or not moe_layer or spec.family not in ALWAYS_SHARED_MLP or moe.shared_expert_ffn_dim:
        return 0
    empty = 0 if spec.mlp_bias else GATED_MLP_WEIGHTS  # with biases the layout keeps the 0-wide MLP
    gate = int(spec.family == "qwen2_moe" and not moe.shared_expert_gate)
    return empty + gate


def parameter_tensors(spec: ModelSpec, full: bool, trainable: TrainableParams) -> int:
    """Trainable parameter tensors, as torch.optim holds them: every tensor of the model for full fine-tuning
    (embedding, [learned positions], blocks, final norm [+ bias], lm_head unless tied), else peft's adapter tensors
    (PeftModule.tensors)."""
    if not full:
        return sum(m.tensors for m in trainable.modules)
    blocks = sum(
        _block_tensor_count(spec, bool(spec.moe and spec.moe.is_moe_layer(layer))) for layer in range(spec.num_layers)
    )
    outer = 1 + int(spec.learned_positions) + 1 + int(spec.norm_bias) + int(not spec.tie_embeddings)
    return outer + blocks


# transformers 5.23 registers these MoE blocks' experts before their router (Qwen3MoeSparseMoeBlock, DeepseekV3MoE,
# ...); Mixtral the router first (MixtralSparseMoeBlock)
ROUTER_FIRST_FAMILIES = frozenset({"mixtral", "minimax_m2"})
ROUTER_MODULE = "gate.weight"


def _lora_for_loop_temporaries(spec: ModelSpec, trainable: TrainableParams) -> int:
    """The for-loop AdamW's 2·n_i + n_(i−1) over LoRA's tensors in the model's parameter order: per module lora_A
    (r·d_in; E·r'·d_in for an expert stack) then lora_B (d_out·r), modules in a block's order (the experts' nested
    ParamWrappers gate_up_proj then down_proj, after the router in Mixtral, before it elsewhere), block after block.
    Source: torch 2.13 torch/optim/adam.py `_single_tensor_adam`; peft 0.21.2 ParamWrapper (the inner wrapper's
    base_layer registers first); measured by the cpu probe (tests/models/test_training_misses.py)."""
    modules = [m for m in trainable.modules if m.rank]
    if spec.family not in ROUTER_FIRST_FAMILIES:  # the experts before the router
        modules = [m for m in modules if m.name != ROUTER_MODULE] + [m for m in modules if m.name == ROUTER_MODULE]
    tensors: list[int] = []
    for m in modules:
        per_rank = m.trainable_params // m.layers // (m.d_in + m.d_out)  # r, or E·r' for an expert stack
        tensors += [per_rank * m.d_in, per_rank * m.d_out]
    if not tensors:
        return 0
    previous = [tensors[-1] if any(m.layers > 1 for m in modules) else 0, *tensors[:-1]]
    return max(2 * n + before for n, before in zip(tensors, previous, strict=True))


def _for_loop_temporaries(spec: ModelSpec, full: bool, trainable: TrainableParams) -> int:
    """Elements alive at once in the for-loop AdamW: the square root and the quotient of one tensor's denominator
    while the previous tensor's `denom` is still bound, max over the tensors of 2·n_i + n_(i−1) (full fine-tuning,
    in transformers' parameter order: embedding, blocks, final norm, lm_head); the same over LoRA's tensors
    (_lora_for_loop_temporaries) and 2·the largest tensor of other peft methods.
    Source: torch 2.13 torch/optim/adam.py `_single_tensor_adam` (`denom = (exp_avg_sq.sqrt() / ...).add_(...)`, a
      local rebound per tensor); transformers 5.23 Phi3Attention, Phi3MLP, MixtralExperts (fused parameters);
      measured by the cpu probe (tests/models/test_training_misses.py)."""
    if not full:
        others = [_module_largest_tensor(m) for m in trainable.modules if not m.rank]
        return max(2 * max(others, default=0), _lora_for_loop_temporaries(spec, trainable))
    table = spec.vocab_size * spec.hidden_size
    tensors = [table]
    for layer in range(spec.num_layers):
        tensors += _block_tensors(spec, bool(spec.moe and spec.moe.is_moe_layer(layer)))
    tensors += [spec.hidden_size, *([] if spec.tie_embeddings else [table])]
    return max(2 * n + previous for n, previous in zip(tensors, [0, *tensors[:-1]], strict=True))


def _optimizer_temporaries(spec: ModelSpec, t: TrainingSpec, tp: TrainableParams) -> int:
    """Elements of the temporaries the optimizer step allocates beside its state.

    torch AdamW foreach: one tensor per parameter (the denominator exp_avg_sq.sqrt() / bias correction + ε); for-loop:
    the square root and the quotient of one tensor beside the previous tensor's denominator (_for_loop_temporaries,
    measured by the probe grid and campaign); fused: none.
    torch SGD updates in place (foreach or not, ± momentum: param.add_(buf or grad, alpha=−lr)): none. 8-bit AdamW
    (bitsandbytes) updates block-wise in its kernel: none.
    Source: torch/optim/adamw.py `_multi_tensor_adamw`, `_single_tensor_adamw`; torch/optim/sgd.py
      `_multi_tensor_sgd`, `_single_tensor_sgd` (torch 2.13); measured by the probes.
    Assumes: SGD without Nesterov (whose update allocates grad + momentum·buf).
    """
    if t.optimizer.kind != "adamw":
        return 0
    impl = t.optimizer.implementation
    if impl == "foreach":
        return tp.trainable
    return _for_loop_temporaries(spec, t.method.kind == "full", tp) if impl == "for_loop" else 0


STEP_COUNT_BYTES = 4  # torch.optim's `step` is a 0-d fp32 tensor (optimizer.py `_get_scalar_dtype`)


def _step_count_bytes(spec: ModelSpec, t: TrainingSpec, tp: TrainableParams) -> int:
    """AdamW's step counters on the device: one 0-d fp32 tensor per parameter tensor, on the parameter's device when
    fused (or capturable), on the CPU otherwise; SGD and bitsandbytes' 8-bit AdamW (a Python int) keep none.

    Formula: n_tensors·4 where the counters live on the device, else 0.
    Source: torch 2.13 torch/optim/adam.py `Adam._init_group` ("Deliberately host `step` on CPU if both capturable
      and fused are off": torch.tensor(0.0, device="cpu"), else torch.zeros((), device=p.device)).
    Assumes: not capturable (torch's default).
    """
    on_device = t.device is KernelDevice.CPU or t.optimizer.implementation == "fused"
    if t.optimizer.kind != "adamw" or not on_device:
        return 0
    return parameter_tensors(spec, t.method.kind == "full", tp) * STEP_COUNT_BYTES


def _state_terms(spec: ModelSpec, t: TrainingSpec, tp: TrainableParams, pb: ParamBytes) -> dict[str, Term]:
    """Weights, buffers, gradients, optimizer states, step counters and temporaries on one GPU, with ZeRO sharding."""
    n, dp, z = tp.trainable, t.data_parallel, t.zero_stage
    temp = _optimizer_temporaries(spec, t, tp) * pb.state_elem
    steps = _step_count_bytes(spec, t, tp)
    shard = f" ÷ DP={dp}" if dp > 1 else ""
    rows = {
        "weights/trainable": (n * pb.weight, z >= 3, "N_train·b_w", f"{n:,} params × {pb.weight} B"),
        "weights/frozen": (pb.frozen_bytes, z >= 3, "N_frozen·b_w (NF4 linears for QLoRA)", "frozen base"),
        "weights/buffers": (
            buffer_bytes(spec, t),
            False,
            "RoPE inv_freq + original_inv_freq (fp32) [+ embed_scale, router biases]",
            "the model's buffers",
        ),
        "gradients": (n * pb.grad, z >= 2, "N_train·b_g", f"{n:,} × {pb.grad} B"),
        "optimizer/master_weights": (n * pb.master, z >= 1, "N_train·4", f"fp32 master copy, {pb.master} B/param"),
        "optimizer/states": (n * pb.state, z >= 1, "N_train·states·b_s", f"{t.optimizer.kind}: {pb.state:g} B/param"),
        "optimizer/step_counts": (
            steps,
            z >= 1,
            "n_tensors·4 (one fp32 step per parameter tensor, on the device when fused or on the CPU)",
            f"{steps // STEP_COUNT_BYTES:,} step tensors",
        ),
        "optimizer/temporaries": (
            temp,
            z >= 1,
            "AdamW foreach: N_train·b_s; for-loop: max(2·n_i + n_(i−1))·b_s; fused, SGD, 8-bit: 0",
            f"{t.optimizer.implementation} implementation",
        ),
    }
    return {
        name: Term(
            name=name,
            bytes=sharded(nbytes, dp, is_sharded),
            formula=formula + (shard if is_sharded else ""),
            detail=detail,
            source=ZERO_SOURCE if is_sharded else "derived here (torch.optim state layout)",
        )
        for name, (nbytes, is_sharded, formula, detail) in rows.items()
        if nbytes
    }


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
    held = ["weights/trainable", "weights/frozen", "weights/buffers", "optimizer/master_weights"]
    if not training.first_step:
        held += ["optimizer/states", "optimizer/step_counts"]
    if training.gradient_accumulation_steps > 1:
        held.append("gradients")
    base = [states[k] for k in held if k in states]
    phases = {
        name: breakdown(base + terms)
        for name, terms in backward_moments(spec, training, trainable, micro_batch).items()
    }
    step = (
        "weights/trainable",
        "weights/frozen",
        "weights/buffers",
        "gradients",
        "optimizer/master_weights",
        "optimizer/states",
        "optimizer/step_counts",
        "optimizer/temporaries",
    )
    phases["optimizer_step"] = breakdown(states[k] for k in step if k in states)
    if training.offload_optimizer:
        phases = {name: _offloaded(p) for name, p in phases.items()}
    if is_parallel(training):
        phases = parallel_phases(count_params(spec), training, phases)
    return TrainingPhases(phases)


OFFLOADED = frozenset(
    {"optimizer/master_weights", "optimizer/states", "optimizer/step_counts", "optimizer/temporaries"}
)


def _offloaded(phase: MemoryBreakdown) -> MemoryBreakdown:
    """ZeRO-Offload keeps the fp32 master weights and the Adam states in CPU memory and steps there; the GPU keeps
    the 16-bit weights and gradients until they are copied out.
    Source: Ren et al. 2021, ZeRO-Offload (arXiv:2101.06840) §4.1 (the offload strategy: fp32 parameters, momentum
      and variance on the CPU, fp16 parameters and gradients on the GPU)."""
    return breakdown(t for t in phase.terms if t.name not in OFFLOADED)
