"""Fleet planning: one acquisition (owned, bought, rented GPUs) that serves several workloads.

Notation
  w          a workload (training or serving) with its active weeks in the planning horizon
  p          a candidate plan of w: GPU type g_p, GPU count n_p, duration d_p in weeks (training:
             its time to train rounded up to weeks; serving: its start..end weeks)
  s          where w runs: the pool of g_p (owned + bought GPUs) or rented GPUs of g_p
  z[w,p,s]   1 when workload w runs plan p on source s              (BoolVar)
  t[w,p,s]   its start week: fixed, or within the workload's window [earliest_start_week,
             deadline_week - d_p] (IntVar); interval [t, t + d_p) present iff z   (IntervalVar)
  b[g]       whole nodes of GPU type g bought                          (IntVar)

Objective (total cost of ownership over the horizon, USD): bought GPUs' capex amortised
straight-line over their life for the horizon's share of it (SemiAnalysis-style TCO), plus wall
power x PUE x $/kWh for every GPU-hour run on the pool, plus rented GPU-hours at the catalog
price of the offer's term (rent is paid only while the workload runs: duty cycle x active
hours; power is included in the rent).

Constraints
  each workload runs exactly one plan on one source;
  cumulative capacity per GPU pool: the intervals on the pool of type g never hold more than
  owned[g] + node_size x b[g] GPUs at once, and a fixed interval [0, lead time) holds the
  bought node_size x b[g] so that bought GPUs serve only from their lead time on (a lead time
  delays use instead of forbidding it); workloads active in the same week never share GPUs (a
  duty-cycled workload keeps its GPUs for its active weeks: conservative);
  cumulative rental caps per GPU type; purchase caps; the budget (assumption literals, for
  explanations; a cumulative capacity is relaxed by a big constant when its literal is off).

Each workload's candidate plans come from `planner.space` (the evaluator over its legal
layouts, dominance-pruned on GPU count and duration) and every chosen plan is re-verified.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ortools.sat.python import cp_model
from pydantic import BaseModel, Field, ValidationError, model_validator

from planner.catalog import load_onprem, resolve_gpu, resolve_model
from planner.cost import (
    PriceQuote, capex_usd_per_gpu_hour, hosting_usd_per_gpu_hour, instances_needed, offer_for, power_usd_per_gpu_hour, price_quote,
    rented_gpus, spot_risk,
)
from planner.encode import scaled
from planner.enums import PriceTerm
from planner.errors import InfeasibleError, InputError
from planner.evaluate import InferenceEvaluation, TrainingEvaluation
from planner.scenario import (
    FORBID, Assumptions, Constraints, InferenceWorkload, Pricing, Scenario, SearchSpace, TrainingWorkload, Workload,
    canonical_gpu_keys, read_structured_file, reject_bools, resolve_relative_paths, validation_message,
)
from planner.files import shorten
from planner.solver import layout_summary, min_replicas, solve_lexicographic, verify, with_replicas
from planner.space import build_space
from planner.units import HOURS_PER_WEEK



class FleetWorkload(BaseModel):
    """One workload of the fleet and when it runs."""

    model_config = FORBID

    name: str = Field(min_length=1, description="Short name.")
    workload: Workload = Field(description="Training or serving workload, as in a scenario.")
    search: SearchSpace = Field(default_factory=SearchSpace, description="Restrictions of its layouts (GPU types come from the fleet).")
    deadline_days: float | None = Field(default=None, gt=0, description="Training: finish within this many days of its start.")
    start_week: int = Field(default=0, ge=0, description="First week it runs (fixed start, unless a window is given).")
    end_week: int | None = Field(default=None, ge=1, description="Week it must be done by (exclusive; default the horizon).")
    earliest_start_week: int | None = Field(default=None, ge=0, description="Training window: first week it may start; the solver chooses the start.")
    deadline_week: int | None = Field(default=None, ge=1, description="Training window: week it must be done by (exclusive); the solver chooses the start.")

    @property
    def scheduled(self) -> bool:
        """True when the solver chooses the start week within a window."""
        return self.earliest_start_week is not None or self.deadline_week is not None

    def window(self, horizon_weeks: int) -> tuple[int, int]:
        """(first week it may start, week it must be done by, exclusive)."""
        lo = self.earliest_start_week if self.earliest_start_week is not None else self.start_week
        return lo, self.deadline_week or self.end_week or horizon_weeks
    duty_cycle: float = Field(default=1.0, gt=0, le=1, description="Serving: share of its active hours it actually runs (power and rent).")
    repeat_weekly: bool = Field(default=False, description="Training: the run repeats every active week and must finish within a week.")


class GpuOffer(BaseModel):
    """GPUs the team can buy or rent."""

    model_config = FORBID

    gpu: str = Field(description="GPU id.")
    buy: bool = Field(default=True, description="Can be bought (capex and life from catalogs/onprem.csv).")
    rent_term: PriceTerm | None = Field(default=PriceTerm.ON_DEMAND, description="Cloud term to rent at (None = not rentable).")
    rent_provider: str | None = Field(default=None, min_length=1, max_length=200, description="Rent only from this provider (None = the cheapest catalog row).")

    @model_validator(mode="after")
    def _cloud_term(self) -> GpuOffer:
        if self.rent_term is PriceTerm.ON_PREM:
            raise ValueError(f"offer {self.gpu}: rent_term must be a cloud term; buying is `buy: true`")
        return self
    max_buy_gpus: int | None = Field(default=None, ge=0, description="Most GPUs vendors can deliver in the horizon.")
    max_rent_gpus: int | None = Field(default=None, ge=0, description="Most GPUs rentable at once.")
    lead_time_weeks: int = Field(default=0, ge=0, description="Bought GPUs are usable from this week on.")


class FleetScenario(BaseModel):
    """Several workloads, one fleet."""

    model_config = FORBID

    name: str = Field(min_length=1, max_length=200, description="Fleet name.")
    description: str = Field(default="", description="What the team wants.")
    horizon_weeks: int = Field(gt=0, le=520, description="Planning horizon, weeks.")
    budget_usd: float | None = Field(default=None, gt=0, le=1e12, description="Most total cost over the horizon, USD.")
    owned: dict[str, int] = Field(default_factory=dict, max_length=64, description="GPUs already owned, per GPU id (capex sunk; power paid).")
    offers: tuple[GpuOffer, ...] = Field(default=(), max_length=64, description="GPUs that can be bought or rented.")
    workloads: tuple[FleetWorkload, ...] = Field(min_length=1, max_length=64, description="Workloads sharing the fleet.")
    assumptions: dict[str, Any] = Field(default_factory=dict, description="Overrides of catalogs/assumptions.yaml.")

    @model_validator(mode="after")
    def _consistent(self) -> FleetScenario:
        names = [w.name for w in self.workloads]
        if len(set(names)) != len(names):
            raise ValueError(f"workload names must be unique (repeated: {sorted({n for n in names if names.count(n) > 1})})")
        for w in self.workloads:
            end = w.end_week or self.horizon_weeks
            if not w.start_week < end <= self.horizon_weeks:
                raise ValueError(f"workload {w.name}: need start_week < end_week <= horizon_weeks")
            if isinstance(w.workload, TrainingWorkload) and w.duty_cycle != 1.0:
                raise ValueError(f"workload {w.name}: duty_cycle applies to serving; a training run lasts its time to train")
            if isinstance(w.workload, InferenceWorkload) and (w.repeat_weekly or w.deadline_days):
                raise ValueError(f"workload {w.name}: repeat_weekly and deadline_days apply to training")
            if w.scheduled:
                lo, hi = w.window(self.horizon_weeks)
                if isinstance(w.workload, InferenceWorkload) or w.repeat_weekly:
                    raise ValueError(f"workload {w.name}: earliest_start_week/deadline_week apply to one-off training runs; serving and repeat_weekly use start_week/end_week")
                if not lo < hi <= self.horizon_weeks:
                    raise ValueError(f"workload {w.name}: need earliest_start_week < deadline_week <= horizon_weeks")
        for gpu, count in self.owned.items():
            if not 0 <= count <= 1_000_000:
                raise ValueError(f"owned {shorten(gpu, 40)} must be between 0 and 1,000,000")
        object.__setattr__(self, "owned", canonical_gpu_keys(self.owned))  # aliases of one GPU are an error, not a silent overwrite
        offered = [_canonical_gpu(o.gpu) for o in self.offers]
        repeated = sorted({g for g in offered if offered.count(g) > 1})
        if repeated:
            raise ValueError(f"each GPU may be offered once (offered more than once, counting aliases: {', '.join(repeated)})")
        if not self.owned and not self.offers:
            raise ValueError("the fleet needs owned GPUs or offers to buy or rent")
        Assumptions.with_overrides(self.assumptions)
        return self


def _canonical_gpu(name: str) -> str:
    """The catalog id of a GPU name or alias (the name itself when unknown; load_fleet reports unknown names)."""
    from planner.errors import UnknownNameError

    try:
        return resolve_gpu(name).name
    except UnknownNameError:
        return name


class FleetCandidate(BaseModel):
    """A plan of one workload on one source, with its fleet coefficients."""

    model_config = FORBID

    workload: str = Field(description="Workload name.")
    gpu: str = Field(description="GPU id.")
    source: str = Field(description="pool (owned + bought) or rent.")
    num_gpus: int = Field(description="GPUs it holds while active.")
    weeks: tuple[int, ...] = Field(description="Weeks it holds them at its earliest start.")
    starts: tuple[int, ...] = Field(default=(), description="Start weeks it may take (one when fixed; empty = weeks[0]).")
    cost_usd: float = Field(description="Its own cost: pool power or rent, over the horizon.")
    evaluation: TrainingEvaluation | InferenceEvaluation = Field(description="The evaluated plan.")

    @property
    def start_options(self) -> tuple[int, ...]:
        """Start weeks the solver may choose."""
        return self.starts or (self.weeks[0],)

    def weeks_from(self, start: int) -> tuple[int, ...]:
        """Weeks held when it starts in week `start`."""
        return tuple(range(start, start + len(self.weeks)))


class FleetAssignment(BaseModel):
    """What one workload runs."""

    model_config = FORBID

    workload: str = Field(description="Workload name.")
    plan: str = Field(description="Layout summary.")
    gpu: str = Field(description="GPU id.")
    source: str = Field(description="pool or rent.")
    num_gpus: int = Field(description="GPUs.")
    weeks: tuple[int, int] = Field(description="First and last+1 active week.")
    cost_usd: float = Field(description="Power or rent over the horizon.")


class FleetPlan(BaseModel):
    """The fleet and its assignments."""

    model_config = FORBID

    name: str = Field(description="Fleet name.")
    status: str = Field(description="OPTIMAL or FEASIBLE.")
    total_cost_usd: float = Field(description="TCO over the horizon.")
    purchase_cost_usd: float = Field(description="Amortised capex of bought GPUs for the horizon.")
    bought_gpus: dict[str, int] = Field(description="GPUs bought per type (whole nodes).")
    owned_gpus: dict[str, int] = Field(description="GPUs owned per type.")
    peak_rented_gpus: dict[str, int] = Field(description="Most GPUs rented at once per type.")
    assignments: tuple[FleetAssignment, ...] = Field(description="One per workload.")
    solve_time_s: float = Field(description="CP-SAT wall time.")
    candidates: int = Field(description="Candidate (plan, source) pairs encoded.")
    verified: bool = Field(description="Every chosen plan re-evaluated by the evaluator.")


def load_fleet(path: str | Path) -> FleetScenario:
    """Read and validate a fleet file (YAML or JSON)."""
    path = Path(path)
    data = read_structured_file(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of fleet fields at the top level.")
    try:
        reject_bools(FleetScenario, data)
    except InputError as err:
        raise InputError(f"{path}: {err}") from None
    if isinstance(data.get("workloads"), list):  # a workload's model path is relative to the fleet file
        data = {**data, "workloads": [resolve_relative_paths(w, path.parent) if isinstance(w, dict) else w for w in data["workloads"]]}
    try:
        fleet = FleetScenario.model_validate(data)
    except ValidationError as err:
        raise InputError(validation_message(err, str(path))) from None
    for gpu in [*fleet.owned, *(o.gpu for o in fleet.offers)]:
        resolve_gpu(gpu, where=f"{path}: GPU")
    for w in fleet.workloads:
        resolve_model(w.workload.model, where=f"{path}: workloads.{w.name}.workload.model")
    return fleet


# ---- candidates ------------------------------------------------------------------------------


def fleet_gpus(fleet: FleetScenario) -> list[str]:
    """GPU types the fleet can use: owned or offered."""
    names = [resolve_gpu(g).name for g in fleet.owned] + [resolve_gpu(o.gpu).name for o in fleet.offers]
    return list(dict.fromkeys(names))


def workload_scenario(fleet: FleetScenario, w: FleetWorkload, gpus: list[str]) -> Scenario:
    """The single-workload scenario whose space gives the workload's candidate plans (price-neutral: $1/GPU-h)."""
    search = w.search.model_copy(update={"gpus": tuple(gpus), "max_gpus": None})
    return Scenario(name=f"{fleet.name}/{w.name}", workload=w.workload, search=search, constraints=Constraints(),
                    pricing=Pricing(usd_per_gpu_hour={g: 1.0 for g in gpus}), assumptions=fleet.assumptions)


