"""Brute-force oracle for the CP-SAT solver.

For a few hundred small random scenarios, every feasible plan is enumerated here, in plain
Python, from the UNPRUNED evaluated table of `planner.space.build_space` (each row scored by
`planner.evaluate`): a training plan is one row; a serving plan is one row times a replica count
k = 1..K. The limits (max_gpus, inventory, budget, deadline, load, TTFT/TPOT SLOs) and the
objective values are computed here from the rows' figures, independently of `planner.encode`
and of the CP-SAT code in `planner.solver`. Then `planner.solver.solve` must agree:

* infeasible per the oracle  <=>  `InfeasibleError`;
* otherwise status OPTIMAL, verified, and `plan.objective_value` = the oracle's optimum within
  the resolution of the solver's integer scaling (cents for $, 0.1 s for time to train,
  1e-4 $/h per replica for serving cost, 0.01 tokens/s per replica for throughput).

CP-SAT works on integers, so a plan within one resolution step of a limit may be accepted or
rejected either way. The oracle therefore runs twice: with every limit tightened by two steps
("strict") and loosened by one ("loose"). The planner must accept everything strict accepts and
nothing loose rejects, and its optimum must lie between the two optima. Where strict and loose
agree (all but a handful of cases, counted in the last test) this is plain equality.
"""

from __future__ import annotations

import functools
import math
import random
import time
from dataclasses import dataclass
from typing import Any

import pytest

from planner.catalog import load_gpus, resolve_model
from planner.errors import InfeasibleError
from planner.evaluate import InferenceEvaluation, TrainingEvaluation
from planner.scenario import InferenceWorkload, Scenario, parse_scenario
from planner.solver import solve
from planner.space import build_space

SEED = 20_261_130
N_CASES = 220
TRAIN_MODELS = ["deepseek-llm-7b", "llama-2-7b", "qwen2.5-7b", "mixtral-8x7b", "deepseek-v2-lite"]
INFER_MODELS = TRAIN_MODELS + ["deepseek-llm-67b"]
GPU_NAMES = [g.name for g in load_gpus()]

# resolution of the solver's integer scaling, per quantity (one step)
RES_USD = 0.01          # training cost, $
RES_TIME_S = 0.1        # time to train, s
RES_USD_H = 1e-4        # serving cost, $/h, per replica
RES_TPS = 0.01          # tokens/s, per replica
RES_LATENCY_S = 1e-6    # TTFT / TPOT


def _subset(rng: random.Random, values: list[Any], at_least: int = 1) -> list[Any]:
    k = rng.randint(at_least, len(values))
    chosen = rng.sample(values, k)
    return [v for v in values if v in chosen]


# ---- random scenarios ---------------------------------------------------------------------


def _training_base(rng: random.Random, i: int) -> dict[str, Any]:
    model = rng.choice(TRAIN_MODELS)
    search: dict[str, Any] = {
        "gpus": rng.sample(GPU_NAMES, rng.randint(1, 3)),
        "tp": _subset(rng, [1, 2, 4]),
        "pp": _subset(rng, [1, 2]),
        "micro_batches": _subset(rng, [1, 2]),
        "zero_stages": _subset(rng, [0, 1, 2, 3]),
        "checkpointing": _subset(rng, [0, 1, 2]),
        "train_precisions": _subset(rng, ["bf16", "fp8"]),
        "max_gpus": rng.choice([None, 4, 8, 16, 64]),
    }
    if model in ("mixtral-8x7b", "deepseek-v2-lite"):
        search["ep"] = _subset(rng, [1, 2, 4])
    constraints: dict[str, Any] = {}
    if rng.random() < 0.15:
        constraints["inventory"] = {rng.choice(search["gpus"]): rng.choice([4, 8, 16, 32])}
    return {
        "name": f"oracle-train-{i}",
        "workload": {"kind": "training", "model": model, "tokens": rng.choice([1e8, 1e9, 2e10]),
                     "seq_len": rng.choice([1024, 2048, 4096]), "global_batch_seqs": rng.choice([8, 16, 32, 64])},
        "search": search,
        "constraints": constraints,
        "objective": rng.choice(["min_cost", "min_gpus", "max_throughput", "min_time"]),
    }


