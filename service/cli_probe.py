"""`memplan probe`: a scaled-down model measured against the planner, here (no server), with a progress bar."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, get_args

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from planner import FieldProblem, SpecError, load_catalog
from planner.probe import ProbeRequest, ProbeResult
from planner.training.spec import AttentionImpl, Checkpointing, TrainingSpec
from service.cli_common import JsonFlag, given, lay_method, model_ref, overlay, read_json, user_errors
from service.hub import with_hub_model
from service.probes.admission import admit
from service.probes.child import IMPORTING_RUNNER, describe_failure, load_runner, run_with_progress
from service.render import probe_table
from service.settings import Settings

__all__ = ["PROBE_FAILED_EXIT", "probe", "run_probe"]

Progress_ = Callable[[str], None]


def _one_of(values: Any) -> str:
    return "one of " + ", ".join(map(str, values))


METHOD_KINDS_HELP = _one_of(
    [cls.model_fields["kind"].default for cls in get_args(TrainingSpec.model_fields["method"].annotation)]
)
PROBE_KINDS_HELP = _one_of(get_args(ProbeRequest.model_fields["kind"].annotation))
PROBE_BACKENDS_HELP = _one_of(get_args(ProbeRequest.model_fields["backend"].annotation))
DEFAULT_PROBE_KIND: str = ProbeRequest.model_fields["kind"].default
PROBE_FAILED_EXIT = 1  # the input was fine; the run was not


def run_probe(request: ProbeRequest, progress: Progress_ | None = None) -> ProbeResult:
    """The probe runner (MEMPLAN_PROBE_RUNNER, default models.runner:run_probe), imported here: torch loads only now.

    `progress` hears each phase ('importing the probe runner (torch)', then the runner's own when it takes one).
    """
    report = progress or (lambda _: None)
    report(IMPORTING_RUNNER)
    return ProbeResult.model_validate(run_with_progress(load_runner(Settings().probe_runner), request, report))


def _probe_result(request: ProbeRequest, show_progress: bool) -> ProbeResult:
    """run_probe's result, with a spinner, the phase and the elapsed time on stderr; its failure (out of memory, a
    crash, no torch installed) is a message and exit 1. A SpecError (what the runner cannot probe) is bad input."""
    console = Console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("probe: {task.description}"), TimeElapsedColumn())
    try:
        with Progress(
            *columns, console=console, transient=True, disable=not (show_progress and console.is_terminal)
        ) as bar:
            task = bar.add_task("starting", total=None)
            return run_probe(request, progress=lambda phase: bar.update(task, description=phase))
    except SpecError:
        raise
    except Exception as exc:
        reason = describe_failure(exc, Settings().probe_runner)
        hint = " (the probe side needs torch: pip install -e '.[probe]')" if isinstance(exc, ImportError) else ""
        typer.echo(f"error: the probe failed: {reason}{hint}", err=True)
        raise typer.Exit(PROBE_FAILED_EXIT) from None


def _small_default(section: str) -> dict[str, Any]:
    """ProbeRequest's default `training`/`serving` (a small workload), as the fields it sets."""
    default: BaseModel = ProbeRequest.model_fields[section].default
    return default.model_dump(mode="json", exclude_unset=True)


def probe_request(
    request_file: Path | None,
    top: dict[str, Any],
    training_flags: dict[str, Any],
    seq_len: int | None,
    micro_batch: int | None,
) -> ProbeRequest:
    """The request file (if any) with the flags that were given laid over it. `top`: model, kind, backend;
    `training_flags`: --method, --rank, --checkpointing, --attention. --seq-len and --micro-batch are the row length
    and micro-batch of a training probe, the prompt length and concurrency of an inference probe."""
    data = read_json(request_file) if request_file else {}
    if not isinstance(data, dict):
        raise SpecError([FieldProblem((), "the request file must hold a JSON object (a ProbeRequest)")])
    if top.get("model") is not None:
        top = {**top, "model": model_ref(top["model"])}
    data |= given(top)
    if data.get("kind", DEFAULT_PROBE_KIND) == "inference":
        if misplaced := [flag for flag, value in training_flags.items() if value is not None]:
            raise SpecError([FieldProblem((misplaced[0],), "applies to training probes only (--kind training)")])
        if serving := given({"prompt_tokens": seq_len, "concurrency": micro_batch}):
            data["serving"] = overlay(data.get("serving", _small_default("serving")), serving)
        return with_hub_model(ProbeRequest.model_validate(data))
    flags = {"gradient_checkpointing": training_flags["--checkpointing"], "attention": training_flags["--attention"]}
    laid = given({**flags, "sequence_length": seq_len, "micro_batch_size": micro_batch})
    method = (training_flags["--method"], {"rank": training_flags["--rank"]})
    base = data.get("training", _small_default("training"))
    if isinstance(base, dict) and (laid or given({"kind": method[0], **method[1]})):
        section = {**base, **laid}
        if (laid_method := lay_method(section.get("method"), *method)) is not None:
            section["method"] = laid_method
        data["training"] = section
    return with_hub_model(ProbeRequest.model_validate(data))


def probe(
    request_file: Annotated[
        Path | None,
        typer.Option("--request", help="A ProbeRequest as JSON (as POSTed to /v1/probes).", dir_okay=False),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Catalog id, Hugging Face id, config.json or its directory.", show_default="llama-3-8b"),
    ] = None,
    kind: Annotated[str | None, typer.Option(help=f"What to run: {PROBE_KINDS_HELP}.", show_default="training")] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            help=f"Measurement backend: {PROBE_BACKENDS_HELP} (auto: cuda when available).", show_default="auto"
        ),
    ] = None,
    method: Annotated[
        str | None, typer.Option(help=f"Training method: {METHOD_KINDS_HELP}.", show_default="the small default")
    ] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA/QLoRA rank r.")] = None,
    checkpointing: Annotated[Checkpointing | None, typer.Option(help="Gradient checkpointing (training).")] = None,
    attention: Annotated[AttentionImpl | None, typer.Option(help="Attention implementation (training).")] = None,
    seq_len: Annotated[int | None, typer.Option(help="Training: tokens per row. Inference: prompt tokens.")] = None,
    micro_batch: Annotated[
        int | None, typer.Option(help="Training: rows per micro-batch. Inference: concurrent sequences.")
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the phase on stderr.")] = True,
    as_json: JsonFlag = False,
) -> None:
    """Run a probe here (no server): a scaled-down model measured against the planner, component by component."""
    top = {"model": model, "kind": kind, "backend": backend}
    training_flags = {"--method": method, "--rank": rank, "--checkpointing": checkpointing, "--attention": attention}
    with user_errors():
        request = probe_request(request_file, top, training_flags, seq_len, micro_batch)
        admit(request, load_catalog())
        result = _probe_result(request, progress)
    typer.echo(result.model_dump_json(indent=2) if as_json else probe_table(result))
