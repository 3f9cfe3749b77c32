"""Where the encoder layer multiplies: every multiplier cell of the generated RTL, listed by
the module (the block's hierarchy path) it sits in.

``hadware synth encoder_layer`` adds it to the report (the block's ``synth_extra``) as
``multipliers``: ``{"count", "by_module": [{"module", "count"}], "in_projections",
"constant_operand"}``. Multiplier cells with a constant operand (index arithmetic, the
BitLinears' ``Kc * V``) map to shifts and adders and are counted apart. A multiplier wider
than a DSP block is built of several cells (18 x 18 pieces,
:class:`~hadware.hw.arith.Multiplier`), each counted. The ternary projections
(``*.projection``) must hold none: their weights select ``+q``, ``-q`` or nothing (the
standard layer's int8 projections hold one per lane, ``in_projections``). The
remaining ones are the per-token scalars of the BitLinears (gains, squares, the quantizer,
the output scale), the GLU's two and the attention cores' weighting and output scaling; the
FPGA flows of the same report count the DSP blocks they map to.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from hadware.synth.flow import yosys_script

__all__ = ["MULTIPLIER_SCRIPT", "multiplier_report", "multipliers"]

_CONST = re.compile(r"\d+'[01xz]+")

#: Elaborate the hierarchy without optimising arithmetic away, then dump the multiplier cells.
MULTIPLIER_SCRIPT = """\
read_verilog -sv {src}
hierarchy -top {top}
proc
opt_clean
select -none
tee -q -o {out} dump t:$mul
"""


def multipliers(verilog: str | Path, top: str, out_dir: str | Path,
                timeout: float = 600.0) -> dict[str, Any]:
    """The multiplier cells of ``verilog`` (its module ``top`` and below, each module once:
    Amaranth gives every instance its own module) as the report entry described in the module
    docstring."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = Path(verilog).resolve()
    yosys_script(MULTIPLIER_SCRIPT.format(src=src.name if src.parent == out_dir.resolve()
                                          else str(src), top=top, out="multipliers.il"),
                 out_dir, "multipliers", timeout)
    found: Counter = Counter()
    constant = 0
    module = None
    cell: dict[str, str] | None = None
    for line in (out_dir / "multipliers.il").read_text().splitlines():
        words = line.split()
        if words[:1] == ["module"]:
            module = words[1].lstrip("\\")
        elif words[:2] == ["cell", "$mul"]:
            cell = {}
        elif cell is not None and words[:1] == ["connect"]:
            cell[words[1]] = " ".join(words[2:])
        elif cell is not None and words[:1] == ["end"]:
            # An operand that is a constant (index arithmetic) maps to shifts and adders.
            if any(_CONST.fullmatch(cell.get(p, "")) for p in ("\\A", "\\B")):
                constant += 1
            else:
                found[module] += 1
            cell = None
    rows = [{"module": mod, "count": c} for mod, c in sorted(found.items())]
    return {"count": sum(found.values()), "by_module": rows,
            "in_projections": sum(c for mod, c in found.items()
                                  if mod.split(".")[-1] == "projection"),
            "constant_operand": constant}


def multiplier_report(cfg, out_dir: str | Path, timeout: float) -> dict[str, Any]:
    """A layer block's extra synthesis figure (``synth_extra``): :func:`multipliers` of the
    generated ``<block>.v`` in ``out_dir``, also written to ``multipliers.json``."""
    out_dir = Path(out_dir)
    report = multipliers(out_dir / f"{cfg.block}.v", cfg.block, out_dir, timeout)
    (out_dir / "multipliers.json").write_text(json.dumps(report, indent=2) + "\n")
    return {"multipliers": report}
