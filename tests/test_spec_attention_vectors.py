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
from hadware.spec.attention_vectors import (
    as_batched,
    check_inputs,
    input_names,
    output_names,
    pm1_to_int,
    squeeze_batch,
)

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
    (ALL, {"q": np.ones(64)}, r"^q must have shape \(m, d\) = \(m, 64\) or \(b, m, d\) = "
                              r"\(b, m, 64\), not \(64,\)$"),
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


#: The optional arrays each variant's message about unknown arrays lists (by default config).
OPTIONAL = {"attention": r"n_valid, temperature \(with runtime_temperature\) and top_k",
            "binary_dense_attention": r"n_valid and temperature \(with runtime_temperature\)",
            "int8_topk_attention": r"n_valid, temperature \(with runtime_temperature\) and top_k",
            "std_attention": r"n_valid and temperature \(with runtime_temperature\)"}


@pytest.mark.parametrize("block", sorted(VARIANTS))
def test_unknown_arrays_name_the_block(block: str) -> None:
    arrays = dict(good_arrays(block), x=np.zeros(3), mask=np.zeros(3))
    with pytest.raises(InputError, match=rf"^unknown array\(s\) 'mask', 'x'; {block} takes q, k, "
                                         rf"v and optionally {OPTIONAL[block]}$"):
        check_inputs(VARIANTS[block](), arrays)


# -- batched files -----------------------------------------------------------------------------


def batched_arrays(block: str) -> dict[str, np.ndarray]:
    """Two entries of ``good_arrays`` (the second with its rows rotated): q (2, 3, 64),
    k (2, 10, 64), v (2, 10, 8), n_valid (2, 3)."""
    a = good_arrays(block)
    return {x: np.stack([a[x], np.roll(a[x], 1, axis=0)]) for x in a}


@pytest.mark.parametrize("block", ALL)
def test_check_inputs_batched_normalises_and_keeps_its_rank(block: str) -> None:
    cfg = VARIANTS[block]()
    arrays = batched_arrays(block)
    del arrays["n_valid"]
    arrays["k"] = arrays["k"].astype(np.float32)
    got = check_inputs(cfg, arrays)
    assert list(got) == ["q", "k", "v", "n_valid"]
    assert [a.dtype for a in got.values()] == [np.int8, np.int8, np.int8, np.int32]
    assert [a.shape for a in got.values()] == [(2, 3, 64), (2, 10, 64), (2, 10, 8), (2, 3)]
    assert got["n_valid"].tolist() == [[10, 10, 10]] * 2
    again = check_inputs(cfg, got)  # the normalised form is a valid file checking to itself
    for name in got:
        np.testing.assert_array_equal(again[name], got[name])
    view, batched = as_batched(got)
    assert batched and all(view[x] is got[x] for x in got)
    # One entry: an unbatched file's view, and the squeeze back.
    one = check_inputs(cfg, good_arrays(block))
    view, batched = as_batched(one)
    assert not batched
    assert [a.shape for a in view.values()] == [(1, 3, 64), (1, 10, 64), (1, 10, 8), (1, 3)]
    outs = {"out": np.zeros((1, 3, 8), np.int32)}
    assert squeeze_batch(outs, False)["out"].shape == (3, 8)
    assert squeeze_batch(outs, True)["out"].shape == (1, 3, 8)


def _bset(block: str, name: str, index: tuple[int, ...], value: object) -> np.ndarray:
    a = batched_arrays(block)[name].astype(np.int64)
    a[index] = value
    return a


