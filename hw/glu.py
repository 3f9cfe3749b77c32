"""The GLU of the MLP block: ``h = SiLU(gate) * up`` with the piecewise-linear SiLU of the
specification (the "GLU" section of :mod:`hadware.golden.mlp`), its table taken from
:func:`hadware.spec.silu.silu_table`."""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hadware.config.mlp import MlpConfig
from hadware.hw.arith import Multiplier, rhu_const, saturate, saturates
from hadware.spec.silu import silu_table
from hadware.spec.widths import signed_width

__all__ = ["Glu"]


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
    o_sat : Out(1)
        With the beat on ``o_stream``: the saturation to ``h_bits`` changed its value.

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
        self.n_bits = signed_width(min(self.n_values), max(self.n_values))
        self.d_bits = signed_width(min(self.d_values), max(self.d_values))
        super().__init__({
            "i_stream": In(stream.Signature(signed(cfg.act_bits))),
            "o_stream": Out(stream.Signature(signed(cfg.h_bits))),
            "empty": Out(1),
            "o_sat": Out(1),
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
        nv = Mux(in_b, n_b + rhu_const(ip_b, fb), 0)
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
        m.d.comb += h_c.eq(rhu_const(prod_d, cfg.glu_shift))
        out_r = stage("out_r", signed(cfg.h_bits))
        out_sat = stage("out_sat", 1)
        with m.If(adv):
            m.d.sync += [out_v.eq(vd), out_r.eq(saturate(h_c, prod_bits, cfg.h_bits)),
                         out_sat.eq(saturates(h_c, prod_bits, cfg.h_bits))]
        m.d.comb += [self.o_stream.valid.eq(out_v), self.o_stream.payload.eq(out_r),
                     self.o_sat.eq(out_sat),
                     self.empty.eq(~phase & ~va & ~vm & ~vb & ~vc & ~vg & ~vd & ~out_v)]
        return m
