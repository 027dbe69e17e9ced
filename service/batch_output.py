"""How a batch of estimates goes over the wire: one JSON document, NDJSON lines as they are computed, or a CSV table.

Every number comes from the planner's estimates (planner.batch.run_batch); this module only picks fields and writes
them out. JSON results are the estimates' own serialization (the schema of /v1/estimates/inference and /training).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from enum import Enum
from typing import Any

from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from planner import Catalog
from planner.batch import BatchItem, BatchRequest, run_batch

__all__ = ["CSV_COLUMNS", "batch_response", "csv_chunks", "item_line", "json_document", "ndjson_lines", "pick"]

NDJSON = "application/x-ndjson"
CSV = "text/csv"
CSV_ROWS_PER_CHUNK = 256
NDJSON_LINES_PER_CHUNK = 64
COMMON = ("model.catalog_id", "gpu.id", "num_gpus", "fits", "allocated_peak_bytes", "device_bytes")
INFERENCE = (
    "serving.engine", "serving.tensor_parallel", "serving.pipeline_parallel", "serving.expert_parallel",
    "serving.weight_format", "serving.kv_cache_dtype", "serving.max_num_seqs", "serving.prompt_tokens",
    "serving.output_tokens", "serving.concurrency", "engine.kv_pool_tokens", "capacity.max_concurrent_sequences",
    "capacity.max_context_tokens", "prefill.ttft_s", "prefill.tokens_per_s", "decode.tpot_s", "decode.tokens_per_s",
    "load.ttft.p50_ms", "load.ttft.p90_ms", "load.ttft.p99_ms", "load.tpot.p50_ms", "load.tpot.p90_ms",
    "load.tpot.p99_ms", "load.output_tokens_per_s",
)  # fmt: skip
TRAINING = (
    "training.method.kind", "training.micro_batch_size", "training.sequence_length", "training.gradient_checkpointing",
    "training.data_parallel", "training.tensor_parallel", "training.pipeline_parallel", "training.zero_stage",
    "peak_phase", "budget_bytes", "max_micro_batch_size", "throughput.tokens_per_s", "throughput.mfu",
    "throughput.step_time_s",
)  # fmt: skip
CSV_COLUMNS = (*COMMON, *INFERENCE, *TRAINING)


def pick(obj: Any, path: str | Sequence[str]) -> Any:
    """The value at a dotted path (or its split parts) of an estimate: fields, then other attributes, then dict
    keys; None where the path ends early."""
    for name in path.split(".") if isinstance(path, str) else path:
        if obj is None:
            return None
        if isinstance(obj, dict):
            obj = obj.get(name)
            continue
        fields = getattr(obj, "__dict__", None)  # a pydantic model keeps its fields there: no __getattr__ detour
        obj = fields[name] if fields is not None and name in fields else getattr(obj, name, None)
    return obj


# the default columns that can hold a value for each kind of item (the others are blank without looking)
_KIND_COLUMNS = {"inference": frozenset((*COMMON, *INFERENCE)), "training": frozenset((*COMMON, *TRAINING))}


def _result_json(estimate: BaseModel, fields: Sequence[str] | None) -> str:
    if fields is None:
        return estimate.model_dump_json()
    return json.dumps({f: to_jsonable_python(pick(estimate, f)) for f in fields}, ensure_ascii=False)


def item_line(item: BatchItem, fields: Sequence[str] | None) -> str:
    """One result as a JSON object: index, kind, ok, and the result (the estimate or its fields) or the error."""
    head = f'{{"index":{item.index},"kind":"{item.kind}","ok":{"true" if item.ok else "false"},'
    if item.estimate is not None:
        return head + '"result":' + _result_json(item.estimate, fields) + "}"
    assert item.error is not None
    return head + '"error":' + item.error.model_dump_json() + "}"


def json_document(items: Iterable[BatchItem], fields: Sequence[str] | None) -> str:
    lines, errors = [], 0
    for item in items:
        errors += not item.ok
        lines.append(item_line(item, fields))
    summary = f'{{"items":{len(lines)},"ok":{len(lines) - errors},"errors":{errors},"results":['
    return summary + ",".join(lines) + "]}"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, BaseModel | dict | list | tuple):
        return json.dumps(to_jsonable_python(value), ensure_ascii=False)
    return str(value)


def _error_cell(item: BatchItem) -> str:
    if item.error is None:
        return ""
    first = item.error.problems[0] if item.error.problems else {"loc": [], "msg": ""}
    loc = ".".join(str(p) for p in first.get("loc", []))
    return f"{item.error.status}: {loc + ': ' if loc else ''}{first.get('msg', '')}"


def csv_chunks(items: Iterable[BatchItem], fields: Sequence[str] | None) -> Iterator[str]:
    columns = tuple(fields) if fields is not None else CSV_COLUMNS
    split = [c.split(".") for c in columns]
    per_kind = {
        kind: [parts if fields is not None or c in wanted else None for c, parts in zip(columns, split, strict=True)]
        for kind, wanted in _KIND_COLUMNS.items()
    }
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("index", "kind", "ok", "error", *columns))
    for n, item in enumerate(items, 1):
        if item.estimate is None:
            values = [""] * len(columns)
        else:
            values = [_cell(pick(item.estimate, p)) if p is not None else "" for p in per_kind[item.kind]]
        writer.writerow((item.index, item.kind, _cell(item.ok), _error_cell(item), *values))
        if n % CSV_ROWS_PER_CHUNK == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def ndjson_lines(items: Iterable[BatchItem], fields: Sequence[str] | None) -> Iterator[str]:
    """One line per item, sent NDJSON_LINES_PER_CHUNK lines at a time (each chunk is one hop out of the worker
    thread)."""
    chunk: list[str] = []
    for item in items:
        chunk.append(item_line(item, fields))
        if len(chunk) == NDJSON_LINES_PER_CHUNK:
            yield "\n".join(chunk) + "\n"
            chunk = []
    if chunk:
        yield "\n".join(chunk) + "\n"


def batch_response(request: BatchRequest, catalog: Catalog, accept: str | None, time_limit_s: float) -> Response:
    """The batch in the format the Accept header asks for: NDJSON and CSV stream as the items are computed; items
    not started within `time_limit_s` are answered with their 503 error."""
    items = run_batch(request, catalog, time_limit_s)
    wanted = (accept or "").lower()
    if NDJSON in wanted:
        return StreamingResponse(ndjson_lines(items, request.fields), media_type=NDJSON)
    if CSV in wanted:
        return StreamingResponse(csv_chunks(items, request.fields), media_type=CSV)
    return Response(json_document(items, request.fields), media_type="application/json")
