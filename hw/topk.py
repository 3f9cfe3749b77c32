"""Streaming top-k sparsifier: scores with implicit indices in, the k best out, sorted.

Function
--------
A query's candidates arrive as beats of ``lanes`` scores with a per-lane valid mask; candidate
``j`` of beat ``b`` has index ``b*lanes + j`` (the beat counter restarts after each query). The
beat with ``last`` set ends the query. The unit keeps the ``top_k`` best valid candidates, where
a beats b when its score is higher or, on equal scores, its index is lower. After the last beat
it sends ``top_k`` output beats, best first (score descending, index ascending); the beat at
position p has ``sel = 0`` when fewer than p+1 candidates were valid (its score and index are
then meaningless; the vector interface maps them to 0 and -1).

Structure (one cycle per input beat)
------------------------------------
The held list is kept sorted. Each input beat is merged in one cycle by ranks: every held entry
i moves to ``i + #(new candidates that beat it)``, every new candidate j goes to
``#(held entries that beat it) + #(earlier-lane new candidates with key >= its key) +
#(later-lane new candidates with key > its key)``; ranks of ``top_k`` or more fall off. Held
entries always carry lower indices than new ones, so they win ties; empty slots and masked
lanes carry a valid bit of 0 in the compare key and lose to everything. The comparisons of
one held entry against the beat (``lanes`` comparators and their count) form a
:class:`TopKRow` submodule, ``row0`` to ``row{top_k-1}``, all identical: hierarchical synthesis
maps the row once, which keeps a wide merge with a large ``top_k`` tractable.

Area (as formulas): ``top_k*lanes + lanes*(lanes-1)/2`` key comparators of ``score_width + 1``
bits; one rank adder per held entry (``lanes`` inputs) and per lane (``top_k + lanes - 1``
inputs); a ``(2*lanes + 1)``-input one-hot multiplexer per slot of ``score_width + index_width
+ 1`` bits; ``top_k * (score_width + index_width + 1)`` flip-flops. With ``lanes = 1`` this is
an insertion list (``top_k`` comparators); the cost grows as ``top_k*lanes``, so a wide merge with
a large ``top_k`` is the expensive corner.

Timing
------
* Input: one beat per cycle while collecting (``i_stream.ready`` is high unless output beats
  are pending).
* Output: the first output beat is valid the cycle after the ``last`` input beat's transfer;
  ``top_k`` beats follow, one per cycle when ``o_stream.ready`` is high; the input is ready
  again the cycle after the final output transfer.
* Cycles per query without stalls: ``ceil(n / lanes) + top_k``.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hadware.config.topk import TopKConfig

__all__ = ["TopK", "TopKRow"]


def _bits_for(n: int) -> int:
    return max(1, n.bit_length())


class TopKRow(wiring.Component):
    """One held entry against the new candidates of a beat: which of them beat it, and how
    many.

    Members
    -------
    held : In(key_width)
        The held entry's compare key.
    new : In(lanes * key_width)
        The new candidates' keys, lane 0 in the low bits.
    beats : Out(lanes)
        Bit j: new key j is greater than the held key (unsigned).
    count : Out(bits of lanes)
        The number of set bits of ``beats``.
    """

    def __init__(self, lanes: int, key_width: int):
        self._lanes = lanes
        self._kw = key_width
        super().__init__({
            "held": In(key_width),
            "new": In(lanes * key_width),
            "beats": Out(lanes),
            "count": Out(_bits_for(lanes)),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        kw = self._kw
        for j in range(self._lanes):
            m.d.comb += self.beats[j].eq(self.new[j * kw: (j + 1) * kw] > self.held)
        m.d.comb += self.count.eq(sum(self.beats[j] for j in range(self._lanes)))
        return m


class TopK(wiring.Component):
    """The streaming top-k sparsifier (see the module docstring).

    Members
    -------
    i_stream : In(stream.Signature(StructLayout({"score": ArrayLayout(signed(w), lanes),
                                                 "mask": lanes, "last": 1})))
    o_stream : Out(stream.Signature(StructLayout({"score": signed(w), "index": index_width,
                                                  "sel": 1, "last": 1})))
    """

    def __init__(self, config: TopKConfig):
        if not isinstance(config, TopKConfig):
            self._MustUse__silence = True
            raise TypeError(f"config must be a TopKConfig, not {config!r}")
        self.config = config
        self.latency = 1
        self.latency_formula = ("cycles per query = ceil(n / lanes) + top_k; first output one "
                                "cycle after the last input beat")
        self.in_layout, self.out_layout = self.layouts(config)
        super().__init__({
            "i_stream": In(stream.Signature(self.in_layout)),
            "o_stream": Out(stream.Signature(self.out_layout)),
        })

    @staticmethod
    def layouts(config: TopKConfig) -> tuple[data.StructLayout, data.StructLayout]:
        w = config.score_width
        return (
            data.StructLayout({"score": data.ArrayLayout(signed(w), config.lanes),
                               "mask": config.lanes, "last": 1}),
            data.StructLayout({"score": signed(w), "index": config.index_width,
                               "sel": 1, "last": 1}),
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.config
        k, lanes, w, iw = cfg.top_k, cfg.lanes, cfg.score_width, cfg.index_width

        # Held list, sorted best first.
        h_valid = [Signal(name=f"h_valid{i}") for i in range(k)]
        h_score = [Signal(signed(w), name=f"h_score{i}", reset_less=True) for i in range(k)]
        h_index = [Signal(iw, name=f"h_index{i}", reset_less=True) for i in range(k)]

        emitting = Signal()
        out_pos = Signal(_bits_for(k))
        base = Signal(iw + 1)  # index of lane 0 of the current beat

        # Compare keys: valid bit above an offset-binary score, so unsigned >= orders them; an
        # invalid entry's key is 0 whatever its score, so invalid entries order by position.
        def key(valid, score):
            return Mux(valid, Cat(score[:-1], ~score[-1], 1), 0)

        hk = [Signal(w + 1, name=f"hkey{i}") for i in range(k)]
        nk = [Signal(w + 1, name=f"nkey{j}") for j in range(lanes)]
        n_idx = [Signal(iw, name=f"nidx{j}") for j in range(lanes)]
        for i in range(k):
            m.d.comb += hk[i].eq(key(h_valid[i], h_score[i]))
        for j in range(lanes):
            m.d.comb += [
                nk[j].eq(key(self.i_stream.payload.mask[j], self.i_stream.payload.score[j])),
                n_idx[j].eq((base + j)[:iw]),
            ]

        # new j beats held i iff nk[j] > hk[i]: one TopKRow per held entry (identical rows,
        # so hierarchical synthesis maps one and counts it top_k times).
        nk_all = Signal(lanes * (w + 1))
        m.d.comb += nk_all.eq(Cat(*nk))
        beats_h, rank_h = [], []
        for i in range(k):
            row = TopKRow(lanes, w + 1)
            m.submodules[f"row{i}"] = row
            m.d.comb += [row.held.eq(hk[i]), row.new.eq(nk_all)]
            beats_h.append([row.beats[j] for j in range(lanes)])
            r = Signal(_bits_for(k + lanes), name=f"rank_h{i}")
            m.d.comb += r.eq(i + row.count)
            rank_h.append(r)
        rank_n = []
        for j in range(lanes):
            terms = [~beats_h[i][j] for i in range(k)]
            terms += [nk[jj] >= nk[j] for jj in range(j)]
            terms += [nk[jj] > nk[j] for jj in range(j + 1, lanes)]
            r = Signal(_bits_for(k + lanes), name=f"rank_n{j}")
            m.d.comb += r.eq(sum(terms))
            rank_n.append(r)

        # Merged list: slot p takes the one entry whose rank is p.
        ew = 1 + w + iw
        merged = []
        for p in range(k):
            acc = Const(0, ew)
            for i in range(max(0, p - lanes), p + 1):
                acc = acc | Mux(rank_h[i] == p, Cat(h_valid[i], h_score[i], h_index[i]), 0)
            for j in range(lanes):
                acc = acc | Mux(rank_n[j] == p,
                                Cat(self.i_stream.payload.mask[j],
                                    self.i_stream.payload.score[j], n_idx[j]), 0)
            e = Signal(ew, name=f"merged{p}")
            m.d.comb += e.eq(acc)
            merged.append(e)

        m.d.comb += self.i_stream.ready.eq(~emitting)
        with m.If(self.i_stream.valid & ~emitting):
            for p in range(k):
                m.d.sync += Cat(h_valid[p], h_score[p], h_index[p]).eq(merged[p])
            with m.If(self.i_stream.payload.last):
                m.d.sync += [emitting.eq(1), base.eq(0), out_pos.eq(0)]
            with m.Else():
                m.d.sync += base.eq(base + lanes)

        m.d.comb += [
            self.o_stream.valid.eq(emitting),
            self.o_stream.payload.score.eq(h_score[0]),
            self.o_stream.payload.index.eq(h_index[0]),
            self.o_stream.payload.sel.eq(h_valid[0]),
            self.o_stream.payload.last.eq(out_pos == k - 1),
        ]
        with m.If(self.o_stream.valid & self.o_stream.ready):
            for p in range(k - 1):
                m.d.sync += [h_valid[p].eq(h_valid[p + 1]), h_score[p].eq(h_score[p + 1]),
                             h_index[p].eq(h_index[p + 1])]
            m.d.sync += h_valid[k - 1].eq(0)
            m.d.sync += out_pos.eq(out_pos + 1)
            with m.If(out_pos == k - 1):
                m.d.sync += emitting.eq(0)
        return m
