"""Golden model of the XNOR-popcount score unit.

Specification: a query and a key are d-element vectors over {-1, +1}. In hardware an element is
one bit, 1 for +1 and 0 for -1, element j at bit j. The score of a query q and a key k is

    s = 2 * popcount(XNOR(q_bits, k_bits)) - d,

which equals the dot product q . k of the +-1 vectors. Scores are integers in [-d, d] with the
parity of d.

Vector files: ``q`` (m, d) and ``k`` (n, d), both int8 with values -1/+1, give ``s`` int32
(m, n), the score of every query against every key.
"""

from __future__ import annotations

import numpy as np
import torch

from hadware.config.score_unit import ScoreUnitConfig
from hadware.errors import InputError
from hadware.vectors import check_known, check_pm1, require

__all__ = ["check_inputs", "run_vectors", "scores", "to_bits"]


def to_bits(x: torch.Tensor) -> torch.Tensor:
    """+-1 values to bits (1 for +1, 0 for -1) as a bool tensor."""
    return x > 0


def scores(q_bits: torch.Tensor, k_bits: torch.Tensor) -> torch.Tensor:
    """Scores of every query (m, d) against every key (n, d), both bool bit tensors: (m, n)
    int64, computed as 2*popcount(XNOR) - d."""
    d = q_bits.shape[-1]
    xnor = ~(q_bits[:, None, :] ^ k_bits[None, :, :])
    return 2 * xnor.sum(dim=-1, dtype=torch.int64) - d


def check_inputs(cfg: ScoreUnitConfig, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check a score unit input file against ``cfg``; return the arrays as int64."""
    check_known(arrays, {"q", "k"})
    q = check_pm1("q", require(arrays, "q", 2))
    k = check_pm1("k", require(arrays, "k", 2))
    for name, a in (("q", q), ("k", k)):
        if a.shape[1] != cfg.d:
            raise InputError(f"array {name!r} has {a.shape[1]} columns, but the config has "
                             f"d = {cfg.d}")
    return {"q": q, "k": k}


def run_vectors(cfg: ScoreUnitConfig, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Golden outputs ``{"s": int32 (m, n)}`` for an input file."""
    a = check_inputs(cfg, arrays)
    s = scores(to_bits(torch.from_numpy(a["q"])), to_bits(torch.from_numpy(a["k"])))
    return {"s": s.numpy().astype(np.int32)}
