"""The `memplan` command line. Each command maps its options onto one planner call and the API's request objects.

Serving options carry the names engine users type (vLLM's: service.cli_inference); `memplan probe` runs a probe
here with a progress bar (service.cli_probe).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, get_args

import typer

from planner import load_catalog
from planner.model.describe import describe_import
from planner.training.estimate import TrainingRequest, estimate_training
from planner.training.spec import AttentionImpl, Checkpointing, OptimizerSpec, Precision, TrainingSpec
from service import __version__
from service.app import InsecureBindError, run_server
from service.cli_common import (
    GpuOption,
    JsonFlag,
    ModelOption,
    dump_all,
    fail,
    given,
    lay_method,
    overlay,
    planner_default,
    read_json,
    request_data,
    user_errors,
)
from service.cli_inference import inference
from service.cli_plans import plan_app, sweep
from service.cli_probe import METHOD_KINDS_HELP, probe
from service.hub import read_hub_config, with_hub_model
from service.render import gpus_table, import_table, models_table, training_table
from service.settings import Settings

__all__ = ["app"]

app = typer.Typer(
    name="memplan",
    help="Will this LLM fit on this GPU, how many sequences, how fast.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
estimate_app = typer.Typer(help="Estimate memory, capacity and speed for one configuration.", no_args_is_help=True)
app.add_typer(estimate_app, name="estimate")
estimate_app.command("inference", context_settings={"allow_extra_args": True})(inference)
app.command("probe")(probe)
app.add_typer(plan_app, name="plan")
app.command("sweep")(sweep)

DEFAULT_HOST: str = Settings.model_fields["host"].default
DEFAULT_PORT: int = Settings.model_fields["port"].default


def _version(value: bool) -> None:
    if value:
        typer.echo(f"memplan {__version__}")
        raise typer.Exit


@app.callback()
def main(
    version: Annotated[
        bool | None,
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Will this LLM fit on this GPU, how many sequences, how fast."""


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="MEMPLAN_HOST", help="Interface to bind.")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(envvar="MEMPLAN_PORT", help="TCP port to bind.")] = DEFAULT_PORT,
) -> None:
    """Serve the HTTP API and the page (/; interactive docs at /docs, offline). Beyond loopback it needs
    MEMPLAN_API_KEY."""
    with user_errors():
        settings = Settings(host=host, port=port)
    try:
        run_server(settings)
    except InsecureBindError as exc:
        fail(str(exc))


@app.command()
def models(as_json: JsonFlag = False) -> None:
    """List catalog models: attention, parameters, KV cache per token."""
    catalog = load_catalog()
    typer.echo(dump_all(catalog.models) if as_json else models_table(catalog.models))


@app.command()
def gpus(as_json: JsonFlag = False) -> None:
    """List catalog GPUs: memory, bandwidth, peak FLOP/s, interconnect."""
    catalog = load_catalog()
    typer.echo(dump_all(catalog.gpus) if as_json else gpus_table(catalog.gpus))


def _config(source: str) -> Any:
    """A config.json file, a directory holding one, or a Hugging Face id (local cache, else the hub)."""
    path = Path(source)
    if path.is_dir():
        return read_json(path / "config.json")
    if path.exists() or path.suffix == ".json" or "/" not in source or source.count("/") > 1:
        return read_json(path)
    return read_hub_config(source, field=("config",))


@app.command("import")
def import_config(
    source: Annotated[
        str, typer.Argument(help="A config.json file, a directory holding one, or a Hugging Face id (org/name).")
    ],
    as_json: JsonFlag = False,
) -> None:
    """Read a config.json: normalized spec, parameter counts, KV cache bytes per token."""
    with user_errors():
        description = describe_import(_config(source))
    typer.echo(description.model_dump_json(indent=2) if as_json else import_table(description))


def _one_of(values: Any) -> str:
    return "one of " + ", ".join(map(str, values))


