"""The engine's iteration loop, simulated: continuous batching, chunked prefill, token and sequence limits, KV pool.

Each iteration the scheduler of the engine builds a batch, the StepModel times it, and the clock advances:

- vLLM V1 (`mixed` scheduling, chunked prefill): the running sequences decode one token each; waiting prompts fill
  the rest of the token budget (max_num_batched_tokens), a prompt split across iterations when it does not fit.
  Source: vllm/v1/core/sched/scheduler.py (running requests first, then waiting, one token budget).
- TensorRT-LLM (`mixed`, no chunking by default): generation requests first, then whole context requests while
  they fit in max_num_tokens. Source: tensorrt_llm/_torch/pyexecutor/scheduler.py (micro-batch scheduler).
- SGLang (`prefill_first`): when prompts wait, the next iteration is a prefill-only batch of them (up to
  chunked_prefill_size tokens) and the running sequences pause; otherwise one decode iteration.
  Source: sglang/srt/managers/scheduler.py get_next_batch_to_run (mixed chunks off by default).

A request reaches the engine while it runs an iteration, and the engine schedules it in the iteration it
schedules next; an engine with overlap scheduling (TensorRT-LLM's PyTorch executor, SGLang, vLLM's AsyncScheduler)
schedules iteration n + 1 before iteration n's outputs are processed, so a request reaching it during iteration n
runs in n + 2, one iteration later than without. A closed-loop client's next request starts when its last token
reaches it, at the end of the iteration that produced it, and reaches the engine after the engine has gone on to
the next one: it runs at the earliest in the iteration after that one (one more with overlap). An idle engine
schedules what reaches it at once. Sources: tensorrt_llm/_torch/pyexecutor/py_executor.py _executor_loop_overlap
(fetch and schedule iteration n + 1, launch it, then process iteration n's responses); vllm/v1/engine/core.py
run_busy_loop (the input queue is read between steps) and vllm/v1/core/sched/async_scheduler.py; SGLang
python/sglang/srt/managers/scheduler.py event_loop_overlap.

SGLang can read its inbox less often (`--scheduler-recv-interval` N > 1): each pass of its event loop adds the
weight of the batch it ran last to a counter, 1 for a decode batch (and for none, an idle pass) and 1000 for any
other (a prefill), and reads the requests that reached it only where the counter reaches N, resetting it. So while
only decodes run a request waits up to N iterations before the scheduler sees it, an iteration with prompt tokens
is followed by a read, and an idle engine reads at once (its idle passes take microseconds). Source:
sglang/srt/managers/scheduler_recv_skipper.py `SchedulerRecvSkipper.handle` and the weights in
sglang/srt/environ.py (SGLANG_SCHEDULER_RECV_SKIPPER_WEIGHT_DEFAULT 1000, _DECODE 1, _NONE 1), called at the start
of scheduler.py `recv_requests`; the default interval is 1 (server_args.py), every pass reads.

TensorRT-LLM can hold prompts back to batch them (batch_wait_timeout_iters T, batch_wait_max_tokens_ratio r): when
the scheduler picked prompts and requests are decoding, the iteration runs the decodes alone unless the tokens it
would carry (the picked prompts' and one per decoding request) reach r × max_num_tokens or T iterations have been
held back since prompts last ran; then the prompts run and the count restarts. With either setting 0 nothing waits
(the engine's test `count ≥ T or tokens ≥ r × max_num_tokens` always passes), nor with nothing decoding, nor with
attention DP. Source: tensorrt_llm/_torch/pyexecutor/py_executor.py `_schedule` and `_waiting_requests`;
batch_wait_timeout_iters and batch_wait_max_tokens_ratio default to 0 in tensorrt_llm/llmapi/llm_args.py.

A prompt is admitted only while max_num_seqs and the KV pool allow (blocks for its prompt, or for prompt + output
where the engine reserves them); a decode that finds no free block preempts the newest running sequence, which is
recomputed later (vLLM's recompute preemption). The first token of a request comes at the end of the iteration that
finishes its prompt; its TPOT is (finish − first token) / (output − 1), as `vllm bench serve` and genai-perf report.

Runs of identical decode-only iterations are advanced in one step (their attention cost grows linearly with the
context, so the run is timed at its mean context), which keeps a 256-way simulation to a few thousand events.
No event walks the running requests: they move in cohorts (consecutive requests in one state, split where the engine
treats them apart) and the decoding ones advance on one clock with their sums kept incrementally
(planner.serving.decode_set), so an event costs the cohorts it changes. The results are those of the per-request
loop, exactly (tests/planner/test_scheduler.py checks them against it, tests/planner/scheduler_reference.py).

A closed loop of fixed lengths whose state comes back (the same cohorts, indices shifted by the requests sent in
between, the same ages) repeats from there: it jumps the whole periods its clients still have requests for
(planner.serving.steady_state). The integers stay exact and the latencies agree with every event simulated to
1e-9 relative (rounding of the clock); `simulate(..., steady_state=False)` runs every event.
"""

