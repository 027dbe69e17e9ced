"""Training "make it fit": every combination of memory-saving changes on the same GPUs, the ones that fit ranked by
tokens/s — not one change at a time.

The search varies the method (kept, LoRA, QLoRA at some ranks), checkpointing, the optimizer (AdamW or 8-bit), the
split of the GPUs into TP × PP × DP, the ZeRO stage, CPU offload of the optimizer, and the micro-batch with the
gradient accumulation that keeps the global batch. States (weights, gradients, optimizer) do not depend on the
micro-batch or checkpointing, so a layout whose optimizer step alone exceeds the budget is pruned before its
activations are sized; within a layout the largest micro-batch that fits is found by bisection (the peak grows
with the micro-batch).
"""

from __future__ import annotations

from collections import Counter
from itertools import product
from math import prod
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from planner._base import FrozenSpec
from planner.catalog import Catalog
from planner.errors import SpecError
from planner.model.spec import ModelSpec
from planner.refs import resolve_gpu, resolve_model
from planner.training.estimate import TrainingRequest, training_throughput
from planner.training.memory import training_phases
from planner.training.parallel import check_training_parallel
from planner.training.peft_params import TrainableParams, trainable_params
from planner.training.spec import Checkpointing, QLoRASpec, TrainingSpec

__all__ = ["FitOption", "FitSearchSpec", "TrainingFitRequest", "TrainingFitResult", "fit_training"]

MAX_COMBINATIONS = 20_000  # about 20 s of memory evaluations; the default search is 2,160
Degrees = Annotated[tuple[Annotated[int, Field(ge=1, le=1024)], ...], Field(min_length=1, max_length=16)]


class FitSearchSpec(FrozenSpec):
    """What the search may change."""

    methods: Annotated[tuple[Literal["keep", "lora", "qlora"], ...], Field(min_length=1, max_length=3)] = (
        "keep",
        "lora",
        "qlora",
    )
    lora_ranks: Annotated[tuple[Annotated[int, Field(ge=1, le=4096)], ...], Field(min_length=1, max_length=8)] = (
        16,
        64,
    )
    checkpointing: Annotated[tuple[Checkpointing, ...], Field(min_length=1, max_length=3)] = tuple(Checkpointing)
    optimizers: Annotated[tuple[Literal["adamw", "adamw_8bit"], ...], Field(min_length=1, max_length=2)] = (
        "adamw",
        "adamw_8bit",
    )
    zero_stages: Annotated[tuple[Literal[0, 1, 2, 3], ...], Field(min_length=1, max_length=4)] = (0, 1, 2, 3)
    tensor_parallel: Degrees = (1, 2, 4, 8)
    pipeline_parallel: Degrees = (1, 2, 4)
    offload_optimizer: Annotated[tuple[bool, ...], Field(min_length=1, max_length=2)] = (False, True)
    micro_batches: Annotated[tuple[Annotated[int, Field(ge=1, le=4096)], ...], Field(min_length=1, max_length=12)] = (
        1,
        2,
        4,
        8,
        16,
    )
    num_gpus: Annotated[int, Field(ge=1, le=65536)] | None = Field(
        default=None, description="GPUs to split into TP × PP × DP; null = the request's."
    )
    gpus_per_node: Annotated[int, Field(ge=1, le=64)] = Field(default=8, description="TP stays within a node.")
    top: Annotated[int, Field(ge=1, le=100)] = 10

    @model_validator(mode="after")
    def _bounded(self) -> FitSearchSpec:
        methods = ("keep" in self.methods) + sum(m != "keep" for m in self.methods) * len(self.lora_ranks)
        combinations = prod(
            (methods, len(self.checkpointing), len(self.optimizers), len(self.zero_stages), len(self.tensor_parallel),
             len(self.pipeline_parallel), len(self.offload_optimizer))
        )  # fmt: skip
        if combinations > MAX_COMBINATIONS:
            raise ValueError(f"the search spans {combinations:,} combinations; at most {MAX_COMBINATIONS:,}")
        return self


class TrainingFitRequest(TrainingRequest):
    """A training request, and what the search may change to make it fit."""

    search: FitSearchSpec = FitSearchSpec()


class FitOption(FrozenSpec):
    """A configuration that fits, and how fast it trains."""

    rank: int
    changes: dict[str, Any] = Field(description="The fields of `training` that differ from the request's.")
    changes_method: bool = Field(description="LoRA/QLoRA instead of what the request trains.")
    training: TrainingSpec
    num_gpus: int
    peak_bytes: int
    peak_phase: str
    budget_bytes: int
    tokens_per_s: float
    mfu: float
    step_time_s: float


