"""Counting top-k: the formal stream specifications of :mod:`hadware.tb.formal` (SymbiYosys with
yices) beyond the registry-wide ones of test_formal.py: stability by k-induction, and the
contract's bound (a request is the ``last`` input beat, its response the output beat with
``last``, two queries in flight (four with overlapped passes), the bound ``worst_case_cycles
= rows + top_k + 5`` (``+ 7`` overlapped) from the docstring; inputs are free, so over-long
queries and scores outside the binarized set are included) shown to hold and to be tight,
for both units. (The other checks and the negative controls are
test_formal.py's, which covers every registered block.)
"""

from __future__ import annotations

import dataclasses

import pytest

from hadware.config.counting_topk import CountingTopKConfig
from hadware.hw.counting_topk import CountingTopK
from hadware.tb import formal as F

pytestmark = pytest.mark.formal

SMALL = CountingTopKConfig(top_k=2, lanes=2, n_max=4, score_width=3, d=2)
#: Both units: the passes in turn and overlapped.
UNITS = [SMALL, dataclasses.replace(SMALL, overlap=True)]


def contract(cfg: CountingTopKConfig, bound: int | None = None) -> F.Contract:
    """The registry's contract of the block at ``cfg`` (``bound``: another bound)."""
    component = CountingTopK(cfg)
    component._MustUse__silence = True  # only its contract is wanted
    c = F.contract("counting_topk", component)
    assert c.bound == cfg.rows + cfg.top_k + (7 if cfg.overlap else 5)
    return c if bound is None else dataclasses.replace(c, bound=bound)


def run(cfg, checks, mode, depth, tmp_path, mutation=None):
    why = F.solver_missing()
    if why:
        pytest.fail(f"the formal checks cannot run: {why}", pytrace=False)
    spec = F.StreamSpec(CountingTopK(cfg), contract(cfg), checks, mutation, depth=depth)
    return F.run_sby(spec, tmp_path / "sby", mode=mode, depth=depth, timeout=300)


@pytest.mark.parametrize("cfg", UNITS, ids=str)
def test_stability_by_induction(cfg, tmp_path):
    """The stream rules of o_stream hold in every state reachable or not, by k-induction at
    depth 7 (at depth 6 the induction step still starts from unreachable pipeline states;
    test_formal.py checks them by BMC)."""
    r = run(cfg, ("stable",), "prove", 7, tmp_path)
    assert r.status == "PASS", f"{r.status}, failed {r.induction_failed}\n{r.log[-3000:]}"


def depth(cfg):
    """Deep enough for the worst case: a one-beat query, then a full one collected while the
    first one's selections leave, answered within the bound after them."""
    return 2 * CountingTopK.worst_case_cycles(cfg) + 4


@pytest.mark.parametrize("cfg", UNITS, ids=str)
def test_the_bound_holds(cfg, tmp_path):
    r = run(cfg, ("live",), "bmc", depth(cfg), tmp_path)
    assert r.status == "PASS", f"{r.status}, failed {r.failed}\n{r.log[-3000:]}"


@pytest.mark.parametrize("cfg", UNITS, ids=str)
def test_the_bound_is_tight(cfg, tmp_path):
    """One cycle less than the documented worst case is refuted."""
    tight = contract(cfg, bound=CountingTopK.worst_case_cycles(cfg) - 1)
    spec = F.StreamSpec(CountingTopK(cfg), tight, ("live",), depth=depth(cfg))
    r = F.run_sby(spec, tmp_path / "sby", mode="bmc", depth=depth(cfg), timeout=300)
    assert r.status == "FAIL" and "live.bound" in {label for label, _ in r.failed}, r.status
