"""Score unit RTL in the Amaranth simulator (fast): random stalls on both sides, bit-exact
against the golden model, output count and latency held to the documented formula."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from amaranth.sim import Simulator

from hadware.config.score_unit import ScoreUnitConfig
from hadware.golden.score_unit import scores
from hadware.hw.score_unit import ScoreUnit, score_unit_latency


def run(cfg: ScoreUnitConfig, beats: list[tuple[int, list[int]]], *, idle: float, stall: float,
        seed: int) -> tuple[list[list[int]], list[int], list[int]]:
    """Stream ``beats`` (query bits, key bits per lane) through the unit; return the output
    scores and the cycle of every input and output transfer."""
    dut = ScoreUnit(cfg)
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)
    got: list[list[int]] = []
    in_cycles: list[int] = []
    out_cycles: list[int] = []
    cycle = [0]

    async def clock_counter(ctx):
        async for _ in ctx.tick():
            cycle[0] += 1

    async def producer(ctx):
        for q, ks in beats:
            while rng_in.random() < idle:
                await ctx.tick()
            ctx.set(dut.i_stream.payload, {"q": q, "k": ks})
            ctx.set(dut.i_stream.valid, 1)
            await ctx.tick().until(dut.i_stream.ready)
            in_cycles.append(cycle[0] - 1)
            ctx.set(dut.i_stream.valid, 0)

    async def consumer(ctx):
        while len(got) < len(beats):
            while rng_out.random() < stall:
                await ctx.tick()
            ctx.set(dut.o_stream.ready, 1)
            (payload,) = await ctx.tick().sample(dut.o_stream.payload).until(
                dut.o_stream.valid)
            got.append([int(x) for x in payload.s])
            out_cycles.append(cycle[0] - 1)
            ctx.set(dut.o_stream.ready, 0)
        # Nothing more may come out.
        ctx.set(dut.o_stream.ready, 1)
        for _ in range(3 * score_unit_latency(cfg) + 5):
            await ctx.tick()
            assert not ctx.get(dut.o_stream.valid), "extra output beat"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(clock_counter)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return got, in_cycles, out_cycles


def random_beats(cfg: ScoreUnitConfig, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 2, (n, cfg.d), generator=g, dtype=torch.bool)
    k = torch.randint(0, 2, (n, cfg.lanes, cfg.d), generator=g, dtype=torch.bool)
    as_int = lambda bits: int("".join("1" if b else "0" for b in reversed(bits.tolist())), 2)  # noqa: E731
    beats = [(as_int(q[i]), [as_int(k[i, j]) for j in range(cfg.lanes)]) for i in range(n)]
    expected = [scores(q[i:i + 1], k[i])[0].tolist() for i in range(n)]
    return beats, expected


@pytest.mark.parametrize(("d", "lanes"), [(8, 1), (16, 3), (24, 2), (64, 4), (136, 2)])
@pytest.mark.parametrize(("idle", "stall"), [(0.0, 0.0), (0.4, 0.5)])
def test_matches_golden_with_stalls(d, lanes, idle, stall):
    cfg = ScoreUnitConfig(d=d, lanes=lanes)
    beats, expected = random_beats(cfg, 40, seed=d * 10 + lanes)
    got, _, _ = run(cfg, beats, idle=idle, stall=stall, seed=d + lanes)
    assert len(got) == len(beats)
    assert got == expected


def test_extreme_scores():
    cfg = ScoreUnitConfig(d=32, lanes=2)
    ones = (1 << 32) - 1
    got, _, _ = run(cfg, [(ones, [ones, 0]), (0, [0, ones])], idle=0, stall=0, seed=0)
    assert got == [[32, -32], [32, -32]]


@pytest.mark.parametrize("d", [8, 16, 64, 72, 1024])
def test_latency_formula(d):
    cfg = ScoreUnitConfig(d=d, lanes=1)
    latency = score_unit_latency(cfg)
    assert latency == 2 + int(np.ceil(np.log2(d // 8)))
    n = 12
    beats, _ = random_beats(cfg, n, seed=d)
    _, ins, outs = run(cfg, beats, idle=0, stall=0, seed=0)
    # Back to back: one beat per cycle, each out exactly `latency` cycles after it went in.
    assert ins == list(range(ins[0], ins[0] + n))
    assert [o - i for i, o in zip(ins, outs, strict=True)] == [latency] * n
    assert outs[-1] - ins[0] + 1 == n + latency


def test_rejects_wrong_config_type():
    with pytest.raises(TypeError, match=r"config must be a ScoreUnitConfig"):
        ScoreUnit({"d": 8, "lanes": 1})
