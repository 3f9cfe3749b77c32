"""Stream helpers for the Amaranth simulator (fast unit tests without Verilog).

:func:`run_stream` drives packed input beats into ``i_stream`` and collects ``o_stream`` beats,
as two independent testbench coroutines with random idle cycles on the producer and random
stalls on the consumer, and records the cycle of every transfer.
"""

from __future__ import annotations

import random

from amaranth.sim import Simulator

__all__ = ["run_stream"]


def run_stream(dut, beats: list[int], n_out: int, *, idle: float = 0.0, stall: float = 0.0,
               seed: int = 0, drain: int = 16) -> tuple[list[int], list[int], list[int]]:
    """Return (output beats, input transfer cycles, output transfer cycles). After ``n_out``
    beats, ``drain`` more cycles with ready high must bring no further output."""
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)
    got: list[int] = []
    ins: list[int] = []
    outs: list[int] = []
    cycle = [0]

    async def counter(ctx):
        async for _ in ctx.tick():
            cycle[0] += 1

    async def producer(ctx):
        for b in beats:
            while rng_in.random() < idle:
                await ctx.tick()
            ctx.set(dut.i_stream.payload.as_value(), b)
            ctx.set(dut.i_stream.valid, 1)
            await ctx.tick().until(dut.i_stream.ready)
            ins.append(cycle[0] - 1)
            ctx.set(dut.i_stream.valid, 0)

    async def consumer(ctx):
        while len(got) < n_out:
            while rng_out.random() < stall:
                await ctx.tick()
            ctx.set(dut.o_stream.ready, 1)
            (p,) = await ctx.tick().sample(dut.o_stream.payload.as_value()).until(
                dut.o_stream.valid)
            got.append(int(p))
            outs.append(cycle[0] - 1)
            ctx.set(dut.o_stream.ready, 0)
        ctx.set(dut.o_stream.ready, 1)
        for _ in range(drain):
            await ctx.tick()
            assert not ctx.get(dut.o_stream.valid), "extra output beat"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(counter)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return got, ins, outs
