"""Golden model of the streaming top-k sparsifier.

Contract
--------
Input: integer scores of shape ``(m, n)`` (one row per query, one column per key, column ``j``
is key index ``j``) and, per row, a count ``n_valid`` with ``0 <= n_valid <= n``; only the first
``n_valid`` entries of a row take part. Output, per row, ``top_k`` slots:

* the selected set is the ``min(n_valid, top_k)`` valid entries of highest score; among equal
  scores the LOWER index wins;
* slots are ordered by score descending, then index ascending, so slot 0 holds the row maximum
  at its lowest index;
* slots past ``min(n_valid, top_k)`` are padding: index ``-1`` and score ``0``.

Hardware form
-------------
The RTL sees a row's keys one per lane in index order and keeps a sorted list of ``top_k`` slots.
An arriving entry ``(s, j)`` goes directly below every held slot whose score is greater than
**or equal to** ``s`` (all held indices are lower than ``j``, so they win ties); the slots below
move down by one and the last one falls off. A full list ignores an entry whose score does not
exceed the last slot's. :func:`stream_topk_row` spells this out one entry at a time and gives the
same result as :func:`select_topk`, which is the vectorized model.
"""

from __future__ import annotations

import torch

__all__ = [
    "PAD_INDEX",
    "PAD_SCORE",
    "check_inputs",
    "run_vectors",
    "select_topk",
    "stream_topk_row",
]

#: Index of a padding slot.
PAD_INDEX = -1
#: Score of a padding slot.
PAD_SCORE = 0

# Scores must lie strictly inside this range so that the masking value below sorts last.
_SCORE_LIMIT = 2**62


def select_topk(
    scores: torch.Tensor, n_valid: torch.Tensor | None, top_k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Select the ``top_k`` best entries of each row (vectorized over rows).

    Parameters
    ----------
    scores : torch.Tensor
        Integer tensor ``(m, n)`` with ``|score| < 2**62``.
    n_valid : torch.Tensor or None
        Integer tensor ``(m,)`` with ``0 <= n_valid <= n``; ``None`` means ``n`` for every row.
    top_k : int
        Slots per row, at least 1; may exceed ``n``.

    Returns
    -------
    (indices, scores) : tuple of torch.Tensor
        Both int64 of shape ``(m, top_k)``, ordered and padded as the module docstring says.

    Raises
    ------
    ValueError
        Wrong shapes or dtypes, ``top_k < 1``, ``n_valid`` or scores out of range.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer of at least 1, not {top_k!r}")
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D (m, n), not of shape {tuple(scores.shape)}")
    if scores.dtype.is_floating_point or scores.dtype.is_complex or scores.dtype == torch.bool:
        raise ValueError(f"scores must be an integer tensor, not {scores.dtype}")
    m, n = scores.shape
    scores = scores.to(torch.int64)
    if scores.numel() and int(scores.abs().max()) >= _SCORE_LIMIT:
        raise ValueError("scores must lie strictly between -2**62 and 2**62")
    if n_valid is None:
        n_valid = torch.full((m,), n, dtype=torch.int64)
    else:
        if tuple(n_valid.shape) != (m,):
            raise ValueError(f"n_valid must have shape ({m},), not {tuple(n_valid.shape)}")
        n_valid = n_valid.to(torch.int64)
        if m and (int(n_valid.min()) < 0 or int(n_valid.max()) > n):
            raise ValueError(f"n_valid must lie between 0 and n ({n})")

    # Pad the columns to at least top_k so that every row has top_k candidates to sort.
    width = max(n, top_k)
    column = torch.arange(width, dtype=torch.int64)
    valid = column[None, :] < n_valid[:, None]
    keyed = torch.full((m, width), -_SCORE_LIMIT, dtype=torch.int64)
    keyed[:, :n] = scores
    keyed = torch.where(valid, keyed, torch.full_like(keyed, -_SCORE_LIMIT))

    # A stable descending sort keeps equal scores in index order: the lower index first.
    # Invalid entries carry a score below every valid one, so they sort after all of them.
    order = torch.sort(keyed, dim=1, descending=True, stable=True).indices[:, :top_k]
    top_scores = torch.gather(keyed, 1, order)

    selected = torch.arange(top_k, dtype=torch.int64)[None, :] < n_valid[:, None]
    indices = torch.where(selected, order, torch.full_like(order, PAD_INDEX))
    top_scores = torch.where(selected, top_scores, torch.full_like(top_scores, PAD_SCORE))
    return indices, top_scores


def stream_topk_row(scores: list[int], n_valid: int, top_k: int) -> tuple[list[int], list[int]]:
    """The hardware's insertion rule for one row, one entry at a time (reference, not fast).

    Entries ``j = 0 .. n_valid - 1`` arrive in order. Entry ``(s, j)`` is inserted directly
    below the last held slot with score ``>= s``; if the list then holds more than ``top_k``
    slots, the last one is dropped. Returns ``(indices, scores)`` padded to ``top_k`` with
    ``(-1, 0)``.
    """
    held: list[tuple[int, int]] = []  # (score, index), best first
    for j in range(n_valid):
        s = scores[j]
        pos = len(held)
        while pos > 0 and held[pos - 1][0] < s:
            pos -= 1
        if pos < top_k:
            held.insert(pos, (s, j))
            del held[top_k:]
    pad = top_k - len(held)
    return ([j for _, j in held] + [PAD_INDEX] * pad, [s for s, _ in held] + [PAD_SCORE] * pad)


# -- vector files (hadware golden topk / hadware sim topk) -------------------------------------


def check_inputs(cfg, arrays: dict) -> dict:
    """Check a top-k vector file against a :class:`~hadware.config.topk.TopKConfig`.

    ``scores``: integers (m, n) with 1 <= n <= n_max, each within the signed
    ``score_width``-bit range; ``n_valid`` (optional): integers (m,) in [0, n], default n.
    """
    import numpy as np

    from hadware.errors import InputError
    from hadware.vectors import check_integer_array, check_known, require

    check_known(arrays, {"scores", "n_valid"})
    s = require(arrays, "scores", 2)
    m, n = s.shape
    if not 1 <= n <= cfg.n_max:
        raise InputError(f"array 'scores' has {n} columns; the config allows 1 to n_max "
                         f"({cfg.n_max})")
    if m < 1:
        raise InputError("array 'scores' has no rows")
    lim = 1 << (cfg.score_width - 1)
    s = check_integer_array("scores", s, -lim, lim - 1)
    if "n_valid" in arrays:
        nv = require(arrays, "n_valid", 1)
        if nv.shape[0] != m:
            raise InputError(f"array 'n_valid' has {nv.shape[0]} entries, 'scores' has {m} rows")
        nv = check_integer_array("n_valid", nv, 0, n)
    else:
        nv = np.full(m, n, dtype=np.int64)
    return {"scores": s, "n_valid": nv}


def run_vectors(cfg, arrays: dict) -> dict:
    """Golden outputs ``topk_index`` and ``topk_score``, int32 (m, top_k)."""
    import numpy as np

    a = check_inputs(cfg, arrays)
    idx, sc = select_topk(torch.from_numpy(a["scores"]), torch.from_numpy(a["n_valid"]),
                          cfg.top_k)
    return {"topk_index": idx.numpy().astype(np.int32), "topk_score": sc.numpy().astype(np.int32)}
