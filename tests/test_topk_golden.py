"""The top-k golden model against a brute force written from the contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hadware.golden.topk import select_topk, stream_topk_row


def brute_force(row: list[int], n_valid: int, top_k: int) -> tuple[list[int], list[int]]:
    """Best first by (score descending, index ascending), padded with (-1, 0)."""
    chosen = sorted(range(n_valid), key=lambda j: (-row[j], j))[:top_k]
    pad = top_k - len(chosen)
    return chosen + [-1] * pad, [row[j] for j in chosen] + [0] * pad


def check_against_brute_force(scores: np.ndarray, n_valid: np.ndarray, top_k: int) -> None:
    index, score = select_topk(torch.from_numpy(scores), torch.from_numpy(n_valid), top_k)
    assert index.dtype == torch.int64 and score.dtype == torch.int64
    assert tuple(index.shape) == tuple(score.shape) == (scores.shape[0], top_k)
    for i in range(scores.shape[0]):
        row = [int(x) for x in scores[i]]
        want_index, want_score = brute_force(row, int(n_valid[i]), top_k)
        assert index[i].tolist() == want_index, f"row {i}"
        assert score[i].tolist() == want_score, f"row {i}"


@pytest.mark.parametrize(
    ("m", "n", "top_k", "distinct"),
    [
        (50, 64, 8, 5),  # heavy ties
        (50, 64, 8, 1000),  # few ties
        (40, 512, 32, 9),
        (30, 7, 8, 3),  # fewer keys than slots
        (30, 1, 4, 2),
        (30, 16, 16, 2),  # top_k == n
        (30, 33, 1, 4),
    ],
)
def test_matches_brute_force(m: int, n: int, top_k: int, distinct: int) -> None:
    rng = np.random.default_rng(1000 * n + top_k)
    scores = rng.integers(-distinct, distinct, size=(m, n))
    n_valid = rng.integers(0, n + 1, size=m)
    n_valid[0], n_valid[-1] = n, 0
    check_against_brute_force(scores, n_valid, top_k)


def test_all_equal_scores_take_the_lowest_indices() -> None:
    index, score = select_topk(torch.full((3, 10), 7), None, 4)
    assert index.tolist() == [[0, 1, 2, 3]] * 3
    assert score.tolist() == [[7, 7, 7, 7]] * 3


def test_ties_after_a_larger_score() -> None:
    row = torch.tensor([[2, 5, 2, 5, 2, 9]])
    index, score = select_topk(row, None, 4)
    assert index.tolist() == [[5, 1, 3, 0]]
    assert score.tolist() == [[9, 5, 5, 2]]


def test_n_valid_hides_later_keys_and_pads() -> None:
    row = torch.tensor([[1, 2, 3, 100, 200]])
    index, score = select_topk(row, torch.tensor([3]), 5)
    assert index.tolist() == [[2, 1, 0, -1, -1]]
    assert score.tolist() == [[3, 2, 1, 0, 0]]


def test_padding_score_zero_is_not_confused_with_a_real_zero() -> None:
    index, score = select_topk(torch.tensor([[0, -3]]), None, 3)
    assert index.tolist() == [[0, 1, -1]]
    assert score.tolist() == [[0, -3, 0]]


def test_large_magnitude_scores() -> None:
    big = 2**61
    index, score = select_topk(torch.tensor([[-big, big, 0, big]]), None, 3)
    assert index.tolist() == [[1, 3, 2]]
    assert score.tolist() == [[big, big, 0]]


def test_streaming_insertion_rule_matches() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        n = int(rng.integers(1, 40))
        top_k = int(rng.integers(1, 12))
        row = [int(x) for x in rng.integers(-4, 4, size=n)]
        n_valid = int(rng.integers(0, n + 1))
        assert stream_topk_row(row, n_valid, top_k) == brute_force(row, n_valid, top_k)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((torch.zeros(2, 3, dtype=torch.int64), None, 0), r"top_k must be an integer of at least"),
        ((torch.zeros(2, 3, dtype=torch.int64), None, True), r"top_k must be an integer"),
        ((torch.zeros(3, dtype=torch.int64), None, 2), r"scores must be 2-D"),
        ((torch.zeros(2, 3), None, 2), r"scores must be an integer tensor"),
        ((torch.zeros(2, 3, dtype=torch.int64), torch.tensor([1]), 2), r"n_valid must have shape"),
        ((torch.zeros(2, 3, dtype=torch.int64), torch.tensor([1, 4]), 2), r"between 0 and n \(3\)"),
        ((torch.tensor([[2**62]]), None, 1), r"strictly between"),
    ],
)
def test_bad_arguments(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        select_topk(*args)
