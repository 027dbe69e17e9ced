"""Worked examples with the arithmetic written out, so a reader can check each number by hand."""

from __future__ import annotations

import pytest

from planner import (
    InferenceRequest,
    KVLayout,
    ServingSpec,
    estimate_inference,
    kv_bytes_per_sequence,
    kv_bytes_per_token,
    load_catalog,
)

GIB = 2**30


def test_llama_2_7b_bf16_weights() -> None:
    # Llama-2-7B: V=32000, h=4096, L=32, f=11008, MHA (n_kv = n_h = 32), untied lm_head.
    #   embedding + lm_head: 2 · 32000 · 4096            =   262,144,000
    #   attention per layer: 4 · 4096 · 4096             =    67,108,864
    #   MLP per layer:        3 · 4096 · 11008           =   135,266,304
    #   norms per layer:      2 · 4096                   =         8,192
    #   32 layers:            32 · 202,383,360           = 6,476,267,520
    #   final norm:           4096
    #   total                                            = 6,738,415,616 params
    #   bf16: × 2 B                                      = 13,476,831,232 B ≈ 12.55 GiB
    catalog = load_catalog()
    assert catalog.model("llama-2-7b").params.total == 6_738_415_616
    estimate = estimate_inference(InferenceRequest(model="llama-2-7b", gpu="a100-80gb"), catalog)
    weights = sum(t.bytes for t in estimate.memory.terms if t.name.startswith("weights/") and "rope" not in t.name)
    assert weights == 13_476_831_232
    assert round(weights / GIB, 2) == 12.55
    # vLLM also holds its rotary cos/sin cache: max_position 4096 · 128 · 2 B = 1 MiB
    assert estimate.memory.get("weights/rope_cache") == 4096 * 128 * 2


def test_llama_3_70b_kv_cache_at_128k() -> None:
    # Llama-3-70B: L=80, n_kv=8 (GQA), d_h=8192/64=128, bf16 (2 B).
    #   per token: 2 (K and V) · 80 · 8 · 128 · 2 B = 327,680 B = 320 KiB
    #   128K tokens: 327,680 · 131,072 = 42,949,672,960 B = exactly 40 GiB per sequence
    spec = load_catalog().model("llama-3-70b").spec
    assert kv_bytes_per_token(spec, kv_dtype_bytes=2) == 327_680
    assert kv_bytes_per_sequence(spec, 131_072, kv_dtype_bytes=2) == 40 * GIB
    # fp8 KV cache halves it: 20 GiB.
    assert kv_bytes_per_sequence(spec, 131_072, kv_dtype_bytes=1) == 20 * GIB


def test_deepseek_v2_latent_vs_expanded_kv() -> None:
    # DeepSeek-V2: L=60, n_h=128, d_c=512, d_R=64, d_nope=128, d_v=128, bf16.
    #   latent (vLLM/SGLang/transformers 5):  60 · (512 + 64) · 2 B          =    69,120 B/token
    #   expanded (transformers 4.x):          60 · 128 · (128 + 64 + 128) · 2 =  4,915,200 B/token
    #   the latent cache is 69,120 / 4,915,200 = 1.41 % of the expanded one (98.6 % smaller).
    spec = load_catalog().model("deepseek-v2").spec
    latent = kv_bytes_per_token(spec, 2, KVLayout.MLA_LATENT)
    expanded = kv_bytes_per_token(spec, 2, KVLayout.MLA_EXPANDED)
    assert (latent, expanded) == (69_120, 4_915_200)
    assert round(1 - latent / expanded, 3) == 0.986