from __future__ import annotations

from bisect import insort
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from heapq import heappop, heappush
from math import ceil
from operator import itemgetter
from typing import NamedTuple, Protocol

from planner._gc import collector_paused
from planner.calibration.kernels import KernelTables
from planner.serving import steady_state
from planner.serving.decode_set import Cohort, DecodeSet
from planner.serving.step_time import StepCost

__all__ = [
    "MAX_SIMULATION_WORK",
    "Admission",
    "RequestTiming",
    "SchedulerPolicy",
    "SimulationResult",
    "SimulationTooLarge",
    "StepTimer",
    "Workload",
    "simulate",
]

# Work = Σ over engine events of the requests running at it (what a loop walking them would do; this one moves
# cohorts and costs less per event, but the bound is counted as before so the same loads are refused). 8·10^6 took
# 5.2 s on one core of the CI machine kind (shared) with the per-request loop: an overloaded open loop (arrivals
# faster than the engine drains them) or a preempting KV pool splits decode runs at every block and would otherwise
# run for minutes (236 s measured for 65,536 requests of 16K tokens at 2/s on one H200).
MAX_SIMULATION_WORK = 8_000_000
# SGLang's receive-interval weight of a batch with prompt tokens (SGLANG_SCHEDULER_RECV_SKIPPER_WEIGHT_DEFAULT)
PROMPT_BATCH_WEIGHT = 1000


class SimulationTooLarge(ValueError):
    """The workload needs more engine events than one answer may simulate."""


class StepTimer(Protocol):
    """What the loop needs from a replica: the time of one iteration (planner.serving.step_time.StepModel, or
    planner.serving.pipeline.PipelinedStepModel for a pipeline of stages) and the kernel tables behind it."""

    @property
    def tables(self) -> KernelTables: ...

    def step(self, decode_seqs: int, decode_context: float, prefill: Sequence[tuple[int, int]] = ()) -> StepCost: ...


class SchedulerPolicy(StrEnum):
    MIXED_CHUNKED = "mixed_chunked"  # vLLM V1
    MIXED_WHOLE = "mixed_whole"  # TensorRT-LLM without chunked context
    PREFILL_FIRST = "prefill_first"  # SGLang


class Admission(StrEnum):
    ON_DEMAND = "on_demand"  # blocks for the prompt now, one more per block_size tokens generated (vLLM, SGLang)
    RESERVE_FULL = "reserve_full"  # blocks for prompt + output at admission (TensorRT-LLM GUARANTEED_NO_EVICT)


@dataclass(frozen=True, slots=True)
class EngineLimits:
    policy: SchedulerPolicy
    token_budget: int  # max_num_batched_tokens / max_num_tokens / chunked_prefill_size
    max_num_seqs: int
    kv_capacity_tokens: int  # tokens the KV pool holds (all sequences together)
    block_size: int
    admission: Admission
    # the engine schedules iteration n + 1 while iteration n runs (see the module doc): a request reaching it
    # during iteration n runs in n + 2 at the earliest
    overlap_scheduling: bool = False
    # TensorRT-LLM's batch waiting (see the module doc): prompts the scheduler picked wait while requests decode,
    # until the batch's tokens reach batch_wait_tokens or batch_wait_iters iterations have waited; 0 = off
    batch_wait_iters: int = 0
    batch_wait_tokens: float = 0.0
    # SGLang's receive interval (see the module doc): the loop passes between reads of the requests that reached it
    recv_interval: int = 1


