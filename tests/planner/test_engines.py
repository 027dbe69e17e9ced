"""Engine profiles: every default pinned to the engine source it cites, version ranges, and GPU-dependent defaults."""

from __future__ import annotations

import itertools
import re

import pytest

from planner import load_catalog
from planner.errors import SpecError
from planner.serving.engine_memory import driver_memory_bytes
from planner.serving.engines import captured_sizes, engine_defaults, engine_profiles, parse_version, resolve_profile

MIB = 1 << 20
# A citation of engine source: a file path with an extension and an @ version or commit, or a measured log file.
CITES_SOURCE = re.compile(r"(\w[\w./-]*\.(py|cpp|json) @ \S+|\w[\w./-]*\.py\b|benchmarks/data/engine_memory/\S+)")

# (profile, field, value) read off the engine source quoted in engines.json. A change to the data that does not
# come with a new reading of the source fails here.
PINNED = [
    ("vllm-0.10", "gpu_memory_utilization", 0.9),
    ("vllm-0.19", "gpu_memory_utilization", 0.9),
    ("vllm-0.20", "gpu_memory_utilization", 0.92),
    ("vllm-0.28", "gpu_memory_utilization", 0.92),
    ("vllm-0.19", "block_size", 16),
    ("vllm-0.10", "cudagraph_sets", 1),
    ("vllm-0.11", "cudagraph_sets", 2),
    ("vllm-0.19", "cudagraph_in_kv_budget", False),
    ("vllm-0.20", "cudagraph_in_kv_budget", True),
    ("vllm-0.10", "comm_init_in_kv_budget", True),
    ("vllm-0.11", "comm_init_in_kv_budget", False),
    ("vllm-0.12", "sampler_bytes_per_logit", 22),
    ("vllm-0.19", "sampler_bytes_per_logit", 14),
    ("vllm-0.13", "persistent_moe_workspace", True),
    ("vllm-0.27", "kv_budget", "vllm_total_consumed"),
    ("vllm-0.19", "scheduler", "mixed_chunked"),
    ("sglang-0.5", "block_size", 1),
    ("sglang-0.5", "scheduler", "prefill_first"),
    ("sglang-0.4", "kv_budget", "sglang_static_fraction"),
    ("trtllm-1", "free_gpu_memory_fraction", 0.9),
    ("trtllm-1", "block_size", 32),
    ("trtllm-1", "scheduler", "mixed_whole"),
    ("trtllm-1", "admission", "reserve_full"),
    ("transformers4", "mla_layout", "mla_expanded"),
]


@pytest.mark.parametrize(("profile_id", "field", "value"), PINNED, ids=[f"{p}-{f}" for p, f, _ in PINNED])
def test_pinned_defaults(profile_id: str, field: str, value: object) -> None:
    profile = next(p for p in engine_profiles() if p.id == profile_id)
    assert getattr(profile, field).value == value


def test_every_default_cites_its_source() -> None:
    for profile in engine_profiles():
        for name in type(profile).model_fields:
            sourced = getattr(profile, name)
            if hasattr(sourced, "source"):
                assert CITES_SOURCE.search(sourced.source), f"{profile.id}.{name}: {sourced.source}"


def test_every_profile_states_its_overlap_scheduling_with_a_known_rule() -> None:
    from planner.serving.engines import _OVERLAP_OFF_WITH

    for profile in engine_profiles():
        assert profile.overlap_scheduling is not None, profile.id
        assert (profile.overlap_scheduling.rule or "") in _OVERLAP_OFF_WITH, profile.id


def test_version_ranges_are_ordered_and_disjoint() -> None:
    for engine in {p.engine for p in engine_profiles()}:
        ranges = sorted((parse_version(p.versions[0]), parse_version(p.versions[1])) for p in engine_profiles()
                        if p.engine == engine)  # fmt: skip
        for (lo, hi), (next_lo, _) in itertools.pairwise(ranges):
            assert lo <= hi < next_lo, engine


