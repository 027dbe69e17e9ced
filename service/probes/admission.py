"""What a probe request must pass before it is queued: the planner can describe what the probe would run."""

from __future__ import annotations

import importlib.util

from pydantic import ValidationError

from planner import (
    Catalog,
    DType,
    Engine,
    FieldProblem,
    InferenceRequest,
    ModelSpec,
    ServingSpec,
    SpecError,
    TrainingRequest,
    WeightFormat,
    resolve_gpu,
    resolve_model,
    trainable_params,
)
from planner.probe import MAX_PROBE_TOKENS, ProbeRequest, ProbeScale, scale_down
from planner.probe_size import check_probe_caps, planned_peak_bytes
from service.probes.schemas import RunBackend

__all__ = ["DEFAULT_RUNNER", "PROBE_PACKAGES", "admit", "check_probe_side", "probe_request_for"]

DEFAULT_RUNNER = "models.runner:run_probe"
PROBE_PACKAGES = ("torch", "transformers", "peft")  # what models/ imports (the `probe` extra)


def check_probe_side(runner: str) -> None:
    """SpecError (422 at `backend`) when the default runner's packages are not installed here: a probe is refused
    when it is submitted, not accepted and failed later. Other runners (MEMPLAN_PROBE_RUNNER) bring their own."""
    if runner != DEFAULT_RUNNER:
        return
    missing = [name for name in PROBE_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        msg = (
            f"this server cannot run probes: {', '.join(missing)} not installed; install the probe side with "
            "pip install -e '.[probe]' (or .[test]) and restart"
        )
        raise SpecError([FieldProblem(("backend",), msg, "probe_side_missing")])


GIB = 1 << 30


def _scaled(spec: ModelSpec, scale: ProbeScale) -> ModelSpec:
    try:
        return scale_down(spec, scale)
    except ValidationError as exc:
        problems = [FieldProblem(("scale", *e["loc"]), e["msg"], e["type"]) for e in exc.errors(include_url=False)]
        raise SpecError(problems) from None


def admit(
    request: ProbeRequest, catalog: Catalog, backend: RunBackend | None = None, max_bytes: int | None = None
) -> str:
    """The probed model's label (catalog id, spec name or family); SpecError, located in the request, otherwise.

    Checks what the planner can check without torch: the model resolves, a full-size model only goes to the fake
    backend, the scaled-down model is a valid spec, a training method applies to it (e.g. LoRA targets exist), the
    token and parameter caps on `backend` (default: the request's, auto sized as cpu), and, when `max_bytes` is
    given, that the planner's estimate of the probe's peak fits in it (the fake backend allocates nothing).
    """
    model = resolve_model(request.model, catalog)
    if request.gpu is not None:
        resolve_gpu(request.gpu, catalog)
    if not request.scale_down and request.backend != "fake":
        msg = "only the fake backend runs a full-size model; keep scale_down true or use backend fake"
        raise SpecError([FieldProblem(("scale_down",), msg)])
    spec = _scaled(model.spec, request.scale) if request.scale_down else model.spec
    if request.kind == "training":
        trainable_params(spec, request.training.method)
    run_on: RunBackend = backend or ("cpu" if request.backend == "auto" else request.backend)
    check_probe_caps(request, spec, run_on)
    if max_bytes is not None and run_on != "fake":
        _check_planned_peak(request, spec, run_on, catalog, max_bytes)
    return model.catalog_id or model.spec.name or model.spec.family


def _check_planned_peak(
    request: ProbeRequest, spec: ModelSpec, backend: RunBackend, catalog: Catalog, max_bytes: int
) -> None:
    planned = planned_peak_bytes(request, spec, backend, catalog)
    if planned > max_bytes:
        where = ("training", "micro_batch_size") if request.kind == "training" else ("serving", "concurrency")
        msg = (
            f"the planner sizes this probe's peak at {planned:,} bytes ({planned / GIB:.2f} GiB); this server runs "
            f"{backend} probes up to {max_bytes:,} bytes ({max_bytes / GIB:.2f} GiB, MEMPLAN_PROBE_MAX_BYTES): "
            "shrink the batch, the sequence or the scale"
        )
        raise SpecError([FieldProblem(where, msg, "probe_too_large")])


def probe_request_for(request: InferenceRequest | TrainingRequest) -> ProbeRequest:
    """The probe that checks an estimate: same model and settings, scaled down, backend auto.

    A serving probe runs what a probe can run: the transformers engine (the same MLA latent cache as vLLM and
    SGLang), bf16 weights and cache, one GPU, and at most MAX_PROBE_TOKENS cached tokens; its result records the
    settings it ran.
    """
    gpu = request.gpu if isinstance(request.gpu, str) else None  # an inline GpuSpec names no accelerator type
    if isinstance(request, TrainingRequest):
        return ProbeRequest(kind="training", model=request.model, training=request.training, gpu=gpu)
    return ProbeRequest(kind="inference", model=request.model, serving=_probe_serving(request.serving), gpu=gpu)


def _probe_serving(serving: ServingSpec) -> ServingSpec:
    context = serving.context_tokens
    if context > MAX_PROBE_TOKENS:
        prompt = max(1, MAX_PROBE_TOKENS - serving.output_tokens)
        serving = serving.model_copy(update={"prompt_tokens": prompt})
        context = serving.context_tokens
    return serving.model_copy(
        update={
            "engine": Engine.TRANSFORMERS,
            "weight_format": WeightFormat.BF16,
            "kv_cache_dtype": DType.BF16,
            "embedding_dtype": DType.BF16,
            "activation_dtype": DType.BF16,
            "tensor_parallel": 1,
            "expert_parallel": 1,
            "pipeline_parallel": 1,
            "mla_layout": None,
            "block_size": None,
            "logits_all_positions": None,
            "concurrency": max(1, min(serving.concurrency, MAX_PROBE_TOKENS // max(context, 1))),
        }
    )
