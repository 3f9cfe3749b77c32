"""Reading VCD traces: the variable declarations of the header, then the value changes one
time step at a time. Shared by the toggle counter (:mod:`hadware.synth.power`) and the
gate-level replay (:mod:`hadware.synth.gatesim`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

__all__ = ["VcdVar", "read_header", "steps"]


@dataclass(frozen=True)
class VcdVar:
    """One ``$var`` line: the dotted scope path it sits in, its name, width, least significant
    bit index (from a ``[msb:lsb]`` range; 0 without one) and identifier code."""

    scope: str
    name: str
    width: int
    lsb: int
    code: str

    @property
    def depth(self) -> int:
        """Scope depth: 1 for a signal of the outermost scope."""
        return self.scope.count(".") + 1 if self.scope else 0


def read_header(f: IO[str]) -> list[VcdVar]:
    """The variables declared in the header of the open trace ``f``, in order; reads up to and
    including ``$enddefinitions``, so that :func:`steps` continues from there."""
    scope: list[str] = []
    out: list[VcdVar] = []
    for line in f:
        if line.startswith("$enddefinitions"):
            break
        tok = line.split()
        if not tok:
            continue
        if tok[0] == "$scope":
            scope.append(tok[2])
        elif tok[0] == "$upscope":
            scope.pop()
        elif tok[0] == "$var":
            lsb = 0
            if len(tok) > 5 and tok[5].startswith("["):
                lsb = int(tok[5].strip("[]").split(":")[-1])
            out.append(VcdVar(".".join(scope), tok[4], int(tok[2]), lsb, tok[3]))
    return out


def steps(f: IO[str], codes: set[str] | None = None) -> Iterator[list[tuple[str, str]]]:
    """The value changes of the open trace ``f`` (after :func:`read_header`), one list of
    ``(value, code)`` per time step, in file order: the changes before each ``#time`` line,
    then those after the last one. ``codes``: keep only these identifiers. The list is reused:
    consume it before advancing."""
    step: list[tuple[str, str]] = []
    for line in f:
        c = line[0]
        if c == "#":
            yield step
            step.clear()
        elif c == "b":
            val, code = line[1:].split()
            if codes is None or code in codes:
                step.append((val, code))
        elif c in "01xz":
            code = line[1:].strip()
            if codes is None or code in codes:
                step.append((c, code))
    yield step
