"""Solve a scenario: build the table, encode it, solve with CP-SAT, verify, explain.

Solves are reproducible: a time limit, a fixed worker count and a fixed seed, and ties broken
by a second lexicographic phase (fewer GPUs, then the row order; on small tables both phases
are first tried as one weighted objective, whose proved optimum is the same plan). OPTIMAL (proved) and
FEASIBLE (time limit hit, with the gap) are reported as different statuses. Every plan is
re-evaluated by `planner.evaluate` and checked against the limits before it is returned.

Before CP-SAT runs, the limits' integer coefficients (the model's own) screen the rows over
numpy: a table whose every row some limit rules out is infeasible without a solve (what CP-SAT
would prove, `tests/test_screening.py`), and CP-SAT chooses among the rows left.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from planner.calibrate import SpeedEvidence
from planner.catalog import resolve_gpu, resolve_model
from planner.cost import usd_per_million_tokens
from planner.enums import Objective
from planner.errors import InfeasibleError, InputError
from planner.evaluate import InferenceEvaluation, TrainingEvaluation, evaluate_inference, evaluate_training, layout_summary, training_speed_evidence
from planner.memory import state_bytes_total, weight_bytes_per_param
from planner.modelspec import ModelSpec
from planner.scenario import Assumptions, InferenceWorkload, Scenario, TrainingWorkload, check_catalog_names, fp8_conflict
from planner.space import Space, build_space, gpu_cap, node_size, prune_dominated
from planner.units import BYTES_PER_GB, BYTES_PER_GIB

if TYPE_CHECKING:  # OR-Tools (and the pandas it imports) load only when a table is solved
    from ortools.sat.python import cp_model

    from planner.encode import Coefficients, Encoding, LinearLimit

SOLVER_WORKERS = 2
SMALL_TABLE_ROWS = 5_000
"""Tables up to this many rows are solved with one CP-SAT worker and no presolve (both cost more than they save on a
model of a few hundred literals; the lexicographic tie-break makes the plan the same)."""
SOLVER_SEED = 20261129
DEFAULT_TIME_LIMIT_S = 20.0

Evaluation = TrainingEvaluation | InferenceEvaluation


class Alternative(BaseModel):
    """The best plan on one GPU type, or why that GPU type has none."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    gpu: str = Field(description="GPU id.")
    feasible: bool = Field(description="A plan exists on this GPU type within the limits.")
    objective_value: float | None = Field(default=None, description="The scenario's objective for this plan (what --top ranks by).")
    summary: str = Field(description="Layout, GPUs and the objective's figures, or the reason there is none.")
    num_gpus: int | None = Field(default=None, description="GPUs of the best plan.")
    cost: float | None = Field(default=None, description="Training: $ for the run; serving: $/hour.")
    throughput_tokens_per_s: float | None = Field(default=None, description="Tokens/s of the best plan.")
    time_to_train_days: float | None = Field(default=None, description="Training only.")


class ParetoPoint(BaseModel):
    """One point of the cost vs speed frontier: training trades cost against time to train, serving against TPOT."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    cost: float = Field(description="Training: $ for the run; serving: $/hour.")
    metric: str = Field(description="What the frontier trades against cost: 'time to train (days)' or 'TPOT pNN under load (ms)'.")
    metric_value: float = Field(description="This point's value of `metric`, in its unit.")
    throughput_tokens_per_s: float = Field(description="Tokens/s.")
    time_to_train_days: float | None = Field(default=None, description="Training only: the traded speed metric.")
    num_gpus: int = Field(description="GPUs.")
    summary: str = Field(description="The plan in one line.")

    @property
    def speed(self) -> float:
        """The traded speed metric's value (lower is better)."""
        return self.metric_value


class Plan(BaseModel):
    """The chosen plan, verified, with its evidence."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    scenario: str = Field(description="Scenario name.")
    kind: Literal["training", "inference"] = Field(description="Workload type.")
    model: str = Field(description="Model name.")
    status: Literal["OPTIMAL", "FEASIBLE"] = Field(description="OPTIMAL: proved; FEASIBLE: time limit hit (see gap).")
    objective: Objective = Field(description="What was optimised.")
    objective_value: float = Field(description="Value of the objective for the plan, in objective_unit.")
    objective_unit: str = Field(description="Unit of the objective.")
    gap: float = Field(description="Relative gap to the best bound (0 when OPTIMAL).")
    solve_time_s: float = Field(description="CP-SAT wall time, all phases.")
    build_time_s: float = Field(description="Time to enumerate and evaluate the table.")
    candidates: int = Field(description="Structurally legal configurations evaluated.")
    fitting: int = Field(description="Of those, configurations that fit in memory (the rows encoded).")
    evaluation: TrainingEvaluation | InferenceEvaluation = Field(description="Re-evaluated plan: layout, memory, speed, cost.")
    verified: bool = Field(description="Re-evaluation fits, meets every limit and matches the solver's objective.")
    alternatives: tuple[Alternative, ...] = Field(default=(), description="Best plan per GPU type, or why none.")
    pareto: tuple[ParetoPoint, ...] = Field(default=(), description="Cost vs throughput frontier, on request.")
    speed_evidence: SpeedEvidence | None = Field(default=None, description="Training: the calibrated speed model's held-out error on "
                                                                            "published runs like this plan's; None for serving.")

    @property
    def num_gpus(self) -> int:
        """GPUs of the plan."""
        return self.evaluation.layout.num_gpus


# ---- summaries -----------------------------------------------------------------------------


def plan_cost(e: Evaluation) -> float:
    """Training: $ for the run; serving: $ per hour of the fleet."""
    return (e.cost_usd if isinstance(e, TrainingEvaluation) else e.usd_per_hour) or 0.0


def plan_throughput(e: Evaluation) -> float:
    """Training: trained tokens/s; serving: output tokens/s of all replicas."""
    return e.perf.tokens_per_s if isinstance(e, TrainingEvaluation) else e.fleet_output_tokens_per_s


def objective_of(e: Evaluation, objective: Objective) -> tuple[float, str]:
    """The objective's value for an evaluated plan, in its unit (what verification and the oracle compare)."""
    if objective is Objective.MIN_GPUS:
        return float(e.layout.num_gpus), "GPUs"
    if objective is Objective.MAX_THROUGHPUT:
        return plan_throughput(e), "tokens/s"
    if objective is Objective.MIN_TIME:
        assert isinstance(e, TrainingEvaluation)
        return e.perf.time_to_train_s / 86400.0, "days"
    if objective is Objective.MIN_USD_PER_MILLION_TOKENS:
        assert isinstance(e, InferenceEvaluation)
        return e.usd_per_million_output_tokens or 0.0, "USD per million output tokens"
    return plan_cost(e), ("USD" if isinstance(e, TrainingEvaluation) else "USD/hour")


