"""Llama-3-8B fine-tuning at 4K tokens, worked by hand: full vs LoRA r16 vs QLoRA, checkpointing, SDPA vs eager.

Llama-3-8B: N = 8,030,261,248 params, L = 32, h = 4096, n_h = 32, n_kv = 8, d_h = 128, f = 14336, V = 128256.
One row of s = 4096 tokens (T = 4096), bf16 params and activations, torch AdamW (foreach), steady state.
"""

from __future__ import annotations

import pytest

from planner import load_catalog
from planner.training.estimate import TrainingRequest, estimate_training
from planner.training.memory import training_phases
from planner.training.peft_params import trainable_params
from planner.training.spec import TrainingSpec

GIB = 2**30
N = 8_030_261_248
ROPE_TABLES_BYTES = 2 * 4 * 64  # inv_freq and original_inv_freq, fp32, d/2 = 64 frequencies (transformers 5.23)
T, H, F, V = 4096, 4096, 14336, 128256


def _estimate(**training: object):  # type: ignore[no-untyped-def]
    request = TrainingRequest(model="llama-3-8b", gpu="h100-sxm", training={"sequence_length": T, **training})
    return estimate_training(request, load_catalog())


def test_full_fine_tune_sdpa_no_checkpointing() -> None:
    # weights 2N = 16,060,522,496; AdamW m and v in bf16 (torch keeps state in the param dtype) 4N = 32,121,044,992
    # per layer (bf16, SDPA):
    #   2 RMSNorms × (fp32 input 4·T·h + rsqrt 4·T + normalized 2·T·h + output 2·T·h) = 268,468,224
    #   attention: q 2·T·n_h·d + k, v 2·T·n_kv·d + output 2·T·n_h·d + fp32 log-sum-exp 4·n_h·T = 84,410,368
    #   SwiGLU: gate, up, silu and product outputs 4 · 2·T·f = 469,762,048
    #   = 822,640,640 × 32 layers = 26,324,500,480
    # outside the blocks: ids 8·T, RoPE cos/sin 2·2·T·d, final norm 6·T·h + 4·T, lm_head input 2·T·h,
    #   fp32 log-probs 4·T·V = 2,101,346,304, labels 8·(T + 1) (a view of the padded labels), loss 4 → 2,237,743,116
    # logits gradients 2 · 4·T·V = 4,202,692,608
    # the model's buffers: RoPE's inv_freq and original_inv_freq, 2 · 4·d/2 = 512; the loss and backward's seed 2·4
    # loss_backward = 16,060,522,496 + 32,121,044,992 + 26,324,500,480 + 2,237,743,116 + 4,202,692,608 + 512 + 8
    #               = 80,946,504,212 B (75.39 GiB)
    # optimizer step = weights 2N + grads 2N + m, v 4N + foreach temporaries 2N + buffers 512 = 10N + 512
    #               = 80,302,612,992 B (74.79 GiB); AdamW's step counters are on the CPU (not fused)
    e = _estimate()
    assert e.phases["loss_backward"].get("activations/blocks") == 26_324_500_480
    assert e.phases["loss_backward"].get("activations/outside_blocks") == 2_237_743_116
    assert e.phases["loss_backward"].total_bytes == 80_946_504_212
    assert e.phases["optimizer_step"].total_bytes == 10 * N + ROPE_TABLES_BYTES
    assert e.peak_phase == "loss_backward" and e.fits  # 75.39 GiB of 79.5 GiB (80 GiB less the CUDA context)


def test_full_fine_tune_with_checkpointing_moves_the_peak_to_the_optimizer_step() -> None:
    # checkpointing keeps each block's input, 2·T·h = 33,554,432 B × 32 = 1,073,741,824 B; the RoPE tables are
    # no longer saved by the blocks but held by the checkpoints, with the position ids: 2·2·T·128 + 8·T = 2,129,920
    # loss_backward = 2N + 4N + 1,073,741,824 + (2,237,743,116 − 2,097,152) + 4,202,692,608 + 2,129,920 + 512 + 8
    #               = 55,695,778,324
    # the optimizer step, 10N + 512 = 80,302,612,992 B (74.79 GiB), is now the peak
    e = _estimate(gradient_checkpointing="full")
    assert e.phases["loss_backward"].total_bytes == 55_695_778_324
    assert e.peak_phase == "optimizer_step"
    assert e.allocated_peak_bytes == 10 * N + ROPE_TABLES_BYTES


def test_eager_attention_adds_the_s_squared_scores() -> None:
    # eager keeps the fp32 softmax (4·n_h·T²) and its bf16 copy (2·n_h·T²) per layer instead of a log-sum-exp:
    # 6 · 32 · 4096² · 32 layers ≈ 96 GiB more than SDPA — it does not fit one H100.
    sdpa, eager = _estimate(), _estimate(attention="eager")
    # per layer: + 6·n_h·T² scores (3,221,225,472) + k and v repeated to 32 heads 2 · 2·T·(32 − 8)·128
    #   (50,331,648) − the log-sum-exp 4·n_h·T (524,288) = 3,271,032,832; × 32 layers = 104,673,050,624 B
    blocks = eager.phases["loss_backward"].get("activations/blocks") - sdpa.phases["loss_backward"].get(
        "activations/blocks"
    )
    assert blocks == 32 * (6 * 32 * T * T + 2 * 2 * T * 24 * 128 - 4 * 32 * T) == 104_673_050_624
    assert not eager.fits
    assert any(s.change.startswith("SDPA") and s.fits for s in eager.suggestions)


