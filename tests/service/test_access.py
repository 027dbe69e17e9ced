"""Issue 12, nothing guarded access: an API key for writes, a Host allow-list, CORS off unless configured, a
private SQLite file, no listening beyond loopback without a key, timeouts against slow clients."""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import service.app
from service.app import InsecureBindError, check_bind, create_app, run_server
from service.cli import app as cli
from service.probes.db import connect
from service.settings import Settings, is_loopback
from tests.service import probe_runners

KEY = "k" * 32
PROBES = "/v1/probes"
SMALL = {"model": "llama-3-8b", "training": {"sequence_length": 64, "micro_batch_size": 1}}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'jobs.db'}",
        api_key=KEY,
        probe_runner=f"{probe_runners.MODULE}:canned",
    )
    with TestClient(create_app(settings)) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_writes_need_the_key_when_one_is_set(keyed: TestClient) -> None:
    missing = keyed.post(PROBES, json=SMALL)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert keyed.post(PROBES, json=SMALL, headers=bearer("x" * 32)).status_code == 403
    assert keyed.post(PROBES, json=SMALL, headers={"Authorization": f"Basic {KEY}"}).status_code == 401
    assert keyed.post(PROBES, json=SMALL, headers=bearer(KEY)).status_code == 202
    validate = "/v1/estimates/training?validate=true"
    assert keyed.post(validate, json=SMALL).status_code == 401  # it queues a probe: a write
    assert keyed.post(validate, json=SMALL, headers=bearer(KEY)).status_code == 200
    assert keyed.post("/v1/estimates/training", json=SMALL).status_code == 200  # reads stay open
    assert keyed.get(PROBES).status_code == 200


def test_the_openapi_document_declares_bearer_auth_only_with_a_key(keyed: TestClient, client: TestClient) -> None:
    with_key = keyed.get("/openapi.json").json()
    assert with_key["paths"][PROBES]["post"]["security"] == [{"HTTPBearer": []}]
    assert "HTTPBearer" in with_key["components"]["securitySchemes"]
    without = client.get("/openapi.json").json()
    assert "security" not in without["paths"][PROBES]["post"]
    assert "securitySchemes" not in without.get("components", {})
    assert client.post(PROBES, json={"model": "gpt-9"}).status_code == 422  # no key configured: none asked for


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("example.com", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_server_refuses_to_listen_beyond_loopback_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: ran.append(options))
    with pytest.raises(InsecureBindError, match="MEMPLAN_API_KEY"):
        run_server(Settings(host="0.0.0.0"))
    assert ran == []
    check_bind(Settings(host="0.0.0.0", api_key=KEY))
    check_bind(Settings(host="127.0.0.1"))
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "refusing to listen on 0.0.0.0" in result.output


def test_uvicorn_runs_with_timeouts_against_slow_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: ran.append(options))
    run_server(Settings())
    [options] = ran
    assert options["timeout_keep_alive"] == service.app.KEEP_ALIVE_S
    assert options["h11_max_incomplete_event_size"] == service.app.MAX_HEADER_BYTES
    assert options["limit_concurrency"] == service.app.MAX_CONNECTIONS


def test_the_docker_image_cannot_listen_without_a_key() -> None:
    instructions = [line for line in (REPO / "Dockerfile").read_text().splitlines() if not line.startswith("#")]
    dockerfile = "\n".join(instructions)  # the header comment shows how to pass a key; no instruction sets one
    assert "MEMPLAN_HOST=0.0.0.0" in dockerfile and "MEMPLAN_API_KEY" not in dockerfile
    with pytest.raises(InsecureBindError):
        check_bind(Settings(host="0.0.0.0"))  # so the image's `memplan serve` exits with the message


@pytest.mark.parametrize(("host", "status"), [("evil.example", 400), ("127.0.0.1:8000", 200), ("localhost", 200)])
def test_only_allowed_host_headers_are_answered(settings: Settings, host: str, status: int) -> None:
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends Host: evil.example."""
    client = TestClient(create_app(settings.model_copy(update={"allowed_hosts": ("127.0.0.1", "localhost", "::1")})))
    assert client.get("/healthz", headers={"host": host}).status_code == status


def test_allowed_hosts_are_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMPLAN_ALLOWED_HOSTS", "memplan.internal, *.memplan.internal")
    assert Settings().allowed_hosts == ("memplan.internal", "*.memplan.internal")
    client = TestClient(create_app(Settings()), base_url="http://api.memplan.internal")
    assert client.get("/healthz").status_code == 200
    monkeypatch.delenv("MEMPLAN_ALLOWED_HOSTS")
    assert Settings().allowed_hosts == ("127.0.0.1", "localhost", "::1")


def test_cors_is_off_unless_configured(client: TestClient, settings: Settings) -> None:
    origin = {"Origin": "https://planner.example"}
    assert "access-control-allow-origin" not in client.get("/healthz", headers=origin).headers
    allowed = TestClient(create_app(settings.model_copy(update={"cors_origins": ("https://planner.example",)})))
    response = allowed.get("/healthz", headers=origin)
    assert response.headers["access-control-allow-origin"] == "https://planner.example"
    other = allowed.get("/healthz", headers={"Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in other.headers


def test_a_new_sqlite_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    old = os.umask(0o022)
    try:
        db = connect(f"sqlite:///{path}")
        db.migrate()
        db.dispose()
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.fixture
def live_server(settings: Settings) -> Iterator[int]:
    """The app under a real uvicorn on 127.0.0.1 (a free port), with a 0.5 s body deadline."""
    app = create_app(settings.model_copy(update={"body_timeout_s": 0.5}))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    port: int = server.servers[0].sockets[0].getsockname()[1]
    yield port
    server.should_exit = True
    thread.join(10)


def test_a_slow_upload_gets_408_and_the_connection_is_closed(live_server: int) -> None:
    """A client that declares 1,000 bytes and sends 10 was held open with no read timeout."""
    with socket.create_connection(("127.0.0.1", live_server), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/estimates/inference HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n" + b'{"model":'
        )
        started = time.monotonic()
        received = b""
        while chunk := sock.recv(4096):  # the server closes the connection after its answer
            received += chunk
        elapsed = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert b"MEMPLAN_BODY_TIMEOUT_S" in received
    assert 0.4 < elapsed < 4
