"""The specification layer: what the hardware and the models must agree on, in numpy only.

Packing layouts, quantization rules, the tables the RTL embeds (softmax numerators, SiLU) and
the vector-file contracts live here, imported by ``hadware.hw`` (which builds ROMs and
constants from them) and by ``hadware.golden`` / ``hadware.sw`` (which compute with them).
Nothing here imports torch, Amaranth or any other part of hadware but ``hadware.errors``.
"""
