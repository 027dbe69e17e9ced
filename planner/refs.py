"""A model or GPU named in a request: a catalog id, an inline spec, (models) a raw config.json or a size."""

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
from planner.model.synthesis import SizeSpec, synthesize_spec

__all__ = ["HF_ID_PATTERN", "GpuRef", "ModelRef", "ResolvedModel", "resolve_gpu", "resolve_model"]

CatalogId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")]
# A Hugging Face repository id, 'org/name' (huggingface_hub's validate_repo_id: 96 characters at most).
HF_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]*/[A-Za-z0-9][A-Za-z0-9._\-]*$"
HubId = Annotated[str, Field(min_length=3, max_length=96, pattern=HF_ID_PATTERN)]
_HF_MARKERS = ("model_type", "num_hidden_layers", "num_attention_heads", "architectures")


def _model_ref_kind(value: Any) -> str:
    if isinstance(value, str):
        return "hf_id" if "/" in value else "catalog_id"
    if isinstance(value, ModelSpec):
        return "spec"
    if isinstance(value, HFConfig):
        return "hf_config"
    if isinstance(value, SizeSpec):
        return "size"
    if isinstance(value, dict) and "size" in value:
        return "size"
    if isinstance(value, dict) and any(key in value for key in _HF_MARKERS):
        return "hf_config"
    return "spec"


ModelRef = Annotated[
    Annotated[CatalogId, Tag("catalog_id")]
    | Annotated[HubId, Tag("hf_id")]
    | Annotated[ModelSpec, Tag("spec")]
    | Annotated[HFConfig, Tag("hf_config")]
    | Annotated[SizeSpec, Tag("size")],
    Discriminator(_model_ref_kind),
    Field(
        description="A catalog id ('llama-3-8b'); a Hugging Face id ('Qwen/Qwen2.5-7B', read from the local Hugging "
        "Face cache or the hub by the service and the CLI); an inline ModelSpec; a Hugging Face config.json object "
        "(recognized by model_type / num_hidden_layers); or a size ({'size': '70B', 'attention': 'GQA'}: an "
        "architecture synthesized from the catalog family's conventions, exact false)."
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
    exact: bool = Field(
        description="False for a config.json of an unsupported family (approximate counts) and for a model given by "
        "its size (an assumed architecture)."
    )
    assumed_from: SizeSpec | None = Field(
        default=None, description="The size the architecture in `spec` was synthesized from (null: given exactly)."
    )
    warnings: tuple[str, ...] = ()


def _sized(size: SizeSpec, catalog: Catalog, field: str) -> ResolvedModel:
    """A model given by its size: the architecture synthesized from the catalog family's conventions."""
    try:
        spec = synthesize_spec(size, [m.spec for m in catalog.models])
    except SpecError as exc:
        raise exc.prefixed(field) from None
    params = count_params(spec)
    share = params.total / size.target_params - 1
    warning = (
        f"architecture assumed from size {size.size} ({spec.family} conventions): {spec.num_layers} layers, "
        f"h {spec.hidden_size}, {spec.num_heads} heads ({spec.kv_heads} KV), FFN {spec.ffn_dim}"
        + (f", {spec.moe.num_experts} experts of {spec.moe.expert_ffn_dim} (top-{spec.moe.experts_per_token})"
           if spec.moe else "")
        + f"; {params.total:,} parameters ({share:+.2%})"
    )  # fmt: skip
    return ResolvedModel(catalog_id=None, spec=spec, params=params, exact=False, assumed_from=size, warnings=(warning,))


def resolve_model(ref: str | ModelSpec | HFConfig | SizeSpec, catalog: Catalog, field: str = "model") -> ResolvedModel:
    """The ModelSpec behind a reference; errors are located at `field`.

    A Hugging Face id is not resolved here (the planner reads no files and no network): the service and the CLI
    replace it by its config.json first (service.hub); here it is a SpecError.
    """
    if isinstance(ref, str) and "/" in ref:
        msg = f"Hugging Face id '{ref}': read its config.json first (memplan's service and CLI do: service.hub)"
        raise SpecError([FieldProblem((field,), msg, "hf_id_unresolved")])
    if isinstance(ref, SizeSpec):
        return _sized(ref, catalog, field)
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
