"""`run_probe`: resolve the model, shrink it, build it, run it on a backend, and compare with the planner."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import peft
import torch
import transformers
from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

from models.backends import BackendUnavailableError, Measurement, get_backend
from models.build import AnyBackend
from models.inference_probe import inference_comparisons, measure_inference, planner_serving_terms, serving_run
from models.kernels import kernel_run
from models.measurement import is_out_of_memory
from models.support import check_serving_supported, check_training_supported, unsupported
from models.training_probe import measure_training, planner_phases, training_comparisons, training_run
from planner import FieldProblem, ModelSpec, SpecError, load_catalog, resolve_model
from planner.probe import MAX_PROBE_TOKENS, Comparison, ProbeRequest, ProbeResult, probe_hf_config, scale_down
from planner.probe_size import MAX_FAKE_TOKENS, MAX_PROBE_PARAMS, check_probe_caps

__all__ = [
    "MAX_FAKE_TOKENS",
    "MAX_PROBE_PARAMS",
    "MAX_PROBE_TOKENS",
    "BackendUnavailableError",
    "ProbeDetails",
    "probe_spec",
    "run_probe",
    "run_probe_detailed",
]

DATA_DEPENDENT = (DataDependentOutputException, DynamicOutputShapeException, GuardOnDataDependentSymNode)


def probe_spec(request: ProbeRequest, explain: bool = False) -> tuple[ModelSpec, AnyBackend]:
    """The architecture the probe runs (scaled down unless asked otherwise) and the backend it runs on."""
    backend = get_backend(request.backend, explain)
    spec = resolve_model(request.model, load_catalog()).spec
    if not request.scale_down:
        if backend.name != "fake":
            raise SpecError(
                [
                    FieldProblem(
                        ("scale_down",),
                        f"full-size probes run only on the fake backend (nothing is allocated); '{backend.name}' "
                        "needs scale_down true",
                    )
                ]
            )
        return spec, backend
    return scale_down(spec, request.scale), backend


def _peak_rel_error(comparisons: list[Comparison], preferred: tuple[str, ...]) -> float:
    """Relative error of the first peak comparison present in `preferred` order (0.0 when none was measured:
    an out-of-memory before the first step)."""
    by_name = {c.name: c for c in comparisons}
    return next((by_name[name].rel_error for name in preferred if name in by_name), 0.0)


@dataclass
class ProbeDetails:
    """What a ProbeResult summarizes: the backend's measurements and the planner's breakdowns, term by term."""

    measurements: dict[str, Measurement] = field(default_factory=dict)  # "first_step", "steady" or "inference"
    planner: dict[str, dict[str, int]] = field(default_factory=dict)  # "steady/loss_backward" → term → bytes


Progress = Callable[[str], None]


def _silent(_: str) -> None:
    return None


def run_probe(request: ProbeRequest, progress: Progress | None = None) -> ProbeResult:
    """Run one probe and compare it, component by component, with the planner's estimate of the same run.

    Raises SpecError for what cannot be probed (located at the request field), BackendUnavailableError for cuda
    without a device, ProbeTimeoutError past `timeout_s` (checked between steps and decode tokens). Running out of
    memory is a result: `out_of_memory` with the comparisons measured so far. Estimated peaks include the batch's
    input ids where the planner has no term for them (they are alive through the step on every backend).
    Not thread-safe: building sets torch's default dtype (and, on the fake backend, patches a transformers mask
    helper); run one probe at a time per process. `progress` hears each phase by name.
    """
    return run_probe_detailed(request, progress=progress)[0]


def run_probe_detailed(
    request: ProbeRequest, explain: bool = False, progress: Progress | None = None
) -> tuple[ProbeResult, ProbeDetails]:
    """`run_probe`, plus the measurements and planner breakdowns behind it; `explain` (cpu, fake) also records
    which storages are live at each measured peak."""
    report = progress or _silent
    began = time.perf_counter()
    report("building the scaled-down model")
    spec, backend = probe_spec(request, explain)
    check_probe_caps(request, spec, backend.name)  # the server checked them at submission too
    training = training_run(request.training) if request.kind == "training" else None
    serving = serving_run(request.serving, backend) if request.kind == "inference" else None
    comparisons: list[Comparison] = []
    timings: dict[str, float] = {}
    hf_config = probe_hf_config(spec)
    details = ProbeDetails()
    oom = False
    try:
        if training is not None:
            check_training_supported(training)
            training = kernel_run(spec, training, backend.device)  # the SDPA kernel torch will pick
            details.planner = planner_phases(spec, training)
            report(f"measuring a training step on {backend.name}")
            tm = measure_training(spec, training, backend, request.timeout_s)
            report("comparing with the planner")
            comparisons = training_comparisons(spec, training, tm)
            timings, hf_config, oom = tm.timings_s, tm.hf_config, tm.out_of_memory
            details.measurements = {k: m for k, m in (("first_step", tm.first), ("steady", tm.steady)) if m}
        elif serving is not None:
            check_serving_supported(serving)
            serving = kernel_run(spec, serving, backend.device)
            details.planner = planner_serving_terms(spec, serving)
            report(f"measuring prefill and decode on {backend.name}")
            im = measure_inference(spec, serving, backend, request.timeout_s)
            report("comparing with the planner")
            comparisons = inference_comparisons(spec, serving, im)
            timings, hf_config = im.timings_s, im.hf_config
            oom = im.run is not None and im.run.out_of_memory
            details.measurements = {"inference": im.run} if im.run else {}
    except DATA_DEPENDENT as exc:  # fake tensors have no values to decide a data-dependent shape with
        raise unsupported(
            ("backend",),
            f"the fake backend cannot trace this model: {type(exc).__name__} (a shape that depends on tensor "
            "values, e.g. an MoE loop over the experts that received tokens); probe it on cpu or cuda",
        ) from exc
    except Exception as exc:  # the model or its batch did not fit before any step ran
        if not is_out_of_memory(exc):
            raise
        oom = True
    finally:
        if backend.name == "cuda":
            torch.cuda.empty_cache()
    preferred = (
        ("peak/steady", "peak/steady/until_oom", "peak/first_step/until_oom")
        if training is not None
        else ("peak/inference", "peak/inference/until_oom")
    )
    result = ProbeResult(
        backend=backend.name,
        device=backend.device_name(),
        torch_version=torch.__version__,
        transformers_version=transformers.__version__,
        peft_version=peft.__version__,
        kind=request.kind,
        spec=spec,
        hf_config=hf_config,
        training=training,
        serving=serving,
        comparisons=tuple(comparisons),
        peak_rel_error=_peak_rel_error(comparisons, preferred),
        timings_s={**timings, "total_s": time.perf_counter() - began},
        out_of_memory=oom,
    )
    return result, details
