"""`memplan estimate inference`: the serving question, with the option names engine users type (vLLM's).

Each option maps onto one field of the InferenceRequest (the HTTP API's body); --dtypes answers the same request once
per weight format, as accelerate's estimate-memory compares dtypes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from planner import (
    DType,
    Engine,
    InferenceEstimate,
    InferenceRequest,
    ServingSpec,
    WeightFormat,
    estimate_inference,
    load_catalog,
)
from planner.calibration.kernels import available_tables
from service.cli_common import (
    GpuOption,
    JsonFlag,
    ModelOption,
    given,
    overlay,
    planner_default,
    request_data,
    user_errors,
)
from service.hub import with_hub_model
from service.render import dtype_table, estimate_table

__all__ = ["DTYPE_FORMATS", "QUANTIZATION_ALIASES", "inference", "inference_request"]

# vLLM --quantization names → memplan weight formats (vllm/model_executor/layers/quantization/__init__.py)
QUANTIZATION_ALIASES = {
    "awq": WeightFormat.INT4_AWQ,
    "awq_marlin": WeightFormat.INT4_AWQ,
    "gptq": WeightFormat.INT4_GPTQ,
    "gptq_marlin": WeightFormat.INT4_GPTQ,
    "bitsandbytes": WeightFormat.NF4,
    "modelopt_fp4": WeightFormat.NVFP4,
    "fbgemm_fp8": WeightFormat.FP8,
    **{f.value: f for f in WeightFormat},
}
# vLLM --dtype (the unquantized weights and the activations): auto = the checkpoint's bf16
DTYPE_ALIASES = {"auto": None, "bfloat16": DType.BF16, "bf16": DType.BF16, "float16": DType.FP16, "half": DType.FP16,
                 "fp16": DType.FP16, "float32": DType.FP32, "float": DType.FP32, "fp32": DType.FP32}  # fmt: skip
# vLLM --kv-cache-dtype: auto = the model dtype; fp8_e4m3 / fp8_e5m2 are 1 byte like fp8
KV_DTYPE_ALIASES = {"auto": None, "fp8_e4m3": DType.FP8, "fp8_e5m2": DType.FP8, **{d.value: d for d in DType}}
# --dtypes comparison names (accelerate estimate-memory's float32 float16 int8 int4, and memplan's formats)
DTYPE_FORMATS = {"int4": WeightFormat.INT4_AWQ, "float32": WeightFormat.FP32, "float16": WeightFormat.FP16,
                 "bfloat16": WeightFormat.BF16, **QUANTIZATION_ALIASES}  # fmt: skip
COMPARISON_PROGRESS_MIN = 4  # a progress bar for comparisons of this many formats or more


def _choice(table: dict[str, Any], value: str | None, option: str) -> Any:
    if value is None:
        return None
    try:
        return table[value.lower()]
    except KeyError:
        raise typer.BadParameter(f"{value!r}: one of {', '.join(table)}", param_hint=option) from None


def _default(field: str) -> str:
    return planner_default(ServingSpec, field)


def _dtype_fields(dtype: DType | None, weight_format: WeightFormat | None) -> dict[str, Any]:
    """--dtype sets the 16/32-bit parts (embeddings, norms, activations) and, unquantized, the linears too."""
    if dtype is None:
        return {"weight_format": weight_format}
    fields: dict[str, Any] = {"embedding_dtype": dtype, "weight_format": weight_format or WeightFormat(dtype.value)}
    if dtype in (DType.BF16, DType.FP16):
        fields["activation_dtype"] = dtype
    return fields


def _context_fields(max_model_len: int | None, output_tokens: int | None, prompt_tokens: int | None) -> dict[str, Any]:
    """--max-model-len sizes each sequence at the model length, as vLLM's startup check does: prompt = len − output."""
    if max_model_len is None:
        return {"prompt_tokens": prompt_tokens, "output_tokens": output_tokens}
    output = output_tokens or ServingSpec.model_fields["output_tokens"].default
    output = min(output, max_model_len - 1) if max_model_len > 1 else 1
    return {"prompt_tokens": max(1, max_model_len - output), "output_tokens": output}


def _load(data: dict[str, Any], concurrency: int | None) -> dict[str, Any] | None:
    """--concurrency also asks for latency under load where the GPU and engine have measured kernel tables."""
    if concurrency is None:
        return data.get("load")
    serving = data.get("serving") or {}
    engine = Engine(serving.get("engine", Engine.VLLM))
    table_engine = engine.value if engine in (Engine.VLLM, Engine.SGLANG, Engine.TRTLLM) else "vllm"
    gpu = data.get("gpu", InferenceRequest.model_fields["gpu"].default)
    if isinstance(gpu, str) and (gpu.lower(), table_engine) in available_tables():
        return {**(data.get("load") or {}), "concurrency": concurrency}
    return data.get("load")


def inference_request(request_file: Path | None, model: str | None, gpu: str | None, serving: dict[str, Any],
                      concurrency: int | None) -> InferenceRequest:  # fmt: skip
    """The request file (if any) with the flags that were given laid over it."""
    data = request_data(request_file, model, gpu, "InferenceRequest")
    if (laid_serving := overlay(data.get("serving"), given({**serving, "concurrency": concurrency}))) is not None:
        data["serving"] = laid_serving
    if (load := _load(data, concurrency)) is not None:
        data["load"] = load
    return with_hub_model(InferenceRequest.model_validate(data))