OPTIMIZER_KINDS_HELP = _one_of(get_args(OptimizerSpec.model_fields["kind"].annotation))
OPTIMIZER_IMPLS_HELP = _one_of(get_args(OptimizerSpec.model_fields["implementation"].annotation))


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
    data = request_data(request_file, model, gpu, "TrainingRequest")
    base = data.get("training", {})
    if isinstance(base, dict):  # anything else is left for validation to reject
        section = {**base, **given(training)}
        if (laid_method := lay_method(section.get("method"), *method)) is not None:
            section["method"] = laid_method
        if (laid_optimizer := overlay(section.get("optimizer"), given(optimizer))) is not None:
            section["optimizer"] = laid_optimizer
        data["training"] = section
    return with_hub_model(TrainingRequest.model_validate(data))


def _t(field: str) -> str:
    return planner_default(TrainingSpec, field, "none")


DEFAULT_METHOD: str = TrainingSpec().method.kind
DEFAULT_OPTIMIZER = OptimizerSpec()


@estimate_app.command()
def training(
    request_file: Annotated[
        Path | None,
        typer.Option(
            "--request", help="A TrainingRequest as JSON (as POSTed to /v1/estimates/training).", dir_okay=False
        ),
    ] = None,
    model: ModelOption = None,
    gpu: GpuOption = None,
    method: Annotated[
        str | None, typer.Option(help=f"Fine-tuning method: {METHOD_KINDS_HELP}.", show_default=DEFAULT_METHOD)
    ] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA/QLoRA rank r.")] = None,
    target_modules: Annotated[
        str | None, typer.Option(help="LoRA/QLoRA/IA3 targets: comma list (q_proj,v_proj) or all-linear.")
    ] = None,
    virtual_tokens: Annotated[int | None, typer.Option(help="Prefix/prompt tuning: virtual tokens.")] = None,
    bottleneck: Annotated[int | None, typer.Option(help="Adapter bottleneck width.")] = None,
    optimizer: Annotated[
        str | None, typer.Option(help=f"Optimizer: {OPTIMIZER_KINDS_HELP}.", show_default=DEFAULT_OPTIMIZER.kind)
    ] = None,
    optimizer_impl: Annotated[
        str | None,
        typer.Option(
            help=f"torch.optim implementation: {OPTIMIZER_IMPLS_HELP}.", show_default=DEFAULT_OPTIMIZER.implementation
        ),
    ] = None,
    precision: Annotated[
        Precision | None, typer.Option(help="Where params, grads and states live.", show_default=_t("precision"))
    ] = None,
    checkpointing: Annotated[
        Checkpointing | None, typer.Option(help="Gradient checkpointing.", show_default=_t("gradient_checkpointing"))
    ] = None,
    attention: Annotated[
        AttentionImpl | None, typer.Option(help="Attention implementation.", show_default=_t("attention"))
    ] = None,
    micro_batch: Annotated[
        int | None, typer.Option(help="Rows per micro-batch per GPU.", show_default=_t("micro_batch_size"))
    ] = None,
    seq_len: Annotated[int | None, typer.Option(help="Tokens per row.", show_default=_t("sequence_length"))] = None,
    grad_accum: Annotated[
        int | None, typer.Option(help="Gradient accumulation steps.", show_default=_t("gradient_accumulation_steps"))
    ] = None,
    dp: Annotated[
        int | None, typer.Option("--dp", help="Data-parallel GPUs.", show_default=_t("data_parallel"))
    ] = None,
    zero: Annotated[int | None, typer.Option(help="ZeRO stage (0-3).", show_default=_t("zero_stage"))] = None,
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
    with user_errors():
        request = _training_request(
            request_file, model, gpu, (method, method_options), optimizer_options, training_options
        )
        estimate = estimate_training(request, load_catalog())
    typer.echo(estimate.model_dump_json(indent=2) if as_json else training_table(estimate))
