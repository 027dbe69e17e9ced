"""The `memplan` command line. Each command maps its options onto one planner call and the API's request objects."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, get_args

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
from planner.model.describe import describe_import
from planner.probe import ProbeRequest, ProbeResult
from planner.training.estimate import TrainingRequest, estimate_training
from planner.training.spec import AttentionImpl, Checkpointing, OptimizerSpec, Precision, TrainingSpec
from service.app import InsecureBindError, run_server
from service.probes.admission import admit
from service.probes.child import describe_failure, load_runner
from service.render import estimate_table, gpus_table, import_table, models_table, probe_table, training_table
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
    """Serve the HTTP API (interactive docs at /docs, offline). Beyond loopback it needs MEMPLAN_API_KEY."""
    with _user_errors():
        settings = Settings(host=host, port=port)
    try:
        run_server(settings)
    except InsecureBindError as exc:
        _fail(str(exc))


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


def _given(options: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in options.items() if value is not None}


def _overlay(base: Any, given: dict[str, Any]) -> Any:
    """A request-file section with the given flags laid over it (the section itself when no flag was given)."""
    if not given:
        return base
    return {**base, **given} if isinstance(base, dict) else given


def _request_data(request_file: Path | None, model: str | None, gpu: str | None, kind: str) -> dict[str, Any]:
    """The request file (if any) as a dict, with --model and --gpu laid over it."""
    data = _read_json(request_file) if request_file else {}
    if not isinstance(data, dict):
        raise SpecError([FieldProblem((), f"the request file must hold a JSON object (an {kind})")])
    if model is not None:
        data["model"] = _model_ref(model)
    if "model" not in data:
        raise SpecError([FieldProblem(("model",), "give --model (catalog id or config.json path) or --request")])
    if gpu is not None:
        data["gpu"] = gpu
    return data


def _inference_request(
    request_file: Path | None, model: str | None, gpu: str | None, serving: dict[str, Any]
) -> InferenceRequest:
    """The request file (if any) with the flags that were given laid over it."""
    data = _request_data(request_file, model, gpu, "InferenceRequest")
    if (laid_serving := _overlay(data.get("serving"), _given(serving))) is not None:
        data["serving"] = laid_serving
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


def _one_of(values: Sequence[object]) -> str:
    return "one of " + ", ".join(map(str, values))


# Choices come from the planner's specs (their one source) and are checked there; listed here for --help.
METHOD_KINDS_HELP = _one_of(
    [cls.model_fields["kind"].default for cls in get_args(TrainingSpec.model_fields["method"].annotation)]
)
OPTIMIZER_KINDS_HELP = _one_of(get_args(OptimizerSpec.model_fields["kind"].annotation))
OPTIMIZER_IMPLS_HELP = _one_of(get_args(OptimizerSpec.model_fields["implementation"].annotation))
DEFAULT_METHOD_KIND: str = TrainingSpec().method.kind


def _method(base: Any, kind: str | None, options: dict[str, Any]) -> Any:
    """The file's method with --method and its options laid over; a different --method kind starts afresh."""
    given = _given(options)
    if kind is None and not given:
        return base
    base = base if isinstance(base, dict) else {}
    kind = kind or base.get("kind") or DEFAULT_METHOD_KIND
    return {**(base if base.get("kind") == kind else {}), "kind": kind, **given}


def _targets(value: str | None) -> str | list[str] | None:
    """'all-linear' stays a string; 'q_proj,v_proj' becomes a list."""
    if value is None or value == "all-linear":
        return value
    return [name.strip() for name in value.split(",") if name.strip()]


def _training_request(
    request_file: Path | None,
    model: str | None,
    gpu: str | None,
    method: tuple[str | None, dict[str, Any]],
    optimizer: dict[str, Any],
    training: dict[str, Any],
) -> TrainingRequest:
    """The request file (if any) with the flags that were given laid over it."""
    data = _request_data(request_file, model, gpu, "TrainingRequest")
    base = data.get("training", {})
    if isinstance(base, dict):  # anything else is left for validation to reject
        section = {**base, **_given(training)}
        if (laid_method := _method(section.get("method"), *method)) is not None:
            section["method"] = laid_method
        if (laid_optimizer := _overlay(section.get("optimizer"), _given(optimizer))) is not None:
            section["optimizer"] = laid_optimizer
        data["training"] = section
    return TrainingRequest.model_validate(data)


