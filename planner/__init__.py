"""memplan's planner: typed specs, the catalog, and pure formulas for memory, throughput and capacity.

No torch, no HTTP, no printing, no settings: specs in, integers and frozen breakdowns out.
"""

from planner.capacity import KVCapacity
from planner.catalog import Catalog, CatalogModel, load_catalog
from planner.describe import ImportDescription, describe_import
from planner.errors import FieldProblem, SpecError, UnknownIdError
from planner.explain import MemoryBreakdown, Term
from planner.gpu_spec import GpuSpec
from planner.hf_config import HFConfig
from planner.hf_import import SUPPORTED_FAMILIES, ImportedModel, import_hf_config
from planner.inference import InferenceEstimate, InferenceRequest, estimate_inference
from planner.kv_cache import KVLayout, kv_bytes_per_sequence, kv_bytes_per_token
from planner.model_spec import AttentionKind, MLASpec, ModelSpec, MoESpec
from planner.params import ParamCounts, count_params
from planner.precision import DType, WeightFormat, linear_weight_bytes
from planner.refs import ResolvedModel, resolve_gpu, resolve_model
from planner.serving_spec import Efficiency, Engine, ServingSpec

__all__ = [
    "SUPPORTED_FAMILIES",
    "AttentionKind",
    "Catalog",
    "CatalogModel",
    "DType",
    "Efficiency",
    "Engine",
    "FieldProblem",
    "GpuSpec",
    "HFConfig",
    "ImportDescription",
    "ImportedModel",
    "InferenceEstimate",
    "InferenceRequest",
    "KVCapacity",
    "KVLayout",
    "MLASpec",
    "MemoryBreakdown",
    "MoESpec",
    "ModelSpec",
    "ParamCounts",
    "ResolvedModel",
    "ServingSpec",
    "SpecError",
    "Term",
    "UnknownIdError",
    "WeightFormat",
    "count_params",
    "describe_import",
    "estimate_inference",
    "import_hf_config",
    "kv_bytes_per_sequence",
    "kv_bytes_per_token",
    "linear_weight_bytes",
    "load_catalog",
    "resolve_gpu",
    "resolve_model",
]
