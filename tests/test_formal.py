"""Formal stream specifications of every registered block (:mod:`hadware.tb.formal`), run
through SymbiYosys with yices at the blocks' small configurations (:func:`~hadware.tb.formal.
small_config`).

For each block, with B the contract's bound (score_unit: its latency; topk: top_k; the
attention cores: the documented cycles of a query over n_max keys, 23 to 28 here; mlp:
max(latency, interval), 84):

* ``stable``, the stream rules on every output stream: proved by k-induction (depth 4) for
  score_unit, topk and mlp (:data:`PROVE_STABLE`); bounded (BMC, depth B + 3) for the
  attention cores, whose induction fails on unreachable divider and scan states;
* ``count``, no response without an earlier accepted request and at most ``in_flight``
  outstanding: BMC, depth B + 4 (induction fails: the harness's counter is not tied to the
  block's state);
* ``live``, the consumer always ready: every accepted request is answered within B cycles
  (with ``count``: exactly one response each): BMC, depth B + 4;
* ``cover``: a response transfer is reachable within B + 3 steps.

Each property group has negative controls, broken variants of the block's response stream
that must fail (``DONE (FAIL``) at the assertion they break (:data:`EXPECTED`). The runs too
slow for the fast tier (:data:`SLOW`: the payload checks of the dense and int8 attention
cores keep their whole datapath in the problem) and the larger configurations are marked
``full``. Every block's checks run, the MLP's too (its first response is 84 cycles deep: in
reach through the exact cone-of-influence reduction of :data:`hadware.tb.formal.SCRIPT` and
the yices solver). A missing solver fails the tests, never skips them.
"""

from __future__ import annotations

import pytest

from hadware.blocks import BLOCKS
from hadware.tb import formal as F

pytestmark = pytest.mark.formal

NAMES = list(BLOCKS)

#: Blocks whose stream stability is proved by k-induction (depth 4); the others (the attention
#: cores: induction fails on unreachable divider and scan states) are checked by BMC.
PROVE_STABLE = {"score_unit", "topk", "mlp"}

#: (block, check or mutation) pairs too slow for the fast tier (10 to 16 s each here): the
#: payload of the dense and int8 attention cores keeps their whole datapath in the problem.
SLOW = {(n, c) for n in ("std_attention", "int8_topk_attention", "binary_dense_attention")
        for c in ("stable", "payload", "drop_valid")}
#: The encoder layer's bound is a whole sequence (509 cycles at its formal configuration) and
#: its stream stability does not hold by induction (unreachable states of its phases): every
#: one of its runs is a deep BMC, in the full tier.
SLOW |= {(layer, c) for layer in ("encoder_layer", "std_layer")
         for c in (*F.CHECKS, *F.MUTATIONS)}
#: The MLP's two deepest negative controls (about a minute each): the same mutations are caught
#: on every other block in the fast tier, and the MLP's own proofs stay there.
SLOW |= {("mlp", "payload"), ("mlp", "drop_valid")}

#: The assertions each broken variant may be caught by (a swallowed response shows as a
#: request waiting too long, or, when the block takes the next request first, as one request
#: too many outstanding).
EXPECTED = {"payload": {"stable.payload"}, "drop_valid": {"stable.valid"},
            "reset_valid": {"stable.reset"},
            "extra": {"count.response_without_request", "count.beats"},
            "drop": {"live.bound", "count.in_flight"}}


def _require_tools():
    why = F.solver_missing()
    if why:
        pytest.fail(f"the formal checks cannot run: {why}", pytrace=False)


def _params(items):
    out = []
    for name in NAMES:
        for item in items:
            marks = [pytest.mark.full, pytest.mark.timeout(3600)] if (name, item) in SLOW \
                else []
            out.append(pytest.param(name, item, marks=marks, id=f"{name}-{item}"))
    return out


def _plan(name: str, check: str, contract: F.Contract) -> tuple[str, int]:
    """Mode and depth of ``check`` (or of a mutation's run) for block ``name``."""
    if check == "stable" and name in PROVE_STABLE:
        return "prove", 4
    if check == "reset_valid":
        return "bmc", 4  # fails in the cycle after the first reset
    if check in ("stable", "cover", "payload", "drop_valid"):
        return ("cover" if check == "cover" else "bmc"), contract.bound + 3
    return "bmc", contract.bound + 4


def _run(name, checks, mode, depth, tmp_path, *, mutation=None, large=False, timeout=600):
    _require_tools()
    component = F.make_component(name, F.small_config(name, large=large))
    contract = F.contract(name, component)
    spec = F.StreamSpec(component, contract, checks, mutation, depth=depth)
    return F.run_sby(spec, tmp_path / "sby", mode=mode, depth=depth, timeout=timeout)


def _contract(name, large=False):
    component = F.make_component(name, F.small_config(name, large=large))
    component._MustUse__silence = True  # only its contract is wanted, it is never elaborated
    return F.contract(name, component)


@pytest.mark.parametrize(("name", "check"), _params(["stable", "count", "live", "cover"]))
def test_stream_proof(name, check, tmp_path):
    mode, depth = _plan(name, check, _contract(name))
    r = _run(name, (check,), mode, depth, tmp_path,
             timeout=3000 if (name, check) in SLOW else 600)
    assert r.status == "PASS", (f"{name} {check} ({mode}, depth {depth}): {r.status}, "
                                f"failed {r.failed or r.induction_failed}\n{r.log[-3000:]}")


@pytest.mark.parametrize(("name", "mutation"), _params(list(F.MUTATIONS)))
def test_negative_control(name, mutation, tmp_path):
    """The broken variant fails the proof, at the assertion it breaks."""
    check = F.MUTATIONS[mutation]
    mode, depth = _plan(name, mutation, _contract(name))
    r = _run(name, (check,), mode, depth, tmp_path, mutation=mutation,
             timeout=3000 if (name, mutation) in SLOW else 600)
    assert r.status == "FAIL", f"{name} {mutation}: {r.status}\n{r.log[-3000:]}"
    assert EXPECTED[mutation] & {label for label, _ in r.failed}, r.failed


@pytest.mark.full
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("check", ["stable", "count", "live"])
@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("mlp", "encoder_layer")])
def test_stream_proof_large(name, check, tmp_path):
    """The bounded checks at the larger configuration."""
    depth = _contract(name, large=True).bound + 4
    r = _run(name, (check,), "bmc", depth, tmp_path, large=True, timeout=3000)
    assert r.status == "PASS", f"{name} {check}: {r.status}, failed {r.failed}\n{r.log[-3000:]}"


def test_every_block_has_a_contract():
    """Each registered block (attention variants included) has a formal contract and a small
    configuration; a new block without them fails here."""
    for name in NAMES:
        contract = _contract(name)
        assert contract.bound >= 1 and contract.request and contract.response


def test_bad_arguments():
    component = F.make_component("score_unit", F.small_config("score_unit"))
    component._MustUse__silence = True
    contract = F.contract("score_unit", component)
    with pytest.raises(ValueError, match=r"checks must be taken from .*, not 'x'"):
        F.StreamSpec(component, contract, ("x",))
    with pytest.raises(ValueError, match=r"mutation must be one of .*, not 'y'"):
        F.StreamSpec(component, contract, ("stable",), "y")


def test_missing_solver_is_reported(monkeypatch):
    """Without the solver on PATH the checks report why (and the tests above fail, never
    skip)."""
    monkeypatch.setattr(F, "tool_env", lambda: {"PATH": "/nonexistent"})
    assert f"{F.SOLVER_TOOLS[F.SOLVER][0]} not found" in F.solver_missing()
