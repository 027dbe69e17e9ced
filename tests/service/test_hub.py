"""Hugging Face ids read from a (fake) local Hugging Face cache, offline; a clear 422 when it is not there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from planner import InferenceRequest, SpecError, estimate_inference, load_catalog
from service.examples import QWEN2_5_0_5B_CONFIG
from service.hub import cached_config_path, hub_cache_dir, read_hub_config, with_hub_model
from service.readable import planner_json

REPO = "Qwen/Qwen2.5-0.5B"


def fake_cache(root: Path, repo: str = REPO, config: dict[str, object] | None = None) -> Path:
    """huggingface_hub's layout: models--org--name/{refs/main, snapshots/<commit>/config.json}."""
    folder = root / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "snapshots" / commit / "config.json").write_text(json.dumps(config or QWEN2_5_0_5B_CONFIG))
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    return root


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = fake_cache(tmp_path / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # tests never reach the hub
    return root


def test_cache_dir_follows_huggingface_hub_rules(tmp_path: Path) -> None:
    assert hub_cache_dir({"HF_HUB_CACHE": str(tmp_path)}) == tmp_path
    assert hub_cache_dir({"HF_HOME": str(tmp_path)}) == tmp_path / "hub"
    assert hub_cache_dir({}) == Path("~/.cache/huggingface/hub").expanduser()


def test_refs_main_names_the_snapshot(cache: Path) -> None:
    path = cached_config_path(REPO, cache)
    assert path is not None and path.parent.name.startswith("0123")
    assert read_hub_config(REPO) == QWEN2_5_0_5B_CONFIG


def test_an_id_becomes_its_config(cache: Path) -> None:
    request = with_hub_model(InferenceRequest(model=REPO))
    expected = estimate_inference(InferenceRequest.model_validate({"model": QWEN2_5_0_5B_CONFIG}), load_catalog())
    assert estimate_inference(request, load_catalog()) == expected


def test_estimate_by_hugging_face_id(cache: Path, client: TestClient) -> None:
    response = client.post("/v1/estimates/inference", json={"model": REPO, "gpu": "l4"})
    assert response.status_code == 200, response.text
    expected = estimate_inference(InferenceRequest.model_validate({"model": QWEN2_5_0_5B_CONFIG, "gpu": "l4"}),
                                  load_catalog())  # fmt: skip
    assert planner_json(response.json()) == expected.model_dump(mode="json")
    training = client.post("/v1/estimates/training", json={"model": REPO})
    assert training.status_code == 200


def test_an_id_not_in_the_cache_is_a_422_naming_the_field(cache: Path, client: TestClient) -> None:
    response = client.post("/v1/estimates/inference", json={"model": "someone/not-here"})
    assert response.status_code == 422
    (problem,) = response.json()["detail"]
    assert problem["loc"] == ["body", "model"]
    assert "someone/not-here" in problem["msg"] and "HF_HUB_OFFLINE" in problem["msg"]


def test_read_without_the_service_is_an_error(cache: Path) -> None:
    with pytest.raises(SpecError, match="not-here"):
        read_hub_config("someone/not-here")


def test_plans_by_hugging_face_id(cache: Path, client: TestClient) -> None:
    body = {
        "workload": {"input_tokens": 512, "output_tokens": 64, "concurrency": 4},
        "slo": {"ttft_ms": 2000, "tpot_ms": 100},
        "constraints": {"gpus": ["h100-sxm"], "engines": ["vllm"], "max_gpus": 1},
    }
    by_id = client.post("/v1/plans", json={"model": REPO, **body})
    assert by_id.status_code == 200, by_id.text
    by_config = client.post("/v1/plans", json={"model": QWEN2_5_0_5B_CONFIG, **body})
    assert by_id.json()["plans"] == by_config.json()["plans"] and by_id.json()["plans"]
    fit = client.post("/v1/plans/training", json={"model": REPO, "gpu": "l4"})
    assert fit.status_code == 200, fit.text


def test_batch_items_and_grids_by_hugging_face_id(cache: Path, client: TestClient) -> None:
    items = {"items": [{"model": REPO, "gpu": "l4"}, {"model": "someone/not-here"}, {"model": "llama-3-8b"}]}
    r = client.post("/v1/estimates/batch", json=items)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    expected = estimate_inference(InferenceRequest.model_validate({"model": QWEN2_5_0_5B_CONFIG, "gpu": "l4"}),
                                  load_catalog())  # fmt: skip
    assert results[0]["result"] == expected.model_dump(mode="json")
    assert not results[1]["ok"] and results[2]["ok"]  # an id that is not there fails its own item only
    grid = {"grid": {"base": {"gpu": "l4"}, "axes": {"model": [REPO, "llama-3-8b"]}}, "fields": ["fits"]}
    lines = client.post("/v1/estimates/batch", json=grid).json()["results"]
    assert [line["ok"] for line in lines] == [True, True]
