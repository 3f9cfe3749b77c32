"""cocotb testbench of the systolic top-k sparsifier: the top-k testbench
(:mod:`hadware.tb.topk`: encoding, decoding, the ``vectors`` test), whose streams it shares."""

from hadware.tb.topk import decode, encode, vectors

__all__ = ["decode", "encode", "vectors"]
