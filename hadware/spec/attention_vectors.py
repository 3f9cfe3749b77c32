"""The vector-file contract of every attention variant: its arrays, their checks, the bit order.

Inputs (:func:`check_inputs`), for a config ``cfg`` of the attention family
(:class:`~hadware.config.attention_core.AttentionCoreConfig`):

* ``q``: ``(m, d)``, ``m >= 1`` queries;
* ``k``: ``(n, d)``, ``1 <= n <= n_max`` keys;
* ``v``: ``(n, d_v)``, integers in -128..127 (int8), row ``j`` belongs to key ``j``;
* ``n_valid`` (optional): ``(m,)``, integers with ``1 <= n_valid <= n``; query ``i`` sees keys
  ``0 .. n_valid[i] - 1`` only (default: all ``n``);
* ``temperature`` (optional, :data:`OPTIONAL_NAMES`): ``()``, one finite real number in the
  range of the config's own ``temperature`` field (``cfg.temperature_min`` to
  ``cfg.temperature_max``: greater than 0 and at most half the largest float64 for the table
  exponential, 1e-9 to 1 for the fixed one), the softmax temperature of the file's queries:
  their weights come from ``cfg.table_for(temperature)`` instead of the config's temperature
  (the table exponential: that table instead of ``cfg.lut``; the fixed one: that scale
  constant and shift ``(c, G)`` instead of ``(cfg.exp_scale, cfg.exp_scale_shift)``).
  Accepted only when the config has ``runtime_temperature`` set (the table as a RAM, or ``c``
  and ``G`` as registers); every width stays the config's;
* ``top_k`` (optional, :data:`OPTIONAL_NAMES`): ``(m,)``, integers with
  ``1 <= top_k <= cfg.top_k``; query ``i`` keeps only the first ``top_k[i]`` of the
  ``cfg.top_k`` slots its sparsifier selects (its ``top_k[i]`` best keys, ties to the lower
  index); the later slots are padding (default: all ``cfg.top_k``). Accepted only with the
  ``topk`` sparsifier.

``q`` and ``k`` hold only -1 and +1 for the ``hamming`` scorer, integers in -128..127 for the
``int8`` scorer (``cfg.scorer``). Any integer or real dtype is accepted when its values are
exact (a real value such as 0.5 is an error, never rounded); values are checked before any
cast, so an int32 300 is reported, not wrapped (``n_valid`` and ``top_k`` likewise);
``temperature`` takes any integer or real dtype.

Batched files: an optional leading batch axis of ``b >= 1`` entries, on every array or on
none (the rank of ``q`` decides: 2 unbatched, 3 batched): ``q`` ``(b, m, d)``, ``k``
``(b, n, d)``, ``v`` ``(b, n, d_v)``, ``n_valid`` ``(b, m)``, ``temperature`` ``(b,)`` (one
per entry), ``top_k`` ``(b, m)``. Each entry is an independent context: the queries ``q[i]``
see only the keys and values ``k[i]``, ``v[i]`` (the first ``n_valid[i, j]`` of them), with
the temperature ``temperature[i]`` and the limits ``top_k[i]``, as if entry ``i`` were an
unbatched file of its own; the hardware clears its context between entries. Every entry has
the same ``m`` and ``n`` (the arrays are rectangular): an entry with fewer keys pads ``k`` and
``v`` and limits its ``n_valid``; the padding rows must still be valid values and never
influence an output.

Outputs (:func:`output_names`), all int32:

* ``out``: ``(m, d_v)``, the attention output in units of ``2**-out_frac_bits``;
* with the ``topk`` sparsifier only: ``topk_index``, ``(m, top_k)``, the selected key indices
  padded with -1, and ``topk_score``, ``(m, top_k)``, their scores padded with 0 (``top_k``
  is ``cfg.top_k`` whatever the ``top_k`` input array says: the slots it drops are padding).

A batched file's outputs have the same leading axis: ``(b, m, d_v)`` and ``(b, m, top_k)``.

Normalised form (:func:`check_inputs`): ``q``, ``k``, ``v`` as int8 and ``n_valid`` as int32
(filled in when absent), then ``temperature`` as float64 and ``top_k`` as int32 only when the
file has them (never filled in), each with the rank it came with; so the normalised arrays are
themselves a valid vector file that checks to itself, and a file without the optional arrays
normalises exactly as it did before they (or batches) existed. Consumers (the golden model,
the testbench) take the always-batched view :func:`as_batched` (an unbatched set becomes one
entry) and give their batched outputs back through :func:`squeeze_batch`, which drops the axis
again for an unbatched file.

Bit order (:func:`pm1_to_int`): a +-1 vector is the integer whose bit ``j`` is 1 where element
``j`` is +1 (element 0 is the least significant bit).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from hadware.errors import InputError

__all__ = ["INPUT_NAMES", "OPTIONAL_NAMES", "as_batched", "check_inputs", "input_names",
           "output_names", "pm1_to_int", "squeeze_batch"]

#: Arrays of an input vector file for every config; ``n_valid`` may be left out (see also
#: :data:`OPTIONAL_NAMES`).
INPUT_NAMES = ("q", "k", "v", "n_valid")
#: Optional arrays beyond :data:`INPUT_NAMES`, each taken only by the configs that can use it
#: (``temperature``: ``runtime_temperature`` set; ``top_k``: the ``topk`` sparsifier) and kept
#: in the normalised form only when the file has it.
OPTIONAL_NAMES = ("temperature", "top_k")
#: Arrays of every output vector file.
_OUT = ("out",)
#: Arrays a top-k variant adds.
_TOPK = ("topk_index", "topk_score")

_INT8 = "integers in -128..127 (int8)"


def input_names() -> tuple[str, ...]:
    """``("q", "k", "v", "n_valid")``; ``n_valid`` may be left out of a file (the arrays
    only some configs take are :data:`OPTIONAL_NAMES`)."""
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


def _check_values(name: str, a: np.ndarray, allowed: str, ok: np.ndarray, *,
                  integers: bool = True) -> None:
    """``ok`` marks the acceptable elements (with ``integers``, non-integers never are);
    report the first other one with its position (none for a 0-d array)."""
    if integers and a.dtype.kind == "f":
        ok = ok & np.isfinite(a) & (a == np.floor(a))
    if not ok.all():
        at = tuple(int(i) for i in np.argwhere(~ok)[0])
        where = " at [" + ", ".join(map(str, at)) + "]" if at else ""
        raise InputError(f"{name} must hold {allowed}, found {a[at].item()!r}{where}")


def _check_element(name: str, a: np.ndarray, binary: bool) -> None:
    if binary:
        _check_values(name, a, "only -1 and +1", (a == 1) | (a == -1))
    else:
        _check_values(name, a, _INT8, (a >= -128) & (a <= 127))


def _tuple(items: tuple) -> str:
    return "(" + ", ".join(map(str, items)) + ("," if len(items) == 1 else "") + ")"


def _form(lead: tuple, names: tuple, values: tuple) -> str:
    """A shape by names and by values, with the batch axis when ``lead`` is ``(b,)``:
    ``(b, n, d) = (2, n, 64)`` or ``(n, d) = (n, 64)``; once when both are the same (``()``)."""
    by_names, by_values = _tuple(('b',) * len(lead) + names), _tuple(lead + values)
    return by_names if by_names == by_values else f"{by_names} = {by_values}"


def _optional_names(cfg: Any) -> list[str]:
    """The optional arrays ``cfg``'s design can take, as the message about unknown arrays
    lists them."""
    names = ["n_valid", "temperature" + ("" if cfg.runtime_temperature
                                         else " (with runtime_temperature)")]
    if cfg.sparsifier == "topk":
        names.append("top_k")
    return names


#: What a config without ``runtime_temperature`` builds for its temperature, by ``cfg.exp``.
_BUILT_FOR = {"table": "softmax table", "fixed": "exponential scale (c, G)"}


def _check_accepted(cfg: Any, arrays: Mapping[str, Any]) -> None:
    """``temperature`` and ``top_k`` only where the config can use them."""
    if "temperature" in arrays and not cfg.runtime_temperature:
        raise InputError(f"temperature: {cfg.block}'s {_BUILT_FOR[cfg.exp]} is built for "
                         f"temperature {cfg.temperature} (runtime_temperature is false); "
                         f"set runtime_temperature to pass one per batch entry")
    if "top_k" in arrays and cfg.sparsifier != "topk":
        raise InputError(f"top_k: {cfg.block} is dense (no top-k sparsifier): it weighs every "
                         f"valid key; limit the keys of a query with n_valid")


def _check_temperature(cfg: Any, t: np.ndarray) -> None:
    """The config's own rule for its ``temperature`` field, on every element."""
    lo, hi, why = cfg.temperature_min, cfg.temperature_max, cfg.temperature_why
    # Compared in float64 (exact for any narrower real): hi overflows a float32.
    x = t.astype(np.float64) if t.dtype.kind == "f" and t.dtype.itemsize < 8 else t
    ok = np.isfinite(x) & ((x > 0) if lo is None else (x >= lo))
    allowed = "finite numbers " + ("greater than 0" if lo is None else f"at least {lo}")
    if hi is not None:
        ok &= x <= hi
        allowed += f" and at most {hi}" + (f" ({why})" if why else "")
    _check_values("temperature", t, allowed, ok, integers=False)


