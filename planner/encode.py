"""CP-SAT encoding of a scenario's coefficient table.

Notation
  r        a row of the table: one configuration from `planner.space`, scored by `planner.evaluate`
  x[r]     1 when configuration r is chosen                                   (BoolVar)
  k[r]     replicas of serving configuration r (0 unless x[r])                (IntVar, inference only)
  n[r], c[r], t[r], s[r]   GPUs, cost, time, throughput of r, from the evaluator, as integers (`SCALE`)

Objective: min cost | max throughput | min GPUs | min time (training) | min $ per million tokens
(serving), then deterministic ties
(fewer GPUs, then the row order, which is sorted by cost).

Constraints (one function each)
  exactly one configuration;                 replicas only on the chosen configuration;
  the load is served (tokens/s, sequences);  user limits, each under an assumption literal so
  that CP-SAT can name a sufficient set of conflicting limits: max GPUs, inventory per GPU
  type, budget, deadline, TTFT and TPOT SLOs.

CP-SAT works on integers: every coefficient is scaled once, in `scaled`, rounding what a plan
needs up and what a limit allows down, so the solver never accepts what verification rejects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ortools.sat.python import cp_model

from planner.evaluate import InferenceEvaluation, TrainingEvaluation

SCALE = {
    "usd": 100.0,          # cents
    "usd_per_hour": 1e4,   # 1/100 cent per hour
    "usd_per_mtok": 1e4,   # 1/100 cent per million tokens
    "s": 10.0,             # training time to train, 0.1 s
    "latency_s": 1e6,      # microseconds
    "tokens_per_s": 100.0,
    "gpus": 1.0,
}


class PlannerCpModel(cp_model.CpModel):
    """A CP-SAT model without the camelCase aliases OR-Tools attaches to every instance (about 2 ms per model,
    most of the encoding time of a small table); planner calls the PEP 8 names only."""

    def _add_pre_pep8_methods(self) -> None:
        return None


def weighted(variables: list[cp_model.IntVar], coefficients: list[int]) -> cp_model.LinearExpr:
    """sum(c x) over a column of integer coefficients, built in one call (OR-Tools' weighted_sum)."""
    return cp_model.LinearExpr.weighted_sum(variables, coefficients)


def scaled(value: float, unit: str, direction: str = "need") -> int:
    """The one place where reals become integers: needs round up, limits round down."""
    x = value * SCALE[unit]
    return math.ceil(x - 1e-9) if direction == "need" else math.floor(x + 1e-9)


@dataclass
class Limit:
    """A user limit and its enforcement literal."""

    key: str
    text: str
    literal: cp_model.IntVar


@dataclass
class Encoding:
    """The model, its variables and the integer coefficient columns."""

    model: cp_model.CpModel
    x: list[cp_model.IntVar]
    k: list[cp_model.IntVar] | None
    gpus: cp_model.LinearExpr
    cost: cp_model.LinearExpr
    time: cp_model.LinearExpr | None
    throughput: cp_model.LinearExpr
    cost_unit: str
    usd_per_mtok: cp_model.LinearExpr | None = None
    limits: list[Limit] = field(default_factory=list)


def add_choice(model: cp_model.CpModel, rows: int) -> list[cp_model.IntVar]:
    """Exactly one configuration is chosen."""
    x = [model.new_bool_var(f"x{r}") for r in range(rows)]
    model.add_exactly_one(x)
    return x


def add_replicas(model: cp_model.CpModel, x: list[cp_model.IntVar], max_replicas: list[int]) -> list[cp_model.IntVar]:
    """Replicas run only on the chosen configuration, at least one of them."""
    k = [model.new_int_var(0, max(1, m), f"k{r}") for r, m in enumerate(max_replicas)]
    for r, (kr, xr) in enumerate(zip(k, x)):
        model.add(kr <= max(1, max_replicas[r]) * xr)
        model.add(kr >= xr)
    return k


def add_load(model: cp_model.CpModel, k: list[cp_model.IntVar], x: list[cp_model.IntVar], rows: list[InferenceEvaluation],
             concurrency: int | None) -> None:
    """The replicas carry the load: at least the configuration's `perf.replicas_needed` (the load-aware count of
    `planner.serving.replicas_needed` at the workload's rate and SLOs), and enough sequence slots for the concurrency."""
    for e, kr, xr in zip(rows, k, x):
        model.add(kr >= max(1, e.perf.replicas_needed) * xr)
    if concurrency is not None:
        model.add(weighted(k, [e.layout.batch for e in rows]) >= concurrency)


def add_limit(enc: Encoding, key: str, text: str, expr: cp_model.LinearExpr, bound: int) -> None:
    """A user limit `expr <= bound`, enforced by its own assumption literal."""
    literal = enc.model.new_bool_var(f"limit_{key}")
    enc.model.add(expr <= bound).only_enforce_if(literal)
    enc.model.add_assumption(literal)
    enc.limits.append(Limit(key=key, text=text, literal=literal))


def encode_training(rows: list[TrainingEvaluation]) -> Encoding:
    """Variables and expressions for a training table (limits are added by the caller)."""
    model = PlannerCpModel()
    x = add_choice(model, len(rows))
    gpus = weighted(x, [e.layout.num_gpus for e in rows])
    cost = weighted(x, [scaled(e.cost_usd or 0.0, "usd") for e in rows])
    time = weighted(x, [scaled(e.perf.time_to_train_s, "s") for e in rows])
    tps = weighted(x, [scaled(e.perf.tokens_per_s, "tokens_per_s", "limit") for e in rows])
    return Encoding(model=model, x=x, k=None, gpus=gpus, cost=cost, time=time, throughput=tps, cost_unit="usd")


def encode_inference(rows: list[InferenceEvaluation], max_replicas: list[int], concurrency: int | None) -> Encoding:
    """Variables and expressions for a serving table: a configuration and its replica count."""
    model = PlannerCpModel()
    x = add_choice(model, len(rows))
    k = add_replicas(model, x, max_replicas)
    add_load(model, k, x, rows, concurrency)
    gpus = weighted(k, [e.layout.gpus_per_replica for e in rows])
    cost = weighted(k, [scaled((e.usd_per_hour or 0.0) / e.layout.replicas, "usd_per_hour") for e in rows])  # per replica
    tps = weighted(k, [scaled(e.perf.output_tokens_per_s, "tokens_per_s", "limit") for e in rows])
    # $ per million output tokens of a configuration does not depend on its replica count: a linear term in x.
    per_mtok = sum(scaled(e.usd_per_million_output_tokens, "usd_per_mtok") * xr
                   for e, xr in zip(rows, x) if e.usd_per_million_output_tokens)
    return Encoding(model=model, x=x, k=k, gpus=gpus, cost=cost, time=None, throughput=tps, cost_unit="usd_per_hour", usd_per_mtok=per_mtok)


def add_gpu_limit(enc: Encoding, max_gpus: int) -> None:
    """At most max_gpus GPUs."""
    add_limit(enc, "max_gpus", f"max_gpus = {max_gpus}", enc.gpus, max_gpus)


def add_inventory(enc: Encoding, rows: list, inventory: dict[str, int]) -> None:
    """At most the inventory of each GPU type."""
    for gpu, count in sorted(inventory.items()):
        members = [r for r, e in enumerate(rows) if e.layout.gpu == gpu]
        if not members:
            continue
        if enc.k is None:
            expr = weighted([enc.x[r] for r in members], [rows[r].layout.num_gpus for r in members])
        else:
            expr = weighted([enc.k[r] for r in members], [rows[r].layout.gpus_per_replica for r in members])
        add_limit(enc, f"inventory:{gpu}", f"inventory {gpu} = {count}", expr, count)


def add_budget(enc: Encoding, budget_usd: float) -> None:
    """Cost within the budget (training: the run; serving: per hour)."""
    unit = "$" if enc.cost_unit == "usd" else "$/h"
    add_limit(enc, "budget", f"budget = {budget_usd:,.2f} {unit}", enc.cost, scaled(budget_usd, enc.cost_unit, "limit"))


def add_deadline(enc: Encoding, deadline_days: float) -> None:
    """Training finishes before the deadline."""
    assert enc.time is not None
    add_limit(enc, "deadline", f"deadline = {deadline_days:g} days", enc.time, scaled(deadline_days * 86400.0, "s", "limit"))


def add_slo(enc: Encoding, rows: list[InferenceEvaluation], key: str, limit_s: float, percentile: int) -> None:
    """The chosen configuration meets a latency SLO (TTFT or TPOT) at the percentile, under its load (the figures of
    `perf.inference_perf_columns` at rate / replicas_needed; a layout that cannot meet it shows its best reachable value)."""
    values = [e.perf.ttft_s if key == "ttft" else e.perf.tpot_s for e in rows]
    expr = weighted(enc.x, [scaled(v, "latency_s") for v in values])
    add_limit(enc, key, f"{key.upper()} p{percentile} <= {limit_s * 1000:g} ms", expr, scaled(limit_s, "latency_s", "limit"))
