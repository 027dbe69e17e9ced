"""A training probe: two measured optimizer steps of a real (or fake) model, and the planner's same configuration.

Step 1 is the first step (AdamW creates its state lazily inside `optimizer.step()`), step 2 the steady state. The
batch's input ids exist before each step and stay alive through it, as a training loop holds its batch; the
labels are the same tensor. Saved activations are read in step 2 with `saved_tensors_hooks` (every saved tensor's
storage once, parameters left out), as tests/planner/test_activations.py does.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from models.backends import Measurement, StepContext, storage_bytes
from models.build import (
    AnyBackend,
    build_optimizer,
    build_training_model,
    check_deadline,
    input_ids,
    quiet_build,
    unpacked_rows,
)
from models.kernels import forced_kernel
from planner import MemoryBreakdown, ModelSpec, TrainingSpec
from planner.probe import Comparison
from planner.probe_size import probe_training_spec
from planner.training.activations import APPROXIMATE_LEDGER_FAMILIES
from planner.training.backward_moments import CHECKPOINT_INPUTS_TERM, LOSS_TERM
from planner.training.memory import training_phases
from planner.training.peft_params import trainable_params

__all__ = ["TrainingMeasurement", "measure_training", "planner_phases", "training_comparisons", "training_run"]

INPUT_TERM_PREFIX = "inputs/"  # a planner term under this name counts the batch itself
BACKWARD_PHASES = (
    "loss_backward", "last_block_backward", "first_block_backward", "attention_backward", "embedding_backward",
    "final_norm_backward",
)  # fmt: skip
LOGITS_GRADS_TERM = "activations/logits_grads"


@dataclass
class TrainingMeasurement:
    """What the probe measured, in bytes; `first`/`steady` are None when the step did not run (OOM before it)."""

    weights_bytes: int
    trainable_bytes: int
    input_bytes: int
    saved_bytes: int | None = None
    first: Measurement | None = None
    steady: Measurement | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    hf_config: dict[str, Any] = field(default_factory=dict)

    @property
    def out_of_memory(self) -> bool:
        return any(m is not None and m.out_of_memory for m in (self.first, self.steady))


def training_run(training: TrainingSpec) -> TrainingSpec:
    """The TrainingSpec the probe really runs (planner.probe_size.probe_training_spec: packed rows, one device)."""
    return probe_training_spec(training)


class SavedStorages:
    """Every storage autograd saves during a forward, each counted once.

    A storage is known by the address of its C++ object (`_cdata`) while it lives; the address of one that was
    freed during the forward (a branch whose graph was discarded, e.g. a router's top-k scores) can be handed to
    the next allocation. Keyed by address alone, that new storage looked already counted, and the count depended
    on the allocator's reuse (DeepSeek-V3's saved activations measured 10.22–11.34 MB over runs of one probe).
    Each address keeps weak references to the saved tensors that used it: a storage seen at an address whose
    tensors are all gone is a new one.
    """

    def __init__(self, params: set[int]) -> None:
        self.params = params
        self.total = 0
        self._seen: dict[int, list[weakref.ref[torch.Tensor]]] = {}

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        key = st._cdata
        if key not in self.params:
            refs = self._seen.get(key)
            if refs is None or all(r() is None for r in refs):
                self.total += st.nbytes()
                self._seen[key] = refs = []
            refs.append(weakref.ref(t))
        return t


@contextlib.contextmanager
def _saved_tensors(saved: SavedStorages | None) -> Iterator[None]:
    """Record every tensor autograd saves (storage once, parameters left out) into `saved` (None: record nothing)."""
    if saved is None:
        yield
        return
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
        yield


def _step_fn(
    model: Any,
    optimizer: torch.optim.Optimizer,
    ids: torch.Tensor,
    training: TrainingSpec,
    autocast: torch.dtype | None,
    device_type: str,
    saved: SavedStorages | None,
) -> Callable[[StepContext], None]:
    trainable = [p for p in model.parameters() if p.requires_grad]

    def step(ctx: StepContext) -> None:
        hooks = [p.register_post_accumulate_grad_hook(lambda p: ctx.tag("gradients", [p.grad])) for p in trainable]
        try:
            for micro in range(training.gradient_accumulation_steps):
                ctx.mark("forward")
                cast = torch.autocast(device_type, dtype=autocast) if autocast else contextlib.nullcontext()
                recording = saved if micro == 0 else None
                kernel = forced_kernel(training.attention)  # also around backward: checkpointed blocks recompute
                with kernel:
                    with cast, _saved_tensors(recording):
                        loss = model(input_ids=ids, labels=ids).loss
                    ctx.mark("backward")
                    loss.backward()
                del loss
            ctx.mark("optimizer")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        finally:
            for hook in hooks:
                hook.remove()

    return step


def _held(model: Any, optimizer: torch.optim.Optimizer, ids: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return {
        "parameters": list(model.parameters()),
        "buffers": list(model.buffers()),
        "optimizer_state": state,
        "inputs": [ids],
    }


def measure_training(
    spec: ModelSpec, training: TrainingSpec, backend: AnyBackend, timeout_s: float | None = None
) -> TrainingMeasurement:
    """Build, then measure the first and the steady step on `backend` (ProbeTimeoutError past `timeout_s`)."""
    began = time.perf_counter()
    with unpacked_rows(backend):
        built = build_training_model(spec, training, backend)
        model = built.model
        params = list(model.parameters())
        trainable = [p for p in params if p.requires_grad]
        optimizer = build_optimizer(trainable, training.optimizer, backend)
        ids = input_ids(spec.vocab_size, (training.micro_batch_size, training.sequence_length), backend)
        out = TrainingMeasurement(
            weights_bytes=storage_bytes(params),
            trainable_bytes=storage_bytes(trainable),
            input_bytes=storage_bytes([ids]),
            hf_config=built.hf_config,
        )
        out.timings_s["build_s"] = time.perf_counter() - began
        saved = SavedStorages({p.untyped_storage()._cdata for p in params})
        device_type = backend.device.type
        with quiet_build():
            first = _step_fn(model, optimizer, ids, training, built.autocast_dtype, device_type, None)
            check_deadline(began, timeout_s, "after building the model")
            out.first = backend.measure_step(first, _held(model, optimizer, ids))
            check_deadline(began, timeout_s, "after the first step")
            if not out.first.out_of_memory:
                steady = _step_fn(model, optimizer, ids, training, built.autocast_dtype, device_type, saved)
                out.steady = backend.measure_step(steady, _held(model, optimizer, ids))
        out.saved_bytes = saved.total if out.steady and not out.steady.out_of_memory else None
    for name, m in (("first_step", out.first), ("steady_step", out.steady)):
        if m is not None:
            out.timings_s[f"{name}_s"] = m.wall_s
            if m.device_s is not None:
                out.timings_s[f"{name}_device_s"] = m.device_s
    return out


def compare(name: str, measured: int, estimated: int, exact: bool) -> Comparison:
    rel = 0.0 if measured == estimated else (estimated - measured) / measured if measured else float(estimated > 0)
    return Comparison(name=name, measured_bytes=measured, estimated_bytes=estimated, rel_error=rel, exact=exact)


def _with_inputs(name: str, phase: MemoryBreakdown, training: TrainingSpec, input_bytes: int) -> int:
    """A phase's bytes plus the batch's input ids where the planner does not count them.

    The planner counts the ids only where autograd saves them: the embedding's saved indices in loss_backward
    when the embedding trains (full fine-tuning). The probe's batch is alive for the whole step.
    """
    if any(t.name.startswith(INPUT_TERM_PREFIX) for t in phase.terms):
        return phase.total_bytes
    counted = name == "loss_backward" and training.method.kind == "full"
    return phase.total_bytes + (0 if counted else input_bytes)


def _peak_with_inputs(phases: dict[str, MemoryBreakdown], training: TrainingSpec, input_bytes: int) -> int:
    return max(_with_inputs(name, phase, training, input_bytes) for name, phase in phases.items())


def _step_comparisons(
    label: str, m: Measurement, phases: dict[str, MemoryBreakdown], t: TrainingSpec, input_bytes: int
) -> list[Comparison]:
    """The step's peak, and the peak of its backward and optimizer regions against the planner's moments."""
    out = [compare(f"peak/{label}", m.peak_bytes, _peak_with_inputs(phases, t, input_bytes), exact=False)]
    backward = {k: v for k, v in phases.items() if k in BACKWARD_PHASES}
    if "backward" in m.region_peaks and backward:
        est = _peak_with_inputs(backward, t, input_bytes)
        out.append(compare(f"peak/{label}/backward", m.region_peaks["backward"], est, exact=False))
    if "optimizer" in m.region_peaks:
        est = _with_inputs("optimizer_step", phases["optimizer_step"], t, input_bytes)
        out.append(compare(f"peak/{label}/optimizer_step", m.region_peaks["optimizer"], est, exact=False))
    return out


def _saved_estimate(phases: dict[str, MemoryBreakdown]) -> int:
    """Every activation term of the loss_backward moment but the logits gradients, the checkpoints' inputs and the
    loss (not saved tensors): the blocks, the tensors outside them and, under autocast, the bf16 weight copies
    autograd keeps."""
    terms = phases["loss_backward"].terms
    skip = (LOGITS_GRADS_TERM, CHECKPOINT_INPUTS_TERM, LOSS_TERM)
    return sum(t.bytes for t in terms if t.name.startswith("activations/") and t.name not in skip)


def _phases(spec: ModelSpec, training: TrainingSpec, first_step: bool) -> dict[str, MemoryBreakdown]:
    t = training.model_copy(update={"first_step": first_step})
    return training_phases(spec, t, trainable_params(spec, training.method), training.micro_batch_size).phases


def planner_phases(spec: ModelSpec, training: TrainingSpec) -> dict[str, dict[str, int]]:
    """The planner's candidate peaks for the run, term by term ('first_step/loss_backward' → term → bytes)."""
    return {
        f"{label}/{name}": {t.name: t.bytes for t in phase.terms}
        for label, first in (("first_step", True), ("steady", False))
        for name, phase in _phases(spec, training, first).items()
    }


