"""Fleets that schedule: workloads with a window, start weeks chosen by CP-SAT jointly with plans and purchases."""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path

import pytest
import yaml

from planner.catalog import resolve_gpu
from planner.fleet import FleetScenario, amortised_capex_per_gpu, build_candidates, solve_fleet
from planner.scenario import Assumptions

ROOT = Path(__file__).resolve().parent.parent
TEAM = ROOT / "scenarios" / "fleets" / "team-fleet.yaml"


def _training(name: str, tokens: float, window: tuple[int, int] | None = None, start: int = 0, max_gpus: int | None = None) -> dict:
    data = {"name": name, "start_week": start,
            "workload": {"kind": "training", "mode": "full_finetune", "model": "deepseek-llm-7b", "tokens": tokens,
                         "seq_len": 2048, "global_batch_seqs": 64},
            "search": {"train_precisions": ["bf16"], "tp": [1, 2], "pp": [1], "zero_stages": [3], "checkpointing": [2],
                       "micro_batches": [1]}}
    if window is not None:
        data["earliest_start_week"], data["deadline_week"] = window
    if max_gpus is not None:
        data["search"]["max_gpus"] = max_gpus
    return data


def _serving(name: str, tps: float) -> dict:
    return {"name": name, "workload": {"kind": "inference", "model": "llama-3.1-8b", "prompt_tokens": 512, "output_tokens": 256,
                                       "target_output_tokens_per_s": tps},
            "search": {"tp": [1, 2], "weight_precisions": ["bf16"], "kv_precisions": ["bf16"]}}


def schedule_oracle(fleet: FleetScenario) -> float | None:
    """Brute force over every (plan, source) per workload AND every start week in its window; fewest whole nodes bought."""
    assumptions = Assumptions.with_overrides(fleet.assumptions)
    cands = build_candidates(fleet, assumptions)
    choices = [[(c, s) for c in cands if c.workload == w.name for s in c.start_options] for w in fleet.workloads]
    offers = {resolve_gpu(o.gpu).name: o for o in fleet.offers}
    owned = {resolve_gpu(g).name: n for g, n in fleet.owned.items()}
    best = None
    for combo in itertools.product(*choices):
        runs = [(c, set(c.weeks_from(s))) for c, s in combo]
        cost = sum(c.cost_usd for c, _ in runs)
        feasible = True
        for g in {c.gpu for c, _ in runs}:
            for t in range(fleet.horizon_weeks):
                rented = sum(c.num_gpus for c, weeks in runs if c.gpu == g and c.source == "rent" and t in weeks)
                if g in offers and offers[g].max_rent_gpus is not None and rented > offers[g].max_rent_gpus:
                    feasible = False
        for g in {c.gpu for c, _ in runs if c.source == "pool"}:
            node = resolve_gpu(g).gpus_per_node
            lead = offers[g].lead_time_weeks if g in offers else 0
            need_nodes = 0
            for t in range(fleet.horizon_weeks):
                demand = sum(c.num_gpus for c, weeks in runs if c.gpu == g and c.source == "pool" and t in weeks)
                extra = max(0, demand - owned.get(g, 0))
                if extra and (t < lead or g not in offers or not offers[g].buy):
                    feasible = False
                need_nodes = max(need_nodes, math.ceil(extra / node))
            cost += need_nodes * node * (amortised_capex_per_gpu(fleet, g, assumptions) or 0.0)
        if feasible and (best is None or cost < best):
            best = cost
    return best


WINDOW_FLEETS = [
    # 8 owned H100s; a fixed run holds them from week 0; the second run waits for them (or rents)
    {"name": "w1", "horizon_weeks": 5, "owned": {"H100-SXM": 8},
     "offers": [{"gpu": "H100-SXM", "buy": False, "rent_term": "on_demand", "rent_provider": "Lambda"}],
     "workloads": [{**_training("first", 6e10, start=0, max_gpus=8), "deadline_days": 14},  # only the 8-GPU, 2-week plan
                   _training("second", 6e10, window=(0, 5), max_gpus=8)]},
    # two windowed runs share 8 owned A100s (8 GPUs for 2 weeks or 4 GPUs for 3 weeks each), or rent
    {"name": "w2", "horizon_weeks": 4, "owned": {"A100-80GB": 8},
     "offers": [{"gpu": "A100-80GB", "buy": False, "rent_term": "on_demand", "max_rent_gpus": 8}],
     "workloads": [_training("a", 2e10, window=(0, 4), max_gpus=8), _training("b", 2e10, window=(0, 4), max_gpus=8)]},
    # a fixed run and a windowed one on a pool with a 2-week lead time
    {"name": "w3", "horizon_weeks": 5, "owned": {"H100-SXM": 2},
     "offers": [{"gpu": "H100-SXM", "buy": True, "rent_term": "on_demand", "rent_provider": "Nebius", "lead_time_weeks": 2}],
     "workloads": [_training("fixed", 1e9, start=0), _training("flex", 4e9, window=(0, 5))]},
]


@pytest.mark.parametrize("data", WINDOW_FLEETS, ids=lambda d: d["name"])
def test_scheduled_fleet_equals_brute_force_over_start_weeks(data: dict) -> None:
    fleet = FleetScenario.model_validate(data)
    cands = build_candidates(fleet, Assumptions.with_overrides(fleet.assumptions))
    assert any(len(c.start_options) > 1 for c in cands), "the window gives the solver a choice of start"
    expected = schedule_oracle(fleet)
    assert expected is not None
    plan = solve_fleet(fleet)
    assert plan.status == "OPTIMAL" and plan.verified
    assert plan.total_cost_usd == pytest.approx(expected, abs=0.05 * len(fleet.workloads) + 0.01)
    for a in plan.assignments:  # every run inside its window
        w = next(x for x in fleet.workloads if x.name == a.workload)
        lo, hi = w.window(fleet.horizon_weeks)
        assert lo <= a.weeks[0] and a.weeks[1] <= hi


