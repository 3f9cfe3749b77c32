r"""Ternary MatMul-free GLU MLP block: ``y = BitLinear_dn(SiLU(gate) * up)``, one token at a time.

Arithmetic
----------
Exactly :mod:`hadware.golden.mlp` (its module docstring is the specification): both BitLinear
layers follow steps L1-L9 (gain products, exact sum of squares, absmax, normalization, one
reciprocal per token, sign-magnitude int8 quantization, ternary sums, per-token output scale from
an integer square root and a second division), then the piecewise-linear SiLU from the imported
table and the GLU product. Constants computed once from the weights (ternary codes, fixed-point
gains, ``Kc``, ``SH0``, the SiLU table) are ROM and parameter contents, taken from
:func:`hadware.spec.mlp.quantize_weights`; every per-token operation is done here.

Streams
-------
* ``i_stream`` (in): ``{x: ArrayLayout(signed(x_bits), lanes), x_exp: signed(x_exp_bits)}``
  (no ``x_exp`` when ``x_exp_bits = 0``); a token is ``d_model / lanes`` beats, element
  ``b*lanes + l`` in beat ``b``, lane ``l``: the mantissas ``X`` and the token's exponent
  ``xe`` of step 0 (:func:`hadware.spec.quant.block_fixed_point`). The exponent is read from
  the token's first beat (the testbench repeats it on every beat). Token boundaries are
  implicit (beat count).
* ``o_stream`` (out): ``{y: ArrayLayout(signed(y_bits), lanes), last}``; ``d_model / lanes``
  beats per token in the same order, ``last`` set on the final beat of each token;
  ``y = Y / 2**y_frac_bits``.
* ``sat_events`` (out, 0 to 3 per cycle): elements whose value a saturation changed, counted
  as they leave the first BitLinear (gate/up), the GLU (``h``) and the second BitLinear
  (``Y``, before the output serializer).

So ``lanes`` is the number of elements per beat of both streams and the number of ternary
weights per cycle of each projection; inside, gate/up and ``h`` move one element per cycle.

Structure
---------
``deser`` (beats to elements) -> ``gate_up`` (:class:`~hadware.hw.bitlinear.BitLinear`,
``d_model -> 2*d_hidden``, rows in the order gate 0, up 0, gate 1, up 1, ...) -> ``glu``
(:class:`~hadware.hw.glu.Glu`) -> ``down`` (:class:`~hadware.hw.bitlinear.BitLinear`,
``d_hidden -> d_model``) -> ``ser`` (elements to beats). Each BitLinear is a sequencer over five
stage submodules (``stats``, ``norm``, ``quant``, ``feed`` + ``projection``, ``out_scale``;
:mod:`hadware.hw.bitlinear`). Element-wise steps run one element per cycle through shared
units; the ternary projection
(:class:`~hadware.hw.ternary_projection.TernaryProjection`, a submodule of each BitLinear) takes
``lanes`` weights per cycle. Each BitLinear has a *front* (loading a token: gains, squares,
absmax, into a product buffer) and a *back* (normalization, quantization into an activation
buffer, projection); the front loads the next token while the back projects. The first layer
starts projecting a token only when the second layer's front and the GLU are empty, so the
whole token then flows without internal stalls.

Storage per layer: ternary codes in ROM (``codes``: 32-bit words of packing layout v1, exactly
:func:`hadware.spec.ternary.pack` of the codes; :func:`rom_images`), gains in ROM
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
``Kc * V``. Every multiplier registers its 18 x 18-sized partial products
(:class:`~hadware.hw.arith.Multiplier`), so a product takes two register stages. The two
divisions and the square root per layer are sequential (restoring, one result bit per cycle:
``recip_frac_bits + 8``, ``mant_bits`` and ``mant_bits + 1`` cycles).

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

from collections.abc import Mapping
from typing import Any

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hadware.config.mlp import MlpConfig
from hadware.hw.arith import upto
from hadware.hw.bitlinear import BitLinear, element_shape
from hadware.hw.glu import Glu
from hadware.spec.mlp import MlpWeights, as_weights

__all__ = [
    "Deserializer",
    "Mlp",
    "Serializer",
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


# -- timing ----------------------------------------------------------------------------------


def norm_to_project_cycles(cfg: MlpConfig, fan_in: int) -> int:
    """``X(n) = max(K + n + 17, 2W + 7)``: cycles of a layer from normalization to projection."""
    return max(cfg.recip_frac_bits + fan_in + 17, 2 * cfg.mant_bits + 7)


def mlp_latency(cfg: MlpConfig) -> int:
    """Cycles from a token's first input transfer to its last output beat being valid, without
    stalls (module docstring)."""
    d = ceil_log2(cfg.lanes)
    return (3 * cfg.d_model * cfg.d_hidden // cfg.lanes + cfg.d_model
            + norm_to_project_cycles(cfg, cfg.d_model)
            + norm_to_project_cycles(cfg, cfg.d_hidden) + 2 * d + 34)


def mlp_interval(cfg: MlpConfig) -> int:
    """Cycles between the last output beats of consecutive tokens when inputs are always
    available and outputs always ready (module docstring)."""
    k, w = cfg.recip_frac_bits, cfg.mant_bits
    return (2 * cfg.d_model * cfg.d_hidden // cfg.lanes + ceil_log2(cfg.lanes)
            + max(k + cfg.d_model + 26, 2 * w + 16, k + cfg.d_hidden + 38))


def _weights(cfg: MlpConfig, weights: Mapping[str, Any] | MlpWeights) -> MlpWeights:
    if isinstance(weights, MlpWeights) and weights.cfg != cfg:
        raise ValueError("weights were quantized for a different configuration")
    if not isinstance(weights, Mapping | MlpWeights):
        raise TypeError(f"weights must be a mapping of arrays (W.npz) or MlpWeights, not "
                        f"{type(weights).__name__}")
    return as_weights(cfg, weights)  # exported codes are loaded, never quantized again


def rom_images(cfg: MlpConfig, weights: Mapping[str, Any] | MlpWeights) -> dict[str, list[int]]:
    """The ternary-code ROM words of both layers, ``{"gate_up": [...], "down": [...]}``: the
    contents of the ``codes`` memories of the submodules of the same name, packing layout v1
    (32-bit words). ``weights`` is W.npz (latent floats, quantized once here) or
    :class:`~hadware.spec.mlp.MlpWeights`."""
    w = _weights(cfg, weights)
    return {p.name: [int(v) for v in w.rom_words(p.name)] for p in (w.gate_up, w.down)}


# -- stream width adapters -------------------------------------------------------------------


class Deserializer(wiring.Component):
    """Beats of ``lanes`` elements (field ``x``) in, one element per beat out, lane 0 first.
    A new input beat is accepted while the last element of the previous one leaves. With an
    ``elem_shape`` of fields ``{x, exp}``, every element carries its beat's ``x_exp``."""

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
        idx = Signal(upto(self.lanes))
        at_last = Signal()
        m.d.comb += [
            at_last.eq(idx == self.lanes - 1),
            self.o_stream.valid.eq(full),
            self.i_stream.ready.eq(~full | (self.o_stream.ready & at_last)),
        ]
        with_exp = isinstance(self.o_stream.payload.shape(), data.StructLayout)
        out = self.o_stream.payload.x if with_exp else self.o_stream.payload
        if with_exp:
            m.d.comb += self.o_stream.payload.exp.eq(buf.x_exp)
        for i in range(self.lanes):
            with m.If(idx == i):
                m.d.comb += out.eq(buf.x[i])
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
        idx = Signal(upto(lanes))
        beat = Signal(upto(bpt))
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
        quantized once here with :func:`hadware.spec.mlp.quantize_weights`, or already
        quantized :class:`~hadware.spec.mlp.MlpWeights` of the same configuration.

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
        For weight arrays that :func:`~hadware.spec.mlp.quantize_weights` refuses (naming the
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
            "sat_events": Out(range(4)),
        })

    @staticmethod
    def layouts(cfg: MlpConfig) -> tuple[data.StructLayout, data.StructLayout]:
        """Input and output payload layouts (for testbenches, without building the block)."""
        fields = {"x": data.ArrayLayout(signed(cfg.x_bits), cfg.lanes)}
        if cfg.x_exp_bits:
            fields["x_exp"] = signed(cfg.x_exp_bits)
        return (
            data.StructLayout(fields),
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
        m.submodules.deser = deser = Deserializer(self.in_layout, element_shape(cfg.gate_up),
                                                  lanes)
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
        # Saturations, counted as their elements leave each stage.
        m.d.comb += self.sat_events.eq(
            (gate_up.o_stream.valid & gate_up.o_stream.ready & gate_up.o_sat)
            + (glu.o_stream.valid & glu.o_stream.ready & glu.o_sat)
            + (down.o_stream.valid & down.o_stream.ready & down.o_sat))
        return m
