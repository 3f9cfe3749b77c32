"""Batched attention vector files, every registered variant: a leading batch axis of
independent contexts through the golden model (each entry exactly as the unbatched file of its
own) and through one Verilator simulation with random idles and stalls (the context cleared
between entries), bit for bit; the command line on a batched file. The contract's errors are
in test_spec_attention_vectors.py."""

from __future__ import annotations

import numpy as np
import pytest
from attention_family import VARIANTS, configs, random_arrays

from hadware.blocks import BLOCKS
from hadware.cli import main
from hadware.tb.runner import simulate

TOPK = [name for name in VARIANTS if BLOCKS[name].config_class().sparsifier == "topk"]
#: The sim tests' variants: HAD and the int8 top-k core (the other two: golden only).
SIM = ["attention", "int8_topk_attention"]


def _golden(name):
    return BLOCKS[name].golden_module()


def _top_k(cfg) -> int:
    return getattr(cfg, "top_k", 3)


def stack(entries: list[dict]) -> dict[str, np.ndarray]:
    return {x: np.stack([e[x] for e in entries]) for x in entries[0]}


def contexts(cfg, b: int, m: int, seed: int) -> tuple[dict[str, np.ndarray], list[dict]]:
    """A batched file of ``b`` independent contexts with ``n = n_max`` key rows, and the
    unbatched file each entry stands for. Entry ``e`` uses only its first ``n_e`` keys (in
    turn 1, top_k - 1, n_max and a random count; the rows beyond are random padding that
    ``n_valid <= n_e`` keeps out); its first query sees all ``n_e`` keys, the others a random
    part; every fifth entry draws its keys from two rows (ties)."""
    rng = np.random.default_rng(seed)
    cycle = [1, max(1, _top_k(cfg) - 1), cfg.n_max]
    batched, own = [], []
    for e in range(b):
        n_e = cycle[e % 4] if e % 4 < 3 else int(rng.integers(1, cfg.n_max + 1))
        a = random_arrays(cfg, m, seed=seed * 1000 + e, key_pool=2 if e % 5 == 4 else None)
        a["n_valid"] = rng.integers(1, n_e + 1, m)
        a["n_valid"][0] = n_e
        batched.append(a)
        own.append(dict(a, k=a["k"][:n_e], v=a["v"][:n_e]))
    return stack(batched), own


def assert_entries(got: dict[str, np.ndarray], cfg, name, own: list[dict]) -> None:
    """``got`` (batched outputs) equals the golden outputs of each entry's own file."""
    golden = _golden(name)
    for e, a in enumerate(own):
        want = golden.run_vectors(cfg, a)
        assert sorted(got) == sorted(want)
        for array in want:
            np.testing.assert_array_equal(got[array][e], want[array], err_msg=f"{array}[{e}]")


# -- golden model ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("geometry", [0, 1, 2])
def test_golden_batched_equals_each_entry_unbatched(name, geometry):
    cfg = configs(name)[geometry]
    batched, own = contexts(cfg, 12, 3, seed=geometry)
    got = _golden(name).run_vectors(cfg, batched)
    for array, a in got.items():
        assert a.dtype == np.int32
        assert a.shape[:2] == (12, 3), array
    assert_entries(got, cfg, name, own)


@pytest.mark.parametrize("name", VARIANTS)
def test_golden_batched_arrays_of_every_key_count(name):
    """The file's own key count n = 1, n < top_k and n = n_max, with and without n_valid."""
    cfg = configs(name)[1]
    golden = _golden(name)
    for n in (1, max(1, _top_k(cfg) - 1), cfg.n_max):
        entries = [random_arrays(cfg, 4, seed=50 + s, n=n) for s in range(5)]
        for drop in (False, True):
            if drop:
                entries = [{x: a[x] for x in ("q", "k", "v")} for a in entries]
            got = golden.run_vectors(cfg, stack(entries))
            assert_entries(got, cfg, name, entries)


@pytest.mark.parametrize("name", VARIANTS)
def test_golden_entries_are_independent(name):
    """Reversing the entries reverses the outputs; one entry alone gives the unbatched
    outputs with the batch axis of one."""
    cfg = configs(name)[1]
    golden = _golden(name)
    batched, own = contexts(cfg, 8, 3, seed=7)
    fwd = golden.run_vectors(cfg, batched)
    rev = golden.run_vectors(cfg, {x: a[::-1] for x, a in batched.items()})
    for array in fwd:
        np.testing.assert_array_equal(rev[array], fwd[array][::-1])
    one = golden.run_vectors(cfg, {x: a[:1] for x, a in batched.items()})
    alone = golden.run_vectors(cfg, {x: a[0] for x, a in batched.items()})
    for array in one:
        np.testing.assert_array_equal(one[array], alone[array][None])
    ref = golden.float_reference(cfg, batched)
    assert ref.shape == (8, 3, cfg.d_v)
    for e, a in enumerate(own):
        np.testing.assert_allclose(ref[e], golden.float_reference(cfg, a), rtol=0, atol=1e-9)


# -- Verilator -------------------------------------------------------------------------------


@pytest.mark.sim
@pytest.mark.parametrize("name", SIM)
def test_verilator_hundred_contexts_in_one_run(name):
    """104 contexts of 3 queries in one simulation with random idles and stalls: the cocotb
    scoreboard against the golden model, and each entry against its own unbatched file."""
    cfg = configs(name)[1]
    batched, own = contexts(cfg, 104, 3, seed=11)
    want = _golden(name).run_vectors(cfg, batched)
    r = simulate(name, cfg, batched, golden=True, seed=11, idle_prob=0.3, stall_prob=0.4)
    assert sorted(r.outputs) == sorted(want)
    for array in want:
        np.testing.assert_array_equal(r.outputs[array], want[array], err_msg=array)
    assert len(r.stats["out_cycles"]["o_stream"]) == 104 * 3
    assert len(r.stats["in_cycles"]["ctx_stream"]) == 104 * (cfg.n_max + 1)
    assert_entries(r.outputs, cfg, name, own)


@pytest.mark.sim
@pytest.mark.parametrize("name", SIM)
def test_verilator_batched_file_with_fewer_keys_than_top_k(name):
    cfg = configs(name)[1]
    n = _top_k(cfg) - 1
    entries = [random_arrays(cfg, 2, seed=60 + s, n=n) for s in range(6)]
    batched = stack(entries)
    r = simulate(name, cfg, batched, golden=True, seed=12, idle_prob=0.2, stall_prob=0.5)
    assert_entries(r.outputs, cfg, name, entries)


@pytest.mark.sim
def test_cli_golden_and_sim_on_a_batched_file(tmp_path):
    name = "attention"
    cfg = configs(name)[1]
    cfg.save(tmp_path / "cfg.json")
    batched, own = contexts(cfg, 5, 2, seed=13)
    np.savez(tmp_path / "in.npz", **batched)
    common = [name, "--config", str(tmp_path / "cfg.json"), "--inputs", str(tmp_path / "in.npz")]
    assert main(["golden", *common, "--outputs", str(tmp_path / "g.npz")]) == 0
    assert main(["sim", *common, "--outputs", str(tmp_path / "s.npz"), "--stall", "0.3"]) == 0
    with np.load(tmp_path / "g.npz") as g, np.load(tmp_path / "s.npz") as s:
        got = {x: g[x] for x in g.files}
        assert sorted(s.files) == sorted(got) == ["out", "topk_index", "topk_score"]
        for array in got:
            np.testing.assert_array_equal(s[array], got[array])
    assert got["out"].shape == (5, 2, cfg.d_v)
    assert_entries(got, cfg, name, own)
