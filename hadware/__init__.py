"""hadware: verified RTL for binarized Hamming attention and ternary MatMul-free MLPs."""

__version__ = "0.1.0"