def active_weeks(fleet: FleetScenario, w: FleetWorkload, e: TrainingEvaluation | InferenceEvaluation) -> tuple[int, ...] | None:
    """Weeks a plan holds its GPUs, or None when it cannot finish in time."""
    end = w.end_week or fleet.horizon_weeks
    if isinstance(e, InferenceEvaluation):
        return tuple(range(w.start_week, end))
    days = e.perf.time_to_train_s / 86400.0
    if w.deadline_days is not None and days > w.deadline_days:
        return None
    if w.repeat_weekly:
        return tuple(range(w.start_week, end)) if days <= 7.0 else None
    weeks = max(1, math.ceil(days / 7.0 - 1e-9))
    start = w.start_week
    if w.scheduled:
        start, end = w.window(fleet.horizon_weeks)
    if start + weeks > end:
        return None
    return tuple(range(start, start + weeks))


def start_weeks(fleet: FleetScenario, w: FleetWorkload, weeks: tuple[int, ...]) -> tuple[int, ...]:
    """Start weeks a plan of `len(weeks)` weeks may take: its window's, or its fixed start."""
    if not w.scheduled:
        return (weeks[0],)
    lo, hi = w.window(fleet.horizon_weeks)
    return tuple(range(lo, hi - len(weeks) + 1))


