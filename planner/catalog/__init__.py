"""The catalog of public models and GPUs, read from the JSON files beside this module."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from pydantic import Field

from planner._base import FrozenSpec, Source
from planner.errors import UnknownIdError
from planner.gpu_spec import GpuSpec
from planner.model.hf_import import ImportedModel, import_hf_config
from planner.model.params import ParamCounts, count_params
from planner.model.spec import ModelSpec

__all__ = ["Catalog", "CatalogModel", "load_catalog"]


class CatalogModel(FrozenSpec):
    """A public model: its config.json as published, and the spec and counts memplan derives from it."""

    id: str
    name: str
    hf_repo: str = Field(description="Hugging Face repository the config.json comes from.")
    sources: tuple[Source, ...]
    config: dict[str, Any] = Field(description="The published config.json (the source of truth).")
    spec: ModelSpec
    params: ParamCounts
    kv_cache_bytes_per_token_bf16: int = Field(
        description="KV cache bytes per token per sequence in bf16 (MLA: latent layout), all layers."
    )


class Catalog:
    """Immutable lookup of catalog models and GPUs by id."""

    def __init__(self, models: dict[str, CatalogModel], gpus: dict[str, GpuSpec]) -> None:
        self._models, self._gpus = models, gpus

    @property
    def models(self) -> tuple[CatalogModel, ...]:
        return tuple(self._models.values())

    @property
    def gpus(self) -> tuple[GpuSpec, ...]:
        return tuple(self._gpus.values())

    def model(self, id_: str) -> CatalogModel:
        try:
            return self._models[id_.lower()]
        except KeyError:
            raise UnknownIdError("model", id_, tuple(self._models)) from None

    def gpu(self, id_: str) -> GpuSpec:
        try:
            return self._gpus[id_.lower()]
        except KeyError:
            raise UnknownIdError("gpu", id_, tuple(self._gpus)) from None


def _read_json(name: str) -> Any:
    return json.loads(resources.files(__name__).joinpath(name).read_text(encoding="utf-8"))


def _catalog_model(doc: dict[str, Any]) -> CatalogModel:
    from planner.model.kv_cache import KVLayout, kv_bytes_per_token  # local: kv_cache imports nothing from here

    imported: ImportedModel = import_hf_config(doc["config"])
    spec = imported.spec.model_copy(update={"name": doc["name"]})
    return CatalogModel(
        id=doc["id"],
        name=doc["name"],
        hf_repo=doc["hf_repo"],
        sources=tuple(Source.model_validate(s) for s in doc["sources"]),
        config=doc["config"],
        spec=spec,
        params=count_params(spec),
        kv_cache_bytes_per_token_bf16=kv_bytes_per_token(spec, kv_dtype_bytes=2, mla_layout=KVLayout.MLA_LATENT),
    )


@lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    """Read and validate every catalog file once; ids are lower-case."""
    folder = resources.files(__name__).joinpath("models")
    docs = sorted(
        (json.loads(f.read_text(encoding="utf-8")) for f in folder.iterdir() if f.name.endswith(".json")),
        key=lambda d: d["id"],
    )
    models = {d["id"]: _catalog_model(d) for d in docs}
    gpus = {g["id"]: GpuSpec.model_validate(g) for g in _read_json("gpus.json")["gpus"]}
    return Catalog(models, gpus)
