"""Fixtures for the service tests: an app built from explicit settings, and a client for it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings

MAX_BODY_BYTES = 1_048_576
MAX_JSON_DEPTH = 64
# An inline ModelSpec with Llama-3-8B's shapes (GQA), for requests that give the architecture instead of a name.
SPEC_8B = {
    "num_layers": 32,
    "hidden_size": 4096,
    "num_heads": 32,
    "num_kv_heads": 8,
    "ffn_dim": 14336,
    "vocab_size": 128256,
}


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite file shared by the tests that queue no probes (its tables are created once, not per test)."""
    return f"sqlite:///{tmp_path_factory.mktemp('probe-jobs') / 'jobs.db'}"


@pytest.fixture
def settings(database_url: str) -> Settings:
    """The documented defaults, given explicitly so that MEMPLAN_* variables in the environment cannot leak in,
    and a probe-job database under the test session's temporary directory (never ./memplan.db)."""
    return Settings(max_body_bytes=MAX_BODY_BYTES, max_json_depth=MAX_JSON_DEPTH, database_url=database_url)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """A client that re-raises any server exception, so an unexpected 500 fails the test loudly."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


class JsonResponse(Protocol):
    """What error_text needs of a response (TestClient's may come from httpx or httpx2)."""

    def json(self) -> Any: ...


def error_text(response: JsonResponse) -> str:
    """Every location and message of an error body, as one string to search for a field name."""
    detail: Any = response.json()["detail"]
    if isinstance(detail, str):
        return detail
    return " | ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in detail)
