"""Request examples shown in the OpenAPI document (Swagger UI offers them in a drop-down)."""

from __future__ import annotations

from typing import Any

__all__ = [
    "BATCH_EXAMPLES",
    "IMPORT_EXAMPLES",
    "INFERENCE_EXAMPLES",
    "PLAN_EXAMPLES",
    "QWEN2_5_0_5B_CONFIG",
    "TRAINING_EXAMPLES",
    "TRAINING_FIT_EXAMPLES",
]

# Qwen/Qwen2.5-0.5B config.json as published on the Hugging Face Hub (keys memplan does not read trimmed).
QWEN2_5_0_5B_CONFIG: dict[str, Any] = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "max_window_layers": 24,
    "sliding_window": 32768,
    "use_sliding_window": False,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "torch_dtype": "bfloat16",
}


def _example(summary: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"summary": summary, "value": value}


INFERENCE_EXAMPLES: dict[str, Any] = {
    "catalog": _example(
        "Catalog model on one H100, 32 sequences of 8K tokens",
        {
            "model": "llama-3-8b",
            "gpu": "h100-sxm",
            "serving": {"prompt_tokens": 7168, "output_tokens": 1024, "concurrency": 32},
        },
    ),
    "deepseek_v3_fp8": _example(
        "DeepSeek-V3 in its fp8 block-quantized checkpoint on 8 × H200 (vLLM, MLA latent cache)",
        {
            "model": "deepseek-v3",
            "gpu": "h200",
            "serving": {"weight_format": "fp8_block", "tensor_parallel": 8, "concurrency": 16},
        },
    ),
    "config_json": _example(
        "A raw Hugging Face config.json as the model",
        {"model": QWEN2_5_0_5B_CONFIG, "gpu": "l4", "serving": {"prompt_tokens": 4096, "concurrency": 8}},
    ),
    "inline_spec": _example(
        "An inline ModelSpec (GQA, 32 layers) with an fp8 KV cache",
        {
            "model": {
                "name": "my-8b",
                "num_layers": 32,
                "hidden_size": 4096,
                "num_heads": 32,
                "num_kv_heads": 8,
                "ffn_dim": 14336,
                "vocab_size": 128256,
                "max_context": 32768,
            },
            "gpu": "l40s",
            "serving": {"kv_cache_dtype": "fp8", "prompt_tokens": 16384, "concurrency": 4},
        },
    ),
}

TRAINING_EXAMPLES: dict[str, Any] = {
    "lora": _example(
        "LoRA r=16 on Llama-3-8B, 4K-token rows, one H100",
        {
            "model": "llama-3-8b",
            "gpu": "h100-sxm",
            "training": {"method": {"kind": "lora", "rank": 16}, "sequence_length": 4096},
        },
    ),
    "full_zero3": _example(
        "Full fine-tune of Qwen2.5-7B on 8 × H100: ZeRO-3, fp32 master weights, full checkpointing",
        {
            "model": "qwen2.5-7b",
            "gpu": "h100-sxm",
            "training": {
                "method": {"kind": "full"},
                "precision": "bf16_fp32_master",
                "gradient_checkpointing": "full",
                "micro_batch_size": 4,
                "gradient_accumulation_steps": 4,
                "data_parallel": 8,
                "zero_stage": 3,
            },
        },
    ),
    "qlora_70b": _example(
        "QLoRA r=64 on every linear of Llama-3-70B (NF4 base) on one H100, full checkpointing",
        {
            "model": "llama-3-70b",
            "gpu": "h100-sxm",
            "training": {
                "method": {"kind": "qlora", "rank": 64, "alpha": 16, "dropout": 0.1, "target_modules": "all-linear"},
                "gradient_checkpointing": "full",
            },
        },
    ),
}

IMPORT_EXAMPLES: dict[str, Any] = {
    "qwen2.5-0.5b": _example("Qwen2.5-0.5B config.json", QWEN2_5_0_5B_CONFIG),
    "deepseek_v2_lite_mla": _example(
        "An MLA + MoE config.json (DeepSeek-V2-Lite shape)",
        {
            "model_type": "deepseek_v2",
            "hidden_size": 2048,
            "intermediate_size": 10944,
            "moe_intermediate_size": 1408,
            "num_hidden_layers": 27,
            "num_attention_heads": 16,
            "num_key_value_heads": 16,
            "n_routed_experts": 64,
            "n_shared_experts": 2,
            "num_experts_per_tok": 6,
            "first_k_dense_replace": 1,
            "q_lora_rank": None,
            "kv_lora_rank": 512,
            "qk_nope_head_dim": 128,
            "qk_rope_head_dim": 64,
            "v_head_dim": 128,
            "vocab_size": 102400,
            "max_position_embeddings": 163840,
            "torch_dtype": "bfloat16",
        },
    ),
}

PLAN_EXAMPLES: dict[str, Any] = {
    "chat": _example(
        "Llama-3.1-8B chat: 256 users, TTFT ≤ 1 s and TPOT ≤ 40 ms at p90",
        {
            "model": "llama-3.1-8b",
            "workload": {"input_tokens": 2048, "output_tokens": 256, "concurrency": 256},
            "slo": {"ttft_ms": 1000, "tpot_ms": 40},
        },
    ),
    "rate": _example(
        "Llama-3-70B at 10 requests/s of mixed prompts, H100 or H200, disaggregated allowed",
        {
            "model": "llama-3-70b",
            "workload": {
                "input_tokens": [{"tokens": 1024, "weight": 3}, {"tokens": 4096, "weight": 1}],
                "output_tokens": 512,
                "request_rate": 10,
            },
            "slo": {"ttft_ms": 1000, "tpot_ms": 40},
            "constraints": {"gpus": ["h100-sxm", "h200"], "disaggregated": True},
        },
    ),
}
TRAINING_FIT_EXAMPLES: dict[str, Any] = {
    "zero3": _example(
        "Full fine-tuning of Llama-3-70B on 8 × H100 with ZeRO-3 (does not fit as given)",
        {
            "model": "llama-3-70b",
            "gpu": "h100-sxm",
            "training": {"data_parallel": 8, "zero_stage": 3, "sequence_length": 4096, "micro_batch_size": 2},
        },
    ),
}
BATCH_EXAMPLES: dict[str, Any] = {
    "items": _example(
        "Two serving requests and a training request",
        {
            "items": [
                {"model": "llama-3-8b", "gpu": "h100-sxm", "serving": {"concurrency": 32}},
                {"model": "llama-3-70b", "gpu": "h200", "serving": {"tensor_parallel": 2}},
                {"kind": "training", "model": "llama-3-8b", "training": {"method": {"kind": "lora"}}},
            ]
        },
    ),
    "grid": _example(
        "A grid: 3 GPUs × 4 TP sizes × 3 concurrencies, a few fields each",
        {
            "grid": {
                "base": {"model": "llama-3-70b", "serving": {"prompt_tokens": 2048}},
                "axes": {
                    "gpu": ["h100-sxm", "h200", "b200"],
                    "serving.tensor_parallel": [1, 2, 4, 8],
                    "serving.concurrency": [8, 64, 256],
                },
            },
            "fields": ["fits", "capacity.max_concurrent_sequences", "decode.tpot_s"],
        },
    ),
}
