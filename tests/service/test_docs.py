from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

ENDPOINTS = {
    ("/healthz", "get"),
    ("/readyz", "get"),
    ("/metrics", "get"),
    ("/v1/models", "get"),
    ("/v1/models/{model_id}", "get"),
    ("/v1/models/import", "post"),
    ("/v1/gpus", "get"),
    ("/v1/gpus/{gpu_id}", "get"),
    ("/v1/engines", "get"),
    ("/v1/estimates/inference", "post"),
    ("/v1/estimates/training", "post"),
    ("/v1/estimates/batch", "post"),
    ("/v1/plans", "post"),
    ("/v1/plans/training", "post"),
    ("/v1/probes", "post"),
    ("/v1/probes", "get"),
    ("/v1/probes/{job_id}", "get"),
}
ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']|url: ?'([^']+)'|spec-url=["']([^"']+)["']""")


def test_openapi_lists_every_endpoint(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    listed = {(path, method) for path, ops in paths.items() for method in ops}
    assert listed == ENDPOINTS


def test_every_operation_has_a_summary_line_and_a_tag(client: TestClient) -> None:
    for ops in client.get("/openapi.json").json()["paths"].values():
        for op in ops.values():
            assert op["tags"] and op["description"] and "\n" not in op["description"]


def test_request_bodies_carry_examples(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/estimates/inference", "/v1/estimates/training", "/v1/models/import"):
        examples = paths[path]["post"]["requestBody"]["content"]["application/json"]["examples"]
        assert len(examples) >= 2
    inference = paths["/v1/estimates/inference"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert inference["catalog"]["value"]["model"] == "llama-3-8b"
    assert inference["config_json"]["value"]["model"]["model_type"] == "qwen2"
    training = paths["/v1/estimates/training"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert training["lora"]["value"]["training"]["method"]["kind"] == "lora"


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_use_only_local_assets(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    html = response.text
    assert not re.search(r"https?://|//[a-z]", html, re.IGNORECASE), "a non-local URL in the page"
    assets = {next(g for g in m.groups() if g) for m in ASSET.finditer(html)}
    assert "/openapi.json" in assets
    assert len(assets) >= 3
    for asset in assets:
        assert asset.startswith("/"), asset
        loaded = client.get(asset)
        assert loaded.status_code == 200, asset
        assert loaded.content


def test_swagger_asks_no_online_validator(client: TestClient) -> None:
    assert '"validatorUrl": null' in client.get("/docs").text


def test_every_operation_documents_the_statuses_middleware_answers(client: TestClient) -> None:
    """Issue 12: the document omitted 400, 404, 413 and 429 (schemathesis reported them as failures)."""
    paths = client.get("/openapi.json").json()["paths"]
    for path, ops in paths.items():
        for method, op in ops.items():
            statuses = set(op["responses"])
            assert {"400", "408", "413"} <= statuses, (method, path)
            if method == "post":
                assert {"415", "422"} <= statuses, path
            if "{" in path:
                assert "404" in statuses, path
    submit = paths["/v1/probes"]["post"]["responses"]
    assert {"401", "403", "429", "503"} <= set(submit)
    assert "Retry-After" in submit["429"]["headers"]
    assert "WWW-Authenticate" in submit["401"]["headers"]
    for kind in ("inference", "training"):  # ?validate=true queues a probe
        assert {"401", "403", "429"} <= set(paths[f"/v1/estimates/{kind}"]["post"]["responses"])


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("OPTIONS", "/v1/probes", 204, "GET, OPTIONS, POST"),
        ("OPTIONS", "/v1/estimates/inference", 204, "OPTIONS, POST"),
        ("OPTIONS", "/v1/models/import", 204, "OPTIONS, POST"),  # not /v1/models/{model_id}'s GET
        ("OPTIONS", "/healthz", 204, "GET, OPTIONS"),
        ("PUT", "/v1/probes", 405, "GET, OPTIONS, POST"),  # Starlette named only the first route: GET
        ("DELETE", "/v1/models/llama-3-8b", 405, "GET, OPTIONS"),
    ],
)
def test_options_and_405_list_every_method_of_the_path(
    client: TestClient, method: str, path: str, status: int, allow: str
) -> None:
    response = client.request(method, path)
    assert (response.status_code, response.headers["allow"]) == (status, allow)
