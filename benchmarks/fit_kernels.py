"""Fit memplan's compact kernel tables from aiconfigurator-core's measured kernel latencies.

Run (needs pandas, pyarrow, pydantic (the planner imports it) and the aiconfigurator-core wheel, which ships the
measured tables; pandas, pyarrow and aiconfigurator-core are not memplan dependencies):
    python -m venv /tmp/aicvenv && /tmp/aicvenv/bin/pip install aiconfigurator-core==0.12.0 pandas pyarrow pydantic
    PYTHONPATH=. /tmp/aicvenv/bin/python benchmarks/fit_kernels.py [--gpus h100-sxm h200 b200] [--engines vllm ...]
Writes planner/calibration/kernels/<gpu>.<engine>.json: per operator class, log(efficiency) on a log-spaced grid
of shapes (efficiency = roofline / measured latency, planner.calibration.rooflines), the kernel that was measured,
its latency floor, the provenance (package version, engine version of the data, device, sha256 of each file) and a
fit report: the error of the table against the measured points it did not store (GEMM shapes off the grid, MoE token
counts between grid points).

These tables are fitted on kernel measurements only. End-to-end serving runs (silicon_sample.csv) never enter here:
they score the model (benchmarks/validate_serving.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from planner.calibration.kernels import _collective_roofline_s, _parse, _table  # noqa: E402
from planner.calibration.rooflines import (  # noqa: E402
    Roofline,
    context_attention_roofline_s,
    elementwise_roofline_s,
    gemm_roofline_s,
    generation_attention_roofline_s,
    mla_roofline_s,
    moe_roofline_s,
)

OUT = ROOT / "planner" / "calibration" / "kernels"
MS = 1e-3
# memplan GPU id -> aiconfigurator-core system directory
SYSTEMS = {"h100-sxm": "h100_sxm", "h200": "h200_sxm", "b200": "b200_sxm", "a100-80gb": "a100_sxm", "l40s": "l40s"}
ENGINES = ("vllm", "sglang", "trtllm")
MAX_MOE_GPUS = 16  # MoE tables kept for TP × EP up to two 8-GPU nodes
GEMM_M = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
GEMM_NK = [128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536]
DTYPES = {
    "bfloat16": "bf16",
    "fp8": "fp8",
    "fp8_block": "fp8_block",
    "nvfp4": "nvfp4",
    "int4_wo": "int4",
    "w4a16_mxfp4": "mxfp4",
    "int8_wo": "int8",
}
# Where an engine's default MoE kernel for a format takes other activations than the table's generic entry: the
# measured dtype that stands for the format (None drops a dtype). TensorRT-LLM on Blackwell runs MXFP4 experts with
# MXFP8 activations on its TRTLLM MoE backend, its default there (deployment guide for GPT-OSS, "MoE Backend Support
# Matrix": B200/GB200/B300/GB300 MXFP8 × MXFP4 TRTLLM; H200 BF16 × MXFP4 TRITON).
MOE_DTYPE_BY_ENGINE = {("trtllm", 100): {"w4a8_mxfp4_mxfp8": "mxfp4", "w4a16_mxfp4": None}}
# The kernel each engine runs by default where a table measured several (reason beside each). Keys not listed
# take the kernel with the most measured rows.
PREFERRED = {
    ("vllm", "attention", 90): "vllm_flash_attn_fa3",  # vLLM's FLASH_ATTN backend selects FA3 on SM90
    ("vllm", "attention", 100): "vllm_flashinfer_trtllmprefill",  # FlashInfer TRT-LLM kernels on SM100
    ("sglang", "attention", 90): "fa3",  # attention_lane_defaults.yaml: sglang 0.5.14 SM90 -> fa3
    ("sglang", "attention", 100): "trtllm_mha",  # SGLang's Blackwell default (trtllm_mha backend)
    ("vllm", "gemm_fp8_block", 90): "DeepGemmFp8BlockScaledMMKernel",  # VLLM_USE_DEEP_GEMM on SM90
    ("vllm", "gemm_fp8_block", 100): "DeepGemmFp8BlockScaledMMKernel",
    ("vllm", "allreduce", 0): "vLLM_custom_graph",  # decode runs under CUDA graphs
    ("sglang", "allreduce", 0): "SGLang_CustomAllReduce_graph",
}
# aiconfigurator_core/systems/query_versions.yaml @ 0.12.0: the 'current' version per framework (and overrides)
CURRENT = {
    ("*", "trtllm"): "1.3.0rc20",
    ("*", "sglang"): "0.5.14",
    ("*", "vllm"): "0.24.0",
    ("a100_sxm", "trtllm"): "1.0.0",
    ("a100_sxm", "sglang"): "0.5.10",
    ("a100_sxm", "vllm"): "0.14.0",
}
SM = {"h100_sxm": 90, "h200_sxm": 90, "b200_sxm": 100, "a100_sxm": 80, "l40s": 89}
# Systems whose measured 4- and 8-GPU all-reduce crossed a slower path than the GPU's own interconnect, and the
# PCIe server whose NCCL scaling from 2 to N GPUs replaces theirs. aiconfigurator-core's 8×L40S node: NCCL
# all-reduce bus bandwidth 20.1 GB/s on 2 GPUs, 5.1 on 4 and 1.5 on 8 (128 Mi elements; a host bridge between
# the GPU pairs), and its comm/trtllm/1.3.0rc20/collection_meta.yaml notes that the collection hangs on those
# nodes. The RTX PRO 6000 server, also PCIe-only, keeps 37.8 / 25.7 / 20.3 GB/s.
PCIE_REFERENCE = {"l40s": "rtx_pro_6000_server"}
PCIE_GPUS_ALONE = 2  # vLLM and TRT-LLM run their custom all-reduce on PCIe-only GPUs only up to 2 of them


def read(path: Path) -> pd.DataFrame:
    """A measured table without its failed measurements (zero, negative or missing latency)."""
    df = pd.read_parquet(path)
    return df[df["latency"].notna() & (df["latency"] > 0)]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def latest(system_dir: Path, op: str, engine: str, filename: str) -> Path | None:
    """The table of the engine version aiconfigurator-core serves as 'current' for this system (query_versions.yaml),
    else the newest version before it, else the newest one. Versions after 'current' are partial single-op drops."""
    base = system_dir / op / engine
    if not base.is_dir():
        return None
    versions = sorted((p for p in base.iterdir() if (p / filename).is_file()), key=lambda p: _version_key(p.name))
    if not versions:
        return None
    current = CURRENT.get((system_dir.name, engine)) or CURRENT.get(("*", engine))
    if current is not None:
        at_or_before = [p for p in versions if _version_key(p.name) <= _version_key(current)]
        if at_or_before:
            return at_or_before[-1] / filename
    return versions[-1] / filename


def _version_key(v: str) -> tuple[int, ...]:
    nums = []
    for part in v.replace("rc", ".").replace("post", ".").split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        nums.append(int(digits) if digits else 0)
    return tuple(nums)


def pick_kernel(df: pd.DataFrame, engine: str, op: str, sm: int) -> pd.DataFrame:
    want = PREFERRED.get((engine, op, sm)) or PREFERRED.get((engine, op, 0))
    kernels = df["kernel_source"].value_counts()
    kernel = want if want in kernels.index else kernels.index[0]
    return df[df["kernel_source"] == kernel]


def grid_values(points: dict[tuple[float, ...], float], axes: list[list[float]]) -> tuple[list[float], int]:
    """Row-major values over the product of axes; a missing point takes the nearest measured one (log distance)."""
    import itertools

    measured = list(points.items())
    values, filled = [], 0
    for coords in itertools.product(*axes):
        value = points.get(coords)
        if value is None:
            filled += 1
            value = min(
                measured,
                key=lambda kv: sum(abs(math.log(a / b)) for a, b in zip(kv[0], coords, strict=True)),
            )[1]
        values.append(round(value, 3))
    return values, filled


def roofline_for(gpu: dict[str, Any]) -> Roofline:
    flops = {k: float(v) for k, v in gpu["peak_flops_per_s"].items()}
    return Roofline(flops, float(gpu["memory_bandwidth_bytes_per_s"]), float(gpu["interconnect_bandwidth_bytes_per_s"]))


def static_quant_swap(system_dir: Path, engine: str) -> pd.DataFrame | None:
    """Per (m, k): the dynamic per-tensor FP8 quantization TensorRT-LLM's measured FP8 GEMM ran, and the static one a
    served checkpoint runs instead (columns `dynamic`, `static`, ms), or None where the quantize tables are missing.

    aiconfigurator-core's TensorRT-LLM `torch_flow` FP8 GEMM was collected on a Linear without a static input scale,
    so each point includes `quantize_e4m3_per_tensor` (amax, then cast). A served FP8 checkpoint (ModelOpt's carry
    `input_scale`) takes `static_quantize_e4m3_per_tensor` instead (tensorrt_llm/_torch/modules/linear.py,
    FP8QDQLinearMethod.apply, 1.3). The evidence is in the tables themselves: the computescale table covers exactly
    the GEMM table's (m, k) pairs, and at decode shapes (m ≤ 16) the FP8 GEMM exceeds vLLM's CUTLASS FP8 kernel
    (which includes its static quantization) by a median 1.60× on H100, 1.61× on H200 and 1.77× on B200, where GEMM −
    computescale + scale_matrix is 1.08×, 1.05× and 1.12×.
    """
    if engine != "trtllm":
        return None
    dynamic = latest(system_dir, "quantize", engine, "computescale_perf.parquet")
    static = latest(system_dir, "quantize", engine, "scale_matrix_perf.parquet")
    if dynamic is None or static is None:
        return None
    d = read(dynamic).groupby(["m", "k"], as_index=False)["latency"].median().rename(columns={"latency": "dynamic"})
    s = read(static).groupby(["m", "k"], as_index=False)["latency"].median().rename(columns={"latency": "static"})
    return d.merge(s, on=["m", "k"])


def fit_gemm(
    path: Path, engine: str, sm: int, roof: Roofline, quant_swap: pd.DataFrame | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    df = read(path)
    out, report = {}, {}
    for raw_dtype, g in df.groupby("gemm_dtype"):
        fmt = DTYPES.get(str(raw_dtype))
        if fmt is None:
            continue
        g = pick_kernel(g, engine, f"gemm_{fmt}", sm)
        kernel = str(g["kernel_source"].iloc[0])
        g = g.groupby(["m", "n", "k"], as_index=False)["latency"].median()
        if fmt == "fp8" and quant_swap is not None:
            g = g.merge(quant_swap, on=["m", "k"], how="inner")
            g["latency"] = g["latency"] - g["dynamic"] + g["static"]
            g = g[g["latency"] > 0][["m", "n", "k", "latency"]]
            kernel += " − dynamic per-tensor quantization + static (the checkpoint's input_scale)"
        g["roof"] = [gemm_roofline_s(int(m), int(n), int(k), fmt, roof) for m, n, k in zip(g.m, g.n, g.k, strict=True)]
        g["log_eff"] = (g["roof"] / (g["latency"] * MS)).map(math.log)
        on = g[g.m.isin(GEMM_M) & g.n.isin(GEMM_NK) & g.k.isin(GEMM_NK)]
        points = {(float(m), float(n), float(k)): v for m, n, k, v in zip(on.m, on.n, on.k, on.log_eff, strict=True)}
        axes = [[float(x) for x in GEMM_M], [float(x) for x in GEMM_NK], [float(x) for x in GEMM_NK]]
        values, filled = grid_values(points, axes)
        out[fmt] = {
            "kernel": kernel,
            "axes": axes,
            "log_eff": values,
            "floor_us": round(float(g["latency"].min()) * 1e3, 3),
        }
        held = g[(g.m >= 1) & (g.n >= 128) & (g.k >= 128) & ~(g.m.isin(GEMM_M) & g.n.isin(GEMM_NK) & g.k.isin(GEMM_NK))]
        report[fmt] = {"grid_points": len(values), "filled": filled, "heldout": held[["m", "n", "k", "latency"]]}
    return out, report


def fit_attention(path: Path, engine: str, sm: int, roof: Roofline, phase: str) -> dict[str, Any]:
    """Prefill tables keyed by (n_h, n_kv, d) over (batch, prompt length); decode tables keyed by (n_kv, d) over
    (batch, cached length): the decode kernel reads the cache, and its latency changes by 2–4 % (median) across
    query-head counts at fixed KV heads (aiconfigurator-core H200 vLLM FA3 table), so those are pooled (median)."""
    df = pick_kernel(read(path), engine, "attention", sm)
    if "window_size" not in df:  # older tables (A100) measured full attention only
        df = df.assign(window_size=0)
    kernel = str(df["kernel_source"].iloc[0])
    out: dict[str, Any] = {}
    context = phase == "context"
    s_col = "isl" if context else "step"
    key_cols = ["num_heads", "num_key_value_heads", "head_dim"] if context else ["num_key_value_heads", "head_dim"]
    for (kv_dtype, window), g in df.groupby(["kv_cache_dtype", "window_size"]):
        kv = DTYPES.get(str(kv_dtype), str(kv_dtype))
        if context and kv != "bf16":
            continue  # prefill attention reads bf16 q, k, v; the fp8 cache only changes decode
        kv_bytes = 2.0 if kv == "bf16" else 1.0
        tables = []
        for key, gg in g.groupby(key_cols):
            if context:
                n_h, n_kv, d = (int(x) for x in key)
            else:
                n_kv, d = (int(x) for x in key)
                n_h = n_kv  # the roofline's memory term does not depend on n_h; its FLOPs use n_kv heads
            pts: dict[tuple[float, ...], list[float]] = {}
            fn = context_attention_roofline_s if context else generation_attention_roofline_s
            for b, s, lat in zip(gg.batch_size, gg[s_col], gg.latency, strict=True):
                r = fn(int(b), int(s), n_h, n_kv, d, int(window), kv_bytes, roof)
                pts.setdefault((float(b), float(s)), []).append(math.log(r / (lat * MS)))
            med = {k: sorted(v)[len(v) // 2] for k, v in pts.items()}
            axes = [sorted({k[0] for k in med}), sorted({k[1] for k in med})]
            values, _ = grid_values(med, axes)
            entry = {
                "n_kv": n_kv,
                "d": d,
                "axes": axes,
                "log_eff": values,
                "floor_us": round(float(gg.latency.min()) * 1e3, 3),
            }
            if context:
                entry["n_h"] = n_h
            tables.append(entry)
        out[f"{kv}/{int(window)}"] = {"kernel": kernel, "tables": tables}
    return out


def fit_mla(system_dir: Path, engine: str, phase: str) -> dict[str, Any]:
    """MLA attention cores (absorbed decode over the latent cache; prefill over expanded heads), keyed by local heads
    n_h/TP over (batch, length). vLLM's tables time whole attention modules (projections included), so vLLM borrows
    SGLang's core tables: both run FlashMLA-class kernels on these GPUs. Normalized by the MLA roofline with
    DeepSeek-V3's dimensions (d_c = 512, d_R = 64, d_qk = 192, d_v = 128)."""
    name = f"{phase}_mla_perf.parquet"
    source_engine = engine
    path = latest(system_dir, "mla", engine, name)
    if path is None:
        source_engine = "sglang" if engine == "vllm" else "trtllm"
        path = latest(system_dir, "mla", source_engine, name)
    if path is None:
        return {}
    df = read(path)
    df = df[df["tp_size"] == df["tp_size"].min()] if phase == "context" else df
    out: dict[str, Any] = {"source": f"{source_engine}/{path.parent.name}/{name}"}
    s_col = "isl" if phase == "context" else "step"
    for kv_dtype, g in df.groupby("kv_cache_dtype"):
        kv = DTYPES.get(str(kv_dtype), str(kv_dtype))
        tables = []
        for n_h, gg in g.groupby("num_heads"):
            gg = gg.groupby(["batch_size", s_col], as_index=False)["latency"].median()
            pts = {}
            for b, s_, lat in zip(gg.batch_size, gg[s_col], gg.latency, strict=True):
                r = mla_roofline_s(int(b), int(s_), int(n_h), kv, phase, ROOF_CACHE["roof"])
                pts[(float(b), float(s_))] = math.log(r / (lat * MS))
            axes = [sorted({k[0] for k in pts}), sorted({k[1] for k in pts})]
            values, _ = grid_values(pts, axes)
            tables.append(
                {"n_h": int(n_h), "axes": axes, "log_eff": values, "floor_us": round(float(gg.latency.min()) * 1e3, 3)}
            )
        out[kv] = {"kernel": str(df["kernel_source"].iloc[0]), "tables": tables}
    return out