def _inference_base(rng: random.Random, i: int) -> dict[str, Any]:
    workload: dict[str, Any] = {"kind": "inference", "model": rng.choice(INFER_MODELS),
                                "prompt_tokens": rng.choice([128, 512, 2048]), "output_tokens": rng.choice([64, 256, 1024])}
    load = rng.choice(["tps", "conc", "both"])
    if load in ("tps", "both"):
        workload["target_output_tokens_per_s"] = round(math.exp(rng.uniform(math.log(100), math.log(20_000))), 1)
    if load in ("conc", "both"):
        workload["concurrent_sequences"] = rng.choice([1, 8, 32, 100, 256, 512])
    search: dict[str, Any] = {
        "gpus": rng.sample(GPU_NAMES, rng.randint(1, 2)),
        "weight_precisions": _subset(rng, ["bf16", "fp8", "int8", "int4"]),
        "kv_precisions": _subset(rng, ["bf16", "fp8"]),
        "tp": _subset(rng, [1, 2, 4, 8]),
        "pp": _subset(rng, [1, 2]),
        "batch_per_replica": _subset(rng, [1, 4, 16, 64]),
        "max_gpus": rng.choice([None, None, 4, 8, 16, 64]),
    }
    constraints: dict[str, Any] = {}
    if rng.random() < 0.15:
        constraints["inventory"] = {rng.choice(search["gpus"]): rng.choice([8, 16, 64])}
    return {"name": f"oracle-infer-{i}", "workload": workload, "search": search, "constraints": constraints}


def _around(rng: random.Random, values: list[float]) -> float | None:
    """A limit drawn around the figures of random rows, so that some cases become infeasible."""
    if not values:
        return None
    return rng.choice(values) * rng.uniform(0.6, 2.5)


@dataclass
class Case:
    scenario: Scenario
    rows: list  # build_space(...).rows, unpruned
    strict: tuple[float, Any] | None  # (optimum, plan) or None when infeasible
    loose: tuple[float, Any] | None
    k_max: int  # largest replica count among the two optimal plans (1 for training)


@functools.lru_cache(maxsize=None)
def make_case(i: int) -> Case:
    """Scenario i: drawn with its own seeded generator, limits drawn around its own table's figures."""
    rng = random.Random(SEED * 1000 + i)
    training = rng.random() < 0.5
    data = _training_base(rng, i) if training else _inference_base(rng, i)
    base = parse_scenario(data, f"case {i}")
    model = resolve_model(base.workload.model)
    assumptions = base.resolved_assumptions()
    # Budget, deadline and objective do not enter build_space (only GPUs, search, pricing and, for
    # serving, the load and SLOs do), so the table of the base scenario is that of the final one
    # unless SLOs are drawn (then rebuilt).
    rows = build_space(base, model, assumptions).rows
    if training:
        if rng.random() < 0.35:
            budget = _around(rng, [e.cost_usd for e in rows])
            if budget:
                data["constraints"]["budget_usd"] = round(budget, 2)
        if rng.random() < 0.35:
            deadline = _around(rng, [e.perf.time_to_train_s / 86400.0 for e in rows])
            if deadline:
                data["constraints"]["deadline_days"] = deadline
    else:
        w = base.workload
        if rng.random() < 0.3:
            costs = [e.usd_per_hour / e.layout.replicas * _need(e, w) for e in rows]
            budget = _around(rng, costs)
            if budget:
                data["constraints"]["budget_usd"] = round(budget, 4)
        slo = {}
        if rng.random() < 0.3 and rows:
            slo["ttft_s"] = rng.choice(rows).perf.ttft_s * rng.uniform(0.7, 1.5)
        if rng.random() < 0.3 and rows:
            slo["tpot_s"] = rng.choice(rows).perf.tpot_s * rng.uniform(0.7, 1.5)
        if slo:
            data["workload"]["slo"] = slo
            # SLOs set each layout's replica count and load: the final scenario's table
            rows = build_space(parse_scenario(data, f"case {i}"), model, assumptions).rows
        objectives = ["min_cost", "min_gpus"]
        if data["search"]["max_gpus"] or data["constraints"].get("budget_usd"):
            objectives.append("max_throughput")
        data["objective"] = rng.choice(objectives)
    scenario = parse_scenario(data, f"case {i}")
    strict = oracle(scenario, rows, margin="strict")
    loose = oracle(scenario, rows, margin="loose")
    k_max = max((getattr(p[1], "k", 1) for p in (strict, loose) if p is not None), default=1)
    return Case(scenario=scenario, rows=rows, strict=strict, loose=loose, k_max=k_max)


# ---- the oracle ---------------------------------------------------------------------------


