"""What an estimate answers over HTTP: the planner's estimate with a summary on top and readable figures beside the
exact ones (?detail=full, the default), the summary and key numbers alone (?detail=summary), or a CSV table of
the memory terms (serving) or of every phase's terms (training) (?format=csv or Accept: text/csv).

The planner stays integer bytes and seconds; everything readable is added here (service.readable).
"""

from __future__ import annotations

import csv
import io
from typing import Any, Literal

from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, create_model

from planner import (
    GpuSpec,
    InferenceEstimate,
    KVCapacity,
    MemoryBreakdown,
    ParamCounts,
    ResolvedModel,
    SizeSpec,
    TrainingEstimate,
    TrainingThroughput,
)
from planner.calibration.residual import CalibratedLatency
from planner.serving.load import LoadEstimate
from planner.serving.throughput import DecodeEstimate, PrefillEstimate
from planner.training.estimate import Suggestion
from service.readable import GIB, readable_json, readable_model, round_figure

__all__ = [
    "CSV_MEDIA_TYPE",
    "Detail",
    "InferenceAnswer",
    "InferenceBrief",
    "InferenceSummary",
    "OutputFormat",
    "TrainingAnswer",
    "TrainingBrief",
    "TrainingSummary",
    "inference_response",
    "training_response",
    "wants_csv",
]

CSV_MEDIA_TYPE = "text/csv"
Detail = Literal["summary", "full"]
OutputFormat = Literal["json", "csv"]
MS_PER_S = 1000


