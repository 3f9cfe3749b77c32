"""cocotb testbench of the int8 top-k attention baseline.

The stream encoding is shared by the attention baselines: see
:mod:`hadware.tb.binary_dense_attention` (keys and queries are packed as ``d`` signed bytes).
"""

from __future__ import annotations

import sys

import cocotb
import numpy as np

from hadware.hw.int8_topk_attention import Int8TopKAttention
from hadware.tb.binary_dense_attention import (
    decode_beats,
    encode_block,
    refill_test,
    reset_mid_query_test,
)
from hadware.tb.harness import run_vector_test

__all__ = ["decode", "encode"]

BLOCK = Int8TopKAttention


def encode(cfg, arrays: dict[str, np.ndarray]) -> dict:
    return encode_block(BLOCK, cfg, arrays)


def decode(cfg, arrays: dict[str, np.ndarray], beats: dict[str, list[int]]) -> dict:
    return decode_beats(BLOCK, cfg, beats["o_stream"])


@cocotb.test()
async def vectors(dut):
    """Write the run folder's context, then run its queries, and score the outputs."""
    await run_vector_test(dut, sys.modules[__name__])


@cocotb.test()
async def refill(dut):
    """Clear and refill the context between two passes over the queries."""
    await refill_test(dut, BLOCK)


@cocotb.test()
async def reset_mid_query(dut):
    """Reset in the middle of a query, then a complete run."""
    await reset_mid_query_test(dut, BLOCK)
