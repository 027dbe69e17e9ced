"""run_probe end to end: what it runs, what it reports, and what it refuses (SpecError at the request field)."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import models  # noqa: E402
from models import ProbeTimeoutError, run_probe  # noqa: E402
from planner import ModelSpec, SpecError  # noqa: E402
from planner.probe import ProbeRequest, ProbeResult  # noqa: E402

TINY = {"sequence_length": 64, "micro_batch_size": 2}


def probe(**request: Any) -> ProbeResult:
    return run_probe(ProbeRequest.model_validate({"backend": "cpu", **request}))


def by_name(result: ProbeResult) -> dict[str, Any]:
    return {c.name: c for c in result.comparisons}


def test_public_api() -> None:
    assert set(models.__all__) == {
        "BackendUnavailableError", "CpuBackend", "CudaBackend", "FakeBackend", "GridCase", "Measurement",
        "ProbeDetails", "ProbeTimeoutError", "default_grid", "full_size_grid", "get_backend", "quick_grid",
        "run_probe", "run_probe_detailed",
    }  # fmt: skip
    assert all(hasattr(models, name) for name in models.__all__)


def test_training_probe_reports_the_run_and_its_comparisons() -> None:
    result = probe()  # the default request: Llama-3-8B scaled down, bf16 AdamW, 2 × 128 tokens
    c = by_name(result)
    assert result.backend == "cpu" and result.kind == "training" and not result.out_of_memory
    assert result.torch_version == torch.__version__ and result.transformers_version == transformers.__version__
    assert result.spec.num_layers == 2 and result.spec.attention_kind == "GQA"
    assert result.hf_config["attn_implementation"] == "sdpa" and result.training is not None
    for name in ("weights", "trainable_weights", "saved_activations"):
        assert c[name].exact and c[name].measured_bytes == c[name].estimated_bytes, name
    for name in ("peak/first_step", "peak/steady"):
        assert not c[name].exact and abs(c[name].rel_error) < 0.001, name
    assert result.peak_rel_error == c["peak/steady"].rel_error
    assert {"build_s", "first_step_s", "steady_step_s", "total_s"} <= set(result.timings_s)


def test_lora_probe_trains_only_the_adapters() -> None:
    result = probe(training={**TINY, "method": {"kind": "lora", "rank": 4, "target_modules": ["q_proj", "v_proj"]}})
    c = by_name(result)
    assert 0 < c["trainable_weights"].measured_bytes < c["weights"].measured_bytes / 10
    assert c["trainable_weights"].measured_bytes == c["trainable_weights"].estimated_bytes


def test_inference_probe_compares_the_kv_cache_exactly() -> None:
    serving = {"engine": "transformers", "prompt_tokens": 32, "output_tokens": 4, "concurrency": 2}
    result = probe(kind="inference", model="deepseek-v2-lite", serving=serving)
    c = by_name(result)
    assert result.kind == "inference" and result.serving is not None
    assert result.serving.cublas_workspace_bytes == 0  # there is no cuBLAS on a CPU
    assert c["kv_cache"].exact and c["kv_cache"].measured_bytes == c["kv_cache"].estimated_bytes > 0
    assert c["weights"].measured_bytes == c["weights"].estimated_bytes
    assert not c["peak/inference"].exact


def test_full_size_runs_only_on_the_fake_backend() -> None:
    spec = ModelSpec(num_layers=3, hidden_size=512, num_heads=8, num_kv_heads=2, ffn_dim=1536, vocab_size=4096)
    fake = probe(model=spec.model_dump(), backend="fake", scale_down=False, training=TINY)
    assert fake.backend == "fake" and fake.spec.num_layers == 3 and fake.spec.hidden_size == 512
    with pytest.raises(SpecError) as err:
        probe(model=spec.model_dump(), scale_down=False, training=TINY)
    assert err.value.problems[0].loc == ("scale_down",)


@pytest.mark.parametrize(
    ("request_", "loc"),
    [
        ({"training": {"method": {"kind": "qlora"}}}, ("training", "method", "kind")),
        ({"training": {"method": {"kind": "adapter"}}}, ("training", "method", "kind")),
        ({"training": {"optimizer": {"kind": "adamw_8bit"}}}, ("training", "optimizer", "kind")),
        ({"training": {"gradient_checkpointing": "selective"}}, ("training", "gradient_checkpointing")),
        ({"training": {"precision": "bf16_fp32_master"}}, ("training", "precision")),
        ({"training": {"data_parallel": 2}}, ("training", "data_parallel")),
        ({"training": {"method": {"kind": "prefix"}, "gradient_checkpointing": "full"}},
         ("training", "gradient_checkpointing")),
        ({"training": {"sequence_length": 32768, "micro_batch_size": 4}}, ("training", "micro_batch_size")),
        ({"scale": {"head_dim": 256, "max_heads": 64}}, ("scale",)),
        ({"kind": "inference", "serving": {"engine": "vllm"}}, ("serving", "engine")),
        ({"kind": "inference", "serving": {"engine": "transformers", "kv_cache_dtype": "fp8"}},
         ("serving", "kv_cache_dtype")),
        ({"model": "no-such-model"}, ("model",)),
    ],
)  # fmt: skip
def test_what_cannot_be_probed_is_a_spec_error(request_: dict[str, Any], loc: tuple[str, ...]) -> None:
    with pytest.raises(SpecError) as err:
        probe(**request_)
    assert err.value.problems[0].loc == loc


def test_qlora_is_refused_with_the_reason() -> None:
    with pytest.raises(SpecError, match="bitsandbytes"):
        probe(training={"method": {"kind": "qlora"}})


def test_out_of_memory_is_a_result(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_memory(self: Any, x: Any) -> Any:
        raise torch.OutOfMemoryError("simulated: the MLP does not fit")

    monkeypatch.setattr(transformers.models.llama.modeling_llama.LlamaMLP, "forward", no_memory)
    result = probe(training=TINY)
    c = by_name(result)
    assert result.out_of_memory
    assert c["weights"].measured_bytes == c["weights"].estimated_bytes
    assert "peak/first_step/until_oom" in c and "peak/steady" not in c
    assert result.peak_rel_error == c["peak/first_step/until_oom"].rel_error


def test_timeout_stops_the_probe() -> None:
    with pytest.raises(ProbeTimeoutError, match="timeout_s"):
        probe(training=TINY, timeout_s=1e-6)
