"""The SiLU table of the specification layer (hadware.spec.silu) against SiLU itself, evaluated
here independently: in 50-digit decimal arithmetic, ``SiLU(x) = x / (1 + exp(-x))``, rounded
half up to ``silu_frac_bits`` fraction bits."""

from __future__ import annotations

import math
from decimal import Decimal, localcontext
from types import SimpleNamespace

import pytest

from hadware.config.mlp import MlpConfig
from hadware.spec.silu import silu_table


def decimal_silu_table(range_log2: int, seg_frac_bits: int, frac_bits: int) -> list[int]:
    with localcontext() as ctx:
        ctx.prec = 50
        out = []
        for k in range(2 ** (range_log2 + seg_frac_bits) + 1):
            x = -Decimal(k) / 2 ** seg_frac_bits
            silu = x / (1 + (-x).exp())
            out.append(math.floor(silu * 2 ** frac_bits + Decimal("0.5")))
        return out


def test_default_table_by_hand():
    # Default: segments of 2**-6, 18 fraction bits, |x| < 16. SiLU(-1) = -1/(1 + e) =
    # -0.268941...; * 2**18 = -70501.38 -> -70501. SiLU(-82/64) (near the minimum -0.27846 at
    # -1.27846) * 2**18 = -72997.59 -> -72998. SiLU(-16) * 2**18 = -0.472 -> 0.
    table = silu_table(MlpConfig())
    assert len(table) == 1025
    assert (table[0], table[1], table[64], table[82], table[128], table[1024]) == (
        0, -2032, -70501, -72998, -62497, 0)
    assert min(table) == table[82] and max(table) == 0


@pytest.mark.parametrize("range_log2, seg_frac_bits, frac_bits", [
    (4, 6, 18),   # the default
    (2, 4, 6),    # narrow (the tests' NARROW configuration)
    (0, 0, 8),    # one segment: N[0], N[1]
    (3, 5, 24),
])
def test_table_is_rounded_silu(range_log2, seg_frac_bits, frac_bits):
    cfg = SimpleNamespace(silu_range_log2=range_log2, silu_seg_frac_bits=seg_frac_bits,
                          silu_frac_bits=frac_bits)
    assert list(silu_table(cfg)) == decimal_silu_table(range_log2, seg_frac_bits, frac_bits)


def test_table_size_matches_the_config():
    cfg = MlpConfig(silu_range_log2=3, silu_seg_frac_bits=5)
    assert len(silu_table(cfg)) == cfg.silu_table_size == 2 ** 8 + 1