ROOF_CACHE: dict[str, Roofline] = {}


def fit_moe(path: Path, engine: str, roof: Roofline, sm: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    df = read(path)
    dtypes = {**DTYPES, **MOE_DTYPE_BY_ENGINE.get((engine, sm), {})}
    if "distribution" in df:
        df = df[df["distribution"] == "power_law_1.01"]  # aiconfigurator's default routing imbalance for MoE models
    out: dict[str, Any] = {}
    report: dict[str, Any] = {}
    for raw_dtype, g in df.groupby("moe_dtype"):
        fmt = dtypes.get(str(raw_dtype))
        if fmt is None:
            continue
        tables, held_rows = [], []
        keys = ["hidden_size", "inter_size", "topk", "num_experts", "moe_tp_size", "moe_ep_size"]
        for key, gg in g.groupby(keys):
            if int(key[4]) * int(key[5]) > MAX_MOE_GPUS:
                continue
            # several MoE backends were measured for a shape (Triton, CUTLASS, FlashInfer, DeepGEMM): the engine
            # selects its fastest available backend for the checkpoint, so the table keeps the fastest one
            kernel = gg.groupby("kernel_source")["latency"].median().idxmin()
            gg = gg[gg["kernel_source"] == kernel].groupby("num_tokens", as_index=False)["latency"].median()
            h, f, k, e, tp, ep = (int(x) for x in key)
            pts, all_pts = {}, []
            for i, (t, lat) in enumerate(zip(gg.num_tokens, gg.latency, strict=True)):
                le = math.log(moe_roofline_s(int(t), h, f, k, e, tp, ep, fmt, roof) / (lat * MS))
                all_pts.append((int(t), lat))
                if i % 2 == 0 or i == len(gg) - 1:  # every other token count is held out of the grid
                    pts[(float(t),)] = le
            axes = [sorted(k[0] for k in pts)]
            values, _ = grid_values(pts, axes)
            tables.append(
                {
                    "h": h,
                    "f": f,
                    "k": k,
                    "experts": e,
                    "tp": tp,
                    "ep": ep,
                    "kernel": str(kernel),
                    "axes": axes,
                    "log_eff": values,
                    "floor_us": round(float(gg.latency.min()) * 1e3, 3),
                }
            )
            held_rows += [(h, f, k, e, tp, ep, t, lat) for t, lat in all_pts if (float(t),) not in pts]
        out[fmt] = {"tables": tables}
        report[fmt] = held_rows
    return out, report


def nccl_rows(system_dir: Path, op: str = "all_reduce") -> tuple[Path, pd.DataFrame]:
    """A system's measured NCCL fp16 collective `op` (nccl_perf op_name): (file, median latency in ms by num_gpus and
    message_size). message_size counts the elements of the whole buffer (nccl-tests' size ÷ 2 B: an all-gather's
    gathered output, a reduce-scatter's input, an all-to-all's send buffer; aiconfigurator's
    collector/collect_nccl.py)."""
    path = latest(system_dir, "comm", "nccl", "nccl_perf.parquet")
    assert path is not None, system_dir
    df = read(path)
    df = df[(df.op_name == op) & (df.nccl_dtype == "half")]
    return path, df.groupby(["num_gpus", "message_size"], as_index=False)["latency"].median()


def pcie_scaled(system_dir: Path, reference_dir: Path, n: int, op: str = "all_reduce") -> tuple[pd.DataFrame, str]:
    """NCCL collective `op` on n PCIe GPUs of this system: its own 2-GPU latency × the reference PCIe server's
    n-GPU / 2-GPU latency ratio of the same collective at the same message size (log-interpolated between the
    reference's sizes).

    Formula: t_n(m) = t_2(m) · t_ref,n(m) / t_ref,2(m). On PCIe-only GPUs vLLM's custom all-reduce is off beyond
    2 GPUs (vllm/distributed/device_communicators/custom_all_reduce.py: not fully connected) and TensorRT-LLM's
    AUTO strategy falls back to NCCL without NVLink, so NCCL is the collective the engines run at 4 and 8 GPUs.
    """
    own_path, own = nccl_rows(system_dir, op)
    ref_path, ref = nccl_rows(reference_dir, op)
    two = own[own.num_gpus == 2].set_index("message_size").latency
    r2 = ref[ref.num_gpus == 2].set_index("message_size").latency
    rn = ref[ref.num_gpus == n].set_index("message_size").latency
    sizes = sorted(set(r2.index) & set(rn.index))
    logs = [math.log(m) for m in sizes]
    ratios = [math.log(rn[m] / r2[m]) for m in sizes]

    def ratio(m: float) -> float:
        x = min(max(math.log(m), logs[0]), logs[-1])
        i = max(1, next((j for j, v in enumerate(logs) if v >= x), len(logs) - 1))
        w = (x - logs[i - 1]) / (logs[i] - logs[i - 1])
        return math.exp((1 - w) * ratios[i - 1] + w * ratios[i])

    rows = pd.DataFrame({"message_size": two.index, "latency": [t * ratio(m) for m, t in two.items()]})
    source = (
        f"{own_path.relative_to(system_dir.parent)} (2 GPUs) × n/2-GPU ratio of "
        f"{ref_path.relative_to(system_dir.parent)}: this system's {n}-GPU points crossed a host bridge"
    )
    return rows, source


def fit_allreduce(system_dir: Path, engine: str, roof: Roofline) -> dict[str, Any]:
    out = _fit_measured_allreduce(system_dir, engine, roof)
    reference = PCIE_REFERENCE.get(system_dir.name)
    if reference is None:
        return out
    for n in sorted(int(k) for k in out if int(k) > PCIE_GPUS_ALONE):
        rows, source = pcie_scaled(system_dir, system_dir.parent / reference, n)
        out[str(n)] = _allreduce_entry(rows, n, roof, "NCCL (PCIe scaling from " + reference + ")", source)
    return out


def _allreduce_entry(
    g: pd.DataFrame, n: int, roof: Roofline, kernel: str, source: str, op: str = "allreduce"
) -> dict[str, Any]:
    pts = {
        (float(m),): math.log(_collective_roofline_s(op, int(m), n, roof) / (lat * MS))
        for m, lat in zip(g.message_size, g.latency, strict=True)
    }
    axes = [sorted(k[0] for k in pts)]
    values, _ = grid_values(pts, axes)
    return {
        "kernel": kernel,
        "axes": axes,
        "log_eff": values,
        "floor_us": round(float(g.latency.min()) * 1e3, 3),
        "source": source,
    }


def _fit_measured_allreduce(system_dir: Path, engine: str, roof: Roofline) -> dict[str, Any]:
    path = latest(system_dir, "comm", engine, "custom_allreduce_perf.parquet")
    if path is not None:
        df = pick_kernel(read(path), engine, "allreduce", 0)
    else:
        path = latest(system_dir, "comm", "nccl", "nccl_perf.parquet")
        assert path is not None, system_dir
        df = read(path)
        df = df[(df.op_name == "all_reduce") & (df.nccl_dtype == "half")]
    out = {}
    kernel = str(df["kernel_source"].iloc[0]) if "kernel_source" in df else "NCCL"
    for n, g in df.groupby("num_gpus"):
        g = g.groupby("message_size", as_index=False)["latency"].median()
        out[str(int(n))] = _allreduce_entry(g, int(n), roof, kernel, str(path.relative_to(system_dir)))
    return out


# The collectives besides all-reduce, by table section -> nccl_perf op_name. Every engine runs them through NCCL, for
# every engine the same measured table: the custom kernels of vLLM and SGLang are all-reduces only
# (vllm/distributed/device_communicators/cuda_communicator.py: all_gather and reduce_scatter go to NCCL;
# sglang/srt/distributed/parallel_state.py likewise), and TensorRT-LLM's allgather / reducescatter ops are NCCL's
# (tensorrt_llm/_torch/distributed/ops.py).
NCCL_COLLECTIVES = {"allgather": "all_gather", "reducescatter": "reduce_scatter", "alltoall": "alltoall"}


def nondecreasing(values: list[float]) -> list[float]:
    """The least-squares nondecreasing fit of a sequence (pool adjacent violators; Barlow et al. 1972, isotonic
    regression): each run that decreases is replaced by its mean."""
    blocks: list[list[float]] = []  # [sum, count] per pooled run
    for v in values:
        blocks.append([v, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    return [total / count for total, count in blocks for _ in range(int(count))]


def fit_collective(system_dir: Path, section: str, roof: Roofline) -> tuple[dict[str, Any], dict[str, Any]]:
    """One NCCL collective's tables by GPU count, as the all-reduce's (log η over every measured message size,
    η = roofline / measured), and the rows each was fitted from (message_size, latency in ms) for the fit report.

    The stored latencies are the nondecreasing fit of log latency over size (nondecreasing): a collective over fewer
    elements can run as one over more, so a larger message is never faster; the measured points are one run each and
    at the latency-bound sizes (up to ~2^17 elements) wander by up to 2.5× (H100 SXM NCCL 2.29.2 alltoall on 4 GPUs:
    17.7 µs at 512 elements, 7.0 µs at 1,024). A PCIe system whose 4- and 8-GPU points crossed a host bridge takes
    its own 2-GPU latency scaled by the reference server's n/2-GPU ratio of the same collective (pcie_scaled)."""
    op = NCCL_COLLECTIVES[section]
    path, df = nccl_rows(system_dir, op)
    reference = PCIE_REFERENCE.get(system_dir.name)
    out, rows = {}, {}
    for n, g in df.groupby("num_gpus"):
        n = int(n)
        kernel, source = "NCCL", str(path.relative_to(system_dir))
        g = g[["message_size", "latency"]].sort_values("message_size").reset_index(drop=True)
        if reference is not None and n > PCIE_GPUS_ALONE:
            g, source = pcie_scaled(system_dir, system_dir.parent / reference, n, op)
            kernel = f"NCCL (PCIe scaling from {reference})"
        fitted = g.assign(latency=[math.exp(v) for v in nondecreasing([math.log(x) for x in g.latency])])
        out[str(n)] = _allreduce_entry(fitted, n, roof, kernel, f"{source} op_name={op}, nondecreasing fit", section)
        rows[str(n)] = (g, fitted)
    return out, rows


def _collective_table_s(table: Any, section: str, elements: int, n: int, roof: Roofline) -> float:
    return float(table.latency_s(_collective_roofline_s(section, elements, n, roof), elements))


def collective_report(section: str, tables: dict[str, Any], rows: dict[str, Any], roof: Roofline) -> dict[str, Any]:
    """Per GPU count, against the measured rows: the table's error at the sizes it stores ("stored": the nondecreasing
    fit and the rounding of log η) and when every other size is left out of its grid ("between_sizes": the
    interpolation across a 4× gap in size, an upper bound for the 2× gaps between the sizes the table stores)."""
    report = {}
    for n, (g, fitted) in rows.items():
        sizes, measured = [int(m) for m in g.message_size], [float(lat) * MS for lat in g.latency]
        full = _table(tables[n])
        half = _table(_allreduce_entry(fitted.iloc[::2], int(n), roof, "", "", section))
        held = [i for i in range(len(sizes)) if i % 2]

        stored = [_collective_table_s(full, section, m, int(n), roof) for m in sizes]
        worst = max(abs(p / m - 1) for p, m in zip(stored, measured, strict=True))
        report[f"{section}/{n}"] = {
            "stored": {**ape_stats(stored, measured), "max_ape": round(worst, 4)},
            "between_sizes": ape_stats(
                [_collective_table_s(half, section, sizes[i], int(n), roof) for i in held], [measured[i] for i in held]
            ),
            "sizes": [sizes[0], sizes[-1]],
        }
    return report


ELEMENTWISE_MIN_BANDWIDTH = 0.5  # of peak HBM at the largest measured size; below it the "kernel" is a chain of ops


def fit_elementwise(system_dir: Path, engine: str, roof: Roofline) -> tuple[dict[str, Any], Path | None]:
    """A memory-bound reference kernel, and the file it was fitted on: static per-tensor FP8 quantization
    (scale_matrix: one pass that reads 2 B and writes 1 B per element, the shape of a norm, an activation or a
    KV-cache write). An engine whose own measurement stays under half the HBM bandwidth at its largest size takes
    vLLM's on the same GPU: SGLang's runs at 0.4 TB/s on H200 (a chain of torch operations, where its norms and
    activations are sgl-kernel's fused kernels). The computescale table used before is no such kernel: for vLLM a
    difference (dynamic − static quantization, 0.6 µs at small sizes), for TensorRT-LLM a torch amax and scale (7 µs
    at any small size), for SGLang zeros."""
    for source in dict.fromkeys((engine, "vllm")):
        path = latest(system_dir, "quantize", source, "scale_matrix_perf.parquet")
        if path is None:
            continue
        df = read(path)
        df = df[df.latency > 0]
        df = df.assign(moved=df.m * df.k * 3.0).groupby("moved", as_index=False)["latency"].median()
        # bucket to powers of two so the axis is strictly increasing and compact
        df["bucket"] = df.moved.map(lambda b: 2.0 ** round(math.log2(b)))
        df = df.groupby("bucket", as_index=False)["latency"].median()
        largest = df.iloc[-1]
        if elementwise_roofline_s(largest.bucket, roof) / (largest.latency * MS) < ELEMENTWISE_MIN_BANDWIDTH:
            continue
        pts = {
            (float(b),): math.log(elementwise_roofline_s(b, roof) / (lat * MS))
            for b, lat in zip(df.bucket, df.latency, strict=True)
        }
        axes = [sorted(k[0] for k in pts)]
        values, _ = grid_values(pts, axes)
        kernel = f"{source} {path.parent.name}:scale_matrix"
        if source != engine:
            kernel += f" ({engine}'s own runs under {ELEMENTWISE_MIN_BANDWIDTH:.0%} of HBM bandwidth)"
        table = {"kernel": kernel, "axes": axes, "log_eff": values, "floor_us": round(float(df.latency.min()) * 1e3, 3)}
        return table, path
    # no memory-bound kernel measured on this GPU: 80 % of HBM bandwidth, 2 µs floor (assumed)
    assumed = {
        "kernel": "assumed: 80 % of peak HBM bandwidth (no measured memory-bound kernel for this GPU)",
        "axes": [[1024.0, 1073741824.0]],
        "log_eff": [round(math.log(0.8), 3)] * 2,
        "floor_us": 2.0,
    }
    return assumed, None


def ape_stats(pred: list[float], meas: list[float]) -> dict[str, float]:
    errs = sorted(abs(p / m - 1.0) for p, m in zip(pred, meas, strict=True))
    if not errs:
        return {"points": 0}
    return {
        "points": len(errs),
        "median_ape": round(errs[len(errs) // 2], 4),
        "p90_ape": round(errs[int(len(errs) * 0.9)], 4),
    }


def fit_pair(gpu_id: str, engine: str, data_root: Path, gpus: dict[str, Any]) -> dict[str, Any] | None:
    system = SYSTEMS[gpu_id]
    system_dir = data_root / system
    sm = SM[system]
    roof = roofline_for(gpus[gpu_id])
    files = {
        "gemm": latest(system_dir, "gemm", engine, "gemm_perf.parquet"),
        "context_attention": latest(system_dir, "attention", engine, "context_attention_perf.parquet"),
        "generation_attention": latest(system_dir, "attention", engine, "generation_attention_perf.parquet"),
        "moe": latest(system_dir, "moe", engine, "moe_perf.parquet"),
    }
    if any(p is None for p in files.values()):
        print(f"skip {gpu_id}/{engine}: missing {[k for k, p in files.items() if p is None]}", file=sys.stderr)
        return None
    ROOF_CACHE["roof"] = roof
    swap = static_quant_swap(system_dir, engine)
    gemm, gemm_report = fit_gemm(files["gemm"], engine, sm, roof, swap)  # type: ignore[arg-type]
    moe, moe_report = fit_moe(files["moe"], engine, roof, sm)  # type: ignore[arg-type]
    elementwise, files["elementwise"] = fit_elementwise(system_dir, engine, roof)
    table = {
        "schema": 1,
        "gpu": gpu_id,
        "engine": engine,
        "engine_version": files["gemm"].parent.name,  # type: ignore[union-attr]
        "device": str(pd.read_parquet(files["gemm"], columns=["device"]).device.iloc[0]),
        "provenance": {},
        "roofline": {
            "flops_per_s": roof.flops_per_s,
            "bytes_per_s": roof.bytes_per_s,
            "link_bytes_per_s": roof.link_bytes_per_s,
            "source": "planner/catalog/gpus.json",
        },
        "gemm": gemm,
        "context_attention": fit_attention(files["context_attention"], engine, sm, roof, "context"),  # type: ignore[arg-type]
        "generation_attention": fit_attention(files["generation_attention"], engine, sm, roof, "generation"),  # type: ignore[arg-type]
        "moe": moe,
        "mla_context": fit_mla(system_dir, engine, "context"),
        "mla_generation": fit_mla(system_dir, engine, "generation"),
        "allreduce": fit_allreduce(system_dir, engine, roof),
    }
    collective_rows = {}
    for section in NCCL_COLLECTIVES:
        table[section], collective_rows[section] = fit_collective(system_dir, section, roof)
    table["elementwise"] = elementwise
    if swap is not None:
        files["quantize_dynamic"] = latest(system_dir, "quantize", engine, "computescale_perf.parquet")
        files["quantize_static"] = latest(system_dir, "quantize", engine, "scale_matrix_perf.parquet")
    reference = PCIE_REFERENCE.get(system)
    if reference is not None:  # the 4- and 8-GPU all-reduce tables are derived from these two
        files["allreduce_nccl"] = latest(system_dir, "comm", "nccl", "nccl_perf.parquet")
        files["allreduce_pcie_reference"] = latest(data_root / reference, "comm", "nccl", "nccl_perf.parquet")
    files["collectives_nccl"] = latest(system_dir, "comm", "nccl", "nccl_perf.parquet")  # all-gather, RS, all-to-all
    used = {k: p for k, p in files.items() if p is not None}
    table["provenance"] = {
        "package": "aiconfigurator-core",
        "package_version": metadata.version("aiconfigurator-core"),
        "license": "Apache-2.0 (NVIDIA); measured kernel latencies",
        "system": system,
        "versions": {k: p.parent.name for k, p in used.items()},
        "files": {str(p.relative_to(data_root)): sha256(p) for p in used.values()},
        "fitted": dt.date.today().isoformat(),
        "script": "benchmarks/fit_kernels.py",
    }
    # held-out report through the planner's own reader
    parsed = _parse(table)
    report: dict[str, Any] = {}
    for fmt, rep in gemm_report.items():
        held = rep["heldout"]
        pred = [parsed.gemm_s(int(m), int(n), int(k), fmt) for m, n, k in zip(held.m, held.n, held.k, strict=True)]
        report[f"gemm/{fmt}"] = {**ape_stats(pred, list(held.latency * MS)), "grid_points": rep["grid_points"]}
    for fmt, rows in moe_report.items():
        pred = [parsed.moe_s(t, h, f, k, e, tp, ep, fmt) for h, f, k, e, tp, ep, t, _ in rows]
        report[f"moe/{fmt}"] = ape_stats(pred, [lat * MS for *_, lat in rows])
    for section, rows in collective_rows.items():
        report.update(collective_report(section, table[section], rows, roof))
    table["fit_report"] = {
        "what": "error of the table against measured points it does not store (GEMM shapes off the grid, "
        "every other MoE token count); attention tables store every measured (batch, length) point",
        **report,
    }
    table["fit_report"]["collectives_what"] = (
        "allgather, reducescatter, alltoall (per GPU count), against the measured rows: 'stored' is the error at the "
        "sizes the table stores (its nondecreasing fit and the rounding of log η), 'between_sizes' the error at every "
        "other size when it is left out of the grid (an upper bound for the sizes between those stored)"
    )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpus", nargs="*", default=["h100-sxm", "h200", "b200", "a100-80gb", "l40s"])
    parser.add_argument("--engines", nargs="*", default=list(ENGINES))
    args = parser.parse_args()
    import aiconfigurator_core

    data_root = Path(aiconfigurator_core.__file__).parent / "systems" / "data"
    gpus = {g["id"]: g for g in json.loads((ROOT / "planner/catalog/gpus.json").read_text())["gpus"]}
    OUT.mkdir(parents=True, exist_ok=True)
    for gpu_id in args.gpus:
        for engine in args.engines:
            table = fit_pair(gpu_id, engine, data_root, gpus)
            if table is None:
                continue
            path = OUT / f"{gpu_id}.{engine}.json"
            path.write_text(json.dumps(table, separators=(",", ":")) + "\n")
            rep = {k: v for k, v in table["fit_report"].items() if not k.endswith("what")}
            print(f"{path.relative_to(ROOT)} {path.stat().st_size / 1e3:.0f} kB {json.dumps(rep)}")


if __name__ == "__main__":
    main()
