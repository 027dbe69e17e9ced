"""memplan's plans vs aiconfigurator's `cli default` (benchmarks/compare_plans_aic.py), without aiconfigurator: the
comparison half reads aiconfigurator's committed answers (benchmarks/data/silicon/aiconfigurator-0.12.0-default-*.json)
and must reproduce memplan's side from plan_serving itself, and the committed report must be that run's."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from planner import load_catalog
from planner.plans.search import plan_serving
from planner.plans.spec import PlanRequest

ROOT = Path(__file__).resolve().parents[2]
CASE = "llama70b-fp8-h200-vllm-1k1k"  # one where memplan returns a plan


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compare_plans_aic", ROOT / "benchmarks" / "compare_plans_aic.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_plans_aic"] = module
    spec.loader.exec_module(module)
    return module


compare = _load()


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    out: dict[str, Any] = compare.compare_case(compare.CASE_BY_NAME[CASE])
    return out


def test_every_case_has_aiconfigurators_saved_answer() -> None:
    assert len(compare.CASES) >= 5
    for case in compare.CASES:
        saved = json.loads(compare.aic_path(case["name"]).read_text())
        asked = ("aic_model", "system", "backend", "isl", "osl", "ttft_ms", "tpot_ms", "total_gpus")
        assert all(saved["case"][k] == case[k] for k in asked), case["name"]  # aiconfigurator was asked this case
        assert saved["agg"], case["name"]  # every case got an aggregated recommendation


def test_memplan_is_asked_aiconfigurators_question(result: dict[str, Any]) -> None:
    saved = json.loads(compare.aic_path(CASE).read_text())
    pick, req = saved["agg"][0], result["memplan_request"]
    assert req["constraints"]["gpus"] == ["h200"] and req["constraints"]["engines"] == ["vllm"]
    assert req["constraints"]["max_gpus"] == saved["case"]["total_gpus"] == 8
    assert req["workload"] == {"input_tokens": 1024, "output_tokens": 1024, "concurrency": pick["total_concurrency"]}
    assert req["slo"]["ttft_ms"] == 1000 and req["slo"]["tpot_ms"] == 20 and req["slo"]["percentile"] == "p50"
    assert req["slo"]["min_tokens_per_s_per_user"] == pytest.approx(50)


def test_memplan_side_is_what_plan_serving_answers(result: dict[str, Any]) -> None:
    answer = plan_serving(PlanRequest.model_validate(result["memplan_request"]), load_catalog())
    assert answer.plans
    top, mine = answer.plans[0], result["memplan"]["plan"]
    assert mine["label"] == top.label
    assert mine["tp"] == top.pools[0].tensor_parallel and mine["replicas"] == top.pools[0].replicas
    assert mine["tokens_per_s_per_gpu"] == pytest.approx(top.tokens_per_s_per_gpu, abs=0.1)
    assert mine["tokens_per_s_per_user"] == pytest.approx(top.tokens_per_s_per_user, abs=0.01)
    best = max((f for f in answer.frontier if f.meets_slo), key=lambda f: f.tokens_per_s_per_gpu)
    assert result["memplan"]["frontier_best"]["label"] == best.label


def test_measured_rows_and_table(result: dict[str, Any]) -> None:
    checks = {c["who"]: c for c in result["checks"]}
    row = checks["aiconfigurator"]["measured"]
    assert row["tp"] == result["aiconfigurator"]["agg"]["tp"]  # the same TP, the concurrency nearest
    assert row["concurrency"] in row["measured_concurrencies"]
    osl = 1024
    assert row["tokens_per_s_per_gpu"] == pytest.approx(
        row["concurrency"] * osl / ((row["ttft_ms"] + (osl - 1) * row["tpot_ms"]) / 1e3) / row["tp"], rel=1e-3
    )
    assert result["verdict"]["text"]
    table = compare.markdown({"cases": [result]})
    for tool in ("aiconfigurator (agg)", "memplan (plan)", "memplan (frontier best)", "measured best"):
        assert tool in table
    assert "aiconfigurator" not in sys.modules  # the comparison half never imports it


def test_committed_report_is_this_run(result: dict[str, Any]) -> None:
    report = json.loads((ROOT / "benchmarks" / "results" / "plans-vs-aiconfigurator.json").read_text())
    committed = {c["case"]["name"]: c for c in report["cases"]}
    assert set(committed) == set(compare.CASE_BY_NAME)
    assert committed[CASE]["memplan"]["plan"]["label"] == result["memplan"]["plan"]["label"]
    assert committed[CASE]["verdict"] == result["verdict"]
    md = (ROOT / "benchmarks" / "results" / "plans-vs-aiconfigurator.md").read_text()
    assert "## README draft" in md