def training_comparisons(spec: ModelSpec, training: TrainingSpec, m: TrainingMeasurement) -> list[Comparison]:
    """Measured against `training_phases` for exactly the configuration run (first step and steady state).

    Weights, trainable weights and saved activations are claimed exact (MoE layers route every token to k
    experts, which the planner keeps like one k·f_e-wide MLP: planner.training.activations.mlp_width), but for the
    families whose ledger is approximate (planner.training.activations.APPROXIMATE_LEDGER_FAMILIES).
    """
    steady, first = _phases(spec, training, False), _phases(spec, training, True)
    opt = steady["optimizer_step"]
    out = [
        compare("weights", m.weights_bytes, opt.get("weights/trainable") + opt.get("weights/frozen"), exact=True),
        compare("trainable_weights", m.trainable_bytes, opt.get("weights/trainable"), exact=True),
    ]
    if m.saved_bytes is not None:
        exact = spec.family not in APPROXIMATE_LEDGER_FAMILIES
        out.append(compare("saved_activations", m.saved_bytes, _saved_estimate(steady), exact=exact))
    if m.first is not None and not m.first.out_of_memory:
        out += _step_comparisons("first_step", m.first, first, training, m.input_bytes)
    if m.steady is not None and not m.steady.out_of_memory:
        out += _step_comparisons("steady", m.steady, steady, training, m.input_bytes)
    for label, step in (("first_step", m.first), ("steady", m.steady)):
        if step is not None and step.out_of_memory:  # a lower bound: the step failed above it
            est = _peak_with_inputs(first if label == "first_step" else steady, training, m.input_bytes)
            out.append(compare(f"peak/{label}/until_oom", step.peak_bytes, est, exact=False))
    return out
