"""memplan's planner: typed specs, the catalog, and pure formulas for memory, throughput and capacity.

No torch, no HTTP, no printing, no settings: specs in, integers and frozen breakdowns out.
"""

from planner.catalog import Catalog, CatalogModel, load_catalog
from planner.errors import FieldProblem, SpecError, UnknownIdError
from planner.explain import MemoryBreakdown, Term
from planner.gpu_spec import GpuSpec
from planner.model.describe import ImportDescription, describe_import
from planner.model.hf_config import HFConfig
from planner.model.hf_import import SUPPORTED_FAMILIES, ImportedModel, import_hf_config
from planner.model.kv_cache import KVLayout, kv_bytes_per_sequence, kv_bytes_per_token
from planner.model.params import ParamCounts, count_params
from planner.model.precision import DType, WeightFormat, linear_weight_bytes
from planner.model.spec import AttentionKind, MLASpec, ModelSpec, MoESpec
from planner.model.synthesis import SizeSpec, synthesize_spec
from planner.refs import ResolvedModel, resolve_gpu, resolve_model
from planner.serving.capacity import KVCapacity
from planner.serving.inference import InferenceEstimate, InferenceRequest, estimate_inference
from planner.serving.spec import Efficiency, Engine, ServingSpec
from planner.training.estimate import (
    Suggestion,
    TrainingEfficiency,
    TrainingEstimate,
    TrainingRequest,
    TrainingThroughput,
    estimate_training,
)
from planner.training.peft_params import PeftModule, TrainableParams, trainable_params
from planner.training.spec import (
    AdapterSpec,
    AttentionImpl,
    Checkpointing,
    FullFineTune,
    IA3Spec,
    LoRASpec,
    OptimizerSpec,
    Precision,
    PrefixTuningSpec,
    PromptTuningSpec,
    QLoRASpec,
    TrainingSpec,
)

__all__ = [
    "SUPPORTED_FAMILIES",
    "AdapterSpec",
    "AttentionImpl",
    "AttentionKind",
    "Catalog",
    "CatalogModel",
    "Checkpointing",
    "DType",
    "Efficiency",
    "Engine",
    "FieldProblem",
    "FullFineTune",
    "GpuSpec",
    "HFConfig",
    "IA3Spec",
    "ImportDescription",
    "ImportedModel",
    "InferenceEstimate",
    "InferenceRequest",
    "KVCapacity",
    "KVLayout",
    "LoRASpec",
    "MLASpec",
    "MemoryBreakdown",
    "MoESpec",
    "ModelSpec",
    "OptimizerSpec",
    "ParamCounts",
    "PeftModule",
    "Precision",
    "PrefixTuningSpec",
    "PromptTuningSpec",
    "QLoRASpec",
    "ResolvedModel",
    "ServingSpec",
    "SizeSpec",
    "SpecError",
    "Suggestion",
    "Term",
    "TrainableParams",
    "TrainingEfficiency",
    "TrainingEstimate",
    "TrainingRequest",
    "TrainingSpec",
    "TrainingThroughput",
    "UnknownIdError",
    "WeightFormat",
    "count_params",
    "describe_import",
    "estimate_inference",
    "estimate_training",
    "import_hf_config",
    "kv_bytes_per_sequence",
    "kv_bytes_per_token",
    "linear_weight_bytes",
    "load_catalog",
    "resolve_gpu",
    "resolve_model",
    "synthesize_spec",
    "trainable_params",
]
