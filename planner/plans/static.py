"""Steady-state latency of one replica from a handful of step times: the cheap model that screens plan candidates.

The load simulation (planner.serving.load) runs the engine's loop request by request and costs 5-50 ms; these
closed forms cost microseconds and use the same step times, so the search can score tens of thousands of
candidates and simulate only the few it would recommend. They describe a steady state: no start-up burst, mean
lengths, every request's prefill mixed into the running decodes as a chunked-prefill engine mixes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import log, sqrt

from planner.serving.scheduler import StepTimer

__all__ = [
    "BatchCore",
    "StaticLatency",
    "batch_core",
    "closed_loop",
    "closed_loop_at",
    "mean_core",
    "mixed_prefill_s",
    "open_loop",
    "prefill_alone_s",
    "prefill_chunks",
    "prefill_stall_s",
]

Z_SCORES = {0.5: 0.0, 0.9: 1.2816, 0.99: 2.3263}  # standard normal quantiles
SLOT_HEADROOM_SIGMAS = 3.0  # Poisson arrivals: the running count exceeds mean + 3·√mean about 0.1 % of the time
LITTLE_ITERATIONS = 6  # fixed-point steps for the running batch of an open loop (converges in 3-4)
OVERLOAD_UTILIZATION = 0.95  # prefill share of the GPU time beyond which the queue is taken to grow without bound


@dataclass(frozen=True, slots=True)
class StaticLatency:
    """One replica in steady state (seconds; tokens/s of the replica)."""

    ttft_s: float  # mean
    tpot_s: float
    output_tokens_per_s: float
    running: float  # mean sequences decoding
    overloaded: bool = False
    queue_s: float = 0.0  # the mean queueing part of ttft_s (open loop)
    tpot_spread_s: float = 0.0  # one standard deviation of a request's TPOT (open loop: Poisson prefill stalls)

    def ttft_at(self, quantile: float) -> float:
        """TTFT at a quantile, the queueing delay taken as exponentially distributed around its mean (its p-quantile
        is mean·ln(1/(1 − p))); the deterministic part stays. Assumes: a heavy-traffic approximation (Kingman)."""
        return self.ttft_s - self.queue_s + self.queue_s * log(1 / (1 - quantile))

    def tpot_at(self, quantile: float) -> float:
        """TPOT at a quantile: mean + z_p·spread (normal approximation of the stall count)."""
        return self.tpot_s + Z_SCORES[quantile] * self.tpot_spread_s


def prefill_chunks(prompt: int, budget: int) -> list[tuple[int, int]]:
    """A prompt as chunked prefill splits it: (new tokens, tokens already cached) per iteration, ≤ budget each.

    Source: vllm/v1/core/sched/scheduler.py (a waiting request takes what is left of max_num_batched_tokens).
    """
    chunks, done = [], 0
    while done < prompt:
        q = min(budget, prompt - done)
        chunks.append((q, done))
        done += q
    return chunks


def prefill_alone_s(timer: StepTimer, prompt: int, budget: int) -> float:
    """A prompt's prefill on an idle replica: the floor of any TTFT. Formula: Σ_chunks t_step(0, ·, chunk)."""
    return sum(timer.step(0, 0.0, [chunk]).total_s for chunk in prefill_chunks(prompt, budget))


def mixed_prefill_s(timer: StepTimer, prompt: int, budget: int, decoding: int, context: float) -> float:
    """A prompt's own TTFT among `decoding` running sequences: the iterations that carry its chunks, whole.
    Formula: Σ_chunks t(B, ctx, chunk)."""
    return sum(timer.step(decoding, context, [chunk]).total_s for chunk in prefill_chunks(prompt, budget))


def prefill_stall_s(timer: StepTimer, prompt: int, budget: int, decoding: int, context: float) -> float:
    """Time one prompt adds to the iterations of `decoding` running sequences: Σ_chunks t(B, ctx, chunk) − t(B, ctx).

    Source: derived here; the a + b/output_len shape of measured TPOT at a fixed concurrency (DESIGN.md §3) is
      this stall spread over a request's output tokens.
    """
    if decoding == 0:
        return prefill_alone_s(timer, prompt, budget)
    base = timer.step(decoding, context).total_s
    return sum(timer.step(decoding, context, [chunk]).total_s - base for chunk in prefill_chunks(prompt, budget))


@dataclass(frozen=True, slots=True)
class BatchCore:
    """The step times at one running batch B that both loops are made of (mean context P + O/2)."""

    batch: int
    step_s: float  # a decode iteration of B sequences
    stall_s: float  # what one prompt adds to the iterations of the other B − 1
    own_prefill_s: float  # the iterations carrying a prompt among B − 1 decodes (its own TTFT without a queue)


def batch_core(
    timer: StepTimer, batch: int, prompt: int, output: int, budget: int, prefill_first: bool = False
) -> BatchCore:
    """The BatchCore of `batch` running sequences (prefill_stall_s, mixed_prefill_s at B − 1 decodes, from the same
    chunk steps). An engine that runs prompts in prefill-only iterations (SGLang's default) stalls the decodes for the
    whole prefill."""
    ctx = prompt + output / 2
    step_s = timer.step(batch, ctx).total_s
    if prefill_first:
        alone = prefill_alone_s(timer, prompt, budget)
        return BatchCore(batch, step_s, alone, alone)
    decoding = batch - 1
    if decoding == 0:
        own_s = mixed_prefill_s(timer, prompt, budget, 0, ctx)
        return BatchCore(batch, step_s, prefill_stall_s(timer, prompt, budget, 0, ctx), own_s)
    base = timer.step(decoding, ctx).total_s
    chunks_s = [timer.step(decoding, ctx, [chunk]).total_s for chunk in prefill_chunks(prompt, budget)]
    return BatchCore(batch, step_s, sum(t - base for t in chunks_s), sum(chunks_s))


