"""The weight format a config.json's `quantization_config` implies, and which linears it covers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from planner.model.precision import WeightFormat

__all__ = ["CheckpointQuantization", "checkpoint_quantization"]

_WEIGHT_FORMAT_OF_QUANT = {"gptq": WeightFormat.INT4_GPTQ, "awq": WeightFormat.INT4_AWQ, "fp8": WeightFormat.FP8}
# Module names a DeepSeek/Llama-style checkpoint stores, to test a compressed-tensors `ignore` list against.
_SAMPLE_MODULES = {
    "attention": "model.layers.0.self_attn.q_proj",
    "dense_mlp": "model.layers.0.mlp.gate_proj",
    "shared_experts": "model.layers.0.mlp.shared_experts.gate_proj",
    "experts": "model.layers.0.mlp.experts.0.gate_proj",
}


@dataclass(frozen=True)
class CheckpointQuantization:
    """What the checkpoint stores: a weight format (None = 16-bit or not modelled) and its reach."""

    weight_format: WeightFormat | None = None
    group_size: int | None = None
    experts_only: bool = False  # attention, dense and shared MLPs stay 16-bit


def checkpoint_quantization(q: dict[str, Any] | None, warnings: list[str]) -> CheckpointQuantization:
    """Read `quantization_config`; append a warning (and suggest nothing) for a scheme memplan does not model.

    MXFP4 (gpt-oss): transformers' replace_with_mxfp4_linear swaps only the GptOss experts, so attention, router,
    embeddings and lm_head stay bf16 whatever modules_to_not_convert lists.
    compressed-tensors: the `ignore` list is tested against sample module names (re: patterns with re.match, as
    compressed-tensors does) to tell expert-only checkpoints (Kimi-K2.5) from fully quantized ones.
    """
    if not q:
        return CheckpointQuantization()
    method = str(q.get("quant_method", "")).lower()
    if method == "bitsandbytes" and q.get("load_in_4bit"):
        return CheckpointQuantization(WeightFormat.NF4)
    if method == "bitsandbytes" and q.get("load_in_8bit"):
        return CheckpointQuantization(WeightFormat.INT8)
    if method == "mxfp4":
        return CheckpointQuantization(WeightFormat.MXFP4, experts_only=True)
    if method == "compressed-tensors":
        return _compressed_tensors(q, warnings)
    fmt = _WEIGHT_FORMAT_OF_QUANT.get(method)
    if fmt is None or (fmt is not WeightFormat.FP8 and q.get("bits", 4) != 4):
        warnings.append(f"quantization_config method '{method}' is not modelled; give weight_format yourself")
        return CheckpointQuantization()
    block = q.get("weight_block_size")
    if fmt is WeightFormat.FP8 and block == [128, 128]:
        return CheckpointQuantization(WeightFormat.FP8_BLOCK)
    if fmt is WeightFormat.FP8 and block:
        warnings.append(f"fp8 weight_block_size {block} is not modelled; read as per-tensor fp8 (fewer scale bytes)")
    group = q.get("group_size")
    return CheckpointQuantization(fmt, group if isinstance(group, int) and group > 0 else None)


def _compressed_tensors(q: dict[str, Any], warnings: list[str]) -> CheckpointQuantization:
    """pack-quantized symmetric int4 per group (W4A16): INT4_SYM; every other scheme is a warning."""
    groups = q.get("config_groups") or {}
    weights = [g.get("weights") or {} for g in groups.values() if isinstance(g, dict)]
    scheme = weights[0] if len(weights) == 1 else {}
    group = scheme.get("group_size")
    if not (
        q.get("format") == "pack-quantized"
        and scheme.get("num_bits") == 4
        and scheme.get("type") == "int"
        and scheme.get("symmetric") is True
        and scheme.get("strategy") == "group"
        and isinstance(group, int)
        and group > 0
    ):
        warnings.append(
            "quantization_config compressed-tensors scheme is not modelled (only pack-quantized symmetric int4 "
            "per group is); give weight_format yourself"
        )
        return CheckpointQuantization()
    ignored = {part: _ignored(name, q.get("ignore") or []) for part, name in _SAMPLE_MODULES.items()}
    if ignored["experts"]:
        warnings.append("compressed-tensors ignores the routed experts; give weight_format yourself")
        return CheckpointQuantization()
    rest = {part: ignored[part] for part in ("attention", "dense_mlp", "shared_experts")}
    if any(rest.values()) and not all(rest.values()):
        kept = ", ".join(part for part, skip in rest.items() if skip)
        warnings.append(f"compressed-tensors ignores only some non-expert linears ({kept}); read as int4 on all")
    return CheckpointQuantization(WeightFormat.INT4_SYM, group, experts_only=all(rest.values()))


def _ignored(module: str, ignore: list[Any]) -> bool:
    for entry in ignore:
        pattern = str(entry)
        if pattern.startswith("re:") and re.match(pattern[3:], module):
            return True
        if module == pattern or module.endswith("." + pattern):
            return True
    return False
