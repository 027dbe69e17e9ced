"""The CLI speaks the engines' option names (vLLM's), shows its defaults and version, compares dtypes, imports a
directory or a Hugging Face id, and shows a probe's progress."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import service.cli_inference
import service.cli_probe
from planner import (
    Catalog,
    DType,
    Engine,
    InferenceEstimate,
    InferenceRequest,
    ServingSpec,
    WeightFormat,
    estimate_inference,
)
from planner.probe import ProbeRequest, ProbeResult
from service import __version__
from service.cli import app
from service.examples import QWEN2_5_0_5B_CONFIG
from tests.service import probe_runners
from tests.service.test_hub import fake_cache

runner = CliRunner()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[InferenceRequest]:
    seen: list[InferenceRequest] = []

    def recording(request: InferenceRequest, catalog: Catalog) -> InferenceEstimate:
        seen.append(request)
        return estimate_inference(request, catalog)

    monkeypatch.setattr(service.cli_inference, "estimate_inference", recording)
    return seen


def test_vllm_flags_map_onto_one_request(calls: list[InferenceRequest]) -> None:
    args = [
        "estimate", "inference", "--model", "llama-3-8b", "--gpu", "l40s",
        "-tp", "2", "--max-num-seqs", "64", "--max-model-len", "8192", "--quantization", "awq",
        "--dtype", "float16", "--kv-cache-dtype", "fp8_e4m3", "--block-size", "32", "--engine-version", "0.19.0",
        "--gpu-memory-utilization", "0.85", "--max-num-batched-tokens", "4096", "--concurrency", "16",
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    serving = ServingSpec(
        tensor_parallel=2,
        max_num_seqs=64,
        prompt_tokens=8192 - 256,  # --max-model-len: each sequence at the model length, less the default output
        output_tokens=256,
        weight_format=WeightFormat.INT4_AWQ,
        embedding_dtype=DType.FP16,
        activation_dtype=DType.FP16,
        kv_cache_dtype=DType.FP8,
        block_size=32,
        engine_version="0.19.0",
        gpu_memory_utilization=0.85,
        max_num_batched_tokens=4096,
        concurrency=16,
    )
    # l40s has vllm kernel tables: --concurrency is also the load
    assert calls == [InferenceRequest(model="llama-3-8b", gpu="l40s", serving=serving, load={"concurrency": 16})]


def test_decode_context_parallel_flag(calls: list[InferenceRequest]) -> None:
    # vLLM's -dcp / --decode-context-parallel-size: DeepSeek-V3's latent cache striped over the 8 TP GPUs
    args = ["estimate", "inference", "--model", "deepseek-v3", "--gpu", "h100-pcie", "--tp", "8", "-dcp", "8",
            "--quantization", "fp8_block", "--prompt-tokens", "32768"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert calls[0].serving.decode_context_parallel == 8
    assert "TP 8, DCP 8" in result.output and "decode context parallel" in result.output
    bad = runner.invoke(app, ["estimate", "inference", "--model", "llama-3-8b", "--tp", "2", "-dcp", "2"])
    assert bad.exit_code != 0 and "decode_context_parallel" in bad.output


def test_long_option_names_and_no_load_without_kernel_tables(calls: list[InferenceRequest]) -> None:
    args = ["estimate", "inference", "--model", "llama-3-8b", "--gpu", "l4", "--tensor-parallel-size", "1",
            "--concurrency", "8", "--dtype", "bfloat16", "--engine", "vllm"]  # fmt: skip
    assert runner.invoke(app, args).exit_code == 0
    serving = ServingSpec(concurrency=8, tensor_parallel=1, engine=Engine.VLLM, embedding_dtype=DType.BF16,
                          activation_dtype=DType.BF16, weight_format=WeightFormat.BF16)  # fmt: skip
    assert calls == [InferenceRequest(model="llama-3-8b", gpu="l4", serving=serving)]  # l4: no kernel tables


def test_bad_quantization_names_the_choices() -> None:
    result = runner.invoke(app, ["estimate", "inference", "--model", "llama-3-8b", "--quantization", "int3"])
    assert result.exit_code == 2
    assert "awq" in result.stderr and "--quantization" in result.stderr


def test_version() -> None:
    for flag in ("--version", "-V"):
        result = runner.invoke(app, [flag])
        assert result.exit_code == 0
        assert result.stdout.strip() == f"memplan {__version__}"


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m|[│╭╮╰╯─]", " ", text)


def test_help_shows_the_defaults() -> None:
    result = runner.invoke(app, ["estimate", "inference", "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    assert result.exit_code == 0
    text = " ".join(_plain(result.stdout).split())
    for flag in ("--tensor-parallel-size", "-tp", "--max-num-seqs", "--max-model-len", "--quantization", "--dtypes"):
        assert flag in text
    assert "[default: (2048)]" in text  # prompt tokens, from ServingSpec
    assert "[default: (vllm)]" in text
    training = runner.invoke(app, ["estimate", "training", "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    assert "[default: (4096)]" in " ".join(_plain(training.stdout).split())  # TrainingSpec.sequence_length


def test_dtypes_comparison_table(calls: list[InferenceRequest]) -> None:
    args = ["estimate", "inference", "--model", "llama-3-8b", "--dtypes", "bf16", "fp8", "int4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert [c.serving.weight_format for c in calls] == [WeightFormat.BF16, WeightFormat.FP8, WeightFormat.INT4_AWQ]
    lines = result.stdout.splitlines()
    assert any(line.startswith("dtype") and "weights GiB" in line for line in lines)
    rows = {line.split()[0] for line in lines if line.split()}
    assert {"bf16", "fp8", "int4"} <= rows


def test_dtypes_as_a_comma_list_and_json(calls: list[InferenceRequest]) -> None:
    result = runner.invoke(app, ["estimate", "inference", "--model", "llama-3-8b", "--dtypes", "bf16,nf4", "--json"])
    assert result.exit_code == 0, result.output
    assert [row["dtype"] for row in json.loads(result.stdout)] == ["bf16", "nf4"]


def test_stray_arguments_without_dtypes_are_an_error() -> None:
    result = runner.invoke(app, ["estimate", "inference", "--model", "llama-3-8b", "fp8"])
    assert result.exit_code == 2


def test_import_a_directory(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(QWEN2_5_0_5B_CONFIG))
    result = runner.invoke(app, ["import", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["family"] == "qwen2"


def test_import_a_hugging_face_id_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(fake_cache(tmp_path)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = runner.invoke(app, ["import", "Qwen/Qwen2.5-0.5B", "--json"])
    assert result.exit_code == 0, result.output
    missing = runner.invoke(app, ["import", "someone/not-here"])
    assert missing.exit_code == 2
    assert "someone/not-here" in missing.stderr


def test_model_by_directory_and_hugging_face_id(
    calls: list[InferenceRequest], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(fake_cache(tmp_path / "hub")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(QWEN2_5_0_5B_CONFIG))
    for model in (str(tmp_path / "model"), "Qwen/Qwen2.5-0.5B"):
        assert runner.invoke(app, ["estimate", "inference", "--model", model, "--gpu", "l4"]).exit_code == 0
    expected = InferenceRequest.model_validate({"model": QWEN2_5_0_5B_CONFIG, "gpu": "l4"})
    assert calls == [expected, expected]


def test_a_size_is_a_model_too(calls: list[InferenceRequest], tmp_path: Path) -> None:
    path = tmp_path / "size.json"
    path.write_text(json.dumps({"size": "70B", "attention": "GQA"}))
    result = runner.invoke(app, ["estimate", "inference", "--model", str(path), "-tp", "4"])
    assert result.exit_code == 0, result.output
    assert "architecture assumed from size 70B" in result.stdout


def test_probe_reports_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    phases: list[str] = []

    def recording(request: ProbeRequest, progress: object = None) -> ProbeResult:
        assert callable(progress)
        progress("measuring")
        phases.append("called")
        return probe_runners.canned(request)

    monkeypatch.setattr(service.cli_probe, "run_probe", recording)
    assert runner.invoke(app, ["probe"]).exit_code == 0
    assert phases == ["called"]


def test_run_probe_passes_progress_to_a_runner_that_takes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMPLAN_PROBE_RUNNER", f"{probe_runners.MODULE}:phased")
    monkeypatch.setenv("MEMPLAN_TEST_PHASE_HOLD_S", "0")
    heard: list[str] = []
    result = service.cli_probe.run_probe(ProbeRequest(), progress=heard.append)
    assert heard == ["importing the probe runner (torch)", "measuring a canned step"]
    assert result == probe_runners.canned(ProbeRequest())


@pytest.mark.parametrize(
    "command",
    [
        ["estimate", "training"],
        ["plan", "training"],
        ["plan", "serving", "--input-tokens", "256", "--output-tokens", "16", "--concurrency", "2", "--tpot-ms", "100",
         "--gpus", "h100-sxm", "--engines", "vllm", "--max-gpus", "1"],
    ],
)  # fmt: skip
def test_every_model_option_takes_a_hugging_face_id(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the training and plan commands passed the id on unread: a 422 "read its config.json first"
    monkeypatch.setenv("HF_HUB_CACHE", str(fake_cache(tmp_path / "hub")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = runner.invoke(app, [*command, "--model", "Qwen/Qwen2.5-0.5B", "--json"])
    assert result.exit_code == 0, result.output
