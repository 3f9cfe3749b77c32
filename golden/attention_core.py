"""Golden model of the attention family: the specification of its bit-exact arithmetic.

Every attention variant is one core with three parts chosen by its config
(:mod:`hadware.config.attention_core`): a **scorer** (``cfg.scorer``: ``"hamming"`` or
``"int8"``), an **exponential** (``cfg.exp``: ``"table"`` or ``"fixed"``) and a **sparsifier**
(``cfg.sparsifier``: ``"topk"`` or ``None``). The registered variants are

==========================  =========  =======  ==========
block                       scorer     exp      sparsifier
==========================  =========  =======  ==========
``attention`` (HAD)         hamming    table    topk
``binary_dense_attention``  hamming    table    None
``int8_topk_attention``     int8       fixed    topk
``std_attention``           int8       fixed    None
==========================  =========  =======  ==========

The RTL must reproduce :func:`attention_core` bit for bit. The names below come from the config:
``F = exp_frac_bits``, ``O = out_frac_bits``, ``R = recip_bits``, ``S = out_shift = R - O``,
``N = n_weights`` (``top_k`` with the top-k sparsifier, ``n_max`` without), and for the fixed
exponential ``P = exp_table_bits``, ``Q = exp_interp_bits``, ``H = P + Q``,
``G = exp_scale_shift``, ``c = exp_scale`` (with a run-time temperature, the entry's ``G`` and
``c``: step 3); so do the register widths quoted.

Vector-file contract
--------------------
Specified in :mod:`hadware.spec.attention_vectors` and checked by :func:`check_inputs`: ``q``
``(m, d)``, ``k`` ``(n, d)`` with ``1 <= n <= n_max``, ``v`` ``(n, d_v)`` int8, optional
``n_valid`` ``(m,)`` in ``1..n``; ``q`` and ``k`` are +-1 for the hamming scorer and int8 for
the int8 scorer. Two more optional arrays set run-time parameters (steps 2 and 3 below):
``temperature`` ``()``, a softmax temperature for a config with ``runtime_temperature``
(either exponential), and ``top_k`` ``(m,)`` in ``1..top_k``, a per-query ``k`` for a top-k
config. Outputs (:func:`run_vectors`), int32: ``out`` ``(m, d_v)`` in units of
``2**-O``; the top-k variants add ``topk_index`` and ``topk_score``, ``(m, top_k)``, the
selected key indices (padding -1) and their scores (padding 0).

A batched file (a leading axis of ``b`` entries on every input: ``q`` ``(b, m, d)``, ``k``
``(b, n, d)``, ``v`` ``(b, n, d_v)``, ``n_valid`` ``(b, m)``, ``temperature`` ``(b,)``,
``top_k`` ``(b, m)``) gives every output the same leading axis; entry ``i`` is computed from
its own keys, values and temperature only, exactly as the unbatched file ``q[i]``, ``k[i]``,
``v[i]``, ``n_valid[i]``, ``temperature[i]``, ``top_k[i]`` would be. The arithmetic below is
per query row of one entry.

Arithmetic, per query row (all integers; no step saturates or wraps unless it says so)
--------------------------------------------------------------------------------------

1. Scorer
~~~~~~~~~
``hamming`` (:func:`hamming_scores`). Element value +1 is bit 1, -1 is bit 0; packed, element
``c`` of a vector is bit ``c`` of its ``d``-bit word, least significant bit first
(:func:`pack_bits`; :func:`hadware.spec.attention_vectors.pm1_to_int`).
``s_j = 2 * popcount(XNOR(q, k_j)) - d`` for ``j < n``: an integer in ``[-d, d]`` with the parity
of ``d`` (``score_width`` bits, signed). It equals the dot product of the +-1 vectors.

``int8`` (:func:`int8_scores`). ``s_j = sum_c q[c] * k_j[c]``, the exact dot product: an integer
in ``[-16256 * d, 16384 * d]`` (``score_width`` bits, signed).

2. Sparsifier
~~~~~~~~~~~~~
:func:`select` gives each query a list of weighed entries (slots) and ``s_max``, the largest
score among them.

``topk``: :func:`hadware.golden.topk.select_topk` over the first ``n_valid`` scores: the
``min(n_valid, top_k)`` highest, ties to the lower index, slots ordered by score descending
then index ascending, padding ``(-1, 0)``. ``s_max`` is the score of slot 0.

Per-query ``k`` (the ``top_k`` input array): query ``i`` keeps slots ``0 .. top_k[i] - 1`` of
that list, its ``top_k[i]`` best keys, and the later slots become padding ``(-1, 0)`` (weight
0, and so in the ``topk_index`` and ``topk_score`` outputs). ``N``, ``R`` and every width stay
the config's (``top_k``), so the result is generally *not* that of a config with
``top_k = top_k[i]``, whose ``R`` differs.

``None`` (dense): every key ``j < n_valid`` is weighed, however small its weight (it may be 0);
slot ``j`` is key ``j``, and slots ``j >= n_valid`` are padding ``(-1, 0)``.
``s_max = max(s_j for j < n_valid)``.

For a weighed slot ``i``, ``delta_i = s_max - s_i >= 0``; a padding slot weighs ``e = 0``.

3. Exponential
~~~~~~~~~~~~~~
``e_i = E(delta_i)`` stands for ``exp(-temperature * delta_i)`` in units of ``2**-F``; every
entry tied with the maximum weighs exactly ``2**F``, every weight lies in ``[0, 2**F]``.

``table`` (:func:`table_weights`). ``a_i = delta_i / 2``, an exact integer in ``[0, d]`` (both
scores have the parity of ``d``), and ``e_i = LUT[a_i]`` with the HAD table
``LUT[a] = floor(2**F * exp(-2 * temperature * a) + 0.5)`` for ``a = 0..d``
(:func:`hadware.spec.softmax.had_table`, the config's ``lut``), evaluated in float64, round half
up. ``LUT[0] = 2**F``; the entries never increase and may reach 0.

``fixed`` (:func:`fixed_exp_weights`), for ``delta`` in ``[0, delta_max]``
(``delta_max = 32640 * d``, ``delta_width`` bits):
``exp(-temperature * delta) = 2**(-u)`` with ``u = delta * temperature / ln 2``. The temperature
enters through ``c`` and ``G`` only (steps a and b); the node table and the widths of the
weights and every later stage are the config's.

a. **Scale.** ``x = delta * c``, with ``c = floor(temperature / ln 2 * 2**G + 0.5)``
   (:func:`hadware.spec.softmax.exp2_scale`), is ``u`` with ``G`` fractional bits; ``G`` is
   chosen (:func:`hadware.spec.softmax.exp2_scale_shift`) so that ``c`` has at least 24
   significant bits and ``G >= H + 1``.
b. **Rounding to H bits.** ``t = floor((x + 2**(G - H - 1)) / 2**(G - H))``: ``u`` rounded to
   the nearest multiple of ``2**-H``, halves up. Split ``t`` into ``i = floor(t / 2**H)`` (the
   integer part), ``j = floor(t / 2**Q) mod 2**P`` (the table node) and ``r = t mod 2**Q`` (the
   position between node ``j`` and node ``j + 1``).
c. **Table.** ``T[j] = floor(2**F * 2**(-j / 2**P) + 0.5)`` for ``j = 0..2**P``
   (:func:`hadware.spec.softmax.exp2_nodes`, the config's ``exp_table``; ``T[0] = 2**F``,
   ``T[2**P] = 2**(F-1)``).
d. **Interpolation.** ``Y = T[j] * 2**Q - (T[j] - T[j + 1]) * r``, exact: ``2**(F + Q)`` times
   the straight line between the two nodes, in ``[T[j + 1] * 2**Q, T[j] * 2**Q]``.
e. **Shift and round.** ``k = Q + min(i, F + 2)`` and
   ``E = floor((Y + floor(2**(k - 1))) / 2**k)`` (``Y / 2**k`` rounded to nearest, halves up;
   ``floor(2**-1) = 0`` when ``k = 0``). The saturation of ``i`` changes nothing:
   ``Y <= 2**(F + Q)`` gives ``E = 0`` for every ``i >= F + 2``. Int8 differences, unlike
   binary ones, are not bounded by ``d``; this saturation keeps the shifter small.
   ``E(0) = 2**F`` exactly, and ``E`` never increases with ``delta``.

Hardware form of ``fixed``: a two-stage unit (``x``, ``t`` and the table read; then ``Y``, the
shift and the rounding).

Run-time temperature (the ``temperature`` input array, ``runtime_temperature`` configs only):
the queries of entry ``i`` use ``cfg.table_for(temperature[i])`` instead of the config's
temperature, in the config's range (``temperature_min`` to ``temperature_max``; 1e-9 to 1 for
``fixed``): for ``table`` the table of that temperature (the same formula), for ``fixed`` its
scale constant and shift ``(c, G)`` (the same :func:`~hadware.spec.softmax.exp2_scale_shift`
and :func:`~hadware.spec.softmax.exp2_scale`; ``G > H`` for every temperature), in steps a and b
for every difference of the entry. That is exactly the arithmetic of a config built with that
``temperature``; ``R`` and the widths of the weights, sums, reciprocal and output are
unchanged (they do not depend on the temperature), so the result is that config's, bit for bit
(:func:`run_tables` gives the per-entry parameters).

4. Sums
~~~~~~~
``den = sum_i e_i`` (unsigned, ``2**F <= den <= N * 2**F``, ``den_width`` bits) and
``num_c = sum_i e_i * v[idx_i, c]`` for each value column ``c`` (signed,
``|num_c| <= 128 * den``, ``num_width`` bits). Both are exact: the RTL accumulates them in full
width in any order.

5. Reciprocal (the only division)
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
Once per query (:func:`reciprocal`): ``recip = floor((2**R + floor(den / 2)) / den)``, that is
``2**R / den`` rounded half up, with ``R = O + F + ceil(log2(N)) + 10``. ``den >= 2**F > 0``, so
it is always defined; ``recip`` lies in ``[recip_min, 2**(R - F)]`` (``recip_width`` bits,
unsigned). ``2**R / den`` is never exactly half-way between integers (that would need
``den = 2**(R+1) > den_max``), so any exact round-to-nearest divider gives the same ``recip``.

6. Output
~~~~~~~~~
``out_c = floor((num_c * recip + 2**(S - 1)) / 2**S)`` with ``S = R - O`` (:func:`scale_output`):
``num_c * recip + 2**(S-1)`` followed by an arithmetic right shift by ``S``. This rounds
``num_c * recip / 2**S`` to the nearest integer, halves toward +infinity (``-2.5 -> -2``,
``2.5 -> 3``). The product and the sum fit ``product_width`` signed bits; ``out_c`` lies in
``[-128 * 2**O, 127 * 2**O]`` (``out_width = 8 + O`` bits).

Worked examples (pinned by the tests)
-------------------------------------
``d = 8``, ``F = 4``, ``O = 0``, ``temperature = ln(2)/4``, so
``LUT = (16, 11, 8, 6, 4, 3, 2, 1, 1)``; scores 8, 6, 4 (query all +1, keys with 0, 1 and 2
elements -1).

* HAD (``top_k = 2``): keys 0 and 1 are kept, ``e = (16, 11)``, ``den = 27``; ``R = 15``,
  ``recip = round(32768 / 27 = 1213.63) = 1214``; with ``v = (10, -20, 127)``, ``num = -60``
  and ``out = round(-60 * 1214 / 2**15 = -2.22) = -2`` (the exact softmax gives -2.43).
* Binary dense (``n_max = 3``): every key is weighed, ``e = (16, 11, 8)``, ``den = 35``;
  ``R = 16``, ``recip = round(65536 / 35 = 1872.46) = 1872``; with ``v = (10, -20, -5)``,
  ``num = -100`` and ``out = round(-100 * 1872 / 2**16 = -2.86) = -3``.

Accuracy
--------
``|out - float_reference| <= error_bound_ulp`` (proof in
:attr:`~hadware.config.attention_core.AttentionCoreConfig.error_bound_ulp`), the reference
being the exact softmax of ``temperature * s`` over the same weighed keys (with the entry's
run-time temperature and the query's ``k`` when given). For the table it is
at most 1 when ``2**(F - O) >= 291.43 * (N - 1)``; with fewer table bits the output is still
bit-exact against this model, but the table rounding can move it further from the exact
softmax. For the fixed exponential
``|E(delta) - 2**F * 2**(-u)| <= eps * 2**F * 2**(-u) + 1`` with ``eps = exp_relative_error``
(``2.0e-5`` at ``P = 6``, ``Q = 10``). ``eps`` depends on the temperature through the rounding
of ``c`` (``exp_scale_error``); a ``runtime_temperature`` config takes that rounding's bound
for every temperature, ``2**-24``, so its ``error_bound_ulp`` holds for every entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch

from hadware.golden.topk import PAD_INDEX, PAD_SCORE, select_topk
from hadware.spec import attention_vectors
from hadware.spec.attention_vectors import (
    INPUT_NAMES,
    as_batched,
    input_names,
    output_names,
    squeeze_batch,
)

__all__ = [
    "INPUT_NAMES",
    "AttentionResult",
    "attention_core",
    "check_inputs",
    "fixed_exp_weights",
    "float_reference",
    "hamming_scores",
    "input_names",
    "int8_scores",
    "output_names",
    "pack_bits",
    "popcount32",
    "reciprocal",
    "run_tables",
    "run_vectors",
    "scale_output",
    "scores",
    "select",
    "table_weights",
    "weights",
]

_WORD = 32  # bits per packed word in the model (a model detail, not an RTL width)
_WORD_MASK = (1 << _WORD) - 1
# Score tiles are computed this many (query, key, word) elements at a time to bound memory.
_TILE_ELEMENTS = 1 << 22


def check_inputs(cfg: Any, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The vector-file checks: :func:`hadware.spec.attention_vectors.check_inputs`."""
    return attention_vectors.check_inputs(cfg, arrays)


