"""The numpy screening of a table equals CP-SAT on the same model (`planner.solver.solve_table`).

Before CP-SAT runs, each user limit's integer coefficients (the model's own) tell which rows it
rules out at their fewest replicas; a table whose rows are all ruled out is declared infeasible
without a solve, its conflicting limits are found over the same columns, and an explanation's
"best plan meeting the other limits" is the least (objective, GPUs, row). Here, on random small
scenarios with limits drawn tight around their own tables' figures, every one of those answers
is compared with CP-SAT solving the full, unscreened model:

* feasible or not, for every subset of the scenario's limits;
* the minimal conflicting set: CP-SAT's sufficient assumptions shrunk by deletion with CP-SAT
  re-solves (what the solver did before the screening);
* the plan of `best_at_fewest_replicas` for min_cost, min_gpus and min_time (training), with
  each limit dropped in turn and with none dropped.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from ortools.sat.python import cp_model

from planner import encode
from planner.catalog import resolve_model
from planner.enums import Objective
from planner.evaluate import InferenceEvaluation
from planner.scenario import Scenario, parse_scenario
from planner.solver import (
    _screen, _solve_encoding, best_at_fewest_replicas, build_encoding, conflicting_limits, layout_summary, reproducible_solver,
    solver_workers, user_limits, with_replicas,
)
from planner.space import build_space
from tests.test_solver_oracle import _around, _inference_base, _training_base

SEED = 20_261_201
N_SCENARIOS = 120


def _scenario(i: int) -> tuple[Scenario, list] | None:
    """Scenario i with budget, deadline and SLOs drawn tight around its own table (many infeasible, several limits)."""
    rng = random.Random(SEED * 1000 + i)
    training = rng.random() < 0.5
    data: dict[str, Any] = _training_base(rng, i) if training else _inference_base(rng, i)
    base = parse_scenario(data, f"case {i}")
    model = resolve_model(base.workload.model)
    rows = build_space(base, model, base.resolved_assumptions(), prune=True).rows
    if not rows:
        return None
    if training:
        if rng.random() < 0.6:
            data["constraints"]["budget_usd"] = round(_around(rng, [e.cost_usd for e in rows]) * 0.5, 2)
        if rng.random() < 0.6:
            data["constraints"]["deadline_days"] = _around(rng, [e.perf.time_to_train_s / 86400.0 for e in rows]) * 0.5
        data["search"]["max_gpus"] = data["search"]["max_gpus"] or rng.choice([None, 4, 8])
    else:
        if rng.random() < 0.6:
            data["constraints"]["budget_usd"] = round(_around(rng, [e.usd_per_hour for e in rows]) * 0.5, 4)
        slo = {}
        if rng.random() < 0.4:
            slo["ttft_s"] = rng.choice(rows).perf.ttft_s * rng.uniform(0.5, 1.2)
        if rng.random() < 0.4:
            slo["tpot_s"] = rng.choice(rows).perf.tpot_s * rng.uniform(0.5, 1.2)
        if slo:
            data["workload"]["slo"] = slo
    data["objective"] = "min_cost"
    scenario = parse_scenario(data, f"case {i}")
    rows = build_space(scenario, model, scenario.resolved_assumptions(), prune=True).rows
    return (scenario, rows) if rows else None


SCENARIOS = [s for s in (_scenario(i) for i in range(N_SCENARIOS)) if s is not None]


def _cp_sat(scenario: Scenario, rows: list, skip: frozenset[str]) -> tuple[int, Any]:
    """(status, plan) of CP-SAT on the full, unscreened model of the table."""
    enc = build_encoding(scenario, rows, skip)
    result = _solve_encoding(scenario, enc, len(rows), 20.0)
    if not result.found:
        return result.status, None
    chosen = next(r for r, x in enumerate(enc.x) if result.solver.boolean_value(x))
    plan = rows[chosen]
    if enc.k is not None:
        plan = with_replicas(plan, result.solver.value(enc.k[chosen]))
    return result.status, plan


def _cp_sat_core(scenario: Scenario, rows: list) -> list[str]:
    """CP-SAT's sufficient assumptions, shrunk by deletion with a CP-SAT solve per trial."""
    enc = build_encoding(scenario, rows)
    keys = [lim.key for lim in enc.limits]
    result = _solve_encoding(scenario, enc, len(rows), 20.0)
    core = set(result.first.sufficient_assumptions_for_infeasibility())
    current = [lim.key for lim in enc.limits if lim.literal.index in core]
    for key in list(current):
        trial = [k for k in current if k != key]
        model = build_encoding(scenario, rows, frozenset(k for k in keys if k not in trial)).model
        if reproducible_solver(20.0, solver_workers(len(rows))).solve(model) == cp_model.INFEASIBLE:
            current = trial
    return current


