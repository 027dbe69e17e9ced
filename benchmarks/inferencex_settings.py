"""Server settings of the InferenceX runs behind silicon_sample.csv rows.

`benchmarks/data/silicon/inferencex_settings.json` records, for the rows that come from SemiAnalysis InferenceX
benchmark runs, the server flags of the launch script each run used (read from InferenceX's git history). This
module matches a csv row to its entry and evaluates the entry's formulas for that row.

    settings_for(row) -> (settings, unmodelled, source) | None

`settings` holds memplan ServingSpec field values only; `unmodelled` the other latency-relevant flags; `source`
a one-line citation (InferenceX commit, script path, commit date). Run this file for a coverage summary.

Pure standard library: no planner imports.
"""

from __future__ import annotations

import ast
import csv
import json
import operator
import re
import sys
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data" / "silicon"
SETTINGS_FILE = DATA / "inferencex_settings.json"
SILICON_CSV = DATA / "silicon_sample.csv"

ALLOWED_SETTINGS = frozenset(
    {
        "max_num_seqs",
        "max_num_batched_tokens",
        "gpu_memory_utilization",
        "mem_fraction_static",
        "free_gpu_memory_fraction",
        "enforce_eager",
        "kv_cache_dtype",
        "batch_wait_timeout_iters",
        "batch_wait_max_tokens_ratio",
        "scheduler_recv_interval",
    }
)
MATCH_KEYS = frozenset(
    {
        "system",
        "backend",
        "model_path",
        "precision",
        "ids",
        "measured_from",
        "measured_to",
        "undated",
        "image",
        "isl",
        "osl",
        "tp",
        "tp_lt",
        "conc_gt",
        "conc_le",
        "dp_attention",
    }
)
FORMULA_NAMES = ("CONC", "ISL", "OSL", "TP", "DP")

_MEASURED = re.compile(r"measured=(\d{4}-\d{2}-\d{2})")
_CONC = re.compile(r"silicon_concurrency=(\d+)")

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv}
_FUNCS = {"max": max, "min": min}


@lru_cache(maxsize=1)
def load(path: Path = SETTINGS_FILE) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def entries() -> list[dict[str, Any]]:
    return load()["entries"]


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(float(value)) if value not in (None, "") else default
    except ValueError:
        return default


def concurrency(row: dict[str, str]) -> int:
    """The benchmark's client concurrency: silicon_concurrency, else batch_size x attention_dp_size."""
    m = _CONC.search(row.get("silicon_data_source", ""))
    if m:
        return int(m.group(1))
    return _int(row.get("batch_size"), 1) * max(1, _int(row.get("attention_dp_size"), 1))


def measured_date(row: dict[str, str]) -> str | None:
    m = _MEASURED.search(row.get("silicon_data_source", ""))
    return m.group(1) if m else None


def is_inferencex(row: dict[str, str]) -> bool:
    """Rows not from aiconfigurator's own /Users/... gap-analysis sweeps."""
    return not row.get("silicon_data_source", "").startswith("source_file=/Users")


def variables(row: dict[str, str]) -> dict[str, int]:
    return {
        "CONC": concurrency(row),
        "ISL": _int(row.get("isl")),
        "OSL": _int(row.get("osl")),
        "TP": max(1, _int(row.get("tp_size"), 1)),
        "DP": max(1, _int(row.get("attention_dp_size"), 1)),
    }


def evaluate(expr: str, names: dict[str, int]) -> int:
    """Evaluate an integer formula: names CONC/ISL/OSL/TP/DP, literals, + - * //, max(), min()."""

    def ev(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Name) and node.id in names:
            return names[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCS
            and node.args
            and not node.keywords
        ):
            return _FUNCS[node.func.id](ev(a) for a in node.args)
        raise ValueError(f"unsupported formula element {ast.dump(node)} in {expr!r}")

    return ev(ast.parse(expr, mode="eval"))


def resolve(value: Any, names: dict[str, int]) -> Any:
    """A string starting with '=' is a formula; anything else is returned as is."""
    if isinstance(value, str) and value.startswith("="):
        return evaluate(value[1:].strip(), names)
    return value


def matches(match: dict[str, Any], row: dict[str, str]) -> bool:
    if not is_inferencex(row):
        return False
    for key in ("system", "backend"):
        if row.get(key) != match[key]:
            return False
    models = match["model_path"]
    if row.get("model_path") not in ([models] if isinstance(models, str) else models):
        return False
    if "precision" in match and row.get("precision") != match["precision"]:
        return False
    if "ids" in match and row.get("id") not in match["ids"]:
        return False
    date = measured_date(row)
    if date is None:
        if not match.get("undated", False):
            return False
    else:
        if "measured_from" in match and date < match["measured_from"]:
            return False
        if "measured_to" in match and date > match["measured_to"]:
            return False
    if "image" in match and match["image"] not in row.get("silicon_data_source", ""):
        return False
    names = variables(row)
    if "isl" in match and names["ISL"] != match["isl"]:
        return False
    if "osl" in match and names["OSL"] != match["osl"]:
        return False
    if "tp" in match and names["TP"] != match["tp"]:
        return False
    if "tp_lt" in match and not names["TP"] < match["tp_lt"]:
        return False
    if "conc_gt" in match and not names["CONC"] > match["conc_gt"]:
        return False
    if "conc_le" in match and not names["CONC"] <= match["conc_le"]:
        return False
    return "dp_attention" not in match or (names["DP"] > 1) == match["dp_attention"]


def find_entry(row: dict[str, str]) -> dict[str, Any] | None:
    """The first entry whose match accepts the row."""
    for entry in entries():
        if matches(entry["match"], row):
            return entry
    return None


def format_source(source: dict[str, Any]) -> str:
    text = f"InferenceX {source['commit']} {source['path']} ({source['date']})"
    if "run_commit" in source:
        text += f"; run of {source['run_commit']}"
    return text


def settings_for(row: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any], str] | None:
    """(settings, unmodelled, source) for a silicon_sample.csv row, or None when no entry matches."""
    entry = find_entry(row)
    if entry is None:
        return None
    names = variables(row)
    settings = {k: resolve(v, names) for k, v in entry["settings"].items()}
    return settings, dict(entry["unmodelled"]), format_source(entry["source"])


def load_rows(path: Path = SILICON_CSV) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def coverage(rows: list[dict[str, str]]) -> dict[tuple[str, str, str, str], Counter[str]]:
    """Per (system, backend, mode, model): counts of matched / unmatched InferenceX rows and /Users rows."""
    out: dict[tuple[str, str, str, str], Counter[str]] = {}
    for row in rows:
        key = (row["system"], row["backend"], row["mode"], row["model_path"])
        counts = out.setdefault(key, Counter())
        if not is_inferencex(row):
            counts["users"] += 1
        elif find_entry(row) is not None:
            counts["matched"] += 1
        else:
            counts["unmatched"] += 1
    return out


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    systems = set(argv) or None
    rows = load_rows()
    table = coverage(rows)
    total: Counter[str] = Counter()
    print(f"{'system':<9} {'backend':<7} {'mode':<6} {'model':<34} {'matched':>7} {'unmatched':>9} {'/Users':>6}")
    for (system, backend, mode, model), counts in sorted(table.items()):
        if systems and system not in systems:
            continue
        total.update(counts)
        print(
            f"{system:<9} {backend:<7} {mode:<6} {model:<34} {counts['matched']:>7} {counts['unmatched']:>9}"
            f" {counts['users']:>6}"
        )
    print(f"{'total':<59} {total['matched']:>7} {total['unmatched']:>9} {total['users']:>6}")


if __name__ == "__main__":
    main()
