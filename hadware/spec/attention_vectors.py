"""The vector-file contract of every attention variant: its arrays, their checks, the bit order.

Inputs (:func:`check_inputs`), for a config ``cfg`` of the attention family
(:class:`~hadware.config.attention_core.AttentionCoreConfig`):

* ``q``: ``(m, d)``, ``m >= 1`` queries;
* ``k``: ``(n, d)``, ``1 <= n <= n_max`` keys;
* ``v``: ``(n, d_v)``, integers in -128..127 (int8), row ``j`` belongs to key ``j``;
* ``n_valid`` (optional): ``(m,)``, integers with ``1 <= n_valid <= n``; query ``i`` sees keys
  ``0 .. n_valid[i] - 1`` only (default: all ``n``).

``q`` and ``k`` hold only -1 and +1 for the ``hamming`` scorer, integers in -128..127 for the
``int8`` scorer (``cfg.scorer``). Any integer or real dtype is accepted when its values are
exact (a real value such as 0.5 is an error, never rounded); values are checked before any
cast, so an int32 300 is reported, not wrapped.

Outputs (:func:`output_names`), all int32:

* ``out``: ``(m, d_v)``, the attention output in units of ``2**-out_frac_bits``;
* with the ``topk`` sparsifier only: ``topk_index``, ``(m, top_k)``, the selected key indices
  padded with -1, and ``topk_score``, ``(m, top_k)``, their scores padded with 0.

Bit order (:func:`pm1_to_int`): a +-1 vector is the integer whose bit ``j`` is 1 where element
``j`` is +1 (element 0 is the least significant bit).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from hadware.errors import InputError

__all__ = ["INPUT_NAMES", "check_inputs", "input_names", "output_names", "pm1_to_int"]

#: Arrays of an input vector file; ``n_valid`` may be left out.
INPUT_NAMES = ("q", "k", "v", "n_valid")
#: Arrays of every output vector file.
_OUT = ("out",)
#: Arrays a top-k variant adds.
_TOPK = ("topk_index", "topk_score")

_INT8 = "integers in -128..127 (int8)"


def input_names() -> tuple[str, ...]:
    """``("q", "k", "v", "n_valid")``; ``n_valid`` may be left out of a file."""
    return INPUT_NAMES


def output_names(cfg: Any) -> tuple[str, ...]:
    """``("out",)``, plus ``("topk_index", "topk_score")`` when ``cfg.sparsifier == "topk"``
    (``cfg`` may be a config or its class)."""
    return _OUT + _TOPK if cfg.sparsifier == "topk" else _OUT


def pm1_to_int(row: Any) -> int:
    """A +-1 vector as an integer, bit ``j`` = 1 where element ``j`` is +1."""
    bits = np.packbits(np.asarray(row) > 0, bitorder="little")
    return int.from_bytes(bits.tobytes(), "little")


def _array(name: str, x: Any) -> np.ndarray:
    """``x`` as a numpy array of integer or real dtype (booleans and others rejected)."""
    try:
        a = np.asarray(x)
    except (TypeError, ValueError):  # ragged nested lists, for one
        raise InputError(f"{name} is not a rectangular array") from None
    if a.dtype == np.bool_:
        raise InputError(f"{name} must hold numbers, not booleans")
    if a.dtype.kind not in "iuf":
        raise InputError(f"{name} must be an integer or real array, not dtype {a.dtype}")
    return a


def _check_values(name: str, a: np.ndarray, allowed: str, ok: np.ndarray) -> None:
    """``ok`` marks the acceptable elements (non-integers never are); report the first other
    one with its position."""
    if a.dtype.kind == "f":
        ok = ok & np.isfinite(a) & (a == np.floor(a))
    if not ok.all():
        at = tuple(int(i) for i in np.argwhere(~ok)[0])
        where = "[" + ", ".join(map(str, at)) + "]"
        raise InputError(f"{name} must hold {allowed}, found {a[at].item()!r} at {where}")


def _check_element(name: str, a: np.ndarray, binary: bool) -> None:
    if binary:
        _check_values(name, a, "only -1 and +1", (a == 1) | (a == -1))
    else:
        _check_values(name, a, _INT8, (a >= -128) & (a <= 127))


def check_inputs(cfg: Any, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check an attention vector set against the contract and return it normalised.

    Parameters
    ----------
    cfg : AttentionCoreConfig
        Provides ``d``, ``n_max``, ``d_v``, ``scorer`` (``"hamming"``: +-1 queries and keys)
        and ``block`` (named in the message about unknown arrays).
    arrays : mapping of str to array-like
        ``q``, ``k``, ``v`` and optionally ``n_valid`` (a dict or an ``np.load`` result).

    Returns
    -------
    dict
        ``q``, ``k``, ``v`` as int8 and ``n_valid`` as int32 (filled with ``n`` when absent),
        in that order.

    Raises
    ------
    InputError
        One line naming the array and the problem: an unknown or missing array, a non-numeric
        or ragged array, a wrong shape, no queries or keys, more keys than ``n_max``, a value
        outside its set (with the first offending value and its position), or ``n_valid``
        outside ``1..n``.
    """
    unknown = sorted(set(arrays) - set(INPUT_NAMES))
    if unknown:
        raise InputError(f"unknown array(s) {', '.join(map(repr, unknown))}; "
                         f"{cfg.block} takes q, k, v and optionally n_valid")
    for name in ("q", "k", "v"):
        if name not in arrays:
            raise InputError(f"missing array {name!r}")
    q, k, v = (_array(name, arrays[name]) for name in ("q", "k", "v"))
    for name, a, rows, what in (("q", q, "m", "query"), ("k", k, "n", "key")):
        if a.ndim != 2 or a.shape[1] != cfg.d:
            raise InputError(f"{name} must have shape ({rows}, d) = ({rows}, {cfg.d}), "
                             f"not {a.shape}")
        if a.shape[0] < 1:
            raise InputError(f"{name} must have at least one row ({what})")
    m, n = q.shape[0], k.shape[0]
    if n > cfg.n_max:
        raise InputError(f"k has {n} rows (keys), more than n_max = {cfg.n_max}")
    if v.shape != (n, cfg.d_v):
        raise InputError(f"v must have shape (n, d_v) = ({n}, {cfg.d_v}), not {v.shape}")
    binary = cfg.scorer == "hamming"
    _check_element("q", q, binary)
    _check_element("k", k, binary)
    _check_element("v", v, False)
    if "n_valid" in arrays:
        n_valid = _array("n_valid", arrays["n_valid"])
        if n_valid.shape != (m,):
            raise InputError(f"n_valid must have shape (m,) = ({m},), not {n_valid.shape}")
        _check_values("n_valid", n_valid, f"integers between 1 and n = {n}",
                      (n_valid >= 1) & (n_valid <= n))
    else:
        n_valid = np.full(m, n)
    return {"q": q.astype(np.int8), "k": k.astype(np.int8), "v": v.astype(np.int8),
            "n_valid": n_valid.astype(np.int32)}
