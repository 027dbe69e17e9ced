"""Training make-it-fit: combinations, not one change at a time, ranked by tokens/s."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from planner import TrainingRequest, estimate_training, load_catalog
from planner.plans.training_fit import FitSearchSpec, TrainingFitRequest, fit_training

CATALOG = load_catalog()
GIB = 1 << 30
# README: full fine-tuning of Llama-3-70B, 8 × H100, ZeRO-3, 4K tokens, micro-batch 2
ZERO3 = {"data_parallel": 8, "zero_stage": 3, "sequence_length": 4096, "micro_batch_size": 2}


def test_two_changes_fit_where_none_fits_alone() -> None:
    e = estimate_training(TrainingRequest(model="llama-3-70b", gpu="h100-sxm", training=ZERO3), CATALOG)
    assert not e.fits
    singles = [s for s in e.suggestions if not s.combined]
    assert singles and not any(s.fits for s in singles)
    (combined,) = [s for s in e.suggestions if s.combined]
    assert combined.fits
    assert combined.change == "full gradient checkpointing + 8-bit AdamW (together)"
    # 55.13 GiB: ZeRO-3 weights 16.43 + 8-bit states 16.46 + block inputs 10.0 + outside blocks 4.41 + logits 7.83
    assert combined.peak_bytes / GIB == pytest.approx(55.13, abs=0.01)
    assert combined.peak_bytes <= e.budget_bytes


def test_search_ranks_fitting_combinations_by_tokens_per_s() -> None:
    search = FitSearchSpec(
        methods=("keep",),
        tensor_parallel=(1, 8),
        pipeline_parallel=(1,),
        zero_stages=(0, 3),
        offload_optimizer=(False,),
        micro_batches=(1, 2),
    )
    result = fit_training(
        TrainingFitRequest(model="llama-3-70b", gpu="h100-sxm", training=ZERO3, search=search), CATALOG
    )
    assert not result.fits
    # 1 method × 2 optimizers × 2 layouts (TP1·DP8, TP8·DP1) × 2 ZeRO stages × 1 offload × 3 checkpointing
    assert result.searched == 24
    assert result.options
    speeds = [o.tokens_per_s for o in result.options]
    assert speeds == sorted(speeds, reverse=True)
    for o in result.options:
        assert o.peak_bytes <= result.budget_bytes and o.num_gpus == 8 and not o.changes_method
        # the global batch stays 2 × 1 × 8 = 16 rows
        t = o.training
        assert t.micro_batch_size * t.gradient_accumulation_steps * t.data_parallel == 16
    # ZeRO-3 on 8 data-parallel GPUs with full checkpointing and 8-bit AdamW is among them, as the estimate found
    assert any(
        o.training.zero_stage == 3 and o.training.optimizer.kind == "adamw_8bit" and o.training.data_parallel == 8
        for o in result.options
    )
    assert result.best_keeping_method == result.options[0]


def test_the_search_is_bounded() -> None:
    with pytest.raises(ValidationError, match="at most 20,000"):
        FitSearchSpec(lora_ranks=tuple(range(1, 9)), tensor_parallel=tuple(range(1, 17)),
                      pipeline_parallel=tuple(range(1, 17)))  # fmt: skip
