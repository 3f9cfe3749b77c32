"""ROM images and export folders with a checksummed manifest.

Image formats (one word per line, address 0 first):

* ``.hex``: ``$readmemh`` text, ``ceil(width / 4)`` hex digits per word, no address markers;
* ``.mif``: Intel Memory Initialization File (``WIDTH``, ``DEPTH``, ``ADDRESS_RADIX=UNS``,
  ``DATA_RADIX=HEX``, ``CONTENT BEGIN ... END;``);
* ``.coe``: Xilinx coefficient file (``memory_initialization_radix=16;`` then
  ``memory_initialization_vector=`` with comma-separated words and a final ``;``).

An export folder is written into a temporary sibling folder and renamed into place, so a
reader never sees half of it. Its ``manifest.json`` carries the format version, and the size and
sha256 of every file; :func:`verify_folder` refuses a folder with a missing file, a checksum
mismatch or an unknown version, naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hadware.errors import HadwareError

__all__ = [
    "FORMAT_VERSION",
    "ExportError",
    "read_hex",
    "verify_folder",
    "write_coe",
    "write_folder",
    "write_hex",
    "write_mif",
]

#: Version of the export folder layout (manifest and file formats).
FORMAT_VERSION = 1


class ExportError(HadwareError):
    """An export folder or ROM image is missing, corrupt, or of an unknown format."""


def _digits(width: int) -> int:
    return max(1, -(-width // 4))


def _check_words(words: Sequence[int], width: int) -> None:
    if width < 1:
        raise ValueError(f"width must be at least 1, not {width}")
    for i, w in enumerate(words):
        if not 0 <= int(w) < (1 << width):
            raise ValueError(f"word {i} = {w} does not fit {width} bits")


def write_hex(path: Path, words: Sequence[int], width: int) -> None:
    _check_words(words, width)
    n = _digits(width)
    path.write_text("".join(f"{int(w):0{n}x}\n" for w in words))


def write_mif(path: Path, words: Sequence[int], width: int) -> None:
    _check_words(words, width)
    n = _digits(width)
    body = "".join(f"  {a} : {int(w):0{n}X};\n" for a, w in enumerate(words))
    path.write_text(f"WIDTH={width};\nDEPTH={len(words)};\nADDRESS_RADIX=UNS;\n"
                    f"DATA_RADIX=HEX;\nCONTENT BEGIN\n{body}END;\n")


def write_coe(path: Path, words: Sequence[int], width: int) -> None:
    _check_words(words, width)
    n = _digits(width)
    vec = ",\n".join(f"{int(w):0{n}X}" for w in words)
    path.write_text(f"memory_initialization_radix=16;\nmemory_initialization_vector=\n{vec};\n")


def read_hex(path: Path, width: int, depth: int) -> list[int]:
    """Read a ``.hex`` image; it must hold exactly ``depth`` words of ``width`` bits."""
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    except FileNotFoundError:
        raise ExportError(f"ROM image {str(path)!r} is missing") from None
    if len(lines) != depth:
        raise ExportError(f"ROM image {str(path)!r} holds {len(lines)} words, expected {depth} "
                          f"(truncated or wrong image)")
    words = []
    for i, ln in enumerate(lines):
        try:
            w = int(ln, 16)
        except ValueError:
            raise ExportError(f"ROM image {str(path)!r}, line {i + 1}: {ln!r} is not hex") \
                from None
        if w >= 1 << width:
            raise ExportError(f"ROM image {str(path)!r}, line {i + 1}: {ln} exceeds {width} bits")
        words.append(w)
    return words


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_folder(out: Path, fill: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Create export folder ``out`` atomically: ``fill(tmp)`` writes the files into a temporary
    folder and returns the manifest body; the manifest (with ``format_version`` and the sha256
    and size of every file) is added and the folder renamed to ``out``. An existing ``out`` is
    replaced only after the new folder is complete."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        body = fill(tmp)
        files = {}
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                rel = p.relative_to(tmp).as_posix()
                files[rel] = {"sha256": _sha256(p), "bytes": p.stat().st_size}
        manifest = {"format_version": FORMAT_VERSION, **body, "files": files}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def verify_folder(folder: Path) -> dict[str, Any]:
    """Read and check ``folder/manifest.json``: known format version, every listed file present
    with its size and sha256. Returns the manifest."""
    folder = Path(folder)
    mpath = folder / "manifest.json"
    if not folder.is_dir():
        raise ExportError(f"export folder {str(folder)!r} does not exist")
    try:
        manifest = json.loads(mpath.read_text())
    except FileNotFoundError:
        raise ExportError(f"{str(mpath)!r} is missing") from None
    except json.JSONDecodeError as e:
        raise ExportError(f"{str(mpath)!r} is not valid JSON ({e.msg})") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ExportError(f"{str(mpath)!r}: unknown format version {version!r} "
                          f"(this toolkit reads version {FORMAT_VERSION})")
    for rel, meta in manifest.get("files", {}).items():
        p = folder / rel
        if not p.is_file():
            raise ExportError(f"file {str(p)!r} listed in the manifest is missing")
        if p.stat().st_size != meta["bytes"]:
            raise ExportError(f"file {str(p)!r} has {p.stat().st_size} bytes, the manifest "
                              f"says {meta['bytes']} (truncated or changed)")
        if _sha256(p) != meta["sha256"]:
            raise ExportError(f"file {str(p)!r} does not match its sha256 in the manifest")
    return manifest
