"""How big a probe is before it runs: its token and parameter caps, and the planner's own estimate of its peak.

A server checks all of this when a probe is submitted, so that a probe it cannot afford is a 422 at once instead
of a job that holds the only worker and fails (or really allocates) later. The probe side (models.runner) checks
the same caps again, from the same functions.
"""

from __future__ import annotations

from typing import Literal

from planner.catalog import Catalog
from planner.errors import FieldProblem, SpecError
from planner.model.params import count_params
from planner.model.spec import ModelSpec
from planner.probe import MAX_PROBE_TOKENS, ProbeRequest
from planner.serving.inference import InferenceRequest, estimate_inference
from planner.serving.spec import ServingSpec
from planner.training.memory import training_phases
from planner.training.peft_params import trainable_params
from planner.training.spec import TrainingSpec

__all__ = [
    "MAX_FAKE_TOKENS",
    "MAX_PROBE_PARAMS",
    "check_probe_caps",
    "planned_peak_bytes",
    "probe_serving_spec",
    "probe_tokens",
    "probe_training_spec",
]

MAX_PROBE_PARAMS = 50_000_000  # cpu/cuda: a scaled probe runs in seconds
MAX_FAKE_TOKENS = 1 << 20  # fake allocates nothing; the cap keeps s² eager shapes and op counts reasonable
# The serving memory terms a probe is sized by do not depend on the GPU type (the transformers engine allocates
# the cache its sequences need, not a share of the device); any catalog GPU answers them.
SIZING_GPU = "h100-sxm"
RunBackend = Literal["cuda", "cpu", "fake"]


def probe_training_spec(training: TrainingSpec) -> TrainingSpec:
    """The TrainingSpec a probe really runs: rows of the planner's row length, packed, one device."""
    seq = training.sequence_length
    if not training.packing and training.sample_lengths:
        seq = min(seq, max(training.sample_lengths))  # padded to the longest sample (planner.train_shapes)
    return training.model_copy(update={"sequence_length": seq, "packing": True, "sample_lengths": None})


def probe_serving_spec(serving: ServingSpec, backend: RunBackend) -> ServingSpec:
    """The ServingSpec a probe really runs: no cuBLAS workspace off CUDA (there is no cuBLAS there)."""
    return serving if backend == "cuda" else serving.model_copy(update={"cublas_workspace_bytes": 0})


def probe_tokens(request: ProbeRequest) -> int:
    """Tokens per step: training rows × length × accumulation; serving sequences × context."""
    if request.kind == "training":
        t = probe_training_spec(request.training)
        return t.micro_batch_size * t.sequence_length * t.gradient_accumulation_steps
    return request.serving.concurrency * request.serving.context_tokens


def _workload_field(request: ProbeRequest) -> tuple[str, str]:
    return ("training", "micro_batch_size") if request.kind == "training" else ("serving", "concurrency")


def check_probe_caps(request: ProbeRequest, spec: ModelSpec, backend: RunBackend) -> None:
    """SpecError when the probe of `spec` on `backend` runs more tokens or parameters than a probe may."""
    tokens = probe_tokens(request)
    where = _workload_field(request)
    if backend == "fake":
        if tokens > MAX_FAKE_TOKENS:
            msg = f"{tokens:,} tokens per step exceed the fake backend's cap {MAX_FAKE_TOKENS:,}"
            raise SpecError([FieldProblem(where, msg, "probe_too_large")])
        return
    params = count_params(spec).total
    if params > MAX_PROBE_PARAMS:
        msg = f"the probe model has {params:,} parameters; the cap is {MAX_PROBE_PARAMS:,}"
        raise SpecError([FieldProblem(("scale",), msg, "probe_too_large")])
    if tokens > MAX_PROBE_TOKENS:
        msg = f"{tokens:,} tokens per step exceed the cap {MAX_PROBE_TOKENS:,}"
        raise SpecError([FieldProblem(where, msg, "probe_too_large")])


def planned_peak_bytes(request: ProbeRequest, spec: ModelSpec, backend: RunBackend, catalog: Catalog) -> int:
    """The planner's allocated peak for the probe of `spec`: the largest training phase of the first and the steady
    step, or the serving estimate's allocated peak. The same numbers the probe's result compares with."""
    if request.kind == "training":
        t = probe_training_spec(request.training)
        trainable = trainable_params(spec, t.method)
        return max(
            phase.total_bytes
            for first in (True, False)
            for phase in training_phases(
                spec, t.model_copy(update={"first_step": first}), trainable, t.micro_batch_size
            ).phases.values()
        )
    serving = probe_serving_spec(request.serving, backend)
    estimate = estimate_inference(InferenceRequest(model=spec, gpu=SIZING_GPU, serving=serving), catalog)
    return estimate.allocated_peak_bytes
