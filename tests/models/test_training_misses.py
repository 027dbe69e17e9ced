"""The classes of training misses issue 10's independent check found, each probed on the cpu backend: saved
activations exact and both steps' peaks within 1 %. The numbers in the comments are the planner's errors before
the fix, measured with these very probes (torch 2.13 CPU, transformers 5.23, peft 0.21.2).
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("torch")

from models.build import build_training_model
from models.campaign import FAMILIES, Draw
from models.runner import probe_spec, run_probe, run_probe_detailed
from models.training_probe import training_run
from planner.probe import ProbeRequest
from planner.training.memory import parameter_tensors
from planner.training.peft_params import trainable_params
from planner.training.state import buffer_bytes

PEAK_TOLERANCE = 0.01
SMALL = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 8,
         "num_key_value_heads": 2, "vocab_size": 1024, "head_dim": 32}  # fmt: skip
MQA = {"num_layers": 32, "hidden_size": 4096, "num_heads": 32, "num_kv_heads": 1, "ffn_dim": 11008, "vocab_size": 32000}
LORA_QKV = {"kind": "lora", "rank": 8, "dropout": 0.1, "target_modules": ["q_proj", "k_proj", "v_proj"]}
ALL_LINEAR = {"kind": "lora", "rank": 8, "target_modules": "all-linear"}
IA3_Q_O = {"kind": "ia3", "target_modules": ["q_proj", "o_proj"]}
IA3_FF_QK = {
    "kind": "ia3",
    "target_modules": ["q_proj", "k_proj", "up_proj"],
    "feedforward_modules": ["q_proj", "k_proj"],
}
IA3_PHI3 = {"kind": "ia3", "target_modules": ["qkv_proj", "gate_up_proj", "down_proj"],
            "feedforward_modules": ["qkv_proj", "down_proj"]}  # fmt: skip
IA3_MLA = {"kind": "ia3", "target_modules": ["q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"],
           "feedforward_modules": ["kv_b_proj", "o_proj"]}  # fmt: skip
LORA_DOWN = {"kind": "lora", "rank": 4, "dropout": 0.1, "target_modules": ["down_proj"]}
WINDOW = {**SMALL, "model_type": "mistral", "sliding_window": 64, "num_attention_heads": 2, "num_key_value_heads": 1}

CASES: dict[str, tuple[Any, dict[str, Any], dict[str, Any]]] = {
    # 1. LoRA dropout: saved −5.49 %, peak −3.01 % (bf16 q/k/v); saved −16.3 %, peak −10.1 % (fp32 all-linear)
    "lora-dropout/bf16": ("llama-3-8b", {"method": LORA_QKV}, {}),
    "lora-dropout/fp32-all-linear": (
        "llama-3-8b",
        {"precision": "fp32", "method": {**ALL_LINEAR, "dropout": 0.05}},
        {},
    ),
    # 2. Phi-3's fused qkv_proj and gate_up_proj under LoRA all-linear: saved +0.45 % (fp32)
    "phi3/lora-all-linear": ({**SMALL, "model_type": "phi3"}, {"method": ALL_LINEAR}, {}),
    "phi3/lora-all-linear/fp32": ({**SMALL, "model_type": "phi3"}, {"method": ALL_LINEAR, "precision": "fp32"}, {}),
    # 3. SGD allocates no step temporaries: peak +49.3 % (fp32), +33.3 % with momentum
    "sgd/fp32": ("llama-3-8b", {"precision": "fp32", "optimizer": {"kind": "sgd"}}, {"sequence_length": 64}),
    "sgd-momentum/fp32": (
        "llama-3-8b",
        {"precision": "fp32", "optimizer": {"kind": "sgd", "momentum": 0.9}},
        {"sequence_length": 64},
    ),
    # 4. MQA: repeat_kv's view of one KV head: saved +4.6 % (eager, one row); saved +10.1 %, peak +4.6 % (prefix)
    "mqa/eager/one-row": (MQA, {"attention": "eager"}, {"micro_batch_size": 1}),
    "mqa/prefix": (MQA, {"method": {"kind": "prefix", "num_virtual_tokens": 8}}, {}),
    # 5. MLA without q_lora_rank, LoRA on kv_a/kv_b: saved −8.1 %, peak −3.1 %
    "mla/lora-kv": (
        "deepseek-v2-lite",
        {"method": {"kind": "lora", "rank": 8, "target_modules": ["kv_a_proj_with_mqa", "kv_b_proj"]}},
        {"sequence_length": 64},
    ),
    # 6. SDPA with a sliding window under full checkpointing: peak −5.0 % at 256 tokens (the boolean window mask)
    "window/sdpa/ckpt": (
        WINDOW,
        {"gradient_checkpointing": "full", "method": {"kind": "lora", "rank": 4, "target_modules": ["q_proj"]}},
        {"sequence_length": 256},
    ),
    # 8. IA3 beyond k, v (output-scaled) and down_proj (input-scaled): the ledger scaled only those three. Saved / peak
    # before: gate/up fp32 −50.5 % / −24.8 %; q, o (o input-scaled) eager −9.7 % / −5.7 %; q, k input-scaled and up
    # under autocast (the fp32 normed input kept once) −14.2 % / −6.9 %; Phi-3's fused qkv/gate_up −20.8 % / −12.2 %,
    # in fp32 on SDPA math with one row (v a view of the whole qkv output, also without IA3) −20.4 % / −9.3 %; MLA
    # projections in fp32 (and DeepSeek's fp32 router casts, no-ops) −11.9 % / −4.6 %. After: exact / within 0.09 %
    "ia3/gate-up/fp32": (
        "llama-3-8b",
        {"precision": "fp32", "method": {"kind": "ia3", "target_modules": ["gate_proj", "up_proj"]}},
        {},
    ),
    "ia3/q-o-ff/eager": (
        "llama-3-8b",
        {"attention": "eager", "method": {**IA3_Q_O, "feedforward_modules": ["o_proj"]}},
        {},
    ),
    "ia3/ff-shared-input/autocast": (
        "llama-3-8b",
        {"precision": "bf16_autocast", "method": IA3_FF_QK},
        {},
    ),
    "ia3/phi3-fused": ({**SMALL, "model_type": "phi3"}, {"method": IA3_PHI3}, {}),
    "ia3/phi3-fused/fp32-math-one-row": (
        {**SMALL, "model_type": "phi3"},
        {"precision": "fp32", "attention": "sdpa_math", "method": IA3_PHI3},
        {"micro_batch_size": 1},
    ),
    "ia3/mla-ff/fp32": ("deepseek-v2-lite", {"precision": "fp32", "method": IA3_MLA}, {"sequence_length": 64}),
    # 9. LoRA on down_proj, measured at the peak op (the storages live there). Under full checkpointing the peak is
    # the recompute at lora_A's output: backward has already cast and scaled the output gradient (4·T·h, p·T·h)
    # and the forward holds the base output and, with dropout, the fp32 cast of the product (4·T·f); before, the
    # MLP backward's 2·4·T·f overestimated without dropout. Without checkpointing the forward peaks in the last
    # block's down_proj (lora_B's fp32 output and its scaled copy, the embedding output and block input held by
    # the model's loop). Peak before (bf16 unless said): recompute with dropout −5.07 %, fp32 −0.95 % (and the fp32
    # residual counted beside the norm that keeps it), without dropout at f = 8·h +11.4 %; the forward −3.27 %
    # (f = 3·h, V = 256); the campaign's Mistral all-linear draw (seed 7 #56) −1.14 %. After: within 0.01 %
    "lora-down/ckpt-dropout": ("llama-3-8b", {"gradient_checkpointing": "full", "method": LORA_DOWN}, {}),
    "lora-down/ckpt-dropout/fp32": (
        "llama-3-8b",
        {"precision": "fp32", "gradient_checkpointing": "full", "method": LORA_DOWN},
        {},
    ),
    "lora-down/ckpt/wide": (
        "llama-3-8b",
        {"gradient_checkpointing": "full", "method": {**LORA_DOWN, "dropout": 0.0}},
        {"scale": {"ffn_multiple": 8.0}},
    ),
    "lora-down/forward": (
        {**SMALL, "model_type": "llama"},
        {"method": LORA_DOWN},
        {"sequence_length": 64, "micro_batch_size": 1, "scale": {"ffn_multiple": 3.0, "vocab_size": 256}},
    ),
    # 10. IA3 scaling gate_proj's or up_proj's output, (W·x · l).to(p): its backward holds the fp32 output gradient,
    # its products with l and with W·x, and W·x's gradient cast to p (3·4·T·f + p·T·f, the peak op), where the
    # planner had SwiGLU's 3·p·T·f. Peak before: gate −2.81 %, up −6.65 %. After: within 0.01 %
    "ia3/gate": (
        {**SMALL, "model_type": "llama"},
        {"method": {"kind": "ia3", "target_modules": ["gate_proj"]}},
        {"sequence_length": 64, "micro_batch_size": 1, "scale": {"ffn_multiple": 4.0, "vocab_size": 256}},
    ),
    "ia3/up": (
        {**SMALL, "model_type": "llama"},
        {"method": {"kind": "ia3", "target_modules": ["up_proj"]}},
        {"sequence_length": 64, "micro_batch_size": 1, "scale": {"ffn_multiple": 4.0, "vocab_size": 256}},
    ),
    # 11. LoRA on gate_proj / up_proj with dropout: at the scaling of lora_B's output the base output (p·T·f), lora_B's
    # fp32 output and its scaled copy (2·4·T·f) and the fp32 cast of the MLP input (4·T·h) are alive, in the forward
    # (no checkpointing) and in the recompute; the planner had no such moment. Peak before: forward (up) −5.56 %,
    # recompute (gate, up) −4.53 %. After: within 0.01 %
    "lora-up/forward": (
        {**SMALL, "model_type": "llama"},
        {"method": {**LORA_DOWN, "target_modules": ["up_proj"]}},
        {"sequence_length": 64, "micro_batch_size": 1, "scale": {"ffn_multiple": 3.0, "vocab_size": 256}},
    ),
    "lora-gate-up/ckpt": (
        {**SMALL, "model_type": "llama"},
        {"gradient_checkpointing": "full", "method": {**LORA_DOWN, "target_modules": ["gate_proj", "up_proj"]}},
        {"sequence_length": 64, "micro_batch_size": 1, "scale": {"ffn_multiple": 4.0, "vocab_size": 256}},
    ),
}

# The campaign's two checkpointed IA3 draws that still missed on the peak with exact saved activations (seed 2026):
# Qwen3 IA3 on gate/up/v in bf16 −5.37 % (the gate/up backward above, in a recomputed block) and Gemma IA3 on
# down/gate/up under autocast +2.01 % (down_proj's bf16 weight cast, released before its IA3 backward). After:
# −0.005 % and −0.003 %
CAMPAIGN_IA3 = {
    "qwen3/ia3-gate-up-v/ckpt": Draw(family="qwen3", heads=5, kv="mha", head_dim=16, ffn_multiple=3.5, layers=4,
                                     vocab=312, method="ia3", targets=("gate_proj", "up_proj", "v_proj"),
                                     checkpointing="full", batch=1, seq=70),
    "gemma/ia3-down-gate-up/autocast-ckpt": Draw(family="gemma", heads=4, kv="mqa", head_dim=28, ffn_multiple=3.0,
                                                 layers=3, vocab=538, method="ia3",
                                                 targets=("down_proj", "gate_proj", "up_proj"),
                                                 precision="bf16_autocast", implementation="fused",
                                                 checkpointing="full", batch=3, seq=44),
}  # fmt: skip


# 12. Seeded-campaign misses (seed 7, shrunk), each a moment the planner had no term for. Peak before → after:
# - an RMSNorm's backward holds five fp32 T·h tensors (PowBackward: x.pow(1), 2·x.pow(1), their product with the
#   gradient, beside the mean's expanded gradient and x·rsqrt's direct one): in a block with a narrow FFN, at the
#   post-attention norm (Gemma LoRA k/o, checkpointed, −2.19 % → −0.03 %), and at the final norm with a small
#   vocabulary (Gemma full fine-tuning, V = 49: −1.48 % → −0.03 %; Gemma prompt tuning under autocast, eager,
#   draw #29: −2.63 % → −0.005 %);
# - the recompute at the end of SDPA's math kernel, whose C++ locals (fp32 q/k/v casts, k repeated, the fp32
#   causal mask, the fp32 output and the bf16 casts of output and probabilities) live until it returns (Gemma LoRA
#   k/o with SGD, draw #32: −9.24 % → −0.01 %);
# - the for-loop AdamW's denominators: Phi-3's fused gate_up_proj is the largest tensor, and the previous tensor's
#   denominator is still bound (full fine-tuning: −4.59 % → −0.02 %; draw #25, eager, checkpointed: −3.58 % → −0.02 %);
# - Qwen3's q/k norms under autocast read bf16 linear outputs: the normalized x, kept for the norm weight, is bf16, not
#   the fp32 of the residual stream's norms (saved +3.2 % → exact; draw #33 on SDPA math: peak +3.04 % → +0.04 %)
CAMPAIGN_MOMENTS = {
    "gemma/lora-k-o/ckpt/post-attention-norm": Draw(family="gemma", heads=4, kv="gqa", head_dim=28,
                                                    ffn_multiple=1.0, layers=3, vocab=213, method="lora", rank=3,
                                                    targets=("k_proj", "o_proj"), checkpointing="full", batch=1,
                                                    seq=16),
    "gemma/full/final-norm": Draw(family="gemma", heads=3, kv="gqa", head_dim=16, ffn_multiple=1.0, layers=3,
                                  vocab=49, batch=1, seq=55),
    "gemma/lora-k-o/ckpt/sdpa-math-recompute": Draw(family="gemma", heads=4, kv="gqa", head_dim=28,
                                                    ffn_multiple=1.0, layers=3, vocab=213, method="lora", rank=3,
                                                    targets=("k_proj", "o_proj"), optimizer="sgd",
                                                    implementation="fused", momentum=0.9, checkpointing="full",
                                                    attention="sdpa_math", batch=1, seq=78),
    "phi3/full/for-loop-adamw": Draw(family="phi3", heads=5, kv="mqa", head_dim=8, ffn_multiple=2.75, layers=3,
                                     vocab=51, implementation="for_loop", batch=1, seq=16),
    "qwen3/full/autocast-qk-norms": Draw(family="qwen3", heads=2, kv="mha", head_dim=16, ffn_multiple=1.5,
                                         layers=3, vocab=312, precision="bf16_autocast", batch=1, seq=16),
}  # fmt: skip


@pytest.mark.parametrize("case", [*CAMPAIGN_IA3, *CAMPAIGN_MOMENTS])
def test_campaign_draw_is_fixed(case: str) -> None:
    r = run_probe({**CAMPAIGN_IA3, **CAMPAIGN_MOMENTS}[case].request())
    by_name = {c.name: c for c in r.comparisons}
    assert by_name["saved_activations"].measured_bytes == by_name["saved_activations"].estimated_bytes
    for name in ("peak/first_step", "peak/steady"):
        assert abs(by_name[name].rel_error) <= PEAK_TOLERANCE, (name, by_name[name].rel_error)


@pytest.mark.parametrize("case", list(CASES))
def test_class_of_miss_is_fixed(case: str) -> None:
    model, training, shape = CASES[case]
    scale = {"scale": shape["scale"]} if "scale" in shape else {}
    shape = {k: v for k, v in shape.items() if k != "scale"}
    run = {"sequence_length": 128, "micro_batch_size": 2, **training, **shape}
    request = ProbeRequest.model_validate({"model": model, "backend": "cpu", "training": run, **scale})
    r = run_probe(request)
    assert r.training is not None and r.training.device == "cpu"  # compared with the device it ran on
    by_name = {c.name: c for c in r.comparisons}
    saved = by_name["saved_activations"]
    assert saved.measured_bytes == saved.estimated_bytes, saved
    for name in ("peak/first_step", "peak/steady"):
        assert abs(by_name[name].rel_error) <= PEAK_TOLERANCE, (name, by_name[name].rel_error)


# 14. peft's LoRA on MoE expert parameters and routers (ParamWrapper, reached through target_parameters: "all-linear"
# and the expert names peft converts on Mixtral, Qwen3-MoE, DeepSeek). Each adapted [E, ·, ·] stack is parametrized
# while the experts run, W' = baddbmm(W, B.to(p), A.to(p)): the grouped matmuls keep W' (p·E·2f_e·h, p·E·h·f_e) and
# the tokens and SwiGLU product they read, baddbmm the bf16 factor casts, the router's F.linear its input and W';
# backward materializes each W' gradient (the down one beside the product's gradient is the block's peak). The
# planner had none of it, nor that a block after one with expert-only LoRA needs grad. Saved / steady peak before
# (first-step peak where it was worse): Mixtral all-linear bf16 −65.8 % / −18.9 %, fp32 −69.8 % / −29.6 %,
# autocast −66.0 % / −30.2 %; Qwen3-MoE gate/up only −89.6 % / −16.3 %, down_proj only −85.5 % / −27.3 %; Mixtral
# router only −85.9 % / −17.0 %; Qwen3-MoE under autocast −41.7 % / −17.6 % (its routing weights are bf16 there:
# +128 B also without LoRA); Mixtral checkpointed with 6 wide experts exact / −3.28 %; Qwen3-MoE fp32 with the
# for-loop AdamW −70.5 % / −19.5 %, first step −1.94 % (the previous tensor's denominator beside an expert stack's
# lora_A: 2·n_i + n_(i−1) over LoRA's tensors). After: exact / within 0.3 %
MOE = {"heads": 2, "kv": "mha", "head_dim": 16, "ffn_multiple": 2.0, "layers": 2, "vocab": 64, "experts": 4,
       "top_k": 2, "method": "lora", "rank": 4, "batch": 1, "seq": 16}  # fmt: skip
WIDE_EXPERTS = {**MOE, "experts": 6, "ffn_multiple": 3.5, "seq": 8}
PARAM_WRAPPER = {
    "mixtral/all-linear": Draw(family="mixtral", **MOE),
    "mixtral/all-linear/fp32": Draw(family="mixtral", **{**MOE, "precision": "fp32"}),
    "mixtral/all-linear/autocast": Draw(family="mixtral", **{**MOE, "precision": "bf16_autocast"}),
    "qwen3-moe/gate-up": Draw(family="qwen3_moe", **{**MOE, "targets": ("gate_proj", "up_proj")}),
    "qwen3-moe/down": Draw(family="qwen3_moe", **{**MOE, "targets": ("down_proj",)}),
    "mixtral/router": Draw(family="mixtral", **{**MOE, "targets": ("gate",)}),
    "qwen3-moe/all-linear/autocast": Draw(family="qwen3_moe", **{**MOE, "precision": "bf16_autocast"}),
    "mixtral/all-linear/ckpt-wide": Draw(family="mixtral", **{**WIDE_EXPERTS, "checkpointing": "full"}),
    "qwen3-moe/all-linear/fp32-for-loop": Draw(
        family="qwen3_moe", **{**WIDE_EXPERTS, "precision": "fp32", "implementation": "for_loop"}
    ),
}
# DeepSeek-V3's ledger is approximate (its group-limited router, APPROXIMATE_LEDGER_FAMILIES): peaks only. The
# campaign's draw (seed 7 #12, all-linear bf16 on SDPA math, a shared expert after a dense layer) went from
# −11.24 % first step / −9.87 % steady to +0.02 % / +0.02 % (saved −20.7 % → −0.39 %); fp32 all-linear from
# −7.52 % / −18.31 % to −0.60 % / −0.49 % (saved −45.4 % → −0.60 %)
PARAM_WRAPPER_PEAKS_ONLY = {
    "deepseek-v3/campaign-seed-7-12": Draw(family="deepseek_v3", heads=4, kv="mha", head_dim=16, ffn_multiple=1.5,
                                           layers=5, vocab=524, experts=2, top_k=1, shared_expert=True,
                                           first_dense=1, method="lora", rank=5, implementation="for_loop",
                                           attention="sdpa_math", batch=1, seq=35),
    "deepseek-v3/all-linear/fp32": Draw(family="deepseek_v3", **{**MOE, "precision": "fp32"}),
}  # fmt: skip


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors:UserWarning")  # DeepSeek's 0-wide shared MLP
@pytest.mark.parametrize("case", [*PARAM_WRAPPER, *PARAM_WRAPPER_PEAKS_ONLY])
def test_lora_on_expert_parameters(case: str) -> None:
    draw = {**PARAM_WRAPPER, **PARAM_WRAPPER_PEAKS_ONLY}[case]
    r = run_probe(draw.request())
    by_name = {c.name: c for c in r.comparisons}
    if case in PARAM_WRAPPER:
        saved = by_name["saved_activations"]
        assert saved.measured_bytes == saved.estimated_bytes, saved
    for name in ("peak/first_step", "peak/steady"):
        assert abs(by_name[name].rel_error) <= PEAK_TOLERANCE, (name, by_name[name].rel_error)


# 13. What the step holds beside weights and states: AdamW's fp32 `step` per parameter tensor (on the CPU unless
# fused) and the model's buffers (RoPE's inv_freq and original_inv_freq, Gemma's embed_scale, DeepSeek-V3's router
# e_score_correction_bias), and the loss with backward's seed through backward. Before, exact cases came out
# 120–400 B low (the Llama-like full fine-tuning below: −212 B at the optimizer step, −8 B in backward); after,
# every measured peak of these probes is the planner's to the byte.
LORA_Q_V = {"kind": "lora", "rank": 4, "target_modules": ["q_proj", "v_proj"]}
HELD_STATE = {
    "llama/full/fp32": ({**SMALL, "model_type": "llama"}, {"precision": "fp32"}),
    "llama/full/fp32/sgd": ({**SMALL, "model_type": "llama"}, {"precision": "fp32", "optimizer": {"kind": "sgd"}}),
    "gemma/lora/bf16/fused": (
        {**SMALL, "model_type": "gemma"},
        {"method": LORA_Q_V, "optimizer": {"kind": "adamw", "implementation": "fused"}},
    ),
}


@pytest.mark.parametrize("case", list(HELD_STATE))
def test_held_state_is_exact_to_the_byte(case: str) -> None:
    model, training = HELD_STATE[case]
    run = {"sequence_length": 32, "micro_batch_size": 1, **training}
    request = ProbeRequest.model_validate(
        {"model": model, "backend": "cpu", "training": run, "scale": {"num_layers": 2, "vocab_size": 256}}
    )
    r, details = run_probe_detailed(request)
    by_name = {c.name: c for c in r.comparisons}
    for name in ("peak/first_step/optimizer_step", "peak/steady/optimizer_step", "peak/steady/backward"):
        assert by_name[name].measured_bytes == by_name[name].estimated_bytes, by_name[name]
    held = details.measurements["steady"].categories_at_peak
    planned = details.planner["steady/optimizer_step"]
    assert held["buffers"] == planned["weights/buffers"]
    states = planned.get("optimizer/states", 0) + planned.get("optimizer/step_counts", 0)
    assert held.get("optimizer_state", 0) == states


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors:UserWarning")  # 0-wide shared MLPs
@pytest.mark.parametrize("family", FAMILIES)
def test_buffers_and_parameter_tensors_match_transformers(family: str) -> None:
    """The planner's buffer bytes and full fine-tuning's parameter tensors (AdamW's step counters) against the
    model transformers builds, for every campaign family (bf16, MoE layers after a dense one)."""
    draw = Draw(family=family, heads=4, kv="gqa", head_dim=16, ffn_multiple=2.0, layers=3, vocab=64,
                attention="eager", first_dense=1)  # fmt: skip
    request = draw.request()
    spec, backend = probe_spec(request)
    training = training_run(request.training)
    built = build_training_model(spec, training, backend)
    buffers = sum(b.untyped_storage().nbytes() for b in built.model.buffers())
    assert buffer_bytes(spec, training) == buffers
    tensors = len(list(built.model.parameters()))
    assert parameter_tensors(spec, True, trainable_params(spec, training.method)) == tensors
