"""What every `memplan` command shares: user errors as exit 2, JSON files, flags laid over request files."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import BaseModel, ValidationError

from planner import FieldProblem, SpecError
from planner.training.spec import TrainingSpec

__all__ = [
    "USER_ERROR_EXIT",
    "GpuOption",
    "JsonFlag",
    "ModelOption",
    "dump_all",
    "fail",
    "given",
    "lay_method",
    "model_ref",
    "overlay",
    "planner_default",
    "read_json",
    "request_data",
    "user_errors",
]

USER_ERROR_EXIT = 2  # as for a usage error: the input, not the program, is wrong
DEFAULT_METHOD_KIND: str = TrainingSpec().method.kind

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (the HTTP API's response body) instead of a table.")]
ModelOption = Annotated[
    str | None,
    typer.Option(help="Catalog id (llama-3-8b), Hugging Face id (Qwen/Qwen2.5-7B), config.json or its directory."),
]
GpuOption = Annotated[str | None, typer.Option(help="Catalog GPU id.", show_default="h100-sxm")]


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(USER_ERROR_EXIT)


def _lines(problems: Sequence[tuple[Sequence[str | int], str]]) -> str:
    return "\n".join(f"  {'.'.join(map(str, loc)) or '(input)'}: {msg}" for loc, msg in problems)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn bad input (unreadable files, invalid JSON, specs the planner rejects) into a message and exit 2."""
    try:
        yield
    except ValidationError as exc:
        fail("invalid input\n" + _lines([(e["loc"], e["msg"]) for e in exc.errors(include_url=False)]))
    except SpecError as exc:
        fail("invalid input\n" + _lines([(p.loc, p.msg) for p in exc.problems]))
    except json.JSONDecodeError as exc:
        fail(f"not valid JSON: {exc}")
    except OSError as exc:
        fail(str(exc))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def dump_all(items: Sequence[BaseModel]) -> str:
    return json.dumps([item.model_dump(mode="json") for item in items], indent=2, ensure_ascii=False)


def model_ref(model: str) -> Any:
    """A catalog id or a Hugging Face id stays a string; a .json file or a directory holding config.json becomes the
    file's contents (a config.json or a ModelSpec)."""
    path = Path(model)
    if path.is_dir():
        return read_json(path / "config.json")
    return read_json(path) if path.suffix == ".json" or path.is_file() else model


def given(options: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in options.items() if value is not None}


def overlay(base: Any, laid: dict[str, Any]) -> Any:
    """A request-file section with the given flags laid over it (the section itself when no flag was given)."""
    if not laid:
        return base
    return {**base, **laid} if isinstance(base, dict) else laid


def lay_method(base: Any, kind: str | None, options: dict[str, Any]) -> Any:
    """The file's method with --method and its options laid over; a different --method kind starts afresh."""
    laid = given(options)
    if kind is None and not laid:
        return base
    base = base if isinstance(base, dict) else {}
    kind = kind or base.get("kind") or DEFAULT_METHOD_KIND
    return {**(base if base.get("kind") == kind else {}), "kind": kind, **laid}


def request_data(request_file: Path | None, model: str | None, gpu: str | None, kind: str) -> dict[str, Any]:
    """The request file (if any) as a dict, with --model and --gpu laid over it."""
    data = read_json(request_file) if request_file else {}
    if not isinstance(data, dict):
        raise SpecError([FieldProblem((), f"the request file must hold a JSON object (an {kind})")])
    if model is not None:
        data["model"] = model_ref(model)
    if "model" not in data:
        raise SpecError([FieldProblem(("model",), "give --model (catalog id or config.json path) or --request")])
    if gpu is not None:
        data["gpu"] = gpu
    return data


def planner_default(spec: type[BaseModel], field: str, when_none: str = "the engine's default") -> str:
    """A planner field's default as --help shows it (one source: the spec)."""
    info = spec.model_fields[field]
    value = info.get_default(call_default_factory=True)
    if value is None:
        return when_none
    return str(value.value if hasattr(value, "value") else value)
