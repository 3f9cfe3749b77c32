"""The registry of hardware blocks.

Each block is known by one name that is used everywhere: the config class
``hadware.config.<name>``, the Amaranth component in ``hadware.hw.<name>``, the golden model in
``hadware.golden.<name>``, the cocotb testbench in ``hadware.tb.<name>`` and the synthesis
folders ``build/synth/<name>-<hash>``. Entries are import paths, resolved on first use, so the
command line starts without importing torch or Amaranth.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from hadware.errors import HadwareError

__all__ = ["BLOCKS", "Block", "get_block"]


def _resolve(path: str) -> Any:
    module, _, attr = path.partition(":")
    mod = importlib.import_module(module)
    return getattr(mod, attr) if attr else mod


@dataclasses.dataclass(frozen=True)
class Block:
    """One hardware block and where its pieces live."""

    name: str
    summary: str
    config: str  # "module:Class" of the BlockConfig subclass
    component: str  # "module:Class" of the wiring.Component; its constructor takes the config
    golden: str  # module with check_inputs(cfg, arrays) and run_vectors(cfg, *extras, arrays)
    tb: str  # cocotb test module with encode/decode
    #: Names of extra vector files the block needs besides its inputs (``("weights",)``: the
    #: command line takes ``--weights W.npz``). Their arrays are baked into the generated RTL
    #: (the component's constructor takes them after the config) and are passed, in this order,
    #: to the golden ``run_vectors(cfg, *extras, inputs)`` and to the testbench's
    #: ``encode``/``decode``.
    extras: tuple[str, ...] = ()

    def config_class(self) -> Any:
        return _resolve(self.config)

    def component_class(self) -> Any:
        return _resolve(self.component)

    def golden_module(self) -> Any:
        return _resolve(self.golden)

    def tb_module(self) -> Any:
        return _resolve(self.tb)

    def load_config(self, path: str | None) -> Any:
        """The block's config from a JSON file, or its defaults when ``path`` is None."""
        cls = self.config_class()
        return cls() if path is None else cls.load(path)


BLOCKS: dict[str, Block] = {
    b.name: b
    for b in [
        Block(
            name="score_unit",
            summary="XNOR-popcount score unit: lanes x (2*popcount(XNOR(q,k)) - d)",
            config="hadware.config.score_unit:ScoreUnitConfig",
            component="hadware.hw.score_unit:ScoreUnit",
            golden="hadware.golden.score_unit",
            tb="hadware.tb.score_unit",
        ),
        Block(
            name="topk",
            summary="streaming top-k sparsifier: lanes scores per beat in, k best out, sorted",
            config="hadware.config.topk:TopKConfig",
            component="hadware.hw.topk:TopK",
            golden="hadware.golden.topk",
            tb="hadware.tb.topk",
        ),
        Block(
            name="attention",
            summary="HAD attention core: Hamming scores, top-k, table softmax, weighted sum",
            config="hadware.config.attention:AttentionConfig",
            component="hadware.hw.attention:Attention",
            golden="hadware.golden.attention",
            tb="hadware.tb.attention",
        ),
        Block(
            name="std_attention",
            summary="baseline: int8 dot-product scores, softmax over all keys (fixed-point exp)",
            config="hadware.config.std_attention:StdAttentionConfig",
            component="hadware.hw.std_attention:StdAttention",
            golden="hadware.golden.std_attention",
            tb="hadware.tb.std_attention",
        ),
        Block(
            name="int8_topk_attention",
            summary="baseline: int8 dot-product scores, HAD top-k, fixed-point exp, weighted sum",
            config="hadware.config.int8_topk_attention:Int8TopKAttentionConfig",
            component="hadware.hw.int8_topk_attention:Int8TopKAttention",
            golden="hadware.golden.int8_topk_attention",
            tb="hadware.tb.int8_topk_attention",
        ),
        Block(
            name="binary_dense_attention",
            summary="baseline: Hamming scores, HAD table softmax over all keys, no top-k",
            config="hadware.config.binary_dense_attention:BinaryDenseAttentionConfig",
            component="hadware.hw.binary_dense_attention:BinaryDenseAttention",
            golden="hadware.golden.binary_dense_attention",
            tb="hadware.tb.binary_dense_attention",
        ),
        Block(
            name="mlp",
            summary="ternary MatMul-free GLU MLP: BitLinear, SiLU(gate) * up, BitLinear",
            config="hadware.config.mlp:MlpConfig",
            component="hadware.hw.mlp:Mlp",
            golden="hadware.golden.mlp",
            tb="hadware.tb.mlp",
            extras=("weights",),
        ),
    ]
}


def get_block(name: str) -> Block:
    """The block called ``name``; a :class:`HadwareError` lists the known ones otherwise."""
    try:
        return BLOCKS[name]
    except KeyError:
        raise HadwareError(f"unknown block {name!r}; known blocks: "
                           f"{', '.join(sorted(BLOCKS))}") from None
