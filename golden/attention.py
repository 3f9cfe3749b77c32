"""Golden model of the HAD attention core: bit-exact integer arithmetic, a float reference, and the
checks of the vector-file contract.

The RTL must reproduce :func:`attention` bit for bit. Every step, rounding and corner case is
written out here; ``F = exp_frac_bits``, ``O = out_frac_bits``, ``R = recip_bits`` and
``S = out_shift = R - O`` come from :class:`~hadware.config.attention.AttentionConfig`, as do
the register widths quoted below.

Vector-file contract
--------------------
Inputs (see :func:`check_inputs`):

* ``q``: ``(m, d)``, values -1 and +1, ``m >= 1`` queries;
* ``k``: ``(n, d)``, values -1 and +1, ``1 <= n <= n_max`` keys;
* ``v``: ``(n, d_v)``, integers in -128..127 (int8), row ``j`` belongs to key ``j``;
* ``n_valid`` (optional): ``(m,)``, integers with ``1 <= n_valid <= n``; query ``i`` sees keys
  ``0 .. n_valid[i] - 1`` only (default: all ``n``).

Outputs (see :func:`run_vectors`), all int32:

* ``out``: ``(m, d_v)``, the attention output in units of ``2**-O``;
* ``topk_index``: ``(m, top_k)``, selected key indices, padded with -1;
* ``topk_score``: ``(m, top_k)``, their scores, padded with 0.

Arithmetic, per query row (all integers, no step saturates or wraps)
--------------------------------------------------------------------
1. **Bits.** Element value +1 is bit 1, -1 is bit 0. Packed, element ``c`` of a vector is bit
   ``c`` of its ``d``-bit word (least significant bit first); see :func:`pack_bits`.
2. **Scores.** ``s_j = 2 * popcount(XNOR(q, k_j)) - d`` for ``j < n``: an integer in ``[-d, d]``
   with the parity of ``d`` (``score_width`` bits, signed). It equals the dot product of the +-1
   vectors.
3. **Top-k.** :func:`hadware.golden.topk.select_topk` over the first ``n_valid`` scores: the
   ``min(n_valid, top_k)`` highest, ties to the lower index, slots ordered by score descending
   then index ascending, padding ``(-1, 0)``. ``s_max`` is the score of slot 0.
4. **Numerators.** For each selected slot ``i``: ``a_i = (s_max - s_i) / 2``, an exact integer in
   ``[0, d]`` (both scores have the parity of ``d``), and ``e_i = LUT[a_i]`` with
   ``LUT[a] = floor(2**F * exp(-2 * temperature * a) + 0.5)`` (:attr:`AttentionConfig.lut`).
   ``e_i`` stands for ``exp(temperature * (s_i - s_max))`` in units of ``2**-F``; slot 0 and every
   slot tied with it get ``LUT[0] = 2**F`` exactly. Padding slots weigh ``e = 0``.
5. **Sums.** ``den = sum_i e_i`` (unsigned, ``2**F <= den <= top_k * 2**F``, ``den_width`` bits)
   and ``num_c = sum_i e_i * v[idx_i, c]`` for each value column ``c`` (signed,
   ``|num_c| <= 128 * den``, ``num_width`` bits). Both are exact: the RTL accumulates them in full
   width in any order.
6. **Reciprocal (the only division).** Once per query:
   ``recip = floor((2**R + floor(den / 2)) / den)``, that is ``2**R / den`` rounded half up, with
   ``R = O + F + ceil(log2(top_k)) + 10``. ``den >= 2**F > 0``, so it is always defined;
   ``recip`` lies in ``[recip_min, 2**(R - F)]`` (``recip_width`` bits, unsigned).
   ``2**R / den`` is never exactly half-way between integers (that would need
   ``den = 2**(R+1) > den_max``), so any exact round-to-nearest divider gives the same ``recip``.
7. **Output.** ``out_c = floor((num_c * recip + 2**(S - 1)) / 2**S)`` with ``S = R - O``:
   ``num_c * recip + 2**(S-1)`` followed by an arithmetic right shift by ``S``. This rounds
   ``num_c * recip / 2**S`` to the nearest integer, halves toward +infinity (``-2.5 -> -2``,
   ``2.5 -> 3``). The product and the sum fit ``product_width`` signed bits; ``out_c`` lies in
   ``[-128 * 2**O, 127 * 2**O]`` (``out_width = 8 + O`` bits).

Worked example (pinned by the tests): ``d = 8``, ``top_k = 2``, ``F = 4``, ``O = 0``,
``temperature = ln(2)/4``, so ``LUT = (16, 11, 8, 6, 4, 3, 2, 1, 1)``. Scores 8, 6, 4 keep keys
0 and 1: ``e = (16, 11)``, ``den = 27``; ``R = 15``, ``recip = round(32768 / 27 = 1213.63) =
1214``; with ``v = (10, -20, ...)``, ``num = -60`` and ``out = round(-60 * 1214 / 2**15 =
-2.22) = -2`` (the exact softmax gives -2.43).

Accuracy: ``|out - float_reference| <= error_bound_ulp`` (proof in
:attr:`AttentionConfig.error_bound_ulp`); this is at most 1 when
``2**(F - O) >= 291.43 * (top_k - 1)``. With fewer table bits the output is still bit-exact
against this model, but the table rounding can move it further from the exact softmax.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch

from hadware.config.attention import AttentionConfig
from hadware.errors import InputError
from hadware.golden.topk import PAD_INDEX, select_topk

__all__ = [
    "INPUT_NAMES",
    "OUTPUT_NAMES",
    "AttentionResult",
    "attention",
    "check_inputs",
    "exp_weights",
    "float_reference",
    "hamming_scores",
    "pack_bits",
    "popcount32",
    "reciprocal",
    "run_vectors",
    "scale_output",
]

#: Arrays of an input vector file; ``n_valid`` may be left out.
INPUT_NAMES = ("q", "k", "v", "n_valid")
#: Arrays of an output vector file.
OUTPUT_NAMES = ("out", "topk_index", "topk_score")

_WORD = 32  # bits per packed word in the model (a model detail, not an RTL width)
_WORD_MASK = (1 << _WORD) - 1
# Score tiles are computed this many (query, key, word) elements at a time to bound memory.
_TILE_ELEMENTS = 1 << 22


# -- input checking --------------------------------------------------------------------------


def _where(index: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(int(i)) for i in index) + "]"


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _numeric(name: str, x: Any) -> np.ndarray:
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


def _check_2d(name: str, a: np.ndarray, what: str) -> None:
    if a.ndim != 2:
        raise InputError(f"{name} must be a 2-D array {what}, not of shape {a.shape}")


def _check_pm1(name: str, a: np.ndarray) -> None:
    bad = (a != 1) & (a != -1)
    if bad.any():
        at = _first_bad(bad)
        raise InputError(f"{name} must hold only -1 and +1, found {a[at].item()!r} at {_where(at)}")


def _check_integers(name: str, a: np.ndarray, lo: int, hi: int, what: str) -> None:
    """Values integral and in ``[lo, hi]``, checked in the array's own dtype (before any cast)."""
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a) | (a != np.floor(a))
        if bad.any():
            at = _first_bad(bad)
            raise InputError(f"{name} must hold integers, found {a[at].item()!r} at {_where(at)}")
    bad = (a < lo) | (a > hi)
    if bad.any():
        at = _first_bad(bad)
        raise InputError(f"{name} must hold {what}, found {a[at].item()!r} at {_where(at)}")


