"""Stream helpers for the Amaranth simulator (fast unit tests without Verilog).

:func:`run_streams` drives packed input beats into one or more input streams (one after the
other when ``sequential``) and collects beats from one output stream, as independent testbench
coroutines with random idle cycles on the producers and random stalls on the consumer, and
records the cycle of every transfer. A monitor on every stream checks the stream rules at each
clock edge (:class:`~hadware.tb.streams.HandshakeCheck`: valid held until the transfer, the
payload unchanged meanwhile), and a cycle cap turns a lost beat into a failure naming the beat
counts instead of a hang.
"""

from __future__ import annotations

import random

from amaranth import Value
from amaranth.sim import Simulator

from hadware.tb.streams import HandshakeCheck

__all__ = ["MAX_CYCLES", "SimulationTimeout", "run_stream", "run_streams"]

#: Default cycle cap of one :func:`run_streams` call.
MAX_CYCLES = 200_000


class SimulationTimeout(AssertionError):
    """The cycle cap was reached before every beat was transferred."""


def _monitor(stream, name: str):
    check = HandshakeCheck(name)

    async def run(ctx):
        cycle = 0
        async for _, _, valid, ready, payload in ctx.tick().sample(
                stream.valid, stream.ready, Value.cast(stream.payload)):
            check.step(cycle, valid, ready, str(payload))
            cycle += 1

    return run


def run_streams(dut, inputs: list[tuple[object, list[int]]], output, n_out: int, *,
                idle: float = 0.0, stall: float = 0.0, seed: int = 0, drain: int = 16,
                sequential: bool = False, max_cycles: int = MAX_CYCLES):
    """Return (output beats, input transfer cycles per input stream, output transfer cycles).
    After ``n_out`` beats, ``drain`` more cycles with ready high must bring no further output.
    Raises :class:`~hadware.tb.streams.ProtocolError` when a stream breaks the rules and
    :class:`SimulationTimeout` when ``max_cycles`` pass first."""
    rng_out = random.Random(seed + 1)
    got: list[int] = []
    ins: list[list[int]] = [[] for _ in inputs]
    outs: list[int] = []
    cycle = [0]
    finished = [False] * len(inputs)

    def cap(what: str) -> None:
        if cycle[0] >= max_cycles:
            sent = [len(i) for i in ins]
            raise SimulationTimeout(f"{max_cycles} cycles passed {what}: input beats "
                                    f"transferred {sent} of {[len(b) for _, b in inputs]}, "
                                    f"output beats {len(got)} of {n_out}")

    async def counter(ctx):
        async for _ in ctx.tick():
            cycle[0] += 1

    def producer(i, stream, beats):
        rng = random.Random(seed * 31 + i)

        async def run(ctx):
            if sequential:
                while not all(finished[:i]):
                    await ctx.tick()
                    cap("waiting for the previous input stream")
            for b in beats:
                while rng.random() < idle:
                    await ctx.tick()
                ctx.set(Value.cast(stream.payload), b)
                ctx.set(stream.valid, 1)
                while not (await ctx.tick().sample(stream.ready))[2]:
                    cap("with an input beat waiting for ready")
                ins[i].append(cycle[0] - 1)
                ctx.set(stream.valid, 0)
            finished[i] = True

        return run

    async def consumer(ctx):
        # Ready is drawn afresh every cycle, so a valid output waits through stalls too.
        while len(got) < n_out:
            ctx.set(output.ready, int(rng_out.random() >= stall))
            _, _, valid, ready, p = await ctx.tick().sample(output.valid, output.ready,
                                                            Value.cast(output.payload))
            if valid and ready:
                got.append(int(p))
                outs.append(cycle[0] - 1)
            else:
                cap("waiting for an output beat")
        ctx.set(output.ready, 1)
        for _ in range(drain):
            await ctx.tick()
            assert not ctx.get(output.valid), "extra output beat"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(counter)
    for i, (stream, beats) in enumerate(inputs):
        sim.add_testbench(producer(i, stream, beats))
        sim.add_process(_monitor(stream, f"input stream {i}"))
    sim.add_process(_monitor(output, "output stream"))
    sim.add_testbench(consumer)
    sim.run()
    return got, ins, outs


def run_stream(dut, beats: list[int], n_out: int, **kw) -> tuple[list[int], list[int], list[int]]:
    """:func:`run_streams` for a block with ``i_stream`` and ``o_stream``."""
    got, ins, outs = run_streams(dut, [(dut.i_stream, beats)], dut.o_stream, n_out, **kw)
    return got, ins[0], outs
