"""Service settings, read from MEMPLAN_* environment variables."""

from __future__ import annotations

import ipaddress
import re
import socket
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["LOOPBACK_HOSTS", "Settings", "get_settings", "is_loopback"]

LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]
CPU_DEVICE = "cpu"
_DEVICE = re.compile(r"^(cpu|cuda:\d{1,3})$")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """True for 'localhost' and loopback addresses (127.0.0.0/8, ::1); False for 0.0.0.0, :: and everything else."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def _comma_list(value: Any) -> Any:
    """'a, b' → ('a', 'b'); lists pass; anything else is left for the type check."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        return value
    return tuple(dict.fromkeys(str(item).strip() for item in items if str(item).strip()))


class Settings(BaseSettings):
    """Where to listen, how much input a request may carry, and how probes run. Each field reads MEMPLAN_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="MEMPLAN_", frozen=True, extra="ignore")

    host: str = Field(default="127.0.0.1", description="Interface uvicorn binds.")
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port uvicorn binds.")
    max_body_bytes: int = Field(default=1_048_576, ge=1, description="Larger request bodies get 413.")
    max_json_depth: int = Field(default=64, ge=1, le=10_000, description="Deeper JSON bodies get 422.")
    log_level: LogLevel = Field(default="info", description="uvicorn log level.")
    database_url: str = Field(
        default="sqlite:///./memplan.db",
        min_length=1,
        description="SQLAlchemy URL of the probe-job store: a SQLite file by default (relative to the working "
        "directory), e.g. postgresql+psycopg://user:pw@host/memplan for replicas sharing one database.",
    )
    probe_runner: str = Field(
        default="models.runner:run_probe",
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="module:function the probe process calls with a ProbeRequest; returns a ProbeResult.",
    )
    probe_devices: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(CPU_DEVICE,),
        description="Devices with one probe worker each, comma-separated (cpu,cuda:0,cuda:1). The cpu worker always "
        "exists (cpu and fake probes); backend 'auto' goes to a listed cuda device, else to cpu. Nothing probes "
        "for GPUs: list them.",
    )
    probe_queue_limit: int = Field(
        default=8, ge=1, le=10_000, description="Probes waiting to start; beyond it POST /v1/probes gets 429."
    )
    probe_max_timeout_s: float = Field(
        default=600.0, gt=0, le=3600, description="Cap on a probe's timeout_s; the probe process is killed after it."
    )
    probe_max_bytes: int | None = Field(
        default=None,
        ge=1 << 20,
        description="Largest planned peak (bytes, the planner's estimate of the probe) a probe may have; larger ones "
        "get 422 at submission. Default: half of this machine's memory for cpu probes, 90% of the GPU's (as "
        "nvidia-smi reports it) for cuda probes. A cpu probe's process also runs under an OS limit of this plus "
        "the interpreter's own memory (RLIMIT_DATA).",
    )
    executor: Literal["local", "ray"] = Field(
        default="local",
        description="Where probes run: 'local' (one spawned process per device on this machine) or 'ray' (one Ray "
        "task per probe on a Ray cluster, a GPU of the probe's type each; needs memplan[ray]).",
    )
    ray_address: str | None = Field(
        default=None,
        max_length=500,
        description="Ray cluster to join (e.g. 'auto' or 'ray://head:10001'); unset: a local Ray instance.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="When set, writes (POST /v1/probes, ?validate=true) need 'Authorization: Bearer <key>'. Required "
        "when host is not a loopback address.",
    )
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        default=LOOPBACK_HOSTS,
        min_length=1,
        description="Host header values accepted, comma-separated ('*' for any, '*.example.com' for subdomains); "
        "others get 400 (DNS-rebinding guard).",
    )
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Origins browsers may call the API from, comma-separated; none (CORS off) by default.",
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, le=3600, description="A request body that takes longer to arrive gets 408."
    )
    batch_time_limit_s: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        description="POST /v1/estimates/batch: items not started within this time of the first are answered with a "
        "503 error each (the batch still answers every item, in order).",
    )
    probe_executor_id: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        max_length=255,
        description="Names this server's probe jobs in the database (default: the host name). At startup only its "
        "own jobs are recovered, so replicas sharing a database each need a stable, distinct id.",
    )

    @field_validator("allowed_hosts", "cors_origins", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _comma_list(value)

    @field_validator("probe_devices", mode="before")
    @classmethod
    def _device_list(cls, value: Any) -> Any:
        """'cuda:0, cuda:1' → ('cpu', 'cuda:0', 'cuda:1'): split, checked, deduplicated, cpu first."""
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            return value  # left for the type check to reject
        devices = [str(item).strip().lower() for item in items if str(item).strip()]
        if bad := [d for d in devices if not _DEVICE.match(d)]:
            raise ValueError(f"unknown probe device {bad[0]!r}: use cpu or cuda:<index>")
        return tuple(dict.fromkeys([CPU_DEVICE, *devices]))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once; override with app.dependency_overrides or create_app(settings)."""
    return Settings()
