"""Plans: what to deploy for a workload under latency targets, and what to change so a training run fits."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from planner.plans.result import PlanResult
from planner.plans.search import plan_serving
from planner.plans.spec import PlanRequest
from planner.plans.training_fit import TrainingFitRequest, TrainingFitResult, fit_training
from service.deps import CatalogDep
from service.examples import PLAN_EXAMPLES, TRAINING_FIT_EXAMPLES
from service.hub import with_hub_model
from service.openapi import BODY

router = APIRouter(prefix="/v1/plans", tags=["plans"], responses=BODY)


@router.post("", response_model=PlanResult)
def plan(request: Annotated[PlanRequest, Body(openapi_examples=PLAN_EXAMPLES)], catalog: CatalogDep) -> PlanResult:
    """Serving plans meeting the SLO, cheapest per million output tokens first; the frontier; every rejection."""
    return plan_serving(with_hub_model(request), catalog)


@router.post("/training", response_model=TrainingFitResult)
def training(
    request: Annotated[TrainingFitRequest, Body(openapi_examples=TRAINING_FIT_EXAMPLES)], catalog: CatalogDep
) -> TrainingFitResult:
    """Make a fine-tuning run fit: every combination of changes that fits, fastest first."""
    return fit_training(with_hub_model(request), catalog)
