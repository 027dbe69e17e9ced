"""Hugging Face ids ('Qwen/Qwen2.5-7B') read as their config.json: from the local Hugging Face cache, offline, or
through huggingface_hub when it is installed and the hub is reachable. The planner never reads files; requests
reach it with the config.json in place of the id.

The cache is huggingface_hub's layout: `$HF_HUB_CACHE` (else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`)
/ `models--<org>--<name>` / `snapshots/<commit>/config.json`, the commit `refs/main` names first.
`HF_HUB_OFFLINE=1` keeps it to the cache.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel

from planner import FieldProblem, HFConfig, SpecError
from planner.batch import BatchRequest

__all__ = ["cached_config_path", "hub_cache_dir", "read_hub_config", "with_hub_items", "with_hub_model"]

CONFIG_NAME = "config.json"
DOWNLOAD_TIMEOUT_S = 10.0
REACH_TIMEOUT_S = 2.0  # huggingface_hub retries an unreachable hub for ~25 s; a request should not wait for that
DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = ("1", "true", "yes", "on")

Request = TypeVar("Request", bound=BaseModel)


def hub_cache_dir(environ: os._Environ[str] | dict[str, str] | None = None) -> Path:
    """Where huggingface_hub keeps downloaded repositories (its HF_HUB_CACHE / HF_HOME rules)."""
    env = os.environ if environ is None else environ
    if cache := env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        return Path(cache).expanduser()
    home = env.get("HF_HOME") or str(Path(env.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface")
    return Path(home).expanduser() / "hub"


def cached_config_path(repo_id: str, cache: Path) -> Path | None:
    """The cached config.json of `repo_id`: the snapshot refs/main names, else the newest snapshot holding one."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    main = repo / "refs" / "main"
    if main.is_file():
        pinned = repo / "snapshots" / main.read_text(encoding="utf-8").strip() / CONFIG_NAME
        if pinned.is_file():
            return pinned
    snapshots = sorted((repo / "snapshots").glob(f"*/{CONFIG_NAME}"), key=lambda p: p.stat().st_mtime, reverse=True)
    return snapshots[0] if snapshots else None


def _download(repo_id: str) -> tuple[Path | None, str]:
    """huggingface_hub's hf_hub_download of config.json (optional import); (None, why) when it cannot."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE:
        return None, "HF_HUB_OFFLINE is set"
    try:
        from huggingface_hub import hf_hub_download  # optional: memplan never requires it
    except ImportError:
        return None, "huggingface_hub is not installed (pip install huggingface_hub)"
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname or "", endpoint.port or 443), timeout=REACH_TIMEOUT_S).close()
    except OSError:
        return None, f"the hub ({endpoint.hostname}) is not reachable"
    try:
        path = hf_hub_download(repo_id, CONFIG_NAME, etag_timeout=DOWNLOAD_TIMEOUT_S)
    except Exception as exc:  # unreachable hub, unknown or gated repository: the reason goes into the 422
        return None, f"the hub did not answer with it ({type(exc).__name__})"
    return Path(path), ""


def read_hub_config(repo_id: str, field: tuple[str | int, ...] = ("model",)) -> dict[str, Any]:
    """The config.json of a Hugging Face id; SpecError located at `field` when neither the cache nor the hub has it."""
    cache = hub_cache_dir()
    path = cached_config_path(repo_id, cache)
    why = ""
    if path is None:
        path, why = _download(repo_id)
    if path is None:
        msg = f"Hugging Face id '{repo_id}': no {CONFIG_NAME} in the local cache ({cache}) and {why}"
        raise SpecError([FieldProblem(field, msg, "hf_id_not_found")])
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SpecError([FieldProblem(field, f"Hugging Face id '{repo_id}': {path} is unreadable: {exc}")]) from None
    if not isinstance(data, dict):
        raise SpecError([FieldProblem(field, f"Hugging Face id '{repo_id}': {path} holds no JSON object")])
    return data


def with_hub_model(request: Request) -> Request:
    """The request with a Hugging Face id in `model` replaced by its config.json (other requests unchanged)."""
    model = getattr(request, "model", None)
    if not (isinstance(model, str) and "/" in model):
        return request
    config = HFConfig.model_validate(read_hub_config(model))
    return request.model_copy(update={"model": config})


def with_hub_items(request: BatchRequest) -> BatchRequest:
    """The batch with every Hugging Face id in an item's `model` (or the grid's base and `model` axis) replaced by
    its config.json, each id read once. An id that cannot be read is left as it is: that item alone answers with
    its error (an unknown model), the rest of the batch is estimated."""
    resolved: dict[str, Any] = {}

    def swap(model: Any) -> Any:
        if not (isinstance(model, str) and "/" in model):
            return model
        if model not in resolved:
            try:
                resolved[model] = read_hub_config(model)
            except SpecError:
                resolved[model] = model
        return resolved[model]

    if request.items is not None:
        items = [{**i, "model": swap(i["model"])} if isinstance(i, dict) and "model" in i else i for i in request.items]
        return request.model_copy(update={"items": items})
    grid = request.grid
    assert grid is not None
    base = {**grid.base, "model": swap(grid.base["model"])} if "model" in grid.base else grid.base
    axes = {name: [swap(v) for v in values] if name == "model" else values for name, values in grid.axes.items()}
    return request.model_copy(update={"grid": grid.model_copy(update={"base": base, "axes": axes})})
