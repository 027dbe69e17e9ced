"""Estimates: does it fit, how many sequences, how fast; for serving and for fine-tuning."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request, Response

from planner import InferenceEstimate, InferenceRequest, estimate_inference
from planner.batch import BatchRequest, BatchResult
from planner.training.estimate import TrainingEstimate, TrainingRequest, estimate_training
from service.auth import check_write_access, credentials_of
from service.batch_output import batch_response
from service.deps import CatalogDep, ProbeExecutorDep, SettingsDep
from service.examples import BATCH_EXAMPLES, INFERENCE_EXAMPLES, TRAINING_EXAMPLES
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


BATCH_FORMATS: dict[int | str, dict[str, Any]] = {
    200: {
        "model": BatchResult,
        "description": "Every item's answer in order (application/json); one JSON object per line as each item is "
        "computed (Accept: application/x-ndjson); a flat table (Accept: text/csv).",
        "content": {"application/x-ndjson": {"schema": {"type": "string"}}, "text/csv": {"schema": {"type": "string"}}},
    }
}


@router.post("/batch", response_class=Response, responses=BATCH_FORMATS)
def batch(
    request: Annotated[BatchRequest, Body(openapi_examples=BATCH_EXAMPLES)],
    catalog: CatalogDep,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """Many estimates (items or a grid): results in order, an error per bad item; NDJSON or CSV by Accept."""
    return batch_response(request, catalog, accept)
