r"""One BitLinear layer of the MLP block (steps L1-L9 of :mod:`hadware.golden.mlp`), one token
at a time, as a sequencer over five stages, each a submodule:

=================  ========================================================================
``stats``          :class:`NormStats`, L1-L3: gain products ``P_i`` into the product buffer,
                   the absmax ``M`` and the sum of squares ``S`` (the layer's *front*).
``norm``           :class:`Normalizer`, L4, L5, L8: ``e``, ``tau``, the reciprocal ``R``, the
                   square root ``U``, the ratio ``V`` and the per-token scale ``C`` and shift.
``quant``          :class:`Quantizer`, L6: ``q_i`` into the activation buffer.
``feed``           :class:`ProjectionFeed`, L7: code ROM and activation addressing, ``lanes``
                   codes and activations per cycle into ``projection``
                   (:class:`~hadware.hw.ternary_projection.TernaryProjection`).
``out_scale``      :class:`OutputScale`, L9: ``acc_j * C``, rounding, saturation, ``o_stream``.
=================  ========================================================================

The stages are joined by combinational wires only (no register at a stage boundary), so the
timing of :class:`BitLinear` is that of its stages in sequence (its docstring). The memories
(code and gain ROMs, product and activation buffers) belong to :class:`BitLinear`; a stage
reaches a memory through a port member (``amaranth.lib.memory`` port signatures).
"""

from __future__ import annotations

import math

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hadware.config.mlp import BitLinearGeometry
from hadware.hw.arith import IntSqrt, Multiplier, bitlen, saturate, saturates, upto
from hadware.hw.divider import RestoringDivider
from hadware.hw.ternary_projection import projection_for
from hadware.spec.mlp import BitLinearParams
from hadware.spec.weights import weight_format

__all__ = ["BitLinear", "NormStats", "Normalizer", "OutputScale", "ProjectionFeed", "Quantizer",
           "element_shape"]


def element_shape(geom: BitLinearGeometry):
    """The payload of a layer's input element stream: ``signed(in_bits)``, or, for a layer
    whose input has a per-token exponent (``exp_bits > 0``), ``{x: signed(in_bits), exp:
    signed(exp_bits)}`` (``exp`` is read with the token's first element)."""
    if not geom.exp_bits:
        return signed(geom.in_bits)
    return data.StructLayout({"x": signed(geom.in_bits), "exp": signed(geom.exp_bits)})


def _log2_exact(n: int, what: str) -> int:
    if n < 1 or n & (n - 1):
        raise ValueError(f"{what} of the packing layout must be a power of two for this "
                         f"decoder, not {n!r}")
    return n.bit_length() - 1


def _read(depth: int, shape) -> In:
    """The member of a stage that reads a memory of ``depth`` rows (at least two) of ``shape``."""
    return In(ReadPort.Signature(addr_width=ceil_log2(max(depth, 2)), shape=shape))


def _write(depth: int, shape, granularity: int | None = None) -> In:
    """The member of a stage that writes a memory of ``depth`` rows (at least two)."""
    return In(WritePort.Signature(addr_width=ceil_log2(max(depth, 2)), shape=shape,
                                  granularity=granularity))


# -- L1-L3: the front ------------------------------------------------------------------------


