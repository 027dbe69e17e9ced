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
    resolve_model,
    trainable_params,
)
from planner.probe import MAX_PROBE_TOKENS, ProbeRequest, ProbeScale, scale_down

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


def _scaled(spec: ModelSpec, scale: ProbeScale) -> ModelSpec:
    try:
        return scale_down(spec, scale)
    except ValidationError as exc:
        problems = [FieldProblem(("scale", *e["loc"]), e["msg"], e["type"]) for e in exc.errors(include_url=False)]
        raise SpecError(problems) from None


def admit(request: ProbeRequest, catalog: Catalog) -> str:
    """The probed model's label (catalog id, spec name or family); SpecError, located in the request, otherwise.

    Checks what the planner can check without torch: the model resolves, a full-size model only goes to the fake
    backend, the scaled-down model is a valid spec, and a training method applies to it (e.g. LoRA targets exist).
    """
    model = resolve_model(request.model, catalog)
    if not request.scale_down and request.backend != "fake":
        msg = "only the fake backend runs a full-size model; keep scale_down true or use backend fake"
        raise SpecError([FieldProblem(("scale_down",), msg)])
    spec = _scaled(model.spec, request.scale) if request.scale_down else model.spec
    if request.kind == "training":
        trainable_params(spec, request.training.method)
    return model.catalog_id or model.spec.name or model.spec.family


def probe_request_for(request: InferenceRequest | TrainingRequest) -> ProbeRequest:
    """The probe that checks an estimate: same model and settings, scaled down, backend auto.

    A serving probe runs what a probe can run: the transformers engine (the same MLA latent cache as vLLM and
    SGLang), bf16 weights and cache, one GPU, and at most MAX_PROBE_TOKENS cached tokens; its result records the
    settings it ran.
    """
    if isinstance(request, TrainingRequest):
        return ProbeRequest(kind="training", model=request.model, training=request.training)
    return ProbeRequest(kind="inference", model=request.model, serving=_probe_serving(request.serving))


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
            "mla_layout": None,
            "block_size": None,
            "logits_all_positions": None,
            "concurrency": max(1, min(serving.concurrency, MAX_PROBE_TOKENS // max(context, 1))),
        }
    )
