"""Systolic top-k: the formal stream specifications of :mod:`hadware.tb.formal` (SymbiYosys
with yices) beyond the registry-wide ones of test_formal.py: stability by k-induction, and the
contract's bound (a request is the ``last`` input beat, its response the output beat with
``last``, two queries in flight, the bound ``worst_case_cycles = 2 top_k + ceil(log2(lanes))
+ 2`` from the docstring; inputs are free, so over-long queries and any masks are included)
shown to hold and to be tight, at two lanes (one merge node) and at three (an odd tree)."""

from __future__ import annotations

import dataclasses

import pytest

from hadware.config.systolic_topk import SystolicTopKConfig
from hadware.hw.systolic_topk import SystolicTopK
from hadware.tb import formal as F

pytestmark = pytest.mark.formal

UNITS = [SystolicTopKConfig(top_k=2, lanes=2, n_max=4, score_width=3),
         SystolicTopKConfig(top_k=1, lanes=3, n_max=3, score_width=2)]


def contract(cfg: SystolicTopKConfig, bound: int | None = None) -> F.Contract:
    """The registry's contract of the block at ``cfg`` (``bound``: another bound)."""
    component = SystolicTopK(cfg)
    component._MustUse__silence = True  # only its contract is wanted
    c = F.contract("systolic_topk", component)
    assert c.bound == 2 * cfg.top_k + {2: 1, 3: 2}[cfg.lanes] + 2
    return c if bound is None else dataclasses.replace(c, bound=bound)


def depth(cfg):
    """Deep enough for the worst case: a query, then one collected while the first one leaves,
    answered within the bound after it."""
    return 2 * SystolicTopK.worst_case_cycles(cfg) + 6


def run(cfg, checks, mode, depth, tmp_path, bound=None):
    why = F.solver_missing()
    if why:
        pytest.fail(f"the formal checks cannot run: {why}", pytrace=False)
    spec = F.StreamSpec(SystolicTopK(cfg), contract(cfg, bound), checks, depth=depth)
    return F.run_sby(spec, tmp_path / "sby", mode=mode, depth=depth, timeout=300)


@pytest.mark.parametrize("cfg", UNITS, ids=str)
def test_stability_by_induction(cfg, tmp_path):
    """The stream rules of o_stream hold in every state, reachable or not, by k-induction."""
    r = run(cfg, ("stable",), "prove", 2, tmp_path)
    assert r.status == "PASS", f"{r.status}, failed {r.induction_failed}\n{r.log[-3000:]}"


@pytest.mark.parametrize("cfg", UNITS, ids=str)
def test_the_bound_holds(cfg, tmp_path):
    r = run(cfg, ("live",), "bmc", depth(cfg), tmp_path)
    assert r.status == "PASS", f"{r.status}, failed {r.failed}\n{r.log[-3000:]}"


@pytest.mark.parametrize("cfg", UNITS, ids=str)
def test_the_bound_is_tight(cfg, tmp_path):
    """One cycle less than the documented worst case is refuted."""
    r = run(cfg, ("live",), "bmc", depth(cfg), tmp_path,
            bound=SystolicTopK.worst_case_cycles(cfg) - 1)
    assert r.status == "FAIL" and "live.bound" in {label for label, _ in r.failed}, r.status