BATCHED_CASES: list[tuple[list[str], Any, str]] = [
    # The batch axis on some arrays only.
    (ALL, lambda b: {"k": batched_arrays(b)["k"], **{x: good_arrays(b)[x] for x in "qv"}},
     r"^k has 3 dimensions but q is unbatched \(2 dimensions\): k must have shape \(n, d\) = "
     r"\(n, 64\), not \(2, 10, 64\)$"),
    (ALL, lambda b: {"v": good_arrays(b)["v"]},
     r"^v has 2 dimensions but q is batched \(3 dimensions\): v must have shape "
     r"\(b, n, d_v\) = \(2, n, 8\), not \(10, 8\)$"),
    (ALL, lambda b: {"n_valid": good_arrays(b)["n_valid"]},
     r"^n_valid has 1 dimension but q is batched \(3 dimensions\): n_valid must have shape "
     r"\(b, m\) = \(2, 3\), not \(3,\)$"),
    (ALL, lambda b: {**good_arrays(b), "n_valid": batched_arrays(b)["n_valid"]},
     r"^n_valid has 2 dimensions but q is unbatched \(2 dimensions\): n_valid must have "
     r"shape \(m,\) = \(3,\), not \(2, 3\)$"),
    (ALL, {"q": np.ones((1, 2, 3, 64))},
     r"^q must have shape \(m, d\) = \(m, 64\) or \(b, m, d\) = \(b, m, 64\), "
     r"not \(1, 2, 3, 64\)$"),
    # Batch sizes.
    (ALL, {"q": np.ones((0, 3, 64)), "k": np.ones((0, 10, 64)), "v": np.ones((0, 10, 8)),
           "n_valid": np.ones((0, 3))},
     r"^q must have at least one batch entry: shape \(b, m, d\) with b >= 1, "
     r"not \(0, 3, 64\)$"),
    (ALL, lambda b: {"k": np.concatenate([batched_arrays(b)["k"]] * 2)[:3]},
     r"^k has batch size 3 but q has 2: k must have shape \(b, n, d\) = \(2, n, 64\), "
     r"not \(3, 10, 64\)$"),
    (ALL, lambda b: {"v": batched_arrays(b)["v"][:1]},
     r"^v has batch size 1 but q has 2: v must have shape \(b, n, d_v\) = \(2, n, 8\), "
     r"not \(1, 10, 8\)$"),
    (ALL, {"n_valid": np.ones((3, 3))},
     r"^n_valid has batch size 3 but q has 2: n_valid must have shape \(b, m\) = \(2, 3\), "
     r"not \(3, 3\)$"),
    # Shapes within an entry.
    (ALL, {"q": np.ones((2, 3, 32))},
     r"^q must have shape \(b, m, d\) = \(2, m, 64\), not \(2, 3, 32\)$"),
    (ALL, {"q": np.ones((2, 0, 64)), "n_valid": np.ones((2, 0))},
     r"^q must have at least one row \(query\) per batch entry, not shape \(2, 0, 64\)$"),
    (ALL, {"k": np.ones((2, 0, 64)), "v": np.ones((2, 0, 8))},
     r"^k must have at least one row \(key\) per batch entry, not shape \(2, 0, 64\)$"),
    (ALL, {"k": np.ones((2, 65, 64)), "v": np.ones((2, 65, 8))},
     r"^k has 65 rows \(keys\) per batch entry, more than n_max = 64 "
     r"\(shape \(2, 65, 64\)\)$"),
    (ALL, {"v": np.ones((2, 10, 7))},
     r"^v must have shape \(b, n, d_v\) = \(2, 10, 8\), not \(2, 10, 7\)$"),
    (ALL, {"n_valid": np.ones((2, 4))},
     r"^n_valid must have shape \(b, m\) = \(2, 3\), not \(2, 4\)$"),
    # Values: the position includes the entry.
    (ALL, lambda b: {"v": _bset(b, "v", (1, 2, 3), 300)},
     rf"^v must hold {_INT8}, found 300 at \[1, 2, 3\]$"),
    (ALL, lambda b: {"n_valid": _bset(b, "n_valid", (1, 2), 11)},
     r"^n_valid must hold integers between 1 and n = 10, found 11 at \[1, 2\]$"),
    (BINARY, lambda b: {"q": _bset(b, "q", (1, 0, 5), 0)},
     r"^q must hold only -1 and \+1, found 0 at \[1, 0, 5\]$"),
    (INT8, lambda b: {"k": _bset(b, "k", (1, 9, 63), -129)},
     rf"^k must hold {_INT8}, found -129 at \[1, 9, 63\]$"),
]


@pytest.mark.parametrize(("block", "changes", "message"), [
    pytest.param(block, changes, message, id=f"{block}-{i}")
    for i, (blocks, changes, message) in enumerate(BATCHED_CASES) for block in blocks
])
def test_check_inputs_batched_errors(block: str, changes: Any, message: str) -> None:
    cfg = VARIANTS[block]()
    arrays: dict[str, object] = dict(batched_arrays(block))
    arrays.update(changes(block) if callable(changes) else changes)
    with pytest.raises(InputError, match=message):
        check_inputs(cfg, arrays)
    with pytest.raises(InputError, match=message):
        BLOCKS[block].golden_module().run_vectors(cfg, arrays)