def plan_options(fleet: FleetScenario, w: FleetWorkload, gpus: list[str], assumptions: Assumptions) -> list[tuple[TrainingEvaluation | InferenceEvaluation, tuple[int, ...]]]:
    """A workload's plans that meet its own targets, keeping per GPU type only those not beaten on (GPUs, weeks, GPU-hours)."""
    scenario = workload_scenario(fleet, w, gpus)
    model = resolve_model(w.workload.model)
    space = build_space(scenario, model, assumptions)
    options: dict[tuple[str, int, int], tuple[float, TrainingEvaluation | InferenceEvaluation, tuple[int, ...]]] = {}
    for e in space.rows:
        if isinstance(e, InferenceEvaluation):
            assert isinstance(w.workload, InferenceWorkload)
            slo = w.workload.slo
            if (slo.ttft_s and e.perf.ttft_s > slo.ttft_s) or (slo.tpot_s and e.perf.tpot_s > slo.tpot_s):
                continue
            e = with_replicas(e, min_replicas(w.workload, e))
        weeks = active_weeks(fleet, w, e)
        if weeks is None or (w.search.max_gpus is not None and e.layout.num_gpus > w.search.max_gpus):
            continue
        hours = run_hours(w, e, weeks)
        key = (e.layout.gpu, e.layout.num_gpus, len(weeks))
        if key not in options or hours < options[key][0]:
            options[key] = (hours, e, weeks)
    kept = []
    for (gpu, n, nweeks), (hours, e, weeks) in sorted(options.items()):
        beaten = any(g2 == gpu and n2 <= n and w2 <= nweeks and h2 <= hours and (n2, w2, h2) != (n, nweeks, hours)
                     for (g2, n2, w2), (h2, _, _) in options.items())
        if not beaten:
            kept.append((e, weeks))
    return kept


