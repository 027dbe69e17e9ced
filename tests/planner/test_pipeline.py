"""Pipeline-parallel serving: the layers and bytes each stage holds, and the rotation time of the micro-batches."""

from __future__ import annotations

import pytest

from planner import InferenceRequest, ServingSpec, SpecError, estimate_inference, load_catalog
from planner.model.kv_cache import kv_split
from planner.model.params import layer_kinds
from planner.serving.memory import weight_bytes
from planner.serving.pipeline import (
    PipelinedStepModel,
    micro_batches,
    p2p_s,
    pipeline_rotation_s,
    pipeline_stages,
    pp_layer_partition,
    replica_step_model,
)
from planner.serving.step_time import StepModel

CATALOG = load_catalog()


def test_layers_split_as_vllm_splits_them() -> None:
    # vllm get_pp_indices: ⌊80/3⌋ = 26 each, the remainder 2 to the two stages before the last
    assert pp_layer_partition(80, 3) == (27, 27, 26)
    assert pp_layer_partition(80, 4) == (20, 20, 20, 20)
    assert pp_layer_partition(61, 4) == (15, 15, 16, 15)  # DeepSeek-V3: 61 = 4·15 + 1, the extra layer on stage 2
    with pytest.raises(ValueError, match="between 1 and"):
        pp_layer_partition(32, 33)