@dataclass(frozen=True, slots=True)
class Workload:
    """Requests of fixed prompt and output lengths from `concurrency` closed-loop clients (each sends its next
    request when the last one finishes), or at `request_rate` per second (Poisson arrivals)."""

    prompt_tokens: tuple[int, ...]  # one per request, in arrival order (fixed lengths repeat one value)
    output_tokens: tuple[int, ...]
    concurrency: int | None = None
    arrival_times_s: tuple[float, ...] | None = None  # open loop
    client_start_s: tuple[float, ...] | None = None  # closed loop: when each client sends its first request


class RequestTiming(NamedTuple):
    """One request's latencies (a tuple: a simulation makes thousands of them)."""

    ttft_s: float
    tpot_s: float
    e2e_s: float


_UNFINISHED = RequestTiming(float("nan"), float("nan"), float("nan"))
# RequestTiming((ttft, tpot, e2e)): what RequestTiming(ttft, tpot, e2e) makes, without the Python frame of its __new__
_timing: Callable[[tuple[float, float, float]], RequestTiming] = partial(tuple.__new__, RequestTiming)


@dataclass(frozen=True)
class SimulationResult:
    timings: tuple[RequestTiming, ...]
    iterations: int
    events: int
    makespan_s: float
    preemptions: int
    mean_decode_batch: float
    notes: tuple[str, ...] = field(default=())


def simulate(model: StepTimer, limits: EngineLimits, workload: Workload, steady_state: bool = True) -> SimulationResult:
    """Run every request of `workload` through the engine loop; per-request TTFT, TPOT and end-to-end times.

    With `steady_state` a closed loop of fixed lengths jumps over the periods its state repeats
    (planner.serving.steady_state: the same integers, latencies within 1e-9 relative); False runs every event."""
    with collector_paused():  # thousands of short-lived objects, no cycles (planner._gc)
        return _Simulation(model, limits, workload, steady_state).run()


