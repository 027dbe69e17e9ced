"""A model or GPU named in a request: a catalog id, an inline spec, or (models) a raw config.json."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Discriminator, Field, Tag

from planner._base import FrozenSpec
from planner.catalog import Catalog
from planner.errors import FieldProblem, SpecError, UnknownIdError
from planner.gpu_spec import GpuSpec
from planner.model.hf_config import HFConfig
from planner.model.hf_import import import_hf_config
from planner.model.params import ParamCounts, count_params
from planner.model.spec import ModelSpec

__all__ = ["GpuRef", "ModelRef", "ResolvedModel", "resolve_gpu", "resolve_model"]

CatalogId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")]
_HF_MARKERS = ("model_type", "num_hidden_layers", "num_attention_heads", "architectures")


def _model_ref_kind(value: Any) -> str:
    if isinstance(value, str):
        return "catalog_id"
    if isinstance(value, ModelSpec):
        return "spec"
    if isinstance(value, HFConfig):
        return "hf_config"
    if isinstance(value, dict) and any(key in value for key in _HF_MARKERS):
        return "hf_config"
    return "spec"


ModelRef = Annotated[
    Annotated[CatalogId, Tag("catalog_id")] | Annotated[ModelSpec, Tag("spec")] | Annotated[HFConfig, Tag("hf_config")],
    Discriminator(_model_ref_kind),
    Field(
        description="A catalog id ('llama-3-8b'), an inline ModelSpec, or a Hugging Face config.json object "
        "(recognized by model_type / num_hidden_layers)."
    ),
]
GpuRef = Annotated[
    CatalogId | GpuSpec,
    Field(description="A catalog GPU id ('h100-sxm') or an inline GpuSpec."),
]


class ResolvedModel(FrozenSpec):
    """The model a request was answered for."""

    catalog_id: str | None
    spec: ModelSpec
    params: ParamCounts
    exact: bool = Field(description="False for a config.json of an unsupported family (approximate counts).")
    warnings: tuple[str, ...] = ()


def resolve_model(ref: str | ModelSpec | HFConfig, catalog: Catalog, field: str = "model") -> ResolvedModel:
    """The ModelSpec behind a reference; errors are located at `field`."""
    if isinstance(ref, str):
        try:
            entry = catalog.model(ref)
        except UnknownIdError as exc:
            raise SpecError([FieldProblem((field,), str(exc), "unknown_id")]) from None
        return ResolvedModel(catalog_id=entry.id, spec=entry.spec, params=entry.params, exact=True)
    if isinstance(ref, ModelSpec):
        return ResolvedModel(catalog_id=None, spec=ref, params=count_params(ref), exact=True)
    try:
        imported = import_hf_config(ref)
    except SpecError as exc:
        raise exc.prefixed(field, "hf_config") from None
    return ResolvedModel(
        catalog_id=None,
        spec=imported.spec,
        params=count_params(imported.spec),
        exact=imported.exact,
        warnings=imported.warnings,
    )


def resolve_gpu(ref: str | GpuSpec, catalog: Catalog, field: str = "gpu") -> GpuSpec:
    if isinstance(ref, GpuSpec):
        return ref
    try:
        return catalog.gpu(ref)
    except UnknownIdError as exc:
        raise SpecError([FieldProblem((field,), str(exc), "unknown_id")]) from None