def test_llama_3_8b_on_one_h100_blocks_and_sequences() -> None:
    # Llama-3-8B on one H100 SXM under vLLM 0.19, gpu_memory_utilization 0.9, the OpenAI server's defaults for a
    # >= 70 GiB GPU (max_num_batched_tokens 8192, max_num_seqs 1024).
    #   device memory as the driver reports it: 79.19 GiB                     = 85,029,615,043 B
    #   requested:    ⌊0.9 · 85,029,615,043⌋                                  = 76,526,653,538 B
    #   weights:      8,030,261,248 params · 2 B = 16,060,522,496 + the rotary cache 8192 · 128 · 2 = 2,097,152
    #                                                                         = 16,062,619,648 B
    #   profile run:  sampler warm-up over min(8192, 1024) = 1024 rows: 1024 · 128,256 · 14 B (bf16 logits 2, fp32
    #                 copy 4, probabilities 4, exponential noise 4)           =  1,838,678,016 B
    #                 + the dummy run's hidden states 8192 · 4096 · 2 = 67,108,864 and 2 · 1024 · 4096 · 2 =
    #                 16,777,216 for the sampled rows and their random copy   =  1,922,564,096 B
    #                 (the forward itself peaks lower: (2·T·h + 3·T·f) · 2 = 838,860,800 B)
    #   non-torch:    0.25 GiB at TP 1 (vLLM 0.19.0 startup logs)            =    268,435,456 B
    #   KV pool:      76,526,653,538 − 16,062,619,648 − 1,922,564,096 − 268,435,456 = 58,273,034,338 B
    #   blocks:       ⌊58,273,034,338 / (16 · 131,072 = 2,097,152)⌋            = 27,786 (444,576 tokens)
    #   8K sequence:  8192 / 16 = 512 blocks → ⌊27,786 / 512⌋                  = 54 concurrent sequences
    # vLLM 0.19.0 logged 58.11 GiB for Llama-3.1-8B at utilization 0.95 (benchmarks/data/engine_memory); this is 54.27.
    serving = ServingSpec(engine_version="0.19.0", prompt_tokens=7168, output_tokens=1024, gpu_memory_utilization=0.9)
    estimate = estimate_inference(InferenceRequest(model="llama-3-8b", gpu="h100-sxm", serving=serving), load_catalog())
    cap = estimate.capacity
    assert cap.budget_bytes == 76_526_653_538
    assert estimate.memory.get("activations/profile_peak") == 1_922_564_096
    assert estimate.memory.get("overhead/non_torch") == 268_435_456
    assert cap.kv_cache_capacity_bytes == 58_273_034_338
    assert (cap.kv_bytes_per_token, cap.kv_block_bytes, cap.kv_blocks) == (131_072, 2_097_152, 27_786)
    assert estimate.engine.kv_pool_tokens == 27_786 * 16
    assert cap.max_concurrent_sequences == 54 == cap.kv_blocks // 512
    assert estimate.fits


@pytest.mark.parametrize(
    ("model", "gpu", "tp", "fits"),
    [
        ("llama-3.1-405b", "h100-sxm", 8, False),  # 405.9e9 · 2 B = 756 GiB > 8 · 72 GiB budget
        ("llama-3-70b", "h100-sxm", 2, True),  # 131.4 GiB of bf16 weights over 2 × 72 GiB
        ("llama-3-70b", "h100-sxm", 1, False),
    ],
)
def test_fit_on_n_gpus(model: str, gpu: str, tp: int, fits: bool) -> None:
    request = InferenceRequest(model=model, gpu=gpu, serving=ServingSpec(tensor_parallel=tp))
    estimate = estimate_inference(request, load_catalog())
    assert estimate.fits is fits
    assert bool(estimate.fit_reasons) is not fits


def test_mixtral_prefill_on_transformers_vs_a_fused_moe_engine() -> None:
    # Mixtral-8x7B, one 4096-token prompt, bf16: h = 4096, f_e = 14,336, k = 2, V = 32,000.
    # vLLM 0.19 profiles a dummy forward of its token budget, T = 8192: 2·T·h + T·k·(3·f_e + h) = 838,860,800
    #   elements · 2 B = 1,677,721,600 B; then the sampler warm-up over 1024 rows, 1024 · 32,000 · 14 = 458,752,000 B,
    #   with the dummy run's hidden states (83,886,080 B) and the fused-MoE workspace still allocated (vLLM >= 0.13
    #   keeps it): T·k·max(f_e, h) + T·k·max(2·f_e, h) = (234,881,024 + 469,762,048) · 2 B = 1,409,286,144 B
    #   → 1,951,924,224 B, the larger moment.
    # transformers 5 runs the prompt, T = 4096, k·T = 8192 rows, with grouped-matmul experts and 4 live hidden
    #   copies: 4·T·h·2 = 134,217,728 B plus the larger of
    #   the activation moment 2·8192·(4096 + 4·14,336) = 1,006,632,960 B and the routing-weights moment
    #   (2·2 + 2·4)·8192·4096 = 402,653,184 B → 1,140,850,688 B (the probe grid's infer/gqa-moe measures it)
    serving = {"prompt_tokens": 4096, "output_tokens": 1}
    vllm, hf = (
        estimate_inference(
            InferenceRequest(model="mixtral-8x7b", gpu="h200", serving=ServingSpec(engine=engine, **serving)),
            load_catalog(),
        )
        for engine in ("vllm", "transformers")
    )
    assert vllm.serving.engine_version is None and vllm.engine.profile == "vllm-0.28"
    assert vllm.memory.get("activations/profile_peak") == 1_951_924_224
    assert hf.memory.get("activations/prefill_peak") == 1_140_850_688
