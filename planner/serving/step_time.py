"""Time of one engine iteration, composed from measured per-operator latencies.

An iteration (one forward of the continuous-batching loop) runs T tokens through every layer: the decode tokens of
the running sequences (one each) and the prompt chunks being prefilled. Per layer, on one GPU of the tensor-parallel
group:

    t_layer(T) = Σ GEMMs(M = T, N, K) + attention(prefill chunks) + attention(decode batch)
                 + MoE(T) + memory-bound kernels (norms, RoPE, activation, KV write) + all-reduces(T·h)

and the iteration adds the embedding, final norm, lm_head over the sampled rows, the sampler, and the engine's fixed
per-iteration cost. GEMM, attention, MoE, all-reduce and memory-bound latencies come from the kernel tables fitted on
aiconfigurator-core's measurements for this GPU and engine (planner.calibration.kernels); the shapes come from the
same linears that count the parameters (planner.model.params), fused as the engines fuse them (q/k/v, gate/up).
Source: the composition follows Vidur (Agrawal et al. 2024, §4) and aiconfigurator's operator model; the per-layer
  collectives are Megatron-LM's two all-reduces per block (Shoeybi et al. 2019 §3).

An iteration that replays no CUDA graph (StepModel.graphed: every prefill under SGLang and TensorRT-LLM, a step
beyond the largest capture size under vLLM, everything under enforce_eager) has its kernels launched one by one from
Python; where they are short the GPU waits for the host:
    t_eager = max(Σ kernels, L_dense · e_dense + L_moe · e_moe)
with e_dense and e_moe the engine's host time per dense and per MoE layer (engine_terms.json, fitted on end-to-end
TTFT by benchmarks/fit_engine_terms.py: no kernel table sees it, they time kernels back to back).

Data-parallel attention (ServingShape.attention_dp = D > 1): the TP GPUs form D attention ranks of TP/D GPUs. A step is
timed on the busiest rank with its own T tokens: attention, the non-expert GEMMs (dense MLPs, shared experts), norms
and the lm_head at TP/D, one all-reduce per layer over the rank's TP/D GPUs after attention (two in dense layers); the
routed experts of a MoE layer run over all ranks' tokens, D·T (the busiest rank's count on every rank: the ranks step
together and the slowest sets the pace), dispatched by an all-gather of the D·T·h hidden states and combined by a
reduce-scatter of their outputs:
    t_moe_layer(T) = local(T; TP/D) + allreduce(T·h; TP/D) + MoE(D·T; expert TP, EP) + AG(D·T·h) + RS(D·T·h)
Source: TensorRT-LLM tensorrt_llm/_torch/modules/fused_moe (CutlassFusedMoE: allgather(x, ...) over the mapping when
  use_dp and parallel_size > 1, reducescatter of the output; modeling_deepseekv3.py _compute_mlp_tp_size: "If using
  attention DP, the MLP also uses DP instead of TP"); SGLang python/sglang/srt/layers/dp_attention.py (dp_gather:
  all_gather_into_tensor over the TP group in max-len padding, i.e. CUDA-graph decode; its sum-len prefill path
  all-reduces a zero-filled buffer instead, not modelled); vLLM --all2all-backend allgather_reducescatter (the default
  of vllm/config/parallel.py, 0.11+: all-gather and reduce-scatter over the DP group).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from math import ceil
from typing import Any

from planner.calibration.kernels import KernelTables
from planner.model.kv_cache import local_kv_heads
from planner.model.params import Linear, layer_kinds
from planner.model.spec import ModelSpec

__all__ = ["StepCost", "StepModel", "build_step_model", "kernel_format"]

ACT_BYTES = 2  # bf16 activations
FP32_BYTES = 4
# Memory-bound passes per token of one fused residual-add + RMSNorm, in units of h·2 bytes: it reads x and the
# residual and writes both. A layer launches two, before attention and before the MLP (vLLM fused_add_rms_norm,
# SGLang/TensorRT-LLM flashinfer fused_add_rmsnorm), each one kernel with its own launch floor.
NORM_PASSES = 4
NORMS_PER_LAYER = 2
# tokens at which the token-proportional part of a layer is evaluated; interpolated linearly in between
_T_GRID = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096,
           6144, 8192, 12288, 16384, 24576, 32768, 65536)  # fmt: skip
_MEMO_LIMIT = 20_000  # cached step pieces per StepModel before the memo starts afresh (~3 MiB)
_SHARED_LIMIT = 2048  # piece memos kept for sharing: an attention and an outside one for each of _build's 1,024 models
_FUSED = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "gate_proj": "gate_up", "up_proj": "gate_up",
          "q_a_proj": "qkv_a", "kv_a_proj_with_mqa": "qkv_a", "shared_experts.gate_proj": "shared_gate_up",
          "shared_experts.up_proj": "shared_gate_up"}  # fmt: skip


def kernel_format(weight_format: str) -> str:
    """The kernel-table format a weight format runs as (weight-only 4-bit formats dequantize in the GEMM)."""
    return {
        "bf16": "bf16",
        "fp16": "bf16",
        "fp32": "bf16",
        "fp8": "fp8",
        "fp8_block": "fp8_block",
        "int8": "fp8",  # W8A8 int8 and fp8 run at the same tensor-core rate on Hopper
        "int4_awq": "int4",
        "int4_gptq": "int4",
        "int4_sym": "int4",
        "nf4": "int4",
        "nvfp4": "nvfp4",
        "mxfp4": "mxfp4",
    }[weight_format]


@dataclass(frozen=True, slots=True)
class Gemm:
    name: str
    n: int
    k: int
    fmt: str


@dataclass(frozen=True, slots=True)
class LayerCost:
    """One kind of layer on one GPU: what scales with all tokens, and the attention that depends on contexts."""

    count: int
    token_grid: tuple[float, ...]  # seconds at each _T_GRID point: GEMMs, MoE, memory-bound kernels, all-reduces
    n_h: int  # local query heads
    n_kv: int  # local KV heads
    head_dim: int
    window: int  # 0 = full attention
    mla: bool
    prefill_only: tuple[Gemm, ...]  # MLA: kv_b expands the latent of every key of a prefill chunk
    decode_only: tuple[Gemm, ...]  # MLA: absorbed W_UK / W_UV batched matmuls of decode tokens
    dcp: int = 1  # decode context parallelism: GPUs striping the layer's cache (MLA latent, GQA KV heads)
    latent: int = 0  # MLA d_c: the width of an absorbed head's output
    moe: bool = False  # a MoE layer (routed experts)


@dataclass(frozen=True, slots=True)
class StepCost:
    """One iteration's time and where it went (seconds, per GPU)."""

    total_s: float
    dense_s: float  # token-proportional part of all layers: GEMMs, MoE, norms, all-reduces
    attention_s: float
    outside_s: float  # embedding, lm_head, sampler, and the host work the GPU does not hide


