"""The engine loop as it was before its bookkeeping went incremental (planner/serving/scheduler.py at 643136c):
every iteration walks every running request. Kept as the oracle the faster loop must reproduce exactly; since,
requests reach a busy engine one iteration late (two with overlap scheduling), TensorRT-LLM's batch waiting
holds prompts back and SGLang's receive interval gates them, as the faster loop's module doc says.
"""

from __future__ import annotations

from bisect import insort
from collections import deque
from dataclasses import dataclass
from math import ceil
from operator import itemgetter

from planner.serving.scheduler import (
    MAX_SIMULATION_WORK,
    PROMPT_BATCH_WEIGHT,
    Admission,
    EngineLimits,
    RequestTiming,
    SchedulerPolicy,
    SimulationResult,
    SimulationTooLarge,
    StepTimer,
    Workload,
)

__all__ = ["simulate_reference"]


def simulate_reference(model: StepTimer, limits: EngineLimits, workload: Workload) -> SimulationResult:
    """The simulation of planner.serving.scheduler.simulate, one request at a time."""
    return _Simulation(model, limits, workload).run()


@dataclass(slots=True)
class _Req:
    index: int
    prompt: int
    output: int
    arrival: float
    prefilled: int = 0  # prompt tokens computed so far
    generated: int = 0
    first_token: float = -1.0
    done: float = -1.0
    blocks: int = 0
    output_orig: int = 0

    def __post_init__(self) -> None:
        self.output_orig = self.output


