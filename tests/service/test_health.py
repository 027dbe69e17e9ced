from __future__ import annotations

from fastapi.testclient import TestClient

import service


def test_healthz_reports_ok_and_version(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": service.__version__}


def test_app_version_is_the_package_version(client: TestClient) -> None:
    assert client.get("/openapi.json").json()["info"]["version"] == service.__version__


def test_unknown_route_is_a_json_404(client: TestClient) -> None:
    response = client.get("/v2/nothing")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_wrong_method_is_405(client: TestClient) -> None:
    assert client.get("/v1/estimates/inference").status_code == 405
