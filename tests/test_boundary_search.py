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


@pytest.mark.parametrize("columns", [1, 5, 600])
def test_first_failing_power_is_what_doubling_finds(columns: int) -> None:
    """Blocks of powers per pass give the power that doubling one at a time stops at (2**60 where none fails)."""
    rng = np.random.default_rng(columns)
    boundary = 2.0 ** rng.uniform(-2.0, 70.0, size=columns)
    got = serving.first_failing_power(lambda m: m < boundary, (columns,))
    doubled = np.ones(columns)
    while ((doubled < boundary) & (doubled < 2.0**60)).any():
        doubled = np.where((doubled < boundary) & (doubled < 2.0**60), doubled * 2.0, doubled)
    assert np.array_equal(got, doubled)


def test_fewest_replicas_does_not_double_unreachable_rows_to_the_limit() -> None:
    """Rows that fail even at max_replicas are found with one call at the limit, not by a dozen doublings."""
    need = np.array([3.0, 1e9, 5.0])
    calls: list[tuple[int, ...]] = []

    def ok(n: np.ndarray) -> np.ndarray:
        calls.append(np.shape(n))
        return n >= need

    assert serving.fewest_replicas(ok, (3,), 4096).tolist() == [3, 0, 5]
    assert len(calls) <= 7  # 1, the limit, 2, 4, 8, one k-ary pass (doubling to 4096 would take 13 calls)


def _cost(batch: int) -> serving.IterationCost:
    gpu = resolve_gpu("H100-SXM")
    layout = InferenceLayout(gpu=gpu.name, weight_precision="fp8", kv_precision="fp8", tp=4, batch=batch)
    return serving.iteration_cost(resolve_model("llama-3.1-70b"), layout, gpu, Assumptions.with_overrides(), prompt_tokens=2000,
                                  output_tokens=300, max_sequences=batch)


def test_steady_state_at_low_load_is_precise_and_the_same_for_any_batch_cap() -> None:
    """The fixed point is bracketed relative to the iteration time itself, not to the caps (which grow as 1 / rate):
    at 0.01-5 requests/s the mean ITL is within 1e-4 of a 40-halving solve, and a batch cap of 64 or 256 that holds the
    load gives bit-identical figures (so dominance between such rows is exact)."""
    rates = np.array([0.01, 0.1, 1.0, 5.0])
    small, large = (serving.steady_state(_cost(b), rates, 2000.0, 300.0) for b in (64, 256))
    for name in ("itl_mean_s", "itl_p90_s", "ttft_p90_s", "decode_seqs_in_flight"):
        assert np.array_equal(getattr(small, name), getattr(large, name)), name
    reference = serving._solve_itl  # noqa: SLF001 - the same solve at 40 halvings
    try:
        serving._solve_itl = lambda *a, **k: reference(*a, **{**k, "iterations": 40})  # type: ignore[assignment]
        fine = serving.steady_state(_cost(64), rates, 2000.0, 300.0)
    finally:
        serving._solve_itl = reference  # type: ignore[assignment]
    np.testing.assert_allclose(small.itl_mean_s, fine.itl_mean_s, rtol=1e-4)
    np.testing.assert_allclose(small.ttft_p90_s, fine.ttft_p90_s, rtol=1e-4)
