"""A step-level simulation of one vLLM 0.26 engine (V1 engine core) serving a stream of requests.

The scheduler is vLLM's (``vllm/v1/core/sched/scheduler.py``): every step first gives each running request
its next tokens (one to decode, or the next chunk of a prompt), in order, within ``max_num_batched_tokens``;
a request whose new KV block cannot be allocated preempts the most recently admitted running request
(its blocks are freed and it is recomputed later from the front of the queue); then, if nothing was
preempted, waiting requests are admitted in arrival order while the token budget, ``max_num_seqs`` and the
free KV blocks allow (the last one admitted may get only part of its prompt: chunked prefill). A request
samples a token in the step that computes its last known token; it ends after its output length. With
asynchronous scheduling, vLLM's default, the engine schedules a step as soon as it has launched the one before
(``EngineCore.step_with_batch_queue``) and the output of the one before that is in. A one-GPU engine launches
in its own process (``UniProcExecutor``), so the launch's host time counts; with more GPUs worker processes
launch. While the GPU sets the pace, a request that reaches the engine during step N is first computed in step
N + 2; while a long launch does (a prompt above the capture sizes, after short steps or an idle spell), a
request that comes in before the launch ends is computed in step N + 1; an idle engine takes it at once.

Step times come from ``StepCost`` (GPU work on the measured system, host work, CUDA-graph mode). The
front end is a single process in front of the engine (the API server for ``vllm serve``, the ``LLM``
object offline): each request costs it an intake time before the engine sees it, and each step's outputs
cost it a handling time before the client sees the tokens; it works first come, first served, so at high
load its queue shows in TTFT and inter-token latency like a real server's. ``vllm serve`` tokenizes prompts
in a thread of its own (the renderer's pool, one worker by default): the time per prompt token queues there,
so a burst of long prompts delays the requests behind it but not the tokens the event loop hands out.

Runs of pure decode steps are jumped over: with no prompt to schedule and nothing arriving, the batch does
not change until the first request ends (or the KV cache runs out), so those steps are summed in segments
instead of being simulated one by one.
"""

from __future__ import annotations

import heapq
import math
from collections import deque

from gpuprobe.predict.simresult import EngineLimits, SimResult, StepTotals, account
from gpuprobe.predict.stepcost import Batch, StepCost, StepTime
from gpuprobe.predict.traffic import Traffic

JUMP_SEGMENT = 32
"""Decode steps summed per evaluation of the step time when jumping (the context grows linearly)."""
MAX_STEPS = 2_000_000


class _Req:
    __slots__ = (
        "arrival",
        "blocks",
        "cached",
        "computed",
        "dec_base",
        "dec_step0",
        "due0",
        "epoch",
        "gen_base",
        "generated",
        "idx",
        "last_visible",
        "num_tokens",
        "output",
        "prompt",
        "queue_ahead",
        "send",
        "state",
        "taken_mark",
    )

    def __init__(self, idx: int, prompt: int, output: int) -> None:
        self.idx, self.prompt, self.output = idx, prompt, output
        self.send = 0.0
        self.arrival = math.inf
        self.num_tokens = prompt
        self.computed = 0
        self.generated = 0
        self.blocks = 0
        self.state = WAITING
        self.dec_base = self.gen_base = self.dec_step0 = self.due0 = 0
        self.epoch = 0
        self.last_visible = math.nan
        self.cached = 0
        """Full KV blocks it held when it was preempted (still in the prefix cache until evicted)."""
        self.queue_ahead = self.taken_mark = 0
        """Free blocks ahead of its freed ones in the free queue, and ``_Engine.taken`` when it was preempted."""


WAITING, PREFILL, DECODE, DONE = 0, 1, 2, 3


