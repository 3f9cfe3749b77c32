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

Batched files: an optional leading batch axis of ``b >= 1`` entries, on every array or on
none (the rank of ``q`` decides: 2 unbatched, 3 batched): ``q`` ``(b, m, d)``, ``k``
``(b, n, d)``, ``v`` ``(b, n, d_v)``, ``n_valid`` ``(b, m)``. Each entry is an independent
context: the queries ``q[i]`` see only the keys and values ``k[i]``, ``v[i]`` (the first
``n_valid[i, j]`` of them), as if entry ``i`` were an unbatched file of its own; the hardware
clears its context between entries. Every entry has the same ``m`` and ``n`` (the arrays are
rectangular): an entry with fewer keys pads ``k`` and ``v`` and limits its ``n_valid``; the
padding rows must still be valid values and never influence an output.

Outputs (:func:`output_names`), all int32:

* ``out``: ``(m, d_v)``, the attention output in units of ``2**-out_frac_bits``;
* with the ``topk`` sparsifier only: ``topk_index``, ``(m, top_k)``, the selected key indices
  padded with -1, and ``topk_score``, ``(m, top_k)``, their scores padded with 0.

A batched file's outputs have the same leading axis: ``(b, m, d_v)`` and ``(b, m, top_k)``.

Normalised form (:func:`check_inputs`): ``q``, ``k``, ``v`` as int8 and ``n_valid`` as int32
(filled in when absent), each with the rank it came with; so the normalised arrays are
themselves a valid vector file that checks to itself, and an unbatched file normalises exactly
as it did before batches existed. Consumers (the golden model, the testbench) take the
always-batched view :func:`as_batched` (an unbatched set becomes one entry) and give their
batched outputs back through :func:`squeeze_batch`, which drops the axis again for an
unbatched file.

Bit order (:func:`pm1_to_int`): a +-1 vector is the integer whose bit ``j`` is 1 where element
``j`` is +1 (element 0 is the least significant bit).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from hadware.errors import InputError

__all__ = ["INPUT_NAMES", "as_batched", "check_inputs", "input_names", "output_names",
           "pm1_to_int", "squeeze_batch"]

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


def _tuple(items: tuple) -> str:
    return "(" + ", ".join(map(str, items)) + ("," if len(items) == 1 else "") + ")"


def _form(lead: tuple, names: tuple, values: tuple) -> str:
    """A shape by names and by values, with the batch axis when ``lead`` is ``(b,)``:
    ``(b, n, d) = (2, n, 64)`` or ``(n, d) = (n, 64)``."""
    return f"{_tuple(('b',) * len(lead) + names)} = {_tuple(lead + values)}"


def _dims(ndim: int) -> str:
    return f"{ndim} dimension" + ("" if ndim == 1 else "s")


