"""Domain errors. The service maps each to one HTTP status; the CLI prints them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["FieldProblem", "SpecError", "UnknownIdError"]


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One invalid or missing input field: where it is (path of keys) and why it is rejected."""

    loc: tuple[str | int, ...]
    msg: str
    type: str = "value_error"


class SpecError(ValueError):
    """An input that is well-formed JSON but cannot describe a model or workload (HTTP 422)."""

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(f"{'.'.join(map(str, p.loc))}: {p.msg}" for p in self.problems))

    def prefixed(self, *prefix: str | int) -> SpecError:
        """The same problems located under `prefix` (e.g. the request field that held the config)."""
        return SpecError([FieldProblem((*prefix, *p.loc), p.msg, p.type) for p in self.problems])


class UnknownIdError(LookupError):
    """A catalog id that does not exist (HTTP 404 in a path, 422 inside a request body)."""

    def __init__(self, kind: str, id_: str, known: Sequence[str]) -> None:
        self.kind, self.id, self.known = kind, id_, tuple(known)
        super().__init__(f"unknown {kind} id '{id_}'; known: {', '.join(self.known)}")