# -- 1. scorers ------------------------------------------------------------------------------


def pack_bits(x: torch.Tensor) -> torch.Tensor:
    """Pack +-1 vectors into bits, 32 per int64 word.

    ``x`` is ``(rows, d)`` with values -1/+1. Returns int64 ``(rows, ceil(d / 32))``: element
    ``c`` is bit ``c % 32`` of word ``c // 32``, 1 for +1 and 0 for -1; the unused high bits of
    the last word are 0. (The 32-bit words are a model detail; the bit numbering is the
    contract.)
    """
    rows, d = x.shape
    words = -(-d // _WORD)
    bits = torch.zeros((rows, words * _WORD), dtype=torch.int64)
    bits[:, :d] = (x == 1).to(torch.int64)
    place = torch.ones(_WORD, dtype=torch.int64) << torch.arange(_WORD, dtype=torch.int64)
    return (bits.view(rows, words, _WORD) * place).sum(-1)


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


def int8_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``s[i, j] = q_i . k_j`` exactly (int64 ``(m, n)``) for int8-valued ``q`` ``(m, d)`` and
    ``k`` ``(n, d)``."""
    return q.to(torch.int64) @ k.to(torch.int64).T


_SCORERS = {"hamming": hamming_scores, "int8": int8_scores}


def scores(cfg: Any, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Step 1: the scores of the variant's scorer (``cfg.scorer``), int64 ``(m, n)``; with a
    leading batch axis (``q`` ``(b, m, d)``, ``k`` ``(b, n, d)``), ``(b, m, n)``, entry ``i``
    scored against its own keys ``k[i]`` only."""
    scorer = _SCORERS[cfg.scorer]
    if q.dim() == 2:
        return scorer(q, k)
    out = torch.empty((q.shape[0], q.shape[1], k.shape[1]), dtype=torch.int64)
    for i in range(q.shape[0]):
        out[i] = scorer(q[i], k[i])
    return out


# -- 2. sparsifiers --------------------------------------------------------------------------


def select(cfg: Any, scores: torch.Tensor, n_valid: torch.Tensor | None,
           top_k: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 2: the weighed slots of each query, ``(index, score)``, int64.

    With the top-k sparsifier both are ``(m, top_k)`` as :func:`select_topk` returns them, and
    with ``top_k`` (an integer tensor ``(m,)`` in ``1..cfg.top_k``) query ``i`` keeps its first
    ``top_k[i]`` slots only, the others padding (index -1, score 0). Dense
    (``cfg.sparsifier is None``): both are ``(m, n)``, slot ``j`` is key ``j`` for
    ``j < n_valid`` and padding (index -1, score 0) beyond. ``n_valid`` ``(m,)`` in ``1..n``;
    ``None`` means all ``n`` keys. Raises ``ValueError`` for ``top_k`` with a dense config.
    """
    if cfg.sparsifier == "topk":
        index, score = select_topk(scores, n_valid, cfg.top_k)
        if top_k is None:
            return index, score
        keep = torch.arange(cfg.top_k) < top_k.to(torch.int64)[:, None]
        return (torch.where(keep, index, torch.full_like(index, PAD_INDEX)),
                torch.where(keep, score, torch.full_like(score, PAD_SCORE)))
    if top_k is not None:
        raise ValueError(f"top_k: {cfg.block} has no top-k sparsifier")
    m, n = scores.shape
    keys = torch.arange(n, dtype=torch.int64).expand(m, n)
    if n_valid is None:
        return keys.clone(), scores.clone()
    valid = keys < n_valid[:, None]
    return (torch.where(valid, keys, torch.full_like(keys, PAD_INDEX)),
            torch.where(valid, scores, torch.full_like(scores, PAD_SCORE)))


def _differences(index: torch.Tensor, score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(selected, delta)``: the mask of weighed slots and ``s_max - s_i`` there (0 in
    padding)."""
    selected = index != PAD_INDEX
    low = torch.iinfo(torch.int64).min
    s_max = torch.where(selected, score, torch.full_like(score, low)).max(1, keepdim=True).values
    return selected, torch.where(selected, s_max - score, torch.zeros_like(score))


# -- 3. exponentials -------------------------------------------------------------------------


def table_weights(cfg: Any, delta: torch.Tensor,
                  table: torch.Tensor | None = None) -> torch.Tensor:
    """``LUT[delta / 2]`` (the ``table`` exponential), elementwise on int64 ``delta``.

    ``table`` (default: the config's ``lut``) is an int64 tensor ``(d + 1,)``, or
    ``(b, d + 1)`` with one table per row of ``delta`` (``(b, ...)``: ``delta[i]`` reads
    ``table[i]``), as :func:`run_tables` gives for a run-time temperature per batch entry.
    Raises ``ValueError`` for an odd, negative or too large difference (impossible for
    XNOR-popcount scores) or a table of the wrong shape."""
    if bool(((delta % 2 != 0) | (delta < 0) | (delta > 2 * cfg.d)).any()):
        raise ValueError("score differences must be even and lie in [0, 2*d]")
    if table is None:
        table = torch.tensor(cfg.lut, dtype=torch.int64)
    if table.dim() == 1 and table.shape == (cfg.d + 1,):
        return table[delta // 2]
    if table.dim() != 2 or table.shape != (delta.shape[0], cfg.d + 1):
        raise ValueError(f"table must have shape (d + 1,) = ({cfg.d + 1},) or (b, d + 1) = "
                         f"({delta.shape[0]}, {cfg.d + 1}), not {tuple(table.shape)}")
    rows = (delta // 2).reshape(delta.shape[0], -1)
    return table.gather(1, rows).reshape(delta.shape)


def _table_size(cfg: Any) -> int:
    """Integers in one ``cfg.table_for``: ``d + 1`` table entries, or ``(c, G)``."""
    return cfg.d + 1 if cfg.exp == "table" else 2


def run_tables(cfg: Any, temperature: Any) -> torch.Tensor:
    """The exponential's parameters of run-time temperatures: row ``i`` is
    ``cfg.table_for(temperature[i])`` (computed once per distinct temperature), int64.

    * ``table`` exponential: ``(*temperature.shape, d + 1)``, the tables (what
      :func:`table_weights` reads instead of ``cfg.lut``);
    * ``fixed`` exponential: ``(*temperature.shape, 2)``, the scale constant and its shift
      ``(c, G)`` (what :func:`fixed_exp_weights` uses instead of ``cfg.exp_scale`` and
      ``cfg.exp_scale_shift``).

    Either is what :func:`weights` takes as ``table``. Raises ``ValueError`` for a config
    without ``runtime_temperature`` or a temperature out of the config's range."""
    if not cfg.runtime_temperature:
        raise ValueError(f"temperature: {cfg.block} has no run-time temperature "
                         f"(runtime_temperature is not set)")
    t = np.asarray(temperature, dtype=np.float64)
    size = _table_size(cfg)
    unique, inverse = np.unique(t.reshape(-1), return_inverse=True)
    tables = torch.tensor([cfg.table_for(float(x)) for x in unique],
                          dtype=torch.int64).reshape(len(unique), size)
    return tables[torch.from_numpy(inverse.reshape(-1))].reshape(*t.shape, size)


def fixed_exp_weights(cfg: Any, delta: torch.Tensor,
                      table: torch.Tensor | None = None) -> torch.Tensor:
    """The fixed-point exponential ``E(delta)`` (the ``fixed`` exponential, steps a to e),
    elementwise on int64 ``delta`` in ``[0, delta_max]``.

    ``table`` (default: the config's ``(exp_scale, exp_scale_shift)``) is the scale constant
    and its shift ``(c, G)``, an int64 tensor ``(2,)``, or ``(b, 2)`` with one pair per row of
    ``delta`` (``(b, ...)``: ``delta[i]`` uses ``table[i]``, the shift ``G - H`` then differs
    per row), as :func:`run_tables` gives for a run-time temperature per batch entry. Raises
    ``ValueError`` for a difference outside that range, a ``table`` of the wrong shape or a
    ``G`` not above ``H``."""
    if bool(((delta < 0) | (delta > cfg.delta_max)).any()):
        raise ValueError(f"score differences must lie in [0, {cfg.delta_max}]")
    p, q, h = cfg.exp_table_bits, cfg.exp_interp_bits, cfg.exp_index_bits
    if table is None:
        c, g, one = cfg.exp_scale, cfg.exp_scale_shift, 1
    else:
        rows = delta.shape[0] if delta.dim() else "b"
        if table.shape == (2,):
            scale = table
        elif table.shape == (rows, 2):
            # One (c, G) per row of delta, broadcast over its other axes.
            scale = table.reshape(rows, *(1,) * (delta.dim() - 1), 2)
        else:
            raise ValueError(f"table must have shape (2,) (c, G) or (b, 2) = ({rows}, 2), "
                             f"not {tuple(table.shape)}")
        c, g = scale[..., 0], scale[..., 1]
        if bool((g <= h).any()):
            raise ValueError(f"table: the shift G must exceed H = {h}")
        one = torch.ones_like(g)
    # Exact in int64 for every configuration and temperature: x < 2**(delta_width +
    # exp_scale_width) <= 2**53 (d = 1024, P + Q = 26, temperature 1) and the rounding term
    # 2**(G - H - 1) <= 2**51 (G <= 53 at temperature 1e-9); tests/test_attention_runtime_golden
    # checks the claim.
    x = delta * c
    t = (x + (one << (g - h - 1))) >> (g - h)
    i = t >> h
    j = (t >> q) & ((1 << p) - 1)
    r = t & ((1 << q) - 1)
    nodes = torch.tensor(cfg.exp_table, dtype=torch.int64)
    tj, tj1 = nodes[j], nodes[j + 1]
    y = (tj << q) - (tj - tj1) * r
    k = q + torch.clamp(i, max=cfg.exp_shift_max)
    half = torch.where(k > 0, torch.ones_like(k) << (k - 1).clamp(min=0), torch.zeros_like(k))
    return (y + half) >> k


_EXPS = {"table": table_weights, "fixed": fixed_exp_weights}


def weights(cfg: Any, delta: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
    """Step 3: ``E(delta)`` of the variant's exponential (``cfg.exp``), elementwise on int64
    differences ``s_max - s >= 0``. ``table``, the exponential's run-time parameters as
    :func:`run_tables` gives them (``None``: the config's): tables for :func:`table_weights`,
    ``(c, G)`` pairs for :func:`fixed_exp_weights`. Raises ``ValueError`` for a difference out
    of its range or a ``table`` of the wrong shape."""
    return _EXPS[cfg.exp](cfg, delta, table)


# -- 5. reciprocal, 6. output ----------------------------------------------------------------


def reciprocal(cfg: Any, den: torch.Tensor) -> torch.Tensor:
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


def scale_output(cfg: Any, num: torch.Tensor, recip: torch.Tensor) -> torch.Tensor:
    """``out = floor((num * recip + 2**(S - 1)) / 2**S)`` (step 6), exactly, broadcasting.

    ``num`` and ``recip`` are int64 within the config's bounds. Configurations whose
    ``product_width`` exceeds 64 bits are computed from limbs; the result is the same.
    """
    return _mul_round_shift(num, recip, cfg.out_shift, wide=cfg.product_width > 64)


# -- the whole core --------------------------------------------------------------------------


class AttentionResult(NamedTuple):
    """Every value of :func:`attention_core`, int64 tensors, for comparing RTL internals too.

    ``slots`` is ``top_k`` with the top-k sparsifier and ``n`` (one slot per key, key ``j`` in
    slot ``j``) for a dense variant; padding slots hold index -1, score 0 and weight 0.
    """

    #: ``(m, d_v)`` output in units of ``2**-O``.
    out: torch.Tensor
    #: ``(m, slots)`` weighed key indices, -1 padding.
    index: torch.Tensor
    #: ``(m, slots)`` their scores, 0 padding.
    score: torch.Tensor
    #: ``(m, slots)`` softmax numerators ``e_i``, 0 padding.
    weights: torch.Tensor
    #: ``(m,)`` denominators ``sum e_i``.
    den: torch.Tensor
    #: ``(m, d_v)`` numerators ``sum e_i * v[idx_i, c]``.
    num: torch.Tensor
    #: ``(m,)`` reciprocals.
    recip: torch.Tensor


def _slots(cfg: Any, q: torch.Tensor, k: torch.Tensor, n_valid: torch.Tensor | None,
           top_k: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1 and 2 with or without a leading batch axis: ``(index, score)`` of the weighed
    slots, ``(rows, slots)`` with one row per query of every entry (entry-major)."""
    s = scores(cfg, q, k)
    flat = None if n_valid is None else n_valid.reshape(-1)
    return select(cfg, s.reshape(-1, s.shape[-1]), flat,
                  None if top_k is None else top_k.reshape(-1))


def _per_query(q: torch.Tensor, temperature: Any, top_k: Any) -> tuple[Any, Any]:
    """``temperature`` as a float64 numpy array of shape ``q.shape[:-2]`` and ``top_k`` as an
    int64 tensor ``q.shape[:-1]`` (each ``None`` when absent); ``ValueError`` for a wrong
    shape."""
    lead = tuple(q.shape[:-2])
    if temperature is not None:
        temperature = np.asarray(temperature, dtype=np.float64)
        if temperature.shape != lead:
            raise ValueError(f"temperature must have shape {lead} (one per batch entry), not "
                             f"{temperature.shape}")
    if top_k is not None:
        top_k = torch.as_tensor(np.asarray(top_k), dtype=torch.int64)
        if tuple(top_k.shape) != tuple(q.shape[:-1]):
            raise ValueError(f"top_k must have shape {tuple(q.shape[:-1])} (one per query), not "
                             f"{tuple(top_k.shape)}")
    return temperature, top_k


def attention_core(cfg: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   n_valid: torch.Tensor | None = None, *, temperature: Any = None,
                   top_k: Any = None) -> AttentionResult:
    """The bit-exact model (steps 1 to 6 of the module docstring), vectorized over queries
    and batch entries.

    Inputs are integer tensors already checked by :func:`check_inputs`: ``q`` ``(m, d)``,
    ``k`` ``(n, d)``, ``v`` ``(n, d_v)`` and ``n_valid`` ``(m,)`` (``None``: all ``n`` keys),
    or all four with a leading batch axis ``b`` (``q`` ``(b, m, d)``, ...); then every result
    has the leading axis too, and entry ``i`` uses its own keys and values only.

    ``temperature`` (a ``runtime_temperature`` config only): a float64 tensor or array, ``()``
    unbatched or ``(b,)``, the softmax temperature of each entry (its exponential uses
    ``cfg.table_for(temperature[i])``: the table, or ``(c, G)`` for the fixed exponential;
    :func:`run_tables`); ``None``: the config's temperature. ``top_k`` (the top-k
    sparsifier only): an integer tensor or array ``(m,)`` or ``(b, m)`` in ``1..cfg.top_k``,
    the slots each query keeps; ``None``: all ``cfg.top_k``. Raises ``ValueError`` for either
    with a config that cannot use it or of the wrong shape.
    """
    lead, m, n = q.shape[:-2], q.shape[-2], k.shape[-2]
    temperature, top_k = _per_query(q, temperature, top_k)
    index, score = _slots(cfg, q, k, n_valid, top_k)
    selected, delta = _differences(index, score)
    if temperature is None:
        w = weights(cfg, delta)
    else:  # one table or (c, G) per entry, used by the m * slots differences of its queries
        tables = run_tables(cfg, temperature.reshape(-1))
        w = weights(cfg, delta.reshape(tables.shape[0], -1), tables).reshape(delta.shape)
    e = torch.where(selected, w, torch.zeros_like(delta))
    # Gather the slot weights back per key (padding points at key 0 and weighs 0) so that the
    # numerators are one exact integer product: |num| < 2**63 for every configuration.
    per_key = torch.zeros((index.shape[0], n), dtype=torch.int64)
    per_key.scatter_add_(1, index.clamp(min=0), e)
    num = (per_key.view(*lead, m, n) @ v.to(torch.int64)).reshape(-1, v.shape[-1])
    den = e.sum(1)
    recip = reciprocal(cfg, den)
    out = scale_output(cfg, num, recip[:, None])
    return AttentionResult(*(t.reshape(*lead, m, *t.shape[1:])
                             for t in (out, index, score, e, den, num, recip)))


def _tensors(cfg: Any, arrays: Mapping[str, Any]
             ) -> tuple[tuple[torch.Tensor, ...], dict[str, Any], bool]:
    """The checked inputs with a leading batch axis: ``q``, ``k``, ``v``, ``n_valid`` as int64
    tensors; the optional arrays the file has (``temperature`` float64 numpy ``(b,)``,
    ``top_k`` int64 tensor ``(b, m)``) as keyword arguments of :func:`attention_core`; and
    whether the file was batched (:func:`hadware.spec.attention_vectors.as_batched`)."""
    view, batched = as_batched(check_inputs(cfg, arrays))
    tensors = tuple(torch.from_numpy(view[name].astype(np.int64)) for name in INPUT_NAMES)
    optional: dict[str, Any] = {}
    if "temperature" in view:
        optional["temperature"] = view["temperature"].astype(np.float64)
    if "top_k" in view:
        optional["top_k"] = torch.from_numpy(view["top_k"].astype(np.int64))
    return tensors, optional, batched


def run_vectors(cfg: Any, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check an input vector set and compute its expected outputs.

    Returns the arrays of :func:`output_names` as int32 numpy arrays: ``out`` and, for a
    top-k variant, ``topk_index`` and ``topk_score`` (``cfg.top_k`` slots, with a per-query
    ``top_k`` array too), with the leading batch axis of a batched file. The optional
    ``temperature`` and ``top_k`` arrays go to :func:`attention_core`. Raises
    :class:`~hadware.errors.InputError` as :func:`check_inputs` does.
    """
    tensors, optional, batched = _tensors(cfg, arrays)
    res = attention_core(cfg, *tensors, **optional)
    values = {"out": res.out, "topk_index": res.index, "topk_score": res.score}
    return squeeze_batch({name: values[name].numpy().astype(np.int32)
                          for name in output_names(cfg)}, batched)


def float_reference(cfg: Any, arrays: Mapping[str, Any]) -> np.ndarray:
    """The exact softmax average over the same weighed keys, in float64.

    For each query, ``p_i = softmax(temperature * s_i)`` over the slots of step 2 (padding
    excluded; a ``top_k`` array truncates them as there) and the result is
    ``2**O * sum_i p_i * v[idx_i]``: float64 ``(m, d_v)`` in the units of ``out``
    (``(b, m, d_v)`` for a batched file). ``temperature`` is the entry's from a
    ``temperature`` array, else the config's. Raises :class:`~hadware.errors.InputError` as
    :func:`check_inputs` does.
    """
    (q, k, v, n_valid), optional, batched = _tensors(cfg, arrays)
    b, m = q.shape[:2]
    index, score = _slots(cfg, q, k, n_valid, optional.get("top_k"))
    selected = index != PAD_INDEX
    s = score.to(torch.float64)
    top = torch.where(selected, s, torch.full_like(s, -torch.inf)).max(1, keepdim=True).values
    if "temperature" in optional:  # one per entry, so one per row of its m queries
        tau = torch.from_numpy(optional["temperature"]).repeat_interleave(m)[:, None]
    else:
        tau = torch.tensor(cfg.temperature, dtype=torch.float64)
    w = torch.where(selected, torch.exp(tau * (s - top)), torch.zeros_like(s))
    p = w / w.sum(1, keepdim=True)
    entry = torch.arange(b).repeat_interleave(m)[:, None]  # the entry of each row
    v_sel = v[entry, index.clamp(min=0)].to(torch.float64)
    out = ((p[:, :, None] * v_sel).sum(1) * 2.0**cfg.out_frac_bits).numpy()
    out = out.reshape(b, m, -1)
    return out if batched else out[0]
