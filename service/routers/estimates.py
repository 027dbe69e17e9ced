"""Estimates: does it fit, how many sequences, how fast; for serving and for fine-tuning."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Request, Response

from planner import InferenceEstimate, InferenceRequest, estimate_inference
from planner.training.estimate import TrainingEstimate, TrainingRequest, estimate_training
from service.auth import check_write_access, credentials_of
from service.deps import CatalogDep, ProbeExecutorDep, SettingsDep
from service.examples import INFERENCE_EXAMPLES, TRAINING_EXAMPLES
from service.openapi import AUTH, BODY, QUEUE_FULL, UNAVAILABLE
from service.probes.admission import probe_request_for
from service.routers.probes import link_probe

# 401/403, 429 and 503 concern ?validate=true only (it queues a probe)
router = APIRouter(prefix="/v1/estimates", tags=["estimates"], responses={**BODY, **QUEUE_FULL, **AUTH, **UNAVAILABLE})

ValidateFlag = Annotated[
    bool,
    Query(
        description="Also queue a probe of the same model and settings (scaled down, backend auto); its job id "
        "comes back in the X-Memplan-Probe header and its location in Link. 429 when the probe queue is full; "
        "with MEMPLAN_API_KEY set, it needs 'Authorization: Bearer <key>'."
    ),
]


@router.post("/inference", response_model=InferenceEstimate)
def inference(
    request: Annotated[InferenceRequest, Body(openapi_examples=INFERENCE_EXAMPLES)],
    catalog: CatalogDep,
    executor: ProbeExecutorDep,
    settings: SettingsDep,
    raw: Request,
    response: Response,
    validate: ValidateFlag = False,
) -> InferenceEstimate:
    """Serving: memory per GPU, fit, KV capacity, prefill/decode speed; ?validate=true also queues a probe of it."""
    estimate = estimate_inference(request, catalog)
    if validate:
        check_write_access(credentials_of(raw), settings)
        link_probe(response, executor.submit(probe_request_for(request), catalog))
    return estimate


@router.post("/training", response_model=TrainingEstimate)
def training(
    request: Annotated[TrainingRequest, Body(openapi_examples=TRAINING_EXAMPLES)],
    catalog: CatalogDep,
    executor: ProbeExecutorDep,
    settings: SettingsDep,
    raw: Request,
    response: Response,
    validate: ValidateFlag = False,
) -> TrainingEstimate:
    """Fine-tuning: memory per phase, fit, max micro-batch, changes, tokens/s, MFU; ?validate=true queues a probe."""
    estimate = estimate_training(request, catalog)
    if validate:
        check_write_access(credentials_of(raw), settings)
        link_probe(response, executor.submit(probe_request_for(request), catalog))
    return estimate