def _compare(request: InferenceRequest, names: list[str]) -> list[tuple[str, InferenceEstimate]]:
    """The request once per weight format (--dtypes), with a progress bar on stderr for long comparisons."""
    formats = [(name, _choice(DTYPE_FORMATS, name, "--dtypes")) for name in names]
    rows: list[tuple[str, InferenceEstimate]] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), transient=True,
                  console=Console(stderr=True), disable=len(formats) < COMPARISON_PROGRESS_MIN) as bar:  # fmt: skip
        task = bar.add_task("estimating", total=len(formats))
        for name, fmt in formats:
            serving = request.serving.model_copy(update={"weight_format": fmt})
            rows.append((name, estimate_inference(request.model_copy(update={"serving": serving}), load_catalog())))
            bar.advance(task)
    return rows


def inference(
    ctx: typer.Context,
    request_file: Annotated[
        Path | None,
        typer.Option(
            "--request", help="An InferenceRequest as JSON (as POSTed to /v1/estimates/inference).", dir_okay=False
        ),
    ] = None,
    model: ModelOption = None,
    gpu: GpuOption = None,
    tp: Annotated[
        int | None,
        typer.Option(
            "-tp",
            "--tensor-parallel-size",
            "--tp",
            help="Tensor-parallel GPUs per replica.",
            show_default=_default("tensor_parallel"),
        ),
    ] = None,
    dcp: Annotated[
        int | None,
        typer.Option(
            "-dcp",
            "--decode-context-parallel-size",
            help="GPUs of the TP group that stripe an MLA latent cache by position (vLLM 0.11+).",
            show_default=_default("decode_context_parallel"),
        ),
    ] = None,
    quantization: Annotated[
        str | None,
        typer.Option(
            "--quantization",
            "-q",
            "--weight-format",
            help="Weight format: vLLM names (fp8, awq, gptq, "
            "bitsandbytes, mxfp4) or memplan's (int4_awq, fp8_block, nf4, ...).",
            show_default=_default("weight_format"),
        ),
    ] = None,
    dtype: Annotated[
        str | None,
        typer.Option(
            help="Unquantized weights and activations: auto, bfloat16, float16, float32.", show_default="auto"
        ),
    ] = None,
    kv_cache_dtype: Annotated[
        str | None,
        typer.Option(
            help="KV cache: auto, bf16, fp16, fp8 (fp8_e4m3, fp8_e5m2).", show_default=_default("kv_cache_dtype")
        ),
    ] = None,
    block_size: Annotated[
        int | None, typer.Option(help="KV page size in tokens.", show_default=_default("block_size"))
    ] = None,
    max_num_seqs: Annotated[
        int | None, typer.Option(help="Most sequences in one batch.", show_default=_default("max_num_seqs"))
    ] = None,
    max_num_batched_tokens: Annotated[
        int | None, typer.Option(help="Token budget of one forward.", show_default=_default("max_num_batched_tokens"))
    ] = None,
    max_model_len: Annotated[
        int | None,
        typer.Option(
            help="Size each sequence at this many tokens (prompt = length − output tokens).",
            show_default="prompt + output tokens",
        ),
    ] = None,
    prompt_tokens: Annotated[
        int | None, typer.Option(help="Prompt length per sequence.", show_default=_default("prompt_tokens"))
    ] = None,
    output_tokens: Annotated[
        int | None, typer.Option(help="Generated tokens per sequence.", show_default=_default("output_tokens"))
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            help="Concurrent requests: the decode batch, and latency under this load (TTFT/TPOT "
            "percentiles) where the GPU and engine have kernel tables.",
            show_default=_default("concurrency"),
        ),
    ] = None,
    engine: Annotated[Engine | None, typer.Option(help="Serving engine.", show_default=_default("engine"))] = None,
    engine_version: Annotated[
        str | None, typer.Option(help="Engine version, e.g. 0.19.0.", show_default="the newest modelled")
    ] = None,
    gpu_memory_utilization: Annotated[
        float | None,
        typer.Option(help="Share of device memory the engine may use (0, 1].", show_default="the engine's default"),
    ] = None,
    dtypes: Annotated[
        str | None,
        typer.Option(
            help="Compare weight formats in one table: --dtypes bf16 fp8 int4 (or bf16,fp8,int4).", show_default=False
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Serving: memory per GPU, fit, KV capacity, prefill and decode speed. Flags override --request."""
    if ctx.args and dtypes is None:
        raise typer.BadParameter(f"unexpected arguments {' '.join(ctx.args)}")
    weight_format = _choice(QUANTIZATION_ALIASES, quantization, "--quantization / --weight-format")
    serving = {
        **_context_fields(max_model_len, output_tokens, prompt_tokens),
        **_dtype_fields(_choice(DTYPE_ALIASES, dtype, "--dtype"), weight_format),
        "tensor_parallel": tp,
        "decode_context_parallel": dcp,
        "kv_cache_dtype": _choice(KV_DTYPE_ALIASES, kv_cache_dtype, "--kv-cache-dtype"),
        "block_size": block_size,
        "max_num_seqs": max_num_seqs,
        "max_num_batched_tokens": max_num_batched_tokens,
        "engine": engine,
        "engine_version": engine_version,
        "gpu_memory_utilization": gpu_memory_utilization,
    }
    names = [n for part in [dtypes or "", *ctx.args] for n in part.replace(",", " ").split()] if dtypes else []
    with user_errors():
        request = inference_request(request_file, model, gpu, serving, concurrency)
        if names:
            rows = _compare(request, names)
        else:
            estimate = estimate_inference(request, load_catalog())
    if names:
        typer.echo(
            json.dumps([{"dtype": n, **e.model_dump(mode="json")} for n, e in rows]) if as_json else dtype_table(rows)
        )
    else:
        typer.echo(estimate.model_dump_json(indent=2) if as_json else estimate_table(estimate))
