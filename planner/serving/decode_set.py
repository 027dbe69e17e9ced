"""The requests of the engine loop, grouped into cohorts, and the decoding ones kept so an event costs what it changes.

A cohort is consecutive requests in one state: sent at the same instant with the same lengths (a closed loop's
clients that finished in one iteration, a burst of clients), they are admitted, prefilled, decoded and finished
together, and their latencies are equal. The loop moves a cohort as one and splits it where the engine would treat
its requests apart: a token budget or a KV pool that takes only some of them, a partial prompt chunk, a preemption
of the newest. Every split keeps each part's indices consecutive and in the order the engine's queues hold them.
That is why the results equal those of a loop over single requests: the members of a cohort sit next to each other
in every queue, and each decision the engine makes about a request depends on its state and on what comes before
it, so a per-request loop makes the same decision for each member in turn.

Every iteration either adds one token to every decoding request (a decode or mixed iteration), `run` tokens to
every one (a run of identical decode iterations), or none (SGLang's prefill-only iteration): they advance together.
So a request's tokens are not stored but derived from one shared counter, the decode clock:

    tokens(c) = c.base + clock            (prompt + generated of each request of cohort c)

and the sums the loop needs are kept incrementally, each exact because it is a sum of integers:

    context_sum = Σ_c c.count · tokens(c) = Σ_c c.count · c.base + requests · clock
    finish: c is done when tokens(c) ≥ prompt + output, i.e. clock ≥ c.finish_at = prompt + output − c.base
            (a min-heap of finish_at gives the iterations until the first request finishes)

With blocks allocated on demand (vLLM, SGLang) a request holds ⌈tokens / bs⌉ blocks: it needs a new one before its
next token exactly when tokens ≡ 0 (mod bs), i.e. when c.base ≡ −clock (mod bs). Counting the requests by
c.base mod bs (`residues`) answers "how many need a block now", "iterations until one needs a block" and "blocks a
run of k iterations takes" from at most min(requests, bs) counts. The one exception: when the pool is dry and a
single decoding request is left, the engine lets it decode without its block (scheduler._grow_kv); it then holds
⌈tokens / bs⌉ − debt blocks and asks for one every iteration until a grant or a run pays the debt back (`short`).
"""

from __future__ import annotations

from dataclasses import dataclass
from heapq import heapify, heappop, heappush

__all__ = ["Cohort", "DecodeSet", "blocks_for"]


