"""All-gather, reduce-scatter and all-to-all from measured NCCL tables: they load, grow with the message, agree with
the rows they were fitted from, fall back to the all-reduce ratio only without data, and time the step's collectives.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from importlib import resources
from math import log2
from typing import Any

import pytest

from planner import load_catalog
from planner.calibration.kernels import (
    _COLLECTIVES,
    AG_PER_ALLREDUCE,
    RS_PER_ALLREDUCE,
    KernelTables,
    _collective_roofline_s,
    _parse,
    available_tables,
    load_kernel_tables,
)
from planner.serving.step_time import ServingShape, build_step_model

MS = 1e-3
GPU_COUNTS = {2, 4, 8}  # aiconfigurator-core measured NCCL on 2, 4 and 8 GPUs of each system
ROUNDING = 1e-3  # log η is stored to 3 decimals: ±0.05 % in latency, twice that between two points
SIZES = [2**k for k in range(6, 31)] + [3 * 2**k for k in range(6, 29)]  # below, inside and above 256 … 2^28

# aiconfigurator-core 0.12.0 systems/data/h200_sxm/comm/nccl/2.29.2/nccl_perf.parquet (sha256 9b46ab90…a841e0f),
# nccl_dtype half: (op_name, num_gpus, message_size in elements) -> latency in ms, one run each
H200_ROWS = {
    ("allgather", 2, 65536): 0.0063,
    ("allgather", 2, 16777216): 0.09023,
    ("allgather", 8, 1048576): 0.02428,
    ("allgather", 8, 268435456): 1.39497,
    ("reducescatter", 2, 1048576): 0.01512,
    ("reducescatter", 8, 65536): 0.01181,
    ("reducescatter", 8, 16777216): 0.11162,
    ("alltoall", 2, 268435456): 0.90169,
    ("alltoall", 8, 1048576): 0.01773,
    ("alltoall", 8, 16777216): 0.12412,
}
H200_NCCL = "h200_sxm/comm/nccl/2.29.2/nccl_perf.parquet"


def _tables(gpu: str, engine: str) -> KernelTables:
    tables = load_kernel_tables(gpu, engine, engine_terms=False)
    assert tables is not None
    return tables


def _kernel_s(tables: KernelTables, section: str, elements: int, n: int) -> float:
    return {"allgather": tables.allgather_s, "reducescatter": tables.reducescatter_s, "alltoall": tables.alltoall_s}[
        section
    ](elements, n)


def test_every_table_has_the_three_collectives_with_their_source() -> None:
    for gpu, engine in available_tables():
        tables = _tables(gpu, engine)
        assert set(tables.collectives) == set(_COLLECTIVES)
        for section, by_n in tables.collectives.items():
            assert set(by_n) == GPU_COUNTS, (gpu, engine, section)
            assert all(t.kernel.startswith("NCCL") and t.floor_s > 0 for t in by_n.values())
        nccl = tables.provenance["versions"]["collectives_nccl"]
        assert any(f"/comm/nccl/{nccl}/nccl_perf.parquet" in path for path in tables.provenance["files"])


def test_latency_never_falls_as_the_message_grows() -> None:
    for gpu, engine in available_tables():
        tables = _tables(gpu, engine)
        for section in _COLLECTIVES:
            for n in (2, 4, 8, 16):  # 16: the 8-GPU table on the 16-GPU ring roofline
                lat = [_kernel_s(tables, section, m, n) for m in sorted(SIZES)]
                assert all(b >= a * (1 - ROUNDING) for a, b in itertools.pairwise(lat)), (gpu, section, n)
                assert lat[-1] > 100 * lat[0]  # bandwidth-bound at 2^30 elements, latency-bound at 64


def test_tables_agree_with_the_rows_they_were_fitted_from() -> None:
    tables = _tables("h200", "vllm")
    assert H200_NCCL in tables.provenance["files"]
    for (section, n, elements), measured_ms in H200_ROWS.items():
        stated = tables.fit_report[f"{section}/{n}"]["stored"]["max_ape"]
        assert stated < 0.35  # the nondecreasing fit moves an outlier, the rounding the rest
        got = _kernel_s(tables, section, elements, n)
        assert got / (measured_ms * MS) - 1 == pytest.approx(0.0, abs=stated + ROUNDING), (section, n, elements)


def test_tables_agree_with_every_parquet_row_where_the_package_is_installed() -> None:
    pd = pytest.importorskip("pandas")
    aic = pytest.importorskip("aiconfigurator_core")
    root = resources.files(aic).joinpath("systems", "data")
    for gpu, engine in sorted(available_tables()):
        tables = _tables(gpu, engine)
        path = next(p for p in tables.provenance["files"] if "/comm/nccl/" in p)
        df = pd.read_parquet(str(root.joinpath(path)))
        for section, op in (("allgather", "all_gather"), ("reducescatter", "reduce_scatter"), ("alltoall", "alltoall")):
            for n in (2,) if gpu == "l40s" else (2, 4, 8):  # L40S 4 and 8: scaled from a PCIe server (the fit)
                rows = df[(df.op_name == op) & (df.nccl_dtype == "half") & (df.num_gpus == n)]
                stated = tables.fit_report[f"{section}/{n}"]["stored"]["max_ape"]
                for m, lat in zip(rows.message_size, rows.latency, strict=True):
                    got = _kernel_s(tables, section, int(m), n)
                    assert abs(got / (lat * MS) - 1) <= stated + ROUNDING


def test_the_all_reduce_ratio_stands_in_only_where_a_table_has_no_collectives() -> None:
    raw: dict[str, Any] = json.loads(
        resources.files("planner.calibration").joinpath("kernels", "h200.trtllm.json").read_text(encoding="utf-8")
    )
    bare = _parse({k: v for k, v in raw.items() if k not in _COLLECTIVES})  # a table fitted before the collectives
    assert bare.collectives == {}
    measured = _parse(raw)
    elements, n = 32 * 8 * 7168, 8
    assert bare.allgather_s(elements, n) == AG_PER_ALLREDUCE * bare.allreduce_s(elements, n)
    assert bare.reducescatter_s(elements, n) == RS_PER_ALLREDUCE * bare.allreduce_s(elements, n)
    assert bare.alltoall_s(elements, n) == 0.0
    for section in _COLLECTIVES:  # with data: the NCCL table at its own roofline, nothing of the all-reduce
        table = measured.collectives[section][n]
        expected = table.latency_s(_collective_roofline_s(section, elements, n, measured.roofline), elements)
        assert _kernel_s(measured, section, elements, n) == expected
    assert measured.allgather_s(elements, n) != bare.allgather_s(elements, n)
    assert measured.allgather_s(elements, 1) == measured.alltoall_s(0, 8) == 0.0


def test_collectives_pay_the_engines_wait_like_an_all_reduce() -> None:
    # engine_terms.json ships w = 0 for every engine today: a wait of 2 µs per log2(ranks) shows the term
    bare = _tables("h200", "trtllm")
    with_terms = replace(bare, allreduce_wait_s=2e-6, _picked={})
    for section in _COLLECTIVES:
        wait = _kernel_s(with_terms, section, 4096, 8) - _kernel_s(bare, section, 4096, 8)
        assert wait == pytest.approx(with_terms.allreduce_wait_s * log2(8), rel=1e-9)


def test_attention_dp_moe_layers_time_their_gather_and_scatter_from_the_tables() -> None:
    # DeepSeek-V3 on 8 H200 with TensorRT-LLM, attention DP 8, EP 8: each of the 58 MoE layers all-gathers and
    # reduce-scatters D·T·h = 8·32·7,168 values over the 8 GPUs at T = 32 decode tokens per rank; nothing else moves
    spec = load_catalog().model("deepseek-v3").spec
    assert spec.moe is not None
    tables = load_kernel_tables("h200", "trtllm")
    assert tables is not None
    fallback = replace(tables, collectives={}, _picked={})
    shape = ServingShape(spec, 8, 1, 8, "fp8_block", "fp8_block", "bf16", 0.0, 0.0, attention_dp=8)
    measured_step = build_step_model(shape, tables).step(32, 2048.0)
    ratio_step = build_step_model(shape, fallback).step(32, 2048.0)
    gathered = 32 * 8 * 7168
    per_layer = (tables.allgather_s(gathered, 8) + tables.reducescatter_s(gathered, 8)) - (
        fallback.allgather_s(gathered, 8) + fallback.reducescatter_s(gathered, 8)
    )
    moe_layers = spec.num_layers - spec.moe.first_dense_layers
    assert moe_layers == 58
    assert measured_step.total_s - ratio_step.total_s == pytest.approx(moe_layers * per_layer, rel=1e-9)
    assert measured_step.attention_s == ratio_step.attention_s


def test_decode_context_parallel_gathers_from_the_tables() -> None:
    spec = load_catalog().model("deepseek-v3").spec
    tables = load_kernel_tables("h200", "vllm")
    assert tables is not None
    fallback = replace(tables, collectives={}, _picked={})
    shape = ServingShape(spec, 8, 8, 1, "fp8_block", "fp8_block", "bf16", 0.0, 0.0, decode_context_parallel=8)
    measured, ratio = build_step_model(shape, tables), build_step_model(shape, fallback)
    layer, b = measured.layers[0], 32
    gathers = tables.allgather_s(b * 128 * 576, 8) + tables.allgather_s(b * 128 * 2, 8)
    gathers += tables.reducescatter_s(b * 128 * 512, 8)
    old = fallback.allgather_s(b * 128 * 576, 8) + fallback.allgather_s(b * 128 * 2, 8)
    old += fallback.reducescatter_s(b * 128 * 512, 8)
    assert measured._dcp_decode_s(layer, b, 65536) - ratio._dcp_decode_s(layer, b, 65536) == pytest.approx(
        gathers - old, rel=1e-9
    )
