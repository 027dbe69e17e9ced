"""The fine-tuning question end to end: does it fit, the largest micro-batch, what to change, how fast."""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter

from pydantic import Field

from planner._base import FrozenSpec
from planner.catalog import Catalog
from planner.explain import MemoryBreakdown
from planner.gpu_spec import GpuSpec
from planner.model.kv_cache import KVLayout
from planner.model.params import count_params
from planner.model.spec import ModelSpec
from planner.refs import GpuRef, ModelRef, ResolvedModel, resolve_gpu, resolve_model
from planner.serving.throughput import attention_flops
from planner.training.memory import training_phases
from planner.training.parallel import check_training_parallel
from planner.training.parallel_time import model_shard_fraction_for, parallel_times
from planner.training.peft_params import TrainableParams, trainable_params
from planner.training.spec import Checkpointing, Precision, TrainingSpec
from planner.training.state import train_shapes
from planner.training.suggestions import Suggestion, combined_suggestion, suggestions

__all__ = [
    "Suggestion",
    "TrainingEfficiency",
    "TrainingEstimate",
    "TrainingRequest",
    "TrainingThroughput",
    "estimate_training",
]

GIB = 1 << 30
MAX_MICRO_BATCH = 1 << 16
FORWARD_BACKWARD_EXPANSION = 3  # forward + backward (grad input + grad weight) = 3 forwards (Kaplan et al. §2.1)
FROZEN_BACKWARD_EXPANSION = 2  # frozen weights: backward computes input gradients only


class TrainingEfficiency(FrozenSpec):
    """Fractions of peak the step reaches. Defaults are assumptions until a probe calibrates them."""

    compute: float = Field(default=0.45, ge=0.01, le=1.0, description="Hardware FLOPs utilization of the step.")
    interconnect: float = Field(default=0.7, ge=0.01, le=1.0, description="Achieved / peak link bandwidth.")
    host_link_bytes_per_s: float = Field(
        default=25e9,
        gt=0,
        le=1e13,
        description="GPU↔CPU copy bandwidth for ZeRO-Offload (assumption: pinned copies on PCIe Gen4/Gen5 x16).",
    )
    cpu_adam_params_per_s: float = Field(
        default=1e9,
        gt=0,
        le=1e13,
        description="Parameters per second DeepSpeed's CPU Adam updates on one GPU's host share (assumption).",
    )


class TrainingRequest(FrozenSpec):
    """Fine-tuning question: this model, this GPU type, this training setup."""

    model: ModelRef
    gpu: GpuRef = "h100-sxm"
    training: TrainingSpec = TrainingSpec()
    efficiency: TrainingEfficiency = TrainingEfficiency()


class TrainingThroughput(FrozenSpec):
    """Roofline step time over all data-parallel GPUs."""

    model_flops_per_token: float = Field(description="(1 + backward) × forward FLOPs, no recomputation.")
    hardware_flops_per_token: float = Field(description="Model FLOPs + recomputed forward (checkpointing).")
    tokens_per_s: float = Field(description="Useful (non-padding) tokens per second, all GPUs.")
    mfu: float = Field(description="Model FLOPs utilization (PaLM, Chowdhery et al. 2022, App. B).")
    useful_token_fraction: float = Field(description="Real tokens / computed tokens (padding waste).")
    tokens_per_step: float = Field(description="Useful tokens per optimizer step (micro × accumulation × DP).")
    compute_s: float
    communication_s: float = Field(description="Gradient all-reduce (ZeRO-3: + weight all-gathers) per step.")
    pipeline_bubble_fraction: float = Field(default=0.0, description="(PP − 1)/micro-batches, added to compute.")
    tensor_parallel_s: float = Field(default=0.0, description="Exposed TP all-reduces / all-gathers + reduce-scatters.")
    pipeline_send_s: float = Field(default=0.0, description="Stage-boundary sends of activations and gradients.")
    context_parallel_s: float = Field(default=0.0, description="Ring-attention transfers not hidden by attention.")
    offload_s: float = Field(default=0.0, description="ZeRO-Offload copies and the CPU Adam step.")
    step_time_s: float = Field(description="max(compute·(1 + bubble) + exposed model-parallel time, DP communication)")
    formula: str = (
        "tokens/s = rows·s / step; compute = rows·s·F_hw / (GPUs·P·η); F_model = (1 + bwd)·(2·N + attention); "
        "F_hw adds recompute; step = max(compute·(1 + (p − 1)/m) + TP + PP + CP + offload, DP all-reduce)"
    )
    source: str = (
        "Kaplan et al. 2020 §2.1; Chowdhery et al. 2022 App. B (MFU); Narayanan et al. 2021 §2.2, §3; Korthikanti "
        "et al. 2022 §4.2; Ren et al. 2021 (ZeRO-Offload)"
    )


