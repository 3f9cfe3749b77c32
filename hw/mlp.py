r"""Ternary MatMul-free GLU MLP block: ``y = BitLinear_dn(SiLU(gate) * up)``, one token at a time.

Arithmetic
----------
Exactly :mod:`hadware.golden.mlp` (its module docstring is the specification): both BitLinear
layers follow steps L1-L9 (gain products, exact sum of squares, absmax, normalization, one
reciprocal per token, sign-magnitude int8 quantization, ternary sums, per-token output scale from
an integer square root and a second division), then the piecewise-linear SiLU from the imported
table and the GLU product. Constants computed once from the weights (ternary codes, fixed-point
gains, ``Kc``, ``SH0``, the SiLU table) are ROM and parameter contents, taken from
:func:`hadware.golden.mlp.quantize_weights`; every per-token operation is done here.

Streams
-------
* ``i_stream`` (in): ``{x: ArrayLayout(signed(x_bits), lanes)}``; a token is ``d_model / lanes``
  beats, element ``b*lanes + l`` in beat ``b``, lane ``l``, in the input format
  (:func:`hadware.golden.mlp.quantize_input`). Token boundaries are implicit (beat count).
* ``o_stream`` (out): ``{y: ArrayLayout(signed(y_bits), lanes), last}``; ``d_model / lanes``
  beats per token in the same order, ``last`` set on the final beat of each token;
  ``y = Y / 2**y_frac_bits``.

So ``lanes`` is the number of elements per beat of both streams and the number of ternary
weights per cycle of each projection; inside, gate/up and ``h`` move one element per cycle.

Structure
---------
``deser`` (beats to elements) -> ``gate_up`` (:class:`BitLinear`, ``d_model -> 2*d_hidden``,
rows in the order gate 0, up 0, gate 1, up 1, ...) -> ``glu`` (:class:`Glu`) -> ``down``
(:class:`BitLinear`, ``d_hidden -> d_model``) -> ``ser`` (elements to beats). Element-wise steps
run one element per cycle through shared units; the ternary projection
(:class:`~hadware.hw.ternary_projection.TernaryProjection`, a submodule of each BitLinear) takes
``lanes`` weights per cycle. Each BitLinear has a *front* (loading a token: gains, squares,
absmax, into a product buffer) and a *back* (normalization, quantization into an activation
buffer, projection); the front loads the next token while the back projects. The first layer
starts projecting a token only when the second layer's front and the GLU are empty, so the
whole token then flows without internal stalls.

Storage per layer: ternary codes in ROM (``codes``: 32-bit words of packing layout v1, exactly
:func:`hadware.sw.ternary_pack.pack` of the codes; :func:`rom_images`), gains in ROM
(``gains``), the products ``|P_i|`` with their signs (``pbuf``, ``fan_in`` words) and the
activations ``q`` (``qbuf``, ``fan_in / lanes`` words of ``lanes`` int8). The code ROM is read
through ``ceil((16 - gcd(lanes, 16) + lanes) / 16)`` ports (one when ``lanes`` divides 16 or 16
divides ``lanes``), consecutive words whose concatenation is shifted to the group's first slot.

Multipliers (12, each in its own submodule; none in the projections)
-------------------------------------------------------------------
Per BitLinear (x2): gain ``X_i * G_i`` (``in_bits x gain_bits``), square ``X_i**2``
(``in_bits x in_bits``), quantizer ``A_i * R`` (``mant_bits x (recip_frac_bits + 8)``), output
scale ``acc_j * C`` (``acc_bits x scale_bits``), and ``Kc * V`` (``kappa_bits x (mant_bits +
1)``, once per token). GLU: SiLU interpolation ``(N[k+1] - N[k]) * fr`` (narrow; absent when
``act_frac_bits = silu_seg_frac_bits``) and ``SiLU(gate) * up``. Per token that is
``d_model + d_hidden`` gain products and squares, ``d_model + d_hidden`` quantizer products,
``2*d_hidden + d_model`` output scales, ``d_hidden`` SiLU interpolations and GLU products, and 2
``Kc * V``. Every multiplier registers its 18 x 18-sized partial products (:class:`Multiplier`),
so a product takes two register stages. The two divisions and the square root per layer are
sequential (restoring, one result bit per cycle: ``recip_frac_bits + 8``, ``mant_bits`` and
``mant_bits + 1`` cycles).

Timing
------
With ``K = recip_frac_bits``, ``W = mant_bits``, ``L = lanes``, ``D = ceil(log2(L))`` and
``X(n) = max(K + n + 17, 2W + 7)`` (a layer's cycles from normalization to projection: the
reciprocal then ``n`` quantized elements, or the square root, the second division and ``Kc * V``,
whichever is longer):

* Latency of a token (first input beat transferred to last output beat valid, no stalls)::

      latency = 3 d_model d_hidden / L + d_model + X(d_model) + X(d_hidden) + 2D + 34

  The first output beat is valid ``d_model d_hidden / L - d_hidden`` cycles earlier; after it,
  one beat every ``L * d_hidden / L = d_hidden`` cycles.
* Throughput: with inputs always available and outputs always ready, tokens finish one every::

      interval = 2 d_model d_hidden / L + D + max(K + d_model + 26, 2W + 16, K + d_hidden + 38)

  cycles: the first layer's projection (``2 d_hidden`` rows of ``d_model / L`` groups) plus the
  time from its last row to its next first row (its own normalization and quantization of the
  next token, or the second layer taking the previous token in, whichever is longer). The
  second layer's projection overlaps the first layer's next token.
* Per layer (``n`` inputs, ``G = n / L`` groups per row): the last input element taken at
  ``a`` -> normalization at ``c = a + 6`` -> projection from ``p = c + X(n)`` -> row ``j`` (in
  projection order) valid at ``p + (j + 1) G + D + 7``; the GLU's ``h_j`` is valid 7 cycles
  after ``up_j``.
* ``i_stream`` takes one beat every ``L`` cycles while the first layer is loading; it is not
  ready while that layer's product buffer is in use. ``o_stream`` backpressure stalls the second
  layer's projection, then (through the GLU) the first layer's. Nothing is dropped or duplicated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from amaranth import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hadware.config.mlp import BitLinearGeometry, MlpConfig
from hadware.golden.mlp import BitLinearParams, MlpWeights, quantize_weights, silu_table
from hadware.hw.ternary_projection import TernaryProjection
from hadware.sw import ternary_pack
from hadware.sw.ternary_pack import CODE_BITS, CODES_PER_WORD, LAYOUT_V1, WORD_BITS

__all__ = [
    "BitLinear",
    "Glu",
    "IntSqrt",
    "Mlp",
    "Multiplier",
    "RestoringDivider",
    "mlp_interval",
    "mlp_latency",
    "norm_to_project_cycles",
    "rom_images",
]

LATENCY_FORMULA = ("3*d_model*d_hidden/lanes + d_model + X(d_model) + X(d_hidden) + "
                   "2*ceil(log2(lanes)) + 34, X(n) = max(recip_frac_bits + n + 17, "
                   "2*mant_bits + 7); interval between tokens = 2*d_model*d_hidden/lanes + "
                   "ceil(log2(lanes)) + max(recip_frac_bits + d_model + 26, 2*mant_bits + 16, "
                   "recip_frac_bits + d_hidden + 38)")


def _clog2(n: int) -> int:
    return (n - 1).bit_length()


def _log2_exact(n: int, what: str) -> int:
    if n < 1 or n & (n - 1):
        raise ValueError(f"{what} of the packing layout must be a power of two for this "
                         f"decoder, not {n!r}")
    return n.bit_length() - 1


def _upto(n: int) -> range:
    """Shape of a counter or address below ``n``, at least one bit wide (Verilog has no
    zero-width vectors)."""
    return range(max(n, 2))


def _signed_width(values) -> int:
    """Two's-complement width holding every integer of ``values``."""
    return max(max(v.bit_length() for v in values), 1) + 1


