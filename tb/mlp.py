"""cocotb testbench of the ternary GLU MLP block.

Encoding: each token ``x`` (float, ``(t, d_model)``) is first quantized to the hardware's input
format with :func:`hadware.golden.mlp.quantize_input` (the host-side step 0 of the
specification: mantissas and one exponent per token), then sent on ``i_stream`` as
``d_model / lanes`` beats of ``lanes`` mantissas, element ``b*lanes + l`` in lane ``l`` of beat
``b``, the token's exponent on every beat, tokens back to back. ``o_stream`` returns
the same number of beats; :func:`decode` checks the ``last`` flags (set on the final beat of each
token and nowhere else) and returns ``y = Y / 2**y_frac_bits`` as float32 (exact: ``Y`` has at
most 24 bits).

The weights (W.npz, the block's extra file) are baked into the generated RTL; ``encode`` and
``decode`` take them for the harness's calling convention but do not need them.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import cocotb
import numpy as np

from hadware.config.mlp import MlpConfig
from hadware.golden.mlp import quantize_input
from hadware.hw.mlp import Mlp
from hadware.tb.harness import run_vector_test
from hadware.tb.payload import pack, unpack

__all__ = ["WEIGHT_KINDS", "decode", "decode_int", "edge_tokens", "encode", "encode_int",
           "latent_weights"]

#: Kinds of latent weight tensors :func:`latent_weights` makes.
WEIGHT_KINDS = ("random", "zero", "plus", "minus")


def latent_weights(cfg: MlpConfig, seed: int, *, gate_up: str = "random",
                   down: str = "random", scale: float = 1.0) -> dict[str, np.ndarray]:
    """W.npz arrays for tests and examples: float32 latent weights of each layer of the given
    kind and gains drawn from [0.5, 1.5].

    ``"random"``: normal with standard deviation ``scale / sqrt(fan_in)`` (a trained layer's
    scale); ``"zero"``: all 0 (every code 0); ``"plus"`` / ``"minus"``: all ``+-scale /
    sqrt(fan_in)`` (every code +1 / -1). Raises ``ValueError`` for another kind.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name, kind, shape in (("w_gate_up", gate_up, (2 * cfg.d_hidden, cfg.d_model)),
                              ("w_down", down, (cfg.d_model, cfg.d_hidden))):
        if kind not in WEIGHT_KINDS:
            raise ValueError(f"{name} kind must be one of {', '.join(WEIGHT_KINDS)}, "
                             f"not {kind!r}")
        std = scale / math.sqrt(shape[1])
        if kind == "random":
            w = rng.normal(0, std, shape)
        else:
            w = np.full(shape, {"zero": 0.0, "plus": std, "minus": -std}[kind])
        out[name] = w.astype(np.float32)
    out["g_gate_up"] = rng.uniform(0.5, 1.5, cfg.d_model).astype(np.float32)
    out["g_down"] = rng.uniform(0.5, 1.5, cfg.d_hidden).astype(np.float32)
    return out


def edge_tokens(cfg: MlpConfig, seed: int) -> np.ndarray:
    """Float tokens ``(13, d_model)`` at the corners of the datapath: all zero, all equal
    (positive and negative), one huge outlier among small values, one value far beyond the
    others (the largest exponents), the smallest non-zero input alone (mantissa 1 at the
    smallest exponent), the mantissas' limits at exponent 0 (all at the negative limit,
    alternating limits), the largest input, a single non-zero element, and two ordinary
    N(0, 1) tokens."""
    rng = np.random.default_rng(seed)
    d = cfg.d_model
    g = cfg.gate_up
    step = 2.0 ** (g.exp_min - cfg.x_frac_bits)  # the smallest non-zero input
    top = 2.0 ** (cfg.x_bits - 1 - cfg.x_frac_bits)  # exponent 0: [-top, top - 2**-x_frac_bits]
    largest = (2.0 ** (cfg.x_bits - 1) - 1) * 2.0 ** (g.exp_max - cfg.x_frac_bits)
    pos = int(rng.integers(0, d))
    outlier = rng.normal(0, 0.01, d)
    outlier[pos] = 0.8 * top
    far = rng.normal(0, 1, d)
    far[pos] = min(1e6, largest)
    biggest = np.zeros(d)
    biggest[pos] = largest
    tiny = np.zeros(d)
    tiny[pos] = step
    single = np.zeros(d)
    single[-1] = -1.5
    rows = [np.zeros(d), np.full(d, 0.5), np.full(d, -1.25), outlier, far, tiny,
            np.full(d, -top), np.where(np.arange(d) % 2 == 0, -top, top - 2.0 ** -cfg.x_frac_bits),
            biggest, -biggest, single, rng.normal(0, 1, d), rng.normal(0, 1, d)]
    return np.vstack(rows)


