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
The integer columns (`Coefficients`) and each user limit (`LinearLimit`: coefficients over x or
k, and its bound) are built once and read twice: by the model, and by `planner.solver`, which
checks over numpy which rows a limit rules out before anything is solved.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
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


def tiebreak(gpus: Any, row: Any, rows: int) -> Any:
    """Ties on the objective go to fewer GPUs, then to the earliest row: one integer, GPUs x rows + row (row < rows).
    The same expression orders CP-SAT's second phase (over variables) and the numpy screening (over columns)."""
    return gpus * rows + row


def scaled(value: float, unit: str, direction: str = "need") -> int:
    """The one place where reals become integers: needs round up, limits round down."""
    x = value * SCALE[unit]
    return math.ceil(x - 1e-9) if direction == "need" else math.floor(x + 1e-9)


def _column(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.int64)


@dataclass(frozen=True)
class Coefficients:
    """A table's integer coefficients, one entry per row, as the model holds them (`scaled`); serving figures are per
    replica (multiplied by k[r]), training figures per configuration (multiplied by x[r])."""

    training: bool
    gpu: np.ndarray                         # GPU type name of each row
    gpus: np.ndarray                        # GPUs (training) or GPUs per replica (serving)
    cost: np.ndarray                        # training: cents for the run; serving: 1/100 cent per hour per replica
    throughput: np.ndarray                  # 0.01 tokens/s, rounded down (training: the run; serving: a replica)
    time: np.ndarray | None = None          # training: 0.1 s to train
    usd_per_mtok: np.ndarray | None = None  # serving: 1/100 cent per million output tokens (0 when unpriced)
    replicas_needed: np.ndarray | None = None  # serving: `perf.replicas_needed`, the load-aware count (`fewest_replicas`)
    batch: np.ndarray | None = None         # serving: sequence slots per replica
    ttft: np.ndarray | None = None          # serving: microseconds at the SLO percentile under load
    tpot: np.ndarray | None = None          # serving: microseconds at the SLO percentile under load

    def __len__(self) -> int:
        return len(self.gpus)

    def take(self, rows: np.ndarray) -> Coefficients:
        """The coefficients of the rows at these indices, in their order."""
        return replace(self, **{name: value[rows] for name, value in vars(self).items() if isinstance(value, np.ndarray)})


COEFFICIENT_CACHE_ENTRIES = 64
"""Tables whose coefficients are kept per process (the cases of a study that share one priced table encode it once)."""

_COEFFICIENT_CACHE: OrderedDict[tuple[int, ...], tuple[list, Coefficients]] = OrderedDict()


def coefficients(rows: list[TrainingEvaluation] | list[InferenceEvaluation]) -> Coefficients:
    """The integer coefficient columns of a table, from the evaluator's figures of each row.

    Memoised on the identity of the row objects (frozen evaluations; the cache holds them, so an
    identity is never reused while its entry lives)."""
    key = tuple(map(id, rows))
    hit = _COEFFICIENT_CACHE.get(key)
    if hit is not None:
        _COEFFICIENT_CACHE.move_to_end(key)
        return hit[1]
    coef = _coefficients(rows)
    _COEFFICIENT_CACHE[key] = (list(rows), coef)
    while len(_COEFFICIENT_CACHE) > COEFFICIENT_CACHE_ENTRIES:
        _COEFFICIENT_CACHE.popitem(last=False)
    return coef


