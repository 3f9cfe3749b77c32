"""cocotb testbench of ``binary_dense_attention``: the attention family's testbench
(:mod:`hadware.tb.attention_core`: encoding, tests), which serves every variant."""

from hadware.tb.attention_core import batch, decode, encode, refill, reset_mid_query, vectors

__all__ = ["batch", "decode", "encode", "refill", "reset_mid_query", "vectors"]
