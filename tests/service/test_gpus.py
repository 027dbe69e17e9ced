from __future__ import annotations

from fastapi.testclient import TestClient

from planner import GpuSpec, load_catalog


def test_lists_every_catalog_gpu(client: TestClient) -> None:
    response = client.get("/v1/gpus")
    assert response.status_code == 200
    gpus = [GpuSpec.model_validate(g) for g in response.json()]
    assert gpus == list(load_catalog().gpus)


def test_one_gpu(client: TestClient) -> None:
    response = client.get("/v1/gpus/h100-sxm")
    assert response.status_code == 200
    gpu = GpuSpec.model_validate(response.json())
    assert gpu == load_catalog().gpu("h100-sxm")
    assert gpu.memory_bytes == 80 * 2**30


def test_unknown_gpu_is_404_listing_known_ids(client: TestClient) -> None:
    response = client.get("/v1/gpus/tpu-v9")
    assert response.status_code == 404
    assert response.json()["detail"].startswith("unknown gpu id 'tpu-v9'; known: ")
    assert "h100-sxm" in response.json()["detail"]