@dataclass(frozen=True)
class StepModel:
    """A model served on one (GPU, engine, TP) configuration, ready to time iterations quickly."""

    layers: tuple[LayerCost, ...]
    tables: KernelTables
    kv_dtype: str
    lm_head: Gemm
    vocab_local: int
    hidden: int
    fixed_s: float  # per-iteration engine cost (scheduler, input preparation, launches, output processing)
    per_seq_s: float  # per-sequence engine cost each iteration (sampling metadata, detokenization)
    tp: int
    # the engine's host work for an iteration overlaps the GPU's previous one (overlap scheduling): the iteration
    # takes max(GPU, host) instead of their sum
    host_overlap: bool = False
    # CUDA graphs: the largest step (tokens) the engine replays as a graph (0: none), whether steps with prompt
    # tokens replay them, and the host time of a step that runs eagerly (its kernels launched one by one)
    graph_tokens: int = 0
    graph_prefill: bool = False
    eager_s: float = 0.0
    # memo of the repeated, context-dependent pieces: a simulation times thousands of iterations of few shapes
    _memo: dict[tuple[int, int, int], float] = field(default_factory=dict, compare=False, repr=False)
    _steps: dict[tuple[Any, ...], StepCost] = field(default_factory=dict, compare=False, repr=False)
    _outside: dict[tuple[int, int], float] = field(default_factory=dict, compare=False, repr=False)

    def with_kv_dtype(self, kv_dtype: str) -> StepModel:
        """The same model reading its KV cache in `kv_dtype`: the same GEMM, MoE and collective grids, the attention
        memo of that KV dtype (attention times change), the same outside memo."""
        return _sharing(replace(self, kv_dtype=kv_dtype, _steps={}))

    def _dense_s(self, tokens: int) -> float:
        if tokens <= 0:
            return 0.0
        i = bisect_left(_T_GRID, tokens)
        total = 0.0
        if i == 0:
            for layer in self.layers:
                total += layer.count * layer.token_grid[0] * tokens / _T_GRID[0]
            return total
        if i >= len(_T_GRID):
            for layer in self.layers:
                total += layer.count * layer.token_grid[-1] * tokens / _T_GRID[-1]
            return total
        lo, hi = _T_GRID[i - 1], _T_GRID[i]
        w = (tokens - lo) / (hi - lo)
        for layer in self.layers:
            total += layer.count * ((1 - w) * layer.token_grid[i - 1] + w * layer.token_grid[i])
        return total

    def step(self, decode_seqs: int, decode_context: float, prefill: Sequence[tuple[int, int]] = ()) -> StepCost:
        """One iteration: `decode_seqs` sequences decoding at mean context `decode_context`, plus prefill chunks
        given as (new tokens, tokens already cached for that request)."""
        memo = self._memo
        if len(memo) > _MEMO_LIMIT:
            memo.clear()
        whole_key = (decode_seqs, decode_context, *prefill)  # a plan's static screen asks the same steps again
        whole = self._steps.get(whole_key)
        if whole is not None:
            return whole
        if len(self._steps) > _MEMO_LIMIT:
            self._steps.clear()
        cost = self._step(decode_seqs, decode_context, prefill)
        self._steps[whole_key] = cost
        return cost

    def _step(self, decode_seqs: int, decode_context: float, prefill: Sequence[tuple[int, int]]) -> StepCost:
        memo = self._memo
        new_tokens = sum(q for q, _ in prefill)
        tokens = decode_seqs + new_tokens
        dense = self._dense_s(tokens)
        attention = 0.0
        if decode_seqs:
            # contexts are bucketed to 1/64 of themselves (attention time changes by < 1 % within a bucket)
            ctx = max(1, round(decode_context))
            bucket = max(1, ctx >> 6)
            key = (-1, decode_seqs, ctx // bucket * bucket)
            cached_decode = memo.get(key)
            if cached_decode is None:
                cached_decode = memo[key] = self._decode_attention_s(decode_seqs, key[2])
            attention += cached_decode
        for q, cached in prefill:
            key = (-2, q, cached)
            chunk = memo.get(key)
            if chunk is None:
                chunk = memo[key] = sum(
                    layer.count * self._prefill_attention_s(layer, q, cached) for layer in self.layers
                )
            attention += chunk
        if self.gqa_dcp:
            exchange_key = (-3, tokens, 0)
            exchange = memo.get(exchange_key)
            if exchange is None:
                exchange = memo[exchange_key] = self._gqa_dcp_exchange_s(tokens)
            attention += exchange
        sampled = decode_seqs + len(prefill)
        outside_memo = self._outside
        if len(outside_memo) > _MEMO_LIMIT:
            outside_memo.clear()
        outside = outside_memo.get((tokens, sampled))
        if outside is None:
            outside = outside_memo[(tokens, sampled)] = self._outside_s(tokens, sampled)
        # the engine's host work: after the GPU's, or (overlap scheduling) beside it, showing only where longer
        host = self.fixed_s + self.per_seq_s * sampled
        gpu = dense + attention + outside
        if self.eager_s and not self.graphed(tokens, bool(prefill)):
            launches = self.eager_s
            if launches > gpu:  # the GPU waits for the host's launches: the gap shows outside the kernels
                outside += launches - gpu
                gpu = launches
        if self.host_overlap:
            host = host - gpu if host > gpu else 0.0
        return StepCost(gpu + host, dense, attention, outside + host)

    def graphed(self, tokens: int, prefill: bool) -> bool:
        """Whether an iteration of `tokens` tokens (with prompt tokens: `prefill`) replays CUDA graphs.

        Eager iterations take max(their kernels, eager_s = L_dense · dense + L_moe · moe host time per layer):
        launched one by one from Python, short kernels leave the GPU waiting for the host.
        Source: the engine profile's cudagraph_prefill and cudagraph_sizes (vLLM pads a step of up to the largest
          capture size, prompt tokens included; SGLang and TensorRT-LLM replay graphs for decode-only batches only);
          the host time per layer is fitted end to end (engine_terms.json, benchmarks/fit_engine_terms.py)."""
        return tokens <= self.graph_tokens and (self.graph_prefill or not prefill)

    def _decode_attention_s(self, seqs: int, ctx: int) -> float:
        t, total = self.tables, 0.0
        for layer in self.layers:
            c = min(ctx, layer.window) if layer.window else ctx
            if layer.mla and layer.dcp > 1:
                per = self._dcp_decode_s(layer, seqs, c)
            elif layer.dcp > 1:
                per = self._gqa_dcp_decode_s(layer, seqs, c)
            elif layer.mla:
                per = t.mla_s("generation", seqs, c, layer.n_h, self.kv_dtype)
                per += sum(t.gemm_s(seqs, g.n, g.k, g.fmt) for g in layer.decode_only)
            else:
                per = t.generation_attention_s(
                    seqs, c, layer.n_h, layer.n_kv, layer.head_dim, self.kv_dtype, layer.window
                )
            total += layer.count * per
        return total

    def _dcp_decode_s(self, layer: LayerCost, seqs: int, ctx: int) -> float:
        """One MLA layer's decode attention under decode context parallelism over D GPUs: each all-gathers the
        absorbed queries of its D peers (D·n_h heads of d_c + d_R), attends over its 1/D of every context, and the
        partial outputs (D·n_h heads of d_c) are reduce-scattered back to their heads with an all-gather of the fp32
        log-sum-exp that rescales them.
        Source: vllm/v1/attention/backends/mla/common.py @ v0.11 (dcp_world_size: get_dcp_group().all_gather of q),
          vllm/attention/ops/common.py cp_lse_ag_out_rs (all-gather of the LSE, reduce-scatter of the outputs)."""
        t, d = self.tables, layer.dcp
        heads = layer.n_h * d
        return (
            t.mla_s("generation", seqs, -(-ctx // d), heads, self.kv_dtype)
            + sum(t.gemm_s(seqs, g.n, g.k, g.fmt) for g in layer.decode_only)
            + t.allgather_s(seqs * heads * layer.head_dim, d)
            + t.allgather_s(seqs * heads * FP32_BYTES // ACT_BYTES, d)
            + t.reducescatter_s(seqs * heads * layer.latent, d)
        )

    def _gqa_dcp_decode_s(self, layer: LayerCost, seqs: int, ctx: int) -> float:
        """One GQA/MQA layer's decode kernels under decode context parallelism over D GPUs (the D GPUs that hold a
        copy of its KV heads without DCP): attention of the D·n_h gathered query heads over the GPU's 1/D stripe of
        every context, then each new token's attention to its own key and value, merged with the first by
        log-sum-exp (two partial outputs read, one written). The exchange of queries and partial outputs is
        _gqa_dcp_exchange_s, once per step for all its tokens.
        Source: vllm/v1/attention/backends/flash_attn.py @ v0.11.1 _forward_with_dcp (flash_attn_varlen_func over
          the context with the all-gathered queries, causal=False; then over the new tokens, causal; then
          merge_attn_states)."""
        t, d = self.tables, layer.dcp
        own = seqs * layer.n_h * layer.head_dim
        return (
            t.generation_attention_s(seqs, -(-ctx // d), layer.n_h * d, layer.n_kv, layer.head_dim, self.kv_dtype, 0)
            + t.generation_attention_s(seqs, 1, layer.n_h, layer.n_kv, layer.head_dim, self.kv_dtype, 0)
            + t.elementwise_s(3 * own * ACT_BYTES)
        )

    @cached_property
    def gqa_dcp(self) -> bool:
        """Whether some GQA/MQA layer runs under decode context parallelism."""
        return any(layer.dcp > 1 and not layer.mla for layer in self.layers)

    def _gqa_dcp_exchange_s(self, tokens: int) -> float:
        """Decode context parallelism over D GPUs for GQA/MQA layers, in every layer for every token of the step
        (vLLM takes this path for prompt tokens too): the queries all-gathered over the D GPUs (D·n_h heads), the
        fp32 log-sum-exp of the partial outputs all-gathered and the partial outputs reduce-scattered back to their
        heads.
        Source: vllm/v1/attention/backends/flash_attn.py @ v0.11.1 _forward_with_dcp (get_dcp_group().all_gather
          of the query, dim 1), vllm/attention/ops/common.py cp_lse_ag_out_rs."""
        t, total = self.tables, 0.0
        for layer in self.layers:
            if layer.dcp <= 1 or layer.mla:
                continue
            d = layer.dcp
            gathered = tokens * layer.n_h * d
            total += layer.count * (
                t.allgather_s(gathered * layer.head_dim, d)
                + t.allgather_s(gathered * FP32_BYTES // ACT_BYTES, d)
                + t.reducescatter_s(gathered * layer.head_dim, d)
            )
        return total

    def _outside_s(self, tokens: int, sampled: int) -> float:
        """Embedding, final norm, lm_head over the sampled rows, logits gather, sampling, and the engine's step."""
        t = self.tables
        return (
            t.elementwise_s(tokens * self.hidden * ACT_BYTES * 2)  # embedding gather
            + t.elementwise_s(sampled * self.hidden * ACT_BYTES * 2)  # final norm of the sampled rows
            + t.gemm_s(sampled, self.lm_head.n, self.lm_head.k, self.lm_head.fmt)
            + (t.allreduce_s(sampled * self.vocab_local, self.tp) if self.tp > 1 else 0.0)  # logits gather
            + t.elementwise_s(sampled * self.vocab_local * self.tp * FP32_BYTES * 3)  # fp32 softmax and sampling
        )

    def _prefill_attention_s(self, layer: LayerCost, q: int, cached: int) -> float:
        """A chunk of q new tokens after `cached` tokens: the table's causal prompt of q + cached tokens, scaled to
        the (query, key) pairs this chunk computes."""
        t = self.tables
        total = q + cached
        if layer.mla:
            expand = sum(t.gemm_s(total, g.n, g.k, g.fmt) for g in layer.prefill_only)
            full = t.mla_s("context", 1, total, layer.n_h, self.kv_dtype)
        else:
            expand = 0.0
            full = t.context_attention_s(1, total, layer.n_h, layer.n_kv, layer.head_dim, "bf16", layer.window)
        if cached == 0:
            return expand + full
        if layer.mla and layer.dcp > 1:  # the chunk's cached latents live striped over the DCP GPUs: gather them
            expand += t.allgather_s(cached * layer.head_dim, layer.dcp)
        w = layer.window or total
        pairs_all = _pairs(total, w)
        pairs_chunk = pairs_all - _pairs(cached, w)
        return expand + full * pairs_chunk / pairs_all


def _pairs(s: int, window: int) -> int:
    if s <= window:
        return s * (s + 1) // 2
    return window * (window + 1) // 2 + window * (s - window)


def _local(lin: Linear, spec: ModelSpec, tp: int) -> tuple[int, int]:
    """(K, N) of a linear on one GPU: column-parallel splits N, row-parallel K, KV heads n_kv/TP or replicated."""
    if tp == 1 or lin.parallel == "replicated":
        return lin.d_in, lin.d_out
    if lin.parallel == "row":
        return ceil(lin.d_in / tp), lin.d_out
    if lin.parallel == "kv":
        return lin.d_in, local_kv_heads(spec.kv_heads, tp) * spec.resolved_head_dim
    return lin.d_in, ceil(lin.d_out / tp)


def _gemms(linears: Sequence[Linear], spec: ModelSpec, tp: int, fmt: str) -> tuple[Gemm, ...]:
    """The GEMMs an engine launches: linears sharing an input fused (q/k/v, gate/up, q_a/kv_a), experts excluded."""
    fused: dict[str, list[int]] = {}
    out: list[Gemm] = []
    for lin in linears:
        if lin.name.startswith("experts.") or lin.name in ("kv_b_proj",):
            continue
        k, n = _local(lin, spec, tp)
        lin_fmt = fmt if lin.quantizable else "bf16"
        group = _FUSED.get(lin.name)
        if group is None:
            out.append(Gemm(lin.name, n, k, lin_fmt))
        else:
            fused.setdefault(group, [k, 0])[1] += n
    out += [Gemm(name, n, k, fmt) for name, (k, n) in fused.items()]
    return tuple(out)


@dataclass(frozen=True, slots=True)
class ServingShape:
    """What fixes a StepModel: the model, its parallelism and its number formats (hashable, for caching)."""

    spec: ModelSpec
    tp: int
    moe_tp: int
    moe_ep: int
    weight_fmt: str  # kernel format of dense linears
    expert_fmt: str  # kernel format of routed experts
    kv_dtype: str
    fixed_s: float
    per_seq_s: float
    attention_dp: int = 1  # data-parallel attention ranks over the tp GPUs (1 = plain TP)
    qk_norm_kernels: int = 0  # kernels of the q/k RMSNorm per layer (the engine profile's qk_norm_kernels)
    decode_context_parallel: int = 1  # GPUs striping an MLA latent or replicated GQA KV heads by position (vLLM DCP)
    host_overlap: bool = False  # overlap scheduling: the host's per-iteration work runs beside the GPU's
    graph_tokens: int = 0  # the largest step (tokens) replayed as a CUDA graph; 0 = none (enforce_eager)
    graph_prefill: bool = False  # steps with prompt tokens replay graphs too (vLLM's piecewise graphs)
    eager_dense_s: float = 0.0  # host time per dense layer of a step run without graphs (engine_terms.json)
    eager_moe_s: float = 0.0  # and per MoE layer


def build_step_model(shape: ServingShape, tables: KernelTables) -> StepModel:
    return _build(shape, tables)


_SHARED: dict[tuple[Any, ...], dict[Any, float]] = {}


def _shared(signature: tuple[Any, ...]) -> dict[Any, float]:
    memo = _SHARED.get(signature)
    if memo is None:
        if len(_SHARED) > _SHARED_LIMIT:
            _SHARED.clear()
        memo = _SHARED[signature] = {}
    return memo


def _sharing(model: StepModel) -> StepModel:
    """The model with the piece memos of every model whose pieces are the same functions: attention by the tables,
    the KV dtype and each layer's attention shape in order (not its GEMMs: weight formats share it); the outside
    (embedding, lm_head, sampler, engine step) by the tables and those shapes. Values stay exact: a piece is a
    function of its key and these fields only."""
    attention = tuple(
        (c.count, c.n_h, c.n_kv, c.head_dim, c.window, c.mla, c.prefill_only, c.decode_only, c.dcp)
        for c in model.layers
    )
    outside = (model.lm_head, model.vocab_local, model.hidden, model.tp)
    tables = model.tables
    return replace(model, _memo=_shared((tables, model.kv_dtype, attention)), _outside=_shared((tables, *outside)))


@lru_cache(maxsize=1024)  # a sweep of ~350 shapes cycles through the cache; 256 thrashed it
def _build(shape: ServingShape, tables: KernelTables) -> StepModel:
    spec, tp = shape.spec, shape.tp
    h = spec.hidden_size
    layers = []
    for index, (layout, count) in enumerate(layer_kinds(spec)):
        del index
        windowed = [i for i in range(spec.num_layers) if spec.uses_sliding_window(i)]
        # split a layout's layers into full and windowed attention (gpt-oss, Mistral, Gemma-2 alternate windows)
        n_window = min(count, len(windowed)) if spec.sliding_window else 0
        for window, n in ((0, count - n_window), (spec.sliding_window or 0, n_window)):
            if n:
                layers.append(_layer_cost(spec, layout.linears, layout.kind == "moe", n, window, shape, tables))
    tp //= shape.attention_dp  # the lm_head and the logits gather run on one attention rank
    vocab_local = ceil(spec.vocab_size / tp)
    model = StepModel(
        layers=tuple(layers),
        tables=tables,
        kv_dtype=shape.kv_dtype,
        lm_head=Gemm("lm_head", vocab_local, h, "bf16"),
        vocab_local=vocab_local,
        hidden=h,
        fixed_s=shape.fixed_s,
        per_seq_s=shape.per_seq_s,
        tp=tp,
        host_overlap=shape.host_overlap,
        graph_tokens=shape.graph_tokens,
        graph_prefill=shape.graph_prefill,
        eager_s=sum(c.count * (shape.eager_moe_s if c.moe else shape.eager_dense_s) for c in layers),
    )
    return _sharing(model)


def _layer_cost(
    spec: ModelSpec,
    linears: Sequence[Linear],
    moe_layer: bool,
    count: int,
    window: int,
    shape: ServingShape,
    tables: KernelTables,
) -> LayerCost:
    dp = shape.attention_dp
    tp, h = shape.tp // dp, spec.hidden_size  # the attention rank's GPUs (all of them without data-parallel attention)
    gemms = _gemms(linears, spec, tp, shape.weight_fmt)
    n_h = spec.num_heads // tp
    mla = spec.mla
    if mla is not None:
        n_kv, d = 1, mla.kv_lora_rank + mla.qk_rope_head_dim
        kv_b_n = n_h * (mla.qk_nope_head_dim + mla.v_head_dim)
        prefill_only: tuple[Gemm, ...] = (Gemm("kv_b_proj", kv_b_n, mla.kv_lora_rank, shape.weight_fmt),)
        # absorbed decode: q_nope·W_UK (per head d_nope -> d_c) and o·W_UV (d_c -> d_v), as batched matmuls
        decode_only: tuple[Gemm, ...] = (Gemm("q_absorb", n_h * mla.kv_lora_rank, mla.qk_nope_head_dim, "bf16"),
                       Gemm("o_absorb", n_h * mla.v_head_dim, mla.kv_lora_rank, "bf16"))  # fmt: skip
    else:
        n_kv, d = local_kv_heads(spec.kv_heads, tp), spec.resolved_head_dim
        prefill_only = decode_only = ()
    moe = spec.moe if moe_layer else None
    experts = None
    if moe is not None:
        experts = (
            moe.expert_ffn_dim,
            moe.experts_per_token,
            moe.num_experts,
            shape.moe_tp,
            shape.moe_ep,
            shape.expert_fmt,
        )
    ffn_local = ceil((moe.shared_expert_ffn_dim if moe else spec.ffn_dim) / tp)
    qk_norms = shape.qk_norm_kernels if spec.qk_norm else 0
    if dp == 1:
        grid = _token_grid(
            tables, gemms, experts, h, ffn_local, (n_h + n_kv) * d, n_kv * d, tp, qk_norm_kernels=qk_norms
        )
    else:
        # vLLM gathers over its DP group (one GPU of each rank), SGLang and TensorRT-LLM over every GPU (see above)
        group = dp if tables.engine == "vllm" else shape.tp
        grid = _token_grid(tables, gemms, experts, h, ffn_local, (n_h + n_kv) * d, n_kv * d, tp, dp, group, qk_norms)
    return LayerCost(
        count=count,
        token_grid=grid,
        n_h=n_h,
        n_kv=n_kv,
        head_dim=d,
        window=window,
        mla=mla is not None,
        prefill_only=prefill_only,
        decode_only=decode_only,
        dcp=shape.decode_context_parallel if not window else 1,
        latent=mla.kv_lora_rank if mla is not None else 0,
        moe=moe is not None,
    )


@lru_cache(maxsize=4096)  # pipeline stages and the whole model share a layer's grid (it does not depend on the count)
def _token_grid(
    tables: KernelTables,
    gemms: tuple[Gemm, ...],
    experts: tuple[int, int, int, int, int, str] | None,  # (f, k, E, MoE TP, MoE EP, format) of a MoE layer
    h: int,
    ffn_local: int,
    qk_local: int,
    kv_local: int,
    tp: int,
    dp: int = 1,
    moe_group: int = 1,
    qk_norm_kernels: int = 0,
) -> tuple[float, ...]:
    """One layer's token-proportional seconds at each _T_GRID point: GEMMs, MoE, memory-bound kernels, all-reduces.

    With data-parallel attention (dp > 1) `tokens` are one rank's and `tp` its GPUs; the routed experts run over the
    dp ranks' dp·T tokens, after an all-gather and before a reduce-scatter of dp·T·h over `moe_group` GPUs, and the
    attention all-reduce (TP/D > 1) is the layer's only one (the reduce-scatter combines the experts)."""
    grid = []
    for tokens in _T_GRID:
        s = sum(tables.gemm_s(tokens, g.n, g.k, g.fmt) for g in gemms)
        if experts is not None:
            f, k, num_experts, moe_tp, moe_ep, fmt = experts
            s += tables.moe_s(tokens * dp, h, f, k, num_experts, moe_tp, moe_ep, fmt)
            s += tables.elementwise_s(tokens * num_experts * FP32_BYTES * 2)  # router softmax / top-k
        s += NORMS_PER_LAYER * tables.elementwise_s(tokens * h * ACT_BYTES * NORM_PASSES)
        s += tables.elementwise_s(tokens * 3 * ffn_local * ACT_BYTES)  # SiLU(gate)·up: read 2f, write f
        s += tables.elementwise_s(tokens * qk_local * ACT_BYTES * 2)  # RoPE on q and k (read + write)
        if qk_norm_kernels:  # RMSNorm of q and k (Qwen3): q then k, or one kernel for both
            s += qk_norm_kernels * tables.elementwise_s(tokens * qk_local * ACT_BYTES * 2 / qk_norm_kernels)
        s += tables.elementwise_s(tokens * 2 * kv_local * ACT_BYTES)  # write k and v into the paged cache
        if dp > 1 and experts is not None:
            gathered = tokens * dp * h
            s += tables.allgather_s(gathered, moe_group) + tables.reducescatter_s(gathered, moe_group)
            if tp > 1:
                s += tables.allreduce_s(tokens * h, tp)
        elif tp > 1:
            s += 2 * tables.allreduce_s(tokens * h, tp)
        grid.append(s)
    return tuple(grid)