def _need(e: InferenceEvaluation, w: InferenceWorkload) -> int:
    """Replicas the load needs: the evaluator's load-aware count (rate and SLOs at their percentile) and one slot per
    concurrent sequence."""
    need = max(1, e.perf.replicas_needed)
    if w.concurrent_sequences:
        need = max(need, math.ceil(w.concurrent_sequences / e.layout.batch))
    return need


@dataclass(frozen=True)
class ServingPlan:
    row: InferenceEvaluation
    k: int


def _within(value: float, limit: float, step: float, margin: str) -> bool:
    """value <= limit, tightened by two resolution steps (strict) or loosened by one (loose)."""
    return value <= (limit - 2 * step if margin == "strict" else limit + step)


def training_plans(scenario: Scenario, rows: list[TrainingEvaluation], margin: str):
    c = scenario.constraints
    for e in rows:
        n = e.layout.num_gpus
        if scenario.search.max_gpus and n > scenario.search.max_gpus:
            continue
        if e.layout.gpu in c.inventory and n > c.inventory[e.layout.gpu]:
            continue
        if c.budget_usd and not _within(e.cost_usd, c.budget_usd, RES_USD, margin):
            continue
        if c.deadline_days and not _within(e.perf.time_to_train_s, c.deadline_days * 86400.0, RES_TIME_S, margin):
            continue
        yield e


