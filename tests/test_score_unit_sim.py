"""Score unit: generated Verilog simulated by Verilator (and Icarus) through cocotb, against
the golden model, with random stalls on both streams."""

from __future__ import annotations

import numpy as np
import pytest

from hadware.config.score_unit import ScoreUnitConfig
from hadware.errors import ToolError
from hadware.golden.score_unit import run_vectors
from hadware.hw.score_unit import score_unit_latency
from hadware.tb.runner import simulate


def vectors(cfg: ScoreUnitConfig, m: int, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    pm1 = np.array([-1, 1], dtype=np.int8)
    return {"q": rng.choice(pm1, (m, cfg.d)), "k": rng.choice(pm1, (n, cfg.d))}


CONFIGS = [ScoreUnitConfig(d=8, lanes=1), ScoreUnitConfig(d=24, lanes=3),
           ScoreUnitConfig(d=64, lanes=4)]


@pytest.mark.sim
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"d{c.d}l{c.lanes}")
@pytest.mark.parametrize(("idle", "stall", "seed"), [(0.0, 0.0, 1), (0.3, 0.5, 2)])
def test_verilator_matches_golden(cfg, idle, stall, seed):
    inputs = vectors(cfg, m=6, n=2 * cfg.lanes + 1, seed=seed)
    want = run_vectors(cfg, inputs)
    r = simulate("score_unit", cfg, inputs, seed=seed, idle_prob=idle, stall_prob=stall,
                 expected=want)
    np.testing.assert_array_equal(r.outputs["s"], want["s"])
    beats = 6 * -(-inputs["k"].shape[0] // cfg.lanes)
    assert len(r.stats["out_cycles"]["o_stream"]) == beats


@pytest.mark.sim
@pytest.mark.icarus
def test_icarus_matches_golden():
    cfg = ScoreUnitConfig(d=16, lanes=2)
    inputs = vectors(cfg, m=5, n=7, seed=3)
    want = run_vectors(cfg, inputs)
    r = simulate("score_unit", cfg, inputs, simulator="icarus", seed=3, idle_prob=0.3,
                 stall_prob=0.4, expected=want)
    np.testing.assert_array_equal(r.outputs["s"], want["s"])


@pytest.mark.sim
def test_cycle_count_follows_latency_formula():
    cfg = ScoreUnitConfig(d=64, lanes=2)
    inputs = vectors(cfg, m=10, n=2, seed=4)  # one beat per query
    r = simulate("score_unit", cfg, inputs)
    ins, outs = r.stats["in_cycles"]["i_stream"], r.stats["out_cycles"]["o_stream"]
    latency = score_unit_latency(cfg)
    assert ins == list(range(ins[0], ins[0] + 10))
    assert [o - i for i, o in zip(ins, outs, strict=True)] == [latency] * 10


@pytest.mark.sim
def test_scoreboard_catches_a_wrong_expectation():
    cfg = CONFIGS[1]
    inputs = vectors(cfg, m=3, n=4, seed=5)
    want = run_vectors(cfg, inputs)
    want["s"][1, 2] += 2
    with pytest.raises(ToolError, match="scoreboard: 1 mismatching output elements"):
        simulate("score_unit", cfg, inputs, expected=want)


@pytest.mark.sim
def test_waves_are_recorded():
    cfg = ScoreUnitConfig(d=8, lanes=1)
    r = simulate("score_unit", cfg, vectors(cfg, 2, 2, seed=6), waves=True)
    assert r.waves is not None and r.waves.stat().st_size > 0


@pytest.mark.sim
@pytest.mark.full
@pytest.mark.parametrize("cfg", [ScoreUnitConfig(d=256, lanes=8), ScoreUnitConfig(d=1024, lanes=2),
                                 ScoreUnitConfig(d=72, lanes=5)], ids=str)
def test_large_configs_long_random(cfg):
    inputs = vectors(cfg, m=40, n=5 * cfg.lanes + 3, seed=7)
    want = run_vectors(cfg, inputs)
    r = simulate("score_unit", cfg, inputs, seed=7, idle_prob=0.2, stall_prob=0.3,
                 expected=want)
    np.testing.assert_array_equal(r.outputs["s"], want["s"])