def _coefficients(rows: list[TrainingEvaluation] | list[InferenceEvaluation]) -> Coefficients:
    gpu = np.array([e.layout.gpu for e in rows], dtype=object)
    if rows and isinstance(rows[0], TrainingEvaluation):
        return Coefficients(
            training=True, gpu=gpu, gpus=_column([e.layout.num_gpus for e in rows]),
            cost=_column([scaled(e.cost_usd or 0.0, "usd") for e in rows]),  # type: ignore[union-attr]
            throughput=_column([scaled(e.perf.tokens_per_s, "tokens_per_s", "limit") for e in rows]),
            time=_column([scaled(e.perf.time_to_train_s, "s") for e in rows]))  # type: ignore[union-attr]
    return Coefficients(
        training=False, gpu=gpu, gpus=_column([e.layout.gpus_per_replica for e in rows]),  # type: ignore[union-attr]
        cost=_column([scaled(e.usd_per_replica_hour, "usd_per_hour") for e in rows]),  # type: ignore[union-attr]
        throughput=_column([scaled(e.perf.output_tokens_per_s, "tokens_per_s", "limit") for e in rows]),  # type: ignore[union-attr]
        # $ per million output tokens of a configuration does not depend on its replica count: a linear term in x.
        usd_per_mtok=_column([scaled(e.usd_per_million_output_tokens, "usd_per_mtok") if e.usd_per_million_output_tokens else 0
                              for e in rows]),  # type: ignore[union-attr]
        replicas_needed=_column([e.perf.replicas_needed for e in rows]),  # type: ignore[union-attr]
        batch=_column([e.layout.batch for e in rows]),  # type: ignore[union-attr]
        ttft=_column([scaled(e.perf.ttft_s, "latency_s") for e in rows]),  # type: ignore[union-attr]
        tpot=_column([scaled(e.perf.tpot_s, "latency_s") for e in rows]))  # type: ignore[union-attr]


@dataclass(frozen=True)
class LinearLimit:
    """A user limit `sum(coefficients * v) <= bound` over the replicas k (serving GPUs and cost) or the choices x."""

    key: str
    text: str
    per_replica: bool
    coefficients: np.ndarray
    bound: int
    unit: str  # of the limit's quantity as the user states it: GPUs, $ (training run), $/h (serving), days, s

    def rules_out(self, replicas: np.ndarray) -> np.ndarray:
        """Rows that break the limit when chosen with `replicas` (ones for limits over x).

        Every coefficient is >= 0, so a row chosen with more replicas than the load needs is never
        better placed: at the fewest replicas this is exactly whether the row can meet the limit."""
        return self.coefficients * (replicas if self.per_replica else 1) > self.bound


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
    usd_per_mtok: cp_model.LinearExpr | None = None
    limits: list[Limit] = field(default_factory=list)


def add_choice(model: cp_model.CpModel, rows: int) -> list[cp_model.IntVar]:
    """Exactly one configuration is chosen."""
    x = [model.new_bool_var(f"x{r}") for r in range(rows)]
    model.add_exactly_one(x)
    return x


def add_replicas(model: cp_model.CpModel, x: list[cp_model.IntVar], max_replicas: list[int]) -> list[cp_model.IntVar]:
    """Replicas run only on the chosen configuration (at least one there: `add_load`)."""
    k = [model.new_int_var(0, max(1, m), f"k{r}") for r, m in enumerate(max_replicas)]
    for r, (kr, xr) in enumerate(zip(k, x)):
        model.add(kr <= max(1, max_replicas[r]) * xr)
    return k


