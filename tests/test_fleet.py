"""Fleet planning: the example solves to OPTIMAL and verifies; joint beats separate; CP-SAT equals a brute-force oracle."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from planner.catalog import resolve_gpu
from planner.errors import InfeasibleError
from planner.fleet import FleetScenario, amortised_capex_per_gpu, build_candidates, load_fleet, solve_fleet
from planner.scenario import Assumptions

ROOT = Path(__file__).resolve().parent.parent


def _serving(name: str, tps: float, model: str = "llama-3.1-8b") -> dict:
    return {"name": name, "workload": {"kind": "inference", "model": model, "prompt_tokens": 512, "output_tokens": 256,
                                       "target_output_tokens_per_s": tps},
            "search": {"tp": [1, 2], "weight_precisions": ["bf16", "fp8"], "kv_precisions": ["bf16"]}}


def _training(name: str, tokens: float, deadline_days: float, start: int = 0) -> dict:
    return {"name": name, "deadline_days": deadline_days, "start_week": start,
            "workload": {"kind": "training", "mode": "full_finetune", "model": "deepseek-llm-7b", "tokens": tokens,
                         "seq_len": 2048, "global_batch_seqs": 64},
            "search": {"train_precisions": ["bf16"], "tp": [1, 2], "pp": [1], "zero_stages": [3], "checkpointing": [2],
                       "micro_batches": [1]}}


def test_example_fleet_is_optimal_and_verified() -> None:
    plan = solve_fleet(load_fleet(ROOT / "scenarios" / "fleets" / "team-fleet.yaml"))
    assert plan.status == "OPTIMAL"
    assert plan.verified
    assert {a.workload for a in plan.assignments} == {"chat-67b", "weekly-finetune-7b", "pretrain-70b"}
    assert plan.total_cost_usd == pytest.approx(plan.purchase_cost_usd + sum(a.cost_usd for a in plan.assignments))
    # The owned A100s never hold more than 64 GPUs in any week.
    for week in range(13):
        on_a100 = sum(a.num_gpus for a in plan.assignments if a.gpu == "A100-80GB" and a.source == "pool" and a.weeks[0] <= week < a.weeks[1])
        assert on_a100 <= 64


def test_joint_plan_cheaper_than_separate_whole_nodes() -> None:
    """Two services that each need 4 H100s: alone each buys a whole 8-GPU server, together they share one."""
    def fleet(workloads: list[dict]) -> FleetScenario:
        return FleetScenario.model_validate({"name": "nodes", "horizon_weeks": 4,
                                             "offers": [{"gpu": "H100-SXM", "buy": True, "rent_term": None}], "workloads": workloads})
    a, b = _serving("a", 40000), _serving("b", 40000)
    for w in (a, b):
        w["search"] = {"tp": [1], "weight_precisions": ["bf16"], "kv_precisions": ["bf16"]}
    separate = solve_fleet(fleet([a])).total_cost_usd + solve_fleet(fleet([b])).total_cost_usd
    joint = solve_fleet(fleet([a, b]))
    assert joint.bought_gpus == {"H100-SXM": 8}
    assert joint.total_cost_usd < 0.75 * separate


def oracle(fleet: FleetScenario) -> float | None:
    """Brute force: every combination of (plan, source) per workload; buy the fewest whole nodes that cover the pool."""
    assumptions = Assumptions.with_overrides(fleet.assumptions)
    cands = build_candidates(fleet, assumptions)
    per_workload = [[c for c in cands if c.workload == w.name] for w in fleet.workloads]
    offers = {resolve_gpu(o.gpu).name: o for o in fleet.offers}
    owned = {resolve_gpu(g).name: n for g, n in fleet.owned.items()}
    best = None
    for combo in itertools.product(*per_workload):
        cost = sum(c.cost_usd for c in combo)
        feasible = True
        for g in {c.gpu for c in combo if c.source == "pool"}:
            node = resolve_gpu(g).gpus_per_node
            lead = offers[g].lead_time_weeks if g in offers else 0
            need_nodes = 0
            for t in range(fleet.horizon_weeks):
                demand = sum(c.num_gpus for c in combo if c.gpu == g and c.source == "pool" and t in c.weeks)
                extra = max(0, demand - owned.get(g, 0))
                if extra and (t < lead or g not in offers or not offers[g].buy):
                    feasible = False
                need_nodes = max(need_nodes, math.ceil(extra / node))
            offer = offers.get(g)
            if offer is not None and offer.max_buy_gpus is not None and need_nodes * node > offer.max_buy_gpus:
                feasible = False
            cost += need_nodes * node * (amortised_capex_per_gpu(fleet, g, assumptions) or 0.0)
        if feasible and (fleet.budget_usd is None or cost <= fleet.budget_usd) and (best is None or cost < best):
            best = cost
    return best


SMALL_FLEETS = [
    {"name": "s1", "horizon_weeks": 4, "owned": {"A100-80GB": 8},
     "offers": [{"gpu": "H100-SXM", "buy": True, "rent_term": "on_demand", "lead_time_weeks": 1}],
     "workloads": [_serving("chat", 20000), _training("tune", 1e9, 7)]},
    {"name": "s2", "horizon_weeks": 3,
     "offers": [{"gpu": "H100-SXM", "buy": True, "rent_term": "on_demand", "max_buy_gpus": 8},
                {"gpu": "L40S", "buy": True, "rent_term": "on_demand"}],
     "workloads": [_serving("a", 30000), _serving("b", 10000), _training("c", 5e8, 5, start=1)]},
    {"name": "s3", "horizon_weeks": 2, "owned": {"H100-SXM": 4},
     "offers": [{"gpu": "H100-SXM", "buy": True, "rent_term": None}],
     "workloads": [_serving("a", 15000), _serving("b", 15000)]},
]


@pytest.mark.parametrize("data", SMALL_FLEETS, ids=lambda d: d["name"])
def test_fleet_equals_brute_force_oracle(data: dict) -> None:
    fleet = FleetScenario.model_validate(data)
    expected = oracle(fleet)
    assert expected is not None
    plan = solve_fleet(fleet)
    assert plan.status == "OPTIMAL"
    assert plan.total_cost_usd == pytest.approx(expected, abs=0.05 * len(fleet.workloads) + 0.01)


def test_budget_too_small_names_budget() -> None:
    fleet = FleetScenario.model_validate({**SMALL_FLEETS[0], "budget_usd": 10.0})
    with pytest.raises(InfeasibleError, match="budget"):
        solve_fleet(fleet)


def _write(tmp_path, data: dict):
    import yaml

    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_duplicate_workload_names_are_rejected(tmp_path) -> None:
    from planner.errors import InputError

    data = {**SMALL_FLEETS[2], "workloads": [_serving("a", 1000), _serving("a", 2000)]}
    with pytest.raises(InputError, match="unique"):
        load_fleet(_write(tmp_path, data))


def test_lead_time_and_unbuyable_owned_gpus_are_named() -> None:
    late = FleetScenario.model_validate({"name": "late", "horizon_weeks": 3,
                                         "offers": [{"gpu": "H100-SXM", "buy": True, "rent_term": None, "lead_time_weeks": 2}],
                                         "workloads": [_serving("a", 20000)]})
    with pytest.raises(InfeasibleError, match="lead_time:H100-SXM"):
        solve_fleet(late)
    owned_only = FleetScenario.model_validate({"name": "owned", "horizon_weeks": 2, "owned": {"H100-SXM": 1},
                                               "workloads": [_serving("a", 40000)]})
    with pytest.raises(InfeasibleError, match="owned:H100-SXM"):
        solve_fleet(owned_only)


def test_workload_max_gpus_is_respected() -> None:
    base = {"name": "cap", "horizon_weeks": 2, "offers": [{"gpu": "H100-SXM", "buy": False, "rent_term": "on_demand"}]}
    free = solve_fleet(FleetScenario.model_validate({**base, "workloads": [_serving("a", 40000)]}))
    capped_workload = {**_serving("a", 40000)}
    capped_workload["search"] = {**capped_workload["search"], "max_gpus": 1}
    with pytest.raises(InfeasibleError):
        solve_fleet(FleetScenario.model_validate({**base, "workloads": [capped_workload]}))
    assert free.assignments[0].num_gpus > 1