class _FrontEnd:
    """One first-come-first-served process in front of the engine."""

    def __init__(self) -> None:
        self.free = 0.0

    def serve(self, ready: float, cost: float) -> float:
        start = ready if ready > self.free else self.free
        self.free = start + cost
        return self.free

    def serve_run(self, start: float, step: float, count: int, cost: float) -> tuple[float, list[tuple[float, int]]]:
        """``count`` step outputs ready every ``step`` seconds after ``start``, each costing ``cost``: when the
        first is seen, and the gaps between consecutive ones as (gap, how many), count - 1 in all. Output i is
        seen at max(seen(i - 1), start + i step) + cost: the front end works off a backlog at ``cost`` an
        output, then keeps pace with the steps when it can (cost < step)."""
        free = self.free
        if cost >= step:  # never keeps pace: one output every ``cost``
            first = max(free, start + step) + cost
            self.free = first + (count - 1) * cost
            return first, [(cost, count - 1)]
        # seen(i) = max(free + i cost, start + i step + cost): behind until i > m
        m = min(count, max(0, math.floor((free - start - cost) / (step - cost))))
        first = max(free + cost, start + step + cost)
        gaps: list[tuple[float, int]] = []
        if m >= 2:
            gaps.append((cost, m - 1))
        if 1 <= m < count:
            gaps.append((start + (m + 1) * step + cost - (free + m * cost), 1))
        rest = count - max(m, 1) - (1 if 1 <= m < count else 0)
        if rest > 0:
            gaps.append((step, rest))
        self.free = free + count * cost if m >= count else start + count * step + cost
        return first, gaps


