"""cocotb testbench of ``std_layer``: the encoder layer's testbench
(:mod:`hadware.tb.encoder_layer`), which serves both layers."""

from hadware.tb.encoder_layer import decode, encode, vectors

__all__ = ["decode", "encode", "vectors"]