def _blocks(tokens: int, block: int) -> int:
    return -(-tokens // block)  # ⌈tokens / block⌉ in integers


class _Simulation:
    def __init__(self, model: StepTimer, limits: EngineLimits, workload: Workload) -> None:
        self.model, self.limits, self.w = model, limits, workload
        self.total_blocks = max(1, limits.kv_capacity_tokens // limits.block_size)
        self.free_blocks = self.total_blocks
        self.now = 0.0
        self.waiting: deque[_Req] = deque()
        self.running: list[_Req] = []  # admitted: prefilling or decoding, in admission order
        self.prefilling = 0  # how many of them are still prefilling (none: every running request decodes)
        self.finished: list[_Req] = []
        self.iterations = self.events = self.preemptions = 0
        self.decode_batch_sum = 0.0
        self.decode_iterations = 0
        n = len(workload.prompt_tokens)
        self.pending = deque(range(n))  # requests not yet sent
        self.scheduled: deque[float] = deque()  # send times not yet reached
        self.clients_busy = 0
        self.delayed: list[tuple[int, _Req]] = []  # (iterations from which the engine may schedule it, request)
        self.lag = 1 if limits.overlap_scheduling else 0
        self.resends = 0  # closed loop: requests finished in this step, whose clients send again after it
        # TensorRT-LLM batch waiting: iterations prompts were held back since they last ran; holding them now
        self.held, self.holding = 0, False
        # SGLang's receive interval: the counter each loop pass adds its last batch's weight to, and whether the
        # current pass reads the requests that reached the engine
        self.gated = limits.recv_interval > 1
        self.recv_count, self.reads = 0, True

    # arrivals -----------------------------------------------------------------------------------------------------
    def _send(self, at: float, lag: int = 0, gated: bool = False) -> None:
        i = self.pending.popleft()
        req = _Req(i, self.w.prompt_tokens[i], self.w.output_tokens[i], at)
        if lag or gated:
            insort(self.delayed, (self.iterations + lag, req), key=itemgetter(0))
        else:
            self.waiting.append(req)

    def _busy(self) -> bool:
        return bool(self.running or self.waiting)

    def _initial_arrivals(self) -> None:
        if self.w.concurrency is not None:
            clients = min(self.w.concurrency, len(self.pending))
            starts = self.w.client_start_s or (0.0,) * clients
            self.scheduled = deque(sorted(starts[:clients]))
        else:
            self.scheduled = deque(self.w.arrival_times_s or ())
        self._release_open_loop(0.0)

    def _release_open_loop(self, until: float, lag: int = 0) -> None:
        """Send every scheduled request (open-loop arrivals, closed-loop clients' first requests) due by `until`."""
        busy = self._busy()
        lag = lag if busy else 0
        while self.scheduled and self.pending and self.scheduled[0] <= until:
            self._send(self.scheduled.popleft(), lag, self.gated and busy)

    def _next_arrival(self) -> float | None:
        return self.scheduled[0] if self.scheduled and self.pending else None

    # admission ----------------------------------------------------------------------------------------------------
    def _admit(self) -> None:
        lim = self.limits
        while self.waiting and len(self.running) < lim.max_num_seqs:
            req = self.waiting[0]
            need_tokens = req.prompt + (req.output if lim.admission is Admission.RESERVE_FULL else 1)
            need = _blocks(need_tokens, lim.block_size)
            if need > self.free_blocks:
                if not self.running and need > self.total_blocks:
                    raise ValueError("a single request does not fit in the KV pool")
                return
            self.waiting.popleft()
            self.free_blocks -= need
            req.blocks = need
            self.running.append(req)
            self.prefilling += 1  # admitted with its prompt (or, after a preemption, prompt + output) to compute

    # one iteration ------------------------------------------------------------------------------------------------
    def _batch(self) -> tuple[list[_Req], list[tuple[_Req, int]]]:
        """(decoding requests, [(prefilling request, tokens this iteration)]) under the engine's policy."""
        lim = self.limits
        if not self.prefilling:
            return list(self.running), []
        prefilling = [r for r in self.running if r.prefilled < r.prompt]
        decoding = [r for r in self.running if r.prefilled >= r.prompt]
        if lim.policy is SchedulerPolicy.PREFILL_FIRST and prefilling:
            budget, chunks = lim.token_budget, []
            for r in prefilling:
                if budget <= 0:
                    break
                q = min(r.prompt - r.prefilled, budget)
                chunks.append((r, q))
                budget -= q
            return [], chunks
        budget = lim.token_budget - len(decoding)
        chunks = []
        for r in prefilling:
            left = r.prompt - r.prefilled
            if lim.policy is SchedulerPolicy.MIXED_WHOLE:
                if left > budget and chunks:
                    break
                q = left if left <= budget or not chunks else 0
            else:
                q = min(left, budget)
            if q <= 0:
                break
            chunks.append((r, q))
            budget -= q
        if lim.batch_wait_iters > 0 and lim.batch_wait_tokens > 0 and chunks and decoding:
            tokens = len(decoding) + sum(q for _, q in chunks)
            if self.held >= lim.batch_wait_iters or tokens >= lim.batch_wait_tokens:
                self.held = 0
            else:
                self.holding = True
                return decoding, []
        return decoding, chunks

    def _grow_kv(self, decoding: list[_Req]) -> list[_Req]:
        """Blocks for the token each decoding request adds; preempt the newest requests when the pool runs dry."""
        if self.limits.admission is Admission.RESERVE_FULL:
            return decoding
        bs = self.limits.block_size
        # a request needs a block when its next token passes its last one: ⌈(t + 1)/bs⌉ > blocks ⟺ t + 1 > blocks·bs
        growing = [r for r in decoding if r.prompt + r.generated + 1 > r.blocks * bs]
        if len(growing) <= self.free_blocks:  # every one gets its block, nobody is preempted
            self.free_blocks -= len(growing)
            for r in growing:
                r.blocks += 1
            return decoding
        kept = list(decoding)
        needing = {id(r) for r in growing}
        while len(needing) > self.free_blocks and len(kept) > 1:
            victim = kept.pop()  # the newest admitted
            self._preempt(victim)
            needing.discard(id(victim))
        for r in kept:
            if id(r) in needing and self.free_blocks > 0:
                self.free_blocks -= 1
                r.blocks += 1
        return kept

    def _preempt(self, r: _Req) -> None:
        self.preemptions += 1
        self.free_blocks += r.blocks
        r.blocks = 0
        self.running.remove(r)
        # recompute: the prompt and the tokens generated so far are prefilled again on readmission
        r.prompt, r.output = r.prompt + r.generated, r.output - r.generated
        r.prefilled, r.generated = 0, 0
        self.waiting.appendleft(r)

    def _finish(self, r: _Req) -> None:
        r.done = self.now
        self.running.remove(r)
        self.free_blocks += r.blocks
        self.finished.append(r)
        if self.w.concurrency is not None:
            self.resends += 1

    def _resend(self) -> None:
        """The clients whose requests finished in this step send their next ones."""
        busy = self._busy()
        lag = 1 + self.lag if busy else 0
        for _ in range(self.resends):
            if self.pending:
                self._send(self.now, lag, self.gated and busy)
        self.resends = 0

    def _passes(self, weight: int, passes: int = 1) -> None:
        """Loop passes after iterations of `weight`, one at a time: the counter, and whether the last one reads."""
        for _ in range(passes):
            self.recv_count += weight
            self.reads = self.recv_count >= self.limits.recv_interval
            if self.reads:
                self.recv_count = 0

    def _first_read_from(self, due: int) -> int:
        """Decode-only passes from now to the first one at least `due` on that reads, counted one by one."""
        count, k = self.recv_count, 0
        while True:
            k += 1
            count += 1
            if count >= self.limits.recv_interval:
                if k >= due:
                    return k
                count = 0

    def _decode_run_length(self, decoding: list[_Req]) -> int:
        """Identical decode-only iterations until a request finishes (or, open loop, the next arrival)."""
        steps = min(r.output - r.generated for r in decoding)
        if self.limits.admission is Admission.ON_DEMAND:
            bs = self.limits.block_size
            # iterations before some request needs a new block while none is free
            if self.free_blocks < len(decoding):
                steps = min(steps, min(bs - (r.prompt + r.generated) % bs for r in decoding) or 1)
        if self.delayed:
            due = self.delayed[0][0] - self.iterations
            steps = min(steps, self._first_read_from(due) if self.gated else due)
        if self.holding:
            steps = min(steps, self.limits.batch_wait_iters - self.held)
        return max(1, steps)

    def _step(self) -> None:
        decoding, chunks = self._batch()
        decoding = self._grow_kv(decoding)
        if not decoding and not chunks:
            raise RuntimeError("scheduler made no progress")
        self.events += 1
        if not chunks:
            run = self._decode_run_length(decoding)
            arrival = self._next_arrival()
            n = len(decoding)
            ctx = sum(r.prompt + r.generated for r in decoding) / n
            step_s = self.model.step(n, ctx + (run - 1) / 2).total_s
            if arrival is not None and arrival < self.now + run * step_s:
                run = max(1, ceil((arrival - self.now) / step_s))
            if self.limits.admission is Admission.ON_DEMAND and run > 1:
                for r in decoding:  # the blocks the run needs beyond its first token (checked above)
                    need = _blocks(r.prompt + r.generated + run, self.limits.block_size) - r.blocks
                    if need > 0:
                        self.free_blocks -= need
                        r.blocks += need
            self.now += run * step_s
            self.iterations += run
            if self.holding:
                self.held += run
                self.holding = False
            self.decode_batch_sum += n * run
            self.decode_iterations += run
            if self.gated:
                self._passes(1, run)
            for r in decoding:
                r.generated += run
                if r.generated >= r.output:
                    self._finish(r)
            self._resend()
            return
        n = len(decoding)
        ctx = sum(r.prompt + r.generated for r in decoding) / n if n else 0.0
        step_s = self.model.step(n, ctx, [(q, r.prefilled) for r, q in chunks]).total_s
        self.now += step_s
        self.iterations += 1
        if self.gated:
            self._passes(PROMPT_BATCH_WEIGHT)
        if n:
            self.decode_batch_sum += n
            self.decode_iterations += 1
        for r in decoding:
            r.generated += 1
        for r, q in chunks:
            r.prefilled += q
            if r.prefilled >= r.prompt:
                self.prefilling -= 1
                if r.first_token < 0:
                    r.first_token = self.now
                r.generated += 1  # the iteration that finishes the prompt samples a token
        for r in [*decoding, *(r for r, _ in chunks)]:
            if r.generated >= r.output and r.done < 0 and r in self.running:
                self._finish(r)
        self._resend()

    def run(self) -> SimulationResult:
        self._initial_arrivals()
        total = len(self.w.prompt_tokens)
        work = 0
        while len(self.finished) < total:
            work += 1 + len(self.running)
            if work > MAX_SIMULATION_WORK:
                raise SimulationTooLarge(
                    f"{self.events:,} engine events for {len(self.finished):,} of {total:,} requests reached the "
                    f"bound of {MAX_SIMULATION_WORK:,} request-events"
                )
            while self.delayed and self.delayed[0][0] <= self.iterations and self.reads:
                self.waiting.append(self.delayed.pop(0)[1])
            self._admit()
            if not self.running:
                self.recv_count, self.reads = 0, True  # an idle engine's passes read at once
                if self.delayed:  # an idle engine schedules what reaches it at once
                    self.waiting.extend(r for _, r in self.delayed)
                    self.delayed.clear()
                    continue
                nxt = self._next_arrival()
                if nxt is None:
                    raise RuntimeError("requests wait but none can run")
                self.now = max(self.now, nxt)
                self._release_open_loop(self.now)
                continue
            self._step()
            self._release_open_loop(self.now, self.lag)
        timings = tuple(
            RequestTiming(
                ttft_s=r.first_token - r.arrival,
                tpot_s=(r.done - r.first_token) / (r.output_orig - 1) if r.output_orig > 1 else 0.0,
                e2e_s=r.done - r.arrival,
            )
            for r in sorted(self.finished, key=lambda r: r.index)
        )
        return SimulationResult(
            timings=timings,
            iterations=self.iterations,
            events=self.events,
            makespan_s=self.now,
            preemptions=self.preemptions,
            mean_decode_batch=self.decode_batch_sum / max(1, self.decode_iterations),
        )
