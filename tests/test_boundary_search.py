"""The boundary searches of the serving model: k-ary for few layouts, bisection for many, the same answers.

`serving.fewest_replicas` must return the smallest passing count exactly (it is the solver's
replica coefficient) whatever its fan; `serving.shrink_bracket` must keep the boundary inside a
bracket no wider than 2**-halvings of the start; and `max_rate_rps` of one layout (k-ary) must
equal the same layout's rate inside a table large enough to bisect.
"""

from __future__ import annotations

import numpy as np
import pytest

from planner import serving
from planner.catalog import resolve_gpu, resolve_model
from planner.layout import InferenceLayout
from planner.scenario import Assumptions


@pytest.mark.parametrize("columns", [1, 7, 300, 2000])
def test_fewest_replicas_is_the_smallest_passing_count(columns: int) -> None:
    rng = np.random.default_rng(columns)
    need = rng.integers(1, 5000, size=columns).astype(float)
    need[1::5] = 9999  # beyond max_replicas: 0
    at_least = np.maximum(1, need - rng.integers(0, 3000, size=columns))
    at_least[1::5] = 1
    calls = []

    def ok(n: np.ndarray) -> np.ndarray:
        calls.append(n.shape)
        return n >= need

    got = serving.fewest_replicas(ok, (columns,), 4096, at_least)
    expected = np.where(need <= 4096, need, 0).astype(np.int64)
    assert np.array_equal(got, expected)
    fan = serving.search_fan((columns,))
    assert fan == {1: 64, 7: 64, 300: 2, 2000: 2}[columns]
    assert any(shape[0] == fan - 1 for shape in calls if len(shape) == 2) or fan == 2


@pytest.mark.parametrize("columns", [1, 3, 600])
def test_shrink_bracket_keeps_the_boundary_within_the_width(columns: int) -> None:
    rng = np.random.default_rng(7)
    boundary = rng.uniform(0.1, 99.9, size=columns)
    lo, hi = serving.shrink_bracket(lambda x: x < boundary, np.zeros(columns), np.full(columns, 100.0), 20)
    assert np.all(lo <= boundary) and np.all(boundary <= hi)
    assert np.allclose(hi - lo, 100.0 * 2.0**-20)


def test_max_rate_of_one_layout_equals_its_rate_in_a_bisected_table() -> None:
    gpu = resolve_gpu("H100-SXM")
    layout = InferenceLayout(gpu=gpu.name, weight_precision="fp8", kv_precision="fp8", tp=2, batch=64)
    cost = serving.iteration_cost(resolve_model("llama-3.1-70b"), layout, gpu, Assumptions.with_overrides())
    one = float(serving.max_rate_rps(cost, 2000.0, 300.0))
    many = serving.max_rate_rps(cost, np.full(400, 2000.0), 300.0)  # 400 columns: fan 2, plain bisection
    assert serving.search_fan((1,)) == 64 and serving.search_fan((400,)) == 2
    assert float(many[0]) == one  # the same grid points: exactly equal (verification compares plans exactly)
    assert 1.0 < one < 100.0