class NormStats(wiring.Component):
    """Steps L1-L3, one input element per cycle: ``P_i = X_i * G_i`` (written as ``|P_i|`` and
    its sign into the product buffer), ``M = max |P_i|`` and ``S = sum X_i**2 + E(xe)``.

    Members
    -------
    i_stream : In(stream.Signature(element_shape(geom)))
        ``fan_in`` elements per token; ready while loading (state LOAD). With an input
        exponent, the first element's ``exp`` selects ``E(xe)`` from the epsilon table
        (:attr:`~hadware.config.mlp.BitLinearGeometry.eps_table`, a constant multiplexer).
    gain_rd : gain ROM read port; p_wr : product buffer write port.
    big_m, big_s : Out
        ``M`` and ``S`` of the loaded token, held until ``release``.
    full : Out(1)
        A token is loaded (``M``, ``S`` final, every ``P_i`` written).
    take : In(1)
        The back takes the full token (it then reads the buffer, ``M`` and ``S``).
    release : In(1)
        The back no longer reads them: loading the next token may start.
    idle : Out(1)
        Waiting for the first element of a token.

    The last element taken at cycle ``a`` is in ``M``, ``S`` (and ``full`` rises) at ``a + 5``:
    a register, the gain ROM read register, the multipliers' two stages, the accumulators.
    """

    def __init__(self, geom: BitLinearGeometry):
        self.geom = geom
        n = geom.fan_in
        super().__init__({
            "i_stream": In(stream.Signature(element_shape(geom))),
            "gain_rd": _read(n, signed(geom.gain_bits)),
            "p_wr": _write(n, geom.absmax_bits + 1),
            "big_m": Out(geom.absmax_bits),
            "big_s": Out(geom.sumsq_bits),
            "full": Out(1),
            "take": In(1),
            "release": In(1),
            "idle": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        g = self.geom
        n, bi, ab = g.fan_in, g.in_bits, g.absmax_bits
        m.submodules.gain_mul = gain_mul = Multiplier(signed(bi), signed(g.gain_bits))
        m.submodules.square_mul = square_mul = Multiplier(signed(bi), signed(bi))

        cnt = Signal(range(n + 1))
        take = Signal()
        m.d.comb += [take.eq(self.i_stream.valid & self.i_stream.ready),
                     self.gain_rd.addr.eq(cnt)]
        v1, first1, last1 = Signal(), Signal(), Signal()
        idx1 = Signal(upto(n), reset_less=True)
        x1 = Signal(signed(bi), reset_less=True)
        payload = self.i_stream.payload
        m.d.sync += v1.eq(take)
        with m.If(take):
            m.d.sync += [x1.eq(payload.x if g.exp_bits else payload), idx1.eq(cnt),
                         first1.eq(cnt == 0), last1.eq(cnt == n - 1)]
        # E(xe), taken with the token's first element and held until S starts (first2): the
        # next token's first element comes only after this token is released.
        table = g.eps_table
        eps = Signal(max(1, max(table).bit_length()), reset_less=True)
        if len(table) == 1:
            m.d.comb += eps.eq(table[0])
        else:
            rom = Array(Const(v, eps.shape()) for v in table)
            msb = g.exp_bits - 1  # xe - exp_min is xe with its sign bit inverted
            with m.If(take & (cnt == 0)):
                m.d.sync += eps.eq(rom[Cat(payload.exp[:msb], ~payload.exp[msb])])
        # x and its gain registered (the gain comes from a ROM read), then the multipliers
        # register their partial products, then p2 and sq2.
        vg, firstg, lastg = Signal(), Signal(), Signal()
        idxg = Signal(upto(n), reset_less=True)
        xg = Signal(signed(bi), reset_less=True)
        gg = Signal(signed(g.gain_bits), reset_less=True)
        m.d.sync += [vg.eq(v1), firstg.eq(first1), lastg.eq(last1), idxg.eq(idx1), xg.eq(x1),
                     gg.eq(self.gain_rd.data)]
        m.d.comb += [gain_mul.a.eq(xg), gain_mul.b.eq(gg), square_mul.a.eq(xg),
                     square_mul.b.eq(xg)]
        vm, firstm, lastm = Signal(), Signal(), Signal()
        idxm = Signal(upto(n), reset_less=True)
        m.d.sync += [vm.eq(vg), firstm.eq(firstg), lastm.eq(lastg), idxm.eq(idxg)]
        v2, first2, last2 = Signal(), Signal(), Signal()
        idx2 = Signal(upto(n), reset_less=True)
        p2 = Signal(signed(g.product_bits), reset_less=True)
        sq2 = Signal(2 * bi - 1, reset_less=True)  # X**2 <= 2**(2*bi - 2)
        m.d.sync += [v2.eq(vm), first2.eq(firstm), last2.eq(lastm), idx2.eq(idxm),
                     p2.eq(gain_mul.p), sq2.eq(square_mul.p)]
        neg2 = Signal()
        abs2 = Signal(ab)
        m.d.comb += [neg2.eq(p2 < 0), abs2.eq(Mux(neg2, -p2, p2))]
        m.d.comb += [self.p_wr.addr.eq(idx2), self.p_wr.data.eq(Cat(abs2, neg2)),
                     self.p_wr.en.eq(v2)]
        m_prev = Mux(first2, 0, self.big_m)
        with m.If(v2):
            m.d.sync += [
                self.big_m.eq(Mux(abs2 > m_prev, abs2, m_prev)),
                self.big_s.eq(Mux(first2, eps, self.big_s) + sq2),
            ]

        # LOAD (taking elements) -> DRAIN (pipeline) -> FULL (token ready for the back)
        # -> WAIT (the back reads pbuf, M, S) -> LOAD.
        front = Signal(range(4))
        f_load, f_drain, f_full, f_wait = range(4)
        m.d.comb += [self.full.eq(front == f_full),
                     self.i_stream.ready.eq(front == f_load),
                     self.idle.eq((front == f_load) & (cnt == 0))]
        with m.If(front == f_load), m.If(take):
            m.d.sync += cnt.eq(cnt + 1)
            with m.If(cnt == n - 1):
                m.d.sync += front.eq(f_drain)
        with m.Elif(front == f_drain), m.If(v2 & last2):
            m.d.sync += front.eq(f_full)
        with m.Elif(front == f_full), m.If(self.take):
            m.d.sync += front.eq(f_wait)
        with m.Elif(self.release):
            m.d.sync += [cnt.eq(0), front.eq(f_load)]
        return m


# -- L4, L5, L8: per-token scalars -----------------------------------------------------------


class Normalizer(wiring.Component):
    """Steps L4, L5 and L8, once per token: the exponents ``e = bitlen(M)`` and
    ``tau = ceil(bitlen(S) / 2)``, the reciprocal ``R = (127 * 2**(W+K)) // M_n``, the square
    root ``U``, ``V = (M_n * 2**W) // U``, the scale ``C = (Kc * V) >> cs`` and the shift ``sh``
    (clamped to ``scale_product_bits``, held as ``sh - 1``).

    Members
    -------
    big_m, big_s : In
        ``M`` and ``S`` of the token (held by :class:`NormStats`).
    load : In(1)
        Register ``e`` and ``tau`` (and clear ``scale_valid``).
    start : In(1)
        One cycle after ``load``: register ``M_n`` and ``sh - 1``, start the reciprocal and the
        square root (then ``V`` and ``Kc * V`` follow by themselves).
    m_shift : Out(range(absmax_bits))
        ``e - 1``: ``SHL(v, W - e) = (v << (W - 1)) >> m_shift`` (for the quantizer).
    recip, recip_done : Out
        ``R``, valid from ``recip_done`` (one cycle, ``recip_frac_bits + 9`` cycles after
        ``start``) until the next ``start``.
    scale, scale_valid : Out
        ``C``, valid while ``scale_valid`` is high (``2 W + 5`` cycles after ``start``, until
        the next ``load``).
    sh_m1 : Out(range(scale_product_bits))
        ``min(sh, scale_product_bits) - 1``, from the cycle after ``start``.
    """

    def __init__(self, geom: BitLinearGeometry, params: BitLinearParams):
        self.geom = geom
        self.kappa_mant = params.kappa_mant
        self.shift0 = params.shift0
        super().__init__({
            "big_m": In(geom.absmax_bits),
            "big_s": In(geom.sumsq_bits),
            "load": In(1),
            "start": In(1),
            "m_shift": Out(range(geom.absmax_bits)),
            "recip": Out(geom.recip_bits),
            "recip_done": Out(1),
            "scale": Out(geom.scale_bits),
            "scale_valid": Out(1),
            "sh_m1": Out(range(geom.scale_product_bits)),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        g = self.geom
        w, ab, spb = g.mant_bits, g.absmax_bits, g.scale_product_bits
        m.submodules.kappa_mul = kappa_mul = Multiplier(unsigned(g.kappa_bits), unsigned(w + 1))
        m.submodules.rdiv = rdiv = RestoringDivider(w, g.recip_bits)
        m.submodules.vdiv = vdiv = RestoringDivider(w, w + 1)
        m.submodules.isqrt = sqrt = IntSqrt(w)

        e_c = Signal(range(ab + 1))            # bitlen(M)
        bl_s = Signal(range(g.sumsq_bits + 1))  # bitlen(S)
        m.d.comb += [e_c.eq(bitlen(self.big_m)), bl_s.eq(bitlen(self.big_s))]
        e_r = Signal(range(ab + 1))
        tau_r = Signal(range(g.tau_max + 1))
        # SHL(v, W - e) = (v << (W-1)) >> (e-1) and SHL(S, 2W - 2 tau) likewise. For e = 0
        # (M = 0) or tau = 0 (S = 0) the shift wraps; the value shifted is then 0 anyway.
        s_shift = Signal(range(2 * g.tau_max))
        m.d.comb += [self.m_shift.eq(e_r - 1), s_shift.eq(2 * tau_r - 2)]
        mn_c = Signal(w)
        sn_c = Signal(2 * w)
        m.d.comb += [mn_c.eq(((self.big_m << (w - 1)) >> self.m_shift)[:w]),
                     sn_c.eq(((self.big_s << (2 * w - 2)) >> s_shift)[:2 * w])]
        mn_r = Signal(w)
        sh_lo = self.shift0 - ab
        sh_hi = self.shift0 + g.tau_max
        sh_full = Signal(signed(max(abs(sh_lo), abs(sh_hi)).bit_length() + 1))
        m.d.comb += sh_full.eq(self.shift0 + tau_r - e_r)
        m.d.comb += [
            rdiv.start.eq(self.start),
            rdiv.rem0.eq(127 << (w - 8)),      # 127 * 2**(W+K) = rem0 * 2**(K+8)
            rdiv.low.eq(0),
            rdiv.divisor.eq(mn_c),
            self.recip.eq(rdiv.quotient),
            self.recip_done.eq(rdiv.done),
            sqrt.start.eq(self.start),
            sqrt.value.eq(sn_c),
            vdiv.start.eq(sqrt.done),          # M_n * 2**W = (M_n >> 1) * 2**(W+1) + M_n[0] 2**W
            vdiv.rem0.eq(mn_r >> 1),
            vdiv.low.eq(Cat(Const(0, w), mn_r[0])),
            vdiv.divisor.eq(sqrt.root),
            kappa_mul.a.eq(self.kappa_mant),
            kappa_mul.b.eq(vdiv.quotient),
        ]
        kappa_done = Signal()  # Kc * V is out of the multiplier one cycle after vdiv.done
        m.d.sync += kappa_done.eq(vdiv.done)
        with m.If(kappa_done):
            m.d.sync += [self.scale.eq(kappa_mul.p >> g.scale_shift), self.scale_valid.eq(1)]
        with m.If(self.load):
            m.d.sync += [e_r.eq(e_c), tau_r.eq((bl_s + 1) >> 1), self.scale_valid.eq(0)]
        with m.If(self.start):
            m.d.sync += [mn_r.eq(mn_c),
                         self.sh_m1.eq(Mux(sh_full >= spb, spb - 1, sh_full - 1))]
        return m


# -- L6: the quantizer -----------------------------------------------------------------------


class Quantizer(wiring.Component):
    """Step L6, one element per cycle: ``A_i = SHL(|P_i|, W - e)`` from the product buffer,
    ``q_i = sign(P_i) * ((A_i * R + 2**(W+K-1)) >> (W+K))`` into lane ``i mod lanes`` of row
    ``i // lanes`` of the activation buffer.

    Members
    -------
    start : In(1)
        Reset the element counter (the token's first element next).
    run : In(1)
        Issue the next element (while any is left).
    done : Out(1)
        The last element is being written (5 cycles after it was issued).
    p_rd : product buffer read port; q_wr : activation buffer write port (byte lanes).
    m_shift, recip : In
        ``e - 1`` and ``R`` of the token (:class:`Normalizer`).
    """

    def __init__(self, geom: BitLinearGeometry, lanes: int):
        self.geom = geom
        self.lanes = lanes
        self.groups = geom.fan_in // lanes
        super().__init__({
            "start": In(1),
            "run": In(1),
            "done": Out(1),
            "p_rd": _read(geom.fan_in, geom.absmax_bits + 1),
            "q_wr": _write(self.groups, 8 * lanes, granularity=8),
            "m_shift": In(range(geom.absmax_bits)),
            "recip": In(geom.recip_bits),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        g, lanes, groups = self.geom, self.lanes, self.groups
        n, w, k, ab = g.fan_in, g.mant_bits, g.recip_frac_bits, g.absmax_bits
        m.submodules.quant_mul = quant_mul = Multiplier(unsigned(w), unsigned(g.recip_bits))

        def stage(name: str, data_shape=None) -> dict[str, Signal]:
            """The control registers of one pipeline stage (and its data register)."""
            regs = {"v": Signal(name=f"{name}_v"), "last": Signal(name=f"{name}_last"),
                    "lane": Signal(upto(lanes), name=f"{name}_lane", reset_less=True),
                    "row": Signal(upto(groups), name=f"{name}_row", reset_less=True)}
            if data_shape is not None:
                regs["data"] = Signal(data_shape, name=f"{name}_data", reset_less=True)
            return regs

        def follow(dst: dict[str, Signal], src: dict[str, Signal], **data) -> None:
            m.d.sync += [dst[key].eq(src[key]) for key in ("v", "last", "lane", "row")]
            m.d.sync += [dst[key].eq(value) for key, value in data.items()]

        issue = Signal()
        qi = Signal(range(n + 1))
        q_lane = Signal(upto(lanes))
        q_row = Signal(upto(groups))
        m.d.comb += [issue.eq(self.run & (qi != n)), self.p_rd.addr.eq(qi)]
        with m.If(issue):
            m.d.sync += qi.eq(qi + 1)
            with m.If(q_lane == lanes - 1):
                m.d.sync += [q_lane.eq(0), q_row.eq(q_row + 1)]
            with m.Else():
                m.d.sync += q_lane.eq(q_lane + 1)
        with m.If(self.start):
            m.d.sync += [qi.eq(0), q_lane.eq(0), q_row.eq(0)]
        # (a) the buffer read, (d) its data, (b) A_i, (m) and (c) the multiplier's two stages.
        qa, qd, qb = stage("qa"), stage("qd", ab + 1), stage("qb", w)
        qm, qc = stage("qm"), stage("qc", w + g.recip_bits)
        m.d.sync += [qa["v"].eq(issue), qa["last"].eq(qi == n - 1), qa["lane"].eq(q_lane),
                     qa["row"].eq(q_row)]
        follow(qd, qa, data=self.p_rd.data)
        a_c = Signal(w)  # A_i = SHL(|P_i|, W - e) <= M_n < 2**W
        m.d.comb += a_c.eq(((qd["data"][:ab] << (w - 1)) >> self.m_shift)[:w])
        qb_neg, qm_neg, qc_neg = (Signal(name=f"{s}_neg", reset_less=True)
                                  for s in ("qb", "qm", "qc"))
        follow(qb, qd, data=a_c)
        m.d.comb += [quant_mul.a.eq(qb["data"]), quant_mul.b.eq(self.recip)]
        follow(qm, qb)
        follow(qc, qm, data=quant_mul.p)
        m.d.sync += [qb_neg.eq(qd["data"][ab]), qm_neg.eq(qb_neg), qc_neg.eq(qm_neg)]
        mag = Signal(7)  # (A R + 2**(W+K-1)) >> (W+K) <= 127 because A <= M_n
        q_val = Signal(signed(8))
        m.d.comb += [mag.eq((qc["data"] + (1 << (w + k - 1))) >> (w + k)),
                     q_val.eq(Mux(qc_neg, -mag, mag))]
        m.d.comb += [self.q_wr.addr.eq(qc["row"]), self.q_wr.data.eq(Cat(*([q_val] * lanes))),
                     self.q_wr.en.eq(Mux(qc["v"], (Const(1, lanes) << qc["lane"])[:lanes], 0)),
                     self.done.eq(qc["v"] & qc["last"])]
        return m


# -- L7: feeding the projection --------------------------------------------------------------


class ProjectionFeed(wiring.Component):
    """Step L7, addressing: walks the rows (in projection order) and the ``fan_in / lanes``
    groups of each, reads the code ROM words and the activation row of each group, and presents
    ``lanes`` codes and activations to the projection two enabled cycles later.

    Members
    -------
    start : In(1)
        Reset to the first group of the first row.
    active : In(1)
        The back is projecting (groups are issued until the last row's last group).
    adv : In(1)
        The pipeline moves (every register here and in the projection loads only then).
    rom : code ROM read ports (``rom_ports`` consecutive words); q_rd : activation buffer.
    valid, first, last, codes, act : Out
        The projection's inputs (:class:`~hadware.hw.ternary_projection.TernaryProjection`).
    """

    def __init__(self, geom: BitLinearGeometry, lanes: int, words: int, rom_ports: int,
                 interleave: bool):
        self.geom = geom
        self.lanes = lanes
        self.groups = geom.fan_in // lanes
        self.words = words
        self.interleave = interleave
        self.layout = layout = weight_format(geom.weights).layout
        self._log2_cpw = _log2_exact(layout.codes_per_word, "codes_per_word")
        self._log2_cb = _log2_exact(layout.code_bits, "code_bits")
        super().__init__({
            "start": In(1),
            "active": In(1),
            "adv": In(1),
            "rom": _read(words, layout.word_bits).array(rom_ports),
            "q_rd": _read(self.groups, 8 * lanes),
            "valid": Out(1),
            "first": Out(1),
            "last": Out(1),
            "codes": Out(layout.code_bits * lanes),
            "act": Out(8 * lanes),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        g, lanes, groups = self.geom, self.lanes, self.groups
        n, f, nwords, adv = g.fan_in, g.fan_out, self.words, self.adv
        log2_cpw, log2_cb = self._log2_cpw, self._log2_cb
        cpw, cb = self.layout.codes_per_word, self.layout.code_bits
        wpr = self.layout.words_per_row(n)
        grp = Signal(upto(groups))
        col = Signal(range(max(n, cpw)))              # first column of the group
        rstep = Signal(upto(f))
        row_base = Signal(upto(nwords))               # first word of the current row
        issued_all = Signal()
        issue = Signal()
        m.d.comb += issue.eq(self.active & ~issued_all)
        word = Signal(range(nwords + len(self.rom)))
        m.d.comb += word.eq(row_base + (col >> log2_cpw))
        for i, rp in enumerate(self.rom):
            addr = Signal(range(nwords + len(self.rom)), name=f"rom_addr{i}")
            m.d.comb += addr.eq(word + i)
            m.d.comb += [rp.addr.eq(Mux(addr >= nwords, nwords - 1, addr)) if i else
                         rp.addr.eq(addr), rp.en.eq(adv)]
        m.d.comb += [self.q_rd.addr.eq(grp), self.q_rd.en.eq(adv)]
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
        with m.If(self.start):
            m.d.sync += [grp.eq(0), col.eq(0), rstep.eq(0), row_base.eq(0), issued_all.eq(0)]
        # The group's codes, shifted out of the ROM words, and its q, registered.
        window = Cat(*(rp.data for rp in self.rom))
        s2_v = Signal()
        s2_first, s2_last = Signal(reset_less=True), Signal(reset_less=True)
        s2_codes = Signal(cb * lanes, reset_less=True)
        s2_q = Signal(8 * lanes, reset_less=True)
        with m.If(adv):
            m.d.sync += [s2_v.eq(s1_v), s2_first.eq(s1_first), s2_last.eq(s1_last),
                         s2_codes.eq((window >> (s1_slot << log2_cb))[:cb * lanes]),
                         s2_q.eq(self.q_rd.data)]
        m.d.comb += [self.valid.eq(s2_v), self.first.eq(s2_first), self.last.eq(s2_last),
                     self.codes.eq(s2_codes), self.act.eq(s2_q)]
        return m


# -- L9: the output scale --------------------------------------------------------------------


class OutputScale(wiring.Component):
    """Step L9: ``OUT_j = SAT(RHU(acc_j * C, sh), out_bits)`` into ``o_stream``, four enabled
    cycles after ``acc_valid`` (the multiplier's two stages, the shift, the output register).

    Members
    -------
    acc, acc_valid : In
        The projection's row sums.
    scale, sh_m1 : In
        ``C`` and ``sh - 1`` of the token (:class:`Normalizer`).
    adv : Out(1)
        The pipeline moves: the output register is free or being read.
    start : In(1)
        Reset the output row counter (a token's first row next).
    last_out : Out(1)
        The token's last row is being transferred.
    o_stream : Out(stream.Signature(signed(out_bits)))
    o_sat : Out(1)
        With the beat on ``o_stream``: the saturation of L9 changed its value.
    o_neg : Out(1)
        With the beat on ``o_stream``: ``acc_j < 0`` (the product ``acc_j * C`` has the sign
        of ``acc_j``, ``C > 0``, and the arithmetic shift keeps it).
    """

    def __init__(self, geom: BitLinearGeometry):
        self.geom = geom
        super().__init__({
            "acc": In(signed(geom.acc_bits)),
            "acc_valid": In(1),
            "scale": In(geom.scale_bits),
            "sh_m1": In(range(geom.scale_product_bits)),
            "adv": Out(1),
            "start": In(1),
            "last_out": Out(1),
            "o_stream": Out(stream.Signature(signed(geom.out_bits))),
            "o_sat": Out(1),
            "o_neg": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        g = self.geom
        f, spb, adv = g.fan_out, g.scale_product_bits, self.adv
        m.submodules.scale_mul = scale_mul = Multiplier(signed(g.acc_bits),
                                                        unsigned(g.scale_bits))
        out_v = Signal()
        out_r = Signal(signed(g.out_bits), reset_less=True)
        out_sat = Signal(reset_less=True)
        out_neg = Signal(reset_less=True)
        out_xfer = Signal()
        rows_out = Signal(upto(f))
        m.d.comb += [adv.eq(~out_v | self.o_stream.ready),
                     out_xfer.eq(out_v & self.o_stream.ready),
                     self.last_out.eq(out_xfer & (rows_out == f - 1))]
        m.d.comb += [scale_mul.a.eq(self.acc), scale_mul.b.eq(self.scale), scale_mul.en.eq(adv)]
        sm_v = Signal()
        sc_v = Signal()
        sc_p = Signal(signed(spb), reset_less=True)
        sh_v = Signal()
        shifted = Signal(signed(spb), reset_less=True)
        rounded = Signal(signed(spb))   # RHU(v, sh) = ((v >> (sh-1)) + 1) >> 1 for sh >= 1
        m.d.comb += rounded.eq((shifted + 1) >> 1)
        with m.If(adv):
            m.d.sync += [sm_v.eq(self.acc_valid), sc_v.eq(sm_v), sc_p.eq(scale_mul.p),
                         sh_v.eq(sc_v), shifted.eq(sc_p >> self.sh_m1),
                         out_v.eq(sh_v), out_r.eq(saturate(rounded, spb, g.out_bits)),
                         out_sat.eq(saturates(rounded, spb, g.out_bits)),
                         out_neg.eq(shifted < 0)]
        m.d.comb += [self.o_stream.valid.eq(out_v), self.o_stream.payload.eq(out_r),
                     self.o_sat.eq(out_sat), self.o_neg.eq(out_neg)]
        with m.If(out_xfer):
            m.d.sync += rows_out.eq(Mux(rows_out == f - 1, 0, rows_out + 1))
        with m.If(self.start):
            m.d.sync += rows_out.eq(0)
        return m


# -- the layer -------------------------------------------------------------------------------


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
    i_stream : In(stream.Signature(element_shape(geom)))
        One input element per beat, ``fan_in`` beats per token; ready while the front loads.
    o_stream : Out(stream.Signature(signed(out_bits)))
        One output element per beat, ``fan_out`` beats per token, in projection row order.
    o_sat, o_neg : Out(1)
        With each ``o_stream`` beat: its value was saturated; its accumulator is negative
        (:class:`OutputScale`).
    go : In(1)
        Permission to start projecting the next token (held high when there is no condition).
    idle : Out(1)
        The front is waiting for the first element of a token.

    Timing (no stalls): the last input element transferred at ``a`` -> normalization starts at
    ``c = a + 6`` (if the back is free) -> projection starts at ``p = c + max(K + n + 17,
    2W + 7)`` (and ``go``) -> row ``j`` (in projection order) is valid at
    ``p + (j + 1) * fan_in / lanes + ceil(log2(lanes)) + 7``.

    The back: IDLE -> NORM (``norm.load``) -> NORM2 (``norm.start``) -> RDIV (until the
    reciprocal is done) -> QUANT (until the last ``q`` is written) -> WAITC (until ``C`` and
    ``go``) -> PROJ (until the last output row leaves) -> IDLE. The front may load the next
    token from WAITC on.
    """

    def __init__(self, geom: BitLinearGeometry, params: BitLinearParams, lanes: int, *,
                 interleave: bool = False):
        self.geom = geom
        self.params = params
        self.lanes = lanes
        self.interleave = interleave
        self.groups = geom.fan_in // lanes
        fmt = weight_format(geom.weights)
        self.word_bits = fmt.layout.word_bits
        self.words = [int(v) for v in fmt.pack(params.codes)]
        cpw = fmt.layout.codes_per_word
        g = math.gcd(lanes, cpw)
        self.rom_ports = -(-(cpw - g + lanes) // cpw)
        super().__init__({
            "i_stream": In(stream.Signature(element_shape(geom))),
            "o_stream": Out(stream.Signature(signed(geom.out_bits))),
            "o_sat": Out(1),
            "o_neg": Out(1),
            "go": In(1),
            "idle": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        g, prm, lanes = self.geom, self.params, self.lanes
        n = g.fan_in
        # Every memory has at least two rows (an address of at least one bit); an extra row
        # is never read.
        gains = Memory(shape=signed(g.gain_bits), depth=max(n, 2),
                       init=[int(v) for v in prm.gain_fx])
        codes = Memory(shape=self.word_bits, depth=max(len(self.words), 2), init=self.words)
        pbuf = Memory(shape=g.absmax_bits + 1, depth=max(n, 2), init=[])      # |P_i|, P_i < 0
        qbuf = Memory(shape=8 * lanes, depth=max(self.groups, 2), init=[])  # q, lanes per row
        m.submodules.gains = gains
        m.submodules.codes = codes
        m.submodules.pbuf = pbuf
        m.submodules.qbuf = qbuf

        m.submodules.stats = stats = NormStats(g)
        m.submodules.norm = norm = Normalizer(g, prm)
        m.submodules.quant = quant = Quantizer(g, lanes)
        m.submodules.feed = feed = ProjectionFeed(g, lanes, len(self.words), self.rom_ports,
                                                  self.interleave)
        m.submodules.projection = proj = projection_for(g.weights)(lanes, n)
        m.submodules.out_scale = out = OutputScale(g)
        if proj.acc_bits != g.acc_bits:  # pragma: no cover - both derive from the format
            raise RuntimeError("projection and geometry disagree on acc_bits")

        wiring.connect(m, wiring.flipped(self.i_stream), stats.i_stream)
        wiring.connect(m, stats.gain_rd, gains.read_port())
        wiring.connect(m, stats.p_wr, pbuf.write_port())
        wiring.connect(m, quant.p_rd, pbuf.read_port())
        wiring.connect(m, quant.q_wr, qbuf.write_port(granularity=8))
        wiring.connect(m, feed.q_rd, qbuf.read_port())
        for port in feed.rom:
            wiring.connect(m, port, codes.read_port())
        wiring.connect(m, out.o_stream, wiring.flipped(self.o_stream))
        m.d.comb += [
            self.idle.eq(stats.idle), self.o_sat.eq(out.o_sat), self.o_neg.eq(out.o_neg),
            norm.big_m.eq(stats.big_m), norm.big_s.eq(stats.big_s),
            quant.m_shift.eq(norm.m_shift), quant.recip.eq(norm.recip),
            feed.adv.eq(out.adv),
            proj.en.eq(out.adv), proj.valid.eq(feed.valid), proj.first.eq(feed.first),
            proj.last.eq(feed.last), proj.codes.eq(feed.codes), proj.act.eq(feed.act),
            out.acc.eq(proj.acc), out.acc_valid.eq(proj.acc_valid),
            out.scale.eq(norm.scale), out.sh_m1.eq(norm.sh_m1),
        ]

        back = Signal(range(7))
        b_idle, b_norm, b_norm2, b_rdiv, b_quant, b_waitc, b_proj = range(7)
        with m.If(back == b_idle), m.If(stats.full):
            m.d.comb += stats.take.eq(1)
            m.d.sync += back.eq(b_norm)
        with m.Elif(back == b_norm):
            m.d.comb += norm.load.eq(1)
            m.d.sync += back.eq(b_norm2)
        with m.Elif(back == b_norm2):
            m.d.comb += norm.start.eq(1)
            m.d.sync += back.eq(b_rdiv)
        with m.Elif(back == b_rdiv), m.If(norm.recip_done):
            m.d.comb += quant.start.eq(1)
            m.d.sync += back.eq(b_quant)
        with m.Elif(back == b_quant):
            m.d.comb += quant.run.eq(1)
            with m.If(quant.done):
                m.d.sync += back.eq(b_waitc)
        with m.Elif(back == b_waitc), m.If(norm.scale_valid & self.go):
            m.d.comb += [feed.start.eq(1), out.start.eq(1)]
            m.d.sync += back.eq(b_proj)
        with m.Else():
            m.d.comb += feed.active.eq(1)
            with m.If(out.last_out):
                m.d.sync += back.eq(b_idle)
        # The back no longer reads pbuf, M, S: the front may load the next token.
        m.d.comb += stats.release.eq((back == b_idle) | (back == b_waitc) | (back == b_proj))
        return m
