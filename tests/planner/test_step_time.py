"""Step time from measured kernels: the tables read back what they store, and an iteration obeys its physics."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from planner import ServingSpec, load_catalog
from planner.calibration.grid import LogGrid
from planner.calibration.kernels import available_tables, load_kernel_tables
from planner.calibration.rooflines import gemm_roofline_s
from planner.serving.load import _graphs, step_model_for
from planner.serving.step_time import ServingShape, build_step_model, kernel_format

GIB = 1 << 30
ROOT = Path(__file__).resolve().parents[2]
CATALOG = load_catalog()


def test_grid_reads_back_its_points_and_interpolates_in_log_space() -> None:
    grid = LogGrid.build([[1.0, 4.0, 16.0], [2.0, 8.0]], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    assert grid(4.0, 8.0) == 3.0
    assert grid(2.0, 2.0) == pytest.approx(1.0)  # halfway between 1 and 4 in log space
    assert grid(1000.0, 0.1) == 4.0  # clamped to the edges


def test_every_gpu_engine_pair_has_its_provenance() -> None:
    pairs = available_tables()
    assert {("h100-sxm", "vllm"), ("h200", "sglang"), ("b200", "trtllm")} <= pairs
    for gpu, engine in pairs:
        t = load_kernel_tables(gpu, engine)
        assert t is not None
        assert t.provenance["package"] == "aiconfigurator-core"
        assert all(len(sha) == 64 for sha in t.provenance["files"].values())


def test_gemm_never_beats_its_roofline() -> None:
    t = load_kernel_tables("h200", "vllm")
    assert t is not None
    for m, n, k in [(1, 6144, 4096), (64, 28672, 4096), (4096, 4096, 14336), (16384, 8192, 8192)]:
        for fmt in ("bf16", "fp8"):
            assert t.gemm_s(m, n, k, fmt) >= gemm_roofline_s(m, n, k, fmt, t.roofline) * 0.99


def _llama8b(gpu: str = "h100-sxm", tp: int = 1, fmt: str = "bf16"):  # type: ignore[no-untyped-def]
    spec = load_catalog().model("llama-3.1-8b").spec
    tables = load_kernel_tables(gpu, "vllm")
    assert tables is not None
    return build_step_model(ServingShape(spec, tp, tp, 1, fmt, fmt, "bf16", 0.0, 0.0), tables)


def test_decode_step_is_bounded_by_the_weight_read() -> None:
    # One decode step reads every weight once: 16.06 GB of Llama-3.1-8B over 3.35 TB/s = 4.8 ms on an H100 SXM.
    m = _llama8b()
    step = m.step(1, 1024.0).total_s
    floor = 16_060_522_496 / 3.35e12
    assert floor < step < 2 * floor


def test_step_time_grows_with_tokens_batch_and_context() -> None:
    m = _llama8b()
    assert m.step(8, 1024.0).total_s < m.step(64, 1024.0).total_s < m.step(256, 1024.0).total_s
    assert m.step(64, 1024.0).total_s < m.step(64, 8192.0).total_s
    prefills = [m.step(0, 0.0, [(n, 0)]).total_s for n in (512, 2048, 8192)]
    assert prefills == sorted(prefills)
    # a chunk after a cached prefix costs more attention than the same chunk alone
    assert m.step(0, 0.0, [(2048, 6144)]).attention_s > m.step(0, 0.0, [(2048, 0)]).attention_s


def test_prefill_is_compute_bound_near_peak() -> None:
    # 8192 tokens of Llama-3.1-8B: 2 · 7.5e9 · 8192 ≈ 1.2e14 FLOPs of GEMMs; at the H100's 989 TFLOP/s bf16 peak
    # that is 0.125 s, so a measured-kernel prefill lands between 1× and 2× of it.
    m = _llama8b()
    gemm_flops = 2 * 7.5e9 * 8192
    t = m.step(0, 0.0, [(8192, 0)]).total_s
    assert gemm_flops / 989e12 < t < 2 * gemm_flops / 989e12


def test_tensor_parallel_splits_the_decode_and_adds_all_reduces() -> None:
    one, four = _llama8b(tp=1), _llama8b(tp=4)
    assert four.step(8, 1024.0).total_s < one.step(8, 1024.0).total_s
    # ...but not by 4×: two all-reduces per layer and the replicated lm_head-free parts stay
    assert four.step(8, 1024.0).total_s > one.step(8, 1024.0).total_s / 4


def test_fp8_weights_decode_faster_than_bf16() -> None:
    assert _llama8b(fmt="fp8").step(8, 1024.0).total_s < _llama8b().step(8, 1024.0).total_s


def test_kernel_format_covers_every_weight_format() -> None:
    from planner.model.precision import WeightFormat

    for fmt in WeightFormat:
        assert kernel_format(fmt.value) in {"bf16", "fp8", "fp8_block", "int4", "nvfp4", "mxfp4"}


def test_moe_and_mla_models_time_their_own_operators() -> None:
    catalog = load_catalog()
    tables = load_kernel_tables("h200", "sglang")
    assert tables is not None
    spec = catalog.model("deepseek-r1").spec
    m = build_step_model(ServingShape(spec, 8, 8, 1, "fp8_block", "fp8_block", "bf16", 0.0, 0.0), tables)
    step = m.step(16, 2048.0)
    assert step.attention_s > 0 and math.isfinite(step.total_s)
    # 58 MoE layers and 3 dense ones: the MLA decode core sits in attention, MoE in the dense part
    assert step.dense_s > step.attention_s


@pytest.mark.parametrize("gpu", ["h100-sxm", "h200", "b200"])
def test_tensorrt_llm_fp8_gemm_runs_the_checkpoint_static_quantization(gpu: str) -> None:
    # aiconfigurator-core measured TensorRT-LLM's FP8 Linear with dynamic activation quantization (an amax pass per
    # call); served FP8 checkpoints carry a static input_scale. Raw, the decode-shape GEMM (8192 × 8192, M = 4) is
    # 1.3–1.8× vLLM's CUTLASS kernel; with the dynamic quantization swapped for the static one the two engines'
    # FP8 GEMMs agree within 15 % (H200: 30.2 µs raw, 24.1 µs stored, vLLM 22.9 µs).
    trt, vllm = load_kernel_tables(gpu, "trtllm"), load_kernel_tables(gpu, "vllm")
    assert trt is not None and vllm is not None
    assert "static" in trt.gemm["fp8"].kernel
    ratio = trt.gemm_s(4, 8192, 8192, "fp8") / vllm.gemm_s(4, 8192, 8192, "fp8")
    assert 0.85 < ratio < 1.15, ratio


@pytest.mark.parametrize("engine", ["vllm", "sglang", "trtllm"])
def test_l40s_all_reduce_beyond_two_gpus_scales_as_a_pcie_server(engine: str) -> None:
    # aiconfigurator-core's 8×L40S node lost 4× (4 GPUs) and 13× (8 GPUs) of its 2-GPU NCCL bus bandwidth, a host
    # bridge between the pairs; a PCIe server (RTX PRO 6000) loses 1.5× and 1.9×. The 4- and 8-GPU tables are the
    # L40S 2-GPU NCCL latency scaled as that server scales, so a 16 Mi-element (32 MiB) all-reduce keeps at least
    # half its 2-GPU bus bandwidth, 2(n − 1)/n · bytes / t, and stays above the 32 GB/s PCIe 4.0 x16 roofline's time.
    tables = load_kernel_tables("l40s", engine)
    assert tables is not None
    elements = 16 << 20

    def bus_bandwidth(n: int) -> float:
        return 2 * (n - 1) / n * elements * 2 / tables.allreduce_s(elements, n)

    assert {tables.allreduce[n].kernel.startswith("NCCL (PCIe scaling") for n in (4, 8)} == {True}
    assert 0.5 * bus_bandwidth(2) < bus_bandwidth(8) < bus_bandwidth(4) < bus_bandwidth(2) < 32e9
    # a decode-sized message (4 tokens of an 8,192-wide model) is latency-bound: tens of µs, not hundreds
    assert tables.allreduce_s(4 * 8192, 8) < 60e-6


def test_engine_terms_follow_their_shipping_rule_and_reach_the_step_model() -> None:
    # engine_terms.json: per engine a wait w per log2(ranks) at each all-reduce and a fixed cost f per iteration, and
    # per (GPU, engine) a cost s per scheduled sequence, fitted on end-to-end TPOT with each model held out; a term
    # ships only where the held-out error improved and no group of 20+ rows got worse (s: its GPU's group, of 20+
    # rows, got better, and the published under-load measurements of that GPU and engine did not get worse).
    # Shipped terms reach the tables of that engine (and, for s, that GPU) and nothing else: a 4-token all-reduce
    # of an 8,192-wide model on n GPUs is the measured kernel + log2(n) · w, every iteration costs its kernels + f +
    # s per sequence, and transformers (on vLLM's kernel tables) takes none of them
    raw = json.loads((ROOT / "planner" / "calibration" / "engine_terms.json").read_text())
    for engine, fit in raw["engines"].items():  # the file follows its own rule, stage by stage
        engine_wide = [st for st in fit["stages"] if st["term"] in ("wait", "step")]
        for stage, key in zip(engine_wide, ("wait_s_per_log2_ranks", "step_s"), strict=True):
            held, groups = stage["leave_one_model_out"], stage["groups"].values()
            worse = any(g["rows"] >= 20 and g["tpot_held_out"] > g["tpot_without"] for g in groups)
            assert stage["ships"] == (held["tpot_held_out"] < held["tpot_without"] and not worse), engine
            assert fit[key] == (stage["fitted_us"] * 1e-6 if stage["ships"] else 0.0), (engine, key)
        per_gpu = [st for st in fit["stages"] if st["term"] == "per_sequence"]
        eager = [st for st in fit["stages"] if st["term"] == "eager_per_layer"]
        assert per_gpu and len(eager) == 1 and len(per_gpu) + len(engine_wide) + 1 == len(fit["stages"]), engine
        for stage in per_gpu:
            held, (group,) = stage["leave_one_model_out"], stage["groups"].values()
            improved = group["rows"] >= 20 and held["tpot_held_out"] < held["tpot_without"]
            published = stage["published_under_load"]  # measured only for a candidate that improved
            assert (published is not None) == improved, (engine, stage["gpu"])
            carries = published is None or not published["points"] or published["with"] <= published["without"]
            assert stage["ships"] == (improved and carries), (engine, stage["gpu"])
            shipped = fit["per_sequence_s_by_gpu"].get(stage["gpu"], 0.0)
            expected = stage["fitted_us"] * 1e-6 if stage["ships"] else 0.0
            assert shipped == pytest.approx(expected, rel=1e-9, abs=1e-15), (engine, stage["gpu"])
        assert 0.0 <= fit["wait_s_per_log2_ranks"] <= 10e-6 and 0.0 <= fit["step_s"] <= 2e-3, engine
        assert all(0.0 <= v <= 100e-6 for v in fit["per_sequence_s_by_gpu"].values()), engine
    spec = CATALOG.model("llama-3.1-70b").spec
    for engine, fit in raw["engines"].items():
        w, f = fit["wait_s_per_log2_ranks"], fit["step_s"]
        for gpu in ("h100-sxm", "h200", "b200"):
            s = fit["per_sequence_s_by_gpu"].get(gpu, 0.0)
            tables, kernel_only = load_kernel_tables(gpu, engine), load_kernel_tables(gpu, engine, engine_terms=False)
            assert tables is not None and kernel_only is not None
            assert (tables.allreduce_wait_s, tables.step_overhead_s, tables.step_per_sequence_s) == (w, f, s)
            assert kernel_only.allreduce_wait_s == kernel_only.step_overhead_s == 0.0
            assert kernel_only.step_per_sequence_s == 0.0
            for n, hops in ((2, 1), (4, 2), (8, 3)):
                assert tables.allreduce_s(4 * 8192, n) == pytest.approx(kernel_only.allreduce_s(4 * 8192, n) + hops * w)
            assert tables.allreduce_s(4 * 8192, 1) == 0.0
            model = step_model_for(spec, ServingSpec(engine=engine, tensor_parallel=4), gpu)
            assert model.tables.allreduce_wait_s == w and model.fixed_s == f and model.per_seq_s == s
            # the host's f + s per scheduled sequence: after the GPU's kernels, or beside them with overlap
            # scheduling (the longer of the two)
            bare = replace(model, fixed_s=0.0, per_seq_s=0.0, _memo={}, _steps={}, _outside={})
            for n in (1, 64):
                gpu_s, host_s = bare.step(n, 2048).total_s, f + s * n
                expected = max(gpu_s, host_s) if model.host_overlap else gpu_s + host_s
                assert model.step(n, 2048).total_s == pytest.approx(expected), (engine, gpu, n)
    hf = step_model_for(spec, ServingSpec(engine="transformers", tensor_parallel=4), "h100-sxm")
    assert hf.tables.allreduce_wait_s == 0.0 and hf.fixed_s == 0.0 and hf.per_seq_s == 0.0


def test_models_sharing_piece_memos_answer_as_models_of_their_own() -> None:
    # bf16 and fp8 weights of one shape share the attention and outside memos (same tables, KV dtype and attention
    # shapes; only the GEMM grids differ); the fp8 model warms them, and the bf16 one still answers exactly what a
    # model with private memos answers
    bf16, fp8 = _llama8b(), _llama8b(fmt="fp8")
    assert bf16._memo is fp8._memo and bf16._outside is fp8._outside
    steps = [(8, 1024.0, ()), (64, 3000.0, ((512, 0),)), (0, 0.0, ((2048, 6144),)), (300, 700.5, ((96, 40),))]
    for d, ctx, chunks in steps:
        fp8.step(d, ctx, chunks)
    private = replace(bf16, _memo={}, _steps={}, _outside={})
    assert [bf16.step(*s) for s in steps] == [private.step(*s) for s in steps]
    # the fp8-cache twin keeps the outside memo (embedding, lm_head, sampler) and takes the fp8 attention one
    kv8 = bf16.with_kv_dtype("fp8")
    assert kv8._outside is bf16._outside and kv8._memo is not bf16._memo
    assert [kv8.step(*s) for s in steps] == [replace(kv8, _memo={}, _steps={}, _outside={}).step(*s) for s in steps]


def test_qk_norm_kernels_are_the_ones_the_engine_launches() -> None:
    # Qwen3's q/k RMSNorm as each engine runs it (planner/catalog/engines.json qk_norm_kernels): two kernels in vLLM
    # (q_norm, then k_norm), none of its own in TensorRT-LLM (fused into the rotary kernel). One decode token on one
    # H200: the two kernels add num_layers · 2 · elementwise(q and k, read and written, half each) to the step.
    spec = CATALOG.model("qwen3-32b").spec
    assert spec.qk_norm

    def token_grid(engine: str, qk_norm_kernels: int) -> tuple[float, ...]:
        tables = load_kernel_tables("h200", engine)
        assert tables is not None
        shape = ServingShape(spec, 1, 1, 1, "bf16", "bf16", "bf16", 0.0, 0.0, qk_norm_kernels=qk_norm_kernels)
        return build_step_model(shape, tables).layers[0].token_grid

    tables = load_kernel_tables("h200", "vllm")
    assert tables is not None
    qk_bytes = (spec.num_heads + spec.kv_heads) * spec.resolved_head_dim * 2 * 2  # bf16, read + write
    assert token_grid("vllm", 2)[0] - token_grid("vllm", 0)[0] == pytest.approx(
        2 * tables.elementwise_s(qk_bytes / 2), rel=1e-9
    )
    assert tables.elementwise_s(qk_bytes / 2) >= tables.elementwise.floor_s > 1e-6  # launch-bound, not free
    for engine, kernels in (("vllm", 2), ("sglang", 2), ("trtllm", 0)):
        served = step_model_for(spec, ServingSpec(engine=engine, tensor_parallel=1), "h200")
        assert served.layers[0].token_grid == token_grid(engine, kernels), engine


@pytest.mark.parametrize(
    ("serving", "overlapped"),
    [
        ({"engine": "vllm", "engine_version": "0.13.0"}, False),  # synchronous scheduler: host work after the GPU's
        ({"engine": "vllm", "engine_version": "0.14.0"}, True),  # AsyncScheduler, on by default from 0.14.0
        ({"engine": "vllm", "engine_version": "0.14.0", "pipeline_parallel": 2}, False),  # off under PP
        ({"engine": "sglang"}, True),
        ({"engine": "trtllm"}, True),
        ({"engine": "transformers"}, False),
    ],
)
def test_host_work_overlaps_the_gpu_where_the_engine_schedules_ahead(serving: dict[str, Any], overlapped: bool) -> None:
    spec = CATALOG.model("llama-3.1-8b").spec
    model = step_model_for(spec, ServingSpec(**serving), "h100-sxm")
    assert model.host_overlap is overlapped
    # a host cost of 20 ms against a GPU step of about 6 ms: the sum, or the host's 20 ms alone
    slow = replace(model, fixed_s=20e-3, per_seq_s=0.0, host_overlap=overlapped, _memo={}, _steps={}, _outside={})
    gpu_s = replace(slow, fixed_s=0.0, _memo={}, _steps={}, _outside={}).step(8, 1024).total_s
    assert gpu_s < 20e-3
    assert slow.step(8, 1024).total_s == pytest.approx(20e-3 if overlapped else gpu_s + 20e-3)


def test_the_eager_stage_follows_its_shipping_rule_and_reaches_the_tables() -> None:
    # the last stage of benchmarks/fit_engine_terms.py: the host time per dense and per MoE layer of an iteration run
    # without CUDA graphs, one joint grid fitted on TTFT with each model held out; it ships only where the engine's
    # held-out TTFT fell, its held-out TPOT did not rise and no (GPU, engine) group of 20+ rows got worse in TTFT
    raw = json.loads((ROOT / "planner" / "calibration" / "engine_terms.json").read_text())
    for engine, fit in raw["engines"].items():
        (stage,) = [st for st in fit["stages"] if st["term"] == "eager_per_layer"]
        held = stage["leave_one_model_out"]
        worse = any(g["rows"] >= 20 and g["ttft_held_out"] > g["ttft_without"] for g in stage["groups"].values())
        improved = held["ttft_held_out"] < held["ttft_without"] and held["tpot_held_out"] <= held["tpot_without"]
        assert stage["ships"] == (improved and not worse), engine
        fitted = stage["fitted_us"] if stage["ships"] else {"dense": 0.0, "moe": 0.0}
        assert fit["eager_s_per_dense_layer"] == pytest.approx(fitted["dense"] * 1e-6, abs=1e-15), engine
        assert fit["eager_s_per_moe_layer"] == pytest.approx(fitted["moe"] * 1e-6, abs=1e-15), engine
        for gpu in ("h100-sxm", "h200", "b200"):
            tables, kernel_only = load_kernel_tables(gpu, engine), load_kernel_tables(gpu, engine, engine_terms=False)
            assert tables is not None and kernel_only is not None
            assert (tables.eager_dense_layer_s, tables.eager_moe_layer_s) == (
                fit["eager_s_per_dense_layer"],
                fit["eager_s_per_moe_layer"],
            )
            assert kernel_only.eager_dense_layer_s == kernel_only.eager_moe_layer_s == 0.0


@pytest.mark.parametrize(
    ("serving", "graph_tokens", "graph_prefill"),
    [
        # vLLM captures [1, 2, 4, 8, ...] up to min(2 · max_num_seqs, 512) and pads any step up to it, prompts included
        ({"engine": "vllm"}, 512, True),
        ({"engine": "vllm", "max_num_seqs": 4}, 8, True),
        ({"engine": "vllm", "max_num_seqs": 100}, 200, True),
        ({"engine": "vllm", "engine_version": "0.10.2", "max_num_seqs": 64, "max_num_batched_tokens": 96}, 96, True),
        ({"engine": "vllm", "enforce_eager": True}, 0, False),
        # SGLang: decode batches of at most cuda_graph_max_bs (H200 at TP 8: 512); every prefill runs eagerly
        ({"engine": "sglang"}, 512, False),
        # TensorRT-LLM: generation-only batches of at most 128 (its 34 default sizes); context batches eagerly
        ({"engine": "trtllm"}, 128, False),
    ],
)
def test_the_engine_profiles_say_which_iterations_replay_cuda_graphs(
    serving: dict[str, Any], graph_tokens: int, graph_prefill: bool
) -> None:
    spec = ServingSpec(tensor_parallel=8, **serving)
    graphs = _graphs(spec, "h200", 100e-6, 1e-3)
    assert graphs.get("graph_tokens", 0) == graph_tokens and graphs.get("graph_prefill", False) is graph_prefill
    assert (graphs["eager_dense_s"], graphs["eager_moe_s"]) == (100e-6, 1e-3)
    assert _graphs(spec, "h200", 0.0, 0.0) == {}  # no engine term: nothing is timed eagerly
    assert _graphs(ServingSpec(engine="transformers"), "h200", 100e-6, 1e-3) == {}
    with pytest.raises(ValueError, match="cuda_graph_max_batch_size is a setting of the serving engines"):
        ServingSpec(engine="transformers", cuda_graph_max_batch_size=8)


def test_an_eager_iteration_takes_the_longer_of_its_kernels_and_its_launches() -> None:
    # DeepSeek-V3 has 3 dense and 58 MoE layers: eager_s = 3 · dense + 58 · MoE host time per layer. An iteration
    # that does not replay a CUDA graph takes max(its kernels, eager_s) before the host's own per-step work; one
    # that replays a graph takes its kernels
    spec = CATALOG.model("deepseek-v3").spec
    tables = load_kernel_tables("h200", "sglang", engine_terms=False)
    assert tables is not None
    shape = ServingShape(spec, 8, 8, 1, "fp8_block", "fp8_block", "bf16", 0.0, 0.0)
    kernels_only = build_step_model(shape, tables)
    eager = build_step_model(
        replace(shape, graph_tokens=512, graph_prefill=False, eager_dense_s=200e-6, eager_moe_s=2e-3), tables
    )
    assert eager.eager_s == pytest.approx(3 * 200e-6 + 58 * 2e-3)
    short_prompt, long_prompt = ((1024, 0),), ((16384, 0),)
    for decode, ctx, chunks in ((0, 0.0, short_prompt), (4, 2048.0, short_prompt), (0, 0.0, long_prompt)):
        gpu = kernels_only.step(decode, ctx, chunks)
        step = eager.step(decode, ctx, chunks)
        assert not eager.graphed(decode + sum(q for q, _ in chunks), True)
        assert step.total_s == pytest.approx(max(gpu.total_s, eager.eager_s))
        assert (step.dense_s, step.attention_s) == (gpu.dense_s, gpu.attention_s)  # the wait shows outside them
    assert (
        kernels_only.step(0, 0.0, short_prompt).total_s < eager.eager_s < kernels_only.step(0, 0.0, long_prompt).total_s
    )
    # decode-only batches up to the largest captured size replay graphs; beyond it they run eagerly too
    assert eager.step(64, 2048.0).total_s == kernels_only.step(64, 2048.0).total_s
    assert eager.step(600, 2048.0).total_s == pytest.approx(max(kernels_only.step(600, 2048.0).total_s, eager.eager_s))
    # vLLM's piecewise graphs hold prompt tokens too: a step of 64 decodes and a 256-token chunk replays them
    vllm_like = replace(eager, graph_prefill=True, _memo={}, _steps={}, _outside={})
    assert vllm_like.step(64, 2048.0, ((256, 0),)).total_s == kernels_only.step(64, 2048.0, ((256, 0),)).total_s