def test_sdpa_math_fallback_keeps_fp32_scores_and_inputs() -> None:
    # the math fallback keeps, per layer, fp32 q·√scale and kᵀ·√scale and v (k, v repeated to 32 heads):
    #   4·n_h·T·(d + d + d) = 4·32·4096·384 = 201,326,592, the fp32 softmax 4·n_h·T² = 2,147,483,648 and a
    #   contiguous bf16 copy of the output for o_proj 2·T·h = 33,554,432, instead of SDPA's q, k, v, output and
    #   log-sum-exp (2·T·(2·32 + 2·8)·128 + 4·n_h·T = 84,410,368): +2,297,954,304 B per layer
    sdpa, math = _estimate(), _estimate(attention="sdpa_math")
    blocks = math.phases["loss_backward"].get("activations/blocks") - sdpa.phases["loss_backward"].get(
        "activations/blocks"
    )
    assert blocks == 32 * (4 * 32 * T * 384 + 4 * 32 * T * T + 2 * T * 4096 - 84_410_368) == 73_534_537_728
    assert any(s.change == "SDPA/flash attention instead of sdpa_math" and s.fits for s in math.suggestions)


def test_lora_and_qlora_weights() -> None:
    # LoRA r=16 on q_proj and v_proj (peft's default for llama): 32 · 16 · ((4096 + 4096) + (4096 + 1024))
    #   = 6,815,744 trainable params, kept in fp32 with fp32 grads and AdamW states: 16 B each
    # QLoRA: decoder linears in NF4 with double quantization, n/2 + n/64 + 4·n/16384 bytes for n params:
    #   218,103,808 params per layer → 112,513,024 B × 32 = 3,600,416,768 B
    #   embeddings, lm_head and norms stay bf16: (N − 32 · 218,103,808) · 2 = 2,101,878,784 B
    #   frozen base 5,702,295,552 B (5.31 GiB) instead of 2N = 16,060,522,496 B (14.96 GiB)
    lora, qlora = _estimate(method={"kind": "lora", "rank": 16}), _estimate(method={"kind": "qlora", "rank": 16})
    assert lora.trainable_params.trainable == qlora.trainable_params.trainable == 6_815_744
    step = lora.phases["optimizer_step"]
    assert step.get("weights/frozen") == 2 * N
    assert step.get("weights/trainable") == step.get("gradients") == 4 * 6_815_744
    assert step.get("optimizer/states") == 8 * 6_815_744
    assert qlora.phases["optimizer_step"].get("weights/frozen") == 3_600_416_768 + 2_101_878_784


@pytest.mark.parametrize("method", [{"kind": "full"}, {"kind": "lora", "rank": 16}, {"kind": "qlora", "rank": 16}])
@pytest.mark.parametrize("checkpointing", ["none", "full"])
def test_checkpointing_never_raises_saved_activations(method: dict[str, object], checkpointing: str) -> None:
    e = _estimate(method=method, gradient_checkpointing=checkpointing)
    base = _estimate(method=method)
    assert e.phases["loss_backward"].get("activations/blocks") <= base.phases["loss_backward"].get("activations/blocks")


def test_lora_saves_fewer_activations_than_full_fine_tuning() -> None:
    full = _estimate().phases["loss_backward"].get("activations/blocks")
    lora = _estimate(method={"kind": "lora", "rank": 16}).phases["loss_backward"].get("activations/blocks")
    assert lora < full  # frozen projections keep no inputs; adapted ones keep fp32 copies


def test_max_micro_batch_is_the_largest_that_fits() -> None:
    catalog = load_catalog()
    spec = catalog.model("llama-3-8b").spec
    training = TrainingSpec(method={"kind": "lora", "rank": 16}, sequence_length=T, gradient_checkpointing="full")
    e = _estimate(method={"kind": "lora", "rank": 16}, gradient_checkpointing="full")
    tp = trainable_params(spec, training.method)
    b = e.max_micro_batch_size
    assert b >= 1
    assert training_phases(spec, training, tp, b).peak.total_bytes <= e.budget_bytes
    assert training_phases(spec, training, tp, b + 1).peak.total_bytes > e.budget_bytes


@pytest.mark.parametrize("checkpointing", ["none", "selective", "full"])
@pytest.mark.parametrize("method", [{"kind": "full"}, {"kind": "prompt"}, {"kind": "lora", "rank": 8}])
def test_every_phase_term_is_non_negative(checkpointing: str, method: dict[str, object]) -> None:
    # regression: under selective recomputation the last block's recomputed scores were subtracted twice
    e = _estimate(method=method, attention="eager", gradient_checkpointing=checkpointing, micro_batch_size=2)
    assert all(term.bytes >= 0 for phase in e.phases.values() for term in phase.terms)
