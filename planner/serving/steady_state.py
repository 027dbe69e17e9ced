"""The closed loop's steady state: once the engine loop's state repeats, the rest of the run repeats it.

With fixed prompt and output lengths and closed-loop clients, the engine loop is a deterministic function of its
integer state: the cohorts in each queue, those on their way to the engine included (their sizes, lengths, prompt
tokens computed, tokens held, blocks and block debts, in queue order, indices relative to the next request to send;
for those on their way, the iterations until the engine may schedule them), the free blocks, with batch waiting
the iterations prompts have been held back and with SGLang's receive interval its counter. Time never steers
it: a step's time is a function of its batch, nothing is scheduled to arrive, and a client sends its next request at
the instant its last one finished (to reach the engine a fixed number of iterations later). So when the state at
event e₂ equals the state at an earlier event e₁ with every request index shifted by the requests sent in between
(Δi), and every cohort's age (now − its send, now − its first token) equal too, then events e₂ … e₂ + (e₂ − e₁)
repeat events e₁ … e₂ exactly, shifted by Δi requests and by ΔT = now(e₂) − now(e₁) seconds, and so on for as long
as every client's send in a period finds a request to send (K·Δi ≤ requests unsent). The loop then jumps K periods
at once: the requests finishing in them get the latencies of the request Δi, 2Δi, … before them, the counters grow
by K times a period's, and every request still in flight is re-indexed and re-timed by K·Δi and K·ΔT.

Exact in integers (iterations, events, preemptions, decode batches, and which request finishes when); in seconds
up to rounding: the full loop adds the same step times at other magnitudes of `now`, so its latencies differ in the
last bits, some 1e-13 relative (tests/planner/test_steady_state.py asserts ≤ 1e-9 on every metric against the full
loop). Ages are compared to that same 1e-9, far below the one step (≥ µs) by which two different histories differ.
Open loops, sampled lengths, clients not yet started, or a period that would cross the work bound: no jump.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from planner.serving.decode_set import Cohort

if TYPE_CHECKING:
    from planner.serving.scheduler import _Simulation

__all__ = ["AGE_TOLERANCE", "SEEN_LIMIT", "Mark", "Watch", "cheap_key", "jump", "mark", "periods"]

AGE_TOLERANCE = 1e-9  # relative: ages that agree to this are the same age up to the rounding of `now`
# cheap keys remembered at most (some 10 MB); then forgotten and collected again, so a loop that never repeats does
# not hold one per event (the work bound admits millions of events)
SEEN_LIMIT = 1 << 16

# events, iterations, preemptions, decode batch sum, decode iterations, work, finished
Counters = tuple[int, int, int, int, int, int, int]


@dataclass(slots=True)
class Mark:
    """The loop's state at one event, for comparing with a later one: its fingerprint (integers, exact), the ages
    of its cohorts (seconds), its counters, requests sent, clock time and how many finishes were logged by then."""

    fingerprint: tuple[object, ...]
    ages: tuple[float, ...]
    counters: Counters
    sent: int
    now: float
    logged: int


@dataclass(slots=True)
class Watch:
    """What the loop remembers while it looks for a period. `seen`: the event at which each cheap key was last
    seen. When one comes back, p events after, p is a candidate period: the state is marked (`pending`) and marked
    again p events later (`due`), and the two compared. One candidate at a time, so a state is fingerprinted twice
    per candidate, not at every event."""

    seen: dict[tuple[int, int, int, int], int]
    pending: Mark | None = None
    due: int = 0


def cheap_key(sim: _Simulation) -> tuple[int, int, int, int]:
    """Counts that any two repeating states share (a filter: only states that agree here are fingerprinted)."""
    dec = sim.decoding
    # free blocks, decoding requests and the tokens they hold, requests prefilling
    return sim.free_blocks, dec.requests, dec.base_sum + dec.requests * dec.clock, sim.prefilling_requests


def _queued(c: Cohort, sent: int) -> tuple[int, ...]:
    return (c.first - sent, c.count, c.prompt, c.output, c.prefilled, c.generated, c.blocks, int(c.first_token < 0))


def _ages(c: Cohort, now: float) -> tuple[float, ...]:
    return (now - c.arrival, now - c.first_token) if c.first_token >= 0 else (now - c.arrival,)


def mark(sim: _Simulation) -> Mark:
    """The state as it steers the loop from here (see the module doc), and the ages of its requests."""
    dec, sent, now = sim.decoding, sim.sent, sim.now
    clock, on_demand = dec.clock, sim.on_demand
    ages: list[float] = []
    waiting = tuple(_queued(c, sent) for c in sim.waiting)
    # requests on their way: due in as many iterations, in order
    delayed = tuple((due - sim.iterations, *_queued(c, sent)) for due, c in sim.delayed)
    prefilling = tuple(_queued(c, sent) for c in sim.prefilling)
    decoding = tuple(
        # tokens (base + clock) and debt give an on-demand cohort's blocks; a reserving one keeps them in c.blocks
        (c.first - sent, c.count, c.prompt, c.output, c.base + clock, c.debt, 0 if on_demand else c.blocks)
        for c in dec.cohorts.values()
    )
    for queue in (sim.waiting, (c for _, c in sim.delayed), sim.prefilling, dec.cohorts.values()):
        for c in queue:
            ages += _ages(c, now)
    counters = (
        sim.events,
        sim.iterations,
        sim.preemptions,
        sim.decode_batch_sum,
        sim.decode_iterations,
        sim.work,
        sim.finished,
    )
    log = sim.finish_log
    fingerprint = (sim.free_blocks, sim.held, sim.recv_count, sim.reads, waiting, delayed, prefilling, decoding)
    return Mark(fingerprint, tuple(ages), counters, sent, now, len(log or ()))


def _same_ages(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Whether two states' ages agree up to rounding (equal fingerprints give equally many ages)."""
    return len(a) == len(b) and all(
        abs(x - y) <= AGE_TOLERANCE * max(abs(x), abs(y)) for x, y in zip(a, b, strict=True)
    )


