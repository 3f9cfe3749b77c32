"""The weight formats of :mod:`hadware.spec.weights`: the int8 rule and its packing layout."""

from __future__ import annotations

import numpy as np
import pytest

from hadware.config.mlp import BitLinearGeometry, MlpConfig
from hadware.spec import weights as W
from hadware.spec.ternary import InvalidCodeError, TernaryError


def test_int8_rule_is_absmax_over_127_rounded_half_even():
    w = np.array([[0.5, -1.27, 0.0], [0.005, 0.015, -0.025]], dtype=np.float32)
    codes, beta = W.int8ize(w)
    assert beta == pytest.approx(0.01, rel=1e-6)
    # 0.5 / 0.01 = 50, -1.27 -> -127, 0.005 -> 0.5 -> 0 (half to even), 0.015 -> 1.5 -> 2,
    # -0.025 -> -2.5 -> -2.
    assert codes.tolist() == [[50, -127, 0], [0, 2, -2]]
    assert codes.dtype == np.int8


def test_int8_rule_never_gives_minus_128_and_keeps_a_floor_scale():
    codes, beta = W.int8ize(np.zeros((2, 2)))
    assert beta == pytest.approx(1e-5) and not codes.any()
    codes, _ = W.int8ize(np.random.default_rng(0).normal(size=(64, 64)))
    assert codes.min() >= -127 and codes.max() <= 127
    assert abs(codes).max() == 127


@pytest.mark.parametrize("bad", [np.zeros((0, 3)), np.array([[np.nan]]), np.array([["a"]])])
def test_int8_rule_refuses_bad_tensors(bad):
    with pytest.raises(TernaryError):
        W.int8ize(bad)


def test_int8_words_hold_four_twos_complement_bytes_low_slot_first():
    codes = np.array([[1, -1, 127, -127, 5]], dtype=np.int8)
    words = W.pack_int8(codes)
    assert words.tolist() == [0x81_7F_FF_01, 0x00_00_00_05]
    assert W.unpack_int8(words, 1, 5).tolist() == codes.tolist()


def test_int8_unpack_refuses_bad_words():
    with pytest.raises(TernaryError, match="takes 2 words"):
        W.unpack_int8([0], 1, 5)
    with pytest.raises(InvalidCodeError, match="padding"):
        W.unpack_int8([0, 0x100], 1, 5)
    with pytest.raises(InvalidCodeError, match="-128"):
        W.unpack_int8([0x80], 1, 1)
    with pytest.raises(InvalidCodeError, match=r"codes\[0, 1\]"):
        W.pack_int8(np.array([[0, -128]]))


def test_int8_roundtrip_random():
    rng = np.random.default_rng(1)
    codes = rng.integers(-127, 128, size=(7, 13)).astype(np.int8)
    assert (W.unpack_int8(W.pack_int8(codes), 7, 13) == codes).all()


def test_accumulator_width_follows_the_format():
    cfg = MlpConfig(d_model=16, d_hidden=48, lanes=4)
    g8 = MlpConfig(d_model=16, d_hidden=48, lanes=4, weights="int8").gate_up
    assert isinstance(g8, BitLinearGeometry)
    assert cfg.gate_up.acc_bits == 8 + 4          # |acc| <= 127 * 16
    assert g8.acc_bits == 15 + 4                  # |acc| <= 127 * 127 * 16 < 2**18
    assert 2 ** (g8.acc_bits - 1) > 127 * 127 * 16


def test_unknown_format_is_one_line():
    with pytest.raises(ValueError, match="weights must be one of 'ternary', 'int8', not 'int4'"):
        MlpConfig(weights="int4")


def test_int8_mlp_weights_export_and_reload_without_requantizing():
    from hadware.errors import InputError
    from hadware.spec import mlp as S
    from hadware.tb.mlp import latent_weights

    cfg = MlpConfig(d_model=8, d_hidden=12, lanes=4, weights="int8")
    w = S.quantize_weights(cfg, latent_weights(cfg, seed=3))
    arrays = w.export()
    assert str(arrays["weight_format"]) == "int8"
    back = S.load_exported(cfg, arrays)
    for name in ("gate_up", "down"):
        assert (getattr(back, name).codes == getattr(w, name).codes).all()
        assert getattr(back, name).beta == getattr(w, name).beta
    ternary_cfg = MlpConfig(d_model=8, d_hidden=12, lanes=4)
    with pytest.raises(InputError, match=r"weight_format is 'int8'.*'ternary'"):
        S.load_exported(ternary_cfg, arrays)