@pytest.mark.parametrize(
    ("engine", "version", "profile"),
    [
        ("vllm", "0.19.0", "vllm-0.19"),
        ("vllm", "v0.10.1.1", "vllm-0.10"),
        ("vllm", "0.12.0", "vllm-0.12"),
        ("vllm", "0.14.1", "vllm-0.14"),
        ("vllm", "0.13.2", "vllm-0.13"),
        ("vllm", "0.33.0", "vllm-0.28"),
        ("vllm", None, "vllm-0.28"),
        ("sglang", "0.5.8.post1", "sglang-0.5"),
        ("sglang", "0.4.6", "sglang-0.4.9"),
        ("trtllm", "1.2.0rc6.post2", "trtllm-1"),
    ],
)
def test_resolve_profile(engine: str, version: str | None, profile: str) -> None:
    assert resolve_profile(engine, version).id == profile


def test_unmodelled_version_is_a_spec_error_naming_the_field() -> None:
    with pytest.raises(SpecError) as info:
        resolve_profile("vllm", "0.6.3")
    assert info.value.problems[0].loc == ("serving", "engine_version")
    assert "0.9.2-0.10.2" in info.value.problems[0].msg


def _defaults(profile_id: str, gpu_id: str, tp: int = 1):  # type: ignore[no-untyped-def]
    profile = next(p for p in engine_profiles() if p.id == profile_id)
    gpu = load_catalog().gpu(gpu_id)
    return engine_defaults(profile, driver_memory_bytes(gpu), gpu.smi_memory_mib or gpu.memory_bytes // MIB,
                           gpu.name, tp)  # fmt: skip


@pytest.mark.parametrize(
    ("profile", "gpu", "tokens", "seqs"),
    [
        ("vllm-0.19", "h100-sxm", 8192, 1024),  # >= 70 GiB and not an A100: the OpenAI server's large tier
        ("vllm-0.19", "a100-80gb", 2048, 256),  # "a100" is excluded from the large tier
        ("vllm-0.19", "l40s", 2048, 256),
        ("vllm-0.19", "b200", 8192, 1024),
        ("vllm-0.28", "b200", 16384, 1024),  # the >= 160 GiB tier from 0.28
        ("vllm-0.28", "h200", 8192, 1024),  # H200 (139.81 GiB) stays below 160 GiB
        ("trtllm-1", "h100-sxm", 8192, 2048),
    ],
)
def test_batch_defaults_by_gpu(profile: str, gpu: str, tokens: int, seqs: int) -> None:
    d = _defaults(profile, gpu)
    assert (d.token_budget, d.max_num_seqs) == (tokens, seqs)


@pytest.mark.parametrize(
    ("profile", "gpu", "tp", "mfs"),
    [
        # python/sglang/srt/server_args.py @ v0.5.3: reserved = 512 + 8192·1.5 + 256·2 + 1/8·1024 = 13,440 MiB
        ("sglang-0.5", "h100-sxm", 1, 0.835),  # (81559 − 13440) / 81559
        ("sglang-0.5", "h200", 1, 0.907),  # (143771 − 13440) / 143771
        ("sglang-0.5", "b200", 1, 0.857),  # 16384-token chunks, 512 graphs: 26,240 MiB reserved
        ("sglang-0.5", "h200", 8, 0.897),  # + 8/8·1024 MiB for TP 8
        ("sglang-0.4.9", "h100-sxm", 1, 0.874),  # reserved table: 9.5 + 1/2 GiB below 90 GiB
        ("sglang-0.4", "h100-sxm", 4, 0.85),  # TP table
    ],
)
def test_sglang_mem_fraction_static_defaults(profile: str, gpu: str, tp: int, mfs: float) -> None:
    assert _defaults(profile, gpu, tp).memory_fraction == mfs


