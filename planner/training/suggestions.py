"""Configuration changes that lower a training peak: each on its own, and the smallest combination that fits.

A change (checkpointing, 8-bit AdamW, a smaller micro-batch, a ZeRO stage, LoRA) may not fit on its own when two
together do (full checkpointing and 8-bit AdamW bring Llama-3-70B's full fine-tuning at ZeRO-3 on 8 H100s to 55 GiB);
so after the single changes comes one combination: the changes applied in order of cost until the configuration
fits, then each dropped again if it still fits without it. planner.plans.training_fit searches every combination
and ranks them by tokens/s.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError

from planner._base import FrozenSpec
from planner.model.spec import ModelSpec
from planner.training.memory import training_phases
from planner.training.peft_params import TrainableParams, trainable_params
from planner.training.spec import MAX_ACCUMULATION_STEPS, Checkpointing, TrainingSpec

__all__ = ["Suggestion", "combined_suggestion", "suggestions"]


def _peak(spec: ModelSpec, training: TrainingSpec, tp: TrainableParams, micro_batch: int | None = None) -> int:
    return training_phases(spec, training, tp, micro_batch).peak.total_bytes


class Suggestion(FrozenSpec):
    """One configuration change and what it does to the peak."""

    change: str
    training: dict[str, Any] = Field(description="The fields of `training` to change.")
    peak_bytes: int
    saves_bytes: int
    fits: bool
    combined: bool = Field(default=False, description="Several changes together (none of them fits alone).")


def _candidates(t: TrainingSpec) -> list[tuple[str, dict[str, Any]]]:
    """Configuration changes in order of what they cost (throughput first, then model quality)."""
    out: list[tuple[str, dict[str, Any]]] = []
    if t.optimizer.kind == "adamw" and t.optimizer.implementation != "fused":
        out.append(
            (
                "fused AdamW (no foreach temporaries)",
                {"optimizer": {**t.optimizer.model_dump(), "implementation": "fused"}},
            )
        )
    if t.attention != "sdpa":
        out.append((f"SDPA/flash attention instead of {t.attention}", {"attention": "sdpa"}))
    # halving the micro-batch doubles accumulation, which must stay within what a TrainingSpec accepts
    if t.micro_batch_size > 1 and 2 * t.gradient_accumulation_steps <= MAX_ACCUMULATION_STEPS:
        out.append(
            (
                f"micro-batch {t.micro_batch_size // 2} with twice the gradient accumulation",
                {
                    "micro_batch_size": t.micro_batch_size // 2,
                    "gradient_accumulation_steps": t.gradient_accumulation_steps * 2,
                },
            )
        )
    if t.gradient_checkpointing is Checkpointing.NONE:
        out.append(("selective activation recomputation", {"gradient_checkpointing": "selective"}))
    if t.gradient_checkpointing is not Checkpointing.FULL:
        out.append(("full gradient checkpointing", {"gradient_checkpointing": "full"}))
    for stage in range(t.zero_stage + 1, 4) if t.data_parallel > 1 else ():
        out.append((f"ZeRO stage {stage}", {"zero_stage": stage}))
    if t.optimizer.kind == "adamw":
        out.append(("8-bit AdamW", {"optimizer": {**t.optimizer.model_dump(), "kind": "adamw_8bit"}}))
    if t.method.kind == "full":
        out.append(
            (
                "LoRA r=16 on all linears instead of full fine-tuning",
                {"method": {"kind": "lora", "rank": 16, "target_modules": "all-linear"}},
            )
        )
    if t.method.kind == "lora":
        out.append(("QLoRA (NF4 base) instead of LoRA", {"method": {**t.method.model_dump(), "kind": "qlora"}}))
    return out


def suggestions(spec: ModelSpec, t: TrainingSpec, peak: int, budget: int) -> tuple[Suggestion, ...]:
    """Each candidate change that lowers the peak, with the bytes it saves and whether it then fits."""
    out = []
    for change, patch in _candidates(t):
        try:
            changed = TrainingSpec.model_validate({**t.model_dump(), **patch})
        except ValidationError:  # a change the rest of the configuration rules out (8-bit AdamW with offload)
            continue
        new_peak = _peak(spec, changed, trainable_params(spec, changed.method))
        if new_peak < peak:
            out.append(
                Suggestion(
                    change=change,
                    training=patch,
                    peak_bytes=new_peak,
                    saves_bytes=peak - new_peak,
                    fits=new_peak <= budget,
                )
            )
    return tuple(out)


def _validated(t: TrainingSpec, patch: dict[str, Any]) -> TrainingSpec | None:
    try:
        return TrainingSpec.model_validate({**t.model_dump(), **patch})
    except ValidationError:
        return None


def _merge(patches: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for patch in patches:
        for key, value in patch.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    return merged


def combined_suggestion(spec: ModelSpec, t: TrainingSpec, peak: int, budget: int) -> Suggestion | None:
    """The changes applied together in the order of what they cost until the peak fits, then each one dropped again
    when the rest still fits without it (so no change is there that the fit does not need). None when every change
    together does not fit, or when one change alone already does.

    Source: derived here; each step is a full training_phases evaluation, at most 2·(changes) of them.
    """
    changes = [(name, patch) for name, patch in _candidates(t) if "method" not in patch]  # keep what is trained
    applied: list[tuple[str, dict[str, Any]]] = []
    current_peak = peak
    for name, patch in changes:
        trial = _validated(t, _merge([p for _, p in applied] + [patch]))
        if trial is None:
            continue
        trial_peak = _peak(spec, trial, trainable_params(spec, trial.method))
        if trial_peak < current_peak:
            applied.append((name, patch))
            current_peak = trial_peak
        if current_peak <= budget:
            break
    if current_peak > budget or len(applied) < 2:
        return None
    for item in list(applied):  # drop what the fit does not need
        rest = [x for x in applied if x is not item]
        trial = _validated(t, _merge([p for _, p in rest]))
        if trial is not None and len(rest) >= 1:
            trial_peak = _peak(spec, trial, trainable_params(spec, trial.method))
            if trial_peak <= budget:
                applied, current_peak = rest, trial_peak
    if len(applied) < 2:
        return None
    return Suggestion(
        change=" + ".join(name for name, _ in applied) + " (together)",
        training=_merge([p for _, p in applied]),
        peak_bytes=current_peak,
        saves_bytes=peak - current_peak,
        fits=True,
        combined=True,
    )
