"""An inference probe: prefill B prompts and decode with a transformers DynamicCache, then compare with the planner.

The loop is generate()'s greedy loop written out, so that what is measured is explicit: one prefill forward over
B × prompt_tokens (logits at the last position, as generate() asks with logits_to_keep=1, or at every position when
the request sets logits_all_positions), then `output_tokens` decode forwards of one token each. The cache then
holds prompt + output tokens per sequence, the context the planner sizes the KV cache for. The prompt ids are alive
through the run and are added to the planner's peak, which has no term for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from models.backends import Measurement, StepContext, storage_bytes
from models.build import AnyBackend, build_inference_model, check_deadline, input_ids, unpacked_rows
from models.kernels import forced_kernel
from models.training_probe import compare
from planner import InferenceEstimate, InferenceRequest, ModelSpec, ServingSpec, estimate_inference, load_catalog
from planner.model.kv_cache import kv_bytes_per_sequence
from planner.model.precision import dtype_bytes
from planner.probe import Comparison
from planner.probe_size import probe_serving_spec

__all__ = [
    "InferenceMeasurement",
    "inference_comparisons",
    "measure_inference",
    "planner_serving_terms",
    "serving_run",
]

ESTIMATE_GPU = "h100-sxm"  # the memory terms compared here do not depend on the GPU type


@dataclass
class InferenceMeasurement:
    weights_bytes: int
    input_bytes: int
    kv_cache_bytes: int | None = None
    run: Measurement | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    hf_config: dict[str, Any] = field(default_factory=dict)


def serving_run(serving: ServingSpec, backend: AnyBackend) -> ServingSpec:
    """The ServingSpec the probe really runs (planner.probe_size.probe_serving_spec: no cuBLAS workspace off CUDA)."""
    return probe_serving_spec(serving, backend.name)


def _cache_bytes(cache: DynamicCache) -> int:
    """Bytes of every key and value tensor the cache holds (MLA in transformers 5: the latent and k_R)."""
    held = (getattr(layer, name, None) for layer in cache.layers for name in ("keys", "values"))
    return storage_bytes(t for t in held if isinstance(t, torch.Tensor))


def _generate_fn(
    model: Any, ids: torch.Tensor, serving: ServingSpec, out: InferenceMeasurement, deadline: Callable[[str], None]
) -> Callable[[StepContext], None]:
    # generate() projects only the last position (logits_to_keep=1) unless the request asks for every position
    logits_to_keep = 0 if serving.logits_all_positions else 1

    def run(ctx: StepContext) -> None:
        with torch.no_grad(), forced_kernel(serving.attention):
            ctx.mark("prefill")
            cache = DynamicCache(config=model.config)
            logits = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=logits_to_keep).logits
            next_ids = logits[:, -1].float().argmax(-1, keepdim=True)  # generate() upcasts the last position
            del logits
            ctx.mark("decode")
            for token in range(serving.output_tokens):
                deadline(f"at decode token {token}")
                logits = model(input_ids=next_ids, past_key_values=cache, use_cache=True).logits
                next_ids = logits[:, -1].float().argmax(-1, keepdim=True)
                del logits
            out.kv_cache_bytes = _cache_bytes(cache)

    return run


def measure_inference(
    spec: ModelSpec, serving: ServingSpec, backend: AnyBackend, timeout_s: float | None = None
) -> InferenceMeasurement:
    """Build, then measure one prefill + decode of `serving.concurrency` sequences (ProbeTimeoutError past
    `timeout_s`)."""
    began = time.perf_counter()
    with unpacked_rows(backend):
        built = build_inference_model(spec, serving, backend)
        model = built.model
        ids = input_ids(spec.vocab_size, (serving.concurrency, serving.prompt_tokens), backend)
        params = list(model.parameters())
        out = InferenceMeasurement(storage_bytes(params), storage_bytes([ids]), hf_config=built.hf_config)
        out.timings_s["build_s"] = time.perf_counter() - began
        held = {"parameters": params, "buffers": list(model.buffers()), "inputs": [ids]}

        def deadline(where: str) -> None:
            check_deadline(began, timeout_s, where)

        out.run = backend.measure_step(_generate_fn(model, ids, serving, out, deadline), held)
    out.timings_s["generate_s"] = out.run.wall_s
    if out.run.device_s is not None:
        out.timings_s["generate_device_s"] = out.run.device_s
    return out


def _estimate(spec: ModelSpec, serving: ServingSpec) -> InferenceEstimate:
    return estimate_inference(InferenceRequest(model=spec, gpu=ESTIMATE_GPU, serving=serving), load_catalog())


def planner_serving_terms(spec: ModelSpec, serving: ServingSpec) -> dict[str, dict[str, int]]:
    """The planner's serving memory for the run, term by term."""
    return {"inference": {t.name: t.bytes for t in _estimate(spec, serving).memory.terms}}


def inference_comparisons(spec: ModelSpec, serving: ServingSpec, m: InferenceMeasurement) -> list[Comparison]:
    """Weights and KV cache (exact) and the allocated peak (the planner's engine profile, not exact)."""
    estimate = _estimate(spec, serving)
    weights = sum(t.bytes for t in estimate.memory.terms if t.name.startswith("weights/"))
    out = [compare("weights", m.weights_bytes, weights, exact=True)]
    if m.kv_cache_bytes is not None:
        per_seq = kv_bytes_per_sequence(
            spec, serving.context_tokens, dtype_bytes(serving.kv_cache_dtype), serving.resolved_mla_layout
        )
        out.append(compare("kv_cache", m.kv_cache_bytes, serving.concurrency * per_seq, exact=True))
    if m.run is not None:
        # the prompt ids are alive through the run; the planner has no term for them
        est = estimate.allocated_peak_bytes + m.input_bytes
        name = "peak/inference" + ("/until_oom" if m.run.out_of_memory else "")
        out.append(compare(name, m.run.peak_bytes, est, exact=False))
    return out
