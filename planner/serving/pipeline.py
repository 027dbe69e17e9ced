"""Pipeline-parallel serving: the layers each stage holds, and the time of an iteration with micro-batches in flight.

Memory: a stage holds its contiguous layers (weights and their KV cache), the first stage the embedding and the last
the lm_head; the engine sizes one KV pool per stage and the replica holds what the smallest pool holds.
Time: the engines keep up to PP micro-batches in flight, one per stage, so each sequence gets a token once per
rotation of the pipeline; the rotation lasts as long as the slowest micro-batch's pass through every stage (plus the
stage-boundary sends) or the busiest stage's work over all micro-batches, whichever is longer. With fewer
micro-batches than stages the stages idle (the bubble).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from planner.calibration.kernels import KernelTables
from planner.model.spec import ModelSpec
from planner.serving.load import step_model_for
from planner.serving.scheduler import StepTimer
from planner.serving.spec import ServingSpec
from planner.serving.step_time import StepCost, StepModel

__all__ = [
    "PipelinedStepModel",
    "Stage",
    "micro_batches",
    "p2p_s",
    "pipeline_kv_tokens",
    "pipeline_rotation_s",
    "pipeline_stages",
    "pp_layer_partition",
    "replica_step_model",
    "stage_spec",
]

MIDDLE_STAGE_VOCAB = 1  # a middle stage holds no vocabulary matrix; ModelSpec needs V ≥ 1 (one h-wide row, ~KiB)
P2P_RANKS = 2  # a point-to-point send between adjacent stages, timed as the measured 2-GPU all-reduce (see p2p_s)
_MEMO_LIMIT = 100_000


def pp_layer_partition(num_layers: int, pp: int) -> tuple[int, ...]:
    """Layers per pipeline stage: ⌊L/PP⌋ each, the remainder one apiece to the stages just before the last.

    Source: vllm/distributed/utils.py get_pp_indices (partitions[-i] += 1 for i in 2 … remainder + 1), which spares
      the last stage (it also holds the lm_head and the sampler).
    """
    if not 1 <= pp <= num_layers:
        raise ValueError(f"pipeline_parallel={pp} must be between 1 and the model's {num_layers} layers")
    parts = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        parts[-i] += 1
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class Stage:
    """One pipeline stage: its layers [start, end) and the spec that sizes them."""

    index: int
    start: int
    end: int
    spec: ModelSpec


def stage_spec(spec: ModelSpec, start: int, end: int, first: bool, last: bool) -> ModelSpec:
    """The model as one stage holds it: layers [start, end) keeping each layer's kind (dense or MoE, windowed or
    not), plus one vocabulary matrix on the first stage (the embedding) or the last (the lm_head).

    Assumes: tied embeddings on a single stage (PP = 1) stay as the model has them; with PP > 1 the first and the
      last stage each hold one V·h matrix (vLLM's PPMissingLayer leaves the others empty, and the last stage loads
      its own lm_head even when the checkpoint ties it). The first stage is charged the vLLM sampler warm-up too,
      which only the last stage runs: conservative by rows·V·c bytes.
    """
    if first and last:
        return spec
    layers = range(start, end)
    update: dict[str, object] = {"num_layers": end - start, "tie_embeddings": True}
    if not (first or last):
        update["vocab_size"] = MIDDLE_STAGE_VOCAB
    if spec.moe is not None:
        dense = tuple(i - start for i in layers if not spec.moe.is_moe_layer(i))
        update["moe"] = spec.moe.model_copy(update={"first_dense_layers": 0, "layer_step": 1, "dense_layer_ids": dense})
    if spec.sliding_window is not None and spec.sliding_window_layers is not None:
        update["sliding_window_layers"] = tuple(i - start for i in layers if spec.uses_sliding_window(i))
    return spec.model_copy(update=update)


def pipeline_stages(spec: ModelSpec, pp: int) -> tuple[Stage, ...]:
    """Every stage of a PP-way pipeline with its stage spec (PP = 1: one stage, the model itself)."""
    parts = pp_layer_partition(spec.num_layers, pp)
    stages, start = [], 0
    for i, n in enumerate(parts):
        stages.append(Stage(i, start, start + n, stage_spec(spec, start, start + n, i == 0, i == pp - 1)))
        start += n
    return tuple(stages)


def micro_batches(
    decode_seqs: int, prefill: Sequence[tuple[int, int]], pp: int
) -> list[tuple[int, list[tuple[int, int]]]]:
    """Split one engine iteration into at most PP micro-batches: the decoding sequences spread evenly, the prompt
    chunks in the first (the scheduler admits them into the batch it is building).

    Source: vLLM V1 keeps pipeline_parallel_size batches in flight (vllm/v1/engine/core.py step_with_batch_queue,
      max_concurrent_batches = PP) and never schedules a request that is already in flight, so the running
      requests split across them; TensorRT-LLM's _executor_loop_pp (tensorrt_llm/_torch/pyexecutor/py_executor.py)
      runs num_micro_batches = pp_size.
    """
    units = decode_seqs + (1 if prefill else 0)
    m = max(1, min(pp, units))
    base, extra = divmod(decode_seqs, m)
    out: list[tuple[int, list[tuple[int, int]]]] = []
    for i in range(m):
        out.append((base + (1 if i < extra else 0), list(prefill) if i == 0 else []))
    return out


def pipeline_rotation_s(stage_times: Sequence[Sequence[float]], send_s: Sequence[float]) -> float:
    """One rotation of the pipeline: every micro-batch advances one token.

    Formula: T = max( max_i Σ_s t[s][i] + (PP − 1)·send_i ,  max_s Σ_i t[s][i] ), t[s][i] the time of micro-batch i
      on stage s: the slowest micro-batch's pass through all stages, or the busiest stage's work.
    Source: derived here; the same bound as the GPipe bubble analysis (Huang et al. 2019, arXiv:1811.06965 §2.2):
      with m micro-batches on p balanced stages the stages are busy m/(m + p − 1) of the time in a fill-and-drain,
      and continuously (no bubble) once m ≥ p micro-batches circulate, as an inference pipeline's do.
    """
    hops = len(stage_times) - 1
    path: float = max(sum(col) + hops * send for col, send in zip(zip(*stage_times, strict=True), send_s, strict=True))
    busiest: float = max(map(sum, stage_times))
    return max(path, busiest)


def p2p_s(tables: KernelTables, elements: int) -> float:
    """A stage-boundary send of `elements` bf16 activations (T·h), timed as the measured 2-GPU all-reduce.

    Source: a 2-rank ring all-reduce sends N·2·(2 − 1)/2 = N elements per rank, the payload of one send, plus one
      more latency term; used as an upper bound where no point-to-point latency was measured.
    """
    return tables.allreduce_s(elements, P2P_RANKS)


@dataclass(frozen=True)
class PipelinedStepModel:
    """A replica of PP stages, each a StepModel over its own layers; `step` answers one pipeline rotation."""

    stages: tuple[StepModel, ...]
    hidden: int
    _memo: dict[tuple[int, int, tuple[tuple[int, int], ...]], StepCost] = field(
        default_factory=dict, compare=False, repr=False
    )
    _sends: dict[int, float] = field(default_factory=dict, compare=False, repr=False)  # p2p_s by elements

    @property
    def tables(self) -> KernelTables:
        return self.stages[-1].tables

    @cached_property
    def _twins(self) -> tuple[int, ...]:
        """Each stage's first stage before the last with the same layers, tables and KV dtype (the stage itself for
        the last): stages before the last answer their layers' time only, so twins answer the same."""
        last = len(self.stages) - 1
        twins = []
        for s, st in enumerate(self.stages):
            same = (
                t
                for t in range(s)
                if (self.stages[t].layers, self.stages[t].kv_dtype) == (st.layers, st.kv_dtype)
                and self.stages[t].tables is st.tables
            )
            twins.append(s if s == last else next(same, s))
        return tuple(twins)

    def _stage_costs(self, mbs: list[tuple[int, list[tuple[int, int]]]], ctx: float) -> list[list[StepCost]]:
        """Each stage's StepCost of every micro-batch: a stage model times each distinct micro-batch once (the first
        and the last stage of a uniform model are one model), and a twin takes its earlier stage's row."""
        timed: dict[tuple[int, int, int], StepCost] = {}
        rows: list[list[StepCost]] = []
        for s, twin in enumerate(self._twins):
            if twin < s:
                rows.append(rows[twin])
                continue
            stage, row = self.stages[s], []
            for d, chunks in mbs:  # only the first micro-batch carries chunks
                key = (id(stage), d, len(chunks))
                cost = timed.get(key)
                if cost is None:
                    cost = timed[key] = stage.step(d, ctx, chunks)
                row.append(cost)
            rows.append(row)
        return rows

    def _send_s(self, elements: int) -> float:
        sent = self._sends.get(elements)
        if sent is None:
            if len(self._sends) > _MEMO_LIMIT:
                self._sends.clear()
            sent = self._sends[elements] = p2p_s(self.tables, elements)
        return sent

    def step(self, decode_seqs: int, decode_context: float, prefill: Sequence[tuple[int, int]] = ()) -> StepCost:
        """One rotation: `decode_seqs` sequences at mean context `decode_context` and the prompt chunks, split into
        at most PP micro-batches (micro_batches) and timed by pipeline_rotation_s.

        The decode context is floored to a multiple of 16 tokens (at least 1) before any stage is timed, so a
        rotation is a function of its memo key alone and never of which context asked first."""
        bucket = max(1, round(decode_context)) >> 4 if decode_seqs else 0
        key = (decode_seqs, bucket, tuple(prefill))
        cached = self._memo.get(key)
        if cached is not None:
            return cached
        if len(self._memo) > _MEMO_LIMIT:
            self._memo.clear()
        mbs = micro_batches(decode_seqs, prefill, len(self.stages))
        rows = self._stage_costs(mbs, float(max(1, bucket << 4)) if decode_seqs else 0.0)
        times = [[c.dense_s + c.attention_s for c in row] for row in rows[:-1]]  # the layers only
        times.append([c.total_s for c in rows[-1]])  # the last stage runs the lm_head and the sampler too
        new_tokens = sum(q for q, _ in prefill)  # all in the first micro-batch
        sends = [self._send_s((d + (new_tokens if chunks else 0)) * self.hidden) for d, chunks in mbs]
        total = pipeline_rotation_s(times, sends)
        dense = sum(row[0].dense_s for row in rows)
        attention = sum(row[0].attention_s for row in rows)
        cost = StepCost(total, dense, attention, max(0.0, total - dense - attention))
        self._memo[key] = cost
        return cost


