"""Stream helpers for the Amaranth simulator (fast unit tests without Verilog).

:func:`run_streams` drives packed input beats into one or more input streams (one after the
other when ``sequential``) and collects beats from one output stream, as independent testbench
coroutines with random idle cycles on the producers and random stalls on the consumer, and
records the cycle of every transfer.
"""

from __future__ import annotations

import random

from amaranth.sim import Simulator

__all__ = ["run_stream", "run_streams"]


def run_streams(dut, inputs: list[tuple[object, list[int]]], output, n_out: int, *,
                idle: float = 0.0, stall: float = 0.0, seed: int = 0, drain: int = 16,
                sequential: bool = False):
    """Return (output beats, input transfer cycles per input stream, output transfer cycles).
    After ``n_out`` beats, ``drain`` more cycles with ready high must bring no further output."""
    rng_out = random.Random(seed + 1)
    got: list[int] = []
    ins: list[list[int]] = [[] for _ in inputs]
    outs: list[int] = []
    cycle = [0]
    finished = [False] * len(inputs)

    async def counter(ctx):
        async for _ in ctx.tick():
            cycle[0] += 1

    def producer(i, stream, beats):
        rng = random.Random(seed * 31 + i)

        async def run(ctx):
            if sequential:
                while not all(finished[:i]):
                    await ctx.tick()
            for b in beats:
                while rng.random() < idle:
                    await ctx.tick()
                ctx.set(stream.payload.as_value(), b)
                ctx.set(stream.valid, 1)
                await ctx.tick().until(stream.ready)
                ins[i].append(cycle[0] - 1)
                ctx.set(stream.valid, 0)
            finished[i] = True

        return run

    async def consumer(ctx):
        while len(got) < n_out:
            while rng_out.random() < stall:
                await ctx.tick()
            ctx.set(output.ready, 1)
            (p,) = await ctx.tick().sample(output.payload.as_value()).until(output.valid)
            got.append(int(p))
            outs.append(cycle[0] - 1)
            ctx.set(output.ready, 0)
        ctx.set(output.ready, 1)
        for _ in range(drain):
            await ctx.tick()
            assert not ctx.get(output.valid), "extra output beat"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(counter)
    for i, (stream, beats) in enumerate(inputs):
        sim.add_testbench(producer(i, stream, beats))
    sim.add_testbench(consumer)
    sim.run()
    return got, ins, outs


def run_stream(dut, beats: list[int], n_out: int, **kw) -> tuple[list[int], list[int], list[int]]:
    """:func:`run_streams` for a block with ``i_stream`` and ``o_stream``."""
    got, ins, outs = run_streams(dut, [(dut.i_stream, beats)], dut.o_stream, n_out, **kw)
    return got, ins[0], outs
