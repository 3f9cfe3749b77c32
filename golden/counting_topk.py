"""Golden model of the counting top-k sparsifier: the top-k golden model, on binarized scores.

The counting top-k (:mod:`hadware.hw.counting_topk`) is a drop-in for the streaming top-k: the
same streams and exactly the same outputs, so its specification is the top-k contract of
:mod:`hadware.golden.topk` (the ``min(n_valid, top_k)`` best valid entries per row, score
descending, ties to the lower index, padding slots index -1 and score 0), computed by the same
function. The only difference is the input domain: every score must be a binarized score for
the config's ``d`` (:mod:`hadware.spec.counting_topk`: ``-d, -d + 2, ..., d``), checked by
:func:`check_inputs`; any other score is an :class:`~hadware.errors.InputError` naming the
array and the entry (padding entries past ``n_valid`` included), never rounded.
"""

from __future__ import annotations

from hadware.golden import topk
from hadware.spec.counting_topk import check_binarized_scores

__all__ = ["check_inputs", "run_vectors"]


def check_inputs(cfg, arrays: dict) -> dict:
    """The top-k vector-file checks (:func:`hadware.golden.topk.check_inputs`) and the
    binarized score set of ``cfg.d`` on every entry of ``scores``."""
    checked = topk.check_inputs(cfg, arrays)
    checked["scores"] = check_binarized_scores("scores", checked["scores"], cfg.d)
    return checked


def run_vectors(cfg, arrays: dict) -> dict:
    """Golden outputs ``topk_index`` and ``topk_score``, int32 (m, top_k): those of
    :func:`hadware.golden.topk.run_vectors` after :func:`check_inputs`."""
    return topk.run_vectors(cfg, check_inputs(cfg, arrays))
