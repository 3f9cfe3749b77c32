"""The standard int8 layer's RTL (``std_layer``) in the Amaranth simulator against its golden
model, bit for bit: random idles and stalls on both streams (stream rules checked every cycle,
exact output beat count), sequences of length n_max, 1 and 3 back to back, parallel and shared
heads, causal and bidirectional, the cycle formula held exactly, saturations counted."""

from __future__ import annotations

import numpy as np
import pytest

from hadware.config.std_layer import StdLayerConfig
from hadware.golden.std_layer import run_vectors_int
from hadware.hw.encoder_layer import EncoderLayer, sequence_cycles
from hadware.hw.std_layer import StdLayer
from hadware.tb.amsim import run_stream
from hadware.tb.encoder_layer import decode_int, encode, latent_weights

SMALL = dict(d_model=16, n_heads=2, head_dim=8, n_max=8, d_hidden=16, lanes=4, v_shift=3)


def _inputs(cfg, seed, lengths, scale=1.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, scale, (len(lengths), max(lengths), cfg.d_model))
    top = 2.0 ** (cfg.res_bits - 1 - cfg.res_frac_bits)
    return {"x": np.clip(x, -top, top - 1.0), "n_valid": np.array(lengths)}


CASES = {
    "parallel": (dict(SMALL), 1.0),
    "shared-causal": (dict(SMALL, head_parallel=False, causal=True,
                           temperature=[0.002, 0.02]), 1.0),
    "saturating-lanes2": (dict(SMALL, lanes=2, v_shift=0, res_bits=12, res_frac_bits=6), 12.0),
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.full] * (n == "parallel"))
                                  for n in CASES])
def test_bit_exact_with_stalls_and_cycle_formula(name):
    kw, scale = CASES[name]
    cfg = StdLayerConfig(**kw)
    w = latent_weights(cfg, 7)
    lengths = [cfg.n_max, 1, 3]
    arrays = _inputs(cfg, 11, lengths, scale)
    ref = run_vectors_int(cfg, w, arrays)
    enc = encode(cfg, arrays)
    beats = enc["streams"]["i_stream"]
    # With stalls: bit exact.
    got, _, _ = run_stream(StdLayer(cfg, w), beats, enc["expected"]["o_stream"],
                           max_cycles=3_000_000, idle=0.3, stall=0.3, seed=3)
    y, sat = decode_int(cfg, arrays["n_valid"], cfg.n_max, got)
    np.testing.assert_array_equal(y, ref["Y"])
    np.testing.assert_array_equal(sat, ref["saturations"])
    if name.startswith("saturating"):
        assert (sat > 0).all()
        return
    # Without stalls: the cycle formula, exactly.
    got, ins, outs = run_stream(StdLayer(cfg, w), beats, enc["expected"]["o_stream"],
                                max_cycles=3_000_000)
    first, last = 0, -1
    for n in lengths:
        last += n * cfg.token_beats
        assert outs[last] - ins[first] == sequence_cycles(cfg, n), n
        first += n * cfg.token_beats


def test_the_layer_classes_take_their_own_configs():
    cfg = StdLayerConfig(**SMALL)
    with pytest.raises(TypeError, match="must be of type EncoderLayerConfig"):
        EncoderLayer(cfg, {})
    assert cfg.weights == "int8" and cfg.qkv.acc_bits == 15 + 4
    assert cfg.temperature == (2.0 ** (2 * (3 - 8)) / 8 ** 0.5,) * 2
