"""Tests of the ternary quantization rule and the ROM packing layout (hadware.spec.ternary).

Expected words are derived by hand from the written layout (module docstring), not from the
packer: codes are 2-bit two's complement (+1 -> 0b01, -1 -> 0b11, 0 -> 0b00), slot j of a
32-bit word at bits [2j+1:2j], rows start on word boundaries.
"""

import numpy as np
import pytest
import torch

from hadware.spec import ternary as tp
from hadware.spec.ternary import (
    InvalidCodeError,
    RequantizationError,
    TernaryError,
    pack,
    ternarize,
    to_mant_exp,
    unpack,
)


def test_layout_constants_are_pinned():
    # The RTL decoder imports these; changing any of them needs a new layout version.
    assert tp.LAYOUT is tp.LAYOUT_V1
    assert (tp.LAYOUT_VERSION, tp.WORD_BITS, tp.CODE_BITS, tp.CODES_PER_WORD) == (1, 32, 2, 16)
    assert (tp.CODE_ZERO, tp.CODE_PLUS, tp.CODE_MINUS, tp.CODE_INVALID) == (0b00, 0b01, 0b11,
                                                                            0b10)
    assert tp.LAYOUT.words_per_row(17) == 2
    assert tp.LAYOUT.locate(row=2, col=17, cols=17) == (5, 2)


@pytest.mark.parametrize("rows, cols", [(1, 1), (3, 16), (5, 17), (7, 33), (2, 100), (96, 16),
                                        (16, 48), (1, 31)])
