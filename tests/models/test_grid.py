"""The validation grid on the cpu backend: the planner against real transformers + peft training and serving steps.

Claims checked per configuration: weights, trainable weights and the KV cache exact; saved activations exact
where the planner claims it (not MoE); the peak of the first and the steady step (serving: prefill + decode)
within 3 %; and the median |peak error| of the grid within 1 %. Configurations the planner gets wrong today are
xfail(strict=True) with the measured numbers and the part that differs: fix the formula, then drop the marker
(a strict xfail that passes fails the run). Measured on torch 2.13 CPU, transformers 5.23, peft 0.21.2.
"""

from __future__ import annotations

import functools
import statistics

import pytest

pytest.importorskip("torch")

from models.grid import GridCase, default_grid
from models.runner import run_probe
from planner.probe import Comparison, ProbeResult

PEAK_TOLERANCE = 0.03
MEDIAN_TOLERANCE = 0.01
CASES = {case.id: case for case in default_grid()}

CKPT = (
    "full checkpointing: the peak is inside the backward of a recomputed block, a moment the planner lacks "
    "(last_block_backward counts the recomputed block but neither the gradient temporaries of its backward nor the "
    "gradients of the blocks already differentiated; its other moments are smaller)"
)
MOE = (
    "MoE layers keep more than one k·f_e-wide MLP: the k·T gathered token copies and the k·T expert outputs "
    "(2·k·T·h·p), the fp32 router softmax T·E·4, top-k indices and the sort/permutation indices (int64, 4·k·T·8)"
)
MLA_CPU = (
    "MLA has d_qk ≠ d_v, which CPU SDPA serves with the math kernel: it saves the fp32 softmax (4·b·n_h·s²) and fp32 "
    "copies of q, kᵀ, v (CPU only; the planner models CUDA's O(s) kernels)"
)
MLA_NORM = "MLA's kv_a_layernorm (fp32 input T·d_c·4, rsqrt, normalized T·d_c·p) and kv_b_proj's input T·d_c·p"
PREFIX_IDS = "the prefix/prompt encoder's embedding saves its int64 index tensor, 8·n_virtual B"
LOGITS = (
    "planner counts logits at all T prompt positions, T·V·(2 + 4) = 6,291,456 B, but generate() projects the last "
    "position only (logits_to_keep=1); prefill activations miss the embedding output and the layer's input, "
    "2·T·h·p = 1,048,576 B, both alive at the last MLP"
)
# Numbers as first measured; the current ones are in benchmarks/results/validation-cpu-cpu.json.
XFAIL: dict[str, str] = {
    "mha/full/sdpa/ckpt": f"peak −6.4 % (29,846,748 measured, 27,946,500 planned): {CKPT}. At the peak (layer 0's "
    "MLP backward) the grads of layer 1 + lm_head + layer 0's down_proj are live, 2,360,832 B vs 524,800 planned, "
    "and the block's backward temporaries (≈2·T·f·p) 2,656,264 B",
    "gqa/full/eager/ckpt": f"peak −4.4 % steady, −5.2 % first step (44,424,924 vs 42,479,616 attention_backward): "
    f"{CKPT}; here the eager attention backward of layer 0 with 2,951,168 B of grads live vs 524,800 planned",
    "gqa/ia3/sdpa/ckpt": f"peak −21.5 % (23,439,008 vs 18,383,364 loss_backward): {CKPT}; the recomputed block also "
    "keeps down_proj's IA3 input in fp32 (see mha/ia3/sdpa): 9,745,568 B over last_block_backward",
    "mha/ia3/sdpa": "saved activations 27,917,316 vs 25,288,708 (+2,628,608 B), peak −6.5 %: peft casts down_proj's "
    "input to the fp32 IA3 vector before scaling and saves that copy, 4·T·f per layer instead of p·T·f "
    "(+2,621,440 B), plus the fp32 scaling vectors it multiplies by (d per target per layer, 7,168 B)",
    "gqa-moe/lora-qv/sdpa/ckpt": f"peak −20.7 % (40,710,888 vs 32,295,428): {CKPT}; the recomputed MoE block also "
    "keeps the MoE tensors the planner omits (gqa-moe/full/sdpa)",
    "mla-moe/full/sdpa": f"peak −44.8 % first step, −40.2 % steady (92,083,152 vs 55,042,308); saved activations "
    f"62,189,604 vs 32,624,644: {MLA_CPU} (+20,905,984 B); {MOE} (+7,602,208 B incl. DeepSeek's fp32 router: "
    f"input copy T·h·4 and weight copy h·E·4); {MLA_NORM} (+1,056,768 B)",
    "mla-moe/full/eager": f"peak −18.6 % first step, −16.8 % steady (96,277,456 vs 80,142,596); saved activations "
    f"66,383,908 vs 57,724,932 (+8,658,976 B): {MOE} (+7,602,208 B) and {MLA_NORM} (+1,056,768 B); the eager "
    "attention itself (fp32 softmax, probs, q, k, v) matches",
    "mla-moe/lora-q/sdpa/ckpt": f"peak −61.1 % (49,959,800 vs 19,491,588): {CKPT}; the recomputed block is the CPU "
    "math attention (fp32 s² softmax and its fp32 s² gradient) plus the MoE tensors (mla-moe/full/sdpa)",
    "infer/mla-moe": "peak −39.2 % (33,243,968 vs 20,226,816): CPU math SDPA for MLA materializes the fp32 scores "
    "twice (bmm and masked add, 2·4·b·n_h·s² = 16,777,216 B) and fp32 q, k, v (CPU only); the logits gap of "
    "infer/gqa applies too",
}