def test_vllm_capture_sizes() -> None:
    # vllm/config/vllm.py @ v0.11.2: [1, 2, 4] + range(8, 256, 8) + range(256, 513, 16) = 51 sizes at max_num_seqs 1024
    assert len(_defaults("vllm-0.19", "h100-sxm").cudagraph_sizes) == 51
    # vllm/config/scheduler.py @ v0.10.2: [1, 2, 4] + range(8, 513, 8) = 67 sizes
    assert len(_defaults("vllm-0.10", "h100-sxm").cudagraph_sizes) == 67
    assert _defaults("trtllm-1", "h100-sxm").cudagraph_sizes[-3:] == (32, 64, 128)


def test_captured_sizes_follow_the_request_s_graph_settings() -> None:
    # serving.cuda_graph_max_batch_size fills each engine's own list up to it; without it vLLM derives its captures
    # from the request's max_num_seqs (min(2 · max_num_seqs, 512)) and the others keep their defaults
    vllm, sglang, trt = (_defaults(p, "h200", 8) for p in ("vllm-0.19", "sglang-0.5", "trtllm-1"))
    profile = {p.id: p for p in engine_profiles()}
    # vllm/config/vllm.py: [1, 2, 4] + range(8, 256, 8) + range(256, max + 1, 16): 3 + 31 + 113 sizes at 2,048
    sizes = captured_sizes(profile["vllm-0.19"], vllm, largest=2048)
    assert len(sizes) == 147 and sizes[-1] == 2048
    assert captured_sizes(profile["vllm-0.19"], vllm, max_num_seqs=4, budget=8192) == (1, 2, 4, 8)
    assert captured_sizes(profile["vllm-0.19"], vllm) == vllm.cudagraph_sizes
    # python/sglang/srt/server_args.py _generate_cuda_graph_batch_sizes: [1, 2, 4, 8, 12] + range(16, 257, 8) ...
    assert captured_sizes(profile["sglang-0.5"], sglang, largest=128)[-3:] == (112, 120, 128)
    assert captured_sizes(profile["sglang-0.5"], sglang, largest=600)[-3:] == (512, 544, 576)
    # tensorrt_llm/llmapi/llm_args.py CudaGraphConfig._generate_cuda_graph_batch_sizes (no padding)
    assert captured_sizes(profile["trtllm-1"], trt) == trt.cudagraph_sizes == (*range(1, 32), 32, 64, 128)
    assert captured_sizes(profile["trtllm-1"], trt, largest=1024)[-4:] == (128, 256, 512, 1024)
    assert captured_sizes(profile["trtllm-1"], trt, largest=520)[-4:] == (128, 256, 512, 520)
    assert captured_sizes(profile["trtllm-1"], trt, largest=16) == tuple(range(1, 17))


def test_the_cuda_graph_memory_term_counts_the_sizes_captured() -> None:
    # 0.55 MiB per captured size and layer piece (L + 1): vLLM capturing up to 2,048 tokens holds 147 sizes, its
    # default at max_num_seqs 1,024 51, and at max_num_seqs 4 only 4
    from planner import InferenceRequest, estimate_inference
    from planner.serving.engine_memory import GRAPH_BYTES_PER_SIZE_LAYER

    def graphs(**serving: object) -> int:
        request = InferenceRequest(model="llama-3.1-8b", gpu="h100-sxm", serving={"engine": "vllm", **serving})
        terms = {t.name: t for t in estimate_inference(request, load_catalog()).memory.terms}
        return terms["overhead/cuda_graphs"].bytes if "overhead/cuda_graphs" in terms else 0

    per_size = 33 * GRAPH_BYTES_PER_SIZE_LAYER  # Llama-3.1-8B: 32 layers + 1 pieces
    assert graphs(max_num_seqs=4) == 4 * per_size
    assert graphs(cuda_graph_max_batch_size=2048) == 147 * per_size
    assert graphs(max_num_seqs=1024) == 51 * per_size
    assert graphs(enforce_eager=True) == 0