class _Simulation:
    def __init__(self, model: StepTimer, limits: EngineLimits, workload: Workload, steady_state: bool = False) -> None:
        self.model, self.limits, self.w = model, limits, workload
        self.on_demand = limits.admission is Admission.ON_DEMAND
        self.prefill_first = limits.policy is SchedulerPolicy.PREFILL_FIRST
        self.whole_prompts = limits.policy is SchedulerPolicy.MIXED_WHOLE
        self.total_blocks = max(1, limits.kv_capacity_tokens // limits.block_size)
        self.free_blocks = self.total_blocks  # total − held; a long decode run may take it below zero (as before)
        self.now = 0.0
        self.waiting: deque[Cohort] = deque()
        # the running requests, in admission order: those prefilling (FIFO: chunks go to the oldest first) and those
        # decoding, which all started decoding after every older one
        self.prefilling: deque[Cohort] = deque()
        self.prefilling_requests = 0
        self.decoding = DecodeSet(limits.block_size, self.on_demand)
        # the head of the waiting queue when the pool last refused it, and the blocks per request it needs: while it
        # heads the queue and fewer are free, _admit would return at once (a need ≤ the pool: with nothing running
        # every block is free, so an oversized request still reaches _admit and its error)
        self.blocked: Cohort | None = None
        self.blocked_need = 0
        # requests on their way to a busy engine: (the iteration count from which it may schedule them, cohort),
        # in that order (see the module doc)
        self.delayed: list[tuple[int, Cohort]] = []
        self.arrival_lag = 1 if limits.overlap_scheduling else 0  # iterations an arrival waits past the next one
        # batch waiting (TensorRT-LLM): on when both settings are; `held` counts the iterations held back since
        # prompts last ran, `holding` marks the decode run that holds them back now
        self.batch_wait = limits.batch_wait_iters > 0 and limits.batch_wait_tokens > 0
        self.held = 0
        self.holding = False
        # SGLang's receive interval: `recv_count` is the counter after the current loop pass's test, `reads` whether
        # that pass reads the requests that reached the engine (always, at an interval of 1)
        self.recv_interval = limits.recv_interval
        self.gated = limits.recv_interval > 1
        self.recv_count = 0
        self.reads = True
        n = len(workload.prompt_tokens)
        self.timings = [_UNFINISHED] * n  # by request index, set when it finishes
        self.finished = 0
        self.iterations = self.events = self.preemptions = 0
        self.decode_batch_sum = 0
        self.decode_iterations = 0
        self.sent = 0  # requests sent, in index order
        self.unsent = n
        self.scheduled: deque[float] = deque()  # send times not yet reached
        self.uniform = len(set(workload.prompt_tokens)) <= 1 and len(set(workload.output_tokens)) <= 1
        self.work = 0
        # a closed loop of fixed lengths may repeat its state (planner.serving.steady_state): its finishes are logged
        self.closed = workload.concurrency is not None  # clients send on finishing
        self.repeatable = steady_state and self.closed and self.uniform
        self.finish_log: list[tuple[int, int, RequestTiming]] | None = [] if self.repeatable else None

    def running(self) -> int:
        return self.prefilling_requests + self.decoding.requests

    def _arrival(self, lag: int) -> tuple[int, bool]:
        """`lag` for requests reaching the engine now, and whether they wait for its next read (a receive interval):
        an idle engine (nothing queued or running) schedules them at once."""
        busy = bool(self.waiting or self.prefilling_requests or self.decoding.requests)
        return (lag, self.gated) if busy else (0, False)

    # arrivals -----------------------------------------------------------------------------------------------------
    def _send(self, count: int, at: float, lag: int = 0, gated: bool = False) -> None:
        """Send the next `count` requests (or as many as are left) at `at`, as cohorts of equal lengths; `lag` > 0:
        they reach a busy engine, which schedules them `lag` iterations after the one it ran last."""
        sent, n = self.sent, len(self.w.prompt_tokens)
        end = sent + count if sent + count < n else n  # min(), without the builtin's argument parsing
        if self.uniform:
            self._queue(sent, end, at, lag, gated)
        else:
            i = sent
            while i < end:
                j = self._same_lengths_until(i, end)
                self._queue(i, j, at, lag, gated)
                i = j
        self.unsent -= end - sent
        self.sent = end

    def _queue(self, i: int, j: int, at: float, lag: int = 0, gated: bool = False) -> None:
        """Requests i .. j − 1, of equal lengths, join the waiting queue: as a cohort, or with the last one; or,
        `lag` > 0, the requests on their way, due `lag` iterations after the one that ran last."""
        waiting, prompt, out = self.waiting, self.w.prompt_tokens[i], self.w.output_tokens[i]
        if lag or gated:  # on their way, or (a receive interval) waiting for the busy engine's next read
            due, delayed = self.iterations + lag, self.delayed
            entry = (due, Cohort(i, j - i, prompt, out, at, out))
            if delayed and delayed[-1][0] > due:  # a closed loop's first requests among later re-sends
                insort(delayed, entry, key=itemgetter(0))
            else:
                delayed.append(entry)
            return
        if waiting:
            last = waiting[-1]
            if (  # request i, sent at `at`, follows the last waiting cohort and is in its state
                last.arrival == at  # the test that fails most often first: sent at another instant
                and last.first + last.count == i
                and last.prefilled == 0
                and last.first_token < 0  # never admitted (a preempted cohort has a first token)
                and last.prompt == prompt
                and last.output == out
            ):
                last.count += j - i
                return
        waiting.append(Cohort(i, j - i, prompt, out, at, out))

    def _same_lengths_until(self, i: int, end: int) -> int:
        """The end of the run of requests from i (before `end`) with request i's prompt and output lengths."""
        prompts, outputs = self.w.prompt_tokens, self.w.output_tokens
        j = i + 1
        while j < end and prompts[j] == prompts[i] and outputs[j] == outputs[i]:
            j += 1
        return j

    def _initial_arrivals(self) -> None:
        if self.w.concurrency is not None:
            clients = min(self.w.concurrency, len(self.w.prompt_tokens))
            starts = self.w.client_start_s or (0.0,) * clients
            self.scheduled = deque(sorted(starts[:clients]))
        else:
            self.scheduled = deque(self.w.arrival_times_s or ())
        self._release_open_loop(0.0)

    def _release_open_loop(self, until: float, lag: int = 0) -> None:
        """Send every scheduled request (open-loop arrivals, closed-loop clients' first requests) due by `until`
        (`lag`: they arrived while an iteration ran)."""
        scheduled = self.scheduled
        lag, gated = self._arrival(lag)
        while scheduled and self.unsent and scheduled[0] <= until:
            at, count = scheduled.popleft(), 1
            while scheduled and scheduled[0] == at:  # a burst: clients that start together
                scheduled.popleft()
                count += 1
            self._send(count, at, lag, gated)

    def _release_delayed(self, every: bool = False) -> None:
        """The requests on their way that the engine may schedule now (`every`: all of them, an idle engine)."""
        delayed, now = self.delayed, self.iterations
        k = len(delayed) if every else 0
        while k < len(delayed) and delayed[k][0] <= now:
            k += 1
        self.waiting.extend(c for _, c in delayed[:k])
        del delayed[:k]

    def _next_arrival(self) -> float | None:
        return self.scheduled[0] if self.scheduled and self.unsent else None

    # admission ----------------------------------------------------------------------------------------------------
    def _admit(self) -> None:
        """Admit waiting requests in order while max_num_seqs and the KV pool allow."""
        waiting, max_seqs, bs = self.waiting, self.limits.max_num_seqs, self.limits.block_size
        running = self.prefilling_requests + self.decoding.requests
        on_demand = self.on_demand
        while waiting and running < max_seqs:
            c = waiting[0]
            need = -(-(c.prompt + (1 if on_demand else c.output)) // bs)  # blocks per request, ≥ 1
            free = self.free_blocks
            if need > free:
                if not running and need > self.total_blocks:
                    raise ValueError("a single request does not fit in the KV pool")
                if need <= self.total_blocks:  # c waits for `need` free blocks: until then admitting is a no-op
                    self.blocked, self.blocked_need = c, need
                return
            fit = free // need  # min(c.count, max_seqs − running, free // need)
            if fit > c.count:
                fit = c.count
            if fit > max_seqs - running:
                fit = max_seqs - running
            part = waiting.popleft() if fit == c.count else c.split_front(fit)
            self.free_blocks = free - fit * need
            part.blocks = need
            self.prefilling.append(part)  # with its prompt (or, after a preemption, prompt + output) to compute
            self.prefilling_requests += fit
            running += fit
        self.blocked = None

    # one iteration ------------------------------------------------------------------------------------------------
    def _fill(self, budget: int, whole: bool) -> tuple[list[tuple[Cohort, int, int]], list[tuple[int, int]]]:
        """Prompt tokens for the oldest prefilling requests within `budget`: chunked (the last one split where the
        budget ends), or `whole` prompts only (TensorRT-LLM; the first one even past the budget)."""
        chunks: list[tuple[Cohort, int, int]] = []
        prefill: list[tuple[int, int]] = []
        for c in self.prefilling:
            count, prefilled = c.count, c.prefilled
            left = c.prompt - prefilled
            served = budget // left if budget > 0 else 0
            if served > count:
                served = count
            if whole and not served and not chunks:
                served = 1  # the first prompt goes in whole, whatever the budget
            if served:
                chunks.append((c, served, left))
                if served == 1:
                    prefill.append((left, prefilled))
                else:
                    prefill += [(left, prefilled)] * served
                budget -= served * left
            if served < count:
                if not whole and budget > 0:  # the next request gets the rest of the budget
                    chunks.append((c, 1, budget))
                    prefill.append((budget, prefilled))
                break
        return chunks, prefill

    def _batch_waiting(
        self, chunks: list[tuple[Cohort, int, int]], prefill: list[tuple[int, int]]
    ) -> tuple[list[tuple[Cohort, int, int]], list[tuple[int, int]]]:
        """TensorRT-LLM's batch waiting (module doc): the prompts picked, or none while they are held back."""
        tokens = self.decoding.requests + sum(served * q for _, served, q in chunks)
        if self.held >= self.limits.batch_wait_iters or tokens >= self.limits.batch_wait_tokens:
            self.held = 0
            return chunks, prefill
        self.holding = True
        return [], []

    def _grow_kv(self, needing: int) -> None:
        """Blocks for the token each decoding request adds (`needing` of them need one) when fewer are free: preempt
        the newest requests while the pool runs dry."""
        dec = self.decoding
        while needing > self.free_blocks and dec.requests > 1:
            c = dec.newest()  # its last requests are the newest admitted
            grows, held = int(dec.grows(c)), dec.held_blocks(c)
            # the engine preempts one at a time until the blocks suffice or one request is left
            victims = min(c.count, dec.requests - 1, -(-(needing - self.free_blocks) // (grows + held)))
            needing -= victims * grows
            self._preempt(dec.take_newest(victims))
        if needing <= self.free_blocks:  # every one gets its block
            self.free_blocks -= needing
            dec.grant_all()
        else:  # one request is left and no block is free: it decodes on without one
            dec.deny(dec.newest())

    def _preempt(self, c: Cohort) -> None:
        self.preemptions += c.count
        self.free_blocks += c.count * c.blocks
        c.blocks = 0
        # recompute: the prompt and the tokens generated so far are prefilled again on readmission
        c.prompt, c.output = c.prompt + c.generated, c.output - c.generated
        c.prefilled, c.generated = 0, 0
        self.waiting.appendleft(c)

    def _finish(self) -> None:
        """The decoding cohorts whose output is complete now (tokens ≥ prompt + output): out of the decode set (its
        finish heap, cohorts, residues and sums, as DecodeSet.remove keeps them), their latencies, their blocks back,
        and (closed loop) as many requests sent. Called when the finish heap's top is due."""
        dec = self.decoding
        heap, clock, cohorts, short = dec.finish_heap, dec.clock, dec.cohorts, dec.short
        on_demand, bs, residues = self.on_demand, dec.bs, dec.residues
        now, timings, log = self.now, self.timings, self.finish_log
        done = freed = bases = 0
        while heap and heap[0][0] <= clock:
            finish_at, first = heappop(heap)
            c = cohorts.get(first)
            if c is None or c.finish_at != finish_at:
                continue  # stale: the cohort left (preempted whole, and maybe re-entered with another finish_at)
            del cohorts[first]
            if short:
                short.pop(first, None)
            count, base = c.count, c.base
            bases += count * base
            if on_demand:  # each holds ⌈tokens / bs⌉ − debt blocks (dec.held_blocks)
                freed += count * (-(-(base + clock) // bs) - c.debt)
                rho = base % bs
                left = residues[rho] - count
                if left:
                    residues[rho] = left
                else:
                    del residues[rho]
            else:
                freed += count * c.blocks
            out, first_token, arrival = c.output_orig, c.first_token, c.arrival
            tpot_s = (now - first_token) / (out - 1) if out > 1 else 0.0
            timing = _timing((first_token - arrival, tpot_s, now - arrival))  # RequestTiming(ttft, tpot, e2e)
            if count == 1:
                timings[first] = timing
            else:
                timings[first : first + count] = [timing] * count
            if log is not None:
                log.append((first, count, timing))
            done += count
        dec.requests -= done
        dec.base_sum -= bases
        self.free_blocks += freed
        self.finished += done
        if done and self.closed and self.unsent:
            self._send(done, now, *self._arrival(1 + self.arrival_lag))  # reaches it after its next iteration began

    def _decode_run_length(self) -> int:
        """Identical decode-only iterations until a request finishes (or, open loop, the next arrival)."""
        steps = self.decoding.steps_to_finish()
        if self.on_demand and self.free_blocks < self.decoding.requests:
            # iterations before some request needs a new block while none is free
            block = self.decoding.steps_to_block()
            if block < steps:
                steps = block
        if self.delayed:  # until the engine may schedule a request on its way
            due = self.delayed[0][0] - self.iterations
            if self.gated:
                due = self._next_read(due)
            if due < steps:
                steps = due
        if self.holding:  # until the prompts held back have waited their iterations
            left = self.limits.batch_wait_iters - self.held
            if left < steps:
                steps = left
        return steps if steps > 1 else 1

    def _next_read(self, due: int) -> int:
        """The decode-only iterations from now to the first loop pass at least `due` iterations on that reads (each
        pass adds 1 to the counter; it reads where the counter reaches the interval)."""
        n = self.recv_interval
        first = n - self.recv_count  # ≥ 1: the counter is below the interval after each pass's test
        if due <= first:
            return first
        return first + -(-(due - first) // n) * n

    def _count_passes(self, weight: int, passes: int = 1) -> None:
        """The counter over `passes` loop passes after iterations of `weight` (1 decode, 1000 with prompt tokens)."""
        n, count = self.recv_interval, self.recv_count
        if weight == 1:
            total = count + passes
            self.recv_count = total % n
            self.reads = total >= n and self.recv_count == 0
            return
        for _ in range(passes):
            count += weight
            self.reads = count >= n
            if self.reads:
                count = 0
        self.recv_count = count

    def _decode_run(self) -> None:
        """A run of identical decode-only iterations, timed at the run's mean context."""
        dec = self.decoding
        run = self._decode_run_length()
        arrival = self._next_arrival()
        n = dec.requests
        ctx = dec.context_sum() / n
        step_s = self.model.step(n, ctx + (run - 1) / 2).total_s
        if arrival is not None and arrival < self.now + run * step_s:
            run = max(1, ceil((arrival - self.now) / step_s))
        if self.on_demand and run > 1:
            self.free_blocks -= dec.blocks_for_run(run)  # the blocks the run needs beyond its first token
        self.now += run * step_s
        self.iterations += run
        if self.holding:
            self.held += run
        self.decode_batch_sum += n * run
        self.decode_iterations += run
        if self.gated:
            self._count_passes(1, run)
        dec.advance(run)
        if dec.finish_heap[0][0] <= dec.clock:  # some request got its last token
            self._finish()

    def _mixed_step(self, decodes: bool, chunks: list[tuple[Cohort, int, int]], prefill: list[tuple[int, int]]) -> None:
        """One iteration of prompt chunks, with the decoding requests' tokens unless the policy pauses them."""
        dec, prefilling = self.decoding, self.prefilling
        clock = dec.clock
        n = dec.requests if decodes else 0
        ctx = (dec.base_sum + n * clock) / n if n else 0.0  # dec.context_sum() / n
        now = self.now = self.now + self.model.step(n, ctx, prefill).total_s
        self.iterations += 1
        if self.gated:
            self._count_passes(PROMPT_BATCH_WEIGHT)
        if n:
            self.decode_batch_sum += n
            self.decode_iterations += 1
            clock = dec.clock = clock + 1  # dec.advance(1)
        started = 0
        for c, served, q in chunks:  # c is the oldest prefilling cohort
            part = prefilling.popleft() if served == c.count else c.split_front(served)
            prefilled = part.prefilled = part.prefilled + q
            prompt = part.prompt
            if prefilled < prompt:
                prefilling.appendleft(part)  # a prompt split across iterations
                continue
            count, first = part.count, part.first
            started += count
            if part.first_token < 0:
                part.first_token = now
            # the iteration that finishes the prompt samples a token: dec.add(part) with part.generated = 1, inlined
            part.generated = 1
            part.base = base = prompt + 1 - clock
            part.finish_at = finish_at = prompt + part.output - base
            part.debt = 0
            dec.cohorts[first] = part
            dec.requests += count
            dec.base_sum += count * base
            heappush(dec.finish_heap, (finish_at, first))
            if self.on_demand:
                residues, rho = dec.residues, base % dec.bs
                residues[rho] = residues.get(rho, 0) + count
        self.prefilling_requests -= started
        heap = dec.finish_heap
        if heap and heap[0][0] <= clock:  # some request got its last token
            self._finish()

    def _too_large(self) -> SimulationTooLarge:
        return SimulationTooLarge(
            f"{self.events:,} engine events for {self.finished:,} of {len(self.w.prompt_tokens):,} requests "
            f"reached the bound of {MAX_SIMULATION_WORK:,} request-events"
        )

    def _tick(self) -> None:
        """Admit what fits, then run one engine event (or wait for the next arrival): the batch under the policy
        (`_fill`), blocks for the decoding requests' tokens (`_grow_kv`), then the iteration (`_mixed_step`) or a
        run of decode-only ones (`_decode_run`)."""
        if self.delayed and self.delayed[0][0] <= self.iterations and self.reads:
            self._release_delayed()
        waiting = self.waiting
        if waiting and (waiting[0] is not self.blocked or self.free_blocks >= self.blocked_need):
            self._admit()
        dec = self.decoding
        if not (self.prefilling_requests or dec.requests):  # nothing running
            # an idle engine's loop passes come microseconds apart: it reads within them, its counter restarting
            self.recv_count, self.reads = 0, True
            if self.delayed:  # an idle engine schedules what reaches it at once
                self._release_delayed(every=True)
                return
            nxt = self._next_arrival()
            if nxt is None:
                raise RuntimeError("requests wait but none can run")
            self.now = max(self.now, nxt)
            self._release_open_loop(self.now)
            return
        chunks: list[tuple[Cohort, int, int]]
        prefill: list[tuple[int, int]]
        if self.prefilling:  # the decoding requests take part unless the policy pauses them
            if self.prefill_first:
                decodes = False
                chunks, prefill = self._fill(self.limits.token_budget, whole=False)
            else:
                decodes = True
                chunks, prefill = self._fill(self.limits.token_budget - dec.requests, self.whole_prompts)
                if self.batch_wait and chunks and dec.requests:
                    chunks, prefill = self._batch_waiting(chunks, prefill)
        else:
            decodes, chunks, prefill = True, [], []
        if decodes and dec.requests:
            if self.on_demand:
                # dec.growing(), inlined: the requests whose tokens ≡ 0 (mod bs), and those short of a block
                needing = dec.residues.get(-dec.clock % dec.bs, 0) if not dec.short else dec.growing()
                if needing <= self.free_blocks:  # the common case: every one gets its block, nobody is preempted
                    self.free_blocks -= needing
                    if dec.short:
                        dec.grant_all()
                else:
                    self._grow_kv(needing)
        elif not chunks:
            raise RuntimeError("scheduler made no progress")
        self.events += 1
        if chunks:
            self._mixed_step(decodes, chunks, prefill)
        else:
            self._decode_run()
            self.holding = False
        if self.scheduled:
            self._release_open_loop(self.now, self.arrival_lag)  # they arrived during the iterations just run

    def _watch(self, watch: steady_state.Watch, bound: int) -> None:
        """Look for a period of the state (planner.serving.steady_state.Watch); jump the periods it allows."""
        events = self.events
        before = watch.pending
        if before is not None:
            if events < watch.due:
                return
            watch.pending = None
            now = steady_state.mark(self)
            k = steady_state.periods(self, before, now, bound)
            if k:
                steady_state.jump(self, before, now, k)
                watch.seen.clear()  # events before the jump no longer compare with those after it
                return
        key = steady_state.cheap_key(self)
        if len(watch.seen) > steady_state.SEEN_LIMIT:
            watch.seen.clear()
        seen = watch.seen.get(key)
        watch.seen[key] = events
        if seen is not None and seen < events:
            watch.pending, watch.due = steady_state.mark(self), 2 * events - seen

    def run(self) -> SimulationResult:
        self._initial_arrivals()
        total, dec, tick, bound = len(self.w.prompt_tokens), self.decoding, self._tick, MAX_SIMULATION_WORK
        watch = steady_state.Watch({}) if self.repeatable else None
        while self.finished < total:
            self.work += 1 + self.prefilling_requests + dec.requests  # the requests an event concerns
            if self.work > bound:
                raise self._too_large()
            tick()
            if watch is not None and self.unsent and not self.scheduled:
                if self.preemptions:  # a pool that preempts re-prefills at shifting phases: no longer looked at
                    watch = self.finish_log = None
                else:
                    self._watch(watch, bound)
        return SimulationResult(
            timings=tuple(self.timings),
            iterations=self.iterations,
            events=self.events,
            makespan_s=self.now,
            preemptions=self.preemptions,
            mean_decode_batch=self.decode_batch_sum / max(1, self.decode_iterations),
        )