def encode_int(cfg: MlpConfig, x_int: np.ndarray, x_exp: Sequence[int] | None = None
               ) -> list[int]:
    """The ``i_stream`` beats of token mantissas ``x_int`` ``(t, d_model)`` and exponents
    ``x_exp`` ``(t,)`` (default 0; omitted from the beats when ``x_exp_bits = 0``)."""
    layout = Mlp.layouts(cfg)[0]
    lanes = cfg.lanes
    x_int = np.asarray(x_int)
    exps = np.zeros(len(x_int), dtype=np.int64) if x_exp is None else np.asarray(x_exp)
    beats = []
    for row, e in zip(x_int, exps, strict=True):
        for b in range(cfg.d_model // lanes):
            fields = {"x": [int(v) for v in row[b * lanes:(b + 1) * lanes]]}
            if cfg.x_exp_bits:
                fields["x_exp"] = int(e)
            beats.append(pack(layout, fields))
    return beats


def decode_int(cfg: MlpConfig, beats: Sequence[int]) -> np.ndarray:
    """The integers ``Y`` ``(t, d_model)`` of ``o_stream`` beats. Raises ``ValueError`` when the
    number of beats is not a whole number of tokens or a ``last`` flag is misplaced."""
    layout = Mlp.layouts(cfg)[1]
    per_token = cfg.d_model // cfg.lanes
    if len(beats) % per_token:
        raise ValueError(f"{len(beats)} output beats are not a whole number of tokens "
                         f"({per_token} beats each)")
    rows = []
    for i, word in enumerate(beats):
        b = unpack(layout, word)
        if b["last"] != (i % per_token == per_token - 1):
            raise ValueError(f"output beat {i}: last = {b['last']}, expected "
                             f"{int(i % per_token == per_token - 1)}")
        rows.extend(b["y"])
    return np.array(rows, dtype=np.int64).reshape(-1, cfg.d_model)


def encode(cfg: MlpConfig, arrays: Mapping[str, np.ndarray],
           weights: Mapping[str, Any] | None = None) -> dict:
    """Input beats of ``arrays["x"]`` (float, quantized here) and the output beat count."""
    x, x_exp = quantize_input(cfg, arrays["x"])
    beats = encode_int(cfg, x.numpy(), x_exp.numpy())
    return {"streams": {"i_stream": beats}, "expected": {"o_stream": len(beats)}}


def decode(cfg: MlpConfig, arrays: Mapping[str, np.ndarray], weights: Mapping[str, Any] | None,
           beats: Mapping[str, list[int]]) -> dict[str, np.ndarray]:
    """``{"y": float32 (t, d_model)}`` from the ``o_stream`` beats."""
    y = decode_int(cfg, beats["o_stream"])
    return {"y": (y.astype(np.float64) / 2.0 ** cfg.y_frac_bits).astype(np.float32)}


@cocotb.test()
async def vectors(dut):
    """Drive the run folder's tokens through the MLP block and score the outputs."""
    await run_vector_test(dut, sys.modules[__name__])
