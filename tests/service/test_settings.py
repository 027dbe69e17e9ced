from __future__ import annotations

import os

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

import service
from service.app import create_app
from service.deps import SettingsDep
from service.settings import Settings, get_settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("MEMPLAN_")]:
        monkeypatch.delenv(key)
    s = Settings()
    assert (s.host, s.port, s.max_body_bytes, s.max_json_depth, s.log_level) == (
        "127.0.0.1",
        8000,
        1_048_576,
        64,
        "info",
    )


def test_reads_memplan_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMPLAN_PORT", "9123")
    monkeypatch.setenv("MEMPLAN_MAX_JSON_DEPTH", "8")
    s = Settings()
    assert (s.port, s.max_json_depth) == (9123, 8)


def test_rejects_a_bad_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMPLAN_PORT", "70000")
    with pytest.raises(ValueError, match="port"):
        Settings()


def test_get_settings_is_cached() -> None:
    assert get_settings() is get_settings()


def _app_with_settings_probe(settings: Settings | None) -> TestClient:
    app = create_app(settings)
    probe = APIRouter()

    @probe.get("/_settings")
    def read(s: SettingsDep) -> dict[str, int]:
        return {"max_json_depth": s.max_json_depth}

    app.include_router(probe)
    return TestClient(app)


def test_factory_settings_answer_the_dependency() -> None:
    client = _app_with_settings_probe(Settings(max_json_depth=7))
    assert client.get("/_settings").json() == {"max_json_depth": 7}


def test_dependency_override() -> None:
    client = _app_with_settings_probe(None)
    client.app.dependency_overrides[get_settings] = lambda: Settings(max_json_depth=5)  # type: ignore[attr-defined]
    assert client.get("/_settings").json() == {"max_json_depth": 5}


def test_public_api() -> None:
    assert service.__all__ == ["__version__"]
