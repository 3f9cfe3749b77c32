"""The base of every block configuration.

A block configuration is a frozen dataclass that validates itself on construction. The same
object parametrises the hardware generator, the golden model, the testbench and the synthesis
flow; :meth:`BlockConfig.stable_hash` names the build folders of that configuration.

Validation raises ``TypeError`` for a value of the wrong type and ``ValueError`` for a value out
of range, with a message that names the parameter and shows the value, for example
``"d must be a positive multiple of 8, not 12"``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

from hadware.errors import HadwareError

__all__ = [
    "BlockConfig",
    "ConfigFileError",
    "atomic_write_text",
    "check_bool",
    "check_float",
    "check_int",
    "check_output_file",
    "read_json",
]


class ConfigFileError(HadwareError):
    """A configuration file is missing, unreadable, not JSON, or has unknown or missing keys."""


def check_int(
    name: str,
    value: Any,
    *,
    lo: int | None = None,
    hi: int | None = None,
    multiple_of: int | None = None,
    what: str | None = None,
) -> None:
    """Check that ``value`` is an integer (not a bool) in ``[lo, hi]`` and a multiple of
    ``multiple_of``. ``what`` replaces the generated description in the message."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {value!r} ({type(value).__name__})")
    bad = (
        (lo is not None and value < lo)
        or (hi is not None and value > hi)
        or (multiple_of is not None and value % multiple_of != 0)
    )
    if bad:
        if what is None:
            parts = []
            if multiple_of is not None:
                parts.append(f"a multiple of {multiple_of}")
            if lo is not None and hi is not None:
                parts.append(f"between {lo} and {hi}")
            elif lo is not None:
                parts.append(f"at least {lo}")
            elif hi is not None:
                parts.append(f"at most {hi}")
            what = "an integer " + " and ".join(parts)
        raise ValueError(f"{name} must be {what}, not {value!r}")


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    """Check that ``value`` is one of the strings ``choices``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {value!r} ({type(value).__name__})")
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")


def check_bool(name: str, value: object) -> None:
    """Check that ``value`` is ``True`` or ``False`` (not 0, 1 or a string)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be true or false, not {value!r}")


def check_float(
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    why: str | None = None,
) -> float:
    """Check that ``value`` is a finite real number in the given range; return it as float.
    ``why``, the reason for the upper bound ``hi``, is added to its message."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ValueError(f"{name} must be {'greater than' if lo_open else 'at least'} {lo}, "
                         f"not {value!r}")
    if hi is not None and v > hi:
        raise ValueError(f"{name} must be at most {hi}, not {value!r}"
                         + (f" ({why})" if why else ""))
    return v


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename, so
    that readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_output_file(option: str, path: str | os.PathLike) -> Path:
    """Check, before any work is done, that a file can be written at ``path``: it is not a
    folder, and its folder exists and takes a new file. Raises :class:`HadwareError` naming
    ``option`` (``"--outputs"``); returns ``path`` as a :class:`~pathlib.Path`."""
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise HadwareError(f"{option} {str(path)!r} is a folder, not a file")
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise HadwareError(f"{option} {str(path)!r}: folder {str(folder)!r} {state}")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as e:
        raise HadwareError(f"{option} {str(path)!r}: folder {str(folder)!r} is not writable "
                           f"({e.strerror})") from None
    return path


def read_json(path: str | os.PathLike, what: str) -> Any:
    """The JSON value in ``path``; a :class:`ConfigFileError` naming ``what`` (``"config
    file"``, ``"grid file"``) and the path when it is missing, unreadable or not JSON."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigFileError(f"{what} {str(path)!r} does not exist") from None
    except OSError as e:
        raise ConfigFileError(f"{what} {str(path)!r} cannot be read: {e.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigFileError(f"{what} {str(path)!r} is not valid JSON: {e.msg} "
                              f"(line {e.lineno}, column {e.colno})") from None


@dataclasses.dataclass(frozen=True)
class BlockConfig:
    """Base class of block configurations.

    Subclasses are ``@dataclass(frozen=True)`` with typed fields and implement
    :meth:`validate`, which raises ``TypeError``/``ValueError`` naming the parameter.
    """

    #: Name of the block, as used on the command line (``hadware generate BLOCK``).
    block: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:  # pragma: no cover - every block overrides it
        raise NotImplementedError

    # -- JSON ------------------------------------------------------------------------------

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.field_names()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "configuration") -> Self:
        """Build a configuration from a mapping. Unknown keys are an error; keys with defaults
        may be left out. Type and range errors keep their type and gain the source name."""
        if not isinstance(data, dict):
            raise ConfigFileError(f"{source}: expected a JSON object, not {type(data).__name__}")
        data = dict(data)
        # A saved description may carry the block name; it must then be this block.
        named = data.pop("block", cls.block)
        if named != cls.block:
            raise ConfigFileError(f"{source}: is a configuration of block {named!r}, "
                                  f"not {cls.block!r}")
        known = cls.field_names()
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigFileError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; "
                                  f"{cls.block} accepts {', '.join(known)}")
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]
        missing = [k for k in required if k not in data]
        if missing:
            raise ConfigFileError(f"{source}: missing key(s) {', '.join(map(repr, missing))}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{source}: {e}") from None

    def with_changes(self, changes: Mapping[str, Any], *, source: str = "changes") -> Self:
        """A copy with the fields named in ``changes`` set to their values, validated as a
        loaded configuration file is (:meth:`from_dict`): type and range errors keep their type
        and gain the ``source`` name. A name that is not a field of the block (``block``
        included) is a :class:`ConfigFileError` naming it and listing the fields."""
        known = self.field_names()
        unknown = [k for k in changes if k not in known]
        if unknown:
            raise ConfigFileError(f"{source}: unknown parameter{'s' * (len(unknown) > 1)} "
                                  f"{', '.join(map(repr, unknown))}; {self.block} accepts "
                                  f"{', '.join(known)}")
        return self.from_dict({**self.to_dict(), **changes}, source=source)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Self:
        """Load a configuration from a JSON file."""
        data = read_json(path, "config file")
        return cls.from_dict(data, source=f"config file {str(path)!r}")

    def save(self, path: str | os.PathLike) -> None:
        """Save the configuration as JSON (atomically)."""
        atomic_write_text(path, self.to_json())

    # -- naming ------------------------------------------------------------------------------

    def stable_hash(self) -> str:
        """A short hash of the block name and every field, stable across runs and machines."""
        canon = json.dumps({"block": self.block, **self.to_dict()}, sort_keys=True,
                           separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:12]

    @property
    def build_name(self) -> str:
        """Folder name for builds of this configuration: ``<block>-<hash>``."""
        return f"{self.block}-{self.stable_hash()}"
