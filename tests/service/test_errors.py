from __future__ import annotations

import logging

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from planner import FieldProblem, SpecError
from service.app import create_app
from service.errors import MAX_MSG_CHARS


def _app_raising(exc: Exception) -> TestClient:
    app = create_app()
    router = APIRouter()

    @router.get("/_raise")
    def fail() -> None:
        raise exc

    app.include_router(router)
    return TestClient(app, raise_server_exceptions=False)


def test_unexpected_error_is_a_generic_500_with_a_logged_traceback(caplog: pytest.LogCaptureFixture) -> None:
    client = _app_raising(RuntimeError("secret internals"))
    with caplog.at_level(logging.ERROR, logger="service.errors"):
        response = client.get("/_raise")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    assert "secret" not in response.text
    record = next(r for r in caplog.records if r.name == "service.errors")
    assert record.exc_info is not None and "secret internals" in str(record.exc_info[1])


def test_spec_error_locations_are_rooted_at_body() -> None:
    client = _app_raising(SpecError([FieldProblem(("serving", "tensor_parallel"), "must divide", "value_error")]))
    response = client.get("/_raise")
    assert response.status_code == 422
    assert response.json() == {
        "detail": [{"loc": ["body", "serving", "tensor_parallel"], "msg": "must divide", "type": "value_error"}]
    }


def test_long_messages_are_cut() -> None:
    client = _app_raising(SpecError([FieldProblem(("x",), "m" * 10_000)]))
    msg = client.get("/_raise").json()["detail"][0]["msg"]
    assert len(msg) == MAX_MSG_CHARS
    assert msg.endswith("…")


def test_validation_errors_do_not_echo_the_input(client: TestClient) -> None:
    huge = "y" * 500_000
    response = client.post("/v1/estimates/inference", json={"model": "llama-3-8b", "gpu": {"name": huge}})
    assert response.status_code == 422
    assert huge[:100] not in response.text
    assert all(set(problem) == {"loc", "msg", "type"} for problem in response.json()["detail"])
    assert len(response.content) < 4096