def check_inputs(cfg: AttentionConfig, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check input arrays against the vector-file contract and return them normalised.

    Parameters
    ----------
    cfg : AttentionConfig
    arrays : mapping of str to array-like
        ``q``, ``k``, ``v`` and optionally ``n_valid`` (a dict or an ``np.load`` result). Any
        integer or real dtype is accepted when its values are exact: ``q`` and ``k`` hold only
        -1 and +1, ``v`` and ``n_valid`` integers (a real value such as 0.5 is an error, never
        rounded). Values are checked before any cast, so an int32 300 in ``v`` is reported, not
        wrapped.

    Returns
    -------
    dict
        ``q``, ``k``, ``v`` as int8 and ``n_valid`` as int32 (filled with ``n`` when absent),
        in that order.

    Raises
    ------
    InputError
        One line naming the array and the problem: an unknown or missing array, a wrong number of
        dimensions or shape, no queries or keys, more keys than ``n_max``, a value other than
        -1/+1 in ``q``/``k``, a non-integer or a value outside -128..127 in ``v``, or ``n_valid``
        outside ``1..n``.
    """
    unknown = sorted(set(arrays) - set(INPUT_NAMES))
    if unknown:
        raise InputError(f"unknown array(s) {', '.join(map(repr, unknown))}; "
                         f"attention takes q, k, v and optionally n_valid")
    for name in ("q", "k", "v"):
        if name not in arrays:
            raise InputError(f"missing array {name!r}")

    q = _numeric("q", arrays["q"])
    k = _numeric("k", arrays["k"])
    v = _numeric("v", arrays["v"])

    _check_2d("q", q, f"(m, d) = (m, {cfg.d})")
    if q.shape[1] != cfg.d:
        raise InputError(f"q must have d = {cfg.d} columns, not {q.shape[1]} (shape {q.shape})")
    m = q.shape[0]
    if m < 1:
        raise InputError("q must have at least one row (query)")

    _check_2d("k", k, f"(n, d) = (n, {cfg.d})")
    if k.shape[1] != cfg.d:
        raise InputError(f"k must have d = {cfg.d} columns, not {k.shape[1]} (shape {k.shape})")
    n = k.shape[0]
    if n < 1:
        raise InputError("k must have at least one row (key)")
    if n > cfg.n_max:
        raise InputError(f"k has {n} rows (keys), more than n_max = {cfg.n_max}")

    if v.ndim != 2 or v.shape != (n, cfg.d_v):
        raise InputError(f"v must have shape (n, d_v) = ({n}, {cfg.d_v}), not {v.shape}")

    _check_pm1("q", q)
    _check_pm1("k", k)
    _check_integers("v", v, -128, 127, "integers in -128..127 (int8)")

    if "n_valid" in arrays:
        n_valid = _numeric("n_valid", arrays["n_valid"])
        if n_valid.shape != (m,):
            raise InputError(f"n_valid must have shape (m,) = ({m},), not {n_valid.shape}")
        _check_integers("n_valid", n_valid, 1, n, f"integers between 1 and n = {n}")
    else:
        n_valid = np.full(m, n)

    return {
        "q": q.astype(np.int8),
        "k": k.astype(np.int8),
        "v": v.astype(np.int8),
        "n_valid": n_valid.astype(np.int32),
    }


# -- the integer model -----------------------------------------------------------------------


def pack_bits(x: torch.Tensor) -> torch.Tensor:
    """Pack +-1 vectors into bits, 32 per int64 word.

    ``x`` is ``(rows, d)`` with values -1/+1. Returns int64 ``(rows, ceil(d / 32))``: element
    ``c`` is bit ``c % 32`` of word ``c // 32``, 1 for +1 and 0 for -1; the unused high bits of the
    last word are 0. (The 32-bit words are a model detail; the bit numbering is the contract.)
    """
    rows, d = x.shape
    words = -(-d // _WORD)
    bits = torch.zeros((rows, words * _WORD), dtype=torch.int64)
    bits[:, :d] = (x == 1).to(torch.int64)
    weights = torch.ones(_WORD, dtype=torch.int64) << torch.arange(_WORD, dtype=torch.int64)
    return (bits.view(rows, words, _WORD) * weights).sum(-1)


def popcount32(x: torch.Tensor) -> torch.Tensor:
    """Number of set bits of each element of an int64 tensor with values in ``[0, 2**32)``."""
    x = x - ((x >> 1) & 0x55555555)
    x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F
    # The byte sums gather in bits 24..31; the product stays below 2**57, so int64 is enough.
    return ((x * 0x01010101) & _WORD_MASK) >> 24


def hamming_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Scores ``s[i, j] = 2 * popcount(XNOR(q_i, k_j)) - d`` from packed bits.

    ``q`` is ``(m, d)`` and ``k`` ``(n, d)``, values -1/+1. Returns int64 ``(m, n)``, values in
    ``[-d, d]`` with the parity of ``d``.
    """
    m, d = q.shape
    n = k.shape[0]
    qw, kw = pack_bits(q), pack_bits(k)
    words = qw.shape[1]
    # XNOR sets the unused high bits of the last word (0 XNOR 0); the mask clears them again.
    mask = torch.full((words,), _WORD_MASK, dtype=torch.int64)
    if d % _WORD:
        mask[-1] = (1 << (d % _WORD)) - 1
    out = torch.empty((m, n), dtype=torch.int64)
    rows = max(1, _TILE_ELEMENTS // max(1, n * words))
    for start in range(0, m, rows):
        xnor = ~(qw[start:start + rows, None, :] ^ kw[None, :, :]) & mask
        out[start:start + rows] = 2 * popcount32(xnor).sum(-1) - d
    return out


def exp_weights(
    cfg: AttentionConfig, topk_index: torch.Tensor, topk_score: torch.Tensor
) -> torch.Tensor:
    """Softmax numerators ``e_i = LUT[(s_max - s_i) / 2]`` of the selected slots (step 4).

    ``topk_index`` and ``topk_score`` are ``(m, top_k)`` as :func:`select_topk` returns them;
    ``s_max`` is slot 0's score. Padding slots (index -1) get 0. Returns int64 ``(m, top_k)``.

    Raises ``ValueError`` if a selected score difference is odd, negative or above ``2 * d``
    (impossible for scores from :func:`hamming_scores`).
    """
    lut = torch.tensor(cfg.lut, dtype=torch.int64)
    selected = topk_index != PAD_INDEX
    diff = torch.where(selected, topk_score[:, :1] - topk_score, torch.zeros_like(topk_score))
    if bool(((diff % 2 != 0) | (diff < 0) | (diff > 2 * cfg.d)).any()):
        raise ValueError("selected scores must share the parity of d and lie within 2*d of the "
                         "row maximum")
    return torch.where(selected, lut[diff // 2], torch.zeros_like(diff))


def reciprocal(cfg: AttentionConfig, den: torch.Tensor) -> torch.Tensor:
    """``recip = floor((2**R + floor(den / 2)) / den)``, exactly, for positive int64 ``den``.

    ``R`` reaches 66 for the largest configurations, beyond int64, so the division runs in two
    exact steps: with ``t = max(0, R - 62)``, ``2**R = 2**t * (q_hi * den + r_hi)`` and
    ``recip = q_hi * 2**t + floor((r_hi * 2**t + floor(den / 2)) / den)``.
    """
    if bool((den < 1).any()):
        raise ValueError("den must be positive")
    r = cfg.recip_bits
    t = max(0, r - 62)
    base = 1 << (r - t)
    q_hi = torch.div(base, den, rounding_mode="floor")
    r_hi = base - q_hi * den
    low = torch.div((r_hi << t) + den // 2, den, rounding_mode="floor")
    return (q_hi << t) + low


def _mul_round_shift(a: torch.Tensor, b: torch.Tensor, shift: int, *, wide: bool) -> torch.Tensor:
    """``floor((a * b + 2**(shift - 1)) / 2**shift)`` for int64 tensors, exactly.

    Without ``wide`` the product is formed in int64 (the caller guarantees it fits). With
    ``wide`` it is formed from 24-bit limbs; that is exact for ``|a| <= 2**47``,
    ``0 <= b < 2**48``, ``shift >= 1`` and a result below ``2**24`` in magnitude.
    """
    if not wide:
        return (a * b + (1 << (shift - 1))) >> shift
    limb, mask = 24, (1 << 24) - 1
    a0, a1 = a & mask, a >> limb  # a = a1 * 2**24 + a0, 0 <= a0 < 2**24
    b0, b1 = b & mask, b >> limb
    c = 1 << (shift - 1)
    t0 = a0 * b0 + (c & mask)
    t1 = a0 * b1 + a1 * b0 + ((c >> limb) & mask)
    t2 = a1 * b1 + (c >> 2 * limb)
    # Carry so that t0 and t1 become digits in [0, 2**24); t2 keeps the sign.
    t1 = t1 + (t0 >> limb)
    t0 = t0 & mask
    t2 = t2 + (t1 >> limb)
    t1 = t1 & mask
    # value = t2 * 2**48 + t1 * 2**24 + t0; dropping whole low digits before the shift is exact
    # because they are non-negative and below the dropped weight.
    if shift >= 2 * limb:
        return t2 >> (shift - 2 * limb)
    if shift >= limb:
        return ((t2 << limb) + t1) >> (shift - limb)
    return ((t2 << 2 * limb) + (t1 << limb) + t0) >> shift


def scale_output(cfg: AttentionConfig, num: torch.Tensor, recip: torch.Tensor) -> torch.Tensor:
    """``out = floor((num * recip + 2**(S - 1)) / 2**S)`` (step 7), exactly, broadcasting.

    ``num`` and ``recip`` are int64 within the config's bounds. Configurations whose
    ``product_width`` exceeds 64 bits are computed from limbs; the result is the same.
    """
    return _mul_round_shift(num, recip, cfg.out_shift, wide=cfg.product_width > 64)


class AttentionResult(NamedTuple):
    """Every value of :func:`attention`, int64 tensors, for comparing RTL internals too."""

    #: ``(m, d_v)`` output in units of ``2**-O``.
    out: torch.Tensor
    #: ``(m, top_k)`` selected key indices, -1 padding.
    topk_index: torch.Tensor
    #: ``(m, top_k)`` selected scores, 0 padding.
    topk_score: torch.Tensor
    #: ``(m, top_k)`` softmax numerators ``e_i``, 0 padding.
    weights: torch.Tensor
    #: ``(m,)`` denominators ``sum e_i``.
    den: torch.Tensor
    #: ``(m, d_v)`` numerators ``sum e_i * v[idx_i, c]``.
    num: torch.Tensor
    #: ``(m,)`` reciprocals.
    recip: torch.Tensor


def attention(
    cfg: AttentionConfig,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    n_valid: torch.Tensor | None = None,
) -> AttentionResult:
    """The bit-exact model, vectorized over queries (steps 1 to 7 of the module docstring).

    Inputs are integer tensors already checked by :func:`check_inputs`: ``q`` ``(m, d)``,
    ``k`` ``(n, d)``, ``v`` ``(n, d_v)`` and ``n_valid`` ``(m,)`` (``None``: all ``n`` keys).
    """
    v = v.to(torch.int64)
    scores = hamming_scores(q, k)
    index, score = select_topk(scores, n_valid, cfg.top_k)
    e = exp_weights(cfg, index, score)
    # Padding slots point at row 0 here but weigh 0, so they add nothing.
    v_sel = v[index.clamp(min=0)]  # (m, top_k, d_v)
    num = (e[:, :, None] * v_sel).sum(1)
    den = e.sum(1)
    recip = reciprocal(cfg, den)
    out = scale_output(cfg, num, recip[:, None])
    return AttentionResult(out, index, score, e, den, num, recip)


def _tensors(checked: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(checked[name].astype(np.int64)) for name in INPUT_NAMES)


def run_vectors(cfg: AttentionConfig, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check an input vector set and compute its expected outputs.

    Returns ``out``, ``topk_index`` and ``topk_score`` as int32 numpy arrays (see the module
    docstring). Raises :class:`~hadware.errors.InputError` as :func:`check_inputs` does.
    """
    q, k, v, n_valid = _tensors(check_inputs(cfg, arrays))
    res = attention(cfg, q, k, v, n_valid)
    return {
        "out": res.out.numpy().astype(np.int32),
        "topk_index": res.topk_index.numpy().astype(np.int32),
        "topk_score": res.topk_score.numpy().astype(np.int32),
    }


def float_reference(cfg: AttentionConfig, arrays: Mapping[str, Any]) -> np.ndarray:
    """The exact softmax average over the same selected keys, in float64.

    For each query, ``p_i = softmax(temperature * s_i)`` over the selected slots (the top-k of
    step 3; padding excluded) and the result is ``2**O * sum_i p_i * v[idx_i]``: float64
    ``(m, d_v)`` in the units of ``out``. Raises :class:`~hadware.errors.InputError` as
    :func:`check_inputs` does.
    """
    q, k, v, n_valid = _tensors(check_inputs(cfg, arrays))
    index, score = select_topk(hamming_scores(q, k), n_valid, cfg.top_k)
    selected = index != PAD_INDEX
    logits = cfg.temperature * (score - score[:, :1]).to(torch.float64)
    w = torch.where(selected, torch.exp(logits), torch.zeros_like(logits))
    p = w / w.sum(1, keepdim=True)
    v_sel = v[index.clamp(min=0)].to(torch.float64)
    ref = (p[:, :, None] * v_sel).sum(1) * 2.0 ** cfg.out_frac_bits
    return ref.numpy()
