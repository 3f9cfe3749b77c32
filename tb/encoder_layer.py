"""cocotb testbench of the encoder layer.

Encoding: each sequence's first ``n_valid`` tokens are quantized to the residual format
(:func:`hadware.spec.encoder_layer.quantize_inputs`; a value outside it is refused, never
saturated) and sent on ``i_stream`` as ``d_model / lanes`` beats per token, element
``b * lanes + l`` in lane ``l`` of beat ``b``, with ``last`` on the final beat of the
sequence's last token; sequences back to back. ``o_stream`` returns the same number of beats;
:func:`decode` checks that ``last`` is set on the final beat of each sequence and nowhere else,
takes ``saturations`` from ``sat`` on that beat, and returns ``y = Y / 2**res_frac_bits``
(float32, exact) with zero rows at and beyond ``n_valid``.

The weights (W.npz) are baked into the generated RTL; ``encode`` and ``decode`` take them for
the harness's calling convention but do not need them.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from hadware.config.encoder_layer import LayerConfig
from hadware.hw.encoder_layer import EncoderLayer
from hadware.spec.encoder_layer import check_inputs, quantize_inputs
from hadware.tb.harness import run_vector_test
from hadware.tb.payload import pack, unpack

__all__ = ["decode", "decode_int", "edge_inputs", "encode", "encode_int", "latent_weights",
           "reset_mid_sequence", "vectors"]


def latent_weights(cfg: LayerConfig, seed: int, *, scale: float = 1.0
                   ) -> dict[str, np.ndarray]:
    """W.npz arrays for tests and examples: float32 latent weights, normal with standard
    deviation ``scale / sqrt(fan_in)`` (a trained layer's scale), gains from [0.5, 1.5]."""
    rng = np.random.default_rng(seed)
    d, f = cfg.d_model, cfg.d_hidden
    out = {}
    for name, shape in (("w_qkv", (3 * d, d)), ("w_o", (d, d)), ("w_gate_up", (2 * f, d)),
                        ("w_down", (d, f))):
        out[name] = rng.normal(0, scale / math.sqrt(shape[1]), shape).astype(np.float32)
    for name, size in (("g_qkv", d), ("g_o", d), ("g_gate_up", d), ("g_down", f)):
        out[name] = rng.uniform(0.5, 1.5, size).astype(np.float32)
    return out


def edge_inputs(cfg: LayerConfig, seed: int, n: int | None = None) -> dict[str, np.ndarray]:
    """IN.npz arrays of five sequences of ``n`` tokens (default ``n_max``) at the corners of
    the datapath, lengths ``n``, 1, ``top_k - 1`` (at least 1), ``top_k`` (2 and 3 for the
    standard layer) and ``n``: zero
    tokens (the BitLinears' zero-token path), tokens at the residual format's limits (the
    residual sums saturate), repeated identical tokens (every key ties: the top-k's
    lowest-index rule), one outlier element among small values, and ordinary N(0, 1)
    tokens."""
    rng = np.random.default_rng(seed)
    n = cfg.n_max if n is None else n
    d = cfg.d_model
    step = 2.0 ** -cfg.res_frac_bits
    top = 2.0 ** (cfg.res_bits - 1) * step
    seqs = np.zeros((5, n, d))
    seqs[0, 1::2] = np.where(np.arange(d) % 2, top - step, -top)     # zero / limit tokens
    seqs[1] = rng.normal(0, 1, d)                                  # one token
    seqs[2] = np.tile(rng.normal(0, 1, d), (n, 1))                 # identical tokens
    seqs[3] = rng.normal(0, 0.05, (n, d))
    seqs[3, :, int(rng.integers(0, d))] = 0.75 * top               # one outlier element
    seqs[4] = rng.normal(0, 1, (n, d))
    k = getattr(cfg, "top_k", 3)    # the standard layer keeps every key: lengths 2 and 3
    lengths = [n, 1, max(1, min(n, k - 1)), min(n, k), n]
    return {"x": np.clip(seqs, -top, top - step), "n_valid": np.array(lengths)}


def encode_int(cfg: LayerConfig, x_int: np.ndarray, n_valid: Sequence[int]) -> list[int]:
    """The ``i_stream`` beats of residual-format integers ``x_int`` ``(b, n, d_model)``, the
    first ``n_valid[s]`` tokens of sequence ``s``."""
    layout = EncoderLayer.layouts(cfg)[0]
    lanes, beats = cfg.lanes, cfg.token_beats
    out = []
    for seq, nv in zip(np.asarray(x_int), n_valid, strict=True):
        for t in range(int(nv)):
            for b in range(beats):
                last = t == nv - 1 and b == beats - 1
                out.append(pack(layout, {"x": [int(v) for v in
                                               seq[t, b * lanes:(b + 1) * lanes]],
                                         "last": int(last)}))
    return out


def decode_int(cfg: LayerConfig, n_valid: Sequence[int], n: int,
               beats: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(Y int64 (b, n, d_model), saturations int64 (b,))`` of ``o_stream`` beats. Raises
    ``ValueError`` for a wrong beat count or a misplaced ``last``."""
    layout = EncoderLayer.layouts(cfg)[1]
    per_token = cfg.token_beats
    want = per_token * int(sum(n_valid))
    if len(beats) != want:
        raise ValueError(f"{len(beats)} output beats, expected {want}")
    y = np.zeros((len(n_valid), n, cfg.d_model), dtype=np.int64)
    sat = np.zeros(len(n_valid), dtype=np.int64)
    i = 0
    for s, nv in enumerate(n_valid):
        for t in range(int(nv)):
            for b in range(per_token):
                f = unpack(layout, beats[i])
                end = t == nv - 1 and b == per_token - 1
                if f["last"] != end:
                    raise ValueError(f"output beat {i} (sequence {s}, token {t}, beat {b}): "
                                     f"last = {f['last']}, expected {int(end)}")
                y[s, t, b * cfg.lanes:(b + 1) * cfg.lanes] = f["y"]
                if end:
                    sat[s] = f["sat"]
                i += 1
    return y, sat


def encode(cfg: LayerConfig, arrays: Mapping[str, np.ndarray],
           weights: Mapping[str, Any] | None = None) -> dict:
    """Input beats of IN.npz (checked and quantized here) and the output beat count."""
    a = check_inputs(cfg, arrays)
    beats = encode_int(cfg, quantize_inputs(cfg, a), a["n_valid"])
    return {"streams": {"i_stream": beats}, "expected": {"o_stream": len(beats)}}


def decode(cfg: LayerConfig, arrays: Mapping[str, np.ndarray],
           weights: Mapping[str, Any] | None, beats: Mapping[str, list[int]]
           ) -> dict[str, np.ndarray]:
    """``{"y": float32 (b, n, d_model), "saturations": int64 (b,)}`` from ``o_stream``."""
    a = check_inputs(cfg, arrays)
    y, sat = decode_int(cfg, a["n_valid"], a["x"].shape[1], beats["o_stream"])
    return {"y": (y.astype(np.float64) / 2.0 ** cfg.res_frac_bits).astype(np.float32),
            "saturations": sat}


@cocotb.test()
async def vectors(dut):
    """Drive the run folder's sequences through the layer and score the outputs."""
    await run_vector_test(dut, sys.modules[__name__])



async def _half_sequence(dut, cfg: LayerConfig, streams: Mapping[str, list[int]]) -> None:
    """Send every beat of the first sequence but its last (the layer is then still taking
    tokens, the earlier ones projected into its query buffer and the cores' contexts), let it
    run 20 more cycles and check that nothing came out."""
    layout = EncoderLayer.layouts(cfg)[0]
    beats = streams["i_stream"]
    first_last = next(i for i, b in enumerate(beats) if unpack(layout, b)["last"])
    dut.o_stream__ready.value = 1
    for beat in beats[:first_last]:
        await FallingEdge(dut.clk)
        dut.i_stream__payload.value = beat
        dut.i_stream__valid.value = 1
        while True:
            await ReadOnly()
            taken = int(dut.i_stream__ready.value)
            await RisingEdge(dut.clk)
            if taken:
                break
            await FallingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.i_stream__valid.value = 0
    for _ in range(20):
        await ReadOnly()
        assert not int(dut.o_stream__valid.value), "output before the sequence was complete"
        await FallingEdge(dut.clk)


@cocotb.test()
async def reset_mid_sequence(dut):
    """All of the first sequence but its last beat, a reset, then the run folder's sequences:
    the outputs must be theirs alone (scored against the golden model)."""
    await run_vector_test(dut, sys.modules[__name__], prelude=_half_sequence)
