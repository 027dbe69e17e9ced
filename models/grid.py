"""The validation grid: probe configurations spanning attention kinds, MoE, PEFT methods, checkpointing, attention
implementations, precisions and optimizers, plus the full-size fake traces. `benchmarks/validate.py` and
tests/models run them. Grid probes use the default ProbeScale (2 layers, d_h 32, at most 8 heads, V = 1024).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from planner import ModelSpec
from planner.probe import ProbeRequest

__all__ = ["MQA_7B", "GridCase", "default_grid", "full_size_grid", "quick_grid"]

# An MQA model for the grid: Llama-2-7B's shapes with one KV head (multi-query attention, Shazeer 2019,
# arXiv:1911.02150); the catalog has no MQA model in a family transformers 5 builds.
MQA_7B = ModelSpec(
    name="Llama-2-7B shapes, multi-query attention",
    family="llama",
    num_layers=32,
    hidden_size=4096,
    num_heads=32,
    num_kv_heads=1,
    ffn_dim=11008,
    vocab_size=32000,
)

GRID_SEQUENCE = 256  # tokens per row: eager s² scores matter, a step stays well under a second on a CPU
GRID_MICRO_BATCH = 4
SHORT: dict[str, Any] = {"sequence_length": 128, "micro_batch_size": 1}
LORA_QV = {"kind": "lora", "rank": 8, "target_modules": ["q_proj", "v_proj"]}
LORA_Q = {"kind": "lora", "rank": 8, "target_modules": ["q_proj"]}  # MLA without q_lora_rank: q_proj is a Linear
LORA_ALL = {"kind": "lora", "rank": 8, "target_modules": "all-linear"}
PREFIX = {"kind": "prefix", "num_virtual_tokens": 16}
PROMPT = {"kind": "prompt", "num_virtual_tokens": 16}
IA3 = {"kind": "ia3"}
FULL = {"kind": "full"}
PEFT_DEFAULT_LORA = {"kind": "lora", "rank": 16, "target_modules": ["q_proj", "v_proj"]}  # peft's Llama default


@dataclass(frozen=True)
class GridCase:
    """One probe of the grid, with a readable id (model/method/attention/checkpointing/...)."""

    id: str
    request: ProbeRequest


def _training(
    case_id: str,
    model: str | ModelSpec,
    method: dict[str, Any],
    attention: str = "sdpa",
    ckpt: str = "none",
    **extra: object,
) -> GridCase:
    training = {
        "method": method,
        "attention": attention,
        "gradient_checkpointing": ckpt,
        "sequence_length": GRID_SEQUENCE,
        "micro_batch_size": GRID_MICRO_BATCH,
    } | extra
    return GridCase(case_id, ProbeRequest.model_validate({"kind": "training", "model": model, "training": training}))


def _inference(case_id: str, model: str | ModelSpec, **serving: Any) -> GridCase:
    settings = {"engine": "transformers", "prompt_tokens": 256, "output_tokens": 8, "concurrency": 4, **serving}
    return GridCase(case_id, ProbeRequest.model_validate({"kind": "inference", "model": model, "serving": settings}))


def default_grid() -> list[GridCase]:
    """30 training probes (each measured at the first and the steady step) and 7 inference probes."""
    m = "llama-2-7b"  # MHA
    g = "llama-3-8b"  # GQA
    return [
        _training("mha/full/sdpa", m, FULL),
        _training("mha/full/eager", m, FULL, "eager"),
        _training("mha/full/sdpa/ckpt", m, FULL, ckpt="full"),
        _training("mha/lora-qv/sdpa", m, LORA_QV),
        _training("mha/prefix/sdpa", m, PREFIX),
        _training("mha/prompt/sdpa", m, PROMPT),
        _training("mha/ia3/sdpa", m, IA3),
        _training("gqa/full/sdpa", g, FULL),
        _training("gqa/full/eager/ckpt", g, FULL, "eager", "full"),
        _training("gqa/lora-all/sdpa/ckpt", g, LORA_ALL, ckpt="full"),
        _training("gqa/lora-all/eager", g, LORA_ALL, "eager"),
        _training("gqa/prompt/sdpa/ckpt", g, PROMPT, ckpt="full"),
        _training("gqa/ia3/sdpa/ckpt", g, IA3, ckpt="full"),
        _training("gqa/full/sdpa/fp32", g, FULL, precision="fp32"),
        _training("gqa/full/sdpa/bf16-autocast", g, FULL, precision="bf16_autocast"),
        _training("gqa/full/sdpa/fused-adamw", g, FULL, optimizer={"implementation": "fused"}),
        # one short row: the optimizer step, not backward, sets the first step's peak
        _training("gqa/full/sdpa/for-loop-adamw", g, FULL, optimizer={"implementation": "for_loop"}, **SHORT),
        _training("gqa/full/sdpa/sgd-momentum", g, FULL, optimizer={"kind": "sgd", "momentum": 0.9}),
        _training("gqa/full/sdpa_math", g, FULL, "sdpa_math"),  # SDPA's math fallback, forced where flash would run
        _training("mqa/full/sdpa", MQA_7B, FULL),
        _training("mqa/full/eager", MQA_7B, FULL, "eager"),
        _training("mqa/lora-qv/sdpa/ckpt", MQA_7B, LORA_QV, ckpt="full"),
        _training("mqa/prefix/eager", MQA_7B, PREFIX, "eager"),
        _training("qwen2.5/full/sdpa", "qwen2.5-7b", FULL),
        _training("qwen2.5/lora-qv/sdpa/ckpt", "qwen2.5-7b", LORA_QV, ckpt="full"),
        _training("gqa-moe/full/sdpa", "mixtral-8x7b", FULL),
        _training("gqa-moe/lora-qv/sdpa/ckpt", "mixtral-8x7b", LORA_QV, ckpt="full"),
        _training("mla-moe/full/sdpa", "deepseek-v2-lite", FULL),
        _training("mla-moe/full/eager", "deepseek-v2-lite", FULL, "eager"),
        _training("mla-moe/lora-q/sdpa/ckpt", "deepseek-v2-lite", LORA_Q, ckpt="full"),
        _inference("infer/mha", m),
        _inference("infer/gqa", g),
        _inference("infer/gqa/eager", g, attention="eager"),
        _inference("infer/mqa", MQA_7B),
        _inference("infer/mla-moe", "deepseek-v2-lite"),
        # short prompts, many of them: the MoE layer, not attention, sets the prefill peak
        _inference("infer/gqa-moe", "mixtral-8x7b", prompt_tokens=128, concurrency=8),
        _inference("infer/mla-moe/routing", "deepseek-v2-lite", prompt_tokens=64, concurrency=16),
    ]


def quick_grid() -> list[GridCase]:
    """A few seconds' worth: one probe per attention kind and MoE, and one inference probe."""
    keep = {"mha/full/sdpa", "gqa/lora-all/sdpa/ckpt", "mqa/full/eager", "gqa-moe/full/sdpa", "mla-moe/full/sdpa",
            "infer/gqa"}  # fmt: skip
    return [case for case in default_grid() if case.id in keep]


def full_size_grid() -> list[GridCase]:
    """Full-size fake traces: Llama-3-8B (32 layers) and Llama-3-70B (80 layers), one row of 4K tokens, full
    fine-tuning and LoRA (peft's default q_proj/v_proj, r=16), checkpointing off and on. Largest first."""
    cases = []
    for model in ("llama-3-70b", "llama-3-8b"):
        for method_id, method in (("lora-qv", PEFT_DEFAULT_LORA), ("full", FULL)):
            for ckpt in ("full", "none"):
                training = {"method": method, "gradient_checkpointing": ckpt, "sequence_length": 4096}
                request = ProbeRequest.model_validate(
                    {"model": model, "training": training, "backend": "fake", "scale_down": False}
                )
                cases.append(GridCase(f"{model}/{method_id}/sdpa{'/ckpt' if ckpt == 'full' else ''}", request))
    return cases
