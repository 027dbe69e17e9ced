from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.types import Message

from service.app import create_app
from service.examples import QWEN2_5_0_5B_CONFIG
from service.limits import RequestLimitsMiddleware, json_depth_exceeds
from service.settings import Settings
from tests.service.conftest import MAX_JSON_DEPTH

JSON = {"content-type": "application/json"}
IMPORT = "/v1/models/import"


def nested(depth: int) -> Any:
    """A value whose brackets nest `depth` deep: [[...[0]...]]."""
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("body", "limit", "too_deep"),
    [
        (b"", 1, False),
        (b"[]", 1, False),
        (b"[[]]", 1, True),
        (b'{"a": {"b": 1}}', 2, False),
        (b'{"a": {"b": {}}}', 2, True),
        (b'["[[[[[[", "{{{{{{"]', 1, False),  # brackets inside strings do not nest
        (b'["\\"[[[[", 1]', 1, False),  # an escaped quote does not end the string
        (b'["\\\\", [[1]]]', 2, True),  # an escaped backslash does: [[1]] nests at depth 3
        (b'["\\\\\\"[[[["]', 1, False),  # \\ then \" : still inside the string
        (b"[" * 100_000, 64, True),
        (b"]" * 100 + b"[" * 100, 64, False),  # malformed: left to the JSON parser
        (b"[]" * 100_000, 1, False),
    ],
)
def test_json_depth_exceeds(body: bytes, limit: int, too_deep: bool) -> None:
    assert json_depth_exceeds(body, limit) is too_deep


def test_depth_matches_json_module() -> None:
    for depth in (1, 5, 63, 64, 65, 200):
        body = json.dumps({"a": nested(depth - 1)}).encode()
        assert json_depth_exceeds(body, MAX_JSON_DEPTH) is (depth > MAX_JSON_DEPTH)


def _import_with_extra_depth(client: TestClient, depth: int) -> Any:
    # The config object is level 1; an extra key (config.json allows them) adds depth - 1 more.
    body = json.dumps({**QWEN2_5_0_5B_CONFIG, "extra": nested(depth - 1)})
    return client.post(IMPORT, content=body, headers=JSON)


def test_depth_at_the_limit_is_accepted(client: TestClient) -> None:
    assert _import_with_extra_depth(client, MAX_JSON_DEPTH).status_code == 200


def test_depth_over_the_limit_is_422(client: TestClient) -> None:
    response = _import_with_extra_depth(client, MAX_JSON_DEPTH + 1)
    assert response.status_code == 422
    assert response.json() == {
        "detail": [{"loc": ["body"], "msg": "JSON nested deeper than 64 levels", "type": "json_too_deep"}]
    }


def test_brackets_in_strings_are_not_depth(client: TestClient) -> None:
    config = {**QWEN2_5_0_5B_CONFIG, "_name_or_path": '\\"' + "[" * 150}
    assert client.post(IMPORT, json=config).status_code == 200


def test_depth_limit_comes_from_settings() -> None:
    client = TestClient(create_app(Settings(max_json_depth=2)))
    response = client.post(IMPORT, json={**QWEN2_5_0_5B_CONFIG, "extra": [[1]]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"] == "JSON nested deeper than 2 levels"


def test_body_limit_comes_from_settings() -> None:
    client = TestClient(create_app(Settings(max_body_bytes=300)))
    small = {"model": "llama-3-8b"}
    assert client.post("/v1/estimates/inference", json=small).status_code == 200
    response = client.post("/v1/estimates/inference", json={**small, "pad": "x" * 300})
    assert response.status_code == 413
    assert response.json() == {"detail": "request body larger than 300 bytes (MEMPLAN_MAX_BODY_BYTES)"}


def test_chunked_body_is_counted_as_it_streams() -> None:
    client = TestClient(create_app(Settings(max_body_bytes=1000)))

    def chunks() -> Iterator[bytes]:
        yield b'{"model": "llama-3-8b", "pad": "'
        for _ in range(100):
            yield b"x" * 100
        yield b'"}'

    response = client.post("/v1/estimates/inference", content=chunks(), headers=JSON)
    assert response.status_code == 413


def test_small_chunked_body_is_replayed_whole() -> None:
    client = TestClient(create_app(Settings(max_body_bytes=1000)))
    parts = [b'{"model": ', b'"llama-3-8b", ', b'"gpu": "h200"}']
    response = client.post("/v1/estimates/inference", content=iter(parts), headers=JSON)
    assert response.status_code == 200
    assert response.json()["gpu"]["id"] == "h200"


def test_content_length_is_checked_before_reading() -> None:
    """A declared length over the limit is refused without reading a byte or calling the app."""
    sent: list[Message] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not be called")

    async def receive() -> Message:
        raise AssertionError("the body must not be read")

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-length", b"10000000000")]}
    asyncio.run(RequestLimitsMiddleware(app, max_body_bytes=100, max_json_depth=8)(scope, receive, send))
    assert sent[0]["status"] == 413


def test_client_disconnect_while_reading_does_not_call_the_app() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not be called")

    messages: Iterator[Message] = iter(
        [{"type": "http.request", "body": b"[", "more_body": True}, {"type": "http.disconnect"}]
    )

    async def receive() -> Message:
        return next(messages)

    async def send(message: Message) -> None:
        raise AssertionError("nothing to send to a gone client")

    scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    asyncio.run(RequestLimitsMiddleware(app, max_body_bytes=100, max_json_depth=8)(scope, receive, send))


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_json_is_415(client: TestClient, content_type: str | None) -> None:
    """Issue 12: a wrong (or missing) content type got a generic 422 at body; it is 415 before any parsing."""
    headers = {"content-type": content_type} if content_type else {}
    response = client.post(IMPORT, content=b"[" * 100_000, headers=headers)
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["detail"]
