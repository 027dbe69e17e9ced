"""The engine loop's cheaper events against the per-request loop (tests/planner/scheduler_reference.py), where they
take their shortcuts: a queue whose head waits for blocks (no admission pass until enough are free), KV pools that
preempt, prompts split across iterations, decode-set removals done in the finishing pass."""

from __future__ import annotations

import random

import pytest

from planner.serving.scheduler import Admission, EngineLimits, SchedulerPolicy, Workload, simulate
from planner.serving.step_time import StepModel
from tests.planner.scheduler_reference import simulate_reference


@pytest.fixture(scope="module")
def model(llama8b_h100_vllm: StepModel) -> StepModel:
    return llama8b_h100_vllm


def _preempting(rng: random.Random) -> tuple[EngineLimits, Workload]:
    """A closed loop on a pool that holds a few of its clients' requests at full length (blocks on demand), so its
    queue's head waits for blocks and decodes preempt: fixed lengths (cohorts) or mixed ones, chunked or
    prefill-first, budgets that split the prompts."""
    policy = rng.choice([SchedulerPolicy.MIXED_CHUNKED, SchedulerPolicy.PREFILL_FIRST])
    block = rng.choice([1, 16, 32])
    clients = rng.choice([4, 16, 48])
    n = clients * rng.choice([2, 4, 6])
    if rng.random() < 0.6:
        prompts, outputs = (rng.choice([100, 1000, 4096]),) * n, (rng.choice([64, 300, 900]),) * n
    else:
        prompts = tuple(rng.choice([100, 1000, 3000]) for _ in range(n))
        outputs = tuple(rng.choice([1, 200, 800]) for _ in range(n))
    longest = max(p + o for p, o in zip(prompts, outputs, strict=True))
    # room for the prompts of most clients, not for their outputs too
    pool = max(longest + block, int(sum(prompts[:clients]) * rng.uniform(0.5, 1.1)))
    limits = EngineLimits(policy, rng.choice([512, 2048, 8192]), 256, pool, block, Admission.ON_DEMAND)
    starts = tuple(sorted(rng.uniform(0, 0.3) for _ in range(clients))) if rng.random() < 0.3 else None
    return limits, Workload(prompts, outputs, concurrency=clients, client_start_s=starts)


@pytest.mark.parametrize("seed", range(48))
def test_preempting_pools_reproduce_the_per_request_loop_exactly(model: StepModel, seed: int) -> None:
    limits, workload = _preempting(random.Random(seed))
    assert simulate(model, limits, workload, steady_state=False) == simulate_reference(model, limits, workload)


def test_many_of_those_pools_preempt(model: StepModel) -> None:
    preempting = sum(simulate(model, *_preempting(random.Random(seed))).preemptions > 0 for seed in range(48))
    assert preempting >= 16  # 22 of the 48 draws


def test_a_request_larger_than_the_pool_fails_as_before_behind_running_ones(model: StepModel) -> None:
    # the queue's head waits for more blocks than the pool has: the loop does not skip admitting it (it would
    # never fit), so once the requests before it finish it raises what the per-request loop raises
    limits = EngineLimits(SchedulerPolicy.MIXED_CHUNKED, 2048, 256, 4000, 16, Admission.ON_DEMAND)
    workload = Workload((500, 500, 3000, 5000, 100), (50, 50, 50, 50, 50), concurrency=3)
    with pytest.raises(ValueError, match="does not fit") as new:
        simulate(model, limits, workload)
    with pytest.raises(ValueError, match="does not fit") as old:
        simulate_reference(model, limits, workload)
    assert str(new.value) == str(old.value)


def test_a_head_that_waits_for_blocks_is_admitted_when_they_are_free(model: StepModel) -> None:
    # a long prompt behind short ones in an open loop: it waits while they hold the pool, then runs (same events,
    # same latencies as the per-request loop)
    limits = EngineLimits(SchedulerPolicy.MIXED_CHUNKED, 1024, 256, 6000, 16, Admission.ON_DEMAND)
    prompts = (1500, 1500, 1500, 5000, 200, 200)
    arrivals = (0.0, 0.0, 0.0, 0.001, 0.002, 0.5)
    workload = Workload(prompts, (40,) * 6, arrival_times_s=arrivals)
    fast = simulate(model, limits, workload)
    assert fast == simulate_reference(model, limits, workload)
    assert fast.timings[3].ttft_s > fast.timings[0].e2e_s  # it waited for the first three to finish
