"""The attention vector-file contract (``hadware.spec.attention_vectors``) for every registered
variant: array names, normalisation, one error message per problem (pinned whole), and the bit
order of +-1 vectors. Each error is raised the same way by the variant's golden
``run_vectors``, which the command line calls."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from hadware.blocks import BLOCKS
from hadware.config.attention_core import AttentionCoreConfig
from hadware.errors import InputError
from hadware.spec.attention_vectors import check_inputs, input_names, output_names, pm1_to_int

#: The attention variants of the registry (all default to d = 64, n_max = 64, d_v = 8).
VARIANTS = {name: b.config_class() for name, b in BLOCKS.items()
            if issubclass(b.config_class(), AttentionCoreConfig)}
ALL = sorted(VARIANTS)
BINARY = sorted(n for n, c in VARIANTS.items() if c.scorer == "hamming")
INT8 = sorted(n for n, c in VARIANTS.items() if c.scorer == "int8")


def good_arrays(block: str) -> dict[str, np.ndarray]:
    """3 queries, 10 keys of d = 64 (+-1 or int8 as the scorer takes), d_v = 8."""
    rng = np.random.default_rng(20)
    if VARIANTS[block].scorer == "hamming":
        q, k = (rng.choice(np.array([-1, 1], np.int8), size=(r, 64)) for r in (3, 10))
    else:
        q, k = (rng.integers(-128, 128, size=(r, 64)).astype(np.int8) for r in (3, 10))
    return {"q": q, "k": k, "v": rng.integers(-128, 128, size=(10, 8)).astype(np.int8),
            "n_valid": np.array([1, 10, 4], np.int32)}


def test_names() -> None:
    assert input_names() == ("q", "k", "v", "n_valid")
    want = {"attention": ("out", "topk_index", "topk_score"),
            "int8_topk_attention": ("out", "topk_index", "topk_score"),
            "std_attention": ("out",), "binary_dense_attention": ("out",)}
    assert {name: output_names(cls()) for name, cls in VARIANTS.items()} == want
    for name, cls in VARIANTS.items():
        golden = BLOCKS[name].golden_module()
        assert (input_names(), want[name]) == (golden.INPUT_NAMES, golden.OUTPUT_NAMES)
        assert tuple(golden.run_vectors(cls(), good_arrays(name))) == want[name]


def test_pm1_to_int() -> None:
    assert pm1_to_int([1, -1, -1, -1]) == 1
    assert pm1_to_int([-1, 1, 1, -1, -1, -1, -1, -1, 1]) == 0b1_0000_0110
    assert pm1_to_int(-np.ones(64)) == 0
    assert pm1_to_int(np.ones(70, np.int8)) == 2**70 - 1
    rng = np.random.default_rng(1)
    for d in (8, 13, 64, 1024):
        row = rng.choice([-1, 1], size=d)
        assert pm1_to_int(row) == sum(1 << j for j in range(d) if row[j] == 1)


@pytest.mark.parametrize("block", sorted(VARIANTS))
def test_check_inputs_normalises(block: str) -> None:
    arrays = good_arrays(block)
    del arrays["n_valid"]
    arrays["q"] = arrays["q"].astype(np.float64)
    arrays["k"] = arrays["k"].astype(np.int32)
    arrays["v"] = arrays["v"].astype(np.float32)
    got = check_inputs(VARIANTS[block](), arrays)
    assert list(got) == ["q", "k", "v", "n_valid"]
    assert [a.dtype for a in got.values()] == [np.int8, np.int8, np.int8, np.int32]
    assert got["n_valid"].tolist() == [10, 10, 10]
    for name in ("q", "k", "v"):
        np.testing.assert_array_equal(got[name], arrays[name])


def _set(block: str, name: str, index: tuple[int, ...], value: object,
         dtype: object = None) -> np.ndarray:
    a = good_arrays(block)[name].astype(dtype or np.int64)
    a[index] = value
    return a


_INT8 = r"integers in -128\.\.127 \(int8\)"

# (blocks, changes, message): ``changes`` maps an array name to its replacement (None: leave
# it out), or is a function of the block giving them.
CASES: list[tuple[list[str], Any, str]] = [
    (ALL, {"v": None}, r"^missing array 'v'$"),
    (ALL, {"q": None}, r"^missing array 'q'$"),
    (ALL, {"q": np.ones(64)}, r"^q must have shape \(m, d\) = \(m, 64\), not \(64,\)$"),
    (ALL, {"q": np.ones((3, 32))},
     r"^q must have shape \(m, d\) = \(m, 64\), not \(3, 32\)$"),
    (ALL, {"q": np.ones((0, 64))}, r"^q must have at least one row \(query\)$"),
    (ALL, {"k": np.ones((10, 63))},
     r"^k must have shape \(n, d\) = \(n, 64\), not \(10, 63\)$"),
    (ALL, {"k": np.ones((0, 64)), "v": np.ones((0, 8))},
     r"^k must have at least one row \(key\)$"),
    (ALL, {"k": np.ones((65, 64)), "v": np.ones((65, 8))},
     r"^k has 65 rows \(keys\), more than n_max = 64$"),
    (ALL, {"v": np.ones((10, 7))},
     r"^v must have shape \(n, d_v\) = \(10, 8\), not \(10, 7\)$"),
    (ALL, {"v": np.ones((9, 8))},
     r"^v must have shape \(n, d_v\) = \(10, 8\), not \(9, 8\)$"),
    (ALL, {"q": np.ones((3, 64), dtype=bool)}, r"^q must hold numbers, not booleans$"),
    (ALL, lambda b: {"v": _set(b, "v", (2, 3), 300, np.int32)},
     rf"^v must hold {_INT8}, found 300 at \[2, 3\]$"),
    (ALL, lambda b: {"v": _set(b, "v", (0, 1), -129)},
     rf"^v must hold {_INT8}, found -129 at \[0, 1\]$"),
    (ALL, lambda b: {"v": _set(b, "v", (4, 2), 0.5, np.float64)},
     rf"^v must hold {_INT8}, found 0\.5 at \[4, 2\]$"),
    (ALL, lambda b: {"v": _set(b, "v", (4, 2), np.nan, np.float64)},
     rf"^v must hold {_INT8}, found nan at \[4, 2\]$"),
    (ALL, lambda b: {"v": _set(b, "v", (4, 2), 1e30, np.float64)},
     rf"^v must hold {_INT8}, found 1e\+30 at \[4, 2\]$"),
    (ALL, {"v": np.full((10, 8), "a")},
     r"^v must be an integer or real array, not dtype <U1$"),
    (ALL, {"v": [[1, 2], [3]]}, r"^v is not a rectangular array$"),
    (ALL, {"n_valid": np.array([1, 2])},
     r"^n_valid must have shape \(m,\) = \(3,\), not \(2,\)$"),
    (ALL, {"n_valid": np.array([1, 0, 2])},
     r"^n_valid must hold integers between 1 and n = 10, found 0 at \[1\]$"),
    (ALL, {"n_valid": np.array([1, 11, 2])},
     r"^n_valid must hold integers between 1 and n = 10, found 11 at \[1\]$"),
    (ALL, {"n_valid": np.array([1, 2.5, 2])},
     r"^n_valid must hold integers between 1 and n = 10, found 2\.5 at \[1\]$"),
    (BINARY, lambda b: {"q": _set(b, "q", (1, 5), 0)},
     r"^q must hold only -1 and \+1, found 0 at \[1, 5\]$"),
    (BINARY, lambda b: {"k": _set(b, "k", (9, 63), 2)},
     r"^k must hold only -1 and \+1, found 2 at \[9, 63\]$"),
    (BINARY, lambda b: {"k": _set(b, "k", (0, 0), 0.5, np.float64)},
     r"^k must hold only -1 and \+1, found 0\.5 at \[0, 0\]$"),
    (INT8, lambda b: {"q": _set(b, "q", (1, 4), 200)},
     rf"^q must hold {_INT8}, found 200 at \[1, 4\]$"),
    (INT8, lambda b: {"k": _set(b, "k", (0, 0), 0.5, np.float64)},
     rf"^k must hold {_INT8}, found 0\.5 at \[0, 0\]$"),
    (INT8, lambda b: {"k": _set(b, "k", (3, 2), -128.0, np.float64), "q": np.zeros((3, 64))},
     None),  # exact reals and zeros are int8 values
]


@pytest.mark.parametrize(("block", "changes", "message"), [
    pytest.param(block, changes, message, id=f"{block}-{i}")
    for i, (blocks, changes, message) in enumerate(CASES) for block in blocks
])
def test_check_inputs_errors(block: str, changes: Any, message: str | None) -> None:
    cfg = VARIANTS[block]()
    arrays: dict[str, object] = dict(good_arrays(block))
    for name, value in (changes(block) if callable(changes) else changes).items():
        if value is None:
            del arrays[name]
        else:
            arrays[name] = value
    golden = BLOCKS[block].golden_module()
    if message is None:
        assert check_inputs(cfg, arrays)["k"][3, 2] == -128
        return
    with pytest.raises(InputError, match=message):
        check_inputs(cfg, arrays)
    with pytest.raises(InputError, match=message):
        golden.run_vectors(cfg, arrays)


@pytest.mark.parametrize("block", sorted(VARIANTS))
def test_unknown_arrays_name_the_block(block: str) -> None:
    arrays = dict(good_arrays(block), x=np.zeros(3), mask=np.zeros(3))
    with pytest.raises(InputError, match=rf"^unknown array\(s\) 'mask', 'x'; {block} takes q, k, "
                                         r"v and optionally n_valid$"):
        check_inputs(VARIANTS[block](), arrays)
