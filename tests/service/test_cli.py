from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import service.cli
from planner import (
    Catalog,
    CatalogModel,
    DType,
    Engine,
    InferenceEstimate,
    InferenceRequest,
    ServingSpec,
    WeightFormat,
    estimate_inference,
    load_catalog,
)
from planner.describe import ImportDescription
from service.cli import app
from service.examples import QWEN2_5_0_5B_CONFIG
from service.settings import Settings

runner = CliRunner()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[InferenceRequest]:
    """Record every request the CLI hands to the planner (and still answer it)."""
    seen: list[InferenceRequest] = []

    def recording(request: InferenceRequest, catalog: Catalog) -> InferenceEstimate:
        seen.append(request)
        return estimate_inference(request, catalog)

    monkeypatch.setattr(service.cli, "estimate_inference", recording)
    return seen


def test_estimate_flags_map_onto_one_request(calls: list[InferenceRequest]) -> None:
    args = [
        "estimate", "inference",
        "--model", "llama-3-8b", "--gpu", "h200",
        "--prompt-tokens", "7168", "--output-tokens", "1024", "--concurrency", "32",
        "--tp", "2", "--weight-format", "fp8", "--kv-cache-dtype", "fp8",
        "--engine", "sglang", "--gpu-memory-utilization", "0.85",
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    expected = InferenceRequest(
        model="llama-3-8b",
        gpu="h200",
        serving=ServingSpec(
            prompt_tokens=7168,
            output_tokens=1024,
            concurrency=32,
            tensor_parallel=2,
            weight_format=WeightFormat.FP8,
            kv_cache_dtype=DType.FP8,
            engine=Engine.SGLANG,
            gpu_memory_utilization=0.85,
        ),
    )
    assert calls == [expected]


def test_unset_flags_keep_the_planner_defaults(calls: list[InferenceRequest]) -> None:
    assert runner.invoke(app, ["estimate", "inference", "--model", "llama-3-8b"]).exit_code == 0
    assert calls == [InferenceRequest(model="llama-3-8b")]


def test_request_file_with_flags_laid_over(calls: list[InferenceRequest], tmp_path: Path) -> None:
    request = {"model": "mistral-7b-v0.1", "gpu": "l40s", "serving": {"concurrency": 4, "prompt_tokens": 1000}}
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    result = runner.invoke(app, ["estimate", "inference", "--request", str(path), "--concurrency", "16"])
    assert result.exit_code == 0, result.output
    assert calls == [
        InferenceRequest(model="mistral-7b-v0.1", gpu="l40s", serving=ServingSpec(concurrency=16, prompt_tokens=1000))
    ]


def test_model_from_a_config_json_path(calls: list[InferenceRequest], tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(QWEN2_5_0_5B_CONFIG))
    result = runner.invoke(app, ["estimate", "inference", "--model", str(path), "--gpu", "l4"])
    assert result.exit_code == 0, result.output
    assert calls == [InferenceRequest.model_validate({"model": QWEN2_5_0_5B_CONFIG, "gpu": "l4"})]


def test_estimate_json_parses_back() -> None:
    result = runner.invoke(app, ["estimate", "inference", "--model", "llama-3-8b", "--json"])
    assert result.exit_code == 0, result.output
    estimate = InferenceEstimate.model_validate_json(result.stdout)
    assert estimate == estimate_inference(InferenceRequest(model="llama-3-8b"), load_catalog())


def test_estimate_table_names_the_terms() -> None:
    result = runner.invoke(app, ["estimate", "inference", "--model", "llama-3.1-405b", "--gpu", "a100-80gb"])
    assert result.exit_code == 0, result.output
    for word in ("weights/linear", "kv_cache", "total", "fits", "NO:", "capacity", "prefill", "decode", "GiB"):
        assert word in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "llama-3-8b", "--tp", "3"], "serving.tensor_parallel"),
        (["--model", "gpt-9"], "unknown model id 'gpt-9'"),
        (["--model", "llama-3-8b", "--gpu", "tpu-v9"], "unknown gpu id"),
        (["--model", "llama-3-8b", "--gpu-memory-utilization", "1.5"], "serving.gpu_memory_utilization"),
        (["--model", "llama-3-8b", "--concurrency", "0"], "serving.concurrency"),
        ([], "--model"),
        (["--model", "missing.json"], "missing.json"),
        (["--request", "missing.json"], "missing.json"),
    ],
)
def test_bad_estimate_input_exits_2_with_a_message(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["estimate", "inference", *args])
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_bad_option_value_is_a_usage_error() -> None:
    result = runner.invoke(app, ["estimate", "inference", "--model", "llama-3-8b", "--weight-format", "int3"])
    assert result.exit_code == 2
    assert "--weight-format" in result.stderr


def test_models_json() -> None:
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    models = [CatalogModel.model_validate(m) for m in json.loads(result.stdout)]
    assert models == list(load_catalog().models)


def test_models_and_gpus_tables() -> None:
    models = runner.invoke(app, ["models"])
    gpus = runner.invoke(app, ["gpus"])
    assert models.exit_code == gpus.exit_code == 0
    assert all(m.id in models.stdout for m in load_catalog().models)
    assert all(g.id in gpus.stdout for g in load_catalog().gpus)


def test_gpus_json() -> None:
    result = runner.invoke(app, ["gpus", "--json"])
    assert [g["id"] for g in json.loads(result.stdout)] == [g.id for g in load_catalog().gpus]


def test_import_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(QWEN2_5_0_5B_CONFIG))
    table = runner.invoke(app, ["import", str(path)])
    assert table.exit_code == 0, table.output
    assert "494,032,768" in table.stdout
    assert "12,288 B" in table.stdout
    as_json = runner.invoke(app, ["import", str(path), "--json"])
    assert ImportDescription.model_validate_json(as_json.stdout).params.total == 494_032_768


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"model_type": "llama"}', "hidden_size: field required"),
        ('{"model_type": "llama", "hidden_size": ', "not valid JSON"),
        ("[1, 2]", "invalid input"),
    ],
)
def test_import_bad_config_exits_2(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    result = runner.invoke(app, ["import", str(path)])
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_serve_maps_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[Settings] = []
    monkeypatch.setattr(service.cli, "run_server", served.append)
    monkeypatch.setenv("MEMPLAN_PORT", "9001")
    result = runner.invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 0, result.output
    assert [(s.host, s.port) for s in served] == [("0.0.0.0", 9001)]


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "models", "gpus", "import", "estimate"):
        assert command in result.stdout
