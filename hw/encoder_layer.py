r"""The MatMul-free HAD encoder layer: one transformer layer as one block.

Arithmetic: exactly :mod:`hadware.golden.encoder_layer` (QKV BitLinear, binarization by the
accumulators' signs, the int8 value rule, one HAD attention core per head or one shared,
output BitLinear, residual sums, the ternary GLU MLP, residual sum). No projection multiplies:
every weight is a ternary code selecting ``+q``, ``-q`` or nothing in an adder tree. The
multipliers that remain are the per-token scalars of the BitLinears (gains, squares,
quantizer, output scale; see :mod:`hadware.hw.mlp`) and the attention cores' weighting and
output scaling (:mod:`hadware.hw.attention_core`); ``hadware synth encoder_layer`` lists them.

Streams
-------
* ``i_stream`` (in): ``{x: ArrayLayout(signed(res_bits), lanes), last}``. A token is
  ``d_model / lanes`` beats (element ``b * lanes + l`` in beat ``b``, lane ``l``), the
  residual-format integers ``X``. ``last`` is read on the final beat of each token: set, the
  token ends its sequence. The ``n_max``-th token ends its sequence whatever its ``last``.
* ``o_stream`` (out): ``{y: ArrayLayout(signed(res_bits), lanes), last, sat}``; the tokens of
  the sequence in order, ``d_model / lanes`` beats each; ``last`` on the sequence's final
  beat, whose ``sat`` is the number of saturated elements of the sequence (the golden model's
  ``saturations``; on earlier beats ``sat`` is the count so far).

One sequence is in the block at a time: its tokens are taken, then its output leaves, then
the next sequence's first token is taken. A sequence's context is cleared before its first
token.

Structure and phases
--------------------
1. **Load.** Input beats are stored in the residual buffer ``xbuf`` and, element by element,
   go through the QKV BitLinear (:class:`~hadware.hw.bitlinear.BitLinear`, ``d_model ->
   3 d_model``). Its rows are sunk by :class:`QkvSink`: query and key rows give one bit each
   (their accumulator's sign), value rows one int8 value (the value rule); the token's
   query bits go into ``qbuf``; its keys and values, at the token's last row, into every
   head's core (``head_parallel``: one context beat per core) or into the buffers ``kbuf``
   and ``vbuf`` (a shared core).
2. **Attention.** Per token, the query of every head: the cores (parallel: all heads at once;
   shared: the heads in turn, each preceded by clearing the core, writing the head's table and
   loading its context from the buffers) write their outputs into the head's ``abuf``.
3. **Output.** ``abuf`` is read element by element into the output BitLinear; each output
   element is added to its ``x`` (first residual sum, written back into ``xbuf`` as ``h``) and
   goes on into the MLP (:class:`~hadware.hw.mlp.Mlp`); each MLP output beat is added to its
   ``h`` beat (second residual sum) and leaves.

Timing
------
Cycles of a sequence of ``n`` tokens from its first input transfer to its last output
transfer, with inputs always valid and outputs always ready (:func:`sequence_cycles`, held
exactly by the tests). With ``d = d_model``, ``L = lanes``, ``G = d / L``, ``D =
ceil(log2(L))``, ``X = max(recip_frac_bits + d + 17, 2 mant_bits + 7)`` (a BitLinear's cycles
from normalization to projection, :func:`hadware.hw.mlp.norm_to_project_cycles`) and
``C(m)`` the attention core's cycles for a query over ``m`` keys
(:meth:`hadware.hw.attention_core.AttentionCore.cycles`)::

    load   = d + 6 + X + (n - 1) (X + 3 d G + D + 9) + 3 d G + D + 10
    attn   = 2 + S                                   (head_parallel)
           = 2 + n_heads (2 head_dim + 2 n + 5 + S)  (shared core)
             S = sum over t < n of (C(t + 1 if causal else n) + 2)
    out    = d + 6 + X + (n - 1) (X + d G + D + 9) + d G + D + 11
             + mlp_latency + (n - 1) mlp_interval    (:mod:`hadware.hw.mlp`)
    cycles = load + attn + out

``load``: the QKV BitLinear projects ``3 d`` rows of ``G`` groups per token, its front loading
the next token meanwhile (so each token after the first adds its projection plus the
normalization ``X`` and 9 cycles of hand-over). ``attn``: per query the core's cycles plus a
query-buffer read and the issue cycle; a shared core also takes a clear beat, ``head_dim +
1`` table beats and ``n`` context beats per head, two cycles each (read, offer). ``out``: the
output projection (``d`` rows per token), then the MLP over the whole sequence at its own
latency and interval, then the second residual's two registers. The next sequence's first
token is taken two cycles after the last output transfer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from amaranth import Cat, Module, Mux, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hadware.config.encoder_layer import V_BITS, EncoderLayerConfig, LayerConfig
from hadware.hw.arith import rhu_const, saturate, saturates, upto
from hadware.hw.attention import Attention
from hadware.hw.bitlinear import BitLinear, element_shape
from hadware.hw.mlp import (
    Deserializer,
    Mlp,
    mlp_interval,
    mlp_latency,
    norm_to_project_cycles,
)
from hadware.hw.std_attention import StdAttention
from hadware.spec.encoder_layer import EncoderLayerWeights, as_weights

__all__ = ["EncoderLayer", "QkvSink", "core_class", "sequence_cycles"]

#: The attention core of each attention config class a layer may use.
CORES = {c.config_class: c for c in (Attention, StdAttention)}


def core_class(ccfg):
    """The attention core (:mod:`hadware.hw.attention_core` variant) of a core config."""
    return CORES[type(ccfg)]


def table_words(ccfg, temperature: float) -> list[int]:
    """The ``tab_stream`` beats (payload values) that set a run-time core to
    ``temperature``: ``d + 1`` table entries (table exponential) or one ``(c, G)`` beat
    (fixed exponential)."""
    layout = core_class(ccfg).tab_layout(ccfg)
    t = ccfg.table_for(temperature)
    if ccfg.exp == "table":
        beats = [{"addr": a, "data": v} for a, v in enumerate(t)]
    else:
        beats = [{"scale": t[0], "shift": t[1]}]
    return [layout.const(b).as_value().value for b in beats]


def sequence_cycles(cfg: LayerConfig, n: int) -> int:
    """Cycles from a sequence's first input transfer to its last output transfer, ``n``
    tokens, no stalls (module docstring)."""
    d, lanes = cfg.d_model, cfg.lanes
    g, dd = d // lanes, ceil_log2(lanes)
    x = norm_to_project_cycles(cfg.mlp, d)
    load = d + 6 + x + (n - 1) * (x + 3 * d * g + dd + 9) + 3 * d * g + dd + 10
    core = cfg.core_configs()[0]
    s = sum(core_class(core).cycles(core, t + 1 if cfg.causal else n) + 2 for t in range(n))
    tbeats = len(table_words(core, cfg.temperature[0]))
    per_head = s if cfg.head_parallel else 2 * tbeats + 2 * n + 3 + s
    attn = 2 + (1 if cfg.head_parallel else cfg.n_heads) * per_head
    out = (d + 6 + x + (n - 1) * (x + d * g + dd + 9) + d * g + dd + 11
           + mlp_latency(cfg.mlp) + (n - 1) * mlp_interval(cfg.mlp))
    return load + attn + out


LATENCY_FORMULA = ("load + attn + out; load = d + 6 + X + (n - 1)(X + 3dG + D + 9) + 3dG + D "
                   "+ 10; attn = 2 + S (parallel) or 2 + n_heads (2 T + 2n + 3 + S) "
                   "(shared; T table beats: head_dim + 1 HAD, 1 standard), S = sum_t "
                   "(C(t+1 if causal else n) + 2); out = d + 6 + X + "
                   "(n - 1)(X + dG + D + 9) + dG + D + 11 + mlp_latency + (n - 1) "
                   "mlp_interval; G = d/lanes, D = ceil(log2(lanes)), X = max(recip_frac_bits "
                   "+ d + 17, 2 mant_bits + 7)")


class QkvSink(wiring.Component):
    """Sinks the QKV BitLinear's rows of one token after another.

    Query and key rows give one bit (``1`` = +1: the accumulator is not negative) in the HAD
    layer (``qk_bits`` 1) or one int8 element by the int8 rule (the standard layer), value
    rows ``Vq = SAT(RHU(V, v_shift), 8)``. At a token's query row ``d_model - 1`` its query is
    written into ``qbuf`` (row ``token``); at its last row the context beat ``{key, value}``
    (all heads, ``qk_bits d_model`` and ``8 d_model`` bits) is presented on ``ctx`` until
    taken (``ctx_taken``); the sink accepts nothing meanwhile.

    Members
    -------
    i_stream, i_sat, i_neg : In
        The BitLinear's ``o_stream``, ``o_sat``, ``o_neg``.
    q_wr : Out(write port signature)
        ``qbuf``.
    ctx_valid, ctx_key, ctx_value : Out; ctx_taken : In(1)
    tokens : Out
        Tokens whose rows are all sunk and whose context beat was taken since ``restart``.
    sat_events : Out(range(3))
        Saturations counted this cycle (rows under the int8 rule: the BitLinear's and the
        rule's).
    restart : In(1)
        A new sequence: ``tokens`` back to 0.
    """

    def __init__(self, cfg: LayerConfig):
        self.cfg = cfg
        d, qk = cfg.d_model, cfg.qk_bits
        super().__init__({
            "i_stream": In(stream.Signature(signed(cfg.qkv_bits))),
            "i_sat": In(1),
            "i_neg": In(1),
            "q_wr": In(WritePort.Signature(addr_width=ceil_log2(max(cfg.n_max, 2)),
                                           shape=qk * d)),
            "ctx_valid": Out(1),
            "ctx_key": Out(qk * d),
            "ctx_value": Out(V_BITS * d),
            "ctx_taken": In(1),
            "tokens": Out(range(cfg.n_max + 1)),
            "sat_events": Out(range(3)),
            "restart": In(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        d, qk = cfg.d_model, cfg.qk_bits
        row = Signal(range(3 * d))
        qsr = Signal(qk * d, reset_less=True)
        ksr = Signal(qk * d, reset_less=True)
        vsr = Signal(V_BITS * d, reset_less=True)
        pending = Signal()
        m.d.comb += [self.i_stream.ready.eq(~pending), self.ctx_valid.eq(pending),
                     self.ctx_key.eq(ksr), self.ctx_value.eq(vsr)]
        take = Signal()
        m.d.comb += take.eq(self.i_stream.valid & ~pending)
        vq_bits = cfg.qkv_bits - cfg.v_shift + 1
        vr = Signal(signed(vq_bits))
        m.d.comb += vr.eq(rhu_const(self.i_stream.payload, cfg.v_shift))
        vq = Signal(signed(V_BITS))
        m.d.comb += vq.eq(saturate(vr, vq_bits, V_BITS))
        is_v, ruled = Signal(), Signal()
        m.d.comb += [is_v.eq(row >= 2 * d), ruled.eq(row >= 3 * d - cfg.int8_rows)]
        el = Signal(qk)     # a query or key element: its sign bit (1 = +1) or its int8
        m.d.comb += el.eq(~self.i_neg if qk == 1 else vq)
        with m.If(take):
            m.d.sync += row.eq(Mux(row == 3 * d - 1, 0, row + 1))
            with m.If(row < d):
                m.d.sync += qsr.eq(Cat(qsr[qk:], el))
            with m.Elif(~is_v):
                m.d.sync += ksr.eq(Cat(ksr[qk:], el))
            with m.Else():
                m.d.sync += vsr.eq(Cat(vsr[V_BITS:], vq))
            with m.If(row == 3 * d - 1):
                m.d.sync += pending.eq(1)
        m.d.comb += self.sat_events.eq(
            Mux(take & ruled, self.i_sat + saturates(vr, vq_bits, V_BITS), 0))
        m.d.comb += [self.q_wr.en.eq(take & (row == d - 1)), self.q_wr.addr.eq(self.tokens),
                     self.q_wr.data.eq(Cat(qsr[qk:], el))]
        with m.If(pending & self.ctx_taken):
            m.d.sync += [pending.eq(0), self.tokens.eq(self.tokens + 1)]
        with m.If(self.restart):
            m.d.sync += self.tokens.eq(0)
        return m


class EncoderLayer(wiring.Component):
    """The encoder layer (streams, structure and timing in the module docstring).

    Parameters
    ----------
    config : EncoderLayerConfig (or :attr:`config_class` of a subclass)
    weights : mapping or EncoderLayerWeights
        W.npz as loaded (latent floats; quantized once here,
        :func:`hadware.spec.encoder_layer.quantize_weights`) or quantized weights of the same
        configuration.
    """

    #: The config class of the layer block.
    config_class: type[LayerConfig] = EncoderLayerConfig

    def __init__(self, config: LayerConfig,
                 weights: Mapping[str, Any] | EncoderLayerWeights):
        if type(config) is not self.config_class:
            self._MustUse__silence = True
            raise TypeError(f"config must be of type {self.config_class.__name__}, not "
                            f"{config!r}")
        try:
            self.weights = as_weights(config, weights)
        except Exception:
            self._MustUse__silence = True
            raise
        self.config = config
        self.in_layout, self.out_layout = self.layouts(config)
        self.latency_formula = LATENCY_FORMULA
        super().__init__({
            "i_stream": In(stream.Signature(self.in_layout)),
            "o_stream": Out(stream.Signature(self.out_layout)),
        })

    @staticmethod
    def layouts(cfg: LayerConfig) -> tuple[data.StructLayout, data.StructLayout]:
        """Payload layouts of ``i_stream`` and ``o_stream``."""
        tok = data.ArrayLayout(signed(cfg.res_bits), cfg.lanes)
        return (data.StructLayout({"x": tok, "last": 1}),
                data.StructLayout({"y": tok, "last": 1, "sat": cfg.sat_width}))

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg, w = self.config, self.weights
        d, lanes, beats, n_max = cfg.d_model, cfg.lanes, cfg.token_beats, cfg.n_max
        xbuf = Memory(shape=lanes * cfg.res_bits, depth=max(n_max * beats, 2), init=[])
        qbuf = Memory(shape=cfg.qk_bits * d, depth=max(n_max, 2), init=[])
        m.submodules.xbuf = xbuf
        m.submodules.qbuf = qbuf
        self._xw = xbuf.write_port(granularity=cfg.res_bits)
        self._xr1 = xbuf.read_port()
        self._xr2 = xbuf.read_port()
        self._qr = qbuf.read_port()
        self._abuf = []
        for h in range(cfg.n_heads):
            mem = Memory(shape=cfg.head_dim * cfg.attn_out_bits, depth=max(n_max, 2), init=[])
            m.submodules[f"abuf{h}"] = mem
            self._abuf.append((mem.write_port(), mem.read_port()))

        m.submodules.qkv_deser = deser = Deserializer(
            data.StructLayout({"x": data.ArrayLayout(signed(cfg.res_bits), lanes)}),
            element_shape(cfg.qkv), lanes)
        m.submodules.qkv = qkv = BitLinear(cfg.qkv, w.qkv, lanes)
        m.submodules.qkv_sink = sink = QkvSink(cfg)
        m.submodules.o_proj = o_proj = BitLinear(cfg.o_proj, w.o, lanes)
        m.submodules.mlp = mlp = Mlp(cfg.mlp, w.mlp)
        self._cores = []
        for i, ccfg in enumerate(cfg.core_configs()):
            core = core_class(ccfg)(ccfg)
            m.submodules[f"core{i}"] = core
            self._cores.append(core)
        wiring.connect(m, deser.o_stream, qkv.i_stream)
        wiring.connect(m, qkv.o_stream, sink.i_stream)
        wiring.connect(m, sink.q_wr, qbuf.write_port())
        m.d.comb += [sink.i_sat.eq(qkv.o_sat), sink.i_neg.eq(qkv.o_neg), qkv.go.eq(1),
                     o_proj.go.eq(1)]

        # The phases.
        self._n = n = Signal(range(n_max + 1))        # tokens of the sequence
        self._rows = Signal(upto(n_max * beats + 1))  # its xbuf rows, n * token_beats
        self._sat = Signal(cfg.sat_width)             # saturations counted so far
        phase = Signal(range(4))
        self._phase = phase
        load_done = Signal()
        attn_done = Signal()
        out_done = Signal()
        p_clear, p_load, p_attn, p_out = range(4)
        clear_done = Signal()
        with m.Switch(phase):
            with m.Case(p_clear):
                m.d.sync += [n.eq(0), self._sat.eq(0)]
                m.d.comb += sink.restart.eq(1)
                with m.If(clear_done):
                    m.d.sync += phase.eq(p_load)
            with m.Case(p_load), m.If(load_done):
                m.d.sync += phase.eq(p_attn)
            with m.Case(p_attn), m.If(attn_done):
                m.d.sync += phase.eq(p_out)
            with m.Case(p_out), m.If(out_done):
                m.d.sync += phase.eq(p_clear)
        self._load(m, deser, sink, phase == p_load, load_done)
        self._context(m, sink, phase == p_clear, clear_done)
        self._attention(m, phase == p_attn, attn_done)
        events = [sink.sat_events, mlp.sat_events]
        events += self._output(m, o_proj, mlp, phase == p_out, out_done)
        with m.If(phase != p_clear):
            m.d.sync += self._sat.eq(self._sat + sum(events))
        return m

    # -- phase 1: tokens in ------------------------------------------------------------------

    def _load(self, m, deser, sink, active, done) -> None:
        cfg = self.config
        beats, n = cfg.token_beats, self._n
        beat = Signal(upto(beats))
        row = Signal(upto(cfg.n_max * beats + 1))   # xbuf row of the beat: n * beats + beat
        closed = Signal()      # the sequence's last token has been taken
        xfer = Signal()
        m.d.comb += [deser.i_stream.valid.eq(self.i_stream.valid & active & ~closed),
                     deser.i_stream.payload.x.eq(self.i_stream.payload.x),
                     self.i_stream.ready.eq(deser.i_stream.ready & active & ~closed),
                     xfer.eq(self.i_stream.valid & self.i_stream.ready)]
        with m.If(xfer):
            m.d.sync += row.eq(row + 1)
            m.d.comb += [self._xw.addr.eq(row),
                         self._xw.data.eq(self.i_stream.payload.x.as_value()),
                         self._xw.en.eq(-1)]
            with m.If(beat == beats - 1):
                m.d.sync += [beat.eq(0), n.eq(n + 1)]
                with m.If(self.i_stream.payload.last | (n == cfg.n_max - 1)):
                    m.d.sync += closed.eq(1)
            with m.Else():
                m.d.sync += beat.eq(beat + 1)
        with m.If(~active):
            m.d.sync += [closed.eq(0), row.eq(0)]
        m.d.comb += [done.eq(closed & (sink.tokens == n)), self._rows.eq(row)]

    def _context(self, m, sink, clear, clear_done) -> None:
        """Context beats: a parallel layer's cores take each token's keys and values from the
        sink directly (after one clear beat per sequence); a shared core's go into the buffers
        and are loaded per head in the attention phase."""
        cfg = self.config
        hd, kw_ = cfg.head_dim, cfg.head_dim * cfg.qk_bits
        if not cfg.head_parallel:
            kbuf = Memory(shape=cfg.qk_bits * cfg.d_model, depth=max(cfg.n_max, 2), init=[])
            vbuf = Memory(shape=V_BITS * cfg.d_model, depth=max(cfg.n_max, 2), init=[])
            m.submodules.kbuf = kbuf
            m.submodules.vbuf = vbuf
            kw, vw = kbuf.write_port(), vbuf.write_port()
            self._kr, self._vr = kbuf.read_port(), vbuf.read_port()
            m.d.comb += [kw.addr.eq(sink.tokens), kw.data.eq(sink.ctx_key),
                         kw.en.eq(sink.ctx_valid), vw.addr.eq(sink.tokens),
                         vw.data.eq(sink.ctx_value), vw.en.eq(sink.ctx_valid),
                         sink.ctx_taken.eq(sink.ctx_valid), clear_done.eq(1)]
            return
        # One pending bit per core: the beat is offered until every core has taken it.
        taken = Signal(cfg.n_heads)
        all_taken = Signal()
        m.d.comb += all_taken.eq((sink.ctx_valid | clear) & ((taken | Cat(
            c.ctx_stream.ready for c in self._cores)) == (1 << cfg.n_heads) - 1))
        for h, core in enumerate(self._cores):
            cs = core.ctx_stream
            m.d.comb += [Value.cast(cs.payload.key).eq(sink.ctx_key[h * kw_:(h + 1) * kw_]),
                         cs.payload.value.as_value().eq(
                             sink.ctx_value[V_BITS * h * hd:V_BITS * (h + 1) * hd])]
            m.d.comb += [cs.valid.eq((sink.ctx_valid | clear) & ~taken[h]),
                         cs.payload.clear.eq(clear)]
            with m.If(cs.valid & cs.ready):
                m.d.sync += taken[h].eq(1)
        with m.If(all_taken):
            m.d.sync += taken.eq(0)
        m.d.comb += [sink.ctx_taken.eq(all_taken & ~clear), clear_done.eq(all_taken & clear)]

    # -- phase 2: attention ------------------------------------------------------------------

    def _attention(self, m, active, done) -> None:
        cfg = self.config
        hd, heads, n = cfg.head_dim, cfg.n_heads, self._n
        t = Signal(range(cfg.n_max + 1))       # the query's token
        head = Signal(range(heads))            # the shared core's head
        cores = self._cores
        issued = Signal(len(cores))
        got = Signal(len(cores))
        qr = self._qr
        n_q = t + 1 if cfg.causal else n   # keys the query attends over
        for i, core in enumerate(cores):
            qs = core.q_stream
            sel = head if not cfg.head_parallel else i
            m.d.comb += [Value.cast(qs.payload.q).eq(qr.data.word_select(sel, hd * cfg.qk_bits)),
                         qs.payload.n.eq(n_q), core.o_stream.ready.eq(1)]
            if hasattr(qs.payload, "k"):
                m.d.comb += qs.payload.k.eq(0)
            with m.If(qs.valid & qs.ready):
                m.d.sync += issued[i].eq(1)
            with m.If(core.o_stream.valid):
                m.d.sync += got[i].eq(1)
        all_got = Signal()
        every = (1 << len(cores)) - 1
        m.d.comb += all_got.eq((got | Cat(c.o_stream.valid for c in cores)) == every)
        for h, (aw, _) in enumerate(self._abuf):
            core = cores[h] if cfg.head_parallel else cores[0]
            mine = 1 if cfg.head_parallel else head == h
            m.d.comb += [aw.addr.eq(t), aw.data.eq(core.o_stream.payload.out.as_value()),
                         aw.en.eq(core.o_stream.valid & mine)]
        shared = None if cfg.head_parallel else self._shared_loader(m, head, active)
        with m.FSM(name="attn"):
            with m.State("IDLE"):
                m.d.sync += [t.eq(0), head.eq(0), issued.eq(0), got.eq(0)]
                with m.If(active):
                    m.next = "READQ" if cfg.head_parallel else "LOADCTX"
            if shared is not None:
                start, loaded = shared
                with m.State("LOADCTX"):
                    m.d.comb += start.eq(1)
                    with m.If(loaded):
                        m.next = "READQ"
            with m.State("READQ"):
                m.d.comb += [qr.addr.eq(t), qr.en.eq(1)]
                m.next = "ISSUE"
            with m.State("ISSUE"):
                for i, core in enumerate(cores):
                    m.d.comb += core.q_stream.valid.eq(~issued[i])
                with m.If((issued | Cat(c.q_stream.ready for c in cores))
                          == (1 << len(cores)) - 1):
                    m.next = "WAIT"
            with m.State("WAIT"), m.If(all_got):
                m.d.sync += [issued.eq(0), got.eq(0), t.eq(t + 1)]
                with m.If(t + 1 < n):
                    m.next = "READQ"
                if shared is None:
                    with m.Else():
                        m.next = "DONE"
                else:
                    with m.Elif(head == heads - 1):
                        m.next = "DONE"
                    with m.Else():
                        m.d.sync += [head.eq(head + 1), t.eq(0)]
                        m.next = "LOADCTX"
            with m.State("DONE"):
                m.d.comb += done.eq(1)
                m.next = "IDLE"

    def _shared_loader(self, m, head, active):
        """The shared core's per-head preparation: a clear beat, the head's table (``T``
        beats from a ROM of every head's :func:`table_words`: ``head_dim + 1`` table entries
        or one ``(c, G)`` beat), its context (``n`` beats from ``kbuf`` / ``vbuf``), each
        beat read one cycle and offered the next."""
        cfg = self.config
        hd, n = cfg.head_dim, self._n
        core = self._cores[0]
        scfg = core.config
        per_head = [table_words(scfg, cfg.temperature[h]) for h in range(cfg.n_heads)]
        tbeats = len(per_head[0])
        tables = [v for words in per_head for v in words]
        layout = core.tab_layout(scfg)
        rom = Memory(shape=layout.size, depth=max(len(tables), 2), init=tables)
        m.submodules.tables = rom
        rr = rom.read_port()
        kr, vr = self._kr, self._vr
        start, loaded = Signal(), Signal()
        a = Signal(range(max(tbeats, cfg.n_max) + 1))
        base = Signal(range(len(tables) + 1))   # head * T
        cs, ts = core.ctx_stream, core.tab_stream
        kb = hd * cfg.qk_bits
        m.d.comb += [Value.cast(ts.payload).eq(rr.data),
                     Value.cast(cs.payload.key).eq(kr.data.word_select(head, kb)),
                     cs.payload.value.as_value().eq(vr.data.word_select(head, V_BITS * hd))]
        with m.FSM(name="shared"):
            with m.State("IDLE"):
                m.d.sync += a.eq(0)
                with m.If(~active):
                    m.d.sync += base.eq(0)
                with m.If(start):
                    m.next = "CLEAR"
            with m.State("CLEAR"):
                m.d.comb += [cs.valid.eq(1), cs.payload.clear.eq(1)]
                with m.If(cs.ready):
                    m.next = "TREAD"
            with m.State("TREAD"):
                m.d.comb += [rr.addr.eq(base + a), rr.en.eq(1)]
                m.next = "TSEND"
            with m.State("TSEND"):
                m.d.comb += ts.valid.eq(1)
                with m.If(ts.ready):
                    m.d.sync += a.eq(Mux(a == tbeats - 1, 0, a + 1))
                    m.next = "TREAD"
                    with m.If(a == tbeats - 1):
                        m.next = "CREAD"
            with m.State("CREAD"):
                m.d.comb += [kr.addr.eq(a), kr.en.eq(1), vr.addr.eq(a), vr.en.eq(1)]
                m.next = "CSEND"
            with m.State("CSEND"):
                m.d.comb += cs.valid.eq(1)
                with m.If(cs.ready):
                    m.d.sync += a.eq(a + 1)
                    m.next = "CREAD"
                    with m.If(a + 1 == n):
                        m.next = "LOADED"
            with m.State("LOADED"):
                m.d.comb += loaded.eq(1)
                m.d.sync += [a.eq(0), base.eq(base + tbeats)]
                m.next = "IDLE"
        return start, loaded

    # -- phase 3: output projection, residuals, MLP ------------------------------------------

    def _output(self, m, o_proj, mlp, active, done) -> list:
        """Phase 3 in two steps, each a pipeline fed from memory: the output projection and
        the first residual sum over every token (``h`` written back into ``xbuf``), then the
        MLP over every token's ``h`` and the second residual sum."""
        cfg = self.config
        d, lanes, beats, n = cfg.d_model, cfg.lanes, cfg.token_beats, self._n
        rb, wa = cfg.res_bits, cfg.attn_out_bits
        restart = self._phase == 0
        step = Signal()        # 0: output projection, 1: MLP
        # (a) attention outputs, element by element, into the output projection.
        ta, ia = Signal(range(cfg.n_max + 1)), Signal(upto(d))
        a_v, a_i = Signal(), Signal(upto(d), reset_less=True)
        a_adv, a_more = Signal(), Signal()
        m.d.comb += [a_adv.eq(~a_v | o_proj.i_stream.ready), a_more.eq(active & (ta < n))]
        full = Cat(rd.data for _, rd in self._abuf)
        for _, rd in self._abuf:
            m.d.comb += [rd.addr.eq(ta), rd.en.eq(a_adv & a_more)]
        with m.If(a_adv):
            m.d.sync += a_v.eq(a_more)
            with m.If(a_more):
                m.d.sync += [a_i.eq(ia), ia.eq(Mux(ia == d - 1, 0, ia + 1))]
                with m.If(ia == d - 1):
                    m.d.sync += ta.eq(ta + 1)
        m.d.comb += [o_proj.i_stream.valid.eq(a_v),
                     o_proj.i_stream.payload.eq(full.word_select(a_i, wa))]
        # (b) x, element by element in the same order, plus each output of the projection:
        # h, written back in place of x.
        rows = Signal(upto(cfg.n_max * beats + 1), reset_less=True)
        with m.If(self._phase == 1):   # the load phase counts them
            m.d.sync += rows.eq(self._rows)
        xr, xl = Signal(upto(cfg.n_max * beats + 1)), Signal(upto(lanes))
        x_v = Signal()
        x_row, x_lane = Signal.like(xr, reset_less=True), Signal.like(xl, reset_less=True)
        x_adv, x_more, take1 = Signal(), Signal(), Signal()
        m.d.comb += [x_adv.eq(~x_v | take1), x_more.eq(active & ~step & (xr < rows))]
        with m.If(~step):
            m.d.comb += [self._xr1.addr.eq(xr), self._xr1.en.eq(x_adv & x_more)]
        with m.If(x_adv):
            m.d.sync += x_v.eq(x_more)
            with m.If(x_more):
                m.d.sync += [x_row.eq(xr), x_lane.eq(xl),
                             xl.eq(Mux(xl == lanes - 1, 0, xl + 1))]
                with m.If(xl == lanes - 1):
                    m.d.sync += xr.eq(xr + 1)
        x_el = self._xr1.data.word_select(x_lane, rb).as_signed()
        sum1 = Signal(signed(cfg.proj_bits + 1))
        h_el = Signal(signed(rb))
        m.d.comb += [sum1.eq(x_el + o_proj.o_stream.payload),
                     h_el.eq(saturate(sum1, cfg.proj_bits + 1, rb)),
                     o_proj.o_stream.ready.eq(x_v),
                     take1.eq(x_v & o_proj.o_stream.valid)]
        with m.If(take1):
            m.d.comb += [self._xw.addr.eq(x_row), self._xw.en.eq(1 << x_lane),
                         self._xw.data.eq(Cat(*[h_el] * lanes))]
            with m.If((x_row == rows - 1) & (x_lane == lanes - 1)):
                m.d.sync += step.eq(1)
        # (c) h, beat by beat, into the MLP.
        fr = Signal(upto(cfg.n_max * beats + 1))
        f_v, f_adv, f_more = Signal(), Signal(), Signal()
        m.d.comb += [f_adv.eq(~f_v | mlp.i_stream.ready), f_more.eq(active & step & (fr < rows))]
        with m.If(step):
            m.d.comb += [self._xr1.addr.eq(fr), self._xr1.en.eq(f_adv & f_more)]
        with m.If(f_adv):
            m.d.sync += f_v.eq(f_more)
            with m.If(f_more):
                m.d.sync += fr.eq(fr + 1)
        m.d.comb += [mlp.i_stream.valid.eq(f_v),
                     mlp.i_stream.payload.x.as_value().eq(self._xr1.data)]
        # (d) MLP output beats plus their h beats, out.
        r2 = Signal(upto(cfg.n_max * beats + 1))
        b_v, s_v = Signal(), Signal()
        m_y = Signal.like(mlp.o_stream.payload.y, reset_less=True)
        s_last = Signal(reset_less=True)
        out = self.o_stream
        y_r = Signal.like(out.payload.y, reset_less=True)
        y_sat = Signal(range(lanes + 1), reset_less=True)
        y_last = Signal(reset_less=True)
        b_adv = Signal()
        m.d.comb += [b_adv.eq(~b_v | out.ready),
                     mlp.o_stream.ready.eq(~s_v | b_adv),
                     self._xr2.addr.eq(r2),
                     self._xr2.en.eq(mlp.o_stream.valid & mlp.o_stream.ready)]
        with m.If(mlp.o_stream.valid & mlp.o_stream.ready):
            m.d.sync += [s_v.eq(1), m_y.eq(mlp.o_stream.payload.y), r2.eq(r2 + 1),
                         s_last.eq(r2 == rows - 1)]
        with m.Elif(b_adv):
            m.d.sync += s_v.eq(0)
        sums = []
        for lane in range(lanes):
            hv = self._xr2.data.word_select(lane, rb).as_signed()
            sv = Signal(signed(cfg.proj_bits + 1), name=f"sum2_{lane}")
            m.d.comb += sv.eq(hv + m_y[lane])
            sums.append(sv)
        with m.If(b_adv):
            m.d.sync += [b_v.eq(s_v), y_last.eq(s_last),
                         y_sat.eq(sum(saturates(sv, cfg.proj_bits + 1, rb) for sv in sums))]
            for lane, sv in enumerate(sums):
                m.d.sync += y_r[lane].eq(saturate(sv, cfg.proj_bits + 1, rb))
        m.d.comb += [out.valid.eq(b_v), out.payload.y.eq(y_r), out.payload.last.eq(y_last),
                     out.payload.sat.eq(self._sat + y_sat),
                     done.eq(out.valid & out.ready & y_last)]
        with m.If(restart):
            m.d.sync += [ta.eq(0), ia.eq(0), xr.eq(0), xl.eq(0), fr.eq(0), r2.eq(0),
                         step.eq(0)]
        return [Mux(o_proj.o_stream.valid & o_proj.o_stream.ready & o_proj.o_sat, 1, 0),
                Mux(take1, saturates(sum1, cfg.proj_bits + 1, rb), 0),
                Mux(out.valid & out.ready, y_sat, 0)]