def fewest_replicas(replicas_needed: np.ndarray, batch: np.ndarray, concurrency: int | None) -> np.ndarray:
    """Per serving row, the fewest replicas that carry the load: the configuration's `perf.replicas_needed` (the
    load-aware count of `planner.serving.replicas_needed` at the workload's rate and SLOs, at least one), and enough
    sequence slots (`batch` per replica) for `concurrency` concurrent sequences.

    The one count that the model's load constraint (`add_load`) and the screening over numpy (`planner.solver`) share."""
    need = np.maximum(replicas_needed, 1)
    if concurrency:
        need = np.maximum(need, -(-concurrency // batch))  # ceil(concurrency / batch), in integers
    return need


def add_load(model: cp_model.CpModel, k: list[cp_model.IntVar], x: list[cp_model.IntVar], fewest: np.ndarray) -> None:
    """The replicas carry the load: the chosen configuration runs at least its `fewest_replicas`."""
    for need, kr, xr in zip(fewest.tolist(), k, x):
        model.add(kr >= need * xr)


def add_limit(enc: Encoding, limit: LinearLimit) -> None:
    """A user limit `expr <= bound`, enforced by its own assumption literal (terms with a zero coefficient left out)."""
    variables = enc.k if limit.per_replica else enc.x
    assert variables is not None
    members = np.flatnonzero(limit.coefficients)
    expr = weighted([variables[r] for r in members.tolist()], limit.coefficients[members].tolist())
    literal = enc.model.new_bool_var(f"limit_{limit.key}")
    enc.model.add(expr <= limit.bound).only_enforce_if(literal)
    enc.model.add_assumption(literal)
    enc.limits.append(Limit(key=limit.key, text=limit.text, literal=literal))


def encode_training(coef: Coefficients) -> Encoding:
    """Variables and expressions for a training table (limits are added by the caller)."""
    model = PlannerCpModel()
    x = add_choice(model, len(coef))
    assert coef.time is not None
    return Encoding(model=model, x=x, k=None, gpus=weighted(x, coef.gpus.tolist()), cost=weighted(x, coef.cost.tolist()),
                    time=weighted(x, coef.time.tolist()), throughput=weighted(x, coef.throughput.tolist()))


def encode_inference(coef: Coefficients, max_replicas: list[int], fewest: np.ndarray) -> Encoding:
    """Variables and expressions for a serving table: a configuration and its replica count (at least `fewest`)."""
    model = PlannerCpModel()
    x = add_choice(model, len(coef))
    k = add_replicas(model, x, max_replicas)
    add_load(model, k, x, fewest)
    assert coef.usd_per_mtok is not None
    members = np.flatnonzero(coef.usd_per_mtok).tolist()
    per_mtok = weighted([x[r] for r in members], coef.usd_per_mtok[members].tolist())
    return Encoding(model=model, x=x, k=k, gpus=weighted(k, coef.gpus.tolist()), cost=weighted(k, coef.cost.tolist()), time=None,
                    throughput=weighted(k, coef.throughput.tolist()), usd_per_mtok=per_mtok)


def gpu_limit(coef: Coefficients, max_gpus: int) -> LinearLimit:
    """At most max_gpus GPUs."""
    return LinearLimit("max_gpus", f"max_gpus = {max_gpus}", not coef.training, coef.gpus, max_gpus, "GPUs")


def inventory_limits(coef: Coefficients, inventory: dict[str, int]) -> list[LinearLimit]:
    """At most the inventory of each GPU type (types with no row in the table add nothing)."""
    out = []
    for gpu, count in sorted(inventory.items()):
        mine = coef.gpu == gpu
        if mine.any():
            out.append(LinearLimit(f"inventory:{gpu}", f"inventory {gpu} = {count}", not coef.training, np.where(mine, coef.gpus, 0), count,
                                   "GPUs"))
    return out


def budget_limit(coef: Coefficients, budget_usd: float) -> LinearLimit:
    """Cost within the budget (training: the run; serving: per hour)."""
    unit, scale = ("$", "usd") if coef.training else ("$/h", "usd_per_hour")
    return LinearLimit("budget", f"budget = {budget_usd:,.2f} {unit}", not coef.training, coef.cost, scaled(budget_usd, scale, "limit"),
                       unit)


def deadline_limit(coef: Coefficients, deadline_days: float) -> LinearLimit:
    """Training finishes before the deadline."""
    assert coef.time is not None
    return LinearLimit("deadline", f"deadline = {deadline_days:g} days", False, coef.time, scaled(deadline_days * 86400.0, "s", "limit"),
                       "days")


def slo_limit(coef: Coefficients, key: str, limit_s: float, percentile: int) -> LinearLimit:
    """The chosen configuration meets a latency SLO (TTFT or TPOT) at the percentile, under its load (the figures of
    `perf.inference_perf_columns` at rate / replicas_needed; a layout that cannot meet it shows its best reachable value)."""
    values = coef.ttft if key == "ttft" else coef.tpot
    assert values is not None
    return LinearLimit(key, f"{key.upper()} p{percentile} <= {limit_s * 1000:g} ms", False, values, scaled(limit_s, "latency_s", "limit"),
                       "s")