@functools.cache
def result(case_id: str) -> ProbeResult:
    case: GridCase = CASES[case_id]
    return run_probe(case.request.model_copy(update={"backend": "cpu"}))


def peaks(r: ProbeResult) -> list[Comparison]:
    names = ("peak/inference",) if r.kind == "inference" else ("peak/first_step", "peak/steady")
    return [c for c in r.comparisons if c.name in names]


def _param(case_id: str) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=XFAIL[case_id])] if case_id in XFAIL else []
    return pytest.param(case_id, id=case_id, marks=marks)


def test_grid_spans_the_architectures_and_methods() -> None:
    ids = list(CASES)
    training = [i for i in ids if not i.startswith("infer/")]
    assert len(training) >= 24 and len(ids) - len(training) >= 3
    for part in ("mha/", "gqa/", "mqa/", "mla-moe/", "gqa-moe/", "/full/", "/lora", "/prefix/", "/prompt/", "/ia3/",
                 "/ckpt", "/eager", "/sdpa"):  # fmt: skip
        assert any(part in i for i in ids), part


@pytest.mark.parametrize("case_id", [_param(i) for i in CASES])
def test_probe_matches_planner(case_id: str) -> None:
    r = result(case_id)
    assert not r.out_of_memory
    off = [f"{c.name}: measured {c.measured_bytes:,} B, planner {c.estimated_bytes:,} B"
           for c in r.comparisons if c.exact and c.measured_bytes != c.estimated_bytes]  # fmt: skip
    wide = [f"{c.name}: {100 * c.rel_error:+.2f} %" for c in peaks(r) if abs(c.rel_error) > PEAK_TOLERANCE]
    assert not off + wide, off + wide


def test_median_peak_error_of_the_configurations_the_planner_gets_right() -> None:
    errors = [abs(c.rel_error) for i in CASES if i not in XFAIL for c in peaks(result(i))]
    assert statistics.median(errors) <= MEDIAN_TOLERANCE


def test_median_peak_error_of_the_whole_grid() -> None:
    errors = [abs(c.rel_error) for i in CASES for c in peaks(result(i))]
    assert statistics.median(errors) <= MEDIAN_TOLERANCE, f"median |peak error| {100 * statistics.median(errors):.2f} %"
