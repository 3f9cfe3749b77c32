"""Vector files (.npz): loading with clear errors, atomic saving, and input checks.

Vector files are the contract between users' data, the golden models and the simulated
hardware: ``hadware golden BLOCK --inputs IN.npz --outputs OUT.npz`` and ``hadware sim`` read
and write the same arrays. Every check raises :class:`~hadware.errors.InputError` with a message
that names the array (or file) and the problem.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from hadware.errors import HadwareError, InputError

__all__ = [
    "check_integer_array",
    "check_known",
    "check_pm1",
    "load_npz",
    "require",
    "save_npz",
]

#: The first bytes of a ``.npy`` file (:func:`numpy.save`).
NPY_MAGIC = b"\x93NUMPY"


def load_npz(path: str | os.PathLike, what: str = "input file") -> dict[str, np.ndarray]:
    """Read every array of an .npz file (object arrays are refused: no pickles are loaded).
    A missing file, a folder, a single ``.npy`` array, a file that is not a zip archive and
    an unreadable member are each an :class:`InputError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {str(path)!r} does not exist")
    if not path.is_file():
        raise InputError(f"{what} {str(path)!r} is not a file")
    try:
        with open(path, "rb") as f:
            magic = f.read(len(NPY_MAGIC))
        if magic == NPY_MAGIC:
            raise InputError(f"{what} {str(path)!r} is a single .npy array, not an .npz file "
                             "(numpy.savez writes one)")
        if not zipfile.is_zipfile(path):
            raise InputError(f"{what} {str(path)!r} is not a readable .npz file "
                             "(not a zip archive)")
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        for k, a in arrays.items():
            if not isinstance(a, np.ndarray):  # a zip member that is not a .npy array
                raise InputError(f"{what} {str(path)!r} is not a readable .npz file (member "
                                 f"{k!r} is not a .npy array)")
        return arrays
    except InputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        lines = str(e).splitlines() or [type(e).__name__]
        reason = "an array holds Python objects" if "pickle" in str(e) else lines[0]
        raise InputError(f"{what} {str(path)!r} is not a readable .npz file ({reason})") \
            from None


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write an .npz file through a temporary file and a rename (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise HadwareError(f"cannot write {str(path)!r}: {e.strerror or e}") from None
        raise


def require(arrays: dict[str, np.ndarray], name: str, ndim: int) -> np.ndarray:
    """The array ``name``, which must exist and have ``ndim`` dimensions."""
    if name not in arrays:
        present = ", ".join(sorted(arrays)) or "none"
        raise InputError(f"array {name!r} is missing (present: {present})")
    a = np.asarray(arrays[name])
    if a.ndim != ndim:
        raise InputError(f"array {name!r} must have {ndim} dimension(s), not shape {a.shape}")
    return a


def check_known(arrays: dict[str, np.ndarray], known: set[str]) -> None:
    extra = sorted(set(arrays) - known)
    if extra:
        raise InputError(f"unknown array(s) {', '.join(map(repr, extra))}; "
                         f"expected {', '.join(sorted(known))}")


def check_integer_array(name: str, a: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Return ``a`` as int64 after checking it holds integers in ``[lo, hi]`` (floats with an
    integral value are accepted; NaN, infinities and fractions are not)."""
    if a.size == 0:
        raise InputError(f"array {name!r} is empty (shape {a.shape})")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            raise InputError(f"array {name!r} holds NaN or infinite values")
        if not np.all(a == np.round(a)):
            raise InputError(f"array {name!r} holds non-integer values")
    elif a.dtype.kind not in "iub":
        raise InputError(f"array {name!r} must hold integers, not {a.dtype}")
    mn, mx = a.min(), a.max()
    if mn < lo or mx > hi:
        bad = mn if mn < lo else mx
        raise InputError(f"array {name!r} holds {bad:g}, outside [{lo}, {hi}]")
    return a.astype(np.int64)


def check_pm1(name: str, a: np.ndarray) -> np.ndarray:
    """Return ``a`` as int64 after checking every value is -1 or +1."""
    a = check_integer_array(name, a, -1, 1)
    if np.any(a == 0):
        raise InputError(f"array {name!r} must hold only -1 and +1, but holds 0")
    return a