# -- timing ----------------------------------------------------------------------------------


def norm_to_project_cycles(cfg: MlpConfig, fan_in: int) -> int:
    """``X(n) = max(K + n + 17, 2W + 7)``: cycles of a layer from normalization to projection."""
    return max(cfg.recip_frac_bits + fan_in + 17, 2 * cfg.mant_bits + 7)


def mlp_latency(cfg: MlpConfig) -> int:
    """Cycles from a token's first input transfer to its last output beat being valid, without
    stalls (module docstring)."""
    d = _clog2(cfg.lanes)
    return (3 * cfg.d_model * cfg.d_hidden // cfg.lanes + cfg.d_model
            + norm_to_project_cycles(cfg, cfg.d_model)
            + norm_to_project_cycles(cfg, cfg.d_hidden) + 2 * d + 34)


def mlp_interval(cfg: MlpConfig) -> int:
    """Cycles between the last output beats of consecutive tokens when inputs are always
    available and outputs always ready (module docstring)."""
    k, w = cfg.recip_frac_bits, cfg.mant_bits
    return (2 * cfg.d_model * cfg.d_hidden // cfg.lanes + _clog2(cfg.lanes)
            + max(k + cfg.d_model + 26, 2 * w + 16, k + cfg.d_hidden + 38))


def _weights(cfg: MlpConfig, weights: Mapping[str, Any] | MlpWeights) -> MlpWeights:
    if isinstance(weights, MlpWeights):
        if weights.cfg != cfg:
            raise ValueError("weights were quantized for a different configuration")
        return weights
    if not isinstance(weights, Mapping):
        raise TypeError(f"weights must be a mapping of arrays (W.npz) or MlpWeights, not "
                        f"{type(weights).__name__}")
    if "layout_version" in weights:  # exported codes: loaded, never quantized again
        from hadware.golden.mlp import load_exported

        return load_exported(cfg, weights)
    return quantize_weights(cfg, weights)


def rom_images(cfg: MlpConfig, weights: Mapping[str, Any] | MlpWeights) -> dict[str, list[int]]:
    """The ternary-code ROM words of both layers, ``{"gate_up": [...], "down": [...]}``: the
    contents of the ``codes`` memories of the submodules of the same name, packing layout v1
    (32-bit words). ``weights`` is W.npz (latent floats, quantized once here) or
    :class:`~hadware.golden.mlp.MlpWeights`."""
    w = _weights(cfg, weights)
    return {p.name: [int(v) for v in ternary_pack.pack(p.codes, LAYOUT_V1)]
            for p in (w.gate_up, w.down)}


# -- arithmetic units ------------------------------------------------------------------------


class Multiplier(wiring.Component):
    """A pipelined multiplier ``p = a * b`` in its own module (hierarchical synthesis keeps it
    apart).

    Each operand is cut into pieces that fit an 18 x 18 DSP multiplier (17-bit unsigned low
    pieces, the rest with the operand's signedness); the partial products are registered while
    ``en`` is high, and ``p`` is their shifted sum: the product of the ``a``, ``b`` presented at
    the previous enabled cycle. ``p`` is ``a_width + b_width`` bits, signed when either operand
    is, which holds every product exactly.
    """

    #: Widest operand piece (an 18 x 18 signed DSP multiplier takes 17 unsigned bits + sign).
    PIECE = 17

    def __init__(self, a_shape, b_shape):
        a_shape, b_shape = Shape.cast(a_shape), Shape.cast(b_shape)
        width = a_shape.width + b_shape.width
        p_shape = signed(width) if (a_shape.signed or b_shape.signed) else unsigned(width)
        super().__init__({"a": In(a_shape), "b": In(b_shape), "en": In(1, init=1),
                          "p": Out(p_shape)})

    @classmethod
    def _pieces(cls, v) -> list[tuple[Any, int]]:
        shape = v.shape()
        if shape.width <= cls.PIECE + 1:
            return [(v, 0)]
        out = []
        pos = 0
        while shape.width - pos > cls.PIECE + 1:
            out.append((v[pos:pos + cls.PIECE], pos))
            pos += cls.PIECE
        top = v[pos:]
        out.append((top.as_signed() if shape.signed else top, pos))
        return out

    def elaborate(self, platform) -> Module:
        m = Module()
        total = 0
        for i, (pa, sa) in enumerate(self._pieces(self.a)):
            for j, (pb, sb) in enumerate(self._pieces(self.b)):
                prod = pa * pb
                r = Signal(prod.shape(), name=f"pp{i}_{j}", reset_less=True)
                with m.If(self.en):
                    m.d.sync += r.eq(prod)
                total = total + (r << (sa + sb))
        m.d.comb += self.p.eq(total)
        return m


def _bitlen(v):
    """``bitlen(v)`` (position of the leading one plus one, 0 for 0) as a log-depth tree."""
    w = len(v)
    if w == 1:
        return v[0]
    h = 1 << ((w - 1).bit_length() - 1)  # largest power of two below w
    return Mux(v[h:].any(), _bitlen(v[h:]) + h, _bitlen(v[:h]))


