"""The stream-rule checkers of both harnesses fail on deliberately broken producers: the rule
checker on its own, the Amaranth-simulator harness (with its cycle cap), and the cocotb sink on
Verilator through a broken block registered the way a user registers one."""

from __future__ import annotations

import importlib

import pytest
from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hadware.blocks import BLOCKS
from hadware.errors import ToolError
from hadware.tb.amsim import SimulationTimeout, run_stream
from hadware.tb.streams import HandshakeCheck, ProtocolError


def feed(samples):
    check = HandshakeCheck("o_stream")
    for cycle, (valid, ready, payload) in enumerate(samples):
        check.step(cycle, valid, ready, payload)


def test_rules_accept_a_legal_stream():
    feed([(0, 0, "0"), (1, 0, "5"), (1, 0, "5"), (1, 1, "5"), (1, 1, "6"), (0, 1, "7"),
          (1, 0, "8"), (1, 1, "8")])


def test_rules_catch_a_dropped_valid_and_a_changed_payload():
    with pytest.raises(ProtocolError, match=r"o_stream: valid dropped at cycle 2 before the "
                                            r"transfer of the beat offered at cycle 1"):
        feed([(0, 0, "0"), (1, 0, "5"), (0, 1, "5")])
    with pytest.raises(ProtocolError, match=r"o_stream: payload changed at cycle 3 while valid "
                                            r"and not ready \(offered at cycle 1\): 5 -> 6"):
        feed([(0, 0, "0"), (1, 0, "5"), (1, 0, "5"), (1, 1, "6")])


class Relay(wiring.Component):
    """One register stage from i_stream to o_stream, correct or with one fault: ``payload``
    (the held beat counts up while stalled), ``drop`` (valid falls after one stalled cycle, the
    beat lost), ``deaf`` (ready held high even while a beat is held: the beats that arrive
    then are lost)."""

    def __init__(self, fault: str = "none"):
        self.fault = fault
        super().__init__({"i_stream": In(stream.Signature(8)),
                          "o_stream": Out(stream.Signature(8))})

    def elaborate(self, platform) -> Module:
        m = Module()
        full = Signal()
        data = Signal(8)
        take = Signal()
        m.d.comb += [
            take.eq(self.i_stream.valid & self.i_stream.ready),
            self.i_stream.ready.eq(1 if self.fault == "deaf" else ~full),
            self.o_stream.valid.eq(full),
            self.o_stream.payload.eq(data),
        ]
        with m.If(self.o_stream.valid & self.o_stream.ready):
            m.d.sync += full.eq(0)
        with m.Elif(full & (self.fault == "drop")):
            m.d.sync += full.eq(0)
        with m.Elif(full & (self.fault == "payload")):
            m.d.sync += data.eq(data + 1)
        with m.If(take & ~full):
            m.d.sync += [full.eq(1), data.eq(self.i_stream.payload)]
        return m


BEATS = list(range(10, 30))


def test_a_correct_relay_passes_under_stalls():
    got, _, _ = run_stream(Relay(), BEATS, len(BEATS), idle=0.3, stall=0.5, seed=1)
    assert got == BEATS


def test_amsim_catches_a_payload_changed_while_stalled():
    with pytest.raises(ProtocolError, match=r"output stream: payload changed at cycle \d+"):
        run_stream(Relay("payload"), BEATS, len(BEATS), stall=0.5, seed=1)


def test_amsim_catches_a_dropped_valid():
    with pytest.raises(ProtocolError, match=r"output stream: valid dropped at cycle \d+"):
        run_stream(Relay("drop"), BEATS, len(BEATS), stall=0.5, seed=1)


def test_amsim_fails_a_lost_beat_within_the_cycle_cap():
    # Ready held high while a beat is held: beats are lost, so fewer come out than went in, and
    # the consumer waits in vain until the cap.
    with pytest.raises(SimulationTimeout, match=r"2000 cycles passed waiting for an output "
                                                r"beat: .* output beats \d+ of 20"):
        run_stream(Relay("deaf"), BEATS, len(BEATS), stall=0.5, seed=1, max_cycles=2000)


# -- the cocotb sink on Verilator --------------------------------------------------------------

RELAY_BLOCK = '''
import dataclasses
import sys

import cocotb
import numpy as np

from hadware.blocks import Block
from hadware.config.base import BlockConfig, check_int
from hadware.tb.harness import run_vector_test
from test_streams import Relay

FAULTS = ("none", "payload", "drop")


@dataclasses.dataclass(frozen=True)
class RelayConfig(BlockConfig):
    block = "relay"
    fault: int = 0

    def validate(self):
        check_int("fault", self.fault, lo=0, hi=len(FAULTS) - 1)


def component(cfg):
    relay = Relay(FAULTS[cfg.fault])
    relay.latency, relay.latency_formula = 1, "1"
    return relay


def check_inputs(cfg, arrays):
    return {"x": np.asarray(arrays["x"], np.int64)}


def run_vectors(cfg, arrays):
    return {"y": check_inputs(cfg, arrays)["x"]}


def encode(cfg, arrays):
    return {"streams": {"i_stream": [int(x) for x in arrays["x"]]},
            "expected": {"o_stream": len(arrays["x"])}}


def decode(cfg, arrays, beats):
    return {"y": np.array(beats["o_stream"], np.int64)}


@cocotb.test()
async def vectors(dut):
    await run_vector_test(dut, sys.modules[__name__])


BLOCK = Block(name="relay", summary="a one-stage relay, correct or broken",
              config="relay_block:RelayConfig", component="relay_block:component",
              golden="relay_block", tb="relay_block")
'''


@pytest.mark.sim
def test_the_cocotb_sink_catches_a_broken_producer(tmp_path, monkeypatch):
    import numpy as np

    from hadware.tb.runner import simulate

    (tmp_path / "relay_block.py").write_text(RELAY_BLOCK)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(importlib.import_module("test_streams").__file__)
                                .rsplit("/", 1)[0])
    monkeypatch.setenv("HADWARE_BLOCKS", "relay_block:BLOCK")
    mod = importlib.import_module("relay_block")
    monkeypatch.setitem(BLOCKS, "relay", mod.BLOCK)
    x = {"x": np.arange(40, 60)}
    ok = simulate("relay", mod.RelayConfig(fault=0), x, expected={"y": x["x"]}, seed=2,
                  idle_prob=0.3, stall_prob=0.5)
    np.testing.assert_array_equal(ok.outputs["y"], x["x"])
    for fault, message in ((1, "payload changed at cycle"), (2, "valid dropped at cycle")):
        with pytest.raises(ToolError, match=message):
            simulate("relay", mod.RelayConfig(fault=fault), x, seed=2, idle_prob=0.3,
                     stall_prob=0.5)
