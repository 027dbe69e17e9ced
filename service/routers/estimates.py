"""Estimates: does it fit, how many sequences, how fast; for serving and for fine-tuning."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from planner import InferenceEstimate, InferenceRequest, estimate_inference
from planner.training import TrainingEstimate, TrainingRequest, estimate_training
from service.deps import CatalogDep
from service.examples import INFERENCE_EXAMPLES, TRAINING_EXAMPLES

router = APIRouter(prefix="/v1/estimates", tags=["estimates"])


@router.post("/inference", response_model=InferenceEstimate)
def inference(
    request: Annotated[InferenceRequest, Body(openapi_examples=INFERENCE_EXAMPLES)], catalog: CatalogDep
) -> InferenceEstimate:
    """Serving: memory per GPU term by term, fit, KV capacity (sequences, context), prefill and decode speed."""
    return estimate_inference(request, catalog)


@router.post("/training", response_model=TrainingEstimate)
def training(
    request: Annotated[TrainingRequest, Body(openapi_examples=TRAINING_EXAMPLES)], catalog: CatalogDep
) -> TrainingEstimate:
    """Fine-tuning: memory per GPU phase by phase, fit, largest micro-batch, what to change, tokens/s and MFU."""
    return estimate_training(request, catalog)
