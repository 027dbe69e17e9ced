"""The time model-parallel training adds to a step: the pipeline bubble, exposed TP collectives, stage sends,
ring-attention transfers, and the CPU optimizer step of ZeRO-Offload.

Each is a per-GPU duration per optimizer step; planner.training.estimate adds them to the compute time (Megatron's
TP collectives and stage sends sit on the critical path; ring attention overlaps its blockwise compute).
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.gpu_spec import GpuSpec
from planner.model.params import count_params
from planner.model.spec import ModelSpec
from planner.training.parallel import (
    SENDS_PER_MICRO_BATCH,
    context_parallel_ring_bytes,
    model_shard_fraction,
    pipeline_bubble_fraction,
    ring_allreduce_bytes,
    tensor_parallel_collectives,
)
from planner.training.peft_params import TrainableParams
from planner.training.spec import Precision, TrainingSpec

__all__ = ["ParallelTimes", "parallel_times"]

ACT_BYTES = 2  # bf16 activations cross the links
GRAD_AND_PARAM_COPIES = 2  # ZeRO-Offload: 16-bit gradients to the CPU, updated 16-bit parameters back
HALF_BYTES = 2


@dataclass(frozen=True, slots=True)
class ParallelTimes:
    """Seconds per optimizer step on one GPU."""

    bubble_fraction: float
    tensor_parallel_s: float
    pipeline_send_s: float
    context_parallel_s: float
    offload_s: float

    @property
    def exposed_s(self) -> float:
        return self.tensor_parallel_s + self.pipeline_send_s + self.context_parallel_s + self.offload_s


def parallel_times(
    spec: ModelSpec,
    t: TrainingSpec,
    gpu: GpuSpec,
    trainable: TrainableParams,
    link_efficiency: float,
    attention_s_per_layer: float,
    host_link_bytes_per_s: float,
    cpu_adam_params_per_s: float,
) -> ParallelTimes:
    """The parallelism costs of one step (see each helper in planner.training.parallel for its formula and source).

    TP: collectives × ring bytes of b·(s/CP)·h·2 over the GPU link (Shoeybi et al. 2019 §3; Korthikanti §4.2.2).
    PP: 2 sends of b·(s/CP)·h·2 per micro-batch (Narayanan et al. 2021 §2.2).
    CP: max(0, ring transfer − attention compute) per layer and micro-batch (ring attention overlaps the two).
    Offload: 2 copies of the 16-bit shard over the host link + the shard's Adam step on the CPU (Ren et al. 2021
      §4.2, §5: CPU-Adam; the rates are request inputs, assumptions until measured).
    """
    link = gpu.interconnect_bandwidth_bytes_per_s * link_efficiency
    m, pp, tp = t.gradient_accumulation_steps, t.pipeline_parallel, t.tensor_parallel
    layers = -(-spec.num_layers // pp)
    activations = t.micro_batch_size * t.sequence_length / t.context_parallel * spec.hidden_size * ACT_BYTES
    tp_s = 0.0
    if tp > 1:
        calls = tensor_parallel_collectives(layers, m, t.gradient_checkpointing)
        tp_s = calls * ring_allreduce_bytes(activations, tp) / link
    pp_s = SENDS_PER_MICRO_BATCH * m * activations / link if pp > 1 else 0.0
    ring = context_parallel_ring_bytes(spec, t, ACT_BYTES) / link
    cp_s = layers * m * max(0.0, ring - attention_s_per_layer)
    offload_s = 0.0
    if t.offload_optimizer:
        shard = trainable.trainable * model_shard_fraction_for(spec, t) / max(1, t.data_parallel)
        offload_s = GRAD_AND_PARAM_COPIES * shard * _half(t) / host_link_bytes_per_s + shard / cpu_adam_params_per_s
    return ParallelTimes(pipeline_bubble_fraction(pp, m), tp_s, pp_s, cp_s, offload_s)


def model_shard_fraction_for(spec: ModelSpec, t: TrainingSpec) -> float:
    return model_shard_fraction(count_params(spec), t.tensor_parallel, t.pipeline_parallel)


def _half(t: TrainingSpec) -> int:
    return HALF_BYTES if t.precision in (Precision.BF16, Precision.BF16_FP32_MASTER) else 2 * HALF_BYTES
