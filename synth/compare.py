"""HAD attention against standard attention and the ablations, at one configuration.

``compare(cfg, out_dir)`` synthesizes every attention design at the same configuration (the
fields they share: d, n_max, d_v, lanes, temperature, exp_frac_bits, out_frac_bits, top_k where
it applies; a counting ``topk_unit`` applies to the binarized designs, the int8 top-k design
takes the systolic unit instead, the fast one for any scores), runs them on one workload, and
writes
``report.json``, ``report.md`` and PNG plots:

* logic area (Yosys ``stat -tech cmos`` transistor estimate, hierarchy kept) broken down into
  sub-blocks by module name (:func:`category`), and storage (memory bits) beside it;
* iCE40 and ECP5 cells and nextpnr fmax (:mod:`hadware.synth.flow`);
* dynamic energy per query from gate-level switching activity (:mod:`hadware.synth.power`), with
  the gate-level outputs checked against the RTL outputs for every design;
* cycles from the RTL simulation: the latency of the first query (``latency_cycles``) and the
  cycles per query back to back (``cycles_per_query``: between the outputs of the second and
  the last query, the pipeline full);
* ``area_reduction`` and ``power_reduction``: ``1 - HAD / standard attention``.

The workload: ``queries`` query rows over a full context of ``n_max`` keys, random int8 queries,
keys and values from a fixed seed; the binarized designs see the signs of the same queries and
keys (element >= 0 is +1), so every design answers the same questions.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from hadware.blocks import compared_designs, get_block
from hadware.config.attention import AttentionConfig
from hadware.config.base import atomic_write_text

__all__ = ["SRAM_TRANSISTORS_PER_BIT", "category", "compare", "designs", "reductions"]

log = logging.getLogger(__name__)

def designs(names: list[str] | None = None) -> list[tuple[str, str, bool, bool, str]]:
    """The compared designs in report order, from the registry (``Block.compare_role``):
    ``(block, label, binarized, sparsified, role)``; binarized and sparsified follow from the
    parts of the block's config. ``names`` keeps only those blocks."""
    out = []
    for b in compared_designs():
        if names is None or b.name in names:
            cls = b.config_class()
            out.append((b.name, b.compare_label or b.name, cls.scorer == "hamming",
                        cls.sparsifier is not None, b.compare_role))
    return out


#: Probability of an idle cycle at every source and of a stall at every sink in the
#: gate-level check under backpressure (:func:`run_design`).
STALLS = 0.3

#: Transistors per stored bit when storage is added to logic (a 6T SRAM cell).
SRAM_TRANSISTORS_PER_BIT = 6

CATEGORIES = ["scoring", "top-k", "softmax + weighted sum", "normalisation", "control"]


_CATEGORY_PREFIXES = [
    (("lane", "dot", "mul", "score"), "scoring"),
    (("topk",), "top-k"),
    (("wsum", "softmax", "exp", "max"), "softmax + weighted sum"),
    (("divider", "recip", "scale"), "normalisation"),
]


def category(module: str) -> str:
    """Sub-block of a module, by the parts of its hierarchical name below the design, the
    outermost first: a sub-block owns everything below it (``attention.topk.row3`` and
    ``attention.topk.lane3`` are part of the top-k, ``attention.scale.mul`` of the
    normalisation)."""
    for part in module.split(".")[1:]:
        for prefixes, name in _CATEGORY_PREFIXES:
            if part.startswith(prefixes):
                return name
    return "control"


def workload(cfg: AttentionConfig, queries: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "q": rng.integers(-128, 128, (queries, cfg.d)).astype(np.int8),
        "k": rng.integers(-128, 128, (cfg.n_max, cfg.d)).astype(np.int8),
        "v": rng.integers(-128, 128, (cfg.n_max, cfg.d_v)).astype(np.int8),
    }


def _design_config(block: str, cfg: AttentionConfig | dict[str, Any]):
    """The config of design ``block`` from the fields it shares with ``cfg`` (the compare's
    :class:`AttentionConfig`, or a dict of fields, the design's own or a superset)."""
    cls = get_block(block).config_class()
    fields = set(cls.field_names())
    data = dict(cfg if isinstance(cfg, dict) else cfg.to_dict())
    if str(data.get("topk_unit", "")).startswith("counting") and cls.scorer != "hamming":
        # A counting top-k needs binarized scores: an int8 design takes the systolic one (no
        # path that grows with top_k or lanes either).
        data["topk_unit"] = "systolic"
    return cls.from_dict({k: v for k, v in data.items() if k in fields},
                         source=f"{block} configuration derived from the compare config")