def test_verdicts_equal_cp_sat_for_every_subset_of_limits() -> None:
    compared = infeasible = 0
    for scenario, rows in SCENARIOS:
        keys = [limit.key for limit in user_limits(scenario, encode.coefficients(rows))]
        for size in range(len(keys) + 1):
            for kept in itertools.combinations(keys, size):
                skip = frozenset(keys) - set(kept)
                _, _, _, ruled_out = _screen(scenario, rows, skip)
                screened_infeasible = bool(ruled_out.any(axis=0).all()) if len(ruled_out) else False
                status, _ = _cp_sat(scenario, rows, skip)
                assert status in (cp_model.OPTIMAL, cp_model.INFEASIBLE), (scenario.name, kept)
                assert screened_infeasible == (status == cp_model.INFEASIBLE), (scenario.name, kept)
                compared += 1
                infeasible += screened_infeasible
    assert compared >= 300 and infeasible >= 50, (compared, infeasible)


def test_conflicting_limits_equal_cp_sat_deletion() -> None:
    conflicts = several = 0
    for scenario, rows in SCENARIOS:
        coef, fewest, limits, ruled_out = _screen(scenario, rows, frozenset())
        if not ruled_out.any(axis=0).all() or not len(limits):
            continue
        got = conflicting_limits(scenario, rows, limits, ruled_out, coef, fewest, 20.0)
        assert got == _cp_sat_core(scenario, rows), scenario.name
        conflicts += 1
        several += len(got) > 1
    assert conflicts >= 30 and several >= 3, (conflicts, several)


@pytest.mark.parametrize("objective", [Objective.MIN_COST, Objective.MIN_GPUS, Objective.MIN_TIME])
def test_best_at_fewest_replicas_equals_cp_sat(objective: Objective) -> None:
    compared = found = 0
    for scenario, rows in SCENARIOS:
        if objective is Objective.MIN_TIME and isinstance(rows[0], InferenceEvaluation):
            continue
        relaxed = scenario.model_copy(update={"objective": objective})
        keys = [limit.key for limit in user_limits(scenario, encode.coefficients(rows))]
        for skip in [frozenset()] + [frozenset({k}) for k in keys]:
            _, expected = _cp_sat(relaxed, rows, skip)
            got = best_at_fewest_replicas(relaxed, rows, skip)
            assert (got is None) == (expected is None), (scenario.name, skip)
            if got is not None:
                assert layout_summary(got) == layout_summary(expected), (scenario.name, skip)
                assert got == expected
                found += 1
            compared += 1
    assert compared >= 60 and found >= 30, (compared, found)


def test_conflicting_limits_minimal_when_cp_sat_stops_at_its_time_limit() -> None:
    """Several minimal conflicting sets and no time for CP-SAT: the answer is still one of them (deletion from every limit)."""
    from planner.solver import minimal_conflicts

    checked = 0
    for scenario, rows in SCENARIOS:
        coef, fewest, limits, ruled_out = _screen(scenario, rows, frozenset())
        if not len(limits) or not ruled_out.any(axis=0).all() or len(minimal_conflicts(ruled_out)) < 2:
            continue
        got = conflicting_limits(scenario, rows, limits, ruled_out, coef, fewest, 1e-9)
        every = {tuple(limits[i].key for i in subset) for subset in minimal_conflicts(ruled_out, most=2 ** len(limits))}
        assert tuple(got) in every, (scenario.name, got, every)
        checked += 1
    assert checked >= 3