def test_stage_weights_add_up_to_the_model() -> None:
    # Llama-3-70B (untied): the stages hold every layer once, the embedding (first) and the lm_head (last) once;
    # each stage spec also counts the final norm (h·2 = 16,384 B) and a middle stage a one-row placeholder vocabulary
    # (⌈1/TP⌉·h·2 = 16,384 B), so the sum is the whole plus (PP − 1)·h·2 + 2·h·2 = 81,920 B.
    spec = CATALOG.model("llama-3-70b").spec
    serving = ServingSpec(tensor_parallel=2)
    whole = weight_bytes(spec, serving)
    stages = pipeline_stages(spec, 4)
    assert [(s.start, s.end) for s in stages] == [(0, 20), (20, 40), (40, 60), (60, 80)]
    assert (
        sum(weight_bytes(s.spec, serving) for s in stages)
        == whole + 3 * spec.hidden_size * 2 + 2 * spec.hidden_size * 2
    )
    # the KV cache of a token is split the same way: 80 layers · 2 · (8 / 2) · 128 · 2 B in four parts of 20 layers
    full = kv_split(spec, 2, ServingSpec().resolved_mla_layout, 2).full
    assert full == 80 * 2 * 4 * 128 * 2
    assert [kv_split(s.spec, 2, ServingSpec().resolved_mla_layout, 2).full for s in stages] == [full // 4] * 4


def test_a_stage_keeps_each_layer_kind() -> None:
    # DeepSeek-V3: 61 layers as (15, 15, 16, 15); the first 3 are dense (first_k_dense_replace), so stage 0 holds
    # 3 dense + 12 MoE layers and stage 1 15 MoE layers
    spec = CATALOG.model("deepseek-v3").spec
    first, second = pipeline_stages(spec, 4)[:2]
    assert sorted((layout.kind, n) for layout, n in layer_kinds(first.spec)) == [("dense", 3), ("moe", 12)]
    assert [(layout.kind, n) for layout, n in layer_kinds(second.spec)] == [("moe", 15)]


def test_rotation_is_the_slower_of_a_pass_and_the_busiest_stage() -> None:
    # two balanced stages, two micro-batches of 1 s per stage: pass 1 + 1 = 2 s, busiest stage 1 + 1 = 2 s
    assert pipeline_rotation_s([[1.0, 1.0], [1.0, 1.0]], [0.0, 0.0]) == 2.0
    # one micro-batch: the second stage waits for the first (the bubble), 2 s for one token
    assert pipeline_rotation_s([[1.0], [1.0]], [0.0]) == 2.0
    # unbalanced: stage 0 takes 3 s per micro-batch, so it is busy 6 s per rotation; a pass is 3 + 1 + 0.5 s of send
    assert pipeline_rotation_s([[3.0, 3.0], [1.0, 1.0]], [0.5, 0.5]) == 6.0


def test_micro_batches_spread_decodes_and_keep_prompts_together() -> None:
    assert micro_batches(10, [(512, 0)], 4) == [(3, [(512, 0)]), (3, []), (2, []), (2, [])]
    assert micro_batches(1, [], 4) == [(1, [])]  # fewer units than stages: one micro-batch, a bubble
    assert micro_batches(0, [(2048, 0)], 2) == [(0, [(2048, 0)])]


def test_a_pipelined_decode_step_is_the_rotation_of_its_stages() -> None:
    spec = CATALOG.model("llama-3-70b").spec
    serving = ServingSpec(tensor_parallel=2, pipeline_parallel=2)
    model = replica_step_model(spec, serving, "h100-sxm")
    assert isinstance(model, PipelinedStepModel)
    first, last = model.stages
    # 64 sequences at context 2176: two micro-batches of 32; each stage runs both, the first stage without the
    # lm_head, so the busiest-stage bound is 2·max(dense + attention of stage 0, stage 1 with its lm_head) at 32
    s0 = first.step(32, 2176.0)
    s1 = last.step(32, 2176.0)
    busiest = 2 * max(s0.dense_s + s0.attention_s, s1.total_s)
    assert model.step(64, 2176.0).total_s == pytest.approx(max(busiest, model.step(64, 2176.0).total_s))
    assert model.step(64, 2176.0).total_s >= busiest
    # one sequence cannot fill two stages: the token passes through both in turn
    one = model.step(1, 2176.0).total_s
    assert one >= first.step(1, 2176.0).dense_s + last.step(1, 2176.0).total_s
    # PP = 1 stays the plain StepModel
    assert isinstance(replica_step_model(spec, ServingSpec(tensor_parallel=4), "h100-sxm"), StepModel)


def test_twin_stages_share_rows_and_every_stage_the_models_layer_grid() -> None:
    # Llama-3-70B on PP4: 20 identical layers per stage, so stages 0-2 (no lm_head) answer the same layer time and
    # one row of stage times serves them; the rotation equals the one over every stage timed on its own
    spec = CATALOG.model("llama-3-70b").spec
    model = replica_step_model(spec, ServingSpec(tensor_parallel=2, pipeline_parallel=4), "h100-sxm")
    assert isinstance(model, PipelinedStepModel)
    whole = replica_step_model(spec, ServingSpec(tensor_parallel=2), "h100-sxm")
    assert isinstance(whole, StepModel)
    assert all(st.layers[0].token_grid is whole.layers[0].token_grid for st in model.stages)
    fresh = PipelinedStepModel(model.stages, model.hidden)
    assert fresh._twins == (0, 0, 0, 3)
    # contexts are floored to a multiple of 16 first: 900 → 896, 5000.5 → 4992
    cases = [(64, 2176.0, 2176.0, []), (7, 900.0, 896.0, [(512, 0)]), (0, 0.0, 0.0, [(2048, 1024)])]
    for d, ctx, floored, prefill in [*cases, (130, 5000.5, 4992.0, [])]:
        mbs = micro_batches(d, prefill, 4)
        times = []
        for s, stage in enumerate(model.stages):
            costs = [stage.step(n, floored, chunks) for n, chunks in mbs]
            times.append([c.total_s if s == 3 else c.dense_s + c.attention_s for c in costs])
        sends = [p2p_s(model.tables, (n + sum(q for q, _ in chunks)) * model.hidden) for n, chunks in mbs]
        assert fresh.step(d, ctx, prefill).total_s == pipeline_rotation_s(times, sends)


def test_a_rotation_does_not_depend_on_which_context_asked_first() -> None:
    # 97 and 110 share a 16-token bucket (a stage times contexts under 128 exactly): asked in either order, on fresh
    # pipelines, both answer the rotation at 96, so a plan's or a simulation's figure never depends on the call
    # history of a shared step model
    spec = CATALOG.model("llama-3-70b").spec
    serving = ServingSpec(tensor_parallel=2, pipeline_parallel=2)
    model = replica_step_model(spec, serving, "h100-sxm")
    assert isinstance(model, PipelinedStepModel)
    up, down = PipelinedStepModel(model.stages, model.hidden), PipelinedStepModel(model.stages, model.hidden)
    first_up, second_up = up.step(48, 97.0), up.step(48, 110.0)
    second_down, first_down = down.step(48, 110.0), down.step(48, 97.0)
    assert first_up == second_up == first_down == second_down
    assert first_up == PipelinedStepModel(model.stages, model.hidden).step(48, 96.0)
    # a longer context reads more KV: a slower rotation
    assert up.step(48, 2048.0).total_s > first_up.total_s


def test_estimate_reports_stages_and_the_smallest_pool() -> None:
    request = InferenceRequest(
        model="llama-3-70b", gpu="h100-sxm", serving={"tensor_parallel": 2, "pipeline_parallel": 4, "concurrency": 8}
    )
    e = estimate_inference(request, CATALOG)
    assert e.num_gpus == 8
    assert [s.layers for s in e.stages] == [(0, 20), (20, 40), (40, 60), (60, 80)]
    # the first and last stages carry a vocabulary matrix (⌈128256/2⌉·8192·2 B = 0.98 GiB) where a middle stage
    # holds a one-row placeholder (8192·2 B), so they hold less KV
    assert e.stages[0].weight_bytes - e.stages[1].weight_bytes == 128256 // 2 * 8192 * 2 - 8192 * 2
    assert e.engine.kv_pool_tokens == min(s.kv_pool_tokens for s in e.stages)
    assert e.fits


@pytest.mark.parametrize(
    ("serving", "message"),
    [
        ({"pipeline_parallel": 81}, "between 1 and the model's 80 layers"),
        ({"pipeline_parallel": 2, "engine": "transformers"}, "pipeline_parallel must be 1"),
    ],
)
def test_impossible_pipelines_are_spec_errors(serving: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        estimate_inference(InferenceRequest(model="llama-3-70b", serving=serving), CATALOG)
    assert info.value.problems[0].loc == ("serving", "pipeline_parallel")
