"""`memplan plan serving|training` and `memplan sweep`: flags map onto the request objects of the HTTP API."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import service.cli_plans
from planner import Catalog
from planner.plans.result import PlanResult
from planner.plans.search import plan_serving
from planner.plans.spec import PlanRequest
from planner.plans.training_fit import TrainingFitRequest, TrainingFitResult, fit_training
from service.cli import app

runner = CliRunner()
SMALL = ["--gpus", "h100-sxm", "--engines", "vllm", "--max-gpus", "4"]


@pytest.fixture
def plans(monkeypatch: pytest.MonkeyPatch) -> list[PlanRequest]:
    seen: list[PlanRequest] = []

    def recording(request: PlanRequest, catalog: Catalog) -> PlanResult:
        seen.append(request)
        return plan_serving(request, catalog)

    monkeypatch.setattr(service.cli_plans, "plan_serving", recording)
    return seen


def test_plan_flags_map_onto_one_plan_request(plans: list[PlanRequest]) -> None:
    args = ["plan", "serving", "--model", "llama-3.1-8b", "--input-tokens", "2048", "--output-tokens", "256",
            "--concurrency", "32", "--ttft-ms", "800", "--tpot-ms", "30", "--percentile", "p99", *SMALL,
            "--max-plans", "2"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (request,) = plans
    assert request == PlanRequest.model_validate(
        {
            "model": "llama-3.1-8b",
            "workload": {"input_tokens": 2048, "output_tokens": 256, "concurrency": 32},
            "slo": {"ttft_ms": 800, "tpot_ms": 30, "percentile": "p99"},
            "constraints": {"gpus": ["h100-sxm"], "engines": ["vllm"], "max_gpus": 4},
            "max_plans": 2,
        }
    )
    assert "TTFT p99" in result.output and "$/M out" in result.output and "rejected candidates" in result.output


def test_plan_request_file_with_flags_laid_over(tmp_path: Path, plans: list[PlanRequest]) -> None:
    body = {
        "model": "llama-3.1-8b",
        "workload": {"input_tokens": 1024, "output_tokens": 128, "request_rate": 2.0},
        "slo": {"tpot_ms": 50},
        "constraints": {"gpus": ["h100-sxm"], "engines": ["vllm"], "max_gpus": 2},
    }
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(body))
    result = runner.invoke(app, ["plan", "serving", "--request", str(path), "--ttft-ms", "900", "--json"])
    assert result.exit_code == 0, result.output
    assert plans[0].slo.ttft_ms == 900 and plans[0].workload.request_rate == 2.0
    assert PlanResult.model_validate_json(result.output).workload.request_rate == 2.0


def test_plan_bad_input_exits_2() -> None:
    result = runner.invoke(app, ["plan", "serving", "--model", "llama-3-8b", "--input-tokens", "10",
                                 "--output-tokens", "10", "--concurrency", "1"])  # fmt: skip
    assert result.exit_code == 2
    assert "slo: Field required" in result.output


def test_plan_training_maps_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[TrainingFitRequest] = []

    def recording(request: TrainingFitRequest, catalog: Catalog) -> TrainingFitResult:
        seen.append(request)
        narrow = request.model_copy(update={"search": request.search.model_copy(
            update={"tensor_parallel": (1,), "pipeline_parallel": (1,), "methods": ("keep",)})})  # fmt: skip
        return fit_training(narrow, catalog)

    monkeypatch.setattr(service.cli_plans, "fit_training", recording)
    args = ["plan", "training", "--model", "llama-3-8b", "--gpu", "l40s", "--micro-batch", "4", "--seq-len", "2048",
            "--top", "3"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (request,) = seen
    assert (request.gpu, request.training.micro_batch_size, request.training.sequence_length) == ("l40s", 4, 2048)
    assert request.search.top == 3
    assert "as requested:" in result.output


def test_sweep_writes_csv(tmp_path: Path) -> None:
    batch = {"grid": {"base": {"model": "llama-3-8b"}, "axes": {"serving.concurrency": [1, 8, 64]}}}
    path = tmp_path / "batch.json"
    path.write_text(json.dumps(batch))
    result = runner.invoke(app, ["sweep", "--request", str(path)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [r["serving.concurrency"] for r in rows] == ["1", "8", "64"]
    out = tmp_path / "out.ndjson"
    result = runner.invoke(app, ["sweep", "--request", str(path), "--format", "ndjson", "--out", str(out)])
    assert result.exit_code == 0 and len(out.read_text().splitlines()) == 3
    result = runner.invoke(app, ["sweep", "--request", str(path), "--format", "xml"])
    assert result.exit_code == 2 and "not one of json, ndjson, csv" in result.output
