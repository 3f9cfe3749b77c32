"""How area and energy per query grow with context length and head size, HAD against
standard attention.

``sweep(cfg, out_dir)`` varies ``n_max`` over :data:`N_MAX` at the configuration's ``d``, and
``d`` over :data:`D` at its ``n_max`` (other fields as in ``cfg``; ``top_k`` is capped at
``n_max``), runs the CMOS area flow and the gate-level energy estimate of each design at each
point (no FPGA flows) as a grid of the exploration engine (:mod:`hadware.synth.explore`:
cached, resumable, local or on a Dask cluster), and writes ``report.json`` (with
``reductions``: ``1 - HAD / standard`` per point, as in the compare report), ``report.md`` and
``sweep.png``. A point on both axes
(the base configuration) runs once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hadware.blocks import get_block
from hadware.config.attention import AttentionConfig
from hadware.config.base import atomic_write_text
from hadware.errors import HadwareError
from hadware.synth.compare import _design_config, designs, reductions
from hadware.synth.explore import parse_grid, run_points

__all__ = ["N_MAX", "D", "sweep"]

N_MAX = (64, 128, 256, 512, 1024, 2048)
D = (32, 64, 128, 256)



def _point(cfg: AttentionConfig, **change: int) -> AttentionConfig:
    d = cfg.to_dict()
    d.update(change)
    d["top_k"] = min(d["top_k"], d["n_max"])
    d["lanes"] = min(d["lanes"], d["n_max"])
    return AttentionConfig.from_dict(d)


def sweep(cfg: AttentionConfig, out_dir: str | Path, *, queries: int = 2, seed: int = 0,
          jobs: int = 2, n_max: tuple[int, ...] = N_MAX, d: tuple[int, ...] = D,
          scheduler: str | None = None, progress: bool = False) -> dict[str, Any]:
    """The sweep as a grid of the exploration engine (:mod:`hadware.synth.explore`): one
    grid per compared design (subject and reference), its points the configurations on both
    axes, figures ``area`` and ``energy``; cached and resumable in ``out_dir`` (``cache/``,
    ``results.jsonl``, ``results.csv``), on ``jobs`` local processes or the Dask cluster at
    ``scheduler``. A point on both axes (the base configuration) runs once."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    axes = [("n_max", v, _point(cfg, n_max=v)) for v in n_max] + \
           [("d", v, _point(cfg, d=v)) for v in d]
    chosen = [(block, label, role) for block, label, _, _, role in designs()
              if role in ("subject", "reference")]
    grids = []
    for block, _, _ in chosen:
        fields = set(get_block(block).config_class().field_names())
        grids.append({"block": block, "figures": ["area", "energy"], "points": [
            {k: v for k, v in pcfg.to_dict().items() if k in fields} for _, _, pcfg in axes]})
    points = parse_grid(grids, "sweep", options={"queries": queries, "seed": seed})
    summary = run_points(points, out_dir, jobs=jobs, scheduler=scheduler, progress=progress)
    failed = [r for r in summary["rows"] if r["status"] != "ok"]
    if failed:
        raise HadwareError(f"sweep: {failed[0]['block']} at {failed[0]['label']} failed: "
                           f"{failed[0]['error']} (see {out_dir / 'results.jsonl'})")
    by_config = {(r["block"], r["config_hash"]): r for r in summary["rows"]}
    rows: list[dict[str, Any]] = []
    for axis, value, pcfg in axes:
        for block, label, role in chosen:
            dcfg = _design_config(block, pcfg)
            r = by_config[(block, dcfg.stable_hash())]
            v = r["values"]
            rows.append({
                "axis": axis, "value": value, "block": block, "label": label, "role": role,
                "config": r["config"],
                **{k: v[k] for k in ("logic_transistors", "storage_bits",
                                     "area_transistors_with_storage", "energy_per_query",
                                     "cycles_per_query")},
            })
    report = {"base_config": cfg.to_dict(), "points": rows,
              "reductions": point_reductions(rows), "wall_time_s": round(time.time() - t0, 1),
              "computed": summary["computed"], "cached": summary["cached"]}
    write_outputs(report, out_dir)
    return report


def point_reductions(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """:func:`~hadware.synth.compare.reductions` at every point where both designs ran."""
    by = {(p["axis"], p["value"], p["role"]): p for p in rows}
    return [{"axis": axis, "value": value, **reductions(had, by[(axis, value, "reference")])}
            for (axis, value, role), had in by.items()
            if role == "subject" and (axis, value, "reference") in by]


def write_outputs(report: dict[str, Any], out_dir: Path) -> None:
    """``report.json``, ``sweep.png`` and ``report.md`` of a sweep report."""
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
    _plot(report, out_dir / "sweep.png")
    atomic_write_text(out_dir / "report.md", _markdown(report))


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = report["base_config"]
    fixed = {"n_max": f"d={base['d']}", "d": f"n_max={base['n_max']}"}
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for col, axis in enumerate(("n_max", "d")):
        axes[0][col].set_title(f"against {axis} ({fixed[axis]}, top_k={base['top_k']} capped at "
                               f"n_max, lanes={base['lanes']}, d_v={base['d_v']})", fontsize=9)
        for row, (key, ylabel) in enumerate((("area_transistors_with_storage",
                                              "area: transistors (logic + 6T/bit storage)"),
                                             ("energy_per_query", "energy per query"))):
            ax = axes[row][col]
            for label in sorted({p["label"] for p in report["points"]}):
                pts = sorted((p["value"], p[key]) for p in report["points"]
                             if p["axis"] == axis and p["label"] == label)
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", label=label)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(axis)
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def _markdown(report: dict[str, Any]) -> str:
    lines = ["# Sweep: HAD against standard attention", "",
             "| axis | value | design | logic transistors | storage bits | energy / query | "
             "cycles / query |", "|---|---:|---|---:|---:|---:|---:|"]
    for p in report["points"]:
        lines.append(f"| {p['axis']} | {p['value']} | {p['label']} | "
                     f"{p['logic_transistors']:,} | {p['storage_bits']:,} | "
                     f"{p['energy_per_query']:,.0f} | {p['cycles_per_query']:.0f} |")
    if report.get("reductions"):
        lines += ["", "HAD against standard attention (1 - HAD / standard):", "",
                  "| axis | value | area (logic + storage) | logic | energy / query |",
                  "|---|---:|---:|---:|---:|"]
        for red in report["reductions"]:
            lines.append(f"| {red['axis']} | {red['value']} | {red['area_reduction']:.3f} | "
                         f"{red['logic_area_reduction']:.3f} | {red['power_reduction']:.3f} |")
    lines += ["", f"Wall time {report['wall_time_s']:.0f} s.", "", "![sweep](sweep.png)"]
    return "\n".join(lines) + "\n"