class _Display(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InferenceSummary(_Display):
    """The answer in one glance: GiB, ms, rounded."""

    model: str = Field(description="Catalog id, spec name or family (with '(assumed)' for a model given by size).")
    exact: bool = Field(description="False for an assumed architecture or an approximate import.")
    fits: bool
    gib_per_gpu: float = Field(description="memory.total_bytes in GiB: what the engine allocates on each GPU.")
    gpus: int = Field(description="GPUs of one replica.")
    max_concurrent_sequences: int = Field(description="At the request's context (prompt + output).")
    max_context_tokens: int = Field(description="Per sequence at the request's concurrency.")
    ttft_ms: float = Field(description="Time to first token: load p50 when a load was given, else one prompt alone.")
    tpot_ms: float = Field(description="Time per output token: load p50 when a load was given, else one decode step.")
    output_tokens_per_s: float = Field(description="Generated tokens per second of the replica.")
    latency_from: Literal["load", "static"] = Field(
        description="'load': p50 of the simulated engine loop under the request's load; 'static': single batch."
    )


class TrainingSummary(_Display):
    """The answer in one glance: GiB, ms, rounded."""

    model: str
    exact: bool
    fits: bool
    gib_per_gpu: float = Field(description="The peak phase's total in GiB, per GPU.")
    peak_phase: str
    gpus: int
    max_micro_batch_size: int
    trainable_params: int
    tokens_per_s: float
    mfu_pct: float
    step_time_ms: float


class ModelBrief(_Display):
    """The model without its spec: ids, exactness, parameter counts."""

    catalog_id: str | None
    name: str | None
    family: str
    exact: bool
    assumed_from: SizeSpec | None
    params: ParamCounts


class GpuBrief(_Display):
    """The GPU without its datasheet."""

    id: str
    name: str
    memory_bytes: int


class InferenceBrief(_Display):
    """?detail=summary: the summary and the key numbers; no model spec, GPU datasheet or engine defaults."""

    summary: InferenceSummary
    model: ModelBrief
    gpu: GpuBrief
    num_gpus: int
    engine: str = Field(description="Engine profile id (planner/catalog/engines.json).")
    memory: MemoryBreakdown
    fits: bool
    fit_reasons: tuple[str, ...]
    capacity: KVCapacity
    prefill: PrefillEstimate
    decode: DecodeEstimate
    load: LoadEstimate | None
    calibrated: CalibratedLatency | None = Field(
        default=None, description="The load's means with the learned residual, where it ships (planner/calibration)."
    )
    warnings: tuple[str, ...]


class TrainingBrief(_Display):
    """?detail=summary: the summary and the key numbers; no model spec or GPU datasheet."""

    summary: TrainingSummary
    model: ModelBrief
    gpu: GpuBrief
    num_gpus: int
    memory: MemoryBreakdown
    peak_phase: str
    phases: dict[str, MemoryBreakdown]
    fits: bool
    fit_reasons: tuple[str, ...]
    max_micro_batch_size: int
    suggestions: tuple[Suggestion, ...]
    throughput: TrainingThroughput
    warnings: tuple[str, ...]


def _answer_model(name: str, estimate: type[BaseModel], summary: type[BaseModel]) -> type[BaseModel]:
    doc = (
        f"The planner's {estimate.__name__} with `summary` on top and, after each byte, second and ratio figure, its "
        "readable sibling (`*_gib`, `*_ms`, `*_pct`, rounded). Every planner field keeps its exact value."
    )
    return create_model(name, __base__=readable_model(estimate), __doc__=doc, summary=(summary, ...))


InferenceAnswer = _answer_model("InferenceAnswer", InferenceEstimate, InferenceSummary)
TrainingAnswer = _answer_model("TrainingAnswer", TrainingEstimate, TrainingSummary)
InferenceBriefReadable = readable_model(InferenceBrief)
TrainingBriefReadable = readable_model(TrainingBrief)


def _label(model: ResolvedModel) -> str:
    name = model.catalog_id or model.spec.name or model.spec.family
    return f"{model.assumed_from.size} {name} (assumed)" if model.assumed_from else name


def _gib(nbytes: int) -> float:
    return round_figure(nbytes / GIB)


def _ms(seconds: float) -> float:
    return round_figure(seconds * MS_PER_S)


def inference_summary(e: InferenceEstimate) -> InferenceSummary:
    """The summary block: load p50 latencies when a load was simulated, else the static single-batch ones."""
    if e.load is not None:
        ttft, tpot = round_figure(e.load.ttft.p50_ms), round_figure(e.load.tpot.p50_ms)
        rate, source = e.load.output_tokens_per_s, "load"
    else:
        ttft, tpot = _ms(e.prefill.ttft_s), _ms(e.decode.tpot_s)
        rate, source = e.decode.tokens_per_s, "static"
    return InferenceSummary(
        model=_label(e.model),
        exact=e.model.exact,
        fits=e.fits,
        gib_per_gpu=_gib(e.memory.total_bytes),
        gpus=e.num_gpus,
        max_concurrent_sequences=e.capacity.max_concurrent_sequences,
        max_context_tokens=e.capacity.max_context_tokens,
        ttft_ms=ttft,
        tpot_ms=tpot,
        output_tokens_per_s=round(rate, 1),
        latency_from=source,
    )


def training_summary(e: TrainingEstimate) -> TrainingSummary:
    th = e.throughput
    return TrainingSummary(
        model=_label(e.model),
        exact=e.model.exact,
        fits=e.fits,
        gib_per_gpu=_gib(e.memory.total_bytes),
        peak_phase=e.peak_phase,
        gpus=e.num_gpus,
        max_micro_batch_size=e.max_micro_batch_size,
        trainable_params=e.trainable_params.trainable,
        tokens_per_s=round(th.tokens_per_s, 1),
        mfu_pct=round_figure(th.mfu * 100),
        step_time_ms=_ms(th.step_time_s),
    )


def _model_brief(model: ResolvedModel) -> ModelBrief:
    s = model.spec
    return ModelBrief(
        catalog_id=model.catalog_id,
        name=s.name,
        family=s.family,
        exact=model.exact,
        assumed_from=model.assumed_from,
        params=model.params,
    )


def _gpu_brief(gpu: GpuSpec) -> GpuBrief:
    return GpuBrief(id=gpu.id, name=gpu.name, memory_bytes=gpu.memory_bytes)


def inference_brief(e: InferenceEstimate, summary: InferenceSummary) -> InferenceBrief:
    return InferenceBrief(
        summary=summary,
        model=_model_brief(e.model),
        gpu=_gpu_brief(e.gpu),
        num_gpus=e.num_gpus,
        engine=e.engine.profile,
        memory=e.memory,
        fits=e.fits,
        fit_reasons=e.fit_reasons,
        capacity=e.capacity,
        prefill=e.prefill,
        decode=e.decode,
        load=e.load,
        calibrated=e.calibrated,
        warnings=e.warnings,
    )


def training_brief(e: TrainingEstimate, summary: TrainingSummary) -> TrainingBrief:
    return TrainingBrief(
        summary=summary,
        model=_model_brief(e.model),
        gpu=_gpu_brief(e.gpu),
        num_gpus=e.num_gpus,
        memory=e.memory,
        peak_phase=e.peak_phase,
        phases=e.phases,
        fits=e.fits,
        fit_reasons=e.fit_reasons,
        max_micro_batch_size=e.max_micro_batch_size,
        suggestions=e.suggestions,
        throughput=e.throughput,
        warnings=e.warnings,
    )


def wants_csv(output_format: OutputFormat | None, accept: str | None) -> bool:
    """?format wins; otherwise an Accept header that names text/csv (and not JSON before it)."""
    if output_format is not None:
        return output_format == "csv"
    if not accept or CSV_MEDIA_TYPE not in accept:
        return False
    json_at = accept.find("application/json")
    return json_at < 0 or accept.find(CSV_MEDIA_TYPE) < json_at


def _csv(header: tuple[str, ...], rows: list[tuple[Any, ...]], filename: str, headers: dict[str, str]) -> Response:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    disposition = {"Content-Disposition": f'inline; filename="{filename}"'}
    return Response(buffer.getvalue(), media_type=CSV_MEDIA_TYPE, headers={**headers, **disposition})


def _json(summary: BaseModel, body: BaseModel, headers: dict[str, str]) -> JSONResponse:
    data = body.model_dump(mode="json", by_alias=True)
    data.pop("summary", None)
    return JSONResponse({"summary": summary.model_dump(mode="json"), **readable_json(data)}, headers=headers)


def inference_response(e: InferenceEstimate, detail: Detail, as_csv: bool, headers: dict[str, str]) -> Response:
    """The HTTP answer to a serving estimate in the asked detail and format."""
    if as_csv:
        rows = [(t.name, t.bytes, _gib(t.bytes), t.formula, t.detail, t.source) for t in e.memory.terms]
        rows.append(("total", e.memory.total_bytes, _gib(e.memory.total_bytes), "Σ terms", "", ""))
        return _csv(("term", "bytes", "gib", "formula", "detail", "source"), rows, "memory.csv", headers)
    summary = inference_summary(e)
    return _json(summary, inference_brief(e, summary) if detail == "summary" else e, headers)


def training_response(e: TrainingEstimate, detail: Detail, as_csv: bool, headers: dict[str, str]) -> Response:
    """The HTTP answer to a training estimate in the asked detail and format."""
    if as_csv:
        rows: list[tuple[Any, ...]] = []
        for phase, breakdown in e.phases.items():
            peak = "yes" if phase == e.peak_phase else ""
            rows += [(phase, t.name, t.bytes, _gib(t.bytes), peak, t.formula, t.source) for t in breakdown.terms]
            rows.append((phase, "total", breakdown.total_bytes, _gib(breakdown.total_bytes), peak, "Σ terms", ""))
        return _csv(("phase", "term", "bytes", "gib", "peak", "formula", "source"), rows, "phases.csv", headers)
    summary = training_summary(e)
    return _json(summary, training_brief(e, summary) if detail == "summary" else e, headers)