@estimate_app.command()
def training(
    request_file: Annotated[
        Path | None,
        typer.Option(
            "--request", help="A TrainingRequest as JSON (as POSTed to /v1/estimates/training).", dir_okay=False
        ),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Catalog model id (llama-3-8b) or path to a config.json.")] = None,
    gpu: Annotated[str | None, typer.Option(help="Catalog GPU id (default: h100-sxm).")] = None,
    method: Annotated[str | None, typer.Option(help=f"Fine-tuning method: {METHOD_KINDS_HELP}.")] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA/QLoRA rank r.")] = None,
    target_modules: Annotated[
        str | None, typer.Option(help="LoRA/QLoRA/IA3 targets: comma list (q_proj,v_proj) or all-linear.")
    ] = None,
    virtual_tokens: Annotated[int | None, typer.Option(help="Prefix/prompt tuning: virtual tokens.")] = None,
    bottleneck: Annotated[int | None, typer.Option(help="Adapter bottleneck width.")] = None,
    optimizer: Annotated[str | None, typer.Option(help=f"Optimizer: {OPTIMIZER_KINDS_HELP}.")] = None,
    optimizer_impl: Annotated[
        str | None, typer.Option(help=f"torch.optim implementation: {OPTIMIZER_IMPLS_HELP}.")
    ] = None,
    precision: Annotated[Precision | None, typer.Option(help="Where params, grads and states live.")] = None,
    checkpointing: Annotated[Checkpointing | None, typer.Option(help="Gradient checkpointing.")] = None,
    attention: Annotated[AttentionImpl | None, typer.Option(help="Attention implementation.")] = None,
    micro_batch: Annotated[int | None, typer.Option(help="Rows per micro-batch per GPU.")] = None,
    seq_len: Annotated[int | None, typer.Option(help="Tokens per row.")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Gradient accumulation steps.")] = None,
    dp: Annotated[int | None, typer.Option("--dp", help="Data-parallel GPUs.")] = None,
    zero: Annotated[int | None, typer.Option(help="ZeRO stage (0-3).")] = None,
    first_step: Annotated[
        bool | None, typer.Option("--first-step/--no-first-step", help="The first step (no optimizer state yet).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Fine-tuning: memory per GPU, fit, largest micro-batch, what to change, tokens/s. Flags override --request."""
    method_options = {
        "rank": rank,
        "target_modules": _targets(target_modules),
        "num_virtual_tokens": virtual_tokens,
        "bottleneck": bottleneck,
    }
    training_options = {
        "precision": precision,
        "gradient_checkpointing": checkpointing,
        "attention": attention,
        "micro_batch_size": micro_batch,
        "sequence_length": seq_len,
        "gradient_accumulation_steps": grad_accum,
        "data_parallel": dp,
        "zero_stage": zero,
        "first_step": first_step,
    }
    optimizer_options = {"kind": optimizer, "implementation": optimizer_impl}
    with _user_errors():
        request = _training_request(
            request_file, model, gpu, (method, method_options), optimizer_options, training_options
        )
        estimate = estimate_training(request, load_catalog())
    typer.echo(estimate.model_dump_json(indent=2) if as_json else training_table(estimate))


PROBE_KINDS_HELP = _one_of(get_args(ProbeRequest.model_fields["kind"].annotation))
PROBE_BACKENDS_HELP = _one_of(get_args(ProbeRequest.model_fields["backend"].annotation))
DEFAULT_PROBE_KIND: str = ProbeRequest.model_fields["kind"].default
PROBE_FAILED_EXIT = 1  # the input was fine; the run was not


def run_probe(request: ProbeRequest) -> ProbeResult:
    """The probe runner (MEMPLAN_PROBE_RUNNER, default models.runner:run_probe), imported here: torch loads only now."""
    return ProbeResult.model_validate(load_runner(Settings().probe_runner)(request))


def _probe_result(request: ProbeRequest) -> ProbeResult:
    """run_probe's result; its failure (out of memory, a crash, no torch installed) is a message and exit 1.

    A SpecError (what the runner cannot probe, e.g. a size cap) is bad input: it goes on to _user_errors.
    """
    try:
        return run_probe(request)
    except SpecError:
        raise
    except Exception as exc:
        reason = describe_failure(exc, Settings().probe_runner)
        hint = " (the probe side needs torch: pip install -e '.[test]')" if isinstance(exc, ImportError) else ""
        typer.echo(f"error: the probe failed: {reason}{hint}", err=True)
        raise typer.Exit(PROBE_FAILED_EXIT) from None


def _small_default(section: str) -> dict[str, Any]:
    """ProbeRequest's default `training`/`serving` (a small workload), as the fields it sets."""
    default: BaseModel = ProbeRequest.model_fields[section].default
    return default.model_dump(mode="json", exclude_unset=True)


def _probe_request(
    request_file: Path | None,
    top: dict[str, Any],
    training_flags: dict[str, Any],
    seq_len: int | None,
    micro_batch: int | None,
) -> ProbeRequest:
    """The request file (if any) with the flags that were given laid over it. `top`: model, kind, backend;
    `training_flags`: --method, --rank, --checkpointing, --attention. --seq-len and --micro-batch are the row length
    and micro-batch of a training probe, the prompt length and concurrency of an inference probe."""
    data = _read_json(request_file) if request_file else {}
    if not isinstance(data, dict):
        raise SpecError([FieldProblem((), "the request file must hold a JSON object (a ProbeRequest)")])
    if top.get("model") is not None:
        top = {**top, "model": _model_ref(top["model"])}
    data |= _given(top)
    if data.get("kind", DEFAULT_PROBE_KIND) == "inference":
        if misplaced := [flag for flag, value in training_flags.items() if value is not None]:
            raise SpecError([FieldProblem((misplaced[0],), "applies to training probes only (--kind training)")])
        if serving := _given({"prompt_tokens": seq_len, "concurrency": micro_batch}):
            data["serving"] = _overlay(data.get("serving", _small_default("serving")), serving)
        return ProbeRequest.model_validate(data)
    flags = {"gradient_checkpointing": training_flags["--checkpointing"], "attention": training_flags["--attention"]}
    given = _given({**flags, "sequence_length": seq_len, "micro_batch_size": micro_batch})
    method = (training_flags["--method"], {"rank": training_flags["--rank"]})
    base = data.get("training", _small_default("training"))
    if isinstance(base, dict) and (given or _given({"kind": method[0], **method[1]})):
        section = {**base, **given}
        if (laid_method := _method(section.get("method"), *method)) is not None:
            section["method"] = laid_method
        data["training"] = section
    return ProbeRequest.model_validate(data)


@app.command()
def probe(
    request_file: Annotated[
        Path | None,
        typer.Option("--request", help="A ProbeRequest as JSON (as POSTed to /v1/probes).", dir_okay=False),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Catalog model id (llama-3-8b) or path to a config.json.")] = None,
    kind: Annotated[str | None, typer.Option(help=f"What to run: {PROBE_KINDS_HELP}.")] = None,
    backend: Annotated[
        str | None, typer.Option(help=f"Measurement backend: {PROBE_BACKENDS_HELP} (auto: cuda when available).")
    ] = None,
    method: Annotated[str | None, typer.Option(help=f"Training method: {METHOD_KINDS_HELP}.")] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA/QLoRA rank r.")] = None,
    checkpointing: Annotated[Checkpointing | None, typer.Option(help="Gradient checkpointing (training).")] = None,
    attention: Annotated[AttentionImpl | None, typer.Option(help="Attention implementation (training).")] = None,
    seq_len: Annotated[int | None, typer.Option(help="Training: tokens per row. Inference: prompt tokens.")] = None,
    micro_batch: Annotated[
        int | None, typer.Option(help="Training: rows per micro-batch. Inference: concurrent sequences.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run a probe here (no server): a scaled-down model measured against the planner, component by component."""
    top = {"model": model, "kind": kind, "backend": backend}
    training_flags = {"--method": method, "--rank": rank, "--checkpointing": checkpointing, "--attention": attention}
    with _user_errors():
        request = _probe_request(request_file, top, training_flags, seq_len, micro_batch)
        admit(request, load_catalog())
        result = _probe_result(request)
    typer.echo(result.model_dump_json(indent=2) if as_json else probe_table(result))


import service.cli_plans  # noqa: E402, F401  (registers `memplan plan serving|training` and `memplan sweep`)