def test_round_trip_random_shapes(rows, cols):
    rng = np.random.default_rng(rows * 1000 + cols)
    codes = rng.integers(-1, 2, size=(rows, cols)).astype(np.int8)
    words = pack(codes)
    assert words.dtype == np.uint32
    assert words.shape == (rows * -(-cols // 16),)
    back = unpack(words, rows, cols)
    assert back.dtype == np.int8
    np.testing.assert_array_equal(back, codes)
    # Python ints and lists are accepted too.
    np.testing.assert_array_equal(unpack([int(w) for w in words], rows, cols), codes)


def test_hand_packed_example():
    # Row 0: +1, -1, 0, +1, then twelve zeros, then -1 in column 16 (second word, slot 0).
    # Row 1: sixteen +1, then 0 in column 16.
    row0 = [1, -1, 0, 1] + [0] * 12 + [-1]
    row1 = [1] * 16 + [0]
    words = pack(np.array([row0, row1], dtype=np.int8))
    # slot0=0b01, slot1=0b11 (bits 3:2), slot2=0b00, slot3=0b01 (bits 7:6) -> 0b0100_1101
    expected = [0b0100_1101, 0b11, 0x5555_5555, 0x0000_0000]
    assert [int(w) for w in words] == expected
    assert [hex(int(w)) for w in words] == ["0x4d", "0x3", "0x55555555", "0x0"]


def test_hand_packed_single_slot_positions():
    codes = np.zeros((1, 16), dtype=np.int8)
    codes[0, 15] = -1  # top slot: bits 31:30
    assert int(pack(codes)[0]) == 0xC000_0000
    codes[0, 15] = 1
    assert int(pack(codes)[0]) == 0x4000_0000


@pytest.mark.parametrize("bad, where", [(2, r"codes\[0, 1\] is 2"), (-2, r"codes\[0, 1\] is -2"),
                                        (3, r"codes\[0, 1\] is 3")])
def test_pack_rejects_out_of_range_codes(bad, where):
    codes = np.zeros((2, 5), dtype=np.int8)
    codes[0, 1] = bad
    with pytest.raises(InvalidCodeError, match=where):
        pack(codes)


def test_pack_rejects_fractions_and_bad_shapes():
    with pytest.raises(InvalidCodeError, match=r"codes\[0, 0\] is 0.5"):
        pack(np.array([[0.5, 1.0]]))
    with pytest.raises(TernaryError, match=r"2-D array"):
        pack(np.zeros(4, dtype=np.int8))
    with pytest.raises(TernaryError, match=r"integer array, not bool"):
        pack(np.zeros((2, 2), dtype=bool))


def test_unpack_rejects_invalid_code_3():
    word = 0b10 << 10  # slot 5 holds 0b10
    with pytest.raises(InvalidCodeError,
                       match=r"word 0 holds the invalid code 0b10 at bits \[11:10\] "
                             r"\(row 0, column 5\)"):
        unpack([word], 1, 16)


def test_unpack_rejects_nonzero_padding():
    # 17 columns: word 1 uses slot 0 only; slot 1 (bits 3:2) is padding.
    with pytest.raises(InvalidCodeError, match=r"word 1 has a non-zero padding slot at bits "
                                               r"\[3:2\] \(row 0\)"):
        unpack([0, 0b01 << 2], 1, 17)


def test_unpack_rejects_wrong_word_count_and_range():
    with pytest.raises(TernaryError, match=r"takes 2 words of layout v1, not 1"):
        unpack([0], 1, 17)
    with pytest.raises(TernaryError, match=r"word 0 is 4294967296, not a 32-bit"):
        unpack([2 ** 32], 1, 16)
    with pytest.raises(TernaryError, match=r"word 0 is -1"):
        unpack([-1], 1, 16)
    with pytest.raises(TernaryError, match=r"rows must be a positive integer, not 0"):
        unpack([], 0, 16)


def test_ternarize_matches_formula_small_tensor():
    rng = np.random.default_rng(7)
    w = rng.normal(0.0, 0.3, size=(4, 6)).astype(np.float32)
    codes, beta = ternarize(w)
    # Independent computation in float64: beta = max(mean|W|, 1e-5), round half to even.
    beta_ref = max(float(np.mean(np.abs(w.astype(np.float64)))), 1e-5)
    ratio = w.astype(np.float64) / beta_ref
    # The tensor must not sit on a rounding tie, or float32 vs float64 could legitimately differ.
    assert np.min(np.abs(np.abs(ratio) - 0.5)) > 1e-3
    codes_ref = np.clip(np.round(ratio), -1, 1).astype(np.int8)
    assert codes.dtype == np.int8
    np.testing.assert_array_equal(codes, codes_ref)
    assert beta == pytest.approx(beta_ref, rel=1e-6)
    assert set(np.unique(codes)) <= {-1, 0, 1}


def test_ternarize_rounds_half_to_even_and_clamps():
    # mean|W| = (1 + 0.5 + 0.5 + 2) / 4 = 1.0 exactly, so W / beta = W.
    w = np.array([[1.0, -0.5, 0.5, 2.0]], dtype=np.float32)
    codes, beta = ternarize(w)
    assert beta == 1.0
    # 0.5 and -0.5 round to 0 (half to even; half up would give 1), 2.0 clamps to 1.
    assert codes.tolist() == [[1, 0, 0, 1]]
    w = np.array([[1.5, -1.5, -2.5, 0.5]], dtype=np.float32)  # mean 1.5
    assert ternarize(w)[0].tolist() == [[1, -1, -1, 0]]


def test_ternarize_beta_floor_and_torch_input():
    codes, beta = ternarize(np.zeros((3, 3), dtype=np.float32))
    assert beta == float(np.float32(1e-5))
    assert not codes.any()
    codes_t, beta_t = ternarize(torch.full((2, 2), -3.0))
    assert codes_t.tolist() == [[-1, -1], [-1, -1]] and beta_t == 3.0


def test_ternarize_rejects_bad_input():
    with pytest.raises(TernaryError, match="NaN or infinite"):
        ternarize(np.array([[1.0, np.nan]]))
    with pytest.raises(TernaryError, match="must not be empty"):
        ternarize(np.zeros((0, 4)))
    with pytest.raises(TernaryError, match="real-valued"):
        ternarize(np.array([[1 + 2j]]))


def test_requantization_would_shrink_beta_and_is_refused():
    rng = np.random.default_rng(3)
    w = rng.normal(0.0, 1.0, size=(8, 32)).astype(np.float32)
    codes, beta = ternarize(w)
    nonzero_fraction = np.count_nonzero(codes) / codes.size
    assert 0.3 < nonzero_fraction < 0.9
    effective = (beta * codes.astype(np.float32)).astype(np.float32)
    # What a second quantization would do: same codes, beta shrunk by the non-zero fraction.
    codes2, beta2 = ternarize(effective, allow_ternary_valued=True)
    np.testing.assert_array_equal(codes2, codes)
    assert beta2 == pytest.approx(beta * nonzero_fraction, rel=1e-5)
    assert beta2 < 0.9 * beta
    # The API refuses it, for the effective weights and for the bare codes.
    with pytest.raises(RequantizationError, match="already ternary-valued"):
        ternarize(effective)
    with pytest.raises(RequantizationError, match="already ternary-valued"):
        ternarize(codes)


def test_to_mant_exp_by_hand():
    # 0.1 = 0.8 * 2**-3 -> exp = 16 + 3 = 19; 0.1 * 2**19 = 52428.8 -> 52429.
    assert to_mant_exp(0.1, 16) == (52429, 19)
    # 1.0 = 0.5 * 2**1 -> exp = 7, mant = 128.
    assert to_mant_exp(1.0, 8) == (128, 7)
    # 3.0 with 2 bits: 3 * 2**0 = 3 -> (3, 0).
    assert to_mant_exp(3.0, 2) == (3, 0)
    # 0.99999 * 16 = 15.99984 rounds to 16 = 2**4: renormalized to (8, 3).
    assert to_mant_exp(0.99999, 4) == (8, 3)
    # Half-up at the last bit: 0.75 * 2**1 = 1.5 with 1 bit -> 2 -> (1, 0).
    assert to_mant_exp(0.75, 1) == (1, 0)


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_to_mant_exp_rejects(value):
    with pytest.raises(ValueError, match="value must be positive and finite"):
        to_mant_exp(value, 16)


@pytest.mark.parametrize("shape, seed", [((10, 24), 0), ((96, 16), 1), ((64, 256), 2)])
def test_ternarize_is_the_training_models_rule(shape, seed):
    # The reference model quantizes in float32 with torch: beta = max(mean|W|, 1e-5),
    # W_t = clamp(round(W / beta), -1, 1). Codes agree exactly; beta to a float32 ulp (the
    # two reductions sum in different orders).
    from hadware.sw.models import absmean_ternary

    w = torch.from_numpy(np.random.default_rng(seed).normal(0, 0.2, shape).astype(np.float32))
    want_codes, want_beta = absmean_ternary(w)
    codes, beta = ternarize(w.numpy())
    np.testing.assert_array_equal(codes, want_codes.numpy().astype(np.int8))
    assert abs(beta - float(want_beta)) <= float(np.spacing(np.float32(beta)))
