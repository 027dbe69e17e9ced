"""`memplan plan serving|training` and `memplan sweep`: each maps its options onto one planner call (the request
objects of POST /v1/plans, /v1/plans/training and /v1/estimates/batch). service.cli registers them on its app."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from planner import FieldProblem, SpecError, load_catalog
from planner.batch import BatchRequest, run_batch
from planner.plans.search import plan_serving
from planner.plans.spec import PlanRequest
from planner.plans.training_fit import TrainingFitRequest, fit_training
from service.batch_output import csv_chunks, json_document, ndjson_lines
from service.cli_common import GpuOption, JsonFlag, ModelOption, given, model_ref, read_json, request_data, user_errors
from service.hub import with_hub_items, with_hub_model
from service.render_plans import plan_table, training_fit_table

__all__ = ["plan_app", "sweep"]

plan_app = typer.Typer(help="What to deploy, or what to change so training fits.", no_args_is_help=True)

RequestFile = Annotated[Path | None, typer.Option("--request", help="The request as JSON.", dir_okay=False)]


def _csv_list(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _plan_request(request_file: Path | None, model: str | None, sections: dict[str, dict[str, Any]]) -> PlanRequest:
    data: dict[str, Any] = read_json(request_file) if request_file else {}
    if model is not None:
        data["model"] = model_ref(model)
    for name, options in sections.items():
        if laid := given(options):
            section = data.get(name)
            data[name] = {**section, **laid} if isinstance(section, dict) else laid
    return with_hub_model(PlanRequest.model_validate(data))


@plan_app.command("serving")
def plan_serving_command(
    request_file: RequestFile = None,
    model: ModelOption = None,
    input_tokens: Annotated[int | None, typer.Option(help="Prompt tokens per request.")] = None,
    output_tokens: Annotated[int | None, typer.Option(help="Generated tokens per request.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Users with a request in flight.")] = None,
    rate: Annotated[float | None, typer.Option(help="Requests per second (Poisson).")] = None,
    tokens_per_day: Annotated[float | None, typer.Option(help="Output tokens per day to serve.")] = None,
    ttft_ms: Annotated[float | None, typer.Option(help="TTFT target (ms).")] = None,
    tpot_ms: Annotated[float | None, typer.Option(help="TPOT target (ms).")] = None,
    min_tokens_per_user: Annotated[float | None, typer.Option(help="Output tokens/s each user sees.")] = None,
    percentile: Annotated[str | None, typer.Option(help="p50, p90 or p99 (default p90).")] = None,
    gpus: Annotated[str | None, typer.Option(help="GPU ids allowed, comma-separated.")] = None,
    engines: Annotated[str | None, typer.Option(help="vllm, sglang, trtllm (comma-separated).")] = None,
    max_gpus: Annotated[int | None, typer.Option(help="GPUs of all replicas together.")] = None,
    disaggregated: Annotated[
        bool | None, typer.Option("--disaggregated/--aggregated-only", help="Also plan prefill/decode pools.")
    ] = None,
    max_plans: Annotated[int | None, typer.Option(help="Plans to show.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Serving plans that meet the SLO, cheapest per million output tokens first, and why the rest do not."""
    sections: dict[str, dict[str, Any]] = {
        "workload": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "concurrency": concurrency,
            "request_rate": rate,
            "tokens_per_day": tokens_per_day,
        },
        "slo": {
            "ttft_ms": ttft_ms,
            "tpot_ms": tpot_ms,
            "min_tokens_per_s_per_user": min_tokens_per_user,
            "percentile": percentile,
        },
        "constraints": {
            "gpus": _csv_list(gpus),
            "engines": _csv_list(engines),
            "max_gpus": max_gpus,
            "disaggregated": disaggregated,
        },
    }
    with user_errors():
        request = _plan_request(request_file, model, sections)
        if max_plans is not None:
            request = request.model_copy(update={"max_plans": max_plans})
        result = plan_serving(request, load_catalog())
    typer.echo(result.model_dump_json(indent=2) if as_json else plan_table(result))


@plan_app.command("training")
def plan_training_command(
    request_file: RequestFile = None,
    model: ModelOption = None,
    gpu: GpuOption = None,
    dp: Annotated[int | None, typer.Option("--dp", help="Data-parallel GPUs of the request.")] = None,
    zero: Annotated[int | None, typer.Option(help="ZeRO stage of the request.")] = None,
    seq_len: Annotated[int | None, typer.Option(help="Tokens per row.")] = None,
    micro_batch: Annotated[int | None, typer.Option(help="Rows per micro-batch.")] = None,
    method: Annotated[str | None, typer.Option(help="full, lora, qlora, … (the request's method).")] = None,
    top: Annotated[int | None, typer.Option(help="Options to show.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Every combination of changes that makes a fine-tuning run fit, fastest first."""
    with user_errors():
        data = request_data(request_file, model, gpu, "TrainingFitRequest")
        training = data.get("training", {})
        options = {"data_parallel": dp, "zero_stage": zero, "sequence_length": seq_len, "micro_batch_size": micro_batch}
        laid = given(options)
        if method is not None:
            laid["method"] = {"kind": method}
        if laid and isinstance(training, dict):
            data["training"] = {**training, **laid}
        if top is not None:
            data["search"] = {**data.get("search", {}), "top": top}
        result = fit_training(with_hub_model(TrainingFitRequest.model_validate(data)), load_catalog())
    typer.echo(result.model_dump_json(indent=2) if as_json else training_fit_table(result))


def sweep(
    request_file: Annotated[
        Path, typer.Option("--request", help="A batch as JSON: {'items': [...]} or {'grid': {...}}.", dir_okay=False)
    ],
    output_format: Annotated[str, typer.Option("--format", help="json, ndjson or csv.")] = "csv",
    out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.", dir_okay=False)] = None,
) -> None:
    """Many estimates at once, as POST /v1/estimates/batch answers them (in-process, no server)."""
    with user_errors():
        request = with_hub_items(BatchRequest.model_validate(read_json(request_file)))
        fmt = _format(output_format)
    items = run_batch(request, load_catalog())
    if fmt == "json":
        chunks: Iterator[str] = iter([json_document(items, request.fields) + "\n"])
    elif fmt == "ndjson":
        chunks = ndjson_lines(items, request.fields)
    else:
        chunks = csv_chunks(items, request.fields)
    with user_errors():
        stream = out.open("w", encoding="utf-8") if out else sys.stdout
        try:
            for chunk in chunks:
                stream.write(chunk)
        finally:
            if out:
                stream.close()


FORMATS: dict[str, Literal["json", "ndjson", "csv"]] = {"json": "json", "ndjson": "ndjson", "csv": "csv"}


def _format(value: str) -> Literal["json", "ndjson", "csv"]:
    if value in FORMATS:
        return FORMATS[value]
    raise SpecError([FieldProblem(("--format",), f"'{value}' is not one of json, ndjson, csv")])
