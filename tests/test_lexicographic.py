"""One weighted CP-SAT solve gives the same plan as the two lexicographic phases (`planner.solver.solve_lexicographic`).

Random serving-like tables with many ties on the primary objective (a row, replicas on it, a
load to serve, a budget); the tie-break is the planner's own (fewer GPUs, then the earliest
row). Both ways must choose the same row and replica count and report the same status.
"""

from __future__ import annotations

import random

import pytest
from ortools.sat.python import cp_model

from planner.solver import one_phase_objective, solve_lexicographic


def _table(seed: int, maximise: bool) -> tuple[cp_model.CpModel, object, object, list, list]:
    rng = random.Random(seed)
    n = rng.randint(3, 40)
    model = cp_model.CpModel()
    x = [model.new_bool_var(f"x{r}") for r in range(n)]
    model.add_exactly_one(x)
    gpus = [rng.choice([1, 2, 4, 8]) for _ in range(n)]
    price = [g * rng.choice([1, 2, 3]) for g in gpus]  # few distinct prices, steps smaller than the tie-break's: ties
    supply = [rng.choice([1, 2, 3, 4]) for _ in range(n)]
    k = [model.new_int_var(0, 20, f"k{r}") for r in range(n)]
    for kr, xr in zip(k, x):
        model.add(kr <= 20 * xr)
        model.add(kr >= xr)
    model.add(cp_model.LinearExpr.weighted_sum(k, supply) >= rng.choice([2, 5, 10]))
    cost = cp_model.LinearExpr.weighted_sum(k, price)
    model.add(cost <= rng.choice([20, 50, 200]))
    used = cp_model.LinearExpr.weighted_sum(k, gpus)
    primary = cp_model.LinearExpr.weighted_sum(k, supply) if maximise else cost
    tiebreak = used * n + sum(r * xr for r, xr in enumerate(x))
    return model, primary, tiebreak, x, k


@pytest.mark.parametrize("maximise", [False, True])
def test_one_phase_equals_two_phases(maximise: bool) -> None:
    compared = 0
    for seed in range(40):
        answers = []
        for one_phase in (False, True):
            model, primary, tiebreak, x, k = _table(seed, maximise)
            result = solve_lexicographic(model, primary, maximise, tiebreak, x, 10.0, 1, one_phase=one_phase)
            chosen = [r for r, xr in enumerate(x) if result.solver.boolean_value(xr)] if result.found else []
            answers.append((result.status, result.proved, chosen, [result.solver.value(kr) for kr in k] if result.found else []))
        assert answers[0] == answers[1], seed
        compared += bool(answers[0][2])
    assert compared >= 20  # most tables have a plan


def test_one_phase_refused_beyond_exact_doubles() -> None:
    model = cp_model.CpModel()
    big = model.new_int_var(0, 2**40, "big")
    wide = model.new_int_var(0, 2**20, "wide")
    assert one_phase_objective(big, False, wide) is None
    assert one_phase_objective(wide, False, wide) is not None
