"""The `memplan` command line. Each command maps its options onto one planner call and the API's request objects."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import BaseModel, ValidationError

from planner import (
    DType,
    Engine,
    FieldProblem,
    InferenceRequest,
    SpecError,
    WeightFormat,
    estimate_inference,
    load_catalog,
)
from planner.describe import describe_import
from service.app import run_server
from service.render import estimate_table, gpus_table, import_table, models_table
from service.settings import Settings

__all__ = ["app"]

app = typer.Typer(
    name="memplan",
    help="Will this LLM fit on this GPU, how many sequences, how fast.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
estimate_app = typer.Typer(help="Estimate memory, capacity and speed for one configuration.", no_args_is_help=True)
app.add_typer(estimate_app, name="estimate")

USER_ERROR_EXIT = 2  # as for a usage error: the input, not the program, is wrong
DEFAULT_HOST: str = Settings.model_fields["host"].default
DEFAULT_PORT: int = Settings.model_fields["port"].default

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (the HTTP API's response body) instead of a table.")]


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(USER_ERROR_EXIT)


def _lines(problems: Sequence[tuple[Sequence[str | int], str]]) -> str:
    return "\n".join(f"  {'.'.join(map(str, loc)) or '(input)'}: {msg}" for loc, msg in problems)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn bad input (unreadable files, invalid JSON, specs the planner rejects) into a message and exit 2."""
    try:
        yield
    except ValidationError as exc:
        _fail("invalid input\n" + _lines([(e["loc"], e["msg"]) for e in exc.errors(include_url=False)]))
    except SpecError as exc:
        _fail("invalid input\n" + _lines([(p.loc, p.msg) for p in exc.problems]))
    except json.JSONDecodeError as exc:
        _fail(f"not valid JSON: {exc}")
    except OSError as exc:
        _fail(str(exc))


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _dump_all(items: Sequence[BaseModel]) -> str:
    return json.dumps([item.model_dump(mode="json") for item in items], indent=2, ensure_ascii=False)


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="MEMPLAN_HOST", help="Interface to bind.")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(envvar="MEMPLAN_PORT", help="TCP port to bind.")] = DEFAULT_PORT,
) -> None:
    """Serve the HTTP API (interactive docs at /docs, offline)."""
    with _user_errors():
        settings = Settings(host=host, port=port)
    run_server(settings)


@app.command()
def models(as_json: JsonFlag = False) -> None:
    """List catalog models: attention, parameters, KV cache per token."""
    catalog = load_catalog()
    typer.echo(_dump_all(catalog.models) if as_json else models_table(catalog.models))


@app.command()
def gpus(as_json: JsonFlag = False) -> None:
    """List catalog GPUs: memory, bandwidth, peak FLOP/s, interconnect."""
    catalog = load_catalog()
    typer.echo(_dump_all(catalog.gpus) if as_json else gpus_table(catalog.gpus))


@app.command("import")
def import_config(
    config_json: Annotated[Path, typer.Argument(help="A Hugging Face config.json file.", dir_okay=False)],
    as_json: JsonFlag = False,
) -> None:
    """Read a config.json: normalized spec, parameter counts, KV cache bytes per token."""
    with _user_errors():
        description = describe_import(_read_json(config_json))
    typer.echo(description.model_dump_json(indent=2) if as_json else import_table(description))


def _model_ref(model: str) -> Any:
    """A catalog id stays a string; a path to a .json file becomes its contents (a config.json or a ModelSpec)."""
    path = Path(model)
    return _read_json(path) if path.suffix == ".json" or path.is_file() else model


def _inference_request(
    request_file: Path | None, model: str | None, gpu: str | None, serving: dict[str, Any]
) -> InferenceRequest:
    """The request file (if any) with the flags that were given laid over it."""
    data = _read_json(request_file) if request_file else {}
    if not isinstance(data, dict):
        raise SpecError([FieldProblem((), "the request file must hold a JSON object (an InferenceRequest)")])
    if model is not None:
        data["model"] = _model_ref(model)
    if "model" not in data:
        raise SpecError([FieldProblem(("model",), "give --model (catalog id or config.json path) or --request")])
    if gpu is not None:
        data["gpu"] = gpu
    given = {key: value for key, value in serving.items() if value is not None}
    if given:
        base = data.get("serving")
        data["serving"] = {**base, **given} if isinstance(base, dict) else given
    return InferenceRequest.model_validate(data)


@estimate_app.command()
def inference(
    request_file: Annotated[
        Path | None,
        typer.Option(
            "--request", help="An InferenceRequest as JSON (as POSTed to /v1/estimates/inference).", dir_okay=False
        ),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Catalog model id (llama-3-8b) or path to a config.json.")] = None,
    gpu: Annotated[str | None, typer.Option(help="Catalog GPU id (default: h100-sxm).")] = None,
    prompt_tokens: Annotated[int | None, typer.Option(help="Prompt length per sequence.")] = None,
    output_tokens: Annotated[int | None, typer.Option(help="Generated tokens per sequence.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Sequences decoding at once.")] = None,
    tp: Annotated[int | None, typer.Option("--tp", help="Tensor-parallel GPUs per replica.")] = None,
    weight_format: Annotated[WeightFormat | None, typer.Option(help="Storage format of the linear weights.")] = None,
    kv_cache_dtype: Annotated[DType | None, typer.Option(help="KV cache element type.")] = None,
    engine: Annotated[Engine | None, typer.Option(help="Serving engine (decides MLA layout, KV pages).")] = None,
    gpu_memory_utilization: Annotated[
        float | None, typer.Option(help="Share of device memory the engine may use (0, 1].")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Serving: memory per GPU, fit, KV capacity, prefill and decode speed. Flags override --request."""
    serving = {
        "prompt_tokens": prompt_tokens,
        "output_tokens": output_tokens,
        "concurrency": concurrency,
        "tensor_parallel": tp,
        "weight_format": weight_format,
        "kv_cache_dtype": kv_cache_dtype,
        "engine": engine,
        "gpu_memory_utilization": gpu_memory_utilization,
    }
    with _user_errors():
        estimate = estimate_inference(_inference_request(request_file, model, gpu, serving), load_catalog())
    typer.echo(estimate.model_dump_json(indent=2) if as_json else estimate_table(estimate))
