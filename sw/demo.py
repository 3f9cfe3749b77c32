"""The built-in demonstration run by ``make demo`` (``hadware demo``).

It takes the score unit through the whole flow on its default configuration: Verilog generation
and lint, random vectors through the golden model and the Verilator simulation (with random
stalls on both streams), a bit-for-bit comparison, and synthesis. It ends with a summary table
on the terminal and ``<out>/summary.json``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from hadware.config.base import atomic_write_text

__all__ = ["run_demo"]

log = logging.getLogger(__name__)


def run_demo(out_dir: str | Path = "build/demo", *, seed: int = 0) -> dict[str, Any]:
    from hadware.config.score_unit import ScoreUnitConfig
    from hadware.golden.score_unit import run_vectors
    from hadware.hw.generate import generate, lint
    from hadware.synth.flow import synthesize
    from hadware.tb.runner import simulate

    out = Path(out_dir)
    t0 = time.time()
    cfg = ScoreUnitConfig()
    log.info("score_unit %s: generating Verilog", cfg.to_dict())
    paths = generate("score_unit", cfg, out / "rtl")
    warnings = lint(paths["verilog"], "score_unit")
    rng = np.random.default_rng(seed)
    pm1 = np.array([-1, 1], dtype=np.int8)
    inputs = {"q": rng.choice(pm1, (64, cfg.d)), "k": rng.choice(pm1, (64, cfg.d))}
    log.info("golden model and Verilator simulation of 64 x 64 scores")
    golden = run_vectors(cfg, inputs)
    sim = simulate("score_unit", cfg, inputs, seed=seed, idle_prob=0.2, stall_prob=0.3)
    match = bool(np.array_equal(golden["s"], sim.outputs["s"]))
    log.info("synthesis (generic CMOS, iCE40, ECP5, nextpnr)")
    rep = synthesize("score_unit", cfg, out / "synth")
    summary = {
        "block": "score_unit",
        "config": cfg.to_dict(),
        "lint_warnings": len(warnings),
        "vectors": int(golden["s"].size),
        "sim_cycles": sim.stats["cycles"],
        "sim_matches_golden": match,
        "latency_cycles": rep["latency_cycles"],
        "transistors": rep["area_cmos"]["transistors"],
        "ice40_lut": rep["fpga"]["ice40"]["lut"],
        "ice40_fmax_mhz": rep["fpga"]["ice40"].get("fmax_mhz"),
        "ecp5_lut": rep["fpga"]["ecp5"]["lut"],
        "ecp5_fmax_mhz": rep["fpga"]["ecp5"].get("fmax_mhz"),
        "wall_time_s": round(time.time() - t0, 1),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    width = max(map(len, summary))
    print("\nhadware demo summary")
    for k, v in summary.items():
        print(f"  {k:<{width}}  {v}")
    print(f"  {'report':<{width}}  {out / 'synth' / 'report.md'}")
    if not match:
        from hadware.errors import HadwareError

        raise HadwareError("the simulated RTL does not match the golden model")
    return summary
