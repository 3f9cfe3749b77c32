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
mismatch, an unknown version, a listed path outside the folder, or a manifest that does not
match its schema (:func:`check_schema`: every key and type), naming the file and the key.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from hadware.errors import HadwareError

__all__ = [
    "FORMAT_VERSION",
    "ExportError",
    "MapOf",
    "check_schema",
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


# -- schemas of JSON files ---------------------------------------------------------------------
#
# A schema is a Python value: ``int``, ``float`` (any finite number), ``str``, ``bool``,
# ``dict`` (any object) or ``list`` (any list); ``{"key": schema, ...}`` (an object with exactly
# these keys); ``[schema]`` (a list whose every element fits); :class:`MapOf` (an object with
# any keys); a tuple of alternatives, ``None`` standing for null: ``(str, None)``.


class MapOf:
    """Schema of a JSON object with any keys, every value fitting ``value``."""

    def __init__(self, value: Any) -> None:
        self.value = value


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a finite number",
               str: "a string", dict: "an object", list: "a list", type(None): "null"}


def _kind(schema: Any) -> type:
    if isinstance(schema, dict | MapOf):
        return dict
    if isinstance(schema, list):
        return list
    return type(None) if schema is None else schema


def _fits(value: Any, kind: type) -> bool:
    if kind in (int, float) and isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    return isinstance(value, kind)


def _json_kind(value: Any) -> str:
    """What a JSON value is, for messages: ``"a list"``, ``"null"``, ``"a boolean"``."""
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (str, "a string"),
                       (dict, "an object"), (list, "a list"), (type(None), "null")):
        if isinstance(value, kind):
            return name
    return "a non-finite number" if isinstance(value, float) else type(value).__name__


def _key_path(path: str, key: str) -> str:
    if key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


_NO_FIT = object()


def check_schema(value: Any, schema: Any, source: str, path: str = "") -> None:
    """Check a JSON value against ``schema`` (see above); an :class:`ExportError` names
    ``source``, the key path and what was expected: ``"'DIR/manifest.json': layers[0].mlp
    must be an object, not a list"``."""
    alternatives = schema if isinstance(schema, tuple) else (schema,)
    fit = next((alt for alt in alternatives if _fits(value, _kind(alt))), _NO_FIT)
    if fit is _NO_FIT:
        expected = " or ".join(_KIND_NAMES[_kind(alt)] for alt in alternatives)
        raise ExportError(f"{source}: {path or 'the content'} must be {expected}, "
                          f"not {_json_kind(value)}")
    if isinstance(fit, dict):
        for key in fit:
            if key not in value:
                raise ExportError(f"{source}: {_key_path(path, key)} is missing")
        for key in value:
            if key not in fit:
                raise ExportError(f"{source}: {_key_path(path, key)} is not a known key "
                                  f"(known: {', '.join(fit)})")
        for key, sub in fit.items():
            check_schema(value[key], sub, source, _key_path(path, key))
    elif isinstance(fit, MapOf):
        for key, sub_value in value.items():
            check_schema(sub_value, fit.value, source, _key_path(path, key))
    elif isinstance(fit, list):
        for i, item in enumerate(value):
            check_schema(item, fit[0], source, f"{path}[{i}]")

#: The part of every manifest that :func:`write_folder` writes; the body is the caller's.
FOLDER_SCHEMA = {"format_version": int, "files": MapOf({"sha256": str, "bytes": int})}


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


def _inside(folder: Path, rel: str, source: str) -> Path:
    """``folder / rel`` for a path listed in the manifest; an error if it leaves ``folder``
    (absolute, ``..``, or through a symbolic link)."""
    pure = PurePosixPath(rel)
    p = folder / rel
    if not rel or "\\" in rel or pure.is_absolute() or ".." in pure.parts \
            or not p.resolve().is_relative_to(folder.resolve()):
        raise ExportError(f"{source}: file {rel!r} is outside the export folder (refused)")
    return p


def verify_folder(folder: Path, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read and check ``folder/manifest.json``: known format version, the schema (the
    folder's keys plus ``schema``, the body's), every listed file inside the folder and present
    with its size and sha256. Returns the manifest."""
    folder = Path(folder)
    mpath = folder / "manifest.json"
    source = repr(str(mpath))
    if not folder.is_dir():
        raise ExportError(f"export folder {str(folder)!r} does not exist")
    try:
        manifest = json.loads(mpath.read_text())
    except FileNotFoundError:
        raise ExportError(f"{source} is missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ExportError(f"{source} cannot be read ({e})") from None
    except json.JSONDecodeError as e:
        raise ExportError(f"{source} is not valid JSON ({e.msg})") from None
    check_schema(manifest, dict, source)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ExportError(f"{source}: unknown format version {version!r} "
                          f"(this toolkit reads version {FORMAT_VERSION})")
    if schema is None:  # the folder's keys only; the body is the caller's to check
        check_schema({k: manifest[k] for k in FOLDER_SCHEMA if k in manifest}, FOLDER_SCHEMA,
                     source)
    else:
        check_schema(manifest, {**FOLDER_SCHEMA, **schema}, source)
    for rel, meta in manifest["files"].items():
        p = _inside(folder, rel, source)
        if not p.is_file():
            raise ExportError(f"file {str(p)!r} listed in the manifest is missing")
        if p.stat().st_size != meta["bytes"]:
            raise ExportError(f"file {str(p)!r} has {p.stat().st_size} bytes, the manifest "
                              f"says {meta['bytes']} (truncated or changed)")
        if _sha256(p) != meta["sha256"]:
            raise ExportError(f"file {str(p)!r} does not match its sha256 in the manifest")
    return manifest
