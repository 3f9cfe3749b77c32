"""The encoder layer's RTL in the Amaranth simulator against its golden model, bit for bit:
random idles and stalls on both streams (the stream rules checked every cycle, the output beat
count exact), sequences of length 1, below top_k, top_k and n_max back to back, causal and
bidirectional, parallel and shared heads, saturations counted, the cycle formula held exactly,
a reset in the middle of a sequence."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import Module, ResetInserter, Signal, Value
from amaranth.sim import Simulator

from hadware.config.encoder_layer import EncoderLayerConfig
from hadware.golden.encoder_layer import run_vectors_int
from hadware.hw.encoder_layer import EncoderLayer, sequence_cycles
from hadware.tb.amsim import run_stream
from hadware.tb.encoder_layer import decode_int, encode, encode_int, latent_weights

SMALL = dict(d_model=16, n_heads=2, head_dim=8, n_max=8, top_k=3, d_hidden=16, lanes=4)


def _inputs(cfg: EncoderLayerConfig, seed: int, lengths: list[int], scale: float = 1.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, scale, (len(lengths), max(lengths), cfg.d_model))
    top = 2.0 ** (cfg.res_bits - 1 - cfg.res_frac_bits)
    return {"x": np.clip(x, -top, top - 1.0), "n_valid": np.array(lengths)}


def _run(cfg, w, arrays, **kw):
    enc = encode(cfg, arrays)
    got, ins, outs = run_stream(EncoderLayer(cfg, w), enc["streams"]["i_stream"],
                                enc["expected"]["o_stream"], max_cycles=3_000_000, **kw)
    y, sat = decode_int(cfg, arrays["n_valid"], arrays["x"].shape[1], got)
    return y, sat, ins, outs


CASES = {
    "parallel": (dict(SMALL), 1.0),
    "shared-causal": (dict(SMALL, head_parallel=False, causal=True,
                           temperature=[0.05, 0.4]), 1.0),
    "parallel-causal-4heads": (dict(SMALL, d_model=32, n_heads=4, head_dim=8, lanes=8,
                                    top_k=2, temperature=[0.1, 0.2, 0.3, 0.6]), 1.0),
    "saturating-lanes2": (dict(SMALL, lanes=2, v_shift=0, res_bits=12, res_frac_bits=6,
                               head_parallel=False), 12.0),
}


#: The slower cases run in the full tier (the fast tier's Verilator test counts saturations at
#: the residual limits; four heads over 128 tokens run on Verilator in the full tier).
FULL_CASES = {"parallel-causal-4heads", "saturating-lanes2"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.full] * (n in FULL_CASES))
                                  for n in CASES])
def test_bit_exact_with_stalls(name):
    kw, scale = CASES[name]
    cfg = EncoderLayerConfig(**kw)
    w = latent_weights(cfg, 7)
    lengths = [cfg.n_max, 1, max(1, cfg.top_k - 1), cfg.top_k]
    arrays = _inputs(cfg, 11, lengths, scale)
    y, sat, _, _ = _run(cfg, w, arrays, idle=0.3, stall=0.3, seed=3)
    ref = run_vectors_int(cfg, w, arrays)
    np.testing.assert_array_equal(y, ref["Y"])
    np.testing.assert_array_equal(sat, ref["saturations"])
    if name == "saturating-lanes2":
        assert (sat > 0).all()


@pytest.mark.parametrize("kw", [dict(SMALL), dict(SMALL, head_parallel=False, causal=True),
                                pytest.param(dict(SMALL, lanes=1, top_k=8, causal=True),
                                             marks=pytest.mark.full)],
                         ids=["parallel", "shared-causal", "lanes1"])
def test_cycle_formula(kw):
    cfg = EncoderLayerConfig(**kw)
    w = latent_weights(cfg, 2)
    lengths = [cfg.n_max, 1, 3]
    arrays = _inputs(cfg, 5, lengths)
    enc = encode(cfg, arrays)
    got, ins, outs = run_stream(EncoderLayer(cfg, w), enc["streams"]["i_stream"],
                                enc["expected"]["o_stream"], max_cycles=3_000_000)
    beats = cfg.token_beats
    first, last = 0, -1
    for n in lengths:
        last += n * beats
        assert outs[last] - ins[first] == sequence_cycles(cfg, n), n
        if first + n * beats < len(ins):
            assert ins[first + n * beats] == outs[last] + 2   # next sequence's first beat
        first += n * beats
    y, _ = decode_int(cfg, arrays["n_valid"], cfg.n_max, got)
    np.testing.assert_array_equal(y, run_vectors_int(cfg, w, arrays)["Y"])


def test_reset_in_the_middle_of_a_sequence():
    """Half a sequence, a reset, then a whole sequence: the output is that sequence's alone."""
    cfg = EncoderLayerConfig(**dict(SMALL, head_parallel=False))
    w = latent_weights(cfg, 4)
    arrays = _inputs(cfg, 9, [5])
    ref = run_vectors_int(cfg, w, arrays)
    beats = encode(cfg, arrays)["streams"]["i_stream"]
    junk = encode_int(cfg, ref["X"][:, ::-1], [5])[:3 * cfg.token_beats]
    rst = Signal()
    top = Module()
    top.submodules.dut = dut = ResetInserter(rst)(EncoderLayer(cfg, w))
    got = []

    async def bench(ctx):
        ctx.set(dut.o_stream.ready, 1)
        for b in junk:   # three tokens of another sequence, then reset while it projects
            ctx.set(Value.cast(dut.i_stream.payload), b)
            ctx.set(dut.i_stream.valid, 1)
            while not (await ctx.tick().sample(dut.i_stream.ready))[2]:
                pass
        ctx.set(dut.i_stream.valid, 0)
        for _ in range(50):
            await ctx.tick()
        ctx.set(rst, 1)
        await ctx.tick()
        ctx.set(rst, 0)
        sent = 0
        for _ in range(200_000):
            if sent < len(beats):
                ctx.set(Value.cast(dut.i_stream.payload), beats[sent])
                ctx.set(dut.i_stream.valid, 1)
            else:
                ctx.set(dut.i_stream.valid, 0)
            _, _, iv, ir, ov, p = await ctx.tick().sample(
                dut.i_stream.valid, dut.i_stream.ready, dut.o_stream.valid,
                Value.cast(dut.o_stream.payload))
            sent += bool(iv and ir)
            if ov:
                got.append(int(p))
                if len(got) == len(beats):
                    return

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    y, sat = decode_int(cfg, [5], 5, got)
    np.testing.assert_array_equal(y, ref["Y"])
    np.testing.assert_array_equal(sat, ref["saturations"])
