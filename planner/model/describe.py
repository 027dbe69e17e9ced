"""What a config.json describes: the imported spec, its parameter counts, and its KV cache bytes per token."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from planner._base import FrozenSpec
from planner.model.hf_config import HFConfig
from planner.model.hf_import import ImportedModel, import_hf_config
from planner.model.kv_cache import KVLayout, kv_bytes_per_token
from planner.model.params import ParamCounts, count_params
from planner.model.precision import DType, dtype_bytes

__all__ = ["ImportDescription", "KVBytesPerToken", "describe_import"]

KV_CACHE_DTYPES = (DType.BF16, DType.FP8)  # the two cache dtypes serving engines offer for KV (vLLM kv_cache_dtype)


class KVBytesPerToken(FrozenSpec):
    """KV cache bytes one token adds to one sequence: all layers, one GPU (TP = 1), inside every window."""

    kv_cache_dtype: DType
    mla_layout: KVLayout | None = Field(description="MLA cache layout; null for MHA/MQA/GQA, which have one.")
    bytes: int


class ImportDescription(ImportedModel):
    """An imported config.json with its parameter counts and KV cache sizes."""

    params: ParamCounts
    kv_bytes_per_token: tuple[KVBytesPerToken, ...] = Field(
        description="Per KV cache dtype (bf16, fp8) and, for MLA, per cache layout (latent, expanded)."
    )


def describe_import(raw: dict[str, Any] | HFConfig) -> ImportDescription:
    """Import a config.json and size it: normalized spec, exact parameter counts, KV bytes per token.

    Formula: params as count_params; KV bytes per token as kv_bytes_per_token (e.g. GQA 2·L·n_kv·d_h·b_kv,
      MLA latent L·(d_c + d_R)·b_kv, MLA expanded L·n_h·(d_nope + d_R + d_v)·b_kv).
    Source: see planner.model.params.count_params and planner.model.kv_cache.kv_bytes_per_token.
    Raises: SpecError naming the config.json keys that are missing or invalid.
    """
    imported = import_hf_config(raw)
    spec = imported.spec
    layouts: tuple[KVLayout | None, ...] = (
        (KVLayout.MLA_LATENT, KVLayout.MLA_EXPANDED) if spec.mla is not None else (None,)
    )
    kv = tuple(
        KVBytesPerToken(
            kv_cache_dtype=dtype,
            mla_layout=layout,
            bytes=kv_bytes_per_token(spec, dtype_bytes(dtype), layout or KVLayout.MLA_LATENT),
        )
        for dtype in KV_CACHE_DTYPES
        for layout in layouts
    )
    return ImportDescription(**dict(imported), params=count_params(spec), kv_bytes_per_token=kv)
