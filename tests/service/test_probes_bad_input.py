"""Bad probe requests: each is a 4xx, decided before anything is queued, whose error names the offending field."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.service.conftest import SPEC_8B, error_text

PROBES = "/v1/probes"


def probe(**changes: Any) -> dict[str, Any]:
    return {"model": "llama-3-8b", **changes}


def row(body: Any, field: str, id_: str, status: int = 422, path: str = PROBES, method: str = "POST") -> Any:
    return pytest.param(method, path, body, status, field, id=id_)


CASES = [
    row(probe(kind="eval"), "kind", "unknown-kind"),
    row(probe(backend="tpu"), "backend", "unknown-backend"),
    row(probe(backend="cuda"), "backend", "cuda-without-a-cuda-device"),
    row(probe(timeout_s=0), "timeout_s", "timeout-0"),
    row(probe(timeout_s=7200), "timeout_s", "timeout-2h"),
    row(probe(timeout_s="soon"), "timeout_s", "timeout-string"),
    row(probe(scale_down=False), "scale_down", "full-size-on-cpu"),
    row(probe(scale_down=False, backend="auto"), "scale_down", "full-size-on-auto"),
    row(probe(scale={"num_layers": 0}), "scale.num_layers", "scale-zero-layers"),
    row(probe(scale={"num_layers": 9}), "scale.num_layers", "scale-9-layers"),
    row(probe(scale={"vocab_size": 8}), "scale.vocab_size", "scale-tiny-vocab"),
    row(probe(scale={"max_heads": 1000}), "scale.max_heads", "scale-1000-heads"),
    row(probe(scale={"depth": 2}), "scale.depth", "scale-extra-field"),
    row(probe(model="gpt-9"), "model", "unknown-model-id"),
    row(probe(model={**SPEC_8B, "num_kv_heads": 5}), "num_kv_heads", "spec-heads-not-divisible"),
    row(probe(model={"model_type": "qwen2", "hidden_size": 896}), "num_hidden_layers", "config-missing-layers"),
    row(probe(training={"method": {"kind": "lora", "rank": 0}}), "training.method.lora.rank", "lora-rank-0"),
    row(
        probe(model="mixtral-8x7b", training={"method": {"kind": "lora"}}),
        "training.method.target_modules",
        "mixtral-lora-without-targets",
    ),
    row(
        probe(model="deepseek-v2-lite", training={"method": {"kind": "prefix"}}),
        "training.method.kind",
        "prefix-tuning-on-mla",
    ),
    row(probe(training={"sequence_length": 0}), "training.sequence_length", "seq-len-0"),
    row(probe(kind="inference", serving={"concurrency": 0}), "serving.concurrency", "concurrency-0"),
    row(probe(serving={"engine": "tensorrt"}), "serving.engine", "unknown-engine"),
    row(probe(gpus="h100-sxm"), "gpus", "extra-field-gpus"),
    row(probe(gpu="tpu-v9"), "gpu", "unknown-gpu-id"),
    row([probe()], "body", "body-is-an-array"),
    row(None, "status", "list-unknown-status", path=f"{PROBES}?status=finished", method="GET"),
    row(None, "kind", "list-unknown-kind", path=f"{PROBES}?kind=eval", method="GET"),
    row(None, "backend", "list-auto-backend", path=f"{PROBES}?backend=auto", method="GET"),
    row(None, "limit", "list-limit-0", path=f"{PROBES}?limit=0", method="GET"),
    row(None, "limit", "list-limit-1000", path=f"{PROBES}?limit=1000", method="GET"),
    row(None, "offset", "list-negative-offset", path=f"{PROBES}?offset=-1", method="GET"),
    row(None, "no probe job", "unknown-job", status=404, path=f"{PROBES}/nope", method="GET"),
    row(None, "…", "huge-job-id", status=404, path=f"{PROBES}/{'x' * 2000}", method="GET"),
    row(probe(), "validate", "validate-not-a-bool", path="/v1/estimates/training?validate=perhaps"),
]


def test_table_is_big_enough() -> None:
    assert sum(case.values[1] == PROBES for case in CASES) >= 20


@pytest.mark.parametrize(("method", "path", "body", "status", "field"), CASES)
def test_bad_probe_input(client: TestClient, method: str, path: str, body: Any, status: int, field: str) -> None:
    response = client.request(method, path, json=body) if body is not None else client.request(method, path)
    assert response.status_code == status, response.text[:1000]
    assert field in error_text(response), response.text[:1000]
    assert len(response.content) < 4096
    assert client.get(PROBES).json()["total"] == 0  # nothing was queued
