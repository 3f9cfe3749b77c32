"""The ternary projection synthesized alone: it maps to no DSP multiplier block.

The FPGA flows of :mod:`hadware.synth.flow` synthesize the MLP with its multipliers (which use
DSP blocks) beside the projections, so the projection's own DSP use is measured here, on
:class:`~hadware.hw.ternary_projection.TernaryProjection` by itself. ``hadware synth mlp``
reports it as ``projection_dsp``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from amaranth.back import verilog

from hadware.config.base import atomic_write_text
from hadware.hw.ternary_projection import TernaryProjection
from hadware.synth.flow import (
    CMOS_SCRIPT,
    FPGA_SCRIPT,
    area_report,
    fpga_cells,
    synth_command,
    yosys_script,
)

__all__ = ["synthesize_projection"]


def synthesize_projection(lanes: int, fan_in: int, out_dir: str | Path, *,
                          timeout: float = 600.0) -> dict[str, Any]:
    """Synthesize :class:`~hadware.hw.ternary_projection.TernaryProjection` alone with the
    flows of :mod:`hadware.synth.flow` (generic CMOS area, ``synth_ice40``, ``synth_ecp5``; no
    place and route) and return ``{"top", "lanes", "fan_in", "area_cmos", "fpga": {"ice40":
    cells, "ecp5": cells}}`` (cells as ``hadware synth`` reports them, ``dsp`` included).
    Writes ``ternary_projection.v``, the Yosys logs and ``report.json`` into ``out_dir``.

    Raises :class:`~hadware.errors.ToolError` when Yosys fails, and ``TypeError`` /
    ``ValueError`` for bad parameters (as ``TernaryProjection``).
    """
    top = "ternary_projection"
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    text = verilog.convert(TernaryProjection(lanes, fan_in), name=top, emit_src=False)
    src = f"{top}.v"
    atomic_write_text(out_dir / src, text)
    yosys_script(CMOS_SCRIPT.format(src=src, top=top, out="stat_cmos.json"), out_dir, "cmos",
                 timeout)
    report: dict[str, Any] = {
        "top": top, "lanes": lanes, "fan_in": fan_in,
        "area_cmos": area_report(json.loads((out_dir / "stat_cmos.json").read_text()), top),
        "fpga": {},
    }
    for family in ("ice40", "ecp5"):
        yosys_script(FPGA_SCRIPT.format(src=src, synth=synth_command(family, top), top=top,
                                        keep="",
                                        out=f"stat_{family}.json"), out_dir, family, timeout)
        report["fpga"][family] = fpga_cells(
            json.loads((out_dir / f"stat_{family}.json").read_text()), family, top)
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
    return report


def projection_report(cfg, out_dir: str | Path, timeout: float) -> dict[str, Any]:
    """The MLP's extra synthesis figure (``synth_extra`` of its registry entry): the DSP count
    of its ternary projection synthesized alone (the FPGA flows flatten the block, so the
    projection's DSP use is measured on the module by itself): no multiplier may appear
    there."""
    proj = synthesize_projection(cfg.lanes, max(cfg.d_model, cfg.d_hidden),
                                 Path(out_dir) / "projection", timeout=timeout)
    return {"projection_dsp": {f: proj["fpga"][f]["dsp"] for f in ("ice40", "ecp5")}}
