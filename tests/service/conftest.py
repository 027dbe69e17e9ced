"""Fixtures for the service tests: an app built from explicit settings, and a client for it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from service.app import create_app
from service.settings import LOOPBACK_HOSTS, Settings, get_settings

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


TEST_HOST = "testserver"  # the Host header TestClient sends


@pytest.fixture(autouse=True)
def test_client_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every app built in these tests accepts TestClient's Host header besides the loopback names (the allow-list
    is read from MEMPLAN_ALLOWED_HOSTS, also by Settings(...) with other fields given)."""
    monkeypatch.setenv("MEMPLAN_ALLOWED_HOSTS", ",".join((*LOOPBACK_HOSTS, TEST_HOST)))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


# A PostgreSQL database the job-store tests may empty and use (.ci/run starts a throwaway cluster and sets it).
POSTGRES_URL = os.environ.get("MEMPLAN_TEST_DATABASE_URL")


def empty_postgres(url: str) -> None:
    """Drop the job-store tables (and Alembic's) so that a test starts from an empty database."""
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS probe_jobs, alembic_version"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty job-store database: a SQLite file, and PostgreSQL when MEMPLAN_TEST_DATABASE_URL is set."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    if not POSTGRES_URL:
        pytest.skip("MEMPLAN_TEST_DATABASE_URL is not set (.ci/run starts a PostgreSQL server and sets it)")
    empty_postgres(POSTGRES_URL)
    return POSTGRES_URL


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