# ---- encoding the scenario -----------------------------------------------------------------


def min_replicas(workload: InferenceWorkload, e: InferenceEvaluation) -> int:
    """Fewest replicas of one serving layout that carry the load (`encode.fewest_replicas`)."""
    from planner.encode import fewest_replicas

    return int(fewest_replicas(np.array([e.perf.replicas_needed]), np.array([e.layout.batch]), workload.concurrent_sequences)[0])


def _fewest_replicas(scenario: Scenario, coef: Coefficients) -> np.ndarray:
    """Per row, the replicas it is chosen with at least (`encode.fewest_replicas` over the table's coefficient columns;
    one for training)."""
    from planner.encode import fewest_replicas

    workload = scenario.workload
    if isinstance(workload, TrainingWorkload):
        return np.ones(len(coef), dtype=np.int64)
    assert coef.replicas_needed is not None and coef.batch is not None
    return fewest_replicas(coef.replicas_needed, coef.batch, workload.concurrent_sequences)


def _replica_bounds(limits: list[LinearLimit], fewest: np.ndarray) -> list[int]:
    """Most replicas worth considering per row: enough for the load (`fewest`), and as many as any one of the scenario's
    per-replica limits (max_gpus, inventory, $/h budget) allows, read from the limit's own integer coefficients so the
    bound and the model's constraint agree exactly."""
    bound = fewest.astype(np.int64)
    for limit in limits:
        if limit.per_replica:
            per_replica = limit.coefficients.astype(np.int64)
            bound = np.maximum(bound, np.where(per_replica > 0, limit.bound // np.maximum(per_replica, 1), 0))
    return bound.tolist()


def user_limits(scenario: Scenario, coef: Coefficients, skip_limits: frozenset[str] = frozenset()) -> list[LinearLimit]:
    """The scenario's limits over a table's coefficients, in the order the model holds them (those in `skip_limits` left out)."""
    from planner import encode

    workload = scenario.workload
    limits = []
    if scenario.search.max_gpus and "max_gpus" not in skip_limits:
        limits.append(encode.gpu_limit(coef, scenario.search.max_gpus))
    limits += encode.inventory_limits(coef, {g: c for g, c in scenario.constraints.inventory.items() if f"inventory:{g}" not in skip_limits})
    if scenario.constraints.budget_usd and "budget" not in skip_limits:
        limits.append(encode.budget_limit(coef, scenario.constraints.budget_usd))
    if isinstance(workload, TrainingWorkload) and scenario.constraints.deadline_days and "deadline" not in skip_limits:
        limits.append(encode.deadline_limit(coef, scenario.constraints.deadline_days))
    if isinstance(workload, InferenceWorkload):
        if workload.slo.ttft_s and "ttft" not in skip_limits:
            limits.append(encode.slo_limit(coef, "ttft", workload.slo.ttft_s, workload.slo.percentile))
        if workload.slo.tpot_s and "tpot" not in skip_limits:
            limits.append(encode.slo_limit(coef, "tpot", workload.slo.tpot_s, workload.slo.percentile))
    return limits


def build_encoding(scenario: Scenario, rows: list[Evaluation], skip_limits: frozenset[str] = frozenset(),
                   coef: Coefficients | None = None, fewest: np.ndarray | None = None) -> Encoding:
    """The CP-SAT model of a table with the scenario's load and limits (limits in `skip_limits` left out); `coef` and
    `fewest` are the table's `encode.coefficients` and `_fewest_replicas` when the caller has them."""
    from planner import encode

    coef = coef if coef is not None else encode.coefficients(rows)  # type: ignore[arg-type]
    limits = user_limits(scenario, coef)  # all of them: the replica domain does not shrink when a limit is left out
    workload = scenario.workload
    if isinstance(workload, TrainingWorkload):
        enc = encode.encode_training(coef)
    else:
        fewest = fewest if fewest is not None else _fewest_replicas(scenario, coef)
        enc = encode.encode_inference(coef, _replica_bounds(limits, fewest), fewest)
    for limit in limits:
        if limit.key not in skip_limits:
            encode.add_limit(enc, limit)
    return enc


OBJECTIVE_COLUMNS = {Objective.MIN_GPUS: "gpus", Objective.MAX_THROUGHPUT: "throughput", Objective.MIN_TIME: "time",
                     Objective.MIN_USD_PER_MILLION_TOKENS: "usd_per_mtok", Objective.MIN_COST: "cost"}
"""The expression of `Encoding` (and the column of `Coefficients`) each objective optimises."""


def _objective_expr(enc: Encoding, objective: Objective) -> tuple[cp_model.LinearExpr, bool]:
    """(expression, maximise?) of the objective."""
    if objective is Objective.MIN_TIME and enc.time is None:
        raise InputError("objective: min_time applies to training; for serving use min_cost, max_throughput or min_gpus.")
    if objective is Objective.MIN_USD_PER_MILLION_TOKENS and enc.usd_per_mtok is None:
        raise InputError("objective: min_usd_per_million_tokens applies to serving; for training use min_cost.")
    return getattr(enc, OBJECTIVE_COLUMNS[objective]), objective is Objective.MAX_THROUGHPUT


def solver_workers(rows: int) -> int:
    """CP-SAT workers for a table: one on small tables (SMALL_TABLE_ROWS), SOLVER_WORKERS otherwise."""
    return 1 if rows <= SMALL_TABLE_ROWS else SOLVER_WORKERS


def reproducible_solver(time_limit_s: float, workers: int = SOLVER_WORKERS) -> cp_model.CpSolver:
    """A CP-SAT solver with the time limit, worker count and seed every planner solve uses (one worker: no presolve)."""
    from ortools.sat.python import cp_model

    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = workers
    solver.parameters.cp_model_presolve = workers > 1
    solver.parameters.random_seed = SOLVER_SEED
    return solver


@dataclass
class Lexicographic:
    """Outcome of a two-phase solve: `solver` holds the final assignment, `first` the phase-1 run (for cores)."""

    status: int
    solver: cp_model.CpSolver
    first: cp_model.CpSolver
    proved: bool
    gap: float
    wall_time_s: float

    @property
    def found(self) -> bool:
        """A solution exists (proved optimal or not)."""
        from ortools.sat.python import cp_model

        return self.status in (cp_model.OPTIMAL, cp_model.FEASIBLE)


EXACT_OBJECTIVE = 2**53
"""Largest objective magnitude of a one-phase lexicographic solve: integers up to here are exact as doubles (CP-SAT
reports objective values and bounds as doubles)."""


def _expression_range(expr: cp_model.LinearExpr | int) -> tuple[float, float] | None:
    """(least, greatest) value of a linear expression over its variables' domains (a bound: constraints are ignored);
    None when OR-Tools cannot flatten it."""
    from ortools.sat.python import cp_model_helper

    if isinstance(expr, int):
        return float(expr), float(expr)
    try:
        flat = cp_model_helper.FlatIntExpr(expr)
    except TypeError:
        return None
    low = high = float(flat.offset)
    for var, coeff in zip(flat.vars, flat.coeffs):
        lb, ub = var.domain.min(), var.domain.max()
        low += min(coeff * lb, coeff * ub)
        high += max(coeff * lb, coeff * ub)
    return low, high


def one_phase_objective(primary: cp_model.LinearExpr, maximise: bool, tiebreak: cp_model.LinearExpr) -> cp_model.LinearExpr | None:
    """`primary` weighted above `tiebreak` in one objective to minimise, or None when the weighted values could leave the
    exactly representable integers (`EXACT_OBJECTIVE`).

    With the weight larger than the tie-break's whole range, a smaller weighted value means a better primary value, or
    the same primary value and a smaller tie-break: its proved optimum is the two-phase lexicographic optimum.
    """
    ranges = _expression_range(primary), _expression_range(tiebreak)
    if ranges[0] is None or ranges[1] is None:
        return None
    (p_low, p_high), (t_low, t_high) = ranges
    weight = int(t_high - t_low) + 1
    if weight * max(abs(p_low), abs(p_high)) + max(abs(t_low), abs(t_high)) >= EXACT_OBJECTIVE:
        return None
    return (-weight if maximise else weight) * primary + tiebreak


def solve_lexicographic(model: cp_model.CpModel, primary: cp_model.LinearExpr, maximise: bool, tiebreak: cp_model.LinearExpr,
                        hints: list[cp_model.IntVar], time_limit_s: float, workers: int = SOLVER_WORKERS,
                        one_phase: bool = False) -> Lexicographic:
    """Optimise `primary`, then minimise `tiebreak` among solutions with the same primary value (deterministic ties).

    When phase 1 only hits the time limit, phase 2 keeps the primary at least as good, and the
    gap of phase 1 is reported. With `one_phase` (for a tie-break that determines the solution the
    caller reads, so the lexicographic optimum is unique), both are first solved as one weighted
    objective (`one_phase_objective`); only a proved optimum of it is used, else (infeasible, as
    phase 1 also names the conflicting assumptions; time limit; too large) the two phases run.
    """
    from ortools.sat.python import cp_model

    spent = 0.0
    weighted = one_phase_objective(primary, maximise, tiebreak) if one_phase else None
    if weighted is not None:
        model.minimize(weighted)
        single = reproducible_solver(time_limit_s, workers)
        if single.solve(model) == cp_model.OPTIMAL:
            return Lexicographic(cp_model.OPTIMAL, single, single, True, 0.0, single.wall_time)
        spent = single.wall_time
        model.clear_objective()
    if maximise:
        model.maximize(primary)
    else:
        model.minimize(primary)
    first = reproducible_solver(time_limit_s, workers)
    status = first.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return Lexicographic(status, first, first, False, 0.0, spent + first.wall_time)
    proved = status == cp_model.OPTIMAL
    best = round(first.objective_value)
    gap = 0.0 if proved else abs(best - first.best_objective_bound) / max(abs(best), 1e-9)
    model.clear_objective()
    if proved:
        model.add(primary == best)
    elif maximise:
        model.add(primary >= best)
    else:
        model.add(primary <= best)
    model.minimize(tiebreak)
    for var in hints:
        model.add_hint(var, first.boolean_value(var))
    second = reproducible_solver(time_limit_s, workers)
    status2 = second.solve(model)
    wall = spent + first.wall_time + second.wall_time
    if status2 in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return Lexicographic(status, second, first, proved and status2 == cp_model.OPTIMAL, gap, wall)
    return Lexicographic(status, first, first, proved, gap, wall)


def solve_table(scenario: Scenario, rows: list[Evaluation], time_limit_s: float) -> tuple[Evaluation | None, str, float, float, list[str]]:
    """Solve the encoded table: (chosen plan with its replicas, status, gap, solver seconds, conflicting limit keys).

    Before anything is solved, each limit's integer coefficients (the model's own, `user_limits`) tell over numpy which
    rows it rules out (`LinearLimit.rules_out` at the fewest replicas that carry the load). When every row is ruled out
    the table is infeasible, exactly as CP-SAT would prove, and the conflicting limits are found over the same columns
    (`conflicting_limits`). Otherwise CP-SAT chooses among the rows no limit rules out (a ruled-out row cannot be
    chosen; the row order, hence the tie-break, is kept).
    """
    if not rows:
        return None, "INFEASIBLE", 0.0, 0.0, []
    coef, fewest, limits, ruled_out = _screen(scenario, rows)
    open_rows = np.flatnonzero(~ruled_out.any(axis=0))
    if not len(open_rows):
        core = conflicting_limits(scenario, rows, limits, ruled_out, coef, fewest, time_limit_s)
        return None, "INFEASIBLE", 0.0, 0.0, core
    if len(open_rows) < len(rows):
        rows, coef, fewest = [rows[r] for r in open_rows.tolist()], coef.take(open_rows), fewest[open_rows]
    enc = build_encoding(scenario, rows, coef=coef, fewest=fewest)
    result = _solve_encoding(scenario, enc, len(rows), time_limit_s)
    if not result.found:  # a row no limit rules out, at its fewest replicas, is a solution: only the time limit stops CP-SAT short
        return None, "UNKNOWN", 0.0, result.wall_time_s, []
    chosen_solver, proved, gap, elapsed = result.solver, result.proved, result.gap, result.wall_time_s
    chosen = next(r for r, x in enumerate(enc.x) if chosen_solver.boolean_value(x))
    plan = rows[chosen]
    if enc.k is not None:
        plan = with_replicas(plan, chosen_solver.value(enc.k[chosen]))  # type: ignore[arg-type]
    return plan, ("OPTIMAL" if proved else "FEASIBLE"), gap, elapsed, []


def _screen(scenario: Scenario, rows: list[Evaluation], skip_limits: frozenset[str] = frozenset()) -> tuple[Coefficients, np.ndarray, list[LinearLimit], np.ndarray]:
    """(coefficients, fewest replicas, limits, rules out) of a table: `ruled_out[i, r]` when limit i rules row r out."""
    from planner import encode

    coef = encode.coefficients(rows)  # type: ignore[arg-type]
    fewest = _fewest_replicas(scenario, coef)
    limits = user_limits(scenario, coef, skip_limits)
    ruled_out = np.array([limit.rules_out(fewest) for limit in limits], dtype=bool).reshape(len(limits), len(rows))
    return coef, fewest, limits, ruled_out


def _solve_encoding(scenario: Scenario, enc: Encoding, rows: int, time_limit_s: float) -> Lexicographic:
    """The scenario's objective over an encoded table, ties to fewer GPUs, then the earliest row."""
    from planner.encode import tiebreak, weighted

    expr, maximise = _objective_expr(enc, scenario.objective)
    # The tie-break fixes the chosen row and its GPUs (so its replicas): one weighted solve gives the same plan.
    return solve_lexicographic(enc.model, expr, maximise, tiebreak(enc.gpus, weighted(enc.x, list(range(rows))), rows), enc.x,
                               time_limit_s, solver_workers(rows),
                               one_phase=rows <= SMALL_TABLE_ROWS)


MOST_LIMITS_ENUMERATED = 10
"""Up to this many limits, every minimal conflicting set is enumerated over numpy (at most 2**10 subsets)."""


def _infeasible(ruled_out: np.ndarray, subset: list[int]) -> bool:
    """No row survives the limits of `subset` (rows of `ruled_out`)."""
    return bool(ruled_out[subset].any(axis=0).all()) if subset else False


def minimal_conflicts(ruled_out: np.ndarray, most: int = 2) -> list[tuple[int, ...]]:
    """Up to `most` minimal sets of limits (indices into `ruled_out`'s rows) that together rule out every row, smallest first."""
    import itertools

    patterns = np.unique(ruled_out, axis=1)  # rows ruled out by the same limits behave alike
    found: list[tuple[int, ...]] = []
    for size in range(1, len(ruled_out) + 1):
        for subset in itertools.combinations(range(len(ruled_out)), size):
            if any(set(f) <= set(subset) for f in found):
                continue
            if _infeasible(patterns, list(subset)):
                found.append(subset)
                if len(found) >= most:
                    return found
    return found


def conflicting_limits(scenario: Scenario, rows: list[Evaluation], limits: list[LinearLimit], ruled_out: np.ndarray,
                       coef: Coefficients, fewest: np.ndarray, time_limit_s: float) -> list[str]:
    """A minimal set of limits that together rule out every row of an infeasible table (keys, in the model's order).

    When exactly one minimal set exists (`minimal_conflicts`), it is the answer whatever set the
    search starts from. Otherwise CP-SAT names a sufficient set of assumptions
    (`sufficient_assumptions_for_infeasibility`; every limit if its time limit stops it first),
    shrunk to a minimal one by `minimal_core`.
    """
    if len(limits) <= MOST_LIMITS_ENUMERATED:
        found = minimal_conflicts(ruled_out)
        if len(found) == 1:
            return [limits[i].key for i in found[0]]
    from ortools.sat.python import cp_model

    enc = build_encoding(scenario, rows, coef=coef, fewest=fewest)
    result = _solve_encoding(scenario, enc, len(rows), time_limit_s)
    if result.status != cp_model.INFEASIBLE:  # the time limit stopped CP-SAT first: deletion starts from every limit
        return [limits[i].key for i in minimal_core(ruled_out, list(range(len(limits))))]
    core = set(result.first.sufficient_assumptions_for_infeasibility())
    return [limits[i].key for i in minimal_core(ruled_out, [i for i, lim in enumerate(enc.limits) if lim.literal.index in core])]


def minimal_core(ruled_out: np.ndarray, core: list[int]) -> list[int]:
    """Shrink a sufficient set of conflicting limits (indices into `ruled_out`'s rows) to a minimal one by deletion
    (Junker's QuickXplain idea, linear form).

    CP-SAT's `sufficient_assumptions_for_infeasibility` is not guaranteed minimal; a limit is
    dropped from the set when the others alone still rule out every row. The load itself (always
    enforced) is part of every conflict.
    """
    current = list(core)
    for index in list(current):
        trial = [i for i in current if i != index]
        if _infeasible(ruled_out, trial):
            current = trial
    return current


def with_replicas(e: InferenceEvaluation, replicas: int) -> InferenceEvaluation:
    """The serving evaluation with `replicas` replicas: fleet throughput and $/h scale with them."""
    fleet = e.perf.output_tokens_per_s * replicas
    usd_h = e.usd_per_replica_hour * replicas
    return e.model_copy(update={
        "layout": e.layout.model_copy(update={"replicas": replicas}), "fleet_output_tokens_per_s": fleet,
        "usd_per_hour": usd_h, "usd_per_million_output_tokens": usd_per_million_tokens(usd_h, fleet) if fleet else None,
    })


# ---- verification --------------------------------------------------------------------------


def verify(scenario: Scenario, model: ModelSpec, chosen: Evaluation, assumptions: Assumptions) -> Evaluation:
    """Re-evaluate the chosen layout from scratch and check it fits, meets every limit and matches the table."""
    gpu = resolve_gpu(chosen.layout.gpu)
    node = node_size(scenario, gpu)
    if isinstance(chosen, TrainingEvaluation):
        fresh: Evaluation = evaluate_training(model, scenario.workload, chosen.layout, gpu, assumptions, chosen.price, node)  # type: ignore[arg-type]
    else:
        fresh = evaluate_inference(model, scenario.workload, chosen.layout, gpu, assumptions, chosen.price, node)  # type: ignore[arg-type]
    problems = []
    if not fresh.memory.fits:
        problems.append("does not fit in memory")
    if scenario.search.max_gpus and fresh.layout.num_gpus > scenario.search.max_gpus:
        problems.append("exceeds max_gpus")
    inventory = scenario.constraints.inventory.get(fresh.layout.gpu)
    if inventory is not None and fresh.layout.num_gpus > inventory:
        problems.append("exceeds inventory")
    if scenario.constraints.budget_usd and plan_cost(fresh) > scenario.constraints.budget_usd * (1 + 1e-9):
        problems.append("exceeds budget")
    if isinstance(fresh, TrainingEvaluation) and scenario.constraints.deadline_days:
        if fresh.perf.time_to_train_s > scenario.constraints.deadline_days * 86400.0 * (1 + 1e-9):
            problems.append("misses deadline")
    if isinstance(fresh, InferenceEvaluation):
        w = scenario.workload
        assert isinstance(w, InferenceWorkload)
        if fresh.layout.replicas < max(1, fresh.perf.replicas_needed):
            problems.append(f"has fewer replicas than the load needs ({fresh.perf.replicas_needed})")
        if w.target_output_tokens_per_s and fresh.fleet_output_tokens_per_s < w.target_output_tokens_per_s * (1 - 1e-6):
            problems.append("misses the tokens/s target")
        if w.concurrent_sequences and fresh.layout.batch * fresh.layout.replicas < w.concurrent_sequences:
            problems.append("misses the concurrency target")
        if w.slo.ttft_s and fresh.perf.ttft_s > w.slo.ttft_s * (1 + 1e-9):
            problems.append("misses the TTFT SLO")
        if w.slo.tpot_s and fresh.perf.tpot_s > w.slo.tpot_s * (1 + 1e-9):
            problems.append("misses the TPOT SLO")
    a, _ = objective_of(fresh, scenario.objective)
    b, _ = objective_of(chosen, scenario.objective)
    if not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9):
        problems.append(f"objective {a} != table {b}")
    assert not problems, f"verification failed for {layout_summary(fresh)}: {', '.join(problems)}"
    return fresh


# ---- explanations --------------------------------------------------------------------------


def _limit_quantity(key: str, e: Evaluation) -> float:
    if key == "max_gpus" or key.startswith("inventory:"):
        return float(e.layout.num_gpus)
    if key == "budget":
        return plan_cost(e)
    if key == "deadline":
        assert isinstance(e, TrainingEvaluation)
        return e.perf.time_to_train_s / 86400.0
    if key == "ttft":
        assert isinstance(e, InferenceEvaluation)
        return e.perf.ttft_s
    assert isinstance(e, InferenceEvaluation)
    return e.perf.tpot_s


def _limit_value(scenario: Scenario, key: str) -> float:
    if key == "max_gpus":
        return float(scenario.search.max_gpus or 0)
    if key.startswith("inventory:"):
        return float(scenario.constraints.inventory[key.split(":", 1)[1]])
    if key == "budget":
        return float(scenario.constraints.budget_usd or 0)
    if key == "deadline":
        return float(scenario.constraints.deadline_days or 0)
    w = scenario.workload
    assert isinstance(w, InferenceWorkload)
    return float((w.slo.ttft_s if key == "ttft" else w.slo.tpot_s) or 0)


def best_at_fewest_replicas(scenario: Scenario, rows: list[Evaluation], skip_limits: frozenset[str] = frozenset()) -> Evaluation | None:
    """The plan `solve_table` proves optimal for min_cost, min_gpus or min_time, found over the coefficient columns.

    These objectives (and the tie-break, GPUs) never decrease with a row's replicas, and no limit
    gets easier with more of them, so each row is best at its fewest replicas; the optimum is the
    least (objective, GPUs, row) among the rows no limit rules out, in the model's integers.
    None when every row is ruled out.
    """
    from planner.encode import tiebreak

    assert scenario.objective in (Objective.MIN_COST, Objective.MIN_GPUS, Objective.MIN_TIME)
    if not rows:
        return None
    coef, fewest, _, ruled_out = _screen(scenario, rows, skip_limits)
    candidates = np.flatnonzero(~ruled_out.any(axis=0))
    if not len(candidates):
        return None
    primary = getattr(coef, OBJECTIVE_COLUMNS[scenario.objective])[candidates] * fewest[candidates]
    best = int(candidates[np.lexsort((tiebreak(coef.gpus[candidates] * fewest[candidates], candidates, len(coef)), primary))[0]])
    return with_replicas(rows[best], int(fewest[best])) if isinstance(rows[best], InferenceEvaluation) else rows[best]  # type: ignore[arg-type]


def _best_for_limit(scenario: Scenario, rows: list[Evaluation], key: str) -> Evaluation | None:
    """The plan that does best on one limit's quantity while meeting every other limit (the optimum with that limit
    dropped, `best_at_fewest_replicas`)."""
    goal = {"budget": Objective.MIN_COST, "deadline": Objective.MIN_TIME}.get(key, Objective.MIN_GPUS)
    if key in ("ttft", "tpot"):
        candidates = [e for e in rows]
        return min(candidates, key=lambda e: _limit_quantity(key, e)) if candidates else None
    relaxed = scenario.model_copy(update={"objective": goal})
    if key.startswith("inventory:"):
        gpu = key.split(":", 1)[1]
        sub = [e for e in rows if e.layout.gpu == gpu]
        if not sub:
            return None
        plan = best_at_fewest_replicas(relaxed, sub, skip_limits=frozenset({key}))
        return plan if plan is not None else min(sub, key=lambda e: e.layout.num_gpus)
    plan = best_at_fewest_replicas(relaxed, rows, skip_limits=frozenset({key}))
    return plan if plan is not None else min(rows, key=lambda e: _limit_quantity(key, e))


def explain_infeasible(scenario: Scenario, model: ModelSpec, space: Space, rows: list[Evaluation], core: list[str]) -> str:
    """Which user limits conflict, and by how much (each in its limit's unit, `LinearLimit.unit`)."""
    from planner import encode

    units = {limit.key: limit.unit for limit in user_limits(scenario, encode.coefficients(rows))}  # type: ignore[arg-type]
    lines = [f"{scenario.name}: no plan meets the scenario's limits. Conflicting limits (a minimal set: together they rule out every plan, without any one of them the others do not):"]
    for key in core:
        best = _best_for_limit(scenario, rows, key)
        limit = _limit_value(scenario, key)
        unit = units[key]
        if best is None:
            lines.append(f"  - {key} = {limit:g} {unit}: no plan on this GPU type fits in memory.")
            continue
        need = _limit_quantity(key, best)
        if key in ("ttft", "tpot"):
            w = scenario.workload
            assert isinstance(w, InferenceWorkload)
            lines.append(f"  - {key.upper()} p{w.slo.percentile} <= {limit * 1000:,.4g} ms: best reachable {need * 1000:,.4g} ms "
                         f"(under the load, any replica count) on {layout_summary(best)}.")
            continue
        which = "the best plan meeting the other limits"
        lines.append(f"  - {key} = {limit:,.4g} {unit}, but {which} needs {need:,.4g} {unit}: {layout_summary(best)}.")
    if "max_gpus" in core or any(k.startswith("inventory:") for k in core):
        lines.append("  " + weights_floor(scenario, model, space))
    return "\n".join(lines)


def weights_floor(scenario: Scenario, model: ModelSpec, space: Space) -> str:
    """How much memory the weights alone need, against what the GPU limit offers."""
    workload = scenario.workload
    group = scenario.resolved_assumptions().int4_group_size
    if isinstance(workload, InferenceWorkload):
        precision = min(scenario.search.weight_precisions, key=lambda p: weight_bytes_per_param(p, group))
        bpp, label = weight_bytes_per_param(precision, group), precision.value
    else:
        policy = min(scenario.search.train_precisions, key=lambda p: state_bytes_total(p, workload.optimizer))
        bpp = state_bytes_total(policy, workload.optimizer)
        label = f"{policy.value} model states with {workload.optimizer.value} ({bpp:g} B/param)"
    need_gb = model.total_params * bpp / BYTES_PER_GB
    biggest = max(space.gpus, key=lambda g: g.memory_gib)
    limit = scenario.search.max_gpus or max(scenario.constraints.inventory.values() or [0])
    a = scenario.resolved_assumptions()
    card_gb = biggest.memory_gib * BYTES_PER_GIB / BYTES_PER_GB
    if isinstance(workload, InferenceWorkload):
        usable_gb = card_gb * a.gpu_memory_utilization - a.runtime_reserve_gib_inference * BYTES_PER_GIB / BYTES_PER_GB
        how = (f"gpu_memory_utilization {a.gpu_memory_utilization:g} of the card, less a "
               f"{a.runtime_reserve_gib_inference:g} GiB runtime reserve")
    else:
        usable_gb = card_gb * (1 - a.allocator_fragmentation_fraction) - a.runtime_reserve_gib_training * BYTES_PER_GIB / BYTES_PER_GB
        how = (f"the card less {a.allocator_fragmentation_fraction:g} fragmentation and a "
               f"{a.runtime_reserve_gib_training:g} GiB runtime reserve")
    usable_gb = max(usable_gb, 0.0)
    return (f"{model.name} needs {need_gb:,.0f} GB for {label} alone; "
            f"{limit} x {biggest.name} offer {limit * card_gb:,.0f} GB, of which {limit * usable_gb:,.0f} GB is usable "
            f"({usable_gb / card_gb:.0%} per card: {how}), before activations and KV cache.")


def explain_no_fit(scenario: Scenario, model: ModelSpec, space: Space) -> str:
    """Why no configuration is left: no GPU has a price for the term, or nothing fits in memory."""
    if space.gpus and len(space.unpriced_gpus) == len(space.gpus):
        names = ", ".join(space.unpriced_gpus)
        source = f"the price file {scenario.pricing.price_file}" if scenario.pricing.price_file else "the price catalog"
        provider = f" from provider {scenario.pricing.provider!r}" if scenario.pricing.provider else ""
        return (f"{scenario.name}: no GPU in the search has a {scenario.pricing.term.value} price{provider} in {source} "
                f"({names}); memory was not the problem.\n"
                f"  To fix: choose another pricing.term or provider, give pricing.usd_per_gpu_hour, or allow GPUs that have prices.")
    conflict = fp8_conflict(scenario)
    if conflict:
        return f"{scenario.name}: {conflict}; memory was not the problem."
    parts = [f"{scenario.name}: no configuration of {model.name} fits in memory within the search space "
             f"({space.structural_count} legal layouts evaluated)."]
    if space.unpriced_gpus:
        parts.append(f"  GPUs without a {scenario.pricing.term.value} price (excluded): {', '.join(space.unpriced_gpus)}.")
    if space.closest_misfit is not None:
        m = space.closest_misfit.memory
        parts.append(f"  Closest: {layout_summary(space.closest_misfit)} needs {m.total_bytes / BYTES_PER_GIB:,.1f} GiB per card, "
                     f"capacity {m.capacity_bytes / BYTES_PER_GIB:,.1f} GiB (short by {-m.headroom_bytes / BYTES_PER_GIB:,.1f} GiB).")
    parts.append("  To fix: allow more GPUs or larger parallel degrees, lower precision, ZeRO-3, checkpointing or a larger card.")
    return "\n".join(parts)


# ---- alternatives and Pareto ---------------------------------------------------------------


def _gpu_limited(scenario: Scenario) -> bool:
    """A training scenario whose GPU limits bound the enumeration (`planner.space.gpu_cap`)."""
    return isinstance(scenario.workload, TrainingWorkload) and bool(scenario.search.max_gpus or scenario.constraints.inventory)


def _alternative(e: Evaluation, objective: Objective) -> Alternative:
    return Alternative(
        gpu=e.layout.gpu, feasible=True, summary=layout_summary(e), num_gpus=e.layout.num_gpus, cost=plan_cost(e),
        objective_value=objective_of(e, objective)[0],
        throughput_tokens_per_s=plan_throughput(e),
        time_to_train_days=e.perf.time_to_train_s / 86400.0 if isinstance(e, TrainingEvaluation) else None,
    )


def alternatives_per_gpu(scenario: Scenario, space: Space, rows: list[Evaluation], time_limit_s: float) -> list[Alternative]:
    """The best plan on each GPU type, best objective first (ties: fewer GPUs, then catalog order), then the GPU types with none and why."""
    out = []
    for gpu in space.gpus:
        if gpu.name in space.unpriced_gpus:
            out.append(Alternative(gpu=gpu.name, feasible=False, summary=f"no {scenario.pricing.term.value} price in the catalog"))
            continue
        sub = [e for e in rows if e.layout.gpu == gpu.name]
        if not sub:
            cap = gpu_cap(scenario, gpu.name) if isinstance(scenario.workload, TrainingWorkload) else None
            within = f" on at most {cap} GPUs (max_gpus / inventory)" if cap is not None else ""
            out.append(Alternative(gpu=gpu.name, feasible=False, summary=f"no layout fits in memory{within}"))
            continue
        plan, status, _, _, core = solve_table(scenario, sub, time_limit_s)
        if plan is None:
            out.append(Alternative(gpu=gpu.name, feasible=False, summary=f"violates {', '.join(core) or 'the load'}"))
        else:
            out.append(_alternative(plan, scenario.objective))
    sign = -1.0 if scenario.objective is Objective.MAX_THROUGHPUT else 1.0
    order = {id(a): i for i, a in enumerate(out)}
    return sorted(out, key=lambda a: (not a.feasible, sign * (a.objective_value or 0.0), a.num_gpus or 0, order[id(a)]))


def pareto_frontier(scenario: Scenario, rows: list[Evaluation], time_limit_s: float, points: int = 12) -> list[ParetoPoint]:
    """Cost vs speed frontier by the epsilon-constraint method (Haimes et al. 1971).

    Minimise cost, then demand strictly faster (training: shorter time to train; serving:
    lower TPOT at the SLO percentile under each layout's load, `perf.inference_perf_columns`)
    and minimise cost again, until nothing faster exists or `points` are found. Each point
    names the metric it trades (`ParetoPoint.metric`). Serving rows keep the replica count
    of the scenario's own SLOs: a point is the cheapest layout whose figures at that load
    are below the TPOT step (a tighter SLO with more replicas per layout is not re-sized).
    """
    frontier: list[ParetoPoint] = []
    current = scenario.model_copy(update={"objective": Objective.MIN_COST})
    for _ in range(points):
        e, *_ = solve_table(current, rows, time_limit_s)
        if e is None:
            break
        training = isinstance(e, TrainingEvaluation)
        if training:
            metric, metric_value = "time to train (days)", e.perf.time_to_train_s / 86400.0
        else:
            metric, metric_value = f"TPOT p{e.perf.percentile} under load (ms)", e.perf.tpot_s * 1000.0
        frontier.append(ParetoPoint(cost=plan_cost(e), metric=metric, metric_value=metric_value,
                                    throughput_tokens_per_s=plan_throughput(e), num_gpus=e.layout.num_gpus,
                                    time_to_train_days=e.perf.time_to_train_s / 86400.0 if training else None,
                                    summary=layout_summary(e)))
        if training:
            faster = current.constraints.model_copy(update={"deadline_days": e.perf.time_to_train_s / 86400.0 * (1 - 1e-3)})
            current = current.model_copy(update={"constraints": faster})
        else:
            w = current.workload
            slo = w.slo.model_copy(update={"tpot_s": e.perf.tpot_s * (1 - 1e-3)})
            current = current.model_copy(update={"workload": w.model_copy(update={"slo": slo})})
    return nondominated(frontier)


def nondominated(points: list[ParetoPoint]) -> list[ParetoPoint]:
    """The points no other point beats or equals on both cost and the speed metric (lower is better for both), cheapest first.

    The epsilon-constraint steps can return a dominated point (cost ties broken by GPUs, a
    FEASIBLE step under the time limit), so the frontier is filtered exactly, not assumed.
    """
    kept = [p for p in points if not any(q is not p and q.cost <= p.cost and q.speed <= p.speed and (q.cost < p.cost or q.speed < p.speed)
                                         for q in points)]
    unique: list[ParetoPoint] = []
    for p in sorted(kept, key=lambda p: (p.cost, p.speed)):
        if not any(u.cost == p.cost and u.speed == p.speed for u in unique):
            unique.append(p)
    return unique


# ---- entry point ---------------------------------------------------------------------------


def solve(scenario: Scenario, time_limit_s: float = DEFAULT_TIME_LIMIT_S, alternatives: bool = True, pareto: bool = False) -> Plan:
    """The optimal plan for a scenario (raises `InfeasibleError` with an explanation when there is none)."""
    check_catalog_names(scenario, scenario.name)
    assumptions = scenario.resolved_assumptions()
    model = resolve_model(scenario.workload.model, where="workload.model")
    if scenario.objective is Objective.MAX_THROUGHPUT and isinstance(scenario.workload, InferenceWorkload):
        if not (scenario.search.max_gpus or scenario.constraints.budget_usd):
            raise InputError("objective: max_throughput for serving needs search.max_gpus or constraints.budget_usd (else it is unbounded).")
    started = time.perf_counter()
    space = build_space(scenario, model, assumptions, prune=True)
    rows: list[Evaluation] = space.rows
    build_time = time.perf_counter() - started
    chosen, status, gap, solve_time, core = solve_table(scenario, rows, time_limit_s)
    if chosen is None:
        if status == "UNKNOWN":
            raise InfeasibleError(f"{scenario.name}: CP-SAT found no plan within {time_limit_s:g} s; raise --time-limit.")
        if _gpu_limited(scenario):  # layouts beyond the GPU limits were not enumerated: they show what the limits cost
            space = build_space(scenario, model, assumptions, prune=True, explain=True)
            rows = space.rows
            if rows:
                _, status, _, _, core = solve_table(scenario, rows, time_limit_s)
        if not rows:
            raise InfeasibleError(explain_no_fit(scenario, model, space))
        raise InfeasibleError(explain_infeasible(scenario, model, space, rows, core))
    fresh = verify(scenario, model, chosen, assumptions)
    value, unit = objective_of(fresh, scenario.objective)
    alts = alternatives_per_gpu(scenario, space, rows, time_limit_s) if alternatives else []
    front = pareto_frontier(scenario, rows, time_limit_s) if pareto else []
    evidence = training_speed_evidence(fresh, model, assumptions) if isinstance(fresh, TrainingEvaluation) else None
    return Plan(
        scenario=scenario.name, kind="training" if isinstance(fresh, TrainingEvaluation) else "inference", model=model.name,
        status=status, objective=scenario.objective, objective_value=value, objective_unit=unit, gap=gap,  # type: ignore[arg-type]
        solve_time_s=solve_time, build_time_s=build_time, candidates=space.structural_count, fitting=len(rows),
        evaluation=fresh, verified=True, alternatives=tuple(alts), pareto=tuple(front), speed_evidence=evidence,
    )