def check_inputs(cfg: Any, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check an attention vector set against the contract and return it normalised.

    Parameters
    ----------
    cfg : AttentionCoreConfig
        Provides ``d``, ``n_max``, ``d_v``, ``scorer`` (``"hamming"``: +-1 queries and keys)
        and ``block`` (named in the message about unknown arrays).
    arrays : mapping of str to array-like
        ``q``, ``k``, ``v`` and optionally ``n_valid`` (a dict or an ``np.load`` result),
        unbatched or all with a leading batch axis (module docstring).

    Returns
    -------
    dict
        ``q``, ``k``, ``v`` as int8 and ``n_valid`` as int32 (filled with ``n`` when absent),
        in that order, each with the rank it came with (``n_valid`` ``(m,)`` or ``(b, m)``).
        :func:`as_batched` gives the always-batched view.

    Raises
    ------
    InputError
        One line naming the array and the problem, with the shape expected and the shape
        found where a shape is wrong: an unknown or missing array, a non-numeric or ragged
        array, a wrong shape, a batch axis on some arrays only, differing batch sizes, no
        batch entries, queries or keys, more keys than ``n_max``, a value outside its set
        (with the first offending value and its position), or ``n_valid`` outside ``1..n``.
    """
    unknown = sorted(set(arrays) - set(INPUT_NAMES))
    if unknown:
        raise InputError(f"unknown array(s) {', '.join(map(repr, unknown))}; "
                         f"{cfg.block} takes q, k, v and optionally n_valid")
    for name in ("q", "k", "v"):
        if name not in arrays:
            raise InputError(f"missing array {name!r}")
    q, k, v = (_array(name, arrays[name]) for name in ("q", "k", "v"))
    n_valid = _array("n_valid", arrays["n_valid"]) if "n_valid" in arrays else None
    if q.ndim not in (2, 3):
        raise InputError(f"q must have shape (m, d) = (m, {cfg.d}) or (b, m, d) = "
                         f"(b, m, {cfg.d}), not {q.shape}")
    lead = q.shape[:1] if q.ndim == 3 else ()  # (b,) for a batched set
    # Every array carries the batch axis or none does, with one batch size.
    others = (("k", k, ("n", "d"), ("n", cfg.d)), ("v", v, ("n", "d_v"), ("n", cfg.d_v)))
    if n_valid is not None:
        others += (("n_valid", n_valid, ("m",), (q.shape[-2],)),)
    for name, a, names, values in others:
        if a.ndim != q.ndim + len(names) - 2:
            raise InputError(f"{name} has {_dims(a.ndim)} but q is "
                             f"{'batched' if lead else 'unbatched'} ({_dims(q.ndim)}): "
                             f"{name} must have shape {_form(lead, names, values)}, "
                             f"not {a.shape}")
    if lead and lead[0] < 1:
        raise InputError(f"q must have at least one batch entry: shape (b, m, d) with "
                         f"b >= 1, not {q.shape}")
    for name, a, names, values in others:
        if lead and a.shape[0] != lead[0]:
            raise InputError(f"{name} has batch size {a.shape[0]} but q has {lead[0]}: "
                             f"{name} must have shape {_form(lead, names, values)}, "
                             f"not {a.shape}")
    per_entry = " per batch entry" if lead else ""
    for name, a, rows, what in (("q", q, "m", "query"), ("k", k, "n", "key")):
        if a.shape[-1] != cfg.d:
            raise InputError(f"{name} must have shape {_form(lead, (rows, 'd'), (rows, cfg.d))}"
                             f", not {a.shape}")
        if a.shape[-2] < 1:
            raise InputError(f"{name} must have at least one row ({what}){per_entry}"
                             + (f", not shape {a.shape}" if lead else ""))
    m, n = q.shape[-2], k.shape[-2]
    if n > cfg.n_max:
        raise InputError(f"k has {n} rows (keys){per_entry}, more than n_max = {cfg.n_max}"
                         + (f" (shape {k.shape})" if lead else ""))
    if v.shape != (*lead, n, cfg.d_v):
        raise InputError(f"v must have shape {_form(lead, ('n', 'd_v'), (n, cfg.d_v))}, "
                         f"not {v.shape}")
    binary = cfg.scorer == "hamming"
    _check_element("q", q, binary)
    _check_element("k", k, binary)
    _check_element("v", v, False)
    if n_valid is not None:
        if n_valid.shape != (*lead, m):
            raise InputError(f"n_valid must have shape {_form(lead, ('m',), (m,))}, "
                             f"not {n_valid.shape}")
        _check_values("n_valid", n_valid, f"integers between 1 and n = {n}",
                      (n_valid >= 1) & (n_valid <= n))
    else:
        n_valid = np.full((*lead, m), n)
    return {"q": q.astype(np.int8), "k": k.astype(np.int8), "v": v.astype(np.int8),
            "n_valid": n_valid.astype(np.int32)}


def as_batched(checked: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], bool]:
    """The always-batched view of a set normalised by :func:`check_inputs`, and whether the set
    was batched. An unbatched set becomes one entry: ``q`` ``(1, m, d)``, ``k`` ``(1, n, d)``,
    ``v`` ``(1, n, d_v)``, ``n_valid`` ``(1, m)`` (views, no copies)."""
    batched = checked["q"].ndim == 3
    view = {name: np.asarray(checked[name]) for name in INPUT_NAMES}
    if not batched:
        view = {name: a[None] for name, a in view.items()}
    return view, batched


def squeeze_batch(outputs: Mapping[str, np.ndarray], batched: bool) -> dict[str, np.ndarray]:
    """Batched outputs (leading axis ``b``) as the file's form: unchanged for a batched file;
    for an unbatched one (``b = 1``, ``batched`` false) with the batch axis dropped."""
    if batched:
        return dict(outputs)
    for name, a in outputs.items():
        if a.shape[:1] != (1,):
            raise ValueError(f"{name} has shape {a.shape}; an unbatched set has one entry")
    return {name: a[0] for name, a in outputs.items()}