def run_hours(w: FleetWorkload, e: TrainingEvaluation | InferenceEvaluation, weeks: tuple[int, ...]) -> float:
    """Hours the plan's GPUs actually run: time to train (per repeat), or active weeks x duty cycle."""
    if isinstance(e, TrainingEvaluation):
        return e.perf.time_to_train_s / 3600.0 * (len(weeks) if w.repeat_weekly else 1)
    return len(weeks) * HOURS_PER_WEEK * w.duty_cycle


def spot_weeks(fleet: FleetScenario, w: FleetWorkload, e: TrainingEvaluation | InferenceEvaluation, weeks: tuple[int, ...],
               hours: float, quote: PriceQuote, assumptions: Assumptions) -> tuple[tuple[int, ...] | None, float]:
    """Weeks and run hours of a rented training run on spot: its time grows by the expected restarts (cost.spot_risk,
    Young/Daly); None when the longer run misses its deadline, its week or its window. Unchanged off spot and for serving."""
    if quote.term is not PriceTerm.SPOT or quote.interruptions_per_instance_hour <= 0 or not isinstance(e, TrainingEvaluation):
        return weeks, hours
    risk = spot_risk(e.perf.time_to_train_s, int(instances_needed(e.layout.num_gpus, quote.gpus_per_instance)), quote, assumptions)
    if not math.isfinite(risk.expected_time_s):
        return None, hours
    factor = risk.expected_time_s / e.perf.time_to_train_s
    days = risk.expected_time_s / 86400.0
    if w.deadline_days is not None and days > w.deadline_days:
        return None, hours
    if w.repeat_weekly:
        return (weeks, hours * factor) if days <= 7.0 else (None, hours)
    count = max(1, math.ceil(days / 7.0 - 1e-9))
    end = w.window(fleet.horizon_weeks)[1] if w.scheduled else (w.end_week or fleet.horizon_weeks)
    if weeks[0] + count > end:
        return None, hours
    return tuple(range(weeks[0], weeks[0] + count)), hours * factor


