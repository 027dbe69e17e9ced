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
    weights = sum(t.bytes for t in estimate.memory.terms if t.name.startswith("weights/"))
    assert weights == 13_476_831_232
    assert round(weights / GIB, 2) == 12.55


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
    # Llama-3-8B on one H100 SXM (80 GiB = 85,899,345,920 B), vLLM defaults, gpu_memory_utilization 0.9.
    #   budget:       ⌊0.9 · 85,899,345,920⌋                                  = 77,309,411,328 B
    #   weights:      8,030,261,248 params · 2 B                             = 16,060,522,496 B
    #   activations:  T = 8192 (max_num_batched_tokens), b = 2 B;
    #                 residual 2·T·h = 2·8192·4096 = 67,108,864; FFN 3·T·f = 3·8192·14336 = 352,321,536
    #                 (> attention T·(2·32 + 2·8)·128 = 83,886,080) → (67,108,864 + 352,321,536) · 2 = 838,860,800 B
    #   logits:       1 row · 128,256 · (2 + 4) B                            =        769,536 B
    #   overhead:     cuBLAS 32 MiB + CUDA context 512 MiB                   =    570,425,344 B
    #   non-KV total                                                          = 17,470,578,176 B
    #   KV capacity:  77,309,411,328 − 17,470,578,176                         = 59,838,833,152 B
    #   KV per token: 2 · 32 · 8 · 128 · 2 B = 131,072 B; block of 16 tokens = 2,097,152 B
    #   blocks:       ⌊59,838,833,152 / 2,097,152⌋                             = 28,533
    #   8K sequence:  8192 / 16 = 512 blocks → ⌊28,533 / 512⌋                  = 55 concurrent sequences
    serving = ServingSpec(prompt_tokens=7168, output_tokens=1024, gpu_memory_utilization=0.9)
    estimate = estimate_inference(InferenceRequest(model="llama-3-8b", gpu="h100-sxm", serving=serving), load_catalog())
    cap = estimate.capacity
    assert cap.budget_bytes == 77_309_411_328
    assert estimate.memory.get("activations/prefill_peak") == 838_860_800
    assert estimate.memory.get("activations/logits") == 769_536
    assert cap.kv_cache_capacity_bytes == 59_838_833_152
    assert (cap.kv_bytes_per_token, cap.kv_block_bytes, cap.kv_blocks) == (131_072, 2_097_152, 28_533)
    assert cap.max_concurrent_sequences == 55 == cap.kv_blocks // 512
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
    # Mixtral-8x7B, one 4096-token prompt, bf16: h = 4096, f_e = 14,336, k = 2.
    # vLLM (fused MoE) sizes a forward of its chunked-prefill budget, T = 8192: 2·T·h + T·k·(3·f_e + h)
    #   = 67,108,864 + 771,751,936 = 838,860,800 elements · 2 B = 1,677,721,600 B
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
    assert vllm.memory.get("activations/prefill_peak") == 1_677_721_600
    assert hf.memory.get("activations/prefill_peak") == 1_140_850_688