def blocks_for(tokens: int, block: int) -> int:
    return -(-tokens // block)  # ⌈tokens / block⌉ in integers


@dataclass(slots=True, eq=False)
class Cohort:
    """Requests first .. first + count − 1 in one state (every field is per request). `generated` and, on demand,
    `blocks` are stored only outside the decode set: while it decodes they follow from the clock."""

    first: int  # index of its first request
    count: int
    prompt: int  # tokens to prefill (after a preemption: the original prompt and the tokens generated before it)
    output: int  # tokens still to generate when admitted
    arrival: float
    output_orig: int
    prefilled: int = 0  # prompt tokens computed so far
    generated: int = 0
    first_token: float = -1.0
    blocks: int = 0
    base: int = 0  # while decoding: tokens − clock
    finish_at: int = 0  # while decoding: the clock at which tokens reaches prompt + output
    debt: int = 0  # while decoding on demand: blocks it decoded without (0 but for a dry pool; then count = 1)

    def _part(self, first: int, count: int) -> Cohort:
        return Cohort(
            first,
            count,
            self.prompt,
            self.output,
            self.arrival,
            self.output_orig,
            self.prefilled,
            self.generated,
            self.first_token,
            self.blocks,
            self.base,
            self.finish_at,
            self.debt,
        )

    def split_front(self, count: int) -> Cohort:
        """Its first `count` requests as a cohort of their own; this one keeps the rest."""
        front = self._part(self.first, count)
        self.first += count
        self.count -= count
        return front

    def split_back(self, count: int) -> Cohort:
        """Its last `count` requests as a cohort of their own; this one keeps the rest."""
        self.count -= count
        return self._part(self.first + self.count, count)


class DecodeSet:
    """The decoding cohorts in the order they started decoding (the engine's admission order), advanced together."""

    def __init__(self, block_size: int, on_demand: bool) -> None:
        self.bs = block_size
        self.on_demand = on_demand  # blocks grow with the tokens (else reserved at admission and fixed)
        self.clock = 0
        self.cohorts: dict[int, Cohort] = {}  # by first index; insertion order = order they started decoding
        self.requests = 0  # decoding requests (Σ count)
        self.base_sum = 0  # Σ count · base
        # (finish_at, first): an entry counts while its cohort decodes with that finish_at; those of cohorts that left
        # are stale and dropped when they reach the top (a cohort re-entering with the same key finishes then anyway)
        self.finish_heap: list[tuple[int, int]] = []
        self.residues: dict[int, int] = {}  # base mod bs -> requests (on demand; no zero counts kept)
        self.short: dict[int, Cohort] = {}  # cohorts (of one request) with debt > 0

    def tokens(self, c: Cohort) -> int:
        return c.base + self.clock

    def context_sum(self) -> int:
        """Σ prompt + generated over the decoding requests."""
        return self.base_sum + self.requests * self.clock

    def add(self, c: Cohort) -> None:
        """Start decoding c with its prompt computed and c.generated tokens sampled (blocks: ⌈tokens / bs⌉ held).
        The scheduler's mixed step does the same inline (and its finishing pass the removal): keep them alike."""
        count, first = c.count, c.first
        c.base = base = c.prompt + c.generated - self.clock
        c.finish_at = finish_at = c.prompt + c.output - base
        c.debt = 0
        self.cohorts[first] = c
        self.requests += count
        self.base_sum += count * base
        heappush(self.finish_heap, (finish_at, first))
        if self.on_demand:
            residues, rho = self.residues, base % self.bs
            residues[rho] = residues.get(rho, 0) + count

    def reindex(self) -> None:
        """Key the cohorts by their first indices again after those moved (planner.serving.steady_state.jump): the
        same order, and a heap of the current entries only (stale ones are dropped anyway when they surface)."""
        cohorts = list(self.cohorts.values())
        self.cohorts = {c.first: c for c in cohorts}
        self.finish_heap = [(c.finish_at, c.first) for c in cohorts]
        heapify(self.finish_heap)
        self.short = {c.first: c for c in self.short.values()}

    def _forget(self, c: Cohort, count: int) -> None:
        """Take `count` of c's requests out of the sums; write back their generated tokens and held blocks."""
        base = c.base
        self.requests -= count
        self.base_sum -= count * base
        tokens = base + self.clock
        c.generated = tokens - c.prompt
        if self.on_demand:
            bs, residues = self.bs, self.residues
            c.blocks = -(-tokens // bs) - c.debt  # held_blocks(c)
            rho = base % bs
            left = residues[rho] - count
            if left:
                residues[rho] = left
            else:
                del residues[rho]

    def remove(self, c: Cohort) -> None:
        """Stop decoding all of c (finished)."""
        self._forget(c, c.count)
        del self.cohorts[c.first]
        if self.short:
            self.short.pop(c.first, None)

    def newest(self) -> Cohort:
        """The cohort that started decoding last: its last request is the engine's newest admitted running one."""
        return self.cohorts[next(reversed(self.cohorts))]

    def take_newest(self, count: int) -> Cohort:
        """Stop decoding the `count` newest requests (all of the newest cohort or its last ones): preempted."""
        c = self.newest()
        if count == c.count:
            self.remove(c)
            return c
        self._forget(c, count)
        return c.split_back(count)

    def advance(self, steps: int) -> None:
        self.clock += steps

    def steps_to_finish(self) -> int:
        """Iterations until the first decoding request has all its output: min over c of output − generated."""
        heap = self.finish_heap
        while not self._current(*heap[0]):
            heappop(heap)  # stale: the cohort left (finished, or preempted whole and re-entered since)
        return heap[0][0] - self.clock

    def _current(self, finish_at: int, first: int) -> bool:
        c = self.cohorts.get(first)
        return c is not None and c.finish_at == finish_at

    # on-demand blocks ---------------------------------------------------------------------------------------------
    def held_blocks(self, c: Cohort) -> int:
        """Blocks each request of c holds."""
        return blocks_for(self.tokens(c), self.bs) - c.debt

    def grows(self, c: Cohort) -> bool:
        """Whether c's requests need a new block before their next token: ⌈(t + 1)/bs⌉ > blocks."""
        return self.tokens(c) % self.bs == 0 or c.debt > 0

    def growing(self) -> int:
        """How many decoding requests need a new block before their next token."""
        due = self.residues.get(-self.clock % self.bs, 0)  # tokens ≡ 0 (mod bs)
        if self.short:
            due += sum(1 for c in self.short.values() if self.tokens(c) % self.bs)
        return due

    def grant_all(self) -> None:
        """Every growing request got its block (the debt-free ones keep holding ⌈tokens / bs⌉ after the token)."""
        for c in list(self.short.values()) if self.short else ():
            c.debt -= 1 if self.tokens(c) % self.bs else 0  # a debt shrinks unless the token opens a block too
            if not c.debt:
                del self.short[c.first]

    def deny(self, c: Cohort) -> None:
        """c's one request decodes its next token without the block it needs (the pool is dry)."""
        if self.tokens(c) % self.bs == 0:
            c.debt += 1
            self.short[c.first] = c

    def steps_to_block(self) -> int:
        """Iterations every request can decode on the blocks it holds after this one's: min over requests of
        bs − tokens mod bs (≥ 1)."""
        return self.bs - max((rho + self.clock) % self.bs for rho in self.residues)

    def blocks_for_run(self, run: int) -> int:
        """Blocks a run of `run` iterations needs beyond its first token's, paying every debt back:
        Σ ⌈(tokens + run)/bs⌉ − held over requests, with held = ⌈(tokens + 1)/bs⌉ − debt after the first grant.

        The first term counts, per residue class ρ = base mod bs, the k in [1, run − 1] with
        ρ + clock + k ≡ 0 (mod bs): the tokens after which a request of the class opens a block."""
        bs, later = self.bs, run - 1
        crossings = 0
        for rho, count in self.residues.items():
            first = (-(rho + self.clock) - 1) % bs + 1  # the smallest k ≥ 1 with ρ + clock + k ≡ 0
            if first <= later:
                crossings += count * ((later - first) // bs + 1)
        debts = sum(c.debt for c in self.short.values())
        for c in self.short.values():
            c.debt = 0
        self.short.clear()
        return crossings + debts