class TrainingFitResult(FrozenSpec):
    """The request's own verdict, then every fitting combination found, fastest first."""

    fits: bool = Field(description="Whether the request fits as it is.")
    peak_bytes: int
    budget_bytes: int
    options: tuple[FitOption, ...] = Field(description="Fitting configurations by tokens/s, at most search.top.")
    best_keeping_method: FitOption | None = Field(description="The fastest option that trains what the request does.")
    searched: int = Field(description="Combinations considered (layouts × methods × optimizers × checkpointing).")
    evaluated: int = Field(description="Memory evaluations run (training_phases).")
    fitting: int
    rejected: dict[str, int] = Field(description="Combinations by reason: does_not_fit, not_divisible, invalid.")


def _methods(t: TrainingSpec, search: FitSearchSpec) -> list[tuple[dict[str, Any], bool]]:
    out: list[tuple[dict[str, Any], bool]] = []
    for choice in search.methods:
        if choice == "keep":
            out.append((t.method.model_dump(), False))
        else:
            for rank in search.lora_ranks:
                method = {"kind": choice, "rank": rank, "target_modules": "all-linear"}
                if method != {k: v for k, v in t.method.model_dump().items() if k in method}:
                    out.append((method, t.method.kind not in ("lora", "qlora")))
    return out