def build_candidates(fleet: FleetScenario, assumptions: Assumptions) -> list[FleetCandidate]:
    """Every (workload, plan, source) pair with its own cost."""
    gpus = fleet_gpus(fleet)
    offers = {resolve_gpu(o.gpu).name: o for o in fleet.offers}
    onprem = {row.gpu: row for row in load_onprem()}
    owned = {resolve_gpu(g).name: n for g, n in fleet.owned.items()}
    out: list[FleetCandidate] = []
    for w in fleet.workloads:
        options = plan_options(fleet, w, gpus, assumptions)
        if not options:
            raise InfeasibleError(f"{fleet.name}: workload {w.name} has no plan that fits in memory and meets its own targets "
                                  f"(deadline, SLOs, weeks, max_gpus) on {', '.join(gpus)}.")
        before = len(out)
        for e, weeks in options:
            g = e.layout.gpu
            hours = run_hours(w, e, weeks)
            n = e.layout.num_gpus
            pool_ok = owned.get(g, 0) > 0 or (g in offers and offers[g].buy)
            if pool_ok and g in onprem:
                power = n * hours * power_usd_per_gpu_hour(onprem[g].watts_per_gpu_at_wall, assumptions)
                out.append(FleetCandidate(workload=w.name, gpu=g, source="pool", num_gpus=n, weeks=weeks,
                                          starts=start_weeks(fleet, w, weeks), cost_usd=power, evaluation=e))
            offer = offers.get(g)
            if offer is not None and offer.rent_term is not None:
                quote = price_quote(g, Pricing(term=offer.rent_term, provider=offer.rent_provider), assumptions)
                if quote is not None:
                    unit = e.layout.gpus_per_replica if isinstance(e, InferenceEvaluation) else n
                    quote = offer_for(quote, unit, min(unit, resolve_gpu(g).gpus_per_node))
                    paid = rented_gpus(unit, quote.gpus_per_instance) * (e.layout.replicas if isinstance(e, InferenceEvaluation) else 1)
                    rent_weeks, rent_hours = spot_weeks(fleet, w, e, weeks, hours, quote, assumptions)
                    if rent_weeks is None:
                        continue
                    billed = len(rent_weeks) * HOURS_PER_WEEK if offer.rent_term in (PriceTerm.RESERVED_1Y, PriceTerm.RESERVED_3Y) else rent_hours
                    out.append(FleetCandidate(workload=w.name, gpu=g, source="rent", num_gpus=paid, weeks=rent_weeks,
                                              starts=start_weeks(fleet, w, rent_weeks), cost_usd=paid * billed * quote.usd_per_gpu_hour, evaluation=e))
        if len(out) == before:
            on = sorted({e.layout.gpu for e, _ in options})
            raise InfeasibleError(f"{fleet.name}: workload {w.name} fits only on {', '.join(on)}, which the fleet neither owns, "
                                  f"buys (with an on-prem catalog row) nor rents (with a catalog price for the offer's term).")
    return out


def amortised_capex_per_gpu(fleet: FleetScenario, gpu: str, assumptions: Assumptions) -> float | None:
    """Horizon cost of one bought GPU: capex x horizon / life (straight-line; past the life it buys replacements) plus its
    hosting (kW x $/kW-month) for the horizon, paid whether it runs or not."""
    for row in load_onprem():
        if row.gpu == gpu:
            per_hour = capex_usd_per_gpu_hour(row.capex_usd_per_gpu, row.expected_life_years) + hosting_usd_per_gpu_hour(row.watts_per_gpu_at_wall, assumptions)
            return per_hour * fleet.horizon_weeks * HOURS_PER_WEEK
    return None


# ---- CP-SAT model ----------------------------------------------------------------------------


