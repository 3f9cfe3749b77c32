"""Simulation-side stream drivers for cocotb: a source, a sink, and a cycle loop.

All stream ports follow Amaranth's naming (``<name>__valid``, ``<name>__ready``,
``<name>__payload``). Every cycle the loop drives the inputs just after the falling clock edge
and samples the handshakes once the design has settled (``ReadOnly``); a transfer is counted
when valid and ready are both high, i.e. on the following rising edge.

The source raises valid only when it has a beat and, once valid is raised, holds it and the
payload until the transfer (so it checks the design's ready, never relies on it). Idle cycles on
the source and stalls on the sink are drawn at random with the given probabilities.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

__all__ = ["StreamSink", "StreamSource", "reset", "run_streams", "start_clock"]


def start_clock(dut, period_ns: int = 10) -> None:
    import cocotb

    cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())


async def reset(dut, cycles: int = 2, streams: Sequence = ()) -> None:
    """Hold the synchronous reset for ``cycles`` rising edges with every stream idle."""
    for s in streams:
        s.idle()
    dut.rst.value = 1
    await ClockCycles(dut.clk, cycles)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


class StreamSource:
    """Drives ``beats`` (packed integers) into an input stream of the design."""

    def __init__(self, dut, name: str, beats: Sequence[int], *, idle_prob: float = 0.0,
                 rng: random.Random | None = None):
        self.name = name
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.beats = list(beats)
        self.pos = 0
        self.idle_prob = idle_prob
        self.rng = rng or random.Random(0)
        self.presenting = False
        self.cycles: list[int] = []  # cycle of each transfer
        #: Another source that must have sent all its beats before this one starts.
        self.after: StreamSource | None = None

    @property
    def done(self) -> bool:
        return self.pos >= len(self.beats)

    def idle(self) -> None:
        self.valid.value = 0

    def drive(self) -> None:
        if self.after is not None and not self.after.done:
            self.valid.value = 0
            return
        if not self.presenting and not self.done and self.rng.random() >= self.idle_prob:
            self.payload.value = self.beats[self.pos]
            self.presenting = True
        self.valid.value = int(self.presenting)

    def sample(self, cycle: int) -> None:
        if self.presenting and int(self.ready.value):
            self.cycles.append(cycle)
            self.pos += 1
            self.presenting = False


class StreamSink:
    """Receives beats from an output stream of the design, stalling at random."""

    def __init__(self, dut, name: str, *, stall_prob: float = 0.0,
                 rng: random.Random | None = None):
        self.name = name
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.stall_prob = stall_prob
        self.rng = rng or random.Random(1)
        self.beats: list[int] = []
        self.cycles: list[int] = []

    def idle(self) -> None:
        self.ready.value = 0

    def drive(self) -> None:
        self.ready.value = int(self.rng.random() >= self.stall_prob)

    def sample(self, cycle: int) -> None:
        if int(self.valid.value) and int(self.ready.value):
            self.beats.append(self.payload.value.to_unsigned())
            self.cycles.append(cycle)


async def run_streams(dut, sources: Sequence[StreamSource], sinks: Sequence[StreamSink],
                      expected: Sequence[int], *, drain_cycles: int = 32,
                      max_cycles: int = 10_000_000) -> int:
    """Run until every source is empty and each sink has its ``expected`` number of beats, then
    ``drain_cycles`` more with the sinks ready (to catch extra outputs). Returns the number of
    cycles run. Raises ``AssertionError`` on timeout."""
    cycle = 0
    drain = None
    while True:
        await FallingEdge(dut.clk)
        for s in sources:
            s.drive()
        for k in sinks:
            if drain is None:
                k.drive()
            else:
                k.ready.value = 1
        await ReadOnly()
        for s in sources:
            s.sample(cycle)
        for k in sinks:
            k.sample(cycle)
        cycle += 1
        if drain is None and all(s.done for s in sources) and all(
                len(k.beats) >= n for k, n in zip(sinks, expected, strict=True)):
            drain = drain_cycles
        if drain is not None:
            drain -= 1
            if drain <= 0:
                break
        if cycle >= max_cycles:
            got = [len(k.beats) for k in sinks]
            raise AssertionError(f"timeout after {cycle} cycles: received {got} of {expected}")
    await RisingEdge(dut.clk)
    return cycle
