"""Issue 10's remaining seed-2026 campaign misses (README "Randomized campaign"), each probed on the cpu backend:
saved activations exact and both steps' peaks within 1 %. The numbers in the comments are the planner's errors
before the fix (first-step / steady peak), measured with these very probes (torch 2.13 CPU, transformers 5.23,
peft 0.21.2); the draws are the campaign's, `#n` its index in benchmarks/results/campaign-cpu-seed-2026.json's
`missed` list before the fix.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from models.campaign import Draw
from tests.models.campaign_checks import assert_draw_holds

# 1. Full checkpointing under autocast: the forward peaks at the loss (planner.training.forward_moments), where
# autocast's cache holds the bf16 cast of every trained block weight (not saved: the checkpoints drop what their
# blocks save) beside lm_head's logits; with accumulation the second micro-batch's forward holds every gradient
# too. And eager's masks take the embeddings' dtype, fp32 under autocast (they were counted in bf16).
CACHED_CASTS = {
    # #23: +0.00 % / −6.47 % → 0.000 % / 0.000 %
    "qwen2/full/autocast/eager/for-loop/accum-2": Draw(family="qwen2", heads=3, kv="mha", head_dim=16,
                                                       ffn_multiple=1.0, layers=5, vocab=236, window=True, rank=14,
                                                       virtual_tokens=2, precision="bf16_autocast",
                                                       implementation="for_loop", checkpointing="full",
                                                       attention="eager", batch=1, seq=59, accumulation=2),
    # #22: −1.35 % / −1.35 % → +0.07 % / +0.07 %
    "qwen3/lora-k/autocast/eager/accum-2": Draw(family="qwen3", heads=2, kv="mha", head_dim=12, ffn_multiple=3.0,
                                                layers=5, vocab=553, method="lora", rank=1, dropout=0.1,
                                                targets=("k_proj",), precision="bf16_autocast",
                                                implementation="fused", checkpointing="full", attention="eager",
                                                batch=1, seq=80, accumulation=2),
    # #14: +0.00 % / −1.62 % → 0.000 % / 0.000 %
    "gemma/lora-dropout/autocast/math/accum-2": Draw(family="gemma", heads=6, kv="mha", head_dim=12,
                                                     ffn_multiple=1.5, layers=4, vocab=399, method="lora", rank=15,
                                                     dropout=0.05, virtual_tokens=6, precision="bf16_autocast",
                                                     implementation="fused", checkpointing="full",
                                                     attention="sdpa_math", seq=8, accumulation=2),
}  # fmt: skip

# 2. Phi-3's fused gate_up_proj under LoRA: its base output, lora_B's fp32 output and their scaled copy are 2f wide,
# made before any of the MLP's saved tensors (the recompute's peak and, without checkpointing, the forward's).
FUSED_GATE_UP = {
    # #28, fp32, checkpointed: −4.35 % / −4.28 % → 0.000 % / 0.000 %
    "phi3/lora-all-linear/fp32/ckpt/accum-2": Draw(family="phi3", heads=3, kv="mha", head_dim=24, ffn_multiple=3.0,
                                                   layers=5, vocab=118, method="lora", rank=1, virtual_tokens=7,
                                                   precision="fp32", implementation="fused", checkpointing="full",
                                                   seq=76, accumulation=2),
    # #29, bf16, no checkpointing: −2.27 % / −2.07 % → 0.000 % / 0.000 %
    "phi3/lora-fused/bf16/accum-2": Draw(family="phi3", heads=6, kv="mha", head_dim=28, ffn_multiple=2.75, layers=5,
                                         vocab=243, method="lora", rank=15,
                                         targets=("down_proj", "gate_up_proj", "o_proj", "qkv_proj"),
                                         virtual_tokens=8, implementation="for_loop", batch=3, seq=68,
                                         accumulation=2),
}  # fmt: skip

# 3. LoRA on down_proj under autocast with full checkpointing: the recompute peaks inside down_proj with the base
# output, the fp32 adapter input and (dropout) its dropout output, and the bf16 gradients backward made before it
# needed the block; the post-attention norm's output, the MLP input, is fp32 (block_backward
# `_lora_down_recompute_autocast`).
LORA_DOWN_AUTOCAST = {
    # #11: −2.46 % / −2.33 % → 0.000 % / 0.000 %
    "qwen2/lora-dropout/autocast/ckpt/accum-2": Draw(family="qwen2", heads=6, kv="mqa", head_dim=20,
                                                     ffn_multiple=1.5, layers=5, vocab=568, window=True,
                                                     method="lora", rank=3, dropout=0.05, virtual_tokens=1,
                                                     precision="bf16_autocast", checkpointing="full", batch=1,
                                                     seq=44, accumulation=2),
    # the same without dropout, 2 rows: the peak moves to lora_B's weight cast; −0.66 % / −0.63 % (within 1 %) →
    # exact to the byte (EXACT_PEAKS)
    "qwen2/lora/autocast/ckpt/accum-2": Draw(family="qwen2", heads=6, kv="mqa", head_dim=20, ffn_multiple=1.5,
                                             layers=4, vocab=568, window=True, method="lora", rank=3,
                                             precision="bf16_autocast", checkpointing="full", batch=2, seq=44,
                                             accumulation=2),
}  # fmt: skip

# 4. LoRA on down_proj in fp32 without dropout: lora_A's input is the product itself, which the frozen base down_proj
# shares and does not save; once lora_A's MmBackward has run, the base branch's makes its own gradient of the
# product and autograd sums the two out of place (3·4·T·f, the product and lora_A's output released).
LORA_DOWN_FP32 = {
    # #20, SGD with momentum: −1.48 % / −1.44 % → 0.000 % / 0.000 %
    "mistral/lora-all-linear/fp32/ckpt/sgd/accum-2": Draw(family="mistral", heads=5, kv="gqa", head_dim=16,
                                                          ffn_multiple=2.25, layers=4, vocab=113, window=True,
                                                          method="lora", rank=2, virtual_tokens=8, precision="fp32",
                                                          optimizer="sgd", momentum=0.9, checkpointing="full",
                                                          batch=3, seq=19, accumulation=2),
    # #9, for-loop AdamW: −2.47 % / −2.41 % → 0.000 % / 0.000 %
    "gemma/lora-all-linear/fp32/ckpt/for-loop/accum-2": Draw(family="gemma", heads=5, kv="gqa", head_dim=16,
                                                             ffn_multiple=3.0, layers=4, vocab=275, method="lora",
                                                             rank=1, virtual_tokens=1, precision="fp32",
                                                             implementation="for_loop", checkpointing="full",
                                                             seq=39, accumulation=2),
}  # fmt: skip

# 5. Full fine-tuning with accumulation: down_proj's new weight gradient is added into the held one by AccumulateGrad
# and freed before SwiGLU's gradients peak (it was counted there). #4: +0.00 % / +1.29 % → 0.000 % / 0.000 % (and
# the first step's backward +2.05 % → 0.000 %).
ACCUMULATED_DOWN_GRAD = {
    "qwen3/full/bf16/ckpt/accum-2": Draw(family="qwen3", heads=6, kv="gqa", head_dim=28, ffn_multiple=2.25, layers=3,
                                         vocab=164, rank=5, virtual_tokens=3, checkpointing="full", batch=2, seq=76,
                                         accumulation=2),
}  # fmt: skip

# 6. ... but at down_proj's MmBackward both its outputs are alive (its input's gradient and the new weight gradient,
# with the product still saved), and with a tied lm_head, lm_head's new gradient waits in autograd's input buffer for
# the embedding's through every block's backward. Gemma, SDPA math, SGD (seed 2026, exposed by 5.): +0.00 % / −2.30 %
# (−0.80 % before 5.) → exact.
TIED_HEAD_PENDING = {
    "gemma/full/bf16/math/ckpt/sgd/accum-2": Draw(family="gemma", heads=4, kv="mha", head_dim=20, ffn_multiple=3.5,
                                                  layers=4, vocab=370, rank=1, virtual_tokens=2, optimizer="sgd",
                                                  implementation="fused", momentum=0.9, checkpointing="full",
                                                  attention="sdpa_math", batch=1, seq=63, accumulation=2),
}  # fmt: skip
CASES = {**CACHED_CASTS, **FUSED_GATE_UP, **LORA_DOWN_AUTOCAST, **LORA_DOWN_FP32, **ACCUMULATED_DOWN_GRAD,
         **TIED_HEAD_PENDING}  # fmt: skip
EXACT_PEAKS = frozenset({"qwen2/full/autocast/eager/for-loop/accum-2", "qwen2/lora/autocast/ckpt/accum-2",
                         "gemma/full/bf16/math/ckpt/sgd/accum-2"})  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_campaign_miss_is_fixed(case: str) -> None:
    assert_draw_holds(CASES[case], exact_peaks=case in EXACT_PEAKS)
