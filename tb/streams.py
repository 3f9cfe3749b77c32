"""Simulation-side stream drivers for cocotb: a source, a sink, and a cycle loop.

All stream ports follow Amaranth's naming (``<name>__valid``, ``<name>__ready``,
``<name>__payload``). Every cycle the loop drives the inputs just after the falling clock edge
and samples the handshakes once the design has settled (``ReadOnly``); a transfer is counted
when valid and ready are both high, i.e. on the following rising edge.

The source raises valid only when it has a beat and, once valid is raised, holds it and the
payload until the transfer (so it checks the design's ready, never relies on it). Idle cycles on
the source and stalls on the sink are drawn at random with the given probabilities.

Both ends check the stream rules every cycle (:class:`HandshakeCheck`): once valid is high it
stays high until the transfer, with the payload unchanged; valid is never X or Z. The sink
checks the design's output stream, the source its own driving. :func:`reset` checks that no
output stream is valid while reset is held.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

__all__ = ["HandshakeCheck", "ProtocolError", "StreamSink", "StreamSource", "reset",
           "run_streams", "start_clock"]


class ProtocolError(AssertionError):
    """A stream broke the valid/ready rules."""


class HandshakeCheck:
    """The stream rules for one stream, fed one sample per clock cycle (the values that decide
    the transfer at the next rising edge): a valid beat not yet taken must still be valid, with
    the same payload, in the next cycle."""

    def __init__(self, name: str):
        self.name = name
        self._held: str | None = None  # payload of a valid beat waiting for ready
        self._since = 0

    def step(self, cycle: int, valid: int, ready: int, payload: str) -> None:
        if self._held is not None:
            if not valid:
                raise ProtocolError(f"{self.name}: valid dropped at cycle {cycle} before the "
                                    f"transfer of the beat offered at cycle {self._since}")
            if payload != self._held:
                raise ProtocolError(f"{self.name}: payload changed at cycle {cycle} while valid "
                                    f"and not ready (offered at cycle {self._since}): "
                                    f"{self._held} -> {payload}")
        if valid and not ready:
            if self._held is None:
                self._since = cycle
            self._held = payload
        else:
            self._held = None


def _bit(handle, what: str, cycle: int) -> int:
    value = handle.value
    try:
        return int(value)
    except ValueError:
        raise ProtocolError(f"{what} is {value} at cycle {cycle}, not 0 or 1") from None


def start_clock(dut, period_ns: int = 10) -> None:
    import cocotb

    cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())


async def reset(dut, cycles: int = 2, streams: Sequence = ()) -> None:
    """Hold the synchronous reset for ``cycles`` rising edges with every stream idle; after the
    first edge no output stream among ``streams`` (the sinks) may be valid."""
    for s in streams:
        s.idle()
    dut.rst.value = 1
    for i in range(cycles):
        await RisingEdge(dut.clk)
        await ReadOnly()
        for k in streams:
            if isinstance(k, StreamSink) and _bit(k.valid, f"{k.name} valid", -cycles + i):
                raise ProtocolError(f"{k.name}: valid while reset is held")
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
        self.check = HandshakeCheck(name)

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
        ready = _bit(self.ready, f"{self.name} ready", cycle)
        self.check.step(cycle, _bit(self.valid, f"{self.name} valid", cycle), ready,
                        str(self.payload.value))
        if self.presenting and ready:
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
        self.check = HandshakeCheck(name)

    def idle(self) -> None:
        self.ready.value = 0

    def drive(self) -> None:
        self.ready.value = int(self.rng.random() >= self.stall_prob)

    def sample(self, cycle: int) -> None:
        valid = _bit(self.valid, f"{self.name} valid", cycle)
        ready = int(self.ready.value)
        payload = self.payload.value
        self.check.step(cycle, valid, ready, str(payload))
        if valid and ready:
            try:
                self.beats.append(payload.to_unsigned())
            except ValueError:
                raise ProtocolError(f"{self.name}: payload {payload} has X or Z bits in the "
                                    f"transfer at cycle {cycle}") from None
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
