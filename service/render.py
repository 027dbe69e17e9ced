"""Plain-text tables for the CLI. Bytes become GiB (2^30 B) only here, at display."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from planner import CatalogModel, GpuSpec, InferenceEstimate
from planner.describe import ImportDescription

__all__ = ["estimate_table", "gpus_table", "import_table", "models_table"]

GIB = 1 << 30
KIB = 1 << 10


def _table(header: Sequence[str] | None, rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; no header line when `header` is None."""
    lines = [*([tuple(header)] if header else []), *(tuple(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def _billions(n: int) -> str:
    return f"{n / 1e9:.2f} B"


def models_table(models: Iterable[CatalogModel]) -> str:
    header = ("id", "name", "attention", "params", "active", "KV KiB/token (bf16)", "max context")
    rows = (
        (
            m.id,
            m.name,
            str(m.spec.attention_kind),
            _billions(m.params.total),
            _billions(m.params.active_per_token),
            f"{m.kv_cache_bytes_per_token_bf16 / KIB:g}",
            str(m.spec.max_context),
        )
        for m in models
    )
    return _table(header, rows)


def gpus_table(gpus: Iterable[GpuSpec]) -> str:
    header = ("id", "name", "memory GiB", "HBM TB/s", "bf16 TFLOP/s", "fp8 TFLOP/s", "interconnect")
    rows = (
        (
            g.id,
            g.name,
            f"{g.memory_bytes / GIB:.1f}",
            f"{g.memory_bandwidth_bytes_per_s / 1e12:.2f}",
            f"{g.peak_flops_per_s.get('bf16', 0) / 1e12:.0f}",
            f"{g.peak_flops_per_s['fp8'] / 1e12:.0f}" if "fp8" in g.peak_flops_per_s else "-",
            g.interconnect,
        )
        for g in gpus
    )
    return _table(header, rows)


def import_table(d: ImportDescription) -> str:
    spec_rows = ((key, str(value)) for key, value in d.spec.model_dump(exclude_none=True).items())
    kv_rows = (
        (f"{kv.kv_cache_dtype}" + (f" {kv.mla_layout}" if kv.mla_layout else ""), f"{kv.bytes:,} B")
        for kv in d.kv_bytes_per_token
    )
    p = d.params
    param_rows = (
        ("total", f"{p.total:,}"),
        ("active per token", f"{p.active_per_token:,}"),
        ("embedding", f"{p.embedding:,}"),
        ("lm_head", f"{p.lm_head:,}"),
        *((f"{k.layers} × {k.kind} layer", f"{k.params_per_layer:,}") for k in p.layers),
    )
    head = f"family {d.family} ({'exact' if d.exact else 'approximate'}), checkpoint dtype {d.checkpoint_dtype}"
    if d.suggested_weight_format:
        head += f", weight format {d.suggested_weight_format}"
    parts = [
        head,
        _table(("spec", ""), spec_rows),
        _table(("params", ""), param_rows),
        _table(("KV cache per token", ""), kv_rows),
    ]
    parts += [f"warning: {w}" for w in d.warnings]
    return "\n\n".join(parts)


def estimate_table(e: InferenceEstimate) -> str:
    s, cap = e.serving, e.capacity
    name = e.model.catalog_id or e.model.spec.name or e.model.spec.family
    memory_rows = [(t.name, f"{t.bytes / GIB:.2f}", t.detail) for t in e.memory.terms]
    memory_rows.append(("total", f"{e.memory.total_bytes / GIB:.2f}", f"budget {cap.budget_bytes / GIB:.2f} GiB"))
    fits = "yes" if e.fits else "NO: " + "; ".join(e.fit_reasons)
    summary = (
        ("model", f"{name}, {_billions(e.model.params.total)} params ({e.model.spec.attention_kind})"),
        ("gpu", f"{e.num_gpus} × {e.gpu.name} ({e.gpu.memory_bytes / GIB:.1f} GiB each)"),
        ("serving", f"{s.engine}, weights {s.weight_format}, KV {s.kv_cache_dtype}, TP {s.tensor_parallel}"),
        ("workload", f"{s.concurrency} sequences × ({s.prompt_tokens} prompt + {s.output_tokens} output) tokens"),
        ("fits", fits),
        ("capacity", f"{cap.max_concurrent_sequences} sequences of {s.context_tokens} tokens"),
        ("", f"{cap.max_context_tokens} tokens per sequence at {s.concurrency} sequences"),
        ("", f"{cap.kv_blocks} KV blocks of {s.block_size} tokens, {cap.kv_bytes_per_token:,} B per token"),
        ("prefill", f"TTFT {e.prefill.ttft_s:.4f} s, {e.prefill.tokens_per_s:,.0f} tokens/s ({e.prefill.bound}-bound)"),
        ("decode", f"TPOT {e.decode.tpot_s:.4f} s, {e.decode.tokens_per_s:,.0f} tokens/s ({e.decode.bound}-bound)"),
    )
    parts = [_table(None, summary), _table(("memory per GPU", "GiB", "detail"), memory_rows)]
    parts += [f"warning: {w}" for w in e.warnings]
    return "\n\n".join(parts)