def _inputs(binary: bool, w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not binary:
        return dict(w)
    sign = lambda a: np.where(a >= 0, 1, -1).astype(np.int8)  # noqa: E731
    return {"q": sign(w["q"]), "k": sign(w["k"]), "v": w["v"]}


def _cycles(stats: dict[str, Any]) -> dict[str, float]:
    """The first query's latency and the cycles per query back to back (from the second
    output on, when there are three or more; else the whole run over the queries)."""
    q_in = stats["in_cycles"]["q_stream"]
    out = stats["out_cycles"]["o_stream"]
    per = (out[-1] - out[1]) / (len(out) - 2) if len(out) >= 3 \
        else (out[-1] - q_in[0]) / len(out)
    return {"latency_cycles": out[0] - q_in[0], "cycles_per_query": float(per)}


def run_design(block: str, cfg_dict: dict, binary: bool, w: dict[str, np.ndarray],
               out_dir: str, fmax: bool, pnr_timeout: float, fpga: bool = True,
               stall_check: bool = False) -> dict[str, Any]:
    """Synthesis, RTL simulation and gate-level energy of one design (runs in a worker).
    ``cfg_dict``: the compare's configuration, or the design's own.

    The RTL run of the energy workload streams without backpressure and is scored element by
    element against the golden model. With ``stall_check``, a second run of the same inputs
    with random idles and stalls on both sides (probability :data:`STALLS`), also scored
    against the golden model, is replayed on the gate netlist, every clock edge compared
    through the drain (``gate_level_matches_rtl_under_stalls``; its activity is not charged).
    """
    from hadware.synth.flow import synthesize
    from hadware.synth.power import estimate_energy
    from hadware.tb.runner import simulate

    t0 = time.time()
    cfg = _design_config(block, cfg_dict)
    folder = Path(out_dir) / block
    inputs = _inputs(binary, w)
    # (traced: the gate-level simulation replays this run's inputs and checks its outputs)
    rtl = simulate(block, cfg, inputs, seed=0, waves=True, golden=True)
    syn = synthesize(block, cfg, folder / "synth", fmax=fmax, timeout=pnr_timeout, fpga=fpga)
    window = ("q_stream", "o_stream")
    energy = estimate_energy(block, cfg, inputs, folder / "power", rtl_outputs=rtl.outputs,
                             netlist=folder / "synth" / "gates.v", rtl_vcd=rtl.waves,
                             window=window)
    energy["rtl_matches_golden"] = True  # (the scoreboard fails the run otherwise)
    if stall_check:
        stalled = simulate(block, cfg, inputs, seed=1, waves=True, golden=True,
                           idle_prob=STALLS, stall_prob=STALLS)
        check = estimate_energy(block, cfg, inputs, folder / "power_stalls",
                                rtl_outputs=stalled.outputs, rtl_vcd=stalled.waves,
                                netlist=folder / "synth" / "gates.v", window=window)
        energy["gate_level_matches_rtl_under_stalls"] = check["gate_level_matches_rtl"]
    return {"block": block, "config": cfg.to_dict(), "synth": syn, "energy": energy,
            **_cycles(rtl.stats),
            "wall_time_s": round(time.time() - t0, 1)}


def run_fpga(block: str, cfg_dict: dict, out_dir: str, fmax: bool, pnr_timeout: float,
             seeds: int = 1, fit_lanes: bool = False) -> dict[str, Any]:
    """The FPGA flows of one design (runs in a worker, beside :func:`run_design`). With
    ``fit_lanes``, a design that does not fit the ECP5 at the compare's ``lanes`` is
    synthesized again for the ECP5 alone at half the lanes, and again, until it fits, then
    placed and routed there: ``fpga["ecp5"]["at_lanes"]`` holds that entry and its ``lanes``
    (absent when even one lane does not fit)."""
    from hadware.synth.flow import synthesize_fpga

    t0 = time.time()
    cfg = _design_config(block, cfg_dict)
    fpga = synthesize_fpga(block, cfg, Path(out_dir) / block / "fpga", fmax=fmax,
                           timeout=pnr_timeout, seeds=seeds)
    lanes = cfg.lanes
    while fit_lanes and fmax and fpga["ecp5"].get("reason") and lanes > 1:
        lanes //= 2
        log.info("%s: does not fit the ECP5 at lanes %d; trying lanes %d", block, cfg.lanes,
                 lanes)
        small = dataclasses.replace(cfg, lanes=lanes)
        e = synthesize_fpga(block, small, Path(out_dir) / block / f"fpga_lanes{lanes}",
                            fmax=True, timeout=pnr_timeout, seeds=seeds,
                            families=("ecp5",))["ecp5"]
        if not e.get("reason"):
            fpga["ecp5"]["at_lanes"] = {"lanes": lanes, **e}
            break
    return {"fpga": fpga, "wall_time_s": round(time.time() - t0, 1)}


def throughput(fpga: dict[str, Any], cycles_per_query: float, area: float
               ) -> dict[str, float | None]:
    """Queries per second at the ECP5 median fmax (``fmax / cycles per query``) and the
    area-time figure: area (transistors with storage) times the time per query in
    microseconds (lower is better). ``None`` without an ECP5 fmax."""
    f = fpga.get("ecp5", {}).get("fmax_mhz")
    if not f or not cycles_per_query:
        return {"queries_per_second": None, "area_time": None}
    qps = f * 1e6 / cycles_per_query
    return {"queries_per_second": round(qps, 1), "area_time": round(area * 1e6 / qps, 1)}


def _summarise(label: str, binary: bool, sparse: bool, r: dict[str, Any]) -> dict[str, Any]:
    syn, en = r["synth"], r["energy"]
    area = syn["area_cmos"]
    by_cat = dict.fromkeys(CATEGORIES, 0)
    for name, m in area["per_module"].items():
        by_cat[category(name)] += m["transistors_self"] * m["instances"]
    energy_cat = dict.fromkeys(CATEGORIES, 0.0)
    for name, e in en["per_instance"].items():
        energy_cat[category(name)] += (e["data"] + e["clock"]) / max(1, en["queries"])
    storage = area["storage_bits"]
    return {
        "block": r["block"], "label": label, "binarized": binary, "sparsified": sparse,
        "config": r["config"],
        "logic_transistors": area["transistors"],
        "logic_transistors_by_subblock": by_cat,
        "storage_bits": storage,
        "storage_by_memory": {f"{m['module']}.{m['name']}": m["bits"] for m in syn["memories"]},
        "area_transistors_with_storage": area["transistors"] + SRAM_TRANSISTORS_PER_BIT * storage,
        "flip_flops": area["flip_flops"],
        "fpga": syn["fpga"],
        "energy_per_query": en["energy_per_query"],
        "energy_per_query_by_subblock": energy_cat,
        "gate_level_matches_rtl": en["gate_level_matches_rtl"],
        "gate_level_matches_rtl_under_stalls": en.get("gate_level_matches_rtl_under_stalls"),
        "rtl_matches_golden": en.get("rtl_matches_golden"),
        "latency_cycles": r["latency_cycles"],
        "cycles_per_query": r["cycles_per_query"],
        **throughput(syn["fpga"], r["cycles_per_query"],
                     area["transistors"] + SRAM_TRANSISTORS_PER_BIT * storage),
        "wall_time_s": r["wall_time_s"],
        "fpga_wall_time_s": r.get("fpga_wall_time_s"),
    }


def compare(cfg: AttentionConfig, out_dir: str | Path, *, queries: int = 4, seed: int = 0,
            fmax: bool = True, jobs: int = 2, pnr_timeout: float = 600.0,
            names: list[str] | None = None, seeds: int = 1,
            target_mhz: float | None = None, fit_lanes: bool = False) -> dict[str, Any]:
    """Run every registered attention design at ``cfg``; write and return the report.
    ``seeds``: nextpnr placer seeds per design (fmax is their median); ``target_mhz``: after
    the report is written, raise :class:`~hadware.errors.HadwareError` naming the first
    design whose ECP5 fmax misses it (:func:`hadware.synth.flow.check_target`);
    ``fit_lanes``: a design too large for the ECP5 gets its fmax at the largest power-of-two
    fraction of ``lanes`` that fits (:func:`run_fpga`; reported beside, never in place of,
    the compare's own figures)."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    chosen = [d[:4] for d in designs(names)]
    roles = {d[0]: d[4] for d in designs(names)}
    w = workload(cfg, queries, seed)
    cfg_dict = cfg.to_dict()
    results: dict[str, dict[str, Any]] = {}
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        # Two tasks per design, area + energy and the FPGA flows, submitted roughly longest
        # first: with fit_lanes the int8 designs' FPGA flows (a full-size synthesis, then
        # another at fewer lanes, placed and routed), then the FPGA flows of the binarized
        # designs (they fit, so they are placed and routed), then the int8 designs' area and
        # energy (the largest netlists).
        fpga_futs, area_futs = {}, {}
        if fit_lanes:
            for block, _, binary, _ in chosen:
                if not binary:
                    fpga_futs[block] = pool.submit(run_fpga, block, cfg_dict, str(out_dir), fmax,
                                                   pnr_timeout, seeds, fit_lanes)
        for block, _, binary, _ in sorted(chosen, key=lambda d: not d[2]):
            if binary:
                fpga_futs[block] = pool.submit(run_fpga, block, cfg_dict, str(out_dir), fmax,
                                               pnr_timeout, seeds, fit_lanes)
        for block, _, binary, _ in sorted(chosen, key=lambda d: d[2]):
            area_futs[block] = pool.submit(run_design, block, cfg_dict, binary, w,
                                           str(out_dir), False, pnr_timeout, False, True)
            if not binary and block not in fpga_futs:
                fpga_futs[block] = pool.submit(run_fpga, block, cfg_dict, str(out_dir), fmax,
                                               pnr_timeout, seeds, fit_lanes)
        for block, _, _, _ in chosen:
            results[block] = area_futs[block].result()
            fp = fpga_futs[block].result()
            results[block]["synth"]["fpga"] = fp["fpga"]
            results[block]["fpga_wall_time_s"] = fp["wall_time_s"]
            log.info("%s done: area and energy %.0f s, FPGA flows %.0f s", block,
                     results[block]["wall_time_s"], fp["wall_time_s"])
    rows = [_summarise(label, binary, sparse, results[block])
            for block, label, binary, sparse in chosen]
    report: dict[str, Any] = {
        "config": cfg_dict,
        "workload": {"queries": queries, "keys": cfg.n_max, "seed": seed},
        "designs": rows,
        "wall_time_s": round(time.time() - t0, 1),
        "method": {
            "area": "Yosys stat -tech cmos transistor estimate of the logic, hierarchy kept; "
                    "memories reported as storage bits; area with storage adds "
                    f"{SRAM_TRANSISTORS_PER_BIT} transistors per bit",
            "energy": "gate-level simulation of the CMOS netlist on the workload, toggles of "
                      "every cell output weighted by the cell's transistor count plus a clock "
                      "cost per flip-flop per cycle (synth/power.py), from the first query "
                      "transfer to the last output transfer (loading the context is not "
                      "charged), divided by the number of queries; storage accesses are not "
                      "included",
        },
    }
    had = next((r for r in rows if roles[r["block"]] == "subject"), None)
    std = next((r for r in rows if roles[r["block"]] == "reference"), None)
    if had and std:
        report.update(reductions(had, std))
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
    plots = write_plots(report, out_dir)
    atomic_write_text(out_dir / "report.md", report_markdown(report, plots))
    if fmax:
        from hadware.synth.flow import check_target

        for r in rows:
            check_target(r["fpga"], target_mhz, r["label"])
    return report


def reductions(had: dict[str, Any], std: dict[str, Any]) -> dict[str, float]:
    """``1 - HAD / standard attention`` for area (logic plus storage), logic alone and energy
    per query, from two report rows."""
    return {
        "area_reduction": 1 - had["area_transistors_with_storage"]
        / std["area_transistors_with_storage"],
        "logic_area_reduction": 1 - had["logic_transistors"] / std["logic_transistors"],
        "power_reduction": 1 - had["energy_per_query"] / std["energy_per_query"],
    }


def write_plots(report: dict[str, Any], out_dir: Path) -> list[str]:
    """Stacked bars of logic area and energy per query by sub-block; returns file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["designs"]
    labels = [r["label"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    for ax, key, title, unit in (
        (axes[0], "logic_transistors_by_subblock", "Logic area", "transistors"),
        (axes[2], "energy_per_query_by_subblock", "Dynamic energy per query",
         "transistor-toggles"),
    ):
        bottom = np.zeros(len(rows))
        for cat in CATEGORIES:
            vals = np.array([r[key][cat] for r in rows], dtype=float)
            ax.bar(labels, vals, bottom=bottom, label=cat)
            bottom += vals
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.tick_params(axis="x", rotation=20)
    axes[0].legend(fontsize=8)
    axes[1].bar(labels, [r["storage_bits"] / 1024 for r in rows], color="tab:gray")
    axes[1].set_title("Storage (keys, values, tables)")
    axes[1].set_ylabel("kbit")
    axes[1].tick_params(axis="x", rotation=20)
    c = report["config"]
    fig.suptitle(f"d={c['d']}, n_max={c['n_max']}, top_k={c['top_k']}, lanes={c['lanes']}, "
                 f"d_v={c['d_v']}")
    fig.tight_layout()
    name = "compare.png"
    tmp = out_dir / f".{name}.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out_dir / name)
    return [name]


def _fmt_fmax(e: dict[str, Any]) -> str:
    if "fmax_mhz" not in e:
        return "-"
    return "n/a" if e["fmax_mhz"] is None else f"{e['fmax_mhz']:.1f}"


def _yes(flag) -> str:
    return "not run" if flag is None else ("yes" if flag else "NO")


def report_markdown(report: dict[str, Any], plots: list[str]) -> str:
    c = report["config"]
    rows = report["designs"]
    lines = [
        f"# Attention designs at d={c['d']}, n_max={c['n_max']}, top_k={c['top_k']}, "
        f"lanes={c['lanes']}, d_v={c['d_v']}",
        "",
        "| design | logic (transistors) | storage (bits) | area incl. storage | energy / query "
        "| latency / cycles per query | iCE40 LUT / FF / carry / BRAM / fmax MHz "
        "| ECP5 LUT / FF / carry / DSP / BRAM / fmax MHz | RTL = golden | gate-level = RTL "
        "| under stalls |",
        "|---|---:|---:|---:|---:|---:|---|---|---|---|---|",
    ]
    for r in rows:
        i, e = r["fpga"]["ice40"], r["fpga"]["ecp5"]
        lines.append(
            f"| {r['label']} | {r['logic_transistors']:,} | {r['storage_bits']:,} | "
            f"{r['area_transistors_with_storage']:,} | {r['energy_per_query']:,.0f} | "
            f"{r.get('latency_cycles', '-')} / {r['cycles_per_query']:.0f} | "
            f"{i['lut']:,} / {i['ff']:,} / {i['carry']:,} / {i['bram']} / {_fmt_fmax(i)} | "
            f"{e['lut']:,} / {e['ff']:,} / {e['carry']:,} / "
            f"{e['dsp']} / {e['bram']} / {_fmt_fmax(e)} | "
            f"{_yes(r.get('rtl_matches_golden'))} | {_yes(r['gate_level_matches_rtl'])} | "
            f"{_yes(r.get('gate_level_matches_rtl_under_stalls'))} |")
    if "area_reduction" in report:
        lines += ["", f"HAD against standard attention: area (logic + storage) "
                      f"{100 * report['area_reduction']:.1f}% smaller, logic alone "
                      f"{100 * report['logic_area_reduction']:.1f}% smaller, dynamic energy "
                      f"per query {100 * report['power_reduction']:.1f}% lower."]
    if any(r["fpga"]["ecp5"].get("fmax_mhz") for r in rows):
        from hadware.synth.flow import fmax_text, path_text

        lines += ["", "Timing on the ECP5 (LFE5U-85F): fmax, queries per second at that clock "
                      "(fmax / cycles per query), area-time (area incl. storage x microseconds "
                      "per query; lower is better) and the critical path:", "",
                  "| design | ECP5 fmax | queries / s | area-time | critical path |",
                  "|---|---|---:|---:|---|"]
        for r in rows:
            e = r["fpga"]["ecp5"]
            qps = "n/a" if r.get("queries_per_second") is None \
                else f"{r['queries_per_second']:,.0f}"
            at = "n/a" if r.get("area_time") is None else f"{r['area_time']:,.0f}"
            path = path_text(e["critical_path"]) if e.get("critical_path") else "n/a"
            fmax = fmax_text(e)
            fit = e.get("at_lanes")
            if fit:
                fmax += f"; at lanes {fit['lanes']}: {fmax_text(fit)}"
                if fit.get("critical_path"):
                    path = f"(lanes {fit['lanes']}) {path_text(fit['critical_path'])}"
            lines.append(f"| {r['label']} | {fmax} | {qps} | {at} | {path} |")
    lines += ["", "Logic transistors by sub-block:", "",
              "| design | " + " | ".join(CATEGORIES) + " |",
              "|---|" + "---:|" * len(CATEGORIES)]
    for r in rows:
        lines.append(f"| {r['label']} | " + " | ".join(
            f"{r['logic_transistors_by_subblock'][k]:,}" for k in CATEGORIES) + " |")
    lines += ["", f"Method: {report['method']['area']}. Energy: {report['method']['energy']}.",
              f"Workload: {report['workload']['queries']} queries over "
              f"{report['workload']['keys']} keys (seed {report['workload']['seed']}). "
              f"Wall time {report['wall_time_s']:.0f} s."]
    lines += ["", *[f"![{p}]({p})" for p in plots]]
    return "\n".join(lines) + "\n"
