"""Service settings, read from MEMPLAN_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]

LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]


class Settings(BaseSettings):
    """Where to listen and how much input a request may carry. Each field reads MEMPLAN_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="MEMPLAN_", frozen=True, extra="ignore")

    host: str = Field(default="127.0.0.1", description="Interface uvicorn binds.")
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port uvicorn binds.")
    max_body_bytes: int = Field(default=1_048_576, ge=1, description="Larger request bodies get 413.")
    max_json_depth: int = Field(default=64, ge=1, le=10_000, description="Deeper JSON bodies get 422.")
    log_level: LogLevel = Field(default="info", description="uvicorn log level.")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once; override with app.dependency_overrides or create_app(settings)."""
    return Settings()
