from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import service.cli
import service.cli_inference
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
from planner.model.describe import ImportDescription
from planner.serving.load import LoadSpec
from planner.training.estimate import TrainingEstimate, TrainingRequest, estimate_training
from planner.training.spec import (
    AdapterSpec,
    AttentionImpl,
    Checkpointing,
    FullFineTune,
    IA3Spec,
    LoRASpec,
    OptimizerSpec,
    Precision,
    PrefixTuningSpec,
    PromptTuningSpec,
    QLoRASpec,
    TrainingSpec,
)
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

    monkeypatch.setattr(service.cli_inference, "estimate_inference", recording)
    return seen


def test_estimate_flags_map_onto_one_request(calls: list[InferenceRequest]) -> None:
    args = [
        "estimate", "inference",
        "--model", "llama-3-8b", "--gpu", "h200",
        "--prompt-tokens", "7168", "--output-tokens", "1024", "--concurrency", "32",
        "--tp", "2", "--weight-format", "fp8", "--kv-cache-dtype", "fp8",
        "--engine", "vllm", "--gpu-memory-utilization", "0.85",
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
            engine=Engine.VLLM,
            gpu_memory_utilization=0.85,
        ),
        load=LoadSpec(concurrency=32),  # h200 with vllm has kernel tables: --concurrency is also the load
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
    serving = ServingSpec(concurrency=16, prompt_tokens=1000)
    assert calls == [
        InferenceRequest(model="mistral-7b-v0.1", gpu="l40s", serving=serving, load=LoadSpec(concurrency=16))
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


@pytest.fixture
def training_calls(monkeypatch: pytest.MonkeyPatch) -> list[TrainingRequest]:
    """Record every request `estimate training` hands to the planner (and still answer it)."""
    seen: list[TrainingRequest] = []

    def recording(request: TrainingRequest, catalog: Catalog) -> TrainingEstimate:
        seen.append(request)
        return estimate_training(request, catalog)

    monkeypatch.setattr(service.cli, "estimate_training", recording)
    return seen


def test_training_flags_map_onto_one_request(training_calls: list[TrainingRequest]) -> None:
    args = [
        "estimate", "training",
        "--model", "llama-3-8b", "--gpu", "h200",
        "--method", "qlora", "--rank", "64", "--target-modules", "q_proj, k_proj,v_proj",
        "--optimizer", "adamw_8bit", "--optimizer-impl", "fused",
        "--precision", "bf16_autocast", "--checkpointing", "selective", "--attention", "eager",
        "--micro-batch", "2", "--seq-len", "2048", "--grad-accum", "8",
        "--dp", "4", "--zero", "2", "--first-step",
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    expected = TrainingRequest(
        model="llama-3-8b",
        gpu="h200",
        training=TrainingSpec(
            method=QLoRASpec(rank=64, target_modules=("q_proj", "k_proj", "v_proj")),
            optimizer=OptimizerSpec(kind="adamw_8bit", implementation="fused"),
            precision=Precision.BF16_AUTOCAST,
            gradient_checkpointing=Checkpointing.SELECTIVE,
            attention=AttentionImpl.EAGER,
            micro_batch_size=2,
            sequence_length=2048,
            gradient_accumulation_steps=8,
            data_parallel=4,
            zero_stage=2,
            first_step=True,
        ),
    )
    assert training_calls == [expected]


@pytest.mark.parametrize(
    ("args", "method"),
    [
        ([], FullFineTune()),
        (["--method", "lora", "--target-modules", "all-linear"], LoRASpec(target_modules="all-linear")),
        (["--method", "prefix", "--virtual-tokens", "30"], PrefixTuningSpec(num_virtual_tokens=30)),
        (["--method", "prompt", "--virtual-tokens", "8"], PromptTuningSpec(num_virtual_tokens=8)),
        (["--method", "adapter", "--bottleneck", "32"], AdapterSpec(bottleneck=32)),
        (["--method", "ia3", "--target-modules", "k_proj,v_proj"], IA3Spec(target_modules=("k_proj", "v_proj"))),
    ],
    ids=["defaults", "lora", "prefix", "prompt", "adapter", "ia3"],
)
def test_training_method_flags(training_calls: list[TrainingRequest], args: list[str], method: object) -> None:
    result = runner.invoke(app, ["estimate", "training", "--model", "llama-3-8b", *args])
    assert result.exit_code == 0, result.output
    assert training_calls == [TrainingRequest.model_validate({"model": "llama-3-8b", "training": {"method": method}})]


def test_training_request_file_with_flags_laid_over(training_calls: list[TrainingRequest], tmp_path: Path) -> None:
    request = {
        "model": "qwen2.5-7b",
        "gpu": "a100-80gb",
        "training": {
            "method": {"kind": "lora", "rank": 8, "alpha": 16},
            "optimizer": {"kind": "sgd", "momentum": 0.9},
            "micro_batch_size": 4,
        },
    }
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    args = ["estimate", "training", "--request", str(path), "--rank", "32", "--optimizer-impl", "for_loop", "--dp", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    training = {
        "method": {"kind": "lora", "rank": 32, "alpha": 16},
        "optimizer": {"kind": "sgd", "momentum": 0.9, "implementation": "for_loop"},
        "micro_batch_size": 4,
        "data_parallel": 2,
    }
    assert training_calls == [TrainingRequest.model_validate({**request, "training": training})]


def test_training_method_flag_of_another_kind_replaces_the_file_method(
    training_calls: list[TrainingRequest], tmp_path: Path
) -> None:
    path = tmp_path / "request.json"
    path.write_text(json.dumps({"model": "llama-3-8b", "training": {"method": {"kind": "lora", "rank": 8}}}))
    result = runner.invoke(app, ["estimate", "training", "--request", str(path), "--method", "prompt"])
    assert result.exit_code == 0, result.output
    assert training_calls == [TrainingRequest(model="llama-3-8b", training=TrainingSpec(method=PromptTuningSpec()))]


def test_training_json_parses_back() -> None:
    args = ["estimate", "training", "--model", "llama-3-8b", "--method", "lora", "--rank", "16", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    estimate = TrainingEstimate.model_validate_json(result.stdout)
    request = TrainingRequest(model="llama-3-8b", training=TrainingSpec(method=LoRASpec(rank=16)))
    assert estimate == estimate_training(request, load_catalog())


def test_training_table_names_phases_terms_and_suggestions() -> None:
    result = runner.invoke(app, ["estimate", "training", "--model", "llama-3-70b", "--gpu", "a100-80gb"])
    assert result.exit_code == 0, result.output
    words = ("70,553,706,496 trainable", "optimizer_step", "loss_backward", "optimizer/states", "NO:")
    for word in (*words, "max micro-batch", "suggestion", "8-bit AdamW", "tokens/s", "MFU", "GiB"):
        assert word in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "deepseek-v2-lite", "--method", "ia3"], "training.method.target_modules"),
        (["--model", "llama-3-8b", "--method", "lora", "--target-modules", "foo_proj"], "foo_proj"),
        (["--model", "llama-3-8b", "--method", "dora"], "training.method"),
        (["--model", "llama-3-8b", "--rank", "8"], "training.method.full.rank"),
        (["--model", "llama-3-8b", "--method", "lora", "--rank", "0"], "training.method.lora.rank"),
        (["--model", "llama-3-8b", "--optimizer", "lion"], "training.optimizer.kind"),
        (["--model", "llama-3-8b", "--zero", "4"], "training.zero_stage"),
        (["--model", "llama-3-8b", "--seq-len", "0"], "training.sequence_length"),
        (["--model", "gpt-9"], "unknown model id 'gpt-9'"),
        ([], "--model"),
        (["--request", "missing.json"], "missing.json"),
    ],
)
def test_bad_training_input_exits_2_with_a_message(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["estimate", "training", *args])
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_training_request_file_must_hold_an_object(tmp_path: Path) -> None:
    path = tmp_path / "request.json"
    path.write_text("[1, 2]")
    result = runner.invoke(app, ["estimate", "training", "--request", str(path)])
    assert result.exit_code == 2
    assert "TrainingRequest" in result.stderr


def test_bad_training_enum_is_a_usage_error() -> None:
    result = runner.invoke(app, ["estimate", "training", "--model", "llama-3-8b", "--checkpointing", "partial"])
    assert result.exit_code == 2
    assert "--checkpointing" in result.stderr


def test_estimate_table_shows_the_load_and_its_calibration() -> None:
    # Llama-3.1-70B FP8 on 4 H200s under vLLM at 32 clients: H200 vLLM is a group where the learned residual's TTFT
    # ships (planner/calibration/residual.json), its TPOT does not
    args = ["--model", "llama-3.1-70b", "--gpu", "h200", "-tp", "4", "-q", "fp8", "--concurrency", "32"]
    result = runner.invoke(app, ["estimate", "inference", *args])
    assert result.exit_code == 0, result.output
    assert "under load  TTFT mean" in result.stdout
    assert "calibrated  TTFT mean" in result.stdout and "80 % interval" in result.stdout
    assert "h200/vllm: TTFT median error" in result.stdout and "TPOT mean" not in result.stdout.split("calibrated")[1]
