"""Golden models of the standard int8 encoder layer: specified with the HAD layer in
:mod:`hadware.golden.encoder_layer` (the steps name where the two differ); this module names
the entry points."""

from __future__ import annotations

from hadware.golden.encoder_layer import (
    SAT_POINTS,
    check_inputs,
    float_reference,
    layer_int,
    run_vectors,
    run_vectors_int,
)

__all__ = ["SAT_POINTS", "check_inputs", "float_reference", "layer_int", "run_vectors",
           "run_vectors_int"]