class _Engine:
    """One simulated engine and its front end. Decoding requests are kept in aggregate (their count, their
    context, when each needs its next KV block and when each ends), so a step costs the same whatever the
    batch size; only prompts, arrivals, ends and preemptions touch single requests."""

    def __init__(self, cost: StepCost, limits: EngineLimits, traffic: Traffic, served: bool) -> None:
        cal = cost.cal
        self.cost, self.limits, self.traffic = cost, limits, traffic
        self.bs = limits.block_size
        lens = traffic.lengths()
        self.n = len(lens)
        self.reqs = [_Req(i, p, o) for i, (p, o) in enumerate(lens)]
        self.sends = traffic.send_times()
        self.fe = _FrontEnd()
        self.tokenizer = _FrontEnd()
        """``vllm serve`` tokenizes prompts in a thread of its own (the renderer's pool, one worker by default), so
        a burst of long prompts queues there, not in front of the outputs the event loop streams."""
        self.intake_us = cal.serve_intake_us if served else cal.batch_intake_us
        self.intake_tok_us = cal.serve_intake_per_token_us if served else 0.0
        self.out_seq_us = cal.serve_output_seq_us if served else cal.batch_output_seq_us
        self.out_step_us = cal.output_step_us
        self.latency = cal.request_latency_ms * 1e-3
        self.send_heap: list[tuple[float, int]] = []
        """Client sends not yet taken in by the front end: (time, request)."""
        self.arrivals: list[tuple[float, int]] = []
        """Requests past the front end, not yet seen by the scheduler: (time, request)."""
        self.waiting: deque[_Req] = deque()
        self.order: list[_Req] = []
        """Running requests in admission order (the last is preempted first); ended ones are skipped."""
        self.prefilling: list[_Req] = []
        self.n_dec = 0
        self.ctx_dec = 0
        """Tokens of KV cache held by the decoding requests (what their attention reads)."""
        self.block_due: dict[int, int] = {}
        """Step -> decoding requests that need a new KV block at it (each again every block_size steps)."""
        self.fin_heap: list[tuple[int, int, int, _Req]] = []
        """(step of the last token, request, epoch, request) of every decoding request."""
        self.free_blocks = limits.num_blocks
        self.taken = 0
        """Blocks taken from the free queue so far (each takes the oldest free block, evicting what it cached)."""
        self.step_no = 0
        self.prev_visible = math.nan
        self.step_start = self.step_end = -math.inf
        """When the last simulated step began and ended on the GPU."""
        self.sched_at = self.step_sched = -math.inf
        self.step_host = 0.0
        """When the step about to run was scheduled (the latest arrival it holds); when the last simulated step was,
        and the host time of its launch."""
        self.cap = traffic.concurrency if traffic.concurrency is not None else self.n
        self.next_to_send = 0
        self.p_next = 0
        self.poisson_queue: deque[int] = deque()
        self.in_flight = 0
        self.done = 0
        self.dropped = 0
        self.res = SimResult([0.0] * self.n, [math.nan] * self.n, [math.nan] * self.n, [p for p, _ in lens],
                             [o for _, o in lens], 0.0)
        self.itl: dict[int, int] = {}
        """Inter-token gap in microseconds -> how many such gaps the clients saw."""
        self.br = StepTotals()
        if traffic.mode == "batch":
            self.send_heap = [(0.0, i) for i in range(self.n)]
            self.next_to_send = self.n
        elif traffic.mode == "closed":
            self.send_heap = [(0.0, i) for i in range(min(self.cap, self.n))]
            self.next_to_send = len(self.send_heap)

    @property
    def n_running(self) -> int:
        return self.n_dec + len(self.prefilling)

    # --- clients and the front end -----------------------------------------------------------------------
    def scheduler_horizon(self, now: float) -> float:
        """The latest arrival the step starting at ``now`` can hold. With asynchronous scheduling (vLLM's
        default) the engine schedules a step once it has launched the one before and has the output of the one
        before that: while it is busy that is when the previous step began on the GPU or, if later, when its
        launch (its host time, from when it was scheduled) ended; an idle engine schedules a request as it
        arrives."""
        busy = self.step_end == now and self.n_running
        if not (busy and self.limits.async_scheduling):
            return now
        if not self.limits.launch_in_engine:
            return self.step_start
        return max(self.step_start, self.step_sched + self.step_host)

    def release_sends(self, now: float) -> None:
        """Client sends up to ``now`` go through the front end's intake to the engine; the requests that reached
        the scheduler in time for the step starting at ``now`` join the waiting queue."""
        self.intake(now)
        horizon = self.sched_at = self.scheduler_horizon(now)
        while self.arrivals and self.arrivals[0][0] <= horizon:
            self.waiting.append(self.reqs[heapq.heappop(self.arrivals)[1]])

    def intake(self, now: float) -> None:
        """The front end takes in the client sends up to ``now`` (before any later work: it serves in time order)."""
        sends = self.sends
        if sends is not None:
            while self.p_next < self.n and sends[self.p_next] <= now:
                self.poisson_queue.append(self.p_next)
                self.p_next += 1
            while self.poisson_queue and self.in_flight < self.cap:
                i = self.poisson_queue.popleft()
                self.in_flight += 1
                heapq.heappush(self.send_heap, (sends[i], i))
        while self.send_heap and self.send_heap[0][0] <= now:
            ts, i = heapq.heappop(self.send_heap)
            r = self.reqs[i]
            r.send = ts
            ready = self.fe.serve(ts, self.intake_us * 1e-6)
            if self.intake_tok_us:
                ready = self.tokenizer.serve(ready, self.intake_tok_us * r.prompt * 1e-6)
            r.arrival = ready + self.latency
            heapq.heappush(self.arrivals, (r.arrival, i))

    def next_send(self) -> float:
        """The next client send the front end takes in (it competes with the outputs for the front end)."""
        cands = [math.inf]
        if self.send_heap:
            cands.append(self.send_heap[0][0])
        if self.sends is not None and self.p_next < self.n and self.in_flight < self.cap:
            cands.append(self.sends[self.p_next])
        return min(cands)

    def next_event(self) -> float:
        """The next send, or the next request reaching the scheduler."""
        return min(self.next_send(), self.arrivals[0][0] if self.arrivals else math.inf)

    def out_cost(self, seqs: int) -> float:
        return (self.out_step_us + self.out_seq_us * seqs) * 1e-6

    def end(self, r: _Req, visible: float) -> None:
        """``r`` got its last token, seen at ``visible``: free its blocks, let its client send the next one."""
        self.done += 1
        self.free_blocks += r.blocks
        r.blocks = 0
        r.state = DONE
        r.last_visible = visible
        self.res.e2el_s[r.idx] = visible - r.send
        self.release_client(visible)

    def drop(self, r: _Req, now: float) -> None:
        """``r``'s prompt does not fit even an empty cache (vLLM refuses it): its client goes on at ``now``."""
        self.dropped += 1
        r.state = DONE
        self.release_client(now)

    def release_client(self, now: float) -> None:
        """A request left the engine at ``now``: its client (closed loop) or its slot under the cap is free."""
        if self.traffic.mode == "closed" and self.next_to_send < self.n:
            heapq.heappush(self.send_heap, (now, self.next_to_send))
            self.next_to_send += 1
        elif self.sends is not None:
            if self.poisson_queue:  # a request held back by the concurrency cap takes the freed slot
                i = self.poisson_queue.popleft()
                heapq.heappush(self.send_heap, (max(self.sends[i], now), i))
            else:
                self.in_flight -= 1

    # --- decoding requests in aggregate ------------------------------------------------------------------
    def _next_due(self, r: _Req, step: int) -> int:
        """The first step >= ``step`` at which decoding request ``r`` needs a new block."""
        if step <= r.due0:
            return r.due0
        return r.due0 + -(-(step - r.due0) // self.bs) * self.bs

    def start_decoding(self, r: _Req, step: int) -> None:
        """``r`` sampled a token at ``step - 1`` and decodes one token per step from ``step`` on."""
        r.state = DECODE
        r.dec_base, r.gen_base, r.dec_step0 = r.computed, r.generated, step
        r.due0 = step + (-r.computed) % self.bs
        self.block_due[r.due0] = self.block_due.get(r.due0, 0) + 1
        self.n_dec += 1
        self.ctx_dec += r.computed
        r.epoch += 1
        heapq.heappush(self.fin_heap, (step - 1 + r.output - r.generated, r.idx, r.epoch, r))

    def stop_decoding(self, r: _Req, step: int) -> None:
        """Take decoding request ``r`` out of the aggregates before ``step`` (it ended or is preempted)."""
        r.computed = r.dec_base + step - r.dec_step0
        r.generated = r.gen_base + step - r.dec_step0
        r.num_tokens = r.prompt + r.generated
        r.blocks = -(-r.computed // self.bs)
        due = self._next_due(r, step)
        left = self.block_due.get(due, 0) - 1
        if left > 0:
            self.block_due[due] = left
        else:
            self.block_due.pop(due, None)
        self.n_dec -= 1
        self.ctx_dec -= r.computed
        r.epoch += 1  # its entry in fin_heap is stale now

    # --- the scheduler -----------------------------------------------------------------------------------
    def preempt_last(self, step: int) -> _Req | None:
        """Preempt the most recently admitted running request (vLLM's V1 policy); None if none is left."""
        while self.order and self.order[-1].state not in (PREFILL, DECODE):
            self.order.pop()
        if not self.order:
            return None
        r = self.order.pop()
        if r.state == DECODE:
            self.stop_decoding(r, step)
            r.last_visible = self.prev_visible  # its last token came out of the step before this one
        else:
            self.prefilling.remove(r)
        r.cached, r.queue_ahead, r.taken_mark = r.computed // self.bs, self.free_blocks, self.taken
        self.free_blocks += r.blocks
        r.blocks, r.computed, r.state = 0, 0, WAITING
        r.num_tokens = r.prompt + r.generated
        self.waiting.appendleft(r)
        self.res.preemptions += 1
        return r

    def schedule(self) -> tuple[list[tuple[_Req, int]], int, bool]:
        """(prompt chunks of this step, blocks the decoding requests take, whether anything was preempted).
        Decoding requests each compute one token; prompts fill the rest of the token budget."""
        s = self.step_no
        bs = self.bs
        preempted = False
        while True:
            need_dec = self.block_due.get(s, 0)
            budget = self.limits.max_num_batched_tokens - self.n_dec
            chunks: list[tuple[_Req, int]] = []
            need = need_dec
            for r in self.prefilling:
                if budget <= 0:
                    break
                new = min(r.num_tokens - r.computed, budget)
                need += -(-(r.computed + new) // bs) - r.blocks
                budget -= new
                chunks.append((r, new))
            if need <= self.free_blocks:
                break
            if self.preempt_last(s) is None:
                return [], 0, preempted
            preempted = True
        self.free_blocks -= need
        self.taken += need
        for r, new in chunks:
            r.blocks = -(-(r.computed + new) // bs)
        if need_dec:
            del self.block_due[s]
            self.block_due[s + bs] = self.block_due.get(s + bs, 0) + need_dec
        if not preempted:
            while self.waiting and budget > 0 and self.n_running < self.limits.max_num_seqs:
                r = self.waiting[0]
                computed = self.cache_hit(r)
                new = min(r.num_tokens - computed, budget)
                blocks = -(-(computed + new) // bs)
                if blocks - r.blocks > self.free_blocks:
                    break
                self.waiting.popleft()
                self.free_blocks -= blocks - r.blocks
                self.taken += blocks - r.blocks
                r.computed, r.cached = computed, 0
                r.blocks = blocks
                r.state = PREFILL
                self.prefilling.append(r)
                self.order.append(r)
                budget -= new
                chunks.append((r, new))
        return chunks, need_dec, preempted

    def cache_hit(self, r: _Req) -> int:
        """Tokens of ``r`` already computed when it is admitted: after a preemption, the leading blocks it held
        that are still cached (vLLM keeps prefix caching on by default; a preempted request's blocks go to the
        back of the free queue, its last block first, so blocks taken since then evict its tail first)."""
        if not r.cached:
            return r.computed
        evicted = min(r.cached, max(0, self.taken - r.taken_mark - r.queue_ahead))
        return min((r.cached - evicted) * self.bs, r.num_tokens - 1)

    # --- steps -------------------------------------------------------------------------------------------
    def step(self, t: float, chunks: list[tuple[_Req, int]]) -> float:
        s = self.step_no
        n_dec = self.n_dec
        b = Batch(tokens=n_dec, seqs=n_dec + len(chunks), context_tokens=float(self.ctx_dec), sampled=n_dec)
        completing = []
        for r, new in chunks:
            b.tokens += new
            b.context_tokens += r.computed
            b.prompt_tokens += new
            b.attn_work += new * (r.computed + new / 2)
            if r.computed + new == r.num_tokens:
                completing.append(r)
        b.sampled += len(completing)
        st = self.cost.step_time(b, micro=min(self.limits.pp, b.seqs))
        account(self.br, st, 1)
        end = t + st.total_s
        self.intake(end)  # sends made while the step ran come before its outputs
        visible = self.fe.serve(end, self.out_cost(b.sampled))
        if n_dec and self.prev_visible == self.prev_visible:  # not NaN
            gap = int((visible - self.prev_visible) * 1e6)
            self.itl[gap] = self.itl.get(gap, 0) + n_dec
        self.ctx_dec += n_dec
        for r, new in chunks:
            r.computed += new
        for r in completing:
            self.prefilling.remove(r)
            r.generated += 1
            r.num_tokens += 1
            if r.generated == 1:
                self.res.ttft_s[r.idx] = visible - r.send
            else:  # recomputed after a preemption: its gap is its own
                gap = int((visible - r.last_visible) * 1e6)
                self.itl[gap] = self.itl.get(gap, 0) + 1
            r.last_visible = visible
            if r.generated >= r.output:
                self.end(r, visible)
            else:
                self.start_decoding(r, s + 1)
        self.finish_decoders(s, visible)
        self.prev_visible = visible
        self.step_no = s + 1
        self.step_start, self.step_end = t, end
        self.step_sched, self.step_host = self.sched_at, st.host_s
        return end

    def finish_decoders(self, last_step: int, visible: float) -> None:
        """Decoding requests whose last token came out at or before ``last_step``."""
        heap = self.fin_heap
        while heap and heap[0][0] <= last_step:
            _, _, epoch, r = heapq.heappop(heap)
            if epoch != r.epoch or r.state != DECODE:
                continue
            self.stop_decoding(r, last_step + 1)
            self.end(r, visible)

    def can_admit(self) -> bool:
        """Whether a waiting request (or one that arrives before the next step) could join the batch now: a free
        slot under max_num_seqs and the blocks for the first waiting request's first chunk. Decoding only takes
        blocks, so a request that does not fit now does not fit before some request ends."""
        if self.n_running >= self.limits.max_num_seqs:
            return False
        if not self.waiting:
            return True
        r = self.waiting[0]
        budget = self.limits.max_num_batched_tokens - self.n_dec
        computed = self.cache_hit(r)
        new = min(r.num_tokens - computed, budget)
        return new > 0 and -(-(computed + new) // self.bs) - r.blocks <= self.free_blocks

    def jump_length(self, t: float, first: StepTime) -> int:
        """How many decode-only steps can be summed from here (1: simulate this one on its own)."""
        s = self.step_no
        heap = self.fin_heap
        while heap and (heap[0][2] != heap[0][3].epoch or heap[0][3].state != DECODE):
            heapq.heappop(heap)
        k = heap[0][0] - s + 1 if heap else 1
        # an arrival could join the batch; a send, even to a full engine, takes the front end's time
        nxt = self.next_event() if self.can_admit() else self.next_send()
        if nxt < math.inf:
            # up to the last step that ends by then: the step it falls in runs on its own (sends before outputs)
            k = min(k, max(1, math.floor((nxt - t) / first.total_s + 1e-9)))
        if k <= 1:
            return 1
        # KV: the blocks the decoding requests need over the next steps must fit.
        if self._blocks_for(k) <= self.free_blocks:
            return k
        lo, hi = 1, k
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._blocks_for(mid) <= self.free_blocks:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _blocks_for(self, k: int) -> int:
        """Blocks the decoding requests take in steps s+1 .. s+k-1 (step s's are already taken). The dict holds
        the steps s+1 .. s+bs; each of its entries repeats every block_size steps."""
        s, bs = self.step_no, self.bs
        return sum(c * ((s + k - 1 - step) // bs + 1) for step, c in self.block_due.items() if step <= s + k - 1)

    def jump(self, t: float, k: int, first: StepTime) -> float:
        """``k`` decode-only steps of the unchanging batch (the first one's blocks already taken)."""
        s0 = self.step_no
        bs = self.bs
        taken = self._blocks_for(k)  # blocks for the rest of the run; then each entry moves past it
        self.free_blocks -= taken
        self.taken += taken
        moved: dict[int, int] = {}
        for step, c in self.block_due.items():
            if step <= s0 + k - 1:
                step += ((s0 + k - 1 - step) // bs + 1) * bs
            moved[step] = moved.get(step, 0) + c
        self.block_due = moved
        self.res.peak_kv_blocks = max(self.res.peak_kv_blocks, self.limits.num_blocks - self.free_blocks)
        n_dec = self.n_dec
        micro = min(self.limits.pp, n_dec)
        cost_out = self.out_cost(n_dec)
        left = k
        visible = self.prev_visible
        itl = self.itl
        last = first.total_s
        while left:
            seg = min(JUMP_SEGMENT, left)
            if left == k and seg == 1:
                st = first
            else:
                b = Batch(tokens=n_dec, seqs=n_dec, sampled=n_dec,
                          context_tokens=self.ctx_dec + n_dec * (seg - 1) / 2)  # the segment's middle step
                st = self.cost.step_time(b, micro=micro)
            account(self.br, st, seg)
            first_seen, gaps = self.fe.serve_run(t, st.total_s, seg, cost_out)
            t += st.total_s * seg
            last = st.total_s
            if visible == visible:  # the decoders' previous token was seen (not NaN)
                gap = int((first_seen - visible) * 1e6)
                itl[gap] = itl.get(gap, 0) + n_dec
            for g, c in gaps:
                if c:
                    us = int(g * 1e6)
                    itl[us] = itl.get(us, 0) + c * n_dec
            visible = self.fe.free
            self.ctx_dec += n_dec * seg
            left -= seg
        self.step_no = s0 + k
        self.finish_decoders(s0 + k - 1, visible)
        self.prev_visible = visible
        self.step_start, self.step_end = t - last, t
        self.step_sched, self.step_host = t - 2 * last, 0.0  # a run of like steps: launched a step ahead
        return t


def simulate(cost: StepCost, limits: EngineLimits, traffic: Traffic, served: bool) -> SimResult:
    """Run ``traffic`` through one engine; ``served``: behind ``vllm serve`` (else the offline ``LLM``)."""
    eng = _Engine(cost, limits, traffic, served)
    res = eng.res
    t = 0.0
    while eng.done + eng.dropped < eng.n and eng.step_no < MAX_STEPS:
        eng.release_sends(t)
        running = eng.n_running
        if not running and not eng.waiting:
            nxt = eng.next_event()
            if nxt == math.inf:
                break
            t = max(t, nxt)
            continue
        if len(eng.order) > 2 * running + 64:
            eng.order = [r for r in eng.order if r.state in (PREFILL, DECODE)]
        chunks, _, preempted = eng.schedule()
        running = eng.n_running
        if not chunks and not eng.n_dec:
            if not preempted and eng.waiting and not running:
                # the first waiting request does not fit in an empty cache: it can never run
                eng.drop(eng.waiting.popleft(), t)
            elif not preempted:
                t = max(t, eng.next_event())
            continue
        used = limits.num_blocks - eng.free_blocks
        if used > res.peak_kv_blocks:
            res.peak_kv_blocks = used
        if running > res.running_max:
            res.running_max = running
        if not chunks and not (eng.waiting and eng.can_admit()):
            first = eng.cost.step_time(Batch(tokens=eng.n_dec, seqs=eng.n_dec, context_tokens=float(eng.ctx_dec),
                                             sampled=eng.n_dec), micro=min(limits.pp, eng.n_dec))
            k = eng.jump_length(t, first)
            if k > 1:
                t = eng.jump(t, k, first)
                continue
        t = eng.step(t, chunks)
    res.steps = eng.step_no
    res.completed = eng.done
    res.send_s = [r.send for r in eng.reqs]
    ends = [r.last_visible for r in eng.reqs if r.state == DONE and not math.isnan(r.last_visible)]
    res.start_s = min((r.send for r in eng.reqs if r.state == DONE), default=0.0)
    res.end_s = max(ends) if ends else res.start_s
    res.duration_s = res.end_s - res.start_s
    res.itl = sorted((us * 1e-6, n) for us, n in eng.itl.items())
    res.breakdown = eng.br
    return res