def solve_fleet(fleet: FleetScenario, time_limit_s: float = 30.0) -> FleetPlan:
    """The cheapest fleet, assignment and schedule (raises InfeasibleError naming the conflicting limits)."""
    assumptions = Assumptions.with_overrides(fleet.assumptions)
    cands = build_candidates(fleet, assumptions)
    owned = {resolve_gpu(g).name: n for g, n in fleet.owned.items()}
    offers = {resolve_gpu(o.gpu).name: o for o in fleet.offers}
    model = cp_model.CpModel()
    z = [model.new_bool_var(f"z{i}") for i in range(len(cands))]
    limits: dict[str, cp_model.IntVar] = {}

    def limit(key: str) -> cp_model.IntVar:
        if key not in limits:
            literal = model.new_bool_var(key)
            model.add_assumption(literal)
            limits[key] = literal
        return limits[key]

    # Each workload runs exactly one plan on one source.
    for w in fleet.workloads:
        model.add_exactly_one(z[i] for i, c in enumerate(cands) if c.workload == w.name)

    # When each candidate runs: an optional interval [start, start + weeks), present iff chosen.
    starts, intervals = add_schedule(model, cands, z)

    # Whole nodes bought per GPU type, within the vendors' availability.
    bought_nodes: dict[str, cp_model.IntVar] = {}
    for g in fleet_gpus(fleet):
        offer = offers.get(g)
        node = resolve_gpu(g).gpus_per_node
        pool_gpus = sum(c.num_gpus for c in cands if c.gpu == g and c.source == "pool")  # never useful to buy more
        bought_nodes[g] = model.new_int_var(0, -(-pool_gpus // node), f"b_{g}")
        if offer is not None and offer.buy and offer.max_buy_gpus is not None:
            model.add(bought_nodes[g] <= offer.max_buy_gpus // node).only_enforce_if(limit(f"max_buy:{g}"))
        elif not (offer and offer.buy):
            model.add(bought_nodes[g] == 0)

    add_pool_capacity(model, fleet, cands, z, intervals, bought_nodes, owned, offers, limit)
    add_rent_caps(model, cands, z, intervals, offers, limit)
    add_weekly_load(model, fleet, cands, z, bought_nodes, owned, offers, limit)

    capex = {g: amortised_capex_per_gpu(fleet, g, assumptions) or 0.0 for g in fleet_gpus(fleet)}
    purchase = sum(scaled(capex[g] * resolve_gpu(g).gpus_per_node, "usd") * bought_nodes[g] for g in bought_nodes)
    running = sum(scaled(c.cost_usd, "usd") * z[i] for i, c in enumerate(cands))
    total = purchase + running
    if fleet.budget_usd is not None:
        model.add(total <= scaled(fleet.budget_usd, "usd", "limit")).only_enforce_if(limit("budget"))
    # Ties: among fleets of the same cost, fewer bought nodes, then the earliest candidates, then the earliest starts.
    late = sum(starts)
    span = fleet.horizon_weeks * len(cands) + 1
    tiebreak = (sum(bought_nodes.values()) * (len(cands) * len(cands) + 1) + sum(i * zi for i, zi in enumerate(z))) * span + late
    result = solve_lexicographic(model, total, False, tiebreak, z, time_limit_s)
    if result.status == cp_model.INFEASIBLE:
        core = {lit.index for lit in limits.values()} & set(result.first.sufficient_assumptions_for_infeasibility())
        names = sorted(k for k, lit in limits.items() if lit.index in core)
        raise InfeasibleError(f"{fleet.name}: no fleet meets every workload; conflicting limits: {', '.join(names) or 'none (capacity)'}."
                              + (f" The cheapest fleet without the budget costs more than {fleet.budget_usd:,.0f} USD." if "budget" in names else ""))
    if result.status == cp_model.MODEL_INVALID:
        raise InputError(f"{fleet.name}: the numbers are too large for the solver's integers; check budgets, tokens and horizons.")
    if not result.found:
        raise InfeasibleError(f"{fleet.name}: CP-SAT found no fleet within {time_limit_s:g} s; raise --time-limit.")
    return _fleet_plan(fleet, cands, z, starts, bought_nodes, capex, result.solver, result.proved, assumptions, result.wall_time_s)


def add_schedule(model: cp_model.CpModel, cands: list[FleetCandidate], z: list) -> tuple[list, list]:
    """Start week (constant or IntVar over the window) and optional interval of every candidate."""
    starts, intervals = [], []
    for i, c in enumerate(cands):
        options = c.start_options
        start = options[0] if len(options) == 1 else model.new_int_var_from_domain(cp_model.Domain.from_values(options), f"t{i}")
        starts.append(start)
        intervals.append(model.new_optional_fixed_size_interval_var(start, len(c.weeks), z[i], f"run{i}"))
    return starts, intervals


def add_pool_capacity(model: cp_model.CpModel, fleet: FleetScenario, cands: list[FleetCandidate], z: list, intervals: list,
                      bought_nodes: dict, owned: dict[str, int], offers: dict[str, GpuOffer], limit: Any) -> None:
    """Cumulative per GPU pool: runs on the pool hold at most owned + bought GPUs at once; bought ones only after the lead time."""
    for g in fleet_gpus(fleet):
        members = [i for i, c in enumerate(cands) if c.gpu == g and c.source == "pool"]
        if not members:
            continue
        node = resolve_gpu(g).gpus_per_node
        big = sum(cands[i].num_gpus for i in members)
        buyable = g in offers and offers[g].buy
        ivs, demands = [intervals[i] for i in members], [cands[i].num_gpus for i in members]
        if not buyable:
            relax = limit(f"owned:{g}")
            model.add_cumulative(ivs, demands, owned.get(g, 0) + big - big * relax)
            continue
        lead = offers[g].lead_time_weeks
        if lead > 0:  # bought nodes arrive after the lead time: a fixed interval [0, lead) holds them until then
            held = model.new_int_var(0, node * -(-big // node), f"lead_{g}")
            model.add(held == node * bought_nodes[g]).only_enforce_if(limit(f"lead_time:{g}"))
            ivs.append(model.new_fixed_size_interval_var(0, min(lead, fleet.horizon_weeks), f"arrival_{g}"))
            demands.append(held)
        model.add_cumulative(ivs, demands, owned.get(g, 0) + node * bought_nodes[g])


def add_weekly_load(model: cp_model.CpModel, fleet: FleetScenario, cands: list[FleetCandidate], z: list,
                    bought_nodes: dict, owned: dict[str, int], offers: dict[str, GpuOffer], limit: Any) -> None:
    """The capacities week by week over the fixed-start candidates: redundant with the cumulatives, a tight linear relaxation.

    A candidate with a choice of start weeks counts only in the weeks every start covers (its
    compulsory part, [last start, first start + duration)); leaving the rest to the cumulatives
    keeps each weekly row a valid relaxation. The weekly rows carry the same assumption literals.
    """
    active: list[dict[int, list]] = []
    for i, c in enumerate(cands):
        first, last = min(c.start_options), max(c.start_options)
        active.append({t: [z[i]] for t in range(last, first + len(c.weeks))})
    for g in fleet_gpus(fleet):
        node = resolve_gpu(g).gpus_per_node
        offer = offers.get(g)
        buyable = offer is not None and offer.buy
        lead = offer.lead_time_weeks if offer is not None else 0
        for t in range(fleet.horizon_weeks):
            pool = [c.num_gpus * x for i, c in enumerate(cands) if c.gpu == g and c.source == "pool" for x in active[i].get(t, ())]
            if pool and not buyable:
                model.add(sum(pool) <= owned.get(g, 0)).only_enforce_if(limit(f"owned:{g}"))
            elif pool:
                model.add(sum(pool) <= owned.get(g, 0) + node * bought_nodes[g])
                if t < lead:
                    model.add(sum(pool) <= owned.get(g, 0)).only_enforce_if(limit(f"lead_time:{g}"))
            rented = [c.num_gpus * x for i, c in enumerate(cands) if c.gpu == g and c.source == "rent" for x in active[i].get(t, ())]
            if rented and offer is not None and offer.max_rent_gpus is not None:
                model.add(sum(rented) <= offer.max_rent_gpus).only_enforce_if(limit(f"max_rent:{g}"))


def add_rent_caps(model: cp_model.CpModel, cands: list[FleetCandidate], z: list, intervals: list, offers: dict[str, GpuOffer], limit: Any) -> None:
    """Cumulative per rented GPU type: at most max_rent_gpus rented at once."""
    for g, offer in offers.items():
        members = [i for i, c in enumerate(cands) if c.gpu == g and c.source == "rent"]
        if not members or offer.max_rent_gpus is None:
            continue
        big = sum(cands[i].num_gpus for i in members)
        relax = limit(f"max_rent:{g}")
        model.add_cumulative([intervals[i] for i in members], [cands[i].num_gpus for i in members], offer.max_rent_gpus + big - big * relax)


def _fleet_plan(fleet: FleetScenario, cands: list[FleetCandidate], z: list, starts: list, bought_nodes: dict, capex: dict[str, float],
                solver: cp_model.CpSolver, proved: bool, assumptions: Assumptions, solve_time_s: float) -> FleetPlan:
    chosen = [c.model_copy(update={"weeks": c.weeks_from(int(solver.value(starts[i])))}) for i, c in enumerate(cands) if solver.boolean_value(z[i])]
    assignments, verified = [], True
    for c in chosen:
        w = next(x for x in fleet.workloads if x.name == c.workload)
        scenario = workload_scenario(fleet, w, fleet_gpus(fleet))
        verify(scenario, resolve_model(w.workload.model), c.evaluation, assumptions)
        assignments.append(FleetAssignment(workload=c.workload, plan=layout_summary(c.evaluation), gpu=c.gpu, source=c.source,
                                           num_gpus=c.num_gpus, weeks=(c.weeks[0], c.weeks[-1] + 1), cost_usd=c.cost_usd))
    bought = {g: solver.value(v) * resolve_gpu(g).gpus_per_node for g, v in bought_nodes.items() if solver.value(v)}
    purchase = sum(capex[g] * n for g, n in bought.items())
    peak_rent: dict[str, int] = {}
    for t in range(fleet.horizon_weeks):
        for g in {c.gpu for c in chosen if c.source == "rent"}:
            peak_rent[g] = max(peak_rent.get(g, 0), sum(c.num_gpus for c in chosen if c.source == "rent" and c.gpu == g and t in c.weeks))
    total = purchase + sum(c.cost_usd for c in chosen)
    return FleetPlan(name=fleet.name, status="OPTIMAL" if proved else "FEASIBLE", total_cost_usd=total, purchase_cost_usd=purchase,
                     bought_gpus=bought, owned_gpus={resolve_gpu(g).name: n for g, n in fleet.owned.items()},
                     peak_rented_gpus=peak_rent, assignments=tuple(assignments), solve_time_s=solve_time_s,
                     candidates=len(cands), verified=verified)


# ---- explaining a fleet plan -----------------------------------------------------------------


def fleet_timeline(fleet: FleetScenario, plan: FleetPlan) -> tuple[list[str], list[list[str]]]:
    """Week-by-week table: each workload's GPUs and source, then per GPU type the pool (owned, bought usable, in use) and rented GPUs."""
    weeks = range(fleet.horizon_weeks)
    headers = ["", *(f"w{t}" for t in weeks)]
    rows = []
    for a in plan.assignments:
        rows.append([f"{a.workload}", *(f"{a.num_gpus} {a.gpu} {a.source}" if a.weeks[0] <= t < a.weeks[1] else "" for t in weeks)])
    offers = {resolve_gpu(o.gpu).name: o for o in fleet.offers}
    for g in sorted({a.gpu for a in plan.assignments} | set(plan.owned_gpus) | set(plan.bought_gpus)):
        owned, bought = plan.owned_gpus.get(g, 0), plan.bought_gpus.get(g, 0)
        lead = offers[g].lead_time_weeks if g in offers else 0
        used = [sum(a.num_gpus for a in plan.assignments if a.gpu == g and a.source == "pool" and a.weeks[0] <= t < a.weeks[1]) for t in weeks]
        rented = [sum(a.num_gpus for a in plan.assignments if a.gpu == g and a.source == "rent" and a.weeks[0] <= t < a.weeks[1]) for t in weeks]
        if owned or bought:
            rows.append([f"{g} pool: owned + bought usable", *(str(owned + (bought if t >= lead else 0)) for t in weeks)])
            rows.append([f"{g} pool: in use", *(str(u) for u in used)])
        if any(rented):
            rows.append([f"{g} rented", *(str(r) for r in rented)])
    return headers, rows


def purchase_reasons(fleet: FleetScenario, plan: FleetPlan) -> list[str]:
    """One sentence per buyable GPU type: why it was bought, or why not (the utilisation at which buying beats renting)."""
    assumptions = Assumptions.with_overrides(fleet.assumptions)
    onprem = {row.gpu: row for row in load_onprem()}
    hours = fleet.horizon_weeks * HOURS_PER_WEEK
    out = []
    for offer in fleet.offers:
        g = resolve_gpu(offer.gpu).name
        if not offer.buy:
            out.append(f"{g}: buying was not offered.")
            continue
        if g not in onprem:
            out.append(f"{g}: not bought, no on-prem purchase row in catalogs/onprem.csv.")
            continue
        node = resolve_gpu(g).gpus_per_node
        fixed = amortised_capex_per_gpu(fleet, g, assumptions) or 0.0
        power = power_usd_per_gpu_hour(onprem[g].watts_per_gpu_at_wall, assumptions)
        quote = price_quote(g, Pricing(term=offer.rent_term, provider=offer.rent_provider), assumptions) if offer.rent_term else None
        rent = offer_for(quote, node).usd_per_gpu_hour if quote else None
        usable_h = max(0, fleet.horizon_weeks - offer.lead_time_weeks) * HOURS_PER_WEEK
        ran = sum(a.num_gpus * (min(a.weeks[1], fleet.horizon_weeks) - max(a.weeks[0], offer.lead_time_weeks)) * HOURS_PER_WEEK
                  for a in plan.assignments if a.gpu == g and a.source == "pool" and a.weeks[1] > offer.lead_time_weeks)
        if rent is not None and rent > power:
            threshold = fixed / (rent - power)
            rule = (f"a bought {g} costs {fixed:,.0f} USD over the {fleet.horizon_weeks}-week horizon (capex share and hosting) plus "
                    f"{power:.3f} USD per hour of power, so it beats renting at {rent:.2f} USD/GPU-h only when it runs more than "
                    f"{threshold:,.0f} hours ({threshold / hours:.0%} of the horizon); the lead time of {offer.lead_time_weeks} weeks leaves "
                    f"{usable_h:,.0f} hours")
        elif rent is not None:
            rule = f"renting at {rent:.2f} USD/GPU-h costs less than the power of an owned {g} ({power:.3f} USD/h)"
        else:
            rule = f"{g} cannot be rented, so buying is the only way to add {g} beyond the owned ones"
        bought = plan.bought_gpus.get(g, 0)
        if bought:
            out.append(f"Bought {bought} {g} ({bought // node} servers of {node}), usable from week {offer.lead_time_weeks}: "
                       f"they run {ran / bought:,.0f} hours each on average; {rule}.")
        elif not any(a.gpu == g for a in plan.assignments):
            out.append(f"Did not buy {g}: no workload runs on {g} in the cheapest fleet (its plans cost more on {g} than on the "
                       f"GPUs chosen); {rule}.")
        else:
            out.append(f"Did not buy {g}: {rule}.")
    return out