def pipeline_kv_tokens(stage_pool_tokens: Sequence[int]) -> int:
    """Tokens a pipelined replica's KV cache holds: each stage sizes a pool for its own layers from its own free
    memory, and the engine keeps the smallest block count on every rank.

    Source: vllm/v1/core/kv_cache_utils.py get_kv_cache_configs (num_blocks set to the minimum over the ranks).
    """
    return min(stage_pool_tokens)


def replica_step_model(spec: ModelSpec, serving: ServingSpec, gpu_id: str) -> StepTimer:
    """The step timer of one replica: the StepModel of the model at TP (PP = 1), or a pipeline of its stages."""
    pp = serving.pipeline_parallel
    if pp == 1:
        return step_model_for(spec, serving, gpu_id, serving.expert_parallel)
    key = ServingSpec(  # only what the step timer depends on, so one pipeline serves every load and limit
        engine=serving.engine,
        engine_version=serving.engine_version,
        tensor_parallel=serving.tensor_parallel,
        expert_parallel=serving.expert_parallel,
        pipeline_parallel=pp,
        weight_format=serving.weight_format,
        expert_weight_format=serving.expert_weight_format,
        kv_cache_dtype=serving.kv_cache_dtype,
        enforce_eager=serving.enforce_eager,
        cuda_graph_max_batch_size=serving.cuda_graph_max_batch_size,
    )
    return _pipelined(spec, key, gpu_id)


@lru_cache(maxsize=256)
def _pipelined(spec: ModelSpec, serving: ServingSpec, gpu_id: str) -> PipelinedStepModel:
    stages = pipeline_stages(spec, serving.pipeline_parallel)
    models = tuple(step_model_for(st.spec, serving, gpu_id, serving.expert_parallel) for st in stages)
    return PipelinedStepModel(models, spec.hidden_size)