def test_second_run_waits_for_the_owned_gpus() -> None:
    """w1: the fixed run holds all 8 owned H100s; the windowed run starts when they are free instead of renting."""
    plan = solve_fleet(FleetScenario.model_validate(WINDOW_FLEETS[0]))
    first, second = (next(a for a in plan.assignments if a.workload == n) for n in ("first", "second"))
    assert first.source == second.source == "pool" and first.num_gpus == 8
    assert second.weeks[0] >= first.weeks[1]


def _team(window: bool = True, buy: bool = True) -> FleetScenario:
    data = yaml.safe_load(TEAM.read_text())
    data = copy.deepcopy(data)
    pretrain = next(w for w in data["workloads"] if w["name"] == "pretrain-70b")
    if not window:
        pretrain.pop("earliest_start_week"), pretrain.pop("deadline_week")
    for offer in data["offers"]:
        offer["buy"] = offer["buy"] and buy
    return FleetScenario.model_validate(data)


def test_bundled_fleet_with_a_window_buys_and_starts_after_the_lead_time() -> None:
    with_window = solve_fleet(_team())
    rent_only = solve_fleet(_team(buy=False))
    fixed_start = solve_fleet(_team(window=False))
    lead = next(o.lead_time_weeks for o in _team().offers if o.gpu == "H100-SXM")
    pretrain = next(a for a in with_window.assignments if a.workload == "pretrain-70b")
    assert with_window.bought_gpus.get("H100-SXM", 0) > 0
    assert pretrain.source == "pool" and pretrain.gpu == "H100-SXM" and pretrain.weeks[0] >= lead and pretrain.weeks[1] <= 13
    # buying with the lead time is cheaper than renting, and only the window lets the fleet use it
    assert with_window.total_cost_usd < 0.8 * rent_only.total_cost_usd
    assert fixed_start.bought_gpus == {} and fixed_start.total_cost_usd == pytest.approx(rent_only.total_cost_usd)


def test_a_window_too_short_for_the_lead_time_names_it() -> None:
    """Nothing owned, nothing rentable, a 2-week lead time and a run that must end by week 2: the lead time is the conflict."""
    from planner.errors import InfeasibleError

    fleet = FleetScenario.model_validate({
        "name": "late", "horizon_weeks": 4,
        "offers": [{"gpu": "H100-SXM", "buy": True, "rent_term": None, "lead_time_weeks": 2}],
        "workloads": [_training("tune", 1e9, window=(0, 2))]})
    with pytest.raises(InfeasibleError, match="lead_time:H100-SXM"):
        solve_fleet(fleet)
    # with the window reaching past the lead time, the run waits for the purchase
    later = FleetScenario.model_validate({**fleet.model_dump(mode="json"), "workloads": [_training("tune", 1e9, window=(0, 4))]})
    plan = solve_fleet(later)
    assert plan.bought_gpus == {"H100-SXM": 8} and plan.assignments[0].weeks[0] >= 2


def test_windows_are_validated() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="earliest_start_week < deadline_week"):
        FleetScenario.model_validate({"name": "bad", "horizon_weeks": 4, "offers": [{"gpu": "H100-SXM"}],
                                      "workloads": [_training("tune", 1e9, window=(3, 2))]})
    with pytest.raises(ValidationError, match="one-off training runs"):
        FleetScenario.model_validate({"name": "bad", "horizon_weeks": 4, "offers": [{"gpu": "H100-SXM"}],
                                      "workloads": [{**_serving("chat", 1000), "deadline_week": 3}]})


def test_spot_rentals_in_a_fleet_pay_and_last_the_restart_overhead() -> None:
    """A training run rented on spot: its hours (and so its rent) grow by the Young/Daly factor of cost.spot_expected_time_s."""
    from planner.cost import instances_needed, offer_for, price_quote, spot_expected_time_s
    from planner.scenario import Pricing

    risky = {"spot_interruptions_per_instance_hour": 0.01}
    data = {"name": "spot", "horizon_weeks": 6, "assumptions": risky,
            "offers": [{"gpu": "H100-SXM", "buy": False, "rent_term": "spot", "rent_provider": "Nebius"}],
            "workloads": [_training("tune", 2e10, window=(0, 6), max_gpus=16)]}
    fleet = FleetScenario.model_validate(data)
    assumptions = Assumptions.with_overrides(risky)
    cands = build_candidates(fleet, assumptions)
    assert cands
    for c in cands:
        e = c.evaluation
        quote = price_quote("H100-SXM", Pricing(term="spot", provider="Nebius"), assumptions)
        k = offer_for(quote, e.layout.num_gpus, min(e.layout.num_gpus, 8)).gpus_per_instance
        assert c.num_gpus == -(-e.layout.num_gpus // k) * k
        wall = spot_expected_time_s(e.perf.time_to_train_s, int(instances_needed(e.layout.num_gpus, k)), 0.01,
                                    assumptions.checkpoint_write_s, assumptions.restart_after_preemption_s)
        assert wall > e.perf.time_to_train_s
        assert c.cost_usd == pytest.approx(c.num_gpus * wall / 3600.0 * 1.25, rel=1e-9)
        assert len(c.weeks) == max(1, math.ceil(wall / 86400.0 / 7.0 - 1e-9))
    assert solve_fleet(fleet).status == "OPTIMAL"
