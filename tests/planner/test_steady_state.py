"""The steady-state jump (planner.serving.steady_state) against the loop that runs every event: the same integers,
latencies within 1e-9 relative, and no jump where the state is not known to repeat."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from planner.serving import scheduler, steady_state
from planner.serving.scheduler import (
    Admission,
    EngineLimits,
    SchedulerPolicy,
    SimulationResult,
    SimulationTooLarge,
    Workload,
    simulate,
)
from planner.serving.step_time import StepModel
from tests.planner.test_scheduler import _with_batch_waiting, _with_recv_interval

REL = 1e-9


@pytest.fixture(scope="module")
def model(llama8b_h100_vllm: StepModel) -> StepModel:
    return llama8b_h100_vllm


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= REL * max(abs(a), abs(b))


def _agree(fast: SimulationResult, full: SimulationResult) -> None:
    """Integers equal, every latency and the makespan within 1e-9 relative."""
    assert (fast.iterations, fast.events, fast.preemptions) == (full.iterations, full.events, full.preemptions)
    assert fast.mean_decode_batch == full.mean_decode_batch  # a ratio of the same integers
    assert _close(fast.makespan_s, full.makespan_s)
    assert len(fast.timings) == len(full.timings)
    for t, u in zip(fast.timings, full.timings, strict=True):
        assert all(_close(x, y) for x, y in zip(t, u, strict=True)), (t, u)


def _closed_loop(rng: random.Random) -> tuple[EngineLimits, Workload]:
    """A closed loop of fixed lengths on an engine drawn to reach every policy, admission, a pool that preempts or
    not, budgets that split prompts, and clients that start together or spread."""
    policy, admission = rng.choice(list(SchedulerPolicy)), rng.choice(list(Admission))
    block = rng.choice([1, 16, 32])
    prompt, output = rng.choice([7, 300, 1000, 2000]), rng.choice([1, 2, 50, 200, 400])
    clients = rng.choice([1, 3, 8, 16, 32, 64])
    n = clients * rng.choice([4, 8, 16])
    pool = max(prompt + output + block, rng.choice([2 * (prompt + output), 20_000, 100_000, 400_000]))
    limits = EngineLimits(policy, rng.choice([512, 2048, 8192]), rng.choice([4, 16, 256]), pool, block, admission)
    starts = tuple(sorted(rng.uniform(0, 0.5) for _ in range(clients))) if rng.random() < 0.2 else None
    workload = Workload((prompt,) * n, (output,) * n, concurrency=clients, client_start_s=starts)
    limits = replace(limits, overlap_scheduling=rng.random() < 0.5)  # drawn last: the draws above as before
    return _with_recv_interval(_with_batch_waiting(limits, rng), rng), workload


@pytest.mark.parametrize("seed", range(120))
def test_the_jump_agrees_with_every_event_simulated(model: StepModel, seed: int, jumps: list[int]) -> None:
    limits, workload = _closed_loop(random.Random(seed))
    _agree(simulate(model, limits, workload), simulate(model, limits, workload, steady_state=False))


def test_most_closed_loops_of_fixed_lengths_jump(model: StepModel, jumps: list[int]) -> None:
    # the jump is taken, not just allowed: more than half of the draws above skip at least one period
    jumped = 0
    for seed in range(120):
        before = len(jumps)
        simulate(model, *_closed_loop(random.Random(seed)))
        jumped += len(jumps) > before
    assert jumped > 60


def test_a_256_client_loop_skips_most_of_its_events(model: StepModel, jumps: list[int]) -> None:
    # the bench's shape (8 requests per client), on a pool that holds them all: TensorRT-LLM's whole prompts
    limits = EngineLimits(SchedulerPolicy.MIXED_WHOLE, 8192, 2048, 1_400_000, 32, Admission.RESERVE_FULL)
    workload = Workload((2048,) * 2048, (512,) * 2048, concurrency=256)
    fast, full = simulate(model, limits, workload), simulate(model, limits, workload, steady_state=False)
    _agree(fast, full)
    assert sum(jumps) >= 2


def test_no_jump_without_a_closed_loop_of_fixed_lengths(model: StepModel, jumps: list[int]) -> None:
    # open loop, sampled lengths: the same result as every event simulated, bit for bit, and no jump
    limits = EngineLimits(SchedulerPolicy.MIXED_CHUNKED, 2048, 256, 400_000, 16, Admission.ON_DEMAND)
    rng = random.Random(1)
    arrivals = tuple(sorted(rng.uniform(0, 20) for _ in range(200)))
    sampled = tuple(rng.choice([100, 700]) for _ in range(256))
    for workload in (
        Workload((500,) * 200, (100,) * 200, arrival_times_s=arrivals),
        Workload(sampled, (64,) * 256, concurrency=32),
    ):
        assert simulate(model, limits, workload) == simulate(model, limits, workload, steady_state=False)
    assert not jumps


def _preempting_closed_loop(rng: random.Random) -> tuple[EngineLimits, Workload]:
    """A closed loop of fixed lengths on a pool that holds most of its clients' prompts but not their outputs: it
    may settle (and jump) before its first preemption, never after."""
    policy = rng.choice([SchedulerPolicy.MIXED_CHUNKED, SchedulerPolicy.PREFILL_FIRST])
    block, clients = rng.choice([1, 16, 32]), rng.choice([4, 16, 48])
    prompt, output = rng.choice([100, 1000, 4096]), rng.choice([64, 300, 900])
    n = clients * rng.choice([4, 8])
    pool = max(prompt + output + block, int(clients * prompt * rng.uniform(0.5, 1.1)))
    limits = EngineLimits(policy, rng.choice([512, 2048, 8192]), 256, pool, block, Admission.ON_DEMAND)
    workload = Workload((prompt,) * n, (output,) * n, concurrency=clients)
    return replace(limits, overlap_scheduling=rng.random() < 0.5), workload


@pytest.mark.parametrize("seed", range(40))
def test_preempting_pools_agree_with_every_event_simulated(model: StepModel, seed: int) -> None:
    limits, workload = _preempting_closed_loop(random.Random(seed))
    _agree(simulate(model, limits, workload), simulate(model, limits, workload, steady_state=False))


def test_preempting_draws_preempt(model: StepModel) -> None:
    preempting = sum(
        simulate(model, *_preempting_closed_loop(random.Random(seed))).preemptions > 0 for seed in range(40)
    )
    assert preempting >= 10  # 12 of the 40 draws (none of them jumps: they preempt before they settle)


def test_a_preempting_pool_runs_every_event(model: StepModel, jumps: list[int]) -> None:
    limits = EngineLimits(SchedulerPolicy.MIXED_CHUNKED, 8192, 1024, 40_000, 16, Admission.ON_DEMAND)
    workload = Workload((2000,) * 256, (2000,) * 256, concurrency=32)
    fast = simulate(model, limits, workload)
    assert fast.preemptions > 0
    assert fast == simulate(model, limits, workload, steady_state=False)


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.95])
def test_the_work_bound_refuses_where_the_full_loop_does(
    model: StepModel, fraction: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a jump never crosses the bound: a lowered bound stops both at the same event, with the same report
    limits = EngineLimits(SchedulerPolicy.MIXED_WHOLE, 8192, 2048, 1_400_000, 32, Admission.RESERVE_FULL)
    workload = Workload((2048,) * 1024, (256,) * 1024, concurrency=128)
    whole = scheduler._Simulation(model, limits, workload)
    whole.run()
    monkeypatch.setattr(scheduler, "MAX_SIMULATION_WORK", int(whole.work * fraction))
    with pytest.raises(SimulationTooLarge) as fast:
        simulate(model, limits, workload)
    with pytest.raises(SimulationTooLarge) as full:
        simulate(model, limits, workload, steady_state=False)
    assert str(fast.value) == str(full.value)


def test_forgetting_the_states_seen_keeps_the_agreement(model: StepModel, monkeypatch: pytest.MonkeyPatch) -> None:
    # the memory of cheap keys is bounded (SEEN_LIMIT); forgetting them only delays a jump, never changes a result
    monkeypatch.setattr(steady_state, "SEEN_LIMIT", 4)
    for seed in range(0, 120, 7):
        limits, workload = _closed_loop(random.Random(seed))
        _agree(simulate(model, limits, workload), simulate(model, limits, workload, steady_state=False))
