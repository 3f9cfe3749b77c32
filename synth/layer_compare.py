"""The MatMul-free HAD layer against the standard int8 layer of the same shape.

``compare_layers(cfg, out_dir)`` takes an :class:`~hadware.config.encoder_layer.
EncoderLayerConfig` (the HAD layer: ternary BitLinears, binarized top-k attention) and builds
the standard layer of the same shape from the fields they share
(:func:`layer_configs`: :class:`~hadware.config.std_layer.StdLayerConfig`, int8 weights with a
multiplier per lane in every projection, int8 dense attention, the int8 GLU MLP; its
temperature the ``1/sqrt(head_dim)`` of float attention, the HAD-only ``top_k``,
``topk_unit`` and per-head temperatures left out). Both get the same latent weights (each
quantizes them in its own format) and the same workload: ``sequences`` sequences of
``n_max`` tokens ``x ~ N(0, 1)`` from a fixed seed. Per design:

* the RTL on Verilator, every output scored against the design's own golden model
  (:mod:`hadware.golden.encoder_layer`), and the cycles per sequence measured (first input
  transfer to last output transfer) beside the documented formula;
* logic area (Yosys ``stat -tech cmos``, hierarchy kept), storage (memory bits: weight ROMs,
  buffers, tables) and the multipliers by module (:mod:`hadware.synth.layer`);
* iCE40 and ECP5 cells and nextpnr fmax (:mod:`hadware.synth.flow`);
* dynamic energy per token from gate-level switching activity of the whole run
  (:mod:`hadware.synth.power`; the gate-level outputs checked against the RTL's).

``report.json`` starts with ``area_reduction`` (logic plus storage), ``logic_area_reduction``
and ``power_reduction`` (energy per token), each ``1 - HAD / standard``; ``report.md`` is the
table.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from hadware.config.base import atomic_write_text
from hadware.config.encoder_layer import EncoderLayerConfig
from hadware.config.std_layer import StdLayerConfig
from hadware.errors import HadwareError
from hadware.synth.compare import SRAM_TRANSISTORS_PER_BIT

__all__ = ["compare_layers", "layer_configs", "layer_workload"]

log = logging.getLogger(__name__)

#: Fields of the HAD layer that the standard layer does not take (or takes with another
#: meaning: the temperature of int8 scores is not that of Hamming scores).
HAD_ONLY = ("top_k", "topk_unit", "temperature", "weights")


def layer_configs(cfg: EncoderLayerConfig) -> tuple[EncoderLayerConfig, StdLayerConfig]:
    """The HAD layer and the standard layer of the same shape (module docstring)."""
    if not isinstance(cfg, EncoderLayerConfig):
        raise HadwareError(f"synth compare --layer needs an encoder_layer configuration, not "
                           f"{type(cfg).__name__}")
    shared = {k: v for k, v in cfg.to_dict().items() if k not in HAD_ONLY}
    return cfg, StdLayerConfig.from_dict(shared, source="standard layer derived from the "
                                                        "encoder_layer configuration")


def layer_workload(cfg: EncoderLayerConfig, sequences: int, seed: int) -> dict[str, np.ndarray]:
    """IN.npz of the energy run: ``sequences`` sequences of ``n_max`` tokens, ``N(0, 1)``
    clipped to the residual format."""
    rng = np.random.default_rng(seed)
    step = 2.0 ** -cfg.res_frac_bits
    top = 2.0 ** (cfg.res_bits - 1) * step
    x = rng.normal(0, 1, (sequences, cfg.n_max, cfg.d_model))
    return {"x": np.clip(x, -top, top - step).astype(np.float32),
            "n_valid": np.full(sequences, cfg.n_max, dtype=np.int64)}


def _cycles_per_sequence(stats: dict[str, Any], cfg) -> list[int]:
    ins, outs = stats["in_cycles"]["i_stream"], stats["out_cycles"]["o_stream"]
    per = cfg.n_max * cfg.token_beats
    return [outs[i + per - 1] - ins[i] for i in range(0, len(ins), per)]


def run_layer(block: str, cfg_dict: dict, weights: dict[str, np.ndarray],
              inputs: dict[str, np.ndarray], out_dir: str, fmax: bool,
              pnr_timeout: float) -> dict[str, Any]:
    """RTL run scored against the golden model, synthesis (area, multipliers, FPGA) and
    gate-level energy of one layer design (runs in a worker)."""
    from hadware.blocks import get_block
    from hadware.hw.encoder_layer import sequence_cycles
    from hadware.synth.flow import synthesize
    from hadware.synth.power import estimate_energy
    from hadware.tb.runner import simulate

    t0 = time.time()
    cfg = get_block(block).config_class().from_dict(cfg_dict, source=f"{block} configuration")
    folder = Path(out_dir) / block
    extras = {"weights": weights}
    rtl = simulate(block, cfg, inputs, seed=0, waves=True, golden=True, extras=extras)
    syn = synthesize(block, cfg, folder / "synth", fmax=fmax, timeout=pnr_timeout,
                     extras=extras)
    tokens = int(np.asarray(inputs["n_valid"]).sum())
    energy = estimate_energy(block, cfg, inputs, folder / "power", extras=extras,
                             rtl_outputs=rtl.outputs, netlist=folder / "synth" / "gates.v",
                             rtl_vcd=rtl.waves, window=("i_stream", "o_stream"),
                             queries=tokens)
    return {"block": block, "config": cfg.to_dict(), "synth": syn, "energy": energy,
            "tokens": tokens, "cycles_per_sequence": _cycles_per_sequence(rtl.stats, cfg),
            "cycles_formula": sequence_cycles(cfg, cfg.n_max),
            "wall_time_s": round(time.time() - t0, 1)}


def _row(label: str, r: dict[str, Any]) -> dict[str, Any]:
    syn, en = r["synth"], r["energy"]
    area = syn["area_cmos"]
    storage = area["storage_bits"]
    mults = syn.get("multipliers", {})
    return {
        "block": r["block"], "label": label, "config": r["config"],
        "logic_transistors": area["transistors"],
        "storage_bits": storage,
        "storage_by_memory": {f"{m['module']}.{m['name']}": m["bits"] for m in syn["memories"]},
        "area_transistors_with_storage": area["transistors"] + SRAM_TRANSISTORS_PER_BIT * storage,
        "flip_flops": area["flip_flops"],
        "multipliers": mults,
        "fpga": syn["fpga"],
        "energy_per_token": en["energy_total"] / max(1, r["tokens"]),
        "gate_level_matches_rtl": en["gate_level_matches_rtl"],
        "rtl_matches_golden": True,   # (the scoreboard fails the run otherwise)
        "cycles_per_sequence": r["cycles_per_sequence"][0],
        "cycles_per_sequence_formula": r["cycles_formula"],
        "wall_time_s": r["wall_time_s"],
    }


def compare_layers(cfg: EncoderLayerConfig, out_dir: str | Path, *, sequences: int = 1,
                   seed: int = 0, fmax: bool = True, jobs: int = 2,
                   pnr_timeout: float = 1800.0) -> dict[str, Any]:
    """Run both layers at ``cfg`` (module docstring); write and return the report. ``jobs``
    1: one design after the other in this process; more: both at once in worker processes."""
    from hadware.tb.encoder_layer import latent_weights

    had, std = layer_configs(cfg)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    weights = {k: v.astype(np.float32) for k, v in latent_weights(had, seed).items()}
    inputs = layer_workload(had, sequences, seed)
    designs = [("encoder_layer", "HAD + ternary layer", had), ("std_layer",
                                                              "standard int8 layer", std)]
    args = {b: (b, c.to_dict(), weights, inputs, str(out_dir), fmax, pnr_timeout)
            for b, _, c in designs}
    if jobs <= 1:   # in this process, one after the other
        rows = [_row(label, run_layer(*args[b])) for b, label, _ in designs]
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futs = {b: pool.submit(run_layer, *args[b]) for b, _, _ in designs}
            rows = [_row(label, futs[b].result()) for b, label, _ in designs]
    h, s = rows
    report: dict[str, Any] = {
        "area_reduction": 1 - h["area_transistors_with_storage"]
        / s["area_transistors_with_storage"],
        "logic_area_reduction": 1 - h["logic_transistors"] / s["logic_transistors"],
        "power_reduction": 1 - h["energy_per_token"] / s["energy_per_token"],
        "config": had.to_dict(),
        "std_config": std.to_dict(),
        "workload": {"sequences": sequences, "tokens_per_sequence": had.n_max, "seed": seed},
        "designs": rows,
        "wall_time_s": round(time.time() - t0, 1),
        "method": {
            "area": "Yosys stat -tech cmos transistor estimate of the logic, hierarchy kept; "
                    "memories (weight ROMs, token and context buffers, tables) as storage "
                    f"bits; area with storage adds {SRAM_TRANSISTORS_PER_BIT} transistors per "
                    "bit",
            "energy": "gate-level simulation of the CMOS netlist on the workload, toggles of "
                      "every cell output weighted by its transistor count plus a clock cost "
                      "per flip-flop per cycle (synth/power.py), from the first input transfer "
                      "to the last output transfer, divided by the tokens; memory accesses "
                      "are not included",
        },
    }
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out_dir / "report.md", report_markdown(report))
    return report


def _fmax(e: dict[str, Any]) -> str:
    if e.get("reason"):
        return "does not fit"
    f = e.get("fmax_mhz")
    return "-" if f is None else f"{f:.1f}"


def report_markdown(report: dict[str, Any]) -> str:
    c = report["config"]
    lines = [
        f"# Layers at d_model={c['d_model']}, n_heads={c['n_heads']}, n_max={c['n_max']}, "
        f"top_k={c['top_k']}, d_hidden={c['d_hidden']}, lanes={c['lanes']}",
        "",
        "| design | logic (transistors) | storage (bits) | area incl. storage | multipliers "
        "(in projections) | energy / token | cycles / sequence | iCE40 LUT / FF / DSP / BRAM "
        "/ fmax MHz | ECP5 LUT / FF / DSP / BRAM / fmax MHz | RTL = golden | gate-level = RTL |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---|---|",
    ]
    for r in report["designs"]:
        i, e = r["fpga"].get("ice40", {}), r["fpga"].get("ecp5", {})
        m = r["multipliers"]
        lines.append(
            f"| {r['label']} | {r['logic_transistors']:,} | {r['storage_bits']:,} | "
            f"{r['area_transistors_with_storage']:,} | {m.get('count', '-')} "
            f"({m.get('in_projections', '-')}) | {r['energy_per_token']:,.0f} | "
            f"{r['cycles_per_sequence']:,} | {i.get('lut', '-')} / {i.get('ff', '-')} / "
            f"{i.get('dsp', '-')} / {i.get('bram', '-')} / {_fmax(i)} | {e.get('lut', '-')} / "
            f"{e.get('ff', '-')} / {e.get('dsp', '-')} / {e.get('bram', '-')} / {_fmax(e)} | "
            f"{'yes' if r['rtl_matches_golden'] else 'NO'} | "
            f"{'yes' if r['gate_level_matches_rtl'] else 'NO'} |")
    lines += ["", f"HAD + ternary layer against the standard int8 layer: area (logic + "
                  f"storage) {100 * report['area_reduction']:.1f}% smaller, logic alone "
                  f"{100 * report['logic_area_reduction']:.1f}% smaller, dynamic energy per "
                  f"token {100 * report['power_reduction']:.1f}% lower.",
              "", f"Method: {report['method']['area']}. Energy: {report['method']['energy']}.",
              f"Workload: {report['workload']['sequences']} sequence(s) of "
              f"{report['workload']['tokens_per_sequence']} tokens (seed "
              f"{report['workload']['seed']}). Wall time {report['wall_time_s']:.0f} s."]
    return "\n".join(lines) + "\n"