def _layouts(gpus: int, search: FitSearchSpec) -> list[tuple[int, int, int]]:
    out = []
    for tp, pp in product(search.tensor_parallel, search.pipeline_parallel):
        if tp <= search.gpus_per_node and gpus % (tp * pp) == 0:
            out.append((tp, pp, gpus // (tp * pp)))
    return out


def _diff(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in new.items() if base.get(k) != v}  # both in JSON form


class _Evaluator:
    """Counts and caches the memory evaluations of one search."""

    def __init__(self, spec: ModelSpec, budget: int) -> None:
        self.spec, self.budget, self.evaluated = spec, budget, 0
        self.trainable: dict[str, TrainableParams] = {}

    def params(self, t: TrainingSpec) -> TrainableParams:
        key = t.method.model_dump_json()
        if key not in self.trainable:
            self.trainable[key] = trainable_params(self.spec, t.method)
        return self.trainable[key]

    def peak(self, t: TrainingSpec) -> tuple[int, str]:
        self.evaluated += 1
        phases = training_phases(self.spec, t, self.params(t))
        return phases.peak.total_bytes, phases.peak_phase


def fit_training(request: TrainingFitRequest, catalog: Catalog) -> TrainingFitResult:
    """Search the combinations (module docstring) and rank the fitting ones by tokens/s."""
    model = resolve_model(request.model, catalog)
    gpu = resolve_gpu(request.gpu, catalog)
    spec, t, search = model.spec, request.training, request.search
    budget = int(t.gpu_memory_utilization * gpu.memory_bytes) - t.cuda_context_bytes
    ev = _Evaluator(spec, budget)
    check_training_parallel(spec, t)
    own_peak, _ = ev.peak(t)
    gpus = search.num_gpus or t.num_gpus
    global_rows = t.micro_batch_size * t.gradient_accumulation_steps * t.data_parallel * t.context_parallel
    base = t.model_dump(mode="json")
    found: list[FitOption] = []
    rejected: Counter[str] = Counter()
    searched = 0
    for (method, changes_method), optimizer, (tp, pp, dp), zero, offload in product(
        _methods(t, search), search.optimizers, _layouts(gpus, search), search.zero_stages, search.offload_optimizer
    ):
        searched += len(search.checkpointing)
        if dp == 1 and zero > 0:
            rejected["invalid"] += len(search.checkpointing)  # ZeRO shards over data-parallel ranks only
            continue
        state = _spec(base, method, optimizer, tp, pp, dp, zero, offload, search.micro_batches[0], global_rows)
        if state is None:
            rejected["invalid"] += len(search.checkpointing)
            continue
        try:
            check_training_parallel(spec, state)
        except SpecError:
            rejected["not_divisible"] += len(search.checkpointing)
            continue
        if _optimizer_step_bytes(ev, state) > budget:  # states alone exceed the budget: no micro-batch helps
            rejected["does_not_fit"] += len(search.checkpointing)
            continue
        for ckpt in search.checkpointing:
            option = _largest_fitting(ev, base, state.model_copy(update={"gradient_checkpointing": ckpt}), search,
                                      global_rows, dp)  # fmt: skip
            if option is None:
                rejected["does_not_fit"] += 1
                continue
            fitted, peak, phase = option
            tput = training_throughput(spec, fitted, gpu, request.efficiency, ev.params(fitted))
            found.append(
                FitOption(
                    rank=0,
                    changes=_diff(base, fitted.model_dump(mode="json")),
                    changes_method=changes_method,
                    training=fitted,
                    num_gpus=fitted.num_gpus,
                    peak_bytes=peak,
                    peak_phase=phase,
                    budget_bytes=budget,
                    tokens_per_s=tput.tokens_per_s,
                    mfu=tput.mfu,
                    step_time_s=tput.step_time_s,
                )
            )
    # ties: LoRA before QLoRA (the NF4 dequantization QLoRA adds to every step is not in the throughput model), then
    # the fewest changes and the lowest peak
    found.sort(key=lambda o: (-o.tokens_per_s, isinstance(o.training.method, QLoRASpec), len(o.changes), o.peak_bytes))
    ranked = [o.model_copy(update={"rank": i + 1}) for i, o in enumerate(_distinct(found))]
    keeping = next((o for o in ranked if not o.changes_method), None)
    return TrainingFitResult(
        fits=own_peak <= budget,
        peak_bytes=own_peak,
        budget_bytes=budget,
        options=tuple(ranked[: search.top]),
        best_keeping_method=keeping,
        searched=searched,
        evaluated=ev.evaluated,
        fitting=len(found),
        rejected=dict(rejected),
    )


def _distinct(options: list[FitOption]) -> list[FitOption]:
    """One option per (method, layout, checkpointing, micro-batch, tokens/s): the optimizer or ZeRO stage that changes
    nothing but the peak is kept only in its fewest-changes variant (the sort order)."""
    seen, out = set(), []
    for o in options:
        t = o.training
        rank = getattr(t.method, "rank", 0)
        key = (t.method.kind, rank, t.tensor_parallel, t.pipeline_parallel, t.data_parallel,
               t.gradient_checkpointing, t.micro_batch_size, round(o.tokens_per_s, 1))  # fmt: skip
        if key not in seen:
            seen.add(key)
            out.append(o)
    return out


def _spec(
    base: dict[str, Any],
    method: dict[str, Any],
    optimizer: str,
    tp: int,
    pp: int,
    dp: int,
    zero: int,
    offload: bool,
    micro_batch: int,
    global_rows: int,
) -> TrainingSpec | None:
    cp = base["context_parallel"]
    accumulation = max(1, global_rows // (micro_batch * dp * cp))
    fields = {
        **base,
        "method": method,
        "optimizer": {**base["optimizer"], "kind": optimizer},
        "tensor_parallel": tp,
        "pipeline_parallel": pp,
        "data_parallel": dp,
        "zero_stage": zero,
        "offload_optimizer": offload,
        "micro_batch_size": micro_batch,
        "gradient_accumulation_steps": accumulation,
    }
    try:
        return TrainingSpec.model_validate(fields)
    except ValidationError:
        return None


def _optimizer_step_bytes(ev: _Evaluator, t: TrainingSpec) -> int:
    ev.evaluated += 1
    return training_phases(ev.spec, t, ev.params(t)).phases["optimizer_step"].total_bytes


def _largest_fitting(
    ev: _Evaluator, base: dict[str, Any], t: TrainingSpec, search: FitSearchSpec, global_rows: int, dp: int
) -> tuple[TrainingSpec, int, str] | None:
    """The largest micro-batch of the search that fits with the accumulation keeping the global batch (bisection:
    the peak grows with the micro-batch), as (spec, peak, phase)."""
    cp = t.context_parallel
    sizes = sorted(b for b in search.micro_batches if global_rows % (b * dp * cp) == 0) or [1]
    best: tuple[TrainingSpec, int, str] | None = None
    lo, hi = 0, len(sizes) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        b = sizes[mid]
        trial = t.model_copy(
            update={"micro_batch_size": b, "gradient_accumulation_steps": max(1, global_rows // (b * dp * cp))}
        )
        peak, phase = ev.peak(trial)
        if peak <= ev.budget:
            best, lo = (trial, peak, phase), mid + 1
        else:
            hi = mid - 1
    return best
