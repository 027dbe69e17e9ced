"""Plain-text tables for the CLI. Bytes become GiB (2^30 B) only here, at display."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from planner import CatalogModel, GpuSpec, InferenceEstimate
from planner.model.describe import ImportDescription
from planner.probe import ProbeResult
from planner.training.estimate import TrainingEstimate

__all__ = [
    "dtype_table",
    "estimate_table",
    "gpus_table",
    "import_table",
    "models_table",
    "probe_table",
    "training_table",
]

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
        (
            "serving",
            f"{s.engine}, weights {s.weight_format}, KV {s.kv_cache_dtype}, TP {s.tensor_parallel}"
            + (f", DCP {s.decode_context_parallel}" if s.decode_context_parallel > 1 else ""),
        ),
        ("workload", f"{s.concurrency} sequences × ({s.prompt_tokens} prompt + {s.output_tokens} output) tokens"),
        ("fits", fits),
        ("capacity", f"{cap.max_concurrent_sequences} sequences of {s.context_tokens} tokens"),
        ("", f"{cap.max_context_tokens} tokens per sequence at {s.concurrency} sequences"),
        ("", f"{cap.kv_blocks} KV blocks of {s.block_size} tokens, {cap.kv_bytes_per_token:,} B per token"),
        ("prefill", f"TTFT {e.prefill.ttft_s:.4f} s, {e.prefill.tokens_per_s:,.0f} tokens/s ({e.prefill.bound}-bound)"),
        ("decode", f"TPOT {e.decode.tpot_s:.4f} s, {e.decode.tokens_per_s:,.0f} tokens/s ({e.decode.bound}-bound)"),
        *_load_rows(e),
    )
    parts = [_table(None, summary), _table(("memory per GPU", "GiB", "detail"), memory_rows)]
    parts += [f"warning: {w}" for w in e.warnings]
    return "\n\n".join(parts)


def _load_rows(e: InferenceEstimate) -> tuple[tuple[str, str], ...]:
    """The latency under the request's load, and its calibrated means where the learned residual ships."""
    if e.load is None:
        return ()
    ttft, tpot = e.load.ttft, e.load.tpot
    rows = [
        ("under load", f"TTFT mean {ttft.mean_ms:,.1f} ms (p50 {ttft.p50_ms:,.1f}, p90 {ttft.p90_ms:,.1f}), "
                       f"TPOT mean {tpot.mean_ms:.2f} ms (p50 {tpot.p50_ms:.2f}, p90 {tpot.p90_ms:.2f})"),
    ]  # fmt: skip
    c = e.calibrated
    if c is not None:
        parts = []
        if c.ttft_mean_ms is not None and c.ttft_interval_ms is not None:
            lo, hi = c.ttft_interval_ms
            parts.append(f"TTFT mean {c.ttft_mean_ms:,.1f} ms (80 % interval {lo:,.1f}-{hi:,.1f})")
        if c.tpot_mean_ms is not None and c.tpot_interval_ms is not None:
            lo, hi = c.tpot_interval_ms
            parts.append(f"TPOT mean {c.tpot_mean_ms:.2f} ms (80 % interval {lo:.2f}-{hi:.2f})")
        rows += [("calibrated", ", ".join(parts)), ("", c.summary)]
    return tuple(rows)


def dtype_table(rows: Sequence[tuple[str, InferenceEstimate]]) -> str:
    """One line per weight format (accelerate estimate-memory's table, with the serving answer's figures)."""
    header = ("dtype", "weights GiB", "per GPU GiB", "fits", "max sequences", "max context", "TTFT ms", "TPOT ms")
    body = []
    for name, e in rows:
        weights = sum(t.bytes for t in e.memory.terms if t.name.startswith("weights/"))
        ttft = e.load.ttft.p50_ms if e.load else e.prefill.ttft_s * 1e3
        tpot = e.load.tpot.p50_ms if e.load else e.decode.tpot_s * 1e3
        body.append((name, _gib(weights), _gib(e.memory.total_bytes), "yes" if e.fits else "NO",
                     str(e.capacity.max_concurrent_sequences), str(e.capacity.max_context_tokens),
                     f"{ttft:.1f}", f"{tpot:.2f}"))  # fmt: skip
    first = rows[0][1] if rows else None
    title = ""
    if first is not None:
        s = first.serving
        name = first.model.catalog_id or first.model.spec.name or first.model.spec.family
        latency = "p50 under load" if first.load else "static"
        title = (f"{name} on {first.num_gpus} × {first.gpu.name}, {s.engine}, {s.concurrency} sequences × "
                 f"({s.prompt_tokens} + {s.output_tokens}) tokens; latency {latency}\n\n")  # fmt: skip
    return title + _table(header, body)


def _gib(nbytes: int) -> str:
    return f"{nbytes / GIB:.2f}"


