"""The score set of the counting top-k sparsifier: binarized scores, and its input check.

A binarized score is ``s = 2 * popcount(XNOR(q, k)) - d`` for ``d``-bit queries and keys, so
it takes exactly the ``d + 1`` values ``-d, -d + 2, ..., d`` (the parity of ``d``); its
*value* ``v = (s + d) / 2`` is the popcount, in ``[0, d]``. The counting top-k keeps one counter
per value, so a score outside this set has no counter: it is an input error of the vector
files, reported here, never rounded or clamped by the models.
"""

from __future__ import annotations

import numpy as np

from hadware.errors import InputError

__all__ = ["binarized_scores", "check_binarized_scores"]


def binarized_scores(d: int) -> np.ndarray:
    """The ``d + 1`` binarized scores ``-d, -d + 2, ..., d`` (int64, ascending)."""
    if isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 1:
        raise ValueError(f"d must be a positive integer, not {d!r}")
    return np.arange(-int(d), int(d) + 1, 2, dtype=np.int64)


def check_binarized_scores(name: str, scores: np.ndarray, d: int) -> np.ndarray:
    """Return ``scores`` (integers, any shape) as int64 after checking that each is a binarized
    score for ``d``; an :class:`InputError` names the array, the first bad entry and its
    position otherwise."""
    a = np.asarray(scores)
    if a.dtype.kind not in "iub":
        raise InputError(f"array {name!r} must hold integers, not {a.dtype}")
    a = a.astype(np.int64)
    bad = (np.abs(a) > d) | ((a + d) % 2 != 0)
    if np.any(bad):
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(f"array {name!r} holds {int(a[where])} at {list(where)}, which is not "
                         f"a binarized score 2*popcount - d for d = {d} (one of -{d}, "
                         f"-{d} + 2, ..., {d})")
    return a
