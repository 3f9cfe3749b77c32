"""Shared test data of the attention family: the registered variants, small configurations of
each, and random or extreme vector sets by scorer (a helper module, not a test file)."""

from __future__ import annotations

import dataclasses

import numpy as np
from amaranth.sim import Simulator

from hadware.blocks import BLOCKS
from hadware.config.attention_core import AttentionCoreConfig

#: Names of the registered attention variants.
VARIANTS = [name for name, b in BLOCKS.items()
            if issubclass(b.config_class(), AttentionCoreConfig)]

#: Geometries exercised for every variant (fields a variant lacks are dropped): one lane,
#: lanes not dividing n_max, top_k = n_max, lanes = n_max; the binarized top-k core with each
#: of its top-k units (merge, counting, counting with overlapped passes); a run-time table
#: (RAM, its initial content) in the third; the output scaler cut into small pieces (as built
#: from logic) in the second; the weight multipliers built from adders in the third.
_HAMMING = [
    dict(d=8, n_max=6, top_k=2, d_v=1, lanes=1, temperature=0.3, exp_frac_bits=10,
         out_frac_bits=2),
    dict(d=16, n_max=10, top_k=3, d_v=2, lanes=3, temperature=0.2, exp_frac_bits=14,
         out_frac_bits=4, topk_unit="counting", scale_piece=4),
    dict(d=24, n_max=16, top_k=16, d_v=3, lanes=4, temperature=0.05, exp_frac_bits=12,
         out_frac_bits=6, runtime_temperature=True, topk_unit="counting_overlapped",
         weight_mul="adders"),
    dict(d=32, n_max=12, top_k=4, d_v=4, lanes=12, temperature=0.1, exp_frac_bits=16,
         out_frac_bits=8, topk_unit="systolic"),
]
#: Configurations whose back-to-back queries are limited by the front (many rows against the
#: output stage), one per kind of front.
FRONT_BOUND = [
    ("attention", dict(d=16, n_max=64, top_k=4, d_v=2, lanes=1, topk_unit="counting")),
    ("attention", dict(d=16, n_max=64, top_k=4, d_v=2, lanes=1,
                       topk_unit="counting_overlapped")),
    ("attention", dict(d=16, n_max=40, top_k=24, d_v=2, lanes=4, topk_unit="counting")),
    ("attention", dict(d=16, n_max=64, top_k=24, d_v=2, lanes=2, topk_unit="merge",
                       exp_frac_bits=8)),
    ("binary_dense_attention", dict(d=16, n_max=64, d_v=2, lanes=1)),
    ("std_attention", dict(d=8, n_max=64, d_v=2, lanes=2)),
    ("int8_topk_attention", dict(d=8, n_max=40, top_k=30, d_v=2, lanes=8, exp_frac_bits=8)),
    # the systolic top-k: bound by the scan, then by its drain (2 top_k + ceil(log2(lanes)) + 2)
    ("int8_topk_attention", dict(d=8, n_max=64, top_k=4, d_v=2, lanes=1, topk_unit="systolic")),
    ("int8_topk_attention", dict(d=8, n_max=40, top_k=30, d_v=2, lanes=8, exp_frac_bits=8,
                                 topk_unit="systolic")),
]

#: A configuration whose back-to-back queries are limited by the slot weighting (many slots,
#: few rows, a short output stage).
WEIGHTING_BOUND = [
    ("attention", dict(d=16, n_max=64, top_k=48, d_v=1, lanes=8, exp_frac_bits=8,
                       out_frac_bits=2, topk_unit="counting_overlapped")),
]

_INT8 = [
    dict(d=1, n_max=6, top_k=2, d_v=1, lanes=1, temperature=2**-12, exp_frac_bits=10,
         out_frac_bits=2, exp_table_bits=3, exp_interp_bits=0),
    dict(d=5, n_max=10, top_k=3, d_v=2, lanes=3, temperature=2**-13, exp_frac_bits=14,
         out_frac_bits=4, exp_table_bits=4, exp_interp_bits=6, topk_unit="systolic",
         scale_piece=5),
    dict(d=16, n_max=16, top_k=16, d_v=3, lanes=4, temperature=2**-14, exp_frac_bits=19,
         out_frac_bits=8, weight_mul="adders"),
    dict(d=8, n_max=12, top_k=4, d_v=2, lanes=12, temperature=0.001, exp_frac_bits=16,
         out_frac_bits=8),
]