def mean_core(weighted: list[tuple[BatchCore, float]]) -> BatchCore:
    """The BatchCore of a prompt-length mix: each time averaged with the lengths' weights (prefill stalls grow faster
    than linearly with the prompt, so the mix stalls more than its mean length)."""
    if len(weighted) == 1:
        return weighted[0][0]
    total = sum(w for _, w in weighted)

    def avg(values: list[float]) -> float:
        return sum(v * w for v, (_, w) in zip(values, weighted, strict=True)) / total

    return BatchCore(
        weighted[0][0].batch,
        avg([c.step_s for c, _ in weighted]),
        avg([c.stall_s for c, _ in weighted]),
        avg([c.own_prefill_s for c, _ in weighted]),
    )


def closed_loop_at(core: BatchCore, clients: int, output: int) -> StaticLatency:
    """`clients` users each sending the next request when the last one ends, on a replica running B = core.batch.

    Formula: TPOT = t(B) + (B − 1)·stall/O (each other request's prefill stalls the decodes once per O tokens);
      TTFT = the iterations carrying its chunks among B − 1 decodes + the prefill queue + the slot wait;
      slot wait = (c − B)·life/B (clients beyond the slots queue for the next free one; one frees every life/B),
      life = TTFT + (O − 1)·TPOT; prompts arrive at λ = c/(wait + life) and queue for the GPU as M/D/1 at
      ρ = λ·stall (mean wait ρ·stall/(2(1 − ρ))), overloaded when ρ ≥ 0.95; throughput = c·O/(wait + life).
    Source: derived here (Little's law for the closed loop; Pollaczek-Khinchine for the prefill queue); TPOT's
      a + b/O form as DESIGN.md §3 states it.
    """
    b = core.batch
    tpot = core.step_s + (b - 1) * core.stall_s / output
    queue = 0.0
    for _ in range(LITTLE_ITERATIONS):
        life = core.own_prefill_s + queue + (output - 1) * tpot
        wait = (clients - b) * life / b if clients > b else 0.0
        rho = clients / (wait + life) * core.stall_s
        if rho >= OVERLOAD_UTILIZATION:
            return StaticLatency(float("inf"), tpot, clients * output / (wait + life), float(b), overloaded=True)
        queue = rho * core.stall_s / (2 * (1 - rho))
    life = core.own_prefill_s + queue + (output - 1) * tpot
    wait = (clients - b) * life / b if clients > b else 0.0
    ttft = core.own_prefill_s + queue + wait
    return StaticLatency(ttft, tpot, clients * output / (wait + life), float(b), queue_s=queue)


def closed_loop(
    timer: StepTimer, clients: int, slots: int, prompt: int, output: int, budget: int, prefill_first: bool = False
) -> StaticLatency:
    """closed_loop_at with B = min(clients, slots)."""
    core = batch_core(timer, max(1, min(clients, slots)), prompt, output, budget, prefill_first)
    return closed_loop_at(core, clients, output)


def open_loop(core_at: Callable[[int], BatchCore], rate: float, slots: int, output: int) -> StaticLatency:
    """Poisson arrivals at `rate` per second on a replica running ≤ `slots` sequences; `core_at(B)` gives the step
    times at a running batch B (batch_core, memoized by the caller).

    Formula: ρ = λ·stall (share of time spent on prefill chunks); TPOT = t(B)/(1 − ρ); B = λ·(TTFT + O·TPOT) by
      Little's law, iterated to its fixed point; TTFT = half an iteration (an arrival lands mid-iteration) + the
      iterations carrying its chunks + ρ·stall/(2(1 − ρ)) (M/D/1 mean wait); a request meets n ≈ λ·O·TPOT other
      prefills, Poisson, so its TPOT spreads by √n·stall/O; overloaded when ρ ≥ 0.95 or B + 3·√B > slots (the
      running count of an M/G/∞ system is Poisson with mean B).
    Source: derived here: Little's law (B = λ·W); the M/D/1 mean wait (Pollaczek-Khinchine with deterministic
      service); the Poisson occupancy of M/G/∞.
    Assumes: core_at is a function of B; an iteration that lands on the batch of the one before repeats it exactly
      (every value is a function of the core), so the loop stops there.
    """
    b = 1.0
    own = tpot = queue = stall = 0.0
    last = 0
    for _ in range(LITTLE_ITERATIONS):
        batch = max(1, min(slots, round(b)))
        if batch == last:  # the fixed point: the same core, the same values
            break
        last = batch
        core = core_at(batch)
        stall = core.stall_s
        rho = rate * stall
        if rho >= OVERLOAD_UTILIZATION:
            return StaticLatency(float("inf"), float("inf"), 0.0, float(slots), overloaded=True)
        tpot = core.step_s / (1 - rho)
        queue = rho * stall / (2 * (1 - rho))
        own = core.step_s / 2 + core.own_prefill_s + queue
        b = rate * (own + output * tpot)
    spread = sqrt(rate * output * tpot) * stall / output
    overloaded = b + SLOT_HEADROOM_SIGMAS * sqrt(b) > slots
    return StaticLatency(own, tpot, rate * output, b, overloaded=overloaded, queue_s=queue, tpot_spread_s=spread)
