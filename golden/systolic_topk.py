"""Golden model of the systolic top-k sparsifier: the top-k golden model.

The systolic top-k (:mod:`hadware.hw.systolic_topk`) is a drop-in for the streaming top-k: the
same streams and exactly the same outputs for any signed scores, so its specification is the
top-k contract of :mod:`hadware.golden.topk` (the ``min(n_valid, top_k)`` best valid entries per
row, score descending, ties to the lower index, padding slots index -1 and score 0), computed
by the same functions.
"""

from __future__ import annotations

from hadware.golden.topk import check_inputs, run_vectors

__all__ = ["check_inputs", "run_vectors"]