def make(cls, **fields):
    """``cls(**fields)`` with the fields ``cls`` does not have left out."""
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in fields.items() if k in known})


def configs(name: str) -> list:
    """The small configurations of variant ``name``."""
    cls = BLOCKS[name].config_class()
    return [make(cls, **g) for g in (_HAMMING if cls.scorer == "hamming" else _INT8)]


def cases(*, index: int | None = None) -> list:
    """``(name, cfg)`` pairs of every variant (only the ``index``-th geometry when given)."""
    return [(name, cfg) for name in VARIANTS
            for i, cfg in enumerate(configs(name)) if index is None or i == index]


def ident(case) -> str:
    name, c = case
    unit = {"counting": "c", "counting_overlapped": "o", "systolic": "s"}.get(
        getattr(c, "topk_unit", ""), "")
    k = f"k{c.top_k}{unit}" if c.sparsifier == "topk" else ""
    return f"{name}-d{c.d}n{c.n_max}{k}l{c.lanes}"


def _qk(cfg, rng, shape):
    if cfg.scorer == "hamming":
        return rng.choice(np.array([-1, 1], np.int8), shape)
    return rng.integers(-128, 128, shape).astype(np.int8)


def random_arrays(cfg, m, seed, *, n=None, key_pool=None):
    """Random queries, keys (from ``key_pool`` distinct rows when given: many equal scores),
    values and ``n_valid``."""
    rng = np.random.default_rng(seed)
    n = cfg.n_max if n is None else n
    if key_pool is None:
        k = _qk(cfg, rng, (n, cfg.d))
    else:
        k = _qk(cfg, rng, (key_pool, cfg.d))[rng.integers(0, key_pool, n)]
    return {"q": _qk(cfg, rng, (m, cfg.d)), "k": k,
            "v": rng.integers(-128, 128, (n, cfg.d_v)).astype(np.int8),
            "n_valid": rng.integers(1, n + 1, m)}


def extreme_arrays(cfg):
    """The largest score difference (binarized: keys equal to the query and to its negation;
    int8: q all -128, keys alternately all -128 and all 127), values -128 and 127."""
    n = cfg.n_max
    alternate = np.arange(n)[:, None] % 2 == 0
    if cfg.scorer == "hamming":
        q = np.ones((3, cfg.d), np.int8)
        q[:, ::3] = -1
        k = np.where(alternate, q[:1], -q[:1])
    else:
        q = np.full((3, cfg.d), -128, np.int8)
        k = np.where(alternate, -128, 127) * np.ones((1, cfg.d), np.int64)
    v = np.where(np.arange(n)[:, None] % 3 == 0, 127, -128) * np.ones((1, cfg.d_v), np.int64)
    return {"q": q, "k": k.astype(np.int8), "v": v.astype(np.int8),
            "n_valid": np.array([n, 1, min(2, n)])}


def run_pipeline(dut, beats: list[dict], output: str, held: dict | None = None) -> list[int]:
    """A pipelined unit with a ``latency`` attribute in the Amaranth simulator: one beat of
    inputs (member name: value) per cycle, ``held`` inputs set throughout; returns the
    ``output`` member's value for each beat, ``latency`` cycles after it."""
    got = []

    async def tb(ctx):
        for name, value in (held or {}).items():
            ctx.set(getattr(dut, name), value)
        for i in range(len(beats) + dut.latency):
            for name, value in (beats[i] if i < len(beats) else {}).items():
                ctx.set(getattr(dut, name), value)
            await ctx.tick()
            if i + 1 >= dut.latency:
                got.append(ctx.get(getattr(dut, output)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return got[:len(beats)]


def run_exp_unit(dut, deltas, masks, inputs: dict | None = None) -> list[int]:
    """An exponential unit: one difference per cycle (with its mask), ``inputs`` held
    throughout; returns ``e`` of each."""
    beats = [{"delta": d, "mask": mk} for d, mk in zip(deltas, masks, strict=True)]
    return run_pipeline(dut, beats, "e", inputs)
