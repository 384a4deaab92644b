"""Exact dominance pruning (`planner.space.dominance_keep`) against its definition, on random tables with ties.

A row is kept unless another row is <= on every column and either differs somewhere or comes
first (of equal rows the first is kept). Checked by brute force over all pairs, for the three-
column staircase (training) and the blocked comparison of more columns (serving: six columns).
"""

from __future__ import annotations

import numpy as np
import pytest

from planner.space import DOMINANCE_BLOCK_ROWS, dominance_keep


def brute_force_keep(values: np.ndarray) -> np.ndarray:
    n = len(values)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        for j in range(n):
            if j != i and np.all(values[j] <= values[i]) and (np.any(values[j] != values[i]) or j < i):
                keep[i] = False
                break
    return keep


@pytest.mark.parametrize("columns", [2, 3, 6])
@pytest.mark.parametrize("seed", range(4))
def test_dominance_keep_matches_definition(columns: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = DOMINANCE_BLOCK_ROWS + 150 if seed % 2 else 90  # more than one block, and less than one
    values = rng.integers(0, 5, size=(n, columns)).astype(float)  # few distinct values: many ties and equal rows
    if seed == 3:
        values[:, 0] = rng.normal(size=n)
    keep = dominance_keep(values)
    assert np.array_equal(keep, brute_force_keep(values))
    assert 0 < keep.sum() < n


def test_dominance_keep_first_of_equal_rows_and_empty() -> None:
    values = np.array([[2.0, 1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 1.0], [0.0, 2.0, 0.0, 1.0]])
    assert dominance_keep(values).tolist() == [False, True, False, True]
    assert dominance_keep(np.zeros((0, 6))).tolist() == []
