"""Verilog generation, the integrator's description file, and the Verilator lint.

``generate(block, cfg, out_dir)`` writes ``<block>.v`` (top module named after the block) and
``<block>.json``, which describes the generated module so that integrators need not read the
Python source: every port with its direction and width, each stream's payload fields with their
bit offsets and widths, the configuration, its hash, and the latency for that configuration.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from amaranth.back import verilog
from amaranth.hdl import Shape
from amaranth.lib import data, stream, wiring

from hadware.blocks import get_block
from hadware.config.base import BlockConfig, atomic_write_text
from hadware.tools import run_tool, verilator_bin_dir

__all__ = ["describe", "generate", "lint", "verilog_text"]

# Verilator -Wall warnings that Amaranth's output style raises by construction, with the reason
# each is harmless. Everything else is reported.
LINT_WAIVERS = {
    "DECLFILENAME": "one file holds the top module and every submodule (named top.sub)",
    "UNUSEDSIGNAL": "Amaranth emits named debug wires for every view field and submodule port "
                    "(e.g. 'i_stream__payload.q', an unused 'rst' in reset-less submodules) and "
                    "keeps unused top bits of widened intermediate sums",
    "PROCASSINIT": "Amaranth gives every register its reset value in the declaration and "
                   "assigns it in an always block; the two agree by construction",
    "WIDTHEXPAND": "Amaranth's Verilog backend writes constants at their minimal width and "
                   "relies on Verilog's context-width extension, which matches Amaranth's "
                   "explicit widening (bit-exact tests against the golden models check this)",
}


# Single warnings waived by their message, not by their whole class.
LINT_MESSAGE_WAIVERS = {
    r"%Warning-WIDTHTRUNC: .* Logical operator LOGNOT expects 1 bit on the LHS":
        "the Verilog backend writes 'x == 0' as '!x' on a multi-bit x, which Verilog defines "
        "as the same test (other WIDTHTRUNC warnings are reported)",
}


def _fields(layout: Any, prefix: str, offset: int, out: list[dict]) -> None:
    if isinstance(layout, data.StructLayout):
        for name, field in layout:
            _fields(field.shape, f"{prefix}.{name}" if prefix else name, offset + field.offset,
                    out)
    elif isinstance(layout, data.ArrayLayout):
        w = Shape.cast(layout.elem_shape).width
        out.append({"name": prefix, "offset": offset, "width": w * layout.length,
                    "array": {"length": layout.length, "element_width": w,
                              "element_signed": Shape.cast(layout.elem_shape).signed}})
    else:
        s = Shape.cast(layout)
        out.append({"name": prefix, "offset": offset, "width": s.width, "signed": s.signed})


def describe(component: wiring.Component, cfg: BlockConfig, top: str) -> dict[str, Any]:
    """The description written beside the Verilog."""
    ports = [{"name": "clk", "direction": "in", "width": 1},
             {"name": "rst", "direction": "in", "width": 1,
              "note": "synchronous, active high"}]
    streams = []
    for name, member in component.signature.members.items():
        if member.is_port:
            ports.append({"name": name, "direction": "in" if member.flow == wiring.In else "out",
                          "width": Shape.cast(member.shape).width})
            continue
        sig = member.signature
        flipped = member.flow == wiring.In
        if isinstance(sig, stream.Signature):
            payload = getattr(component, name).payload
            layout = payload.shape()
            fields: list[dict] = []
            _fields(layout, "", 0, fields)
            streams.append({"name": name, "direction": "in" if flipped else "out",
                            "payload_width": Shape.cast(layout).width, "fields": fields})
        for sub, m, _ in sig.flatten(getattr(component, name)):
            path = "__".join([name, *map(str, sub)])
            ports.append({"name": path, "direction": "out" if m.flow == wiring.Out else "in",
                          "width": Shape.cast(m.shape).width})
    return {
        "top": top,
        "block": cfg.block,
        "config": cfg.to_dict(),
        "config_hash": cfg.stable_hash(),
        "latency_cycles": getattr(component, "latency", None),
        "latency_formula": getattr(component, "latency_formula", None),
        # Attention cores: cycles per query back to back over n_max entries (queries overlap).
        **({"interval_cycles": type(component).interval(cfg, cfg.n_max)}
           if hasattr(type(component), "interval") else {}),
        # Attention configs: the proven bound on |out - exact softmax| in units of the last
        # place (hadware config / generate warn when it exceeds 1).
        **({"error_bound_ulp": cfg.error_bound_ulp} if hasattr(cfg, "error_bound_ulp") else {}),
        "ports": ports,
        "streams": streams,
    }


def extras_hash(extras: dict[str, dict[str, Any]] | None) -> str | None:
    """A short hash of extra vector files (e.g. weights baked into ROMs), or None."""
    if not extras:
        return None
    h = hashlib.sha256()
    for name in sorted(extras):
        for key in sorted(extras[name]):
            a = np.ascontiguousarray(extras[name][key])
            h.update(f"{name}/{key}/{a.dtype.str}/{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()[:12]


def verilog_text(block: str, cfg: BlockConfig,
                 extras: dict[str, dict[str, Any]] | None = None) -> tuple[str, dict[str, Any]]:
    """The Verilog of ``block`` at ``cfg`` (and its extra files, if the block has any) and its
    description (nothing written)."""
    b = get_block(block)
    args = [extras[name] for name in b.extras] if b.extras else []
    comp = b.component_class()(cfg, *args)
    text = verilog.convert(comp, name=block, emit_src=False)
    desc = describe(comp, cfg, block)
    if b.extras:
        desc["extras_hash"] = extras_hash(extras)
    desc["verilog_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    return text, desc


def write_if_changed(path: Path, text: str) -> bool:
    """Write atomically unless the file already holds ``text`` (keeps mtimes for caching)."""
    if path.exists() and path.read_text() == text:
        return False
    atomic_write_text(path, text)
    return True


def generate(block: str, cfg: BlockConfig, out_dir: str | Path,
             extras: dict[str, dict[str, Any]] | None = None) -> dict[str, Path]:
    """Write ``<block>.v`` and ``<block>.json`` into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    text, desc = verilog_text(block, cfg, extras)
    v, j = out_dir / f"{block}.v", out_dir / f"{block}.json"
    write_if_changed(v, text)
    write_if_changed(j, json.dumps(desc, indent=2) + "\n")
    return {"verilog": v, "description": j}


def lint(verilog_path: Path, top: str) -> list[str]:
    """Run ``verilator --lint-only -Wall`` with the documented waivers; return the remaining
    warning lines (an empty list means clean). Raises ToolError on a lint error."""
    waive = [f"-Wno-{w}" for w in LINT_WAIVERS]
    p = run_tool([str(verilator_bin_dir() / "verilator"), "--lint-only", "-Wall", "-Wno-fatal",
                  *waive, "--top-module", top, verilog_path.name],
                 cwd=verilog_path.parent, what=f"verilator lint of {verilog_path.name}")
    return [ln for ln in (p.stdout + p.stderr).splitlines() if ln.startswith("%Warning")
            and not any(re.match(pat, ln) for pat in LINT_MESSAGE_WAIVERS)]
