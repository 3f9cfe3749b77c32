"""The SiLU table of the MLP's piecewise-linear SiLU (the RTL embeds it as a ROM, the golden
model interpolates in it; the rule around it is the "GLU" section of the
:mod:`hadware.golden.mlp` specification)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["silu_table"]


def silu_table(cfg: Any) -> tuple[int, ...]:
    """The SiLU table ``N[k] = floor(SiLU(-k * 2**-Fs) * 2**Fl + 1/2)``,
    ``k = 0 .. 2**(silu_range_log2 + silu_seg_frac_bits)``; every entry is ``<= 0``.

    ``cfg`` is an :class:`~hadware.config.mlp.MlpConfig` or anything with its
    ``silu_range_log2``, ``silu_seg_frac_bits`` (``Fs``) and ``silu_frac_bits`` (``Fl``).
    ``SiLU(-u) = -u / (1 + exp(u))``, evaluated in float64.
    """
    fs, fl = cfg.silu_seg_frac_bits, cfg.silu_frac_bits
    out = []
    for k in range(2 ** (cfg.silu_range_log2 + fs) + 1):
        u = k / 2 ** fs
        out.append(math.floor(-u / (1.0 + math.exp(u)) * 2 ** fl + 0.5))
    return tuple(out)
