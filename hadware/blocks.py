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
import os
from typing import Any

from hadware.errors import HadwareError

__all__ = ["BLOCKS", "PLUGIN_VARIABLE", "Block", "compared_designs", "get_block", "register",
           "resolve"]

#: Environment variable naming extra blocks: comma-separated ``module:attribute`` paths, each
#: a :class:`Block` or a list of them, registered on the first look-up of a name that is not
#: registered (:func:`get_block`) and by :func:`compared_designs`, in every process (the
#: cocotb simulations included).
PLUGIN_VARIABLE = "HADWARE_BLOCKS"


def resolve(path: str) -> Any:
    """The object at ``"module:attribute"`` (the module itself without an attribute)."""
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
    #: Role in ``hadware synth compare``: ``"subject"`` (the design the reductions are
    #: about), ``"reference"`` (what they are measured against) or ``"ablation"``; None for
    #: blocks that are not compared. Compared blocks share the attention streams and config.
    compare_role: str | None = None
    #: Label of the design in the compare report.
    compare_label: str = ""
    #: ``"module:function"`` adding block-specific figures to ``hadware synth BLOCK``:
    #: ``function(cfg, out_dir, timeout) -> dict`` merged into the report (FPGA flows only).
    synth_extra: str | None = None

    def __post_init__(self) -> None:
        if self.compare_role not in (None, "subject", "reference", "ablation"):
            raise ValueError(f"compare_role must be subject, reference, ablation or None, "
                             f"not {self.compare_role!r}")

    def config_class(self) -> Any:
        return resolve(self.config)

    def component_class(self) -> Any:
        return resolve(self.component)

    def golden_module(self) -> Any:
        return resolve(self.golden)

    def tb_module(self) -> Any:
        return resolve(self.tb)

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
            name="counting_topk",
            summary="counting top-k for binarized scores: TopK's streams, value counters, "
                    "two passes",
            config="hadware.config.counting_topk:CountingTopKConfig",
            component="hadware.hw.counting_topk:CountingTopK",
            golden="hadware.golden.counting_topk",
            tb="hadware.tb.counting_topk",
        ),
        Block(
            name="systolic_topk",
            summary="systolic top-k for any scores: TopK's streams, insertion arrays per "
                    "lane, a merge tree",
            config="hadware.config.systolic_topk:SystolicTopKConfig",
            component="hadware.hw.systolic_topk:SystolicTopK",
            golden="hadware.golden.systolic_topk",
            tb="hadware.tb.systolic_topk",
        ),
        Block(
            name="attention",
            summary="HAD attention core: Hamming scores, top-k, table softmax, weighted sum",
            config="hadware.config.attention:AttentionConfig",
            component="hadware.hw.attention:Attention",
            golden="hadware.golden.attention",
            tb="hadware.tb.attention",
            compare_role="subject",
            compare_label="HAD (binary + top-k)",
        ),
        Block(
            name="std_attention",
            summary="baseline: int8 dot-product scores, softmax over all keys (fixed-point exp)",
            config="hadware.config.std_attention:StdAttentionConfig",
            component="hadware.hw.std_attention:StdAttention",
            golden="hadware.golden.std_attention",
            tb="hadware.tb.std_attention",
            compare_role="reference",
            compare_label="standard (int8, dense)",
        ),
        Block(
            name="int8_topk_attention",
            summary="baseline: int8 dot-product scores, HAD top-k, fixed-point exp, weighted sum",
            config="hadware.config.int8_topk_attention:Int8TopKAttentionConfig",
            component="hadware.hw.int8_topk_attention:Int8TopKAttention",
            golden="hadware.golden.int8_topk_attention",
            tb="hadware.tb.int8_topk_attention",
            compare_role="ablation",
            compare_label="int8 + top-k",
        ),
        Block(
            name="binary_dense_attention",
            summary="baseline: Hamming scores, HAD table softmax over all keys, no top-k",
            config="hadware.config.binary_dense_attention:BinaryDenseAttentionConfig",
            component="hadware.hw.binary_dense_attention:BinaryDenseAttention",
            golden="hadware.golden.binary_dense_attention",
            tb="hadware.tb.binary_dense_attention",
            compare_role="ablation",
            compare_label="binary, dense",
        ),
        Block(
            name="mlp",
            summary="ternary MatMul-free GLU MLP: BitLinear, SiLU(gate) * up, BitLinear",
            config="hadware.config.mlp:MlpConfig",
            component="hadware.hw.mlp:Mlp",
            golden="hadware.golden.mlp",
            tb="hadware.tb.mlp",
            extras=("weights",),
            synth_extra="hadware.synth.projection:projection_report",
        ),
        Block(
            name="encoder_layer",
            summary="MatMul-free HAD encoder layer: ternary QKV, binarized top-k attention per "
                    "head, ternary output projection, residuals, ternary GLU MLP",
            config="hadware.config.encoder_layer:EncoderLayerConfig",
            component="hadware.hw.encoder_layer:EncoderLayer",
            golden="hadware.golden.encoder_layer",
            tb="hadware.tb.encoder_layer",
            extras=("weights",),
            synth_extra="hadware.synth.layer:multiplier_report",
        ),
        Block(
            name="std_layer",
            summary="standard int8 encoder layer (the HAD layer's baseline): int8 "
                    "projections with multipliers, int8 dense attention per head, int8 GLU MLP",
            config="hadware.config.std_layer:StdLayerConfig",
            component="hadware.hw.std_layer:StdLayer",
            golden="hadware.golden.std_layer",
            tb="hadware.tb.std_layer",
            extras=("weights",),
            synth_extra="hadware.synth.layer:multiplier_report",
        ),
    ]
}


def register(block: Block) -> None:
    """Add ``block`` to :data:`BLOCKS`; a :class:`HadwareError` if its name is taken."""
    if not isinstance(block, Block):
        raise HadwareError(f"a registered block must be a Block, not {block!r}")
    if block.name in BLOCKS:
        raise HadwareError(f"block {block.name!r} is already registered")
    BLOCKS[block.name] = block


def _register_plugins() -> None:
    for path in filter(None, (p.strip() for p in os.environ.get(PLUGIN_VARIABLE, "").split(","))):
        try:
            found = resolve(path)
        except (ImportError, AttributeError) as e:
            raise HadwareError(f"{PLUGIN_VARIABLE}: cannot load {path!r}: {e}") from None
        for block in found if isinstance(found, list | tuple) else [found]:
            if BLOCKS.get(getattr(block, "name", None)) is not block:
                register(block)


def compared_designs() -> list[Block]:
    """The blocks of ``hadware synth compare`` in report order: the subject, the reference,
    then the ablations (registry order within each role)."""
    _register_plugins()
    order = {"subject": 0, "reference": 1, "ablation": 2}
    return sorted((b for b in BLOCKS.values() if b.compare_role),
                  key=lambda b: order[b.compare_role])


def get_block(name: str) -> Block:
    """The block called ``name``; a :class:`HadwareError` lists the known ones otherwise."""
    if name not in BLOCKS:
        _register_plugins()
    try:
        return BLOCKS[name]
    except KeyError:
        raise HadwareError(f"unknown block {name!r}; known blocks: "
                           f"{', '.join(sorted(BLOCKS))}") from None