def _method_text(e: TrainingEstimate) -> str:
    """'lora (rank=16, alpha=32.0, dropout=0.0) on q_proj, v_proj: 6,815,744 trainable (0.08% of 8.03 B)'."""
    method, tp = e.training.method, e.trainable_params
    options = ", ".join(f"{k}={v}" for k, v in method.model_dump(exclude={"kind"}, exclude_none=True).items())
    targets = sorted(tp.lora_targets | tp.ia3_targets)
    text = method.kind + (f" ({options})" if options else "") + (f" on {', '.join(targets)}" if targets else "")
    share = tp.trainable / tp.base_params if tp.base_params else 0.0
    return f"{text}: {tp.trainable:,} trainable ({share:.2%} of {_billions(tp.base_params)})"


def _training_summary(e: TrainingEstimate) -> tuple[tuple[str, str], ...]:
    t, th = e.training, e.throughput
    name = e.model.catalog_id or e.model.spec.name or e.model.spec.family
    fits = "yes" if e.fits else "NO: " + "; ".join(e.fit_reasons)
    return (
        ("model", f"{name}, {_billions(e.model.params.total)} params ({e.model.spec.attention_kind})"),
        ("gpu", f"{e.num_gpus} × {e.gpu.name} ({e.gpu.memory_bytes / GIB:.1f} GiB each), ZeRO stage {t.zero_stage}"),
        ("method", _method_text(e)),
        (
            "setup",
            f"{t.precision}, {t.optimizer.kind} ({t.optimizer.implementation}), {t.attention} attention, "
            f"checkpointing {t.gradient_checkpointing}",
        ),
        (
            "batch",
            f"micro-batch {t.micro_batch_size} × {t.sequence_length} tokens, gradient accumulation "
            f"{t.gradient_accumulation_steps}, {'packed' if t.packing else 'padded'}",
        ),
        ("peak", f"{e.peak_phase}: {_gib(e.memory.total_bytes)} GiB per GPU of a {_gib(e.budget_bytes)} GiB budget"),
        ("fits", fits),
        ("max micro-batch", str(e.max_micro_batch_size)),
        (
            "throughput",
            f"{th.tokens_per_s:,.0f} tokens/s, MFU {th.mfu:.1%}, step {th.step_time_s:.3f} s "
            f"({th.tokens_per_step:,.0f} tokens)",
        ),
    )


def training_table(e: TrainingEstimate) -> str:
    phase_rows = ((n, _gib(p.total_bytes), "peak" if n == e.peak_phase else "") for n, p in e.phases.items())
    term_rows = [(term.name, _gib(term.bytes), term.detail) for term in e.memory.terms]
    term_rows.append(("total", _gib(e.memory.total_bytes), f"device {_gib(e.device_bytes)} GiB with the CUDA context"))
    parts = [
        _table(None, _training_summary(e)),
        _table(("phase", "GiB", ""), phase_rows),
        _table((f"{e.peak_phase} per GPU", "GiB", "detail"), term_rows),
    ]
    if e.suggestions:
        rows = ((s.change, _gib(s.saves_bytes), "yes" if s.fits else "no") for s in e.suggestions)
        parts.append(_table(("suggestion", "saves GiB", "fits"), rows))
    parts += [f"warning: {w}" for w in e.warnings]
    return "\n\n".join(parts)


def _workload(r: ProbeResult) -> str:
    if r.training is not None:
        t = r.training
        return (
            f"{t.method.kind}, micro-batch {t.micro_batch_size} × {t.sequence_length} tokens, {t.attention} "
            f"attention, checkpointing {t.gradient_checkpointing}"
        )
    if r.serving is not None:
        s = r.serving
        return f"{s.engine}, {s.concurrency} sequences × ({s.prompt_tokens} prompt + {s.output_tokens} output) tokens"
    return "-"


def probe_table(r: ProbeResult) -> str:
    """What ran where, then each component measured vs estimated (bytes exactly; the probe model is small)."""
    versions = f"torch {r.torch_version}, transformers {r.transformers_version}, peft {r.peft_version or '-'}"
    spec = r.spec
    summary = [
        ("backend", f"{r.backend} on {r.device} ({versions})"),
        ("model", f"{spec.name or spec.family}: {spec.num_layers} layers, h {spec.hidden_size}, {spec.attention_kind}"),
        (r.kind, _workload(r)),
        ("peak", f"rel error {r.peak_rel_error:+.2%}"),
    ]
    if r.out_of_memory:
        summary.append(("out of memory", "yes"))
    summary += [(f"time {name}", f"{seconds:.3f} s") for name, seconds in r.timings_s.items()]
    rows = (
        (c.name, f"{c.measured_bytes:,}", f"{c.estimated_bytes:,}", f"{c.rel_error:+.2%}", "yes" if c.exact else "no")
        for c in r.comparisons
    )
    header = ("component", "measured B", "estimated B", "rel error", "exact?")
    return "\n\n".join([_table(None, summary), _table(header, rows)])
