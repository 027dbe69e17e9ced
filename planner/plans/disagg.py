"""Disaggregated serving: a prefill pool and a decode pool sized by rate matching, the KV cache sent between them.

Prefill replicas run prompts (no decode stalls them); decode replicas run only decode iterations (no prefill chunk
stalls them), so TPOT is the decode step at the decode batch and TTFT is the prompt's prefill, its queueing in the
prefill pool and the KV transfer. Both pools are sized for the same request rate. Either pool of a MoE model may use
data-parallel attention: each of its DP ranks is a server of its own (its own prompts, its own decode batch and KV
pool), the experts run over every rank's tokens, so a replica serves DP times one rank's work.
Source: Zhong et al. 2024, DistServe (arXiv:2401.09670) §3-4 (goodput of separate prefill and decode instances,
  M/D/1 queueing of prefill); Patel et al. 2024, Splitwise; aiconfigurator's disaggregated mode (rate-matched xPyD).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from math import ceil, log
from typing import Literal

from planner.catalog import Catalog
from planner.model.kv_cache import kv_bytes_per_token, local_kv_heads
from planner.model.precision import dtype_bytes
from planner.model.spec import ModelSpec
from planner.plans.prices import GpuPrice
from planner.plans.result import Headroom, Plan, Pool
from planner.plans.scan import FamilyScan, cost_per_million, quantile
from planner.plans.spec import PlanRequest
from planner.plans.static import prefill_alone_s
from planner.serving.inference import InferenceRequest, estimate_inference
from planner.serving.load import LatencyPercentiles, rank_limit

__all__ = ["DisaggCandidate", "disaggregated_plans", "kv_transfer_s", "prefill_queue_s"]

# DGX/HGX H100, H200 and B200 nodes give each GPU one 400 Gb/s ConnectX-7 NIC (NVIDIA DGX H100 user guide, "Network
# Ports"): 50 GB/s per GPU, the path a KV cache takes between prefill and decode nodes (NIXL/UCX over RDMA).
NIC_BYTES_PER_S = 50e9
MAX_PREFILL_UTILIZATION = 0.9


def kv_shard_fraction(spec: ModelSpec, attention_tp: int, context_shards: int = 1) -> float:
    """The share of a sequence's KV cache one GPU of an attention group of `attention_tp` GPUs holds: its KV heads
    (local_kv_heads / n_kv, replicated heads counted on every GPU that holds them); for MLA, whose latent every
    GPU of the group holds whole, 1, or 1 / DCP under decode context parallelism (`context_shards`)."""
    if spec.mla is not None:
        return 1.0 / context_shards
    return local_kv_heads(spec.kv_heads, attention_tp) / spec.kv_heads


def kv_transfer_s(
    spec: ModelSpec,
    prompt: int,
    kv_dtype_bytes: int,
    attention_tp_prefill: int,
    attention_tp_decode: int,
    context_shards: tuple[int, int] = (1, 1),
) -> float:
    """Time to send one prompt's KV cache from the prefill rank to the decode rank that serves it.

    Formula: P·kv_bytes_per_token(whole model)·max(share_p, share_d) / 50 GB/s, share = the KV shard one GPU of the
    attention group sends or receives (kv_shard_fraction): the GPUs move their shards in parallel, the fuller end
    sets the time (GQA with 8 KV heads from TP 4 to TP 2: each decode GPU receives 4 of 8 heads; an MLA latent goes
    whole to every GPU of the decode rank, or its 1/DCP stripe where `context_shards` = (prefill, decode) DCP).
    Assumes: one 400 Gb/s NIC per GPU, transfers not overlapped with the prefill (conservative).
    """
    per_token = kv_bytes_per_token(spec, kv_dtype_bytes)
    share = max(
        kv_shard_fraction(spec, attention_tp_prefill, context_shards[0]),
        kv_shard_fraction(spec, attention_tp_decode, context_shards[1]),
    )
    return prompt * per_token * share / NIC_BYTES_PER_S


def prefill_queue_s(rate: float, service_s: float, replicas: int) -> tuple[float, float]:
    """(utilization ρ, mean wait) of prompts over `replicas` prefill replicas, each serving one prompt at a time.

    Formula: ρ = λ·s/R; W = ρ·s/(2(1 − ρ)) (M/D/1 per replica, the load split evenly).
    Source: DistServe §3.1 (the prefill instance as an M/D/1 queue).
    """
    rho = rate * service_s / replicas
    return rho, (rho * service_s / (2 * (1 - rho)) if rho < 1 else float("inf"))


@dataclass(frozen=True, slots=True)
class DisaggCandidate:
    prefill: FamilyScan
    decode: FamilyScan
    prefill_replicas: int
    decode_replicas: int
    decode_batch: int  # sequences one decode attention rank runs (the replica runs DP times as many)
    rate: float
    ttft_s: float
    queue_s: float
    tpot_s: float
    num_gpus: int
    cost_per_million: float


def _decode_batch(scan: FamilyScan, slots_max: int, ctx: float, tpot_limit_s: float | None) -> tuple[int, float]:
    """The largest decode batch whose step meets the TPOT limit (a decode-only iteration), and its step time."""
    assert scan.timer is not None
    best = (1, scan.timer.step(1, ctx).total_s)
    b = 1
    while b <= slots_max:
        t = scan.timer.step(b, ctx).total_s
        if tpot_limit_s is not None and t > tpot_limit_s:
            break
        best = (b, t)
        b *= 2
    return best


def _pair(request: PlanRequest, spec: ModelSpec, p: FamilyScan, d: FamilyScan, price: float) -> DisaggCandidate | None:
    """The cheapest prefill × decode replica counts of this pairing that meet the SLO at the workload's rate (or
    its users' rate), or None. Under data-parallel attention a pool's servers are its replicas × DP ranks: a decode
    rank runs up to its own batch limit (SGLang divides max_running_requests by DP) from its own KV pool, a prefill
    rank runs its own prompts (SGLang's chunked_prefill_size divided by DP), each timed with every rank busy (the
    experts over DP ranks' tokens)."""
    w, slo, c = request.workload, request.slo, request.constraints
    assert p.timer is not None and p.memory is not None and d.memory is not None and p.memory.defaults is not None
    prompt, output = round(w.mean_input), max(2, round(w.mean_output))
    limit = None if slo.tpot_limit_ms is None else slo.tpot_limit_ms / 1e3
    pf, df = p.family, d.family
    slots = min(rank_limit(df.serving(), max(c.max_num_seqs)), d.memory.pool_tokens // (prompt + output))
    b_max, t_max = _decode_batch(d, slots, prompt + output / 2, limit)
    if limit is not None and t_max > limit:
        return None
    service = prefill_alone_s(p.timer, prompt, rank_limit(pf.serving(), p.memory.defaults.token_budget))
    transfer = kv_transfer_s(spec, prompt, dtype_bytes(df.kv_dtype), pf.tp // pf.dp, df.tp // df.dp, (pf.dcp, df.dcp))
    if w.rate is not None:
        rate = w.rate
        decode_replicas = max(1, ceil(rate * output * t_max / (b_max * df.dp)))
    else:
        users = w.concurrency or 1
        decode_replicas = max(1, ceil(users / (b_max * df.dp)))
        rate = users / (service + transfer + (output - 1) * t_max)
    batch = max(1, min(b_max, ceil(rate * output * t_max / (decode_replicas * df.dp))))
    assert d.timer is not None
    tpot = d.timer.step(batch, prompt + output / 2).total_s
    q = quantile(slo)
    for prefill_replicas in range(1, c.max_gpus // pf.gpus_per_replica + 1):
        rho, wait = prefill_queue_s(rate, service, prefill_replicas * pf.dp)
        if rho >= MAX_PREFILL_UTILIZATION:
            continue
        ttft = service + transfer + wait * log(1 / (1 - q))
        if slo.ttft_ms is not None and ttft * 1e3 > slo.ttft_ms:
            continue
        gpus = prefill_replicas * p.family.gpus_per_replica + decode_replicas * d.family.gpus_per_replica
        served = rate * w.mean_output
        if gpus > c.max_gpus or served <= 0 or served < w.min_output_tokens_per_s:
            return None
        cost = cost_per_million(gpus, price, served)
        return DisaggCandidate(p, d, prefill_replicas, decode_replicas, batch, rate, ttft, wait, tpot, gpus, cost)
    return None


def disaggregated_plans(
    request: PlanRequest,
    catalog: Catalog,
    spec: ModelSpec,
    scans: Sequence[FamilyScan],
    prices: dict[str, GpuPrice],
) -> list[Plan]:
    """The cheapest rate-matched prefill/decode pairing of each (GPU, engine, precisions) group, as plans (static)."""
    groups: dict[tuple[str, str, str, str], list[FamilyScan]] = defaultdict(list)
    for s in scans:
        if s.timer is not None and s.memory is not None and s.memory.fits and s.family.pp == 1:
            f = s.family
            groups[(f.gpu.id, f.engine.value, f.weight_format.value, f.kv_dtype.value)].append(s)
    best: list[DisaggCandidate] = []
    for (gpu, *_), members in groups.items():
        price = prices[gpu].usd_per_gpu_hour
        pairs = [_pair(request, spec, p, d, price) for p in members for d in members]
        found = [x for x in pairs if x is not None]
        if found:
            best.append(min(found, key=lambda x: x.cost_per_million))
    best.sort(key=lambda x: x.cost_per_million)
    return [_as_plan(request, catalog, x, prices[x.prefill.family.gpu.id]) for x in best[: request.max_plans]]


Role = Literal["prefill", "decode"]


def _pool(
    request: PlanRequest, catalog: Catalog, scan: FamilyScan, role: Role, replicas: int, batch: int, output: int
) -> Pool:
    """One pool's replica as a serving request: `batch` sequences per attention rank, so DP · batch users per
    replica, and max_num_seqs as the engine counts it (per rank in vLLM and TensorRT-LLM, per server in SGLang)."""
    f, w = scan.family, request.workload
    per_server = batch * f.dp if f.engine.value == "sglang" else batch
    serving = f.serving(
        max_num_seqs=max(per_server, 1),
        prompt_tokens=round(w.mean_input),
        output_tokens=output,
        concurrency=max(batch * f.dp, 1),
    )
    replica = InferenceRequest(model=request.model, gpu=f.gpu.id, serving=serving)
    e = estimate_inference(replica, catalog)
    return Pool(
        role=role,
        tensor_parallel=f.tp,
        pipeline_parallel=f.pp,
        expert_parallel=f.ep,
        attention_data_parallel=f.dp,
        decode_context_parallel=f.dcp,
        max_num_seqs=serving.max_num_seqs or batch,
        replicas=replicas,
        gpus_per_replica=f.gpus_per_replica,
        kv_pool_tokens=e.engine.kv_pool_tokens or 0,
        memory=e.memory,
        request=replica,
    )


def _as_plan(request: PlanRequest, catalog: Catalog, x: DisaggCandidate, price: GpuPrice) -> Plan:
    w, slo, q = request.workload, request.slo, quantile(request.slo)
    output = max(2, round(w.mean_output))
    fixed = x.ttft_s - x.queue_s * log(1 / (1 - q))

    def ttft_at(p: float) -> float:
        return (fixed + x.queue_s * log(1 / (1 - p))) * 1e3

    ttft = LatencyPercentiles(
        mean_ms=(fixed + x.queue_s) * 1e3, p50_ms=ttft_at(0.5), p90_ms=ttft_at(0.9), p99_ms=ttft_at(0.99)
    )
    tpot_ms = x.tpot_s * 1e3
    tpot = LatencyPercentiles(mean_ms=tpot_ms, p50_ms=tpot_ms, p90_ms=tpot_ms, p99_ms=tpot_ms)
    served = x.rate * w.mean_output
    pf, dc = x.prefill.family, x.decode.family
    pools = (
        _pool(request, catalog, x.prefill, "prefill", x.prefill_replicas, 1, 1),
        _pool(request, catalog, x.decode, "decode", x.decode_replicas, x.decode_batch, output),
    )
    decode_pool = pools[1]
    in_use = x.decode_batch * (w.mean_input + w.mean_output / 2)
    p_dp, d_dp = (f" DP{f.dp}" if f.dp > 1 else "" for f in (pf, dc))
    per_rank = " per DP rank" if dc.dp > 1 else ""
    label = (
        f"{pf.gpu.id} {pf.engine.value} {pf.weight_format.value}/kv-{pf.kv_dtype.value} disaggregated: "
        f"prefill TP{pf.tp}{p_dp} × {x.prefill_replicas}, decode TP{dc.tp} EP{dc.ep}{d_dp} × {x.decode_replicas} "
        f"(batch {x.decode_batch}{per_rank})"
    )
    return Plan(
        rank=0,
        mode="disaggregated",
        label=label,
        gpu=pf.gpu.id,
        engine=pf.engine.value,
        weight_format=pf.weight_format.value,
        kv_cache_dtype=pf.kv_dtype.value,
        pools=pools,
        num_gpus=x.num_gpus,
        price=price,
        cost_per_hour_usd=x.num_gpus * price.usd_per_gpu_hour,
        cost_per_million_output_tokens_usd=x.cost_per_million,
        output_tokens_per_s=served,
        tokens_per_s_per_gpu=served / x.num_gpus,
        tokens_per_s_per_user=1e3 / tpot_ms,
        ttft=ttft,
        tpot=tpot,
        headroom=Headroom(
            ttft=None if slo.ttft_ms is None else 1 - ttft_at(q) / slo.ttft_ms,
            tpot=None if slo.tpot_limit_ms is None else 1 - tpot_ms / slo.tpot_limit_ms,
            kv_pool=max(0.0, 1 - in_use / max(decode_pool.kv_pool_tokens, 1)),
        ),
        latency_method="static (rate matching)",
    )