class TrainingEstimate(FrozenSpec):
    """The answer, per GPU."""

    model: ResolvedModel
    gpu: GpuSpec
    num_gpus: int
    training: TrainingSpec
    trainable_params: TrainableParams
    memory: MemoryBreakdown = Field(description="The phase that sets the peak.")
    peak_phase: str = Field(
        description="loss_backward, last_block_backward, first_block_backward, moe_start_backward (the first MoE "
        "layer after dense ones), attention_backward, embedding_backward, final_norm_backward, forward or "
        "optimizer_step."
    )
    phases: dict[str, MemoryBreakdown] = Field(description="Every candidate peak, bytes per GPU.")
    allocated_peak_bytes: int = Field(description="What torch.cuda.max_memory_allocated would show.")
    device_bytes: int = Field(description="Allocated peak + CUDA context (nvidia-smi).")
    budget_bytes: int
    fits: bool
    fit_reasons: tuple[str, ...]
    max_micro_batch_size: int = Field(description="Largest micro-batch that fits (0: not even one row).")
    suggestions: tuple[Suggestion, ...] = Field(description="Changes that lower the peak, cheapest first.")
    throughput: TrainingThroughput
    warnings: tuple[str, ...] = ()


def max_micro_batch(spec: ModelSpec, training: TrainingSpec, tp: TrainableParams, budget: int) -> int:
    """Largest b with peak(b) ≤ budget. Saved activations grow linearly in b, so two evaluations suffice."""
    one, two = training_phases(spec, training, tp, 1), training_phases(spec, training, tp, 2)
    if one.peak.total_bytes > budget:
        return 0
    best = MAX_MICRO_BATCH
    for name, first in one.phases.items():  # each phase is affine in b: fixed + b·per_row
        per_row = two.phases[name].total_bytes - first.total_bytes
        if per_row > 0:
            best = min(best, (budget - (first.total_bytes - per_row)) // per_row)
    return best


def _padding(t: TrainingSpec, seq: int) -> tuple[float, float]:
    """(mean computed row length, mean useful row length): padding to the longest of b samples.

    Formula: E[max of b draws] = Σ_x x·(F(x)^b − F(x⁻)^b) over the empirical length distribution.
    """
    if t.packing or not t.sample_lengths:
        return float(seq), float(seq)
    lengths = sorted(min(n, seq) for n in t.sample_lengths)
    counts, total, b = Counter(lengths), len(lengths), t.micro_batch_size
    expected_max, below = 0.0, 0.0
    for x in sorted(counts):
        cdf = bisect_right(lengths, x) / total
        expected_max += x * (cdf**b - below**b)
        below = cdf
    return expected_max, sum(lengths) / total


def training_throughput(
    spec: ModelSpec, t: TrainingSpec, gpu: GpuSpec, eff: TrainingEfficiency, tp: TrainableParams
) -> TrainingThroughput:
    """FLOPs per token, tokens/s, MFU and step time on DP × TP × PP × CP GPUs."""
    shp = train_shapes(spec, t)
    s = shp.seq
    attention = attention_flops(spec, s, s, KVLayout.MLA_EXPANDED) / s
    forward = 2 * count_params(spec).forward_matmul_params + attention
    expansion = FORWARD_BACKWARD_EXPANSION if t.method.kind == "full" else FROZEN_BACKWARD_EXPANSION
    model_flops = expansion * forward
    recompute = {Checkpointing.FULL: forward, Checkpointing.SELECTIVE: attention}.get(t.gradient_checkpointing, 0.0)
    hardware = model_flops + recompute
    peak = gpu.peak_flops_per_s.get("fp32" if t.precision is Precision.FP32 else "bf16") or max(
        gpu.peak_flops_per_s.values()
    )
    computed_len, useful_len = _padding(t, s)
    rows = t.micro_batch_size * t.gradient_accumulation_steps * t.data_parallel
    gpus = t.num_gpus
    compute_s = rows * computed_len * hardware / (gpus * peak * eff.compute)
    attention_layer_s = rows * computed_len * attention / spec.num_layers / (gpus * peak * eff.compute)
    par = parallel_times(
        spec, t, gpu, tp, eff.interconnect, attention_layer_s, eff.host_link_bytes_per_s, eff.cpu_adam_params_per_s
    )
    comm_s = _dp_communication_s(t, gpu, eff, tp, model_shard_fraction_for(spec, t))
    step = max(compute_s * (1 + par.bubble_fraction) + par.exposed_s, comm_s)
    return TrainingThroughput(
        model_flops_per_token=model_flops,
        hardware_flops_per_token=hardware,
        tokens_per_s=rows * useful_len / step,
        mfu=rows * computed_len * model_flops / (step * gpus * peak),
        useful_token_fraction=useful_len / computed_len,
        tokens_per_step=rows * useful_len,
        compute_s=compute_s,
        communication_s=comm_s,
        pipeline_bubble_fraction=par.bubble_fraction,
        tensor_parallel_s=par.tensor_parallel_s,
        pipeline_send_s=par.pipeline_send_s,
        context_parallel_s=par.context_parallel_s,
        offload_s=par.offload_s,
        step_time_s=step,
    )


def _dp_communication_s(
    t: TrainingSpec, gpu: GpuSpec, eff: TrainingEfficiency, tp: TrainableParams, shard: float = 1.0
) -> float:
    """Ring all-reduce of gradients, 2·(N−1)/N·bytes; ZeRO-3 adds two weight all-gathers (N−1)/N·bytes each; each
    GPU reduces its TP × PP shard (`shard`, planner.training.parallel.model_shard_fraction) over the DP group."""
    n = t.data_parallel
    if n == 1:
        return 0.0
    grad_bytes = shard * tp.trainable * (2 if t.precision in (Precision.BF16, Precision.BF16_FP32_MASTER) else 4)
    volume = 2 * (n - 1) / n * grad_bytes
    if t.zero_stage == 3:
        volume += 2 * (n - 1) / n * shard * tp.base_params * 2
    return volume / (gpu.interconnect_bandwidth_bytes_per_s * eff.interconnect)


def _suggestions(spec: ModelSpec, t: TrainingSpec, peak: int, budget: int) -> tuple[Suggestion, ...]:
    """The single changes, and when none of them fits alone, the smallest combination that does."""
    singles = suggestions(spec, t, peak, budget)
    if peak <= budget or any(s.fits for s in singles):
        return singles
    combined = combined_suggestion(spec, t, peak, budget)
    return (*singles, combined) if combined else singles


def estimate_training(request: TrainingRequest, catalog: Catalog) -> TrainingEstimate:
    """Memory phases, fit, largest micro-batch, suggestions and throughput for one fine-tuning setup."""
    model = resolve_model(request.model, catalog)
    gpu = resolve_gpu(request.gpu, catalog)
    spec, t = model.spec, request.training
    check_training_parallel(spec, t)
    tp = trainable_params(spec, t.method)
    phases = training_phases(spec, t, tp)
    peak = phases.peak
    budget = int(t.gpu_memory_utilization * gpu.memory_bytes) - t.cuda_context_bytes
    fits = peak.total_bytes <= budget
    reasons = (
        ()
        if fits
        else (
            f"the {phases.peak_phase.replace('_', ' ')} needs {peak.total_bytes / GIB:.2f} GiB per GPU; "
            f"{max(budget, 0) / GIB:.2f} GiB is available after the CUDA context",
        )
    )
    return TrainingEstimate(
        model=model,
        gpu=gpu,
        num_gpus=t.num_gpus,
        training=t,
        trainable_params=tp,
        memory=peak,
        peak_phase=phases.peak_phase,
        phases=phases.phases,
        allocated_peak_bytes=peak.total_bytes,
        device_bytes=peak.total_bytes + t.cuda_context_bytes,
        budget_bytes=budget,
        fits=fits,
        fit_reasons=reasons,
        max_micro_batch_size=max_micro_batch(spec, t, tp, budget),
        suggestions=_suggestions(spec, t, peak.total_bytes, budget),
        throughput=training_throughput(spec, t, gpu, request.efficiency, tp),
        warnings=model.warnings + _target_warnings(spec, tp),
    )


def _target_warnings(spec: ModelSpec, tp: TrainableParams) -> tuple[str, ...]:
    """peft adapts the target names that match and ignores the rest, silently: say which matched nothing."""
    if not tp.unmatched_targets:
        return ()
    return (
        f"training.method.target_modules: {list(tp.unmatched_targets)} match no module of this '{spec.family}' model; "
        "peft adapts only the targets that matched, and so does this estimate",
    )
