"""Estimates: does it fit, how many sequences, how fast; for serving and for fine-tuning."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Response

from planner import InferenceEstimate, InferenceRequest, estimate_inference
from planner.training.estimate import TrainingEstimate, TrainingRequest, estimate_training
from service.deps import CatalogDep, ProbeExecutorDep
from service.examples import INFERENCE_EXAMPLES, TRAINING_EXAMPLES
from service.probes.admission import probe_request_for
from service.routers.probes import link_probe

router = APIRouter(prefix="/v1/estimates", tags=["estimates"])

ValidateFlag = Annotated[
    bool,
    Query(
        description="Also queue a probe of the same model and settings (scaled down, backend auto); its job id "
        "comes back in the X-Memplan-Probe header and its location in Link. 429 when the probe queue is full."
    ),
]


@router.post("/inference", response_model=InferenceEstimate)
def inference(
    request: Annotated[InferenceRequest, Body(openapi_examples=INFERENCE_EXAMPLES)],
    catalog: CatalogDep,
    executor: ProbeExecutorDep,
    response: Response,
    validate: ValidateFlag = False,
) -> InferenceEstimate:
    """Serving: memory per GPU, fit, KV capacity, prefill/decode speed; ?validate=true also queues a probe of it."""
    estimate = estimate_inference(request, catalog)
    if validate:
        link_probe(response, executor.submit(probe_request_for(request), catalog))
    return estimate


@router.post("/training", response_model=TrainingEstimate)
def training(
    request: Annotated[TrainingRequest, Body(openapi_examples=TRAINING_EXAMPLES)],
    catalog: CatalogDep,
    executor: ProbeExecutorDep,
    response: Response,
    validate: ValidateFlag = False,
) -> TrainingEstimate:
    """Fine-tuning: memory per phase, fit, max micro-batch, changes, tokens/s, MFU; ?validate=true queues a probe."""
    estimate = estimate_training(request, catalog)
    if validate:
        link_probe(response, executor.submit(probe_request_for(request), catalog))
    return estimate