def _dims(ndim: int) -> str:
    return f"{ndim} dimension" + ("" if ndim == 1 else "s")


def check_inputs(cfg: Any, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check an attention vector set against the contract and return it normalised.

    Parameters
    ----------
    cfg : AttentionCoreConfig
        Provides ``d``, ``n_max``, ``d_v``, ``scorer`` (``"hamming"``: +-1 queries and keys),
        ``block`` (named in the messages), ``sparsifier`` and ``top_k`` (the ``top_k``
        array), ``exp``, ``runtime_temperature``, ``temperature`` and its range
        ``temperature_min``, ``temperature_max``, ``temperature_why`` (the ``temperature``
        array).
    arrays : mapping of str to array-like
        ``q``, ``k``, ``v`` and optionally ``n_valid``, ``temperature`` (a config with
        ``runtime_temperature``) and ``top_k`` (the ``topk`` sparsifier): a dict or an
        ``np.load`` result, unbatched or all with a leading batch axis (module docstring).

    Returns
    -------
    dict
        ``q``, ``k``, ``v`` as int8 and ``n_valid`` as int32 (filled with ``n`` when absent),
        then ``temperature`` as float64 and ``top_k`` as int32 only when given, in that order,
        each with the rank it came with (``n_valid`` and ``top_k`` ``(m,)`` or ``(b, m)``,
        ``temperature`` ``()`` or ``(b,)``). :func:`as_batched` gives the always-batched view.

    Raises
    ------
    InputError
        One line naming the array and the problem, with the shape expected and the shape
        found where a shape is wrong: an unknown or missing array, a non-numeric or ragged
        array, a wrong shape, a batch axis on some arrays only, differing batch sizes, no
        batch entries, queries or keys, more keys than ``n_max``, a value outside its set
        (with the first offending value and its position), ``n_valid`` outside ``1..n``,
        ``top_k`` outside ``1..cfg.top_k``, a temperature the config's field would refuse,
        or an optional array the config cannot use (``temperature`` without
        ``runtime_temperature``, ``top_k`` without the ``topk`` sparsifier).
    """
    unknown = sorted(set(arrays) - set(INPUT_NAMES) - set(OPTIONAL_NAMES))
    if unknown:
        optional = _optional_names(cfg)
        listed = optional[0] if len(optional) == 1 else \
            f"{', '.join(optional[:-1])} and {optional[-1]}"
        raise InputError(f"unknown array(s) {', '.join(map(repr, unknown))}; "
                         f"{cfg.block} takes q, k, v and optionally {listed}")
    _check_accepted(cfg, arrays)
    for name in ("q", "k", "v"):
        if name not in arrays:
            raise InputError(f"missing array {name!r}")
    q, k, v = (_array(name, arrays[name]) for name in ("q", "k", "v"))
    n_valid, temperature, top_k = (_array(name, arrays[name]) if name in arrays else None
                                   for name in ("n_valid", *OPTIONAL_NAMES))
    if q.ndim not in (2, 3):
        raise InputError(f"q must have shape (m, d) = (m, {cfg.d}) or (b, m, d) = "
                         f"(b, m, {cfg.d}), not {q.shape}")
    lead = q.shape[:1] if q.ndim == 3 else ()  # (b,) for a batched set
    # Every array carries the batch axis or none does, with one batch size.
    others = (("k", k, ("n", "d"), ("n", cfg.d)), ("v", v, ("n", "d_v"), ("n", cfg.d_v)))
    for name, a, names in (("n_valid", n_valid, ("m",)), ("temperature", temperature, ()),
                           ("top_k", top_k, ("m",))):
        if a is not None:
            others += ((name, a, names, (q.shape[-2],) * len(names)),)
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
    checked = {"q": q.astype(np.int8), "k": k.astype(np.int8), "v": v.astype(np.int8),
               "n_valid": n_valid.astype(np.int32)}
    if temperature is not None:  # its shape, () or (b,), is checked with the batch axis
        _check_temperature(cfg, temperature)
        checked["temperature"] = temperature.astype(np.float64)
    if top_k is not None:
        if top_k.shape != (*lead, m):
            raise InputError(f"top_k must have shape {_form(lead, ('m',), (m,))}, "
                             f"not {top_k.shape}")
        _check_values("top_k", top_k, f"integers between 1 and top_k = {cfg.top_k}",
                      (top_k >= 1) & (top_k <= cfg.top_k))
        checked["top_k"] = top_k.astype(np.int32)
    return checked


def as_batched(checked: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], bool]:
    """The always-batched view of a set normalised by :func:`check_inputs`, and whether the set
    was batched. An unbatched set becomes one entry: ``q`` ``(1, m, d)``, ``k`` ``(1, n, d)``,
    ``v`` ``(1, n, d_v)``, ``n_valid`` ``(1, m)``, and when present ``temperature`` ``(1,)``
    and ``top_k`` ``(1, m)`` (views, no copies). The optional arrays are in the view only
    when in ``checked``."""
    batched = checked["q"].ndim == 3
    names = (*INPUT_NAMES, *(name for name in OPTIONAL_NAMES if name in checked))
    view = {name: np.asarray(checked[name]) for name in names}
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