def periods(sim: _Simulation, before: Mark, now: Mark, bound: int) -> int:
    """How many periods (before → now) the loop may jump: 0 unless the states match, then as many as leave every
    client's send a request to send and the work within `bound`."""
    if before.fingerprint != now.fingerprint or not _same_ages(before.ages, now.ages):
        return 0
    sent, elapsed = now.sent - before.sent, now.now - before.now
    work = now.counters[5] - before.counters[5]
    if sent <= 0 or elapsed <= 0 or work <= 0:
        return 0
    return max(0, min(sim.unsent // sent, (bound - sim.work) // work))


def jump(sim: _Simulation, before: Mark, now: Mark, k: int) -> None:
    """Advance the loop k periods (before → now) at once: latencies of the requests finishing in them, counters,
    and every request in flight re-indexed by k·Δi and re-timed by k·ΔT."""
    di, dt = now.sent - before.sent, now.now - before.now
    log, timings = sim.finish_log or [], sim.timings
    period = log[before.logged : now.logged]
    for j in range(1, k + 1):
        shift = j * di
        for first, count, timing in period:
            timings[first + shift : first + shift + count] = [timing] * count
    shift, elapsed = k * di, k * dt
    deltas = [b - a for a, b in zip(before.counters, now.counters, strict=True)]
    sim.delayed = [(due + k * deltas[1], c) for due, c in sim.delayed]  # due after as many more iterations
    for c in (*sim.waiting, *(c for _, c in sim.delayed), *sim.prefilling, *sim.decoding.cohorts.values()):
        c.first += shift
        c.arrival += elapsed
        if c.first_token >= 0:
            c.first_token += elapsed
    sim.decoding.reindex()
    sim.events += k * deltas[0]
    sim.iterations += k * deltas[1]
    sim.preemptions += k * deltas[2]
    sim.decode_batch_sum += k * deltas[3]
    sim.decode_iterations += k * deltas[4]
    sim.work += k * deltas[5]
    sim.finished += k * deltas[6]
    sim.sent += shift
    sim.unsent -= shift
    sim.now += elapsed
