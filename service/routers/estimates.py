"""Estimates: does it fit, how many sequences, how fast; for serving and for fine-tuning."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request, Response

from planner import InferenceRequest, estimate_inference
from planner.batch import BatchRequest, BatchResult
from planner.training.estimate import TrainingRequest, estimate_training
from service.answers import (
    CSV_MEDIA_TYPE,
    Detail,
    InferenceAnswer,
    InferenceBriefReadable,
    OutputFormat,
    TrainingAnswer,
    TrainingBriefReadable,
    inference_response,
    training_response,
    wants_csv,
)
from service.auth import check_write_access, credentials_of
from service.batch_output import batch_response
from service.deps import CatalogDep, ProbeExecutorDep, SettingsDep
from service.examples import BATCH_EXAMPLES, INFERENCE_EXAMPLES, TRAINING_EXAMPLES
from service.hub import with_hub_items, with_hub_model
from service.openapi import AUTH, BODY, QUEUE_FULL, UNAVAILABLE
from service.probes.admission import probe_request_for
from service.routers.probes import probe_link_headers

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
DetailQuery = Annotated[
    Detail,
    Query(
        description="'full': the planner's estimate with `summary` on top and readable siblings (`*_gib`, `*_ms`, "
        "`*_pct`) beside the exact figures; 'summary': the summary and key numbers, no model spec or GPU datasheet."
    ),
]
FormatQuery = Annotated[
    OutputFormat | None,
    Query(alias="format", description="'csv': the memory terms (serving) or every phase's terms (training) as CSV."),
]
AcceptHeader = Annotated[str | None, Header(description="text/csv asks for the CSV table, as ?format=csv does.")]


def _responses(table: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}}, "description": f"JSON, or {table}."}}


@router.post(
    "/inference",
    response_model=InferenceAnswer | InferenceBriefReadable,
    responses=_responses("CSV of the memory terms: term, bytes, gib, formula, detail, source"),
)
def inference(
    request: Annotated[InferenceRequest, Body(openapi_examples=INFERENCE_EXAMPLES)],
    catalog: CatalogDep,
    executor: ProbeExecutorDep,
    settings: SettingsDep,
    raw: Request,
    validate: ValidateFlag = False,
    detail: DetailQuery = "full",
    output_format: FormatQuery = None,
    accept: AcceptHeader = None,
) -> Response:
    """Serving: memory per GPU, fit, KV capacity, prefill/decode speed (?detail, ?format=csv; ?validate probes it)."""
    request = with_hub_model(request)
    estimate = estimate_inference(request, catalog)
    headers: dict[str, str] = {}
    if validate:
        check_write_access(credentials_of(raw), settings)
        headers = probe_link_headers(executor.submit(probe_request_for(request), catalog))
    return inference_response(estimate, detail, wants_csv(output_format, accept), headers)


@router.post(
    "/training",
    response_model=TrainingAnswer | TrainingBriefReadable,
    responses=_responses("CSV of every phase's terms: phase, term, bytes, gib, peak, formula, source"),
)
def training(
    request: Annotated[TrainingRequest, Body(openapi_examples=TRAINING_EXAMPLES)],
    catalog: CatalogDep,
    executor: ProbeExecutorDep,
    settings: SettingsDep,
    raw: Request,
    validate: ValidateFlag = False,
    detail: DetailQuery = "full",
    output_format: FormatQuery = None,
    accept: AcceptHeader = None,
) -> Response:
    """Fine-tuning: memory per phase, fit, max micro-batch, changes, tokens/s, MFU (?detail, ?format=csv, ?validate)."""
    request = with_hub_model(request)
    estimate = estimate_training(request, catalog)
    headers: dict[str, str] = {}
    if validate:
        check_write_access(credentials_of(raw), settings)
        headers = probe_link_headers(executor.submit(probe_request_for(request), catalog))
    return training_response(estimate, detail, wants_csv(output_format, accept), headers)


BATCH_FORMATS: dict[int | str, dict[str, Any]] = {
    200: {
        "model": BatchResult,
        "description": "Every item's answer in order (application/json): the planner's exact estimate (the numbers "
        "of /v1/estimates/inference or /training, without their summary and readable *_gib/*_ms siblings) or only "
        "its `fields`; one JSON object per line as each item is computed (Accept: application/x-ndjson); a flat "
        "table (Accept: text/csv). Items not started within MEMPLAN_BATCH_TIME_LIMIT_S (default 300 s) of the "
        "first are answered with a 503 error each.",
        "content": {"application/x-ndjson": {"schema": {"type": "string"}}, "text/csv": {"schema": {"type": "string"}}},
    }
}


@router.post("/batch", response_class=Response, responses=BATCH_FORMATS)
def batch(
    request: Annotated[BatchRequest, Body(openapi_examples=BATCH_EXAMPLES)],
    catalog: CatalogDep,
    settings: SettingsDep,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """Many estimates (items or a grid): in order, an error per bad item or late item; NDJSON or CSV by Accept."""
    return batch_response(with_hub_items(request), catalog, accept, settings.batch_time_limit_s)