class RestoringDivider(wiring.Component):
    """Sequential restoring division ``quotient = floor((rem0 * 2**q_bits + low) / divisor)``.

    Precondition ``rem0 < divisor`` (so the quotient fits ``q_bits``). ``start`` loads the
    operands; the unit then makes one quotient bit per cycle, most significant first, and
    ``done`` pulses ``q_bits + 1`` cycles after ``start`` with ``quotient`` valid (held until the
    next ``start``). A zero divisor gives all ones.
    """

    def __init__(self, width: int, q_bits: int):
        self.width = width
        self.q_bits = q_bits
        super().__init__({
            "start": In(1),
            "rem0": In(width),
            "low": In(q_bits),
            "divisor": In(width),
            "quotient": Out(q_bits),
            "done": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        w, qb = self.width, self.q_bits
        rem = Signal(w, reset_less=True)
        low = Signal(qb, reset_less=True)
        divisor = Signal(w, reset_less=True)
        steps = Signal(range(qb + 1))
        trial = Signal(w + 1)
        fits = Signal()
        m.d.comb += [trial.eq(Cat(low[-1], rem)), fits.eq(trial >= divisor)]
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [rem.eq(self.rem0), low.eq(self.low), divisor.eq(self.divisor),
                         steps.eq(qb)]
        with m.Elif(steps != 0):
            m.d.sync += [
                rem.eq(Mux(fits, trial - divisor, trial)),
                low.eq(low << 1),
                self.quotient.eq(Cat(fits, self.quotient[:-1])),
                steps.eq(steps - 1),
            ]
            with m.If(steps == 1):
                m.d.sync += self.done.eq(1)
        return m


class IntSqrt(wiring.Component):
    """Sequential integer square root ``root = floor(sqrt(value))`` of a ``2*width``-bit value,
    digit by digit (two input bits, one root bit per cycle). ``done`` pulses ``width + 1``
    cycles after ``start``; ``root`` is held until the next ``start``."""

    def __init__(self, width: int):
        self.width = width
        super().__init__({
            "start": In(1),
            "value": In(2 * width),
            "root": Out(width),
            "done": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        w = self.width
        rest = Signal(2 * w, reset_less=True)  # input bits not yet used, top first
        rem = Signal(w + 2, reset_less=True)   # value so far - root**2, at most 2*root
        steps = Signal(range(w + 1))
        cand = Signal(w + 3)
        trial = Signal(w + 3)
        fits = Signal()
        m.d.comb += [
            cand.eq(Cat(rest[-2:], rem)),
            trial.eq(Cat(Const(1, 1), Const(0, 1), self.root)),
            fits.eq(cand >= trial),
        ]
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [rest.eq(self.value), rem.eq(0), self.root.eq(0), steps.eq(w)]
        with m.Elif(steps != 0):
            m.d.sync += [
                rem.eq(Mux(fits, cand - trial, cand)),
                rest.eq(rest << 2),
                self.root.eq(Cat(fits, self.root[:-1])),
                steps.eq(steps - 1),
            ]
            with m.If(steps == 1):
                m.d.sync += self.done.eq(1)
        return m


# -- one BitLinear layer ---------------------------------------------------------------------


class BitLinear(wiring.Component):
    """One BitLinear layer (steps L1-L9 of the specification), one token at a time.

    Parameters
    ----------
    geom : BitLinearGeometry
        Widths of the layer (``cfg.gate_up`` or ``cfg.down``).
    params : BitLinearParams
        The layer's constants: ternary codes (packed into the ``codes`` ROM), gains, ``Kc``,
        ``SH0``.
    lanes : int
        Ternary weights per cycle in the projection; divides ``fan_in``.
    interleave : bool
        Project the rows in the order ``0, h, 1, h + 1, ...`` (``h = fan_out / 2``: gate and up
        of the GLU side by side) instead of ``0, 1, 2, ...``.

    Members
    -------
    i_stream : In(stream.Signature(signed(in_bits)))
        One input element per beat, ``fan_in`` beats per token; ready while the front loads.
    o_stream : Out(stream.Signature(signed(out_bits)))
        One output element per beat, ``fan_out`` beats per token, in projection row order.
    go : In(1)
        Permission to start projecting the next token (held high when there is no condition).
    idle : Out(1)
        The front is waiting for the first element of a token.

    Timing (no stalls): the last input element transferred at ``a`` -> normalization starts at
    ``c = a + 6`` (if the back is free) -> projection starts at ``p = c + max(K + n + 17,
    2W + 7)`` (and ``go``) -> row ``j`` (in projection order) is valid at
    ``p + (j + 1) * fan_in / lanes + ceil(log2(lanes)) + 7``.
    """

    def __init__(self, geom: BitLinearGeometry, params: BitLinearParams, lanes: int, *,
                 interleave: bool = False):
        self.geom = geom
        self.params = params
        self.lanes = lanes
        self.interleave = interleave
        self.groups = geom.fan_in // lanes
        self.words = [int(v) for v in ternary_pack.pack(params.codes, LAYOUT_V1)]
        self.words_per_row = LAYOUT_V1.words_per_row(geom.fan_in)
        g = math.gcd(lanes, CODES_PER_WORD)
        self.rom_ports = -(-(CODES_PER_WORD - g + lanes) // CODES_PER_WORD)
        try:  # the decoder slices words with shifts
            self._log2_cpw = _log2_exact(CODES_PER_WORD, "CODES_PER_WORD")
            self._log2_cb = _log2_exact(CODE_BITS, "CODE_BITS")
        except ValueError:
            self._MustUse__silence = True
            raise
        super().__init__({
            "i_stream": In(stream.Signature(signed(geom.in_bits))),
            "o_stream": Out(stream.Signature(signed(geom.out_bits))),
            "go": In(1),
            "idle": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        g, prm = self.geom, self.params
        n, f, lanes, groups = g.fan_in, g.fan_out, self.lanes, self.groups
        w, k = g.mant_bits, g.recip_frac_bits
        ab, bi = g.absmax_bits, g.in_bits
        q_r_bits = g.recip_bits
        log2_cpw, log2_cb = self._log2_cpw, self._log2_cb
        spb = g.scale_product_bits

        # -- memories ------------------------------------------------------------------------
        # Every memory has at least two rows (an address of at least one bit); an extra row
        # is never read.
        gains = Memory(shape=signed(g.gain_bits), depth=max(n, 2),
                       init=[int(v) for v in prm.gain_fx])
        codes = Memory(shape=WORD_BITS, depth=max(len(self.words), 2), init=self.words)
        pbuf = Memory(shape=ab + 1, depth=max(n, 2), init=[])          # |P_i|, P_i < 0
        qbuf = Memory(shape=8 * lanes, depth=max(groups, 2), init=[])  # q, lanes per row
        m.submodules.gains = gains
        m.submodules.codes = codes
        m.submodules.pbuf = pbuf
        m.submodules.qbuf = qbuf
        gain_rd = gains.read_port()
        p_wr = pbuf.write_port()
        p_rd = pbuf.read_port()
        q_wr = qbuf.write_port(granularity=8)
        q_rd = qbuf.read_port()
        rom_rd = [codes.read_port() for _ in range(self.rom_ports)]

        # -- arithmetic units ----------------------------------------------------------------
        gain_mul = Multiplier(signed(bi), signed(g.gain_bits))
        square_mul = Multiplier(signed(bi), signed(bi))
        quant_mul = Multiplier(unsigned(w), unsigned(q_r_bits))
        scale_mul = Multiplier(signed(g.acc_bits), unsigned(g.scale_bits))
        kappa_mul = Multiplier(unsigned(g.kappa_bits), unsigned(w + 1))
        rdiv = RestoringDivider(w, q_r_bits)
        vdiv = RestoringDivider(w, w + 1)
        sqrt = IntSqrt(w)
        proj = TernaryProjection(lanes, n)
        for name, sub in (("gain_mul", gain_mul), ("square_mul", square_mul),
                          ("quant_mul", quant_mul), ("scale_mul", scale_mul),
                          ("kappa_mul", kappa_mul), ("rdiv", rdiv), ("vdiv", vdiv),
                          ("isqrt", sqrt), ("projection", proj)):
            m.submodules[name] = sub
        if proj.acc_bits != g.acc_bits:  # pragma: no cover - both are 8 + ceil(log2(fan_in))
            raise RuntimeError("projection and geometry disagree on acc_bits")

        # Per-token registers shared by front and back.
        big_m = Signal(ab)          # M = max |P_i|
        big_s = Signal(g.sumsq_bits)  # S = sum X_i**2 + E
        front_full = Signal()
        p_free = Signal()           # the back no longer reads pbuf, M, S
        # Back: IDLE -> NORM -> NORM2 -> RDIV -> QUANT -> WAITC -> PROJ -> IDLE.
        back = Signal(range(7))
        b_idle, b_norm, b_norm2, b_rdiv, b_quant, b_waitc, b_proj = range(7)

        # -- front: L1-L3 per element, one per cycle -----------------------------------------
        cnt = Signal(range(n + 1))
        take = Signal()
        m.d.comb += [take.eq(self.i_stream.valid & self.i_stream.ready),
                     gain_rd.addr.eq(cnt)]
        v1, first1, last1 = Signal(), Signal(), Signal()
        idx1 = Signal(_upto(n), reset_less=True)
        x1 = Signal(signed(bi), reset_less=True)
        m.d.sync += v1.eq(take)
        with m.If(take):
            m.d.sync += [x1.eq(self.i_stream.payload), idx1.eq(cnt), first1.eq(cnt == 0),
                         last1.eq(cnt == n - 1)]
        # x and its gain registered (the gain comes from a ROM read), then the multipliers
        # register their partial products, then p2 and sq2.
        vg, firstg, lastg = Signal(), Signal(), Signal()
        idxg = Signal(_upto(n), reset_less=True)
        xg = Signal(signed(bi), reset_less=True)
        gg = Signal(signed(g.gain_bits), reset_less=True)
        m.d.sync += [vg.eq(v1), firstg.eq(first1), lastg.eq(last1), idxg.eq(idx1), xg.eq(x1),
                     gg.eq(gain_rd.data)]
        m.d.comb += [gain_mul.a.eq(xg), gain_mul.b.eq(gg), square_mul.a.eq(xg),
                     square_mul.b.eq(xg)]
        vm, firstm, lastm = Signal(), Signal(), Signal()
        idxm = Signal(_upto(n), reset_less=True)
        m.d.sync += [vm.eq(vg), firstm.eq(firstg), lastm.eq(lastg), idxm.eq(idxg)]
        v2, first2, last2 = Signal(), Signal(), Signal()
        idx2 = Signal(_upto(n), reset_less=True)
        p2 = Signal(signed(g.product_bits), reset_less=True)
        sq2 = Signal(2 * bi - 1, reset_less=True)  # X**2 <= 2**(2*bi - 2)
        m.d.sync += [v2.eq(vm), first2.eq(firstm), last2.eq(lastm), idx2.eq(idxm),
                     p2.eq(gain_mul.p), sq2.eq(square_mul.p)]
        neg2 = Signal()
        abs2 = Signal(ab)
        m.d.comb += [neg2.eq(p2 < 0), abs2.eq(Mux(neg2, -p2, p2))]
        m.d.comb += [p_wr.addr.eq(idx2), p_wr.data.eq(Cat(abs2, neg2)), p_wr.en.eq(v2)]
        m_prev = Mux(first2, 0, big_m)
        with m.If(v2):
            m.d.sync += [
                big_m.eq(Mux(abs2 > m_prev, abs2, m_prev)),
                big_s.eq(Mux(first2, g.eps_fx, big_s) + sq2),
            ]

        # Front: LOAD (taking elements) -> DRAIN (pipeline) -> FULL (token ready for the back)
        # -> WAIT (the back reads pbuf, M, S) -> LOAD.
        front = Signal(range(4))
        f_load, f_drain, f_full, f_wait = range(4)
        back_take = Signal()
        m.d.comb += [front_full.eq(front == f_full),
                     self.i_stream.ready.eq(front == f_load),
                     self.idle.eq((front == f_load) & (cnt == 0))]
        with m.If(front == f_load), m.If(take):
            m.d.sync += cnt.eq(cnt + 1)
            with m.If(cnt == n - 1):
                m.d.sync += front.eq(f_drain)
        with m.Elif(front == f_drain), m.If(v2 & last2):
            m.d.sync += front.eq(f_full)
        with m.Elif(front == f_full), m.If(back_take):
            m.d.sync += front.eq(f_wait)
        with m.Elif(p_free):
            m.d.sync += [cnt.eq(0), front.eq(f_load)]

        # -- back, L4-L5 and L8: normalization, reciprocal, square root, scale --------------
        e_c = Signal(range(ab + 1))            # bitlen(M)
        bl_s = Signal(range(g.sumsq_bits + 1))  # bitlen(S)
        m.d.comb += [e_c.eq(_bitlen(big_m)), bl_s.eq(_bitlen(big_s))]
        e_r = Signal(range(ab + 1))
        tau_r = Signal(range(g.tau_max + 1))
        # SHL(v, W - e) = (v << (W-1)) >> (e-1) and SHL(S, 2W - 2 tau) likewise. For e = 0
        # (M = 0) or tau = 0 (S = 0) the shift wraps; the value shifted is then 0 anyway.
        m_shift = Signal(range(ab))
        s_shift = Signal(range(2 * g.tau_max))
        m.d.comb += [m_shift.eq(e_r - 1), s_shift.eq(2 * tau_r - 2)]
        mn_c = Signal(w)
        sn_c = Signal(2 * w)
        m.d.comb += [mn_c.eq(((big_m << (w - 1)) >> m_shift)[:w]),
                     sn_c.eq(((big_s << (2 * w - 2)) >> s_shift)[:2 * w])]
        mn_r = Signal(w)
        sh_lo = prm.shift0 - ab
        sh_hi = prm.shift0 + g.tau_max
        sh_full = Signal(signed(max(abs(sh_lo), abs(sh_hi)).bit_length() + 1))
        sh_m1 = Signal(range(spb))  # sh - 1, sh = min(SH0 + tau - e, scale_product_bits) >= 1
        m.d.comb += sh_full.eq(prm.shift0 + tau_r - e_r)
        c_r = Signal(g.scale_bits)
        c_valid = Signal()
        m.d.comb += [
            rdiv.rem0.eq(127 << (w - 8)),      # 127 * 2**(W+K) = rem0 * 2**(K+8)
            rdiv.low.eq(0),
            rdiv.divisor.eq(mn_c),
            sqrt.value.eq(sn_c),
            vdiv.start.eq(sqrt.done),          # M_n * 2**W = (M_n >> 1) * 2**(W+1) + M_n[0] 2**W
            vdiv.rem0.eq(mn_r >> 1),
            vdiv.low.eq(Cat(Const(0, w), mn_r[0])),
            vdiv.divisor.eq(sqrt.root),
            kappa_mul.a.eq(prm.kappa_mant),
            kappa_mul.b.eq(vdiv.quotient),
        ]
        kappa_done = Signal()  # Kc * V is out of the multiplier one cycle after vdiv.done
        m.d.sync += kappa_done.eq(vdiv.done)
        with m.If(kappa_done):
            m.d.sync += [c_r.eq(kappa_mul.p >> g.scale_shift), c_valid.eq(1)]

        # -- back, L6: quantizer, one element per cycle into qbuf ---------------------------
        q_issue = Signal()
        qi = Signal(range(n + 1))
        q_lane = Signal(_upto(lanes))
        q_row = Signal(_upto(groups))
        m.d.comb += p_rd.addr.eq(qi)
        with m.If(q_issue):
            m.d.sync += qi.eq(qi + 1)
            with m.If(q_lane == lanes - 1):
                m.d.sync += [q_lane.eq(0), q_row.eq(q_row + 1)]
            with m.Else():
                m.d.sync += q_lane.eq(q_lane + 1)
        qa_v, qa_last = Signal(), Signal()
        qa_lane = Signal(_upto(lanes), reset_less=True)
        qa_row = Signal(_upto(groups), reset_less=True)
        m.d.sync += [qa_v.eq(q_issue), qa_last.eq(qi == n - 1), qa_lane.eq(q_lane),
                     qa_row.eq(q_row)]
        qd_v, qd_last = Signal(), Signal()
        qd_lane = Signal(_upto(lanes), reset_less=True)
        qd_row = Signal(_upto(groups), reset_less=True)
        qd_data = Signal(ab + 1, reset_less=True)
        m.d.sync += [qd_v.eq(qa_v), qd_last.eq(qa_last), qd_lane.eq(qa_lane),
                     qd_row.eq(qa_row), qd_data.eq(p_rd.data)]
        a_c = Signal(w)  # A_i = SHL(|P_i|, W - e) <= M_n < 2**W
        m.d.comb += a_c.eq(((qd_data[:ab] << (w - 1)) >> m_shift)[:w])
        qb_v, qb_last = Signal(), Signal()
        qb_neg = Signal(reset_less=True)
        qb_lane = Signal(_upto(lanes), reset_less=True)
        qb_row = Signal(_upto(groups), reset_less=True)
        qb_a = Signal(w, reset_less=True)
        m.d.sync += [qb_v.eq(qd_v), qb_last.eq(qd_last), qb_neg.eq(qd_data[ab]),
                     qb_lane.eq(qd_lane), qb_row.eq(qd_row), qb_a.eq(a_c)]
        m.d.comb += [quant_mul.a.eq(qb_a), quant_mul.b.eq(rdiv.quotient)]
        qm_v, qm_last = Signal(), Signal()
        qm_neg = Signal(reset_less=True)
        qm_lane = Signal(_upto(lanes), reset_less=True)
        qm_row = Signal(_upto(groups), reset_less=True)
        m.d.sync += [qm_v.eq(qb_v), qm_last.eq(qb_last), qm_neg.eq(qb_neg),
                     qm_lane.eq(qb_lane), qm_row.eq(qb_row)]
        qc_v, qc_last = Signal(), Signal()
        qc_neg = Signal(reset_less=True)
        qc_lane = Signal(_upto(lanes), reset_less=True)
        qc_row = Signal(_upto(groups), reset_less=True)
        qc_prod = Signal(w + q_r_bits, reset_less=True)
        m.d.sync += [qc_v.eq(qm_v), qc_last.eq(qm_last), qc_neg.eq(qm_neg),
                     qc_lane.eq(qm_lane), qc_row.eq(qm_row), qc_prod.eq(quant_mul.p)]
        mag = Signal(7)  # (A R + 2**(W+K-1)) >> (W+K) <= 127 because A <= M_n
        q_val = Signal(signed(8))
        m.d.comb += [mag.eq((qc_prod + (1 << (w + k - 1))) >> (w + k)),
                     q_val.eq(Mux(qc_neg, -mag, mag))]
        m.d.comb += [q_wr.addr.eq(qc_row), q_wr.data.eq(Cat(*([q_val] * lanes))),
                     q_wr.en.eq(Mux(qc_v, (Const(1, lanes) << qc_lane)[:lanes], 0))]

        # -- back, L7: projection, `lanes` codes per cycle ----------------------------------
        proj_active = Signal()
        adv = Signal()   # the projection pipeline moves (its output register is free)
        out_v = Signal()
        out_r = Signal(signed(g.out_bits), reset_less=True)
        out_xfer = Signal()
        m.d.comb += [adv.eq(~out_v | self.o_stream.ready),
                     out_xfer.eq(out_v & self.o_stream.ready)]
        nwords = len(self.words)
        wpr = self.words_per_row
        grp = Signal(_upto(groups))
        col = Signal(range(max(n, CODES_PER_WORD)))   # first column of the group
        rstep = Signal(_upto(f))
        row_base = Signal(_upto(nwords))              # first word of the current row
        issued_all = Signal()
        rows_out = Signal(_upto(f))
        issue = Signal()
        m.d.comb += issue.eq(proj_active & ~issued_all)
        word = Signal(range(nwords + self.rom_ports))
        m.d.comb += word.eq(row_base + (col >> log2_cpw))
        for i, rp in enumerate(rom_rd):
            addr = Signal(range(nwords + self.rom_ports), name=f"rom_addr{i}")
            m.d.comb += addr.eq(word + i)
            m.d.comb += [rp.addr.eq(Mux(addr >= nwords, nwords - 1, addr)) if i else
                         rp.addr.eq(addr), rp.en.eq(adv)]
        m.d.comb += [q_rd.addr.eq(grp), q_rd.en.eq(adv)]
        s1_v = Signal()
        s1_first, s1_last = Signal(reset_less=True), Signal(reset_less=True)
        s1_slot = Signal(log2_cpw, reset_less=True)
        with m.If(adv):
            m.d.sync += [s1_v.eq(issue), s1_first.eq(grp == 0),
                         s1_last.eq(grp == groups - 1), s1_slot.eq(col[:log2_cpw])]
            with m.If(issue):
                with m.If(grp == groups - 1):
                    m.d.sync += [grp.eq(0), col.eq(0), rstep.eq(rstep + 1)]
                    if self.interleave:
                        half_words = (f // 2) * wpr
                        with m.If(rstep[0]):
                            m.d.sync += row_base.eq(row_base + wpr - half_words)
                        with m.Else():
                            m.d.sync += row_base.eq(row_base + half_words)
                    else:
                        m.d.sync += row_base.eq(row_base + wpr)
                    with m.If(rstep == f - 1):
                        m.d.sync += issued_all.eq(1)
                with m.Else():
                    m.d.sync += [grp.eq(grp + 1), col.eq(col + lanes)]
        # The group's codes, shifted out of the ROM words, and its q, registered.
        window = Cat(*(rp.data for rp in rom_rd))
        s2_v = Signal()
        s2_first, s2_last = Signal(reset_less=True), Signal(reset_less=True)
        s2_codes = Signal(CODE_BITS * lanes, reset_less=True)
        s2_q = Signal(8 * lanes, reset_less=True)
        with m.If(adv):
            m.d.sync += [s2_v.eq(s1_v), s2_first.eq(s1_first), s2_last.eq(s1_last),
                         s2_codes.eq((window >> (s1_slot << log2_cb))[:CODE_BITS * lanes]),
                         s2_q.eq(q_rd.data)]
        m.d.comb += [
            proj.en.eq(adv),
            proj.valid.eq(s2_v),
            proj.first.eq(s2_first),
            proj.last.eq(s2_last),
            proj.codes.eq(s2_codes),
            proj.act.eq(s2_q),
        ]

        # -- back, L9: output scale, rounding, saturation -----------------------------------
        m.d.comb += [scale_mul.a.eq(proj.acc), scale_mul.b.eq(c_r), scale_mul.en.eq(adv)]
        sm_v = Signal()
        sc_v = Signal()
        sc_p = Signal(signed(spb), reset_less=True)
        with m.If(adv):
            m.d.sync += [sm_v.eq(proj.acc_valid), sc_v.eq(sm_v), sc_p.eq(scale_mul.p)]
        sh_v = Signal()
        shifted = Signal(signed(spb), reset_less=True)
        rounded = Signal(signed(spb))   # RHU(v, sh) = ((v >> (sh-1)) + 1) >> 1 for sh >= 1
        with m.If(adv):
            m.d.sync += [sh_v.eq(sc_v), shifted.eq(sc_p >> sh_m1)]
        m.d.comb += rounded.eq((shifted + 1) >> 1)
        with m.If(adv):
            m.d.sync += [out_v.eq(sh_v), out_r.eq(_saturate(rounded, spb, g.out_bits))]
        m.d.comb += [self.o_stream.valid.eq(out_v), self.o_stream.payload.eq(out_r)]
        with m.If(out_xfer):
            m.d.sync += rows_out.eq(Mux(rows_out == f - 1, 0, rows_out + 1))

        # -- back sequencing ----------------------------------------------------------------
        with m.If(back == b_idle), m.If(front_full):
            m.d.comb += back_take.eq(1)
            m.d.sync += back.eq(b_norm)
        with m.Elif(back == b_norm):
            m.d.sync += [e_r.eq(e_c), tau_r.eq((bl_s + 1) >> 1), c_valid.eq(0),
                         back.eq(b_norm2)]
        with m.Elif(back == b_norm2):
            m.d.comb += [rdiv.start.eq(1), sqrt.start.eq(1)]
            m.d.sync += [mn_r.eq(mn_c), sh_m1.eq(Mux(sh_full >= spb, spb - 1, sh_full - 1)),
                         back.eq(b_rdiv)]
        with m.Elif(back == b_rdiv), m.If(rdiv.done):
            m.d.sync += [qi.eq(0), q_lane.eq(0), q_row.eq(0), back.eq(b_quant)]
        with m.Elif(back == b_quant):
            m.d.comb += q_issue.eq(qi != n)
            with m.If(qc_v & qc_last):
                m.d.sync += back.eq(b_waitc)
        with m.Elif(back == b_waitc), m.If(c_valid & self.go):
            m.d.sync += [grp.eq(0), col.eq(0), rstep.eq(0), row_base.eq(0),
                         issued_all.eq(0), rows_out.eq(0), back.eq(b_proj)]
        with m.Else():
            m.d.comb += proj_active.eq(1)
            with m.If(out_xfer & (rows_out == f - 1)):
                m.d.sync += back.eq(b_idle)
        m.d.comb += p_free.eq((back == b_idle) | (back == b_waitc) | (back == b_proj))
        return m


def _saturate(v, v_bits: int, bits: int):
    """``SAT(v, bits)`` of a signed ``v_bits``-bit value (no logic when it always fits)."""
    if bits >= v_bits:
        return v
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return Mux(v > hi, hi, Mux(v < lo, lo, v))


def _rhu_const(v, s: int):
    """``RHU(v, s)`` for a constant shift ``s >= 0``."""
    return v if s == 0 else (v + (1 << (s - 1))) >> s


# -- GLU -------------------------------------------------------------------------------------


class Glu(wiring.Component):
    """``h_j = SAT(RHU(SiLU(gate_j) * up_j, glu_shift), h_bits)`` with the piecewise-linear SiLU
    of the specification.

    Members
    -------
    i_stream : In(stream.Signature(signed(act_bits)))
        Alternating ``gate_j``, ``up_j`` beats (the first layer's projection order).
    o_stream : Out(stream.Signature(signed(h_bits)))
        One ``h_j`` per pair.
    empty : Out(1)
        No pair is partly or wholly inside.

    A gate beat is always accepted: its table row ``(N[k], N[k+1] - N[k])`` is read and its
    magnitude split into ``k`` and ``fr``. The up beat is accepted when the pipeline moves (its
    output register is free or being read); the table row, the interpolation product, SiLU and
    the GLU product are registered in turn and the output register rounds and saturates:
    ``h_j`` is valid seven cycles after ``up_j`` is accepted (each multiplier takes two).
    """

    def __init__(self, cfg: MlpConfig):
        self.cfg = cfg
        table = silu_table(cfg)
        self.n_values = list(table[:-1])
        self.d_values = [table[i + 1] - table[i] for i in range(len(table) - 1)]
        self.n_bits = _signed_width(self.n_values)
        self.d_bits = _signed_width(self.d_values)
        super().__init__({
            "i_stream": In(stream.Signature(signed(cfg.act_bits))),
            "o_stream": Out(stream.Signature(signed(cfg.h_bits))),
            "empty": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        fa, fl, fb = cfg.act_frac_bits, cfg.silu_frac_bits, cfg.silu_interp_bits
        ab, nb, db = cfg.act_bits, self.n_bits, self.d_bits
        rows = [(nv & ((1 << nb) - 1)) | ((dv & ((1 << db) - 1)) << nb)
                for nv, dv in zip(self.n_values, self.d_values, strict=True)]
        table = Memory(shape=nb + db, depth=max(len(rows), 2), init=rows)
        m.submodules.silu_table = table
        rd = table.read_port()

        # One pipeline enable: every stage after the up beat moves while the output register is
        # free or being read.
        phase = Signal()  # 0: the next beat is a gate, 1: an up
        adv = Signal()
        out_v = Signal()
        m.d.comb += [adv.eq(~out_v | self.o_stream.ready),
                     self.i_stream.ready.eq(~phase | adv)]
        take = Signal()
        m.d.comb += take.eq(self.i_stream.valid & self.i_stream.ready)
        with m.If(take):
            m.d.sync += phase.eq(~phase)

        # Gate beat: read the table row of k = |gate| >> fb, keep fr, the sign and the range.
        gate = self.i_stream.payload
        neg = Signal()
        mag = Signal(ab)
        m.d.comb += [neg.eq(gate < 0), mag.eq(Mux(neg, -gate, gate))]
        limit = 1 << (cfg.silu_range_log2 + fa)
        inside = Signal()
        m.d.comb += inside.eq(mag < limit if limit <= (1 << (ab - 1)) else 1)
        m.d.comb += [rd.addr.eq((mag >> fb)[:cfg.silu_range_log2 + cfg.silu_seg_frac_bits]),
                     rd.en.eq(take & ~phase)]
        fr_g = Signal(max(fb, 1), reset_less=True)
        neg_g = Signal(reset_less=True)
        in_g = Signal(reset_less=True)
        gate_g = Signal(signed(ab), reset_less=True)
        with m.If(take & ~phase):
            m.d.sync += [fr_g.eq(mag[:fb]), neg_g.eq(neg), in_g.eq(inside), gate_g.eq(gate)]

        # Up beat, then four stages: (a) the table row, (b) the interpolation product, (c) SiLU,
        # (d) the GLU product; the output register rounds and saturates.
        def stage(name, shape):
            return Signal(shape, name=name, reset_less=True)

        va, vb, vc, vd = (Signal(name=f"v_{s}") for s in "abcd")
        n_a, d_a = stage("n_a", signed(nb)), stage("d_a", signed(db))
        fr_a, neg_a, in_a = stage("fr_a", max(fb, 1)), stage("neg_a", 1), stage("in_a", 1)
        gate_a, up_a = stage("gate_a", signed(ab)), stage("up_a", signed(ab))
        with m.If(adv):
            m.d.sync += va.eq(take & phase)
            with m.If(take & phase):
                m.d.sync += [n_a.eq(rd.data[:nb]), d_a.eq(rd.data[nb:]), fr_a.eq(fr_g),
                             neg_a.eq(neg_g), in_a.eq(in_g), gate_a.eq(gate_g),
                             up_a.eq(gate)]

        # (b) the interpolation product, one stage inside the multiplier and one register.
        vm = Signal(name="v_m")
        n_m, neg_m, in_m = stage("n_m", signed(nb)), stage("neg_m", 1), stage("in_m", 1)
        gate_m, up_m = stage("gate_m", signed(ab)), stage("up_m", signed(ab))
        with m.If(adv):
            m.d.sync += [vm.eq(va), n_m.eq(n_a), neg_m.eq(neg_a), in_m.eq(in_a),
                         gate_m.eq(gate_a), up_m.eq(up_a)]
        ip_b = stage("ip_b", signed(db + fb))
        n_b, neg_b, in_b = stage("n_b", signed(nb)), stage("neg_b", 1), stage("in_b", 1)
        gate_b, up_b = stage("gate_b", signed(ab)), stage("up_b", signed(ab))
        if fb > 0:
            silu_mul = Multiplier(signed(db), unsigned(fb))
            m.submodules.silu_mul = silu_mul
            m.d.comb += [silu_mul.a.eq(d_a), silu_mul.b.eq(fr_a), silu_mul.en.eq(adv)]
            ip = silu_mul.p
        else:
            ip = 0
        with m.If(adv):
            m.d.sync += [vb.eq(vm), ip_b.eq(ip), n_b.eq(n_m), neg_b.eq(neg_m), in_b.eq(in_m),
                         gate_b.eq(gate_m), up_b.eq(up_m)]

        # (c) SiLU.
        sl_c = stage("sl_c", signed(cfg.silu_out_bits))
        up_c = stage("up_c", signed(ab))
        nv = Mux(in_b, n_b + _rhu_const(ip_b, fb), 0)
        with m.If(adv):
            m.d.sync += [vc.eq(vb), sl_c.eq(Mux(neg_b, nv, (gate_b << (fl - fa)) + nv)),
                         up_c.eq(up_b)]

        # (d) the GLU product, one stage inside the multiplier and one register.
        glu_mul = Multiplier(signed(cfg.silu_out_bits), signed(ab))
        m.submodules.glu_mul = glu_mul
        m.d.comb += [glu_mul.a.eq(sl_c), glu_mul.b.eq(up_c), glu_mul.en.eq(adv)]
        vg = Signal(name="v_g")
        prod_d = stage("prod_d", signed(cfg.glu_product_bits))
        with m.If(adv):
            m.d.sync += [vg.eq(vc), vd.eq(vg), prod_d.eq(glu_mul.p)]

        prod_bits = cfg.glu_product_bits - cfg.glu_shift + 1
        h_c = Signal(signed(prod_bits))
        m.d.comb += h_c.eq(_rhu_const(prod_d, cfg.glu_shift))
        out_r = stage("out_r", signed(cfg.h_bits))
        with m.If(adv):
            m.d.sync += [out_v.eq(vd), out_r.eq(_saturate(h_c, prod_bits, cfg.h_bits))]
        m.d.comb += [self.o_stream.valid.eq(out_v), self.o_stream.payload.eq(out_r),
                     self.empty.eq(~phase & ~va & ~vm & ~vb & ~vc & ~vg & ~vd & ~out_v)]
        return m


# -- stream width adapters -------------------------------------------------------------------


class Deserializer(wiring.Component):
    """Beats of ``lanes`` elements (field ``x``) in, one element per beat out, lane 0 first.
    A new input beat is accepted while the last element of the previous one leaves."""

    def __init__(self, in_layout: data.StructLayout, elem_shape, lanes: int):
        self.lanes = lanes
        super().__init__({
            "i_stream": In(stream.Signature(in_layout)),
            "o_stream": Out(stream.Signature(elem_shape)),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        buf = Signal.like(self.i_stream.payload, reset_less=True)
        full = Signal()
        idx = Signal(_upto(self.lanes))
        at_last = Signal()
        m.d.comb += [
            at_last.eq(idx == self.lanes - 1),
            self.o_stream.valid.eq(full),
            self.i_stream.ready.eq(~full | (self.o_stream.ready & at_last)),
        ]
        for i in range(self.lanes):
            with m.If(idx == i):
                m.d.comb += self.o_stream.payload.eq(buf.x[i])
        with m.If(self.o_stream.valid & self.o_stream.ready):
            with m.If(at_last):
                m.d.sync += [full.eq(0), idx.eq(0)]
            with m.Else():
                m.d.sync += idx.eq(idx + 1)
        with m.If(self.i_stream.valid & self.i_stream.ready):
            m.d.sync += [buf.eq(self.i_stream.payload), full.eq(1), idx.eq(0)]
        return m


class Serializer(wiring.Component):
    """One element per beat in, beats of ``lanes`` elements (field ``y``) out, with ``last`` on
    every ``beats_per_token``-th beat. The lanes before the last are collected in registers;
    the last lane is accepted while the previous output beat leaves."""

    def __init__(self, elem_shape, out_layout: data.StructLayout, lanes: int,
                 beats_per_token: int):
        self.elem_shape = elem_shape
        self.lanes = lanes
        self.beats_per_token = beats_per_token
        super().__init__({
            "i_stream": In(stream.Signature(elem_shape)),
            "o_stream": Out(stream.Signature(out_layout)),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        lanes, bpt = self.lanes, self.beats_per_token
        held = [Signal(self.elem_shape, name=f"held{i}", reset_less=True)
                for i in range(lanes - 1)]
        obuf = Signal.like(self.o_stream.payload, reset_less=True)
        ov = Signal()
        idx = Signal(_upto(lanes))
        beat = Signal(_upto(bpt))
        at_last = Signal()
        m.d.comb += [
            at_last.eq(idx == lanes - 1),
            self.i_stream.ready.eq(~at_last | ~ov | self.o_stream.ready),
            self.o_stream.valid.eq(ov),
            self.o_stream.payload.eq(obuf),
        ]
        with m.If(self.o_stream.valid & self.o_stream.ready):
            m.d.sync += ov.eq(0)
        with m.If(self.i_stream.valid & self.i_stream.ready):
            with m.If(at_last):
                m.d.sync += [obuf.y.eq(Cat(*held, self.i_stream.payload)),
                             obuf.last.eq(beat == bpt - 1), ov.eq(1), idx.eq(0),
                             beat.eq(Mux(beat == bpt - 1, 0, beat + 1))]
            with m.Else():
                for i in range(lanes - 1):
                    with m.If(idx == i):
                        m.d.sync += held[i].eq(self.i_stream.payload)
                m.d.sync += idx.eq(idx + 1)
        return m


# -- the block -------------------------------------------------------------------------------


class Mlp(wiring.Component):
    """The ternary GLU MLP block (see the module docstring for streams, structure and timing).

    Parameters
    ----------
    config : MlpConfig
    weights : mapping or MlpWeights
        W.npz as loaded (latent float ``w_gate_up``, ``w_down``, ``g_gate_up``, ``g_down``),
        quantized once here with :func:`hadware.golden.mlp.quantize_weights`, or already
        quantized :class:`~hadware.golden.mlp.MlpWeights` of the same configuration.

    Attributes
    ----------
    latency : int
        :func:`mlp_latency` (cycles, first input beat to last output beat of a token).
    interval : int
        :func:`mlp_interval` (cycles between tokens at full rate).
    latency_formula : str
    weights : MlpWeights

    Raises
    ------
    TypeError
        If ``config`` is not an :class:`MlpConfig` or ``weights`` not a mapping/MlpWeights.
    ValueError
        If ``weights`` are MlpWeights of another configuration.
    hadware.errors.InputError
        For weight arrays that :func:`~hadware.golden.mlp.quantize_weights` refuses (naming the
        array: missing, wrong shape, non-finite, a gain outside its format, a beta too large).
    """

    def __init__(self, config: MlpConfig, weights: Mapping[str, Any] | MlpWeights):
        if not isinstance(config, MlpConfig):
            self._MustUse__silence = True  # never elaborated: no "unused" warning
            raise TypeError(f"config must be an MlpConfig, not {config!r}")
        try:
            self.weights = _weights(config, weights)
        except Exception:
            self._MustUse__silence = True
            raise
        self.config = config
        self.latency = mlp_latency(config)
        self.interval = mlp_interval(config)
        self.latency_formula = (f"{LATENCY_FORMULA}; here latency {self.latency}, interval "
                                f"{self.interval} cycles")
        self.in_layout, self.out_layout = self.layouts(config)
        super().__init__({
            "i_stream": In(stream.Signature(self.in_layout)),
            "o_stream": Out(stream.Signature(self.out_layout)),
        })

    @staticmethod
    def layouts(cfg: MlpConfig) -> tuple[data.StructLayout, data.StructLayout]:
        """Input and output payload layouts (for testbenches, without building the block)."""
        return (
            data.StructLayout({"x": data.ArrayLayout(signed(cfg.x_bits), cfg.lanes)}),
            data.StructLayout({"y": data.ArrayLayout(signed(cfg.y_bits), cfg.lanes),
                               "last": 1}),
        )

    def rom_images(self) -> dict[str, list[int]]:
        """:func:`rom_images` of this block's weights."""
        return rom_images(self.config, self.weights)

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg, w = self.config, self.weights
        lanes = cfg.lanes
        m.submodules.deser = deser = Deserializer(self.in_layout, signed(cfg.x_bits), lanes)
        m.submodules.gate_up = gate_up = BitLinear(cfg.gate_up, w.gate_up, lanes,
                                                   interleave=True)
        m.submodules.glu = glu = Glu(cfg)
        m.submodules.down = down = BitLinear(cfg.down, w.down, lanes)
        m.submodules.ser = ser = Serializer(signed(cfg.y_bits), self.out_layout, lanes,
                                            cfg.d_model // lanes)
        wiring.connect(m, wiring.flipped(self.i_stream), deser.i_stream)
        wiring.connect(m, deser.o_stream, gate_up.i_stream)
        wiring.connect(m, gate_up.o_stream, glu.i_stream)
        wiring.connect(m, glu.o_stream, down.i_stream)
        wiring.connect(m, down.o_stream, ser.i_stream)
        wiring.connect(m, ser.o_stream, wiring.flipped(self.o_stream))
        # The first layer projects a token only when all of it can flow into the second.
        m.d.comb += [gate_up.go.eq(down.idle & glu.empty), down.go.eq(1)]
        return m