def serving_plans(scenario: Scenario, rows: list[InferenceEvaluation], margin: str):
    w = scenario.workload
    c = scenario.constraints
    strict = margin == "strict"
    for e in rows:
        if w.slo.ttft_s and not _within(e.perf.ttft_s, w.slo.ttft_s, RES_LATENCY_S, margin):
            continue
        if w.slo.tpot_s and not _within(e.perf.tpot_s, w.slo.tpot_s, RES_LATENCY_S, margin):
            continue
        gpr, usd_h, batch = e.layout.gpus_per_replica, e.usd_per_hour / e.layout.replicas, e.layout.batch
        uppers = []
        if scenario.search.max_gpus:
            uppers.append(scenario.search.max_gpus // gpr)
        if e.layout.gpu in c.inventory:
            uppers.append(c.inventory[e.layout.gpu] // gpr)
        if c.budget_usd:
            uppers.append(int(c.budget_usd / usd_h) + 1)
        # with no upper limit more replicas only cost more: enumerate a little past the need
        top = min(uppers) if uppers else _need(e, w) + 2
        for k in range(1, top + 1):
            if k < e.perf.replicas_needed:  # the load-aware replica rule: each replica carries rate / replicas_needed at most
                continue
            if w.concurrent_sequences and k * batch < w.concurrent_sequences:
                continue
            if scenario.search.max_gpus and k * gpr > scenario.search.max_gpus:
                continue
            if e.layout.gpu in c.inventory and k * gpr > c.inventory[e.layout.gpu]:
                continue
            if c.budget_usd:
                cost = k * (usd_h + 2 * RES_USD_H) if strict else k * usd_h
                if not _within(cost, c.budget_usd, RES_USD_H, margin):
                    continue
            yield ServingPlan(e, k)


def value_of(plan, objective: str) -> float:
    """Objective value in the unit of plan.objective_value (days for min_time)."""
    if isinstance(plan, ServingPlan):
        return {"min_cost": plan.row.usd_per_hour / plan.row.layout.replicas * plan.k, "min_gpus": float(plan.row.layout.gpus_per_replica * plan.k),
                "max_throughput": plan.row.perf.output_tokens_per_s * plan.k}[objective]
    return {"min_cost": plan.cost_usd, "min_gpus": float(plan.layout.num_gpus), "max_throughput": plan.perf.tokens_per_s,
            "min_time": plan.perf.time_to_train_s / 86400.0}[objective]


def oracle(scenario: Scenario, rows: list, margin: str) -> tuple[float, Any] | None:
    """(optimum, one optimal plan) over every feasible plan, or None when there is none."""
    objective = scenario.objective.value
    plans = serving_plans(scenario, rows, margin) if isinstance(scenario.workload, InferenceWorkload) else training_plans(scenario, rows, margin)
    best = None
    sign = -1.0 if objective == "max_throughput" else 1.0
    for plan in plans:
        v = value_of(plan, objective)
        if best is None or sign * v < sign * best[0]:
            best = (v, plan)
    return best


def tolerance(case: Case, objective: str, reference: float) -> float:
    """Resolution of the scaled objective (per replica for serving) plus a relative 1e-6."""
    serving = isinstance(case.scenario.workload, InferenceWorkload)
    step = {"min_cost": RES_USD_H if serving else RES_USD, "min_gpus": 0.0, "max_throughput": RES_TPS,
            "min_time": RES_TIME_S / 86400.0}[objective]
    return step * case.k_max + 1e-6 * abs(reference)


# ---- the tests ----------------------------------------------------------------------------


def _layout_key(plan) -> str:
    return plan.evaluation.layout.model_dump_json()


@pytest.mark.parametrize("i", range(N_CASES))
def test_solver_matches_brute_force(i):
    case = make_case(i)
    objective = case.scenario.objective.value
    try:
        plan = solve(case.scenario, alternatives=False)
    except InfeasibleError as err:
        assert case.strict is None, f"planner says infeasible, oracle found {case.strict[0]!r} with {case.strict[1]!r}: {err}"
        return
    assert case.loose is not None, f"planner found a plan ({plan.objective_value}) that the oracle rejects"
    assert plan.status == "OPTIMAL"
    assert plan.verified
    assert plan.gap == 0.0
    assert plan.objective.value == objective
    value = plan.objective_value
    if case.strict is None:  # borderline: only the loose bound applies
        bounds = (case.loose[0], case.loose[0])
    else:
        bounds = (case.strict[0], case.loose[0])
    tol = tolerance(case, objective, bounds[0])
    if objective == "max_throughput":
        # loose optimum >= planner >= strict optimum (within resolution)
        assert value <= bounds[1] + tol, (value, bounds)
        if case.strict is not None:
            assert value >= bounds[0] - tol, (value, bounds)
    else:
        assert value >= bounds[1] - tol, (value, bounds)
        if case.strict is not None:
            assert value <= bounds[0] + tol, (value, bounds)
    # the plan itself satisfies the limits (loose check, i.e. within one resolution step)
    e = plan.evaluation
    if isinstance(e, InferenceEvaluation):
        replicas = e.layout.replicas
        one = e.model_copy(update={"layout": e.layout.model_copy(update={"replicas": 1}),
                                   "usd_per_hour": e.usd_per_hour / replicas})
        assert any(p.k == replicas for p in serving_plans(case.scenario, [one], "loose"))
    else:
        assert list(training_plans(case.scenario, [e], "loose")) == [e]


@pytest.mark.parametrize("i", range(0, N_CASES, 5))
def test_solve_is_deterministic(i):
    """Solving the same scenario twice gives the identical layout (fixed seed, workers, tie-breaking)."""
    case = make_case(i)
    try:
        first = solve(case.scenario, alternatives=False)
    except InfeasibleError as err:
        with pytest.raises(InfeasibleError) as again:
            solve(case.scenario, alternatives=False)
        assert str(again.value) == str(err)
        return
    second = solve(case.scenario, alternatives=False)
    assert _layout_key(first) == _layout_key(second)
    assert first.objective_value == second.objective_value


def test_oracle_cases_cover_the_space():
    """The random cases exercise both kinds, every objective, feasible and infeasible outcomes, every limit;
    borderline cases (strict and loose oracles disagree on feasibility) stay rare."""
    started = time.perf_counter()
    cases = [make_case(i) for i in range(N_CASES)]
    kinds = {("training" if not isinstance(c.scenario.workload, InferenceWorkload) else "inference", c.scenario.objective.value) for c in cases}
    assert {o for k, o in kinds if k == "training"} == {"min_cost", "min_gpus", "max_throughput", "min_time"}
    assert {o for k, o in kinds if k == "inference"} == {"min_cost", "min_gpus", "max_throughput"}
    feasible = sum(c.strict is not None for c in cases)
    infeasible = sum(c.loose is None for c in cases)
    borderline = N_CASES - feasible - infeasible
    assert feasible >= N_CASES // 3
    assert infeasible >= N_CASES // 10
    assert borderline <= N_CASES // 20
    assert sum(bool(c.scenario.constraints.budget_usd) for c in cases) >= 20
    assert sum(bool(c.scenario.constraints.deadline_days) for c in cases) >= 10
    assert sum(bool(c.scenario.search.max_gpus) for c in cases) >= 50
    assert sum(bool(c.scenario.constraints.inventory) for c in cases) >= 10
    assert sum(isinstance(c.scenario.workload, InferenceWorkload) and bool(c.scenario.workload.slo.ttft_s or c.scenario.workload.slo.tpot_s)
               for c in cases) >= 20
    # infeasible for a user limit, not only for memory
    assert sum(c.loose is None and bool(c.rows) for c in cases) >= 10
    assert time.perf_counter() - started < 120


# ---- named infeasible scenarios -----------------------------------------------------------


def test_deepseek_v3_bf16_on_eight_h100_names_max_gpus():
    """671B parameters at 2 bytes are ~1.34 TB, more than 8 x 80 GB: the max_gpus limit is what conflicts."""
    scenario = parse_scenario({
        "name": "dsv3-on-8",
        "workload": {"kind": "inference", "model": "deepseek-v3", "prompt_tokens": 1024, "output_tokens": 256, "concurrent_sequences": 8},
        "search": {"gpus": ["H100-SXM"], "weight_precisions": ["bf16"], "kv_precisions": ["bf16"], "max_gpus": 8},
    })
    rows = build_space(scenario, resolve_model("deepseek-v3"), scenario.resolved_assumptions()).rows
    assert rows, "some layout with more than 8 GPUs fits, so this is a limit conflict, not a memory one"
    assert oracle(scenario, rows, "loose") is None
    with pytest.raises(InfeasibleError) as err:
        solve(scenario, alternatives=False)
    assert "max_gpus" in str(err.value)


def test_budget_far_too_small_names_budget_and_the_cheapest_cost():
    data = {
        "name": "tiny-budget",
        "workload": {"kind": "training", "model": "llama-2-7b", "tokens": 1e9, "seq_len": 2048, "global_batch_seqs": 32},
        "search": {"gpus": ["H100-SXM", "A100-80GB"], "tp": [1, 2], "pp": [1], "micro_batches": [1, 2], "max_gpus": 16},
        "constraints": {"budget_usd": 1.0},
    }
    scenario = parse_scenario(data)
    rows = build_space(scenario, resolve_model("llama-2-7b"), scenario.resolved_assumptions()).rows
    assert oracle(scenario, rows, "loose") is None
    unlimited = parse_scenario({**data, "constraints": {}})
    cheapest, _ = oracle(unlimited, rows, "strict")
    assert cheapest > 10.0
    with pytest.raises(InfeasibleError) as err:
        solve(scenario, alternatives=False)
    message = str(err.value)
    assert "budget" in message
    assert f"{cheapest:,.4g}" in message, (cheapest, message)


def test_infeasible_message_names_only_limits_that_conflict():
    """Budget alone is infeasible (the oracle: dropping the budget makes it feasible, dropping anything else does not);
    a generous deadline and max_gpus must not be reported as conflicting limits."""
    data = {
        "name": "only-budget-conflicts",
        "workload": {"kind": "training", "model": "llama-2-7b", "tokens": 1e9, "seq_len": 2048, "global_batch_seqs": 32},
        "search": {"gpus": ["H100-SXM", "A100-80GB"], "tp": [1, 2], "pp": [1], "micro_batches": [1, 2], "max_gpus": 64},
        "constraints": {"budget_usd": 1.0, "deadline_days": 100.0},
    }
    scenario = parse_scenario(data)
    rows = build_space(scenario, resolve_model("llama-2-7b"), scenario.resolved_assumptions()).rows
    without_budget = parse_scenario({**data, "constraints": {"deadline_days": 100.0}})
    assert oracle(scenario, rows, "loose") is None
    assert oracle(without_budget, rows, "strict") is not None
    with pytest.raises(InfeasibleError) as err:
        solve(scenario, alternatives=False)
    message = str(err.value)
    assert "budget" in message
    assert "deadline" not in message, message
    assert "max_gpus" not in message, message


def test_serving_max_throughput_with_only_a_budget_uses_the_whole_budget():
    data = {
        "name": "budget-bound-fleet",
        "workload": {"kind": "inference", "model": "llama-2-7b", "prompt_tokens": 128, "output_tokens": 64, "concurrent_sequences": 1},
        "search": {"gpus": ["L4"], "weight_precisions": ["int4"], "kv_precisions": ["bf16"], "tp": [1], "pp": [1],
                   "batch_per_replica": [16]},
        "constraints": {"budget_usd": 20_000.0},
        "objective": "max_throughput",
    }
    scenario = parse_scenario(data)
    rows = build_space(scenario, resolve_model("llama-2-7b"), scenario.resolved_assumptions()).rows
    best, plan = oracle(scenario, rows, "strict")
    assert plan.k > 16_384
    result = solve(scenario, alternatives=False)
    assert result.status == "OPTIMAL"
    assert result.objective_value >= best - RES_TPS * plan.k
