"""The solver's serving plans under their load: the evaluator's figures are the load-aware model's, the replica
count meets the SLOs at their percentile, and the discrete-event simulator, replaying each plan with the same
per-iteration cost, confirms it."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest

from planner import serving, simulate
from planner.catalog import resolve_gpu, resolve_model
from planner.errors import InputError
from planner.evaluate import InferenceEvaluation
from planner.perf import serving_cost
from planner.scenario import Scenario, load_scenario, parse_scenario
from planner.solver import solve
from planner.space import node_size

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
SERVING = sorted(path.stem for path in SCENARIOS.glob("*.yaml") if path.read_text().count("kind: inference"))
"""Every bundled serving scenario (a new one is checked without editing this list)."""


def test_the_bundled_serving_scenarios_are_all_checked() -> None:
    assert set(SERVING) >= {"deepseek-67b-serving-h100", "deepseek-7b-consumer-gpu", "deepseek-v3-serving", "llama-3.1-70b-chat",
                            "llama-3.1-70b-long-prompt"}
    assert all(load_scenario(SCENARIOS / f"{name}.yaml").workload.kind == "inference" for name in SERVING)


def replay(scenario: Scenario, plan: InferenceEvaluation, requests: int, seed: int) -> tuple[simulate.SimResult, float]:
    """Simulate one replica of the plan at its share of the fleet's rate, with the evaluator's own iteration cost."""
    w = scenario.workload
    traffic = w.resolved_traffic()
    g = resolve_gpu(plan.layout.gpu)
    if plan.layout.disaggregated:  # one prefill and one decode replica at their shares of the rate (tests/test_serving_layouts.py)
        from planner.perf import serving_pool_costs

        lay = plan.layout
        pcost, dcost, move = serving_pool_costs(resolve_model(w.model), w, lay, g, scenario.resolved_assumptions(), node_size(scenario, g))
        rng = np.random.default_rng(seed)
        prompts, outputs = traffic.prompt.sample(requests, rng), traffic.output.sample(requests, rng)
        fleet = traffic.request_rate_rps / lay.replicas
        pre = simulate.poisson_requests(fleet / lay.prefill_replicas, requests, prompts, outputs, seed)
        dec = simulate.poisson_requests(fleet / lay.decode_replicas, requests, prompts, outputs, seed + 1)
        return simulate.simulate_disaggregated(pcost, dcost, pre, dec, move, tokens_per_step=traffic.tokens_per_step,
                                               verify_tokens=traffic.verify_tokens, prefix_hit_rate=traffic.prefix_cache_hit_rate), fleet / lay.decode_replicas
    cost = serving_cost(resolve_model(w.model), w, plan.layout, g, scenario.resolved_assumptions(), node_size(scenario, g))
    fleet = traffic.request_rate_rps or plan.perf.request_rate_rps * plan.perf.replicas_needed
    rate = fleet / plan.layout.replicas
    rng = np.random.default_rng(seed)
    arrivals = simulate.poisson_requests(rate, requests, traffic.prompt.sample(requests, rng), traffic.output.sample(requests, rng), seed)
    return simulate.simulate(cost, arrivals, tokens_per_step=traffic.tokens_per_step, verify_tokens=traffic.verify_tokens,
                             prefix_hit_rate=traffic.prefix_cache_hit_rate), rate


def meets_in_simulation(scenario: Scenario, sim: simulate.SimResult, slack: float = 0.0, ttft_slack: float | None = None) -> list[str]:
    """The scenario's SLOs that the simulated percentiles miss (by more than the slack: TPOT `slack`, TTFT `ttft_slack`)."""
    slo = scenario.workload.slo
    p = slo.percentile
    ttft_slack = slack if ttft_slack is None else ttft_slack
    misses = []
    if slo.ttft_s and getattr(sim, f"ttft_p{p}_s") > slo.ttft_s * (1 + ttft_slack):
        misses.append(f"TTFT p{p} {getattr(sim, f'ttft_p{p}_s'):.4g} s > {slo.ttft_s:.4g} s")
    if slo.tpot_s and getattr(sim, f"itl_p{p}_s") > slo.tpot_s * (1 + slack):
        misses.append(f"TPOT p{p} {getattr(sim, f'itl_p{p}_s'):.4g} s > {slo.tpot_s:.4g} s")
    return misses


@pytest.mark.parametrize("name", SERVING)
def test_bundled_serving_plan_is_consistent_and_meets_its_slos_in_simulation(name: str) -> None:
    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    plan = solve(scenario, time_limit_s=10.0, alternatives=False).evaluation
    assert isinstance(plan, InferenceEvaluation)
    perf = plan.perf
    tau = scenario.workload.resolved_traffic().tokens_per_step
    # throughput x ITL = sequences in flight (Little's law), from the plan's own reported figures
    assert perf.output_tokens_per_s * perf.itl_mean_s / tau == pytest.approx(perf.decode_seqs_in_flight, rel=0.01)
    assert plan.layout.replicas >= perf.replicas_needed >= 1
    assert perf.tpot_s <= (scenario.workload.slo.tpot_s or math.inf)
    sim, _ = replay(scenario, plan, REPLAY_REQUESTS, seed=0)
    assert sim.output_tokens_per_s * sim.itl_mean_s == pytest.approx(sim.decode_seqs_in_flight, rel=0.01)
    assert not meets_in_simulation(scenario, sim), name
    if perf.utilisation > 0.8:  # the 15% agreement is claimed up to 80% of the stable rate
        return
    assert perf.tpot_p50_s * tau == pytest.approx(sim.itl_p50_s, rel=0.15)
    traffic = scenario.workload.resolved_traffic()
    if traffic.request_rate_rps is not None:
        # a closed loop of N users (concurrency-stated) never queues more than N; the Poisson replay at its rate does,
        # so TTFT is compared for rate-stated loads only. Prompts of varying length: the iteration chain keeps only their
        # moments and is optimistic at p50 under load (README, "Prompts of varying length"): 30% there (RAG: -26%).
        varying = len(traffic.prompt.quadrature()[0]) > 1
        assert perf.ttft_p50_s == pytest.approx(sim.ttft_p50_s, rel=0.3 if varying else 0.15)


def test_the_chat_scenario_gets_enough_gpus_for_its_tpot() -> None:
    """Llama-3.1-70B, 2,000/300 tokens at 50 req/s, TPOT p90 <= 50 ms: the plan's per-token time under load holds it."""
    scenario = load_scenario(SCENARIOS / "llama-3.1-70b-chat.yaml")
    plan = solve(scenario, time_limit_s=10.0, alternatives=False).evaluation
    assert plan.perf.tpot_s <= 0.05
    assert plan.fleet_output_tokens_per_s == pytest.approx(50 * 300, rel=1e-6)
    assert plan.perf.decode_seqs_in_flight / plan.perf.output_tokens_per_s <= 0.05 * 1.001  # batch / throughput is the per-user token gap


MODELS = ["llama-3.1-8b", "llama-3.1-70b", "mixtral-8x7b"]
GPUS = ["H100-SXM", "H200", "A100-80GB", "MI300X"]


def random_scenario(rng: random.Random, i: int) -> dict:
    model = rng.choice(MODELS)
    prompt, output = rng.choice([256, 1000, 2000, 4000]), rng.choice([64, 200, 500])
    traffic = {"request_rate_rps": round(math.exp(rng.uniform(math.log(0.5), math.log(40))), 3),
               "prompt": {"fixed": prompt}, "output": {"fixed": output},
               "slo": {"percentile": rng.choice([50, 90])}}  # p99 ITL: the two-point mixture is coarse (README)
    if rng.random() < 0.8:
        traffic["slo"]["tpot_s"] = round(rng.uniform(0.015, 0.12), 4)
    if rng.random() < 0.6:
        traffic["slo"]["ttft_s"] = round(rng.uniform(0.3, 3.0), 3)
    return {"name": f"random-serving-{i}", "workload": {"kind": "inference", "model": model, "traffic": traffic},
            "search": {"gpus": [rng.choice(GPUS)], "weight_precisions": ["bf16", "fp8"], "kv_precisions": ["bf16"], "pp": [1],
                       "tp": [1, 2, 4, 8], "disaggregated": [False], "attention_dp": [1]},  # colocated TP replicas: the load model
            # under test here; disaggregated pools and DP attention are replayed in tests/test_serving_layouts.py
            "objective": rng.choice(["min_cost", "min_gpus"])}


REPLAY_REQUESTS = 20_000
"""Requests replayed per plan: enough that the simulated p90 of a replica at up to 80% load is not sampling noise (with
600 requests the p90 inter-token latency of a small batch moves by ~15% between seeds, with 3,000 the p90 TTFT of a
busy replica by ~10%: random-serving-45, 1.13 s with 3,000 requests, 1.02 s with 20,000 for two seeds, model 1.02 s)."""


def _over(scenario: Scenario, sim: simulate.SimResult, key: str) -> float:
    """Simulated percentile over the SLO, minus 1 (negative: met with room); -1 without that SLO."""
    slo = scenario.workload.slo
    limit = slo.ttft_s if key == "ttft" else slo.tpot_s
    if not limit:
        return -1.0
    return getattr(sim, f"{'ttft' if key == 'ttft' else 'itl'}_p{slo.percentile}_s") / limit - 1.0


def test_plans_of_30_random_serving_scenarios_meet_their_slos_in_simulation() -> None:
    rng = random.Random(1212)
    checked, report = 0, []
    missed: list[str] = []
    worst_ttft = worst_tpot = -1.0
    ttft_err, itl_err = [], []
    for i in range(80):
        scenario = parse_scenario(random_scenario(rng, i))
        try:
            plan = solve(scenario, time_limit_s=5.0, alternatives=False).evaluation
        except InputError:
            continue  # no plan meets the SLOs (explained elsewhere)
        if plan.perf.utilisation > 0.8:
            continue
        sim, _ = replay(scenario, plan, REPLAY_REQUESTS, seed=i)
        misses = meets_in_simulation(scenario, sim)
        line = (f"{scenario.name} {plan.layout.gpu} tp{plan.layout.tp} b{plan.layout.batch} x{plan.layout.replicas} "
                f"u={plan.perf.utilisation:.2f}: TTFT p50 {plan.perf.ttft_p50_s:.4g}/{sim.ttft_p50_s:.4g} "
                f"TPOT p50 {plan.perf.tpot_p50_s:.4g}/{sim.itl_p50_s:.4g} {misses or 'ok'}")
        report.append(line)
        if misses:
            missed.append(line)
        ttft_err.append(plan.perf.ttft_p50_s / sim.ttft_p50_s - 1)
        itl_err.append(plan.perf.tpot_p50_s / sim.itl_p50_s - 1)
        worst_ttft = max(worst_ttft, _over(scenario, sim, "ttft"))
        worst_tpot = max(worst_tpot, _over(scenario, sim, "tpot"))
        checked += 1
        if checked >= 30:
            break
    assert checked >= 30, "\n".join(report)
    text = "\n".join(report)
    print(f"\n[30 random serving plans] SLOs met in simulation: {checked - len(missed)}/{checked}; closest to the SLO: TTFT "
          f"{worst_ttft:+.1%}, TPOT {worst_tpot:+.1%}; p50 ITL error: worst {max(abs(e) for e in itl_err):.1%}; p50 TTFT error: "
          f"worst {max(abs(e) for e in ttft_err):.1%}, median {float(np.median(np.abs(ttft_err))):.1%}")
    assert not missed, text  # every plan meets its SLOs at their percentile in simulation, no slack
    assert max(abs(e) for e in itl_err) <= 0.15, text
    assert max(abs(e) for e in ttft_err) <= 0.15, text
    assert float(np.median(np.abs(ttft_err))) <= 0.05, text


def test_an_unreachable_tpot_is_explained_with_the_best_value_under_load() -> None:
    from planner.errors import InfeasibleError

    import yaml

    data = yaml.safe_load((SCENARIOS / "llama-3.1-70b-chat.yaml").read_text())
    data["workload"]["traffic"]["slo"]["tpot_s"] = 0.004
    with pytest.raises(InfeasibleError) as err:
        solve(parse_scenario(data), time_limit_s=5.0, alternatives=False)
    text = str(err.value)
    assert "TPOT p90 <= 4 ms: best reachable" in text, text
    best_ms = float(text.split("best reachable ")[1].split(" ms")[0].replace(",", ""))
    assert best_ms > 4.0


def test_short_form_slo_defaults_to_p90_and_the_load_is_stated_once() -> None:
    short = parse_scenario({"name": "s", "workload": {"kind": "inference", "model": "llama-3.1-8b", "prompt_tokens": 500, "output_tokens": 100,
                                                       "target_output_tokens_per_s": 1000, "slo": {"tpot_s": 0.05}}})
    traffic = short.workload.resolved_traffic()
    assert traffic.slo.percentile == 90 and traffic.request_rate_rps == pytest.approx(10.0)
    with pytest.raises(InputError, match="state the load once"):
        parse_scenario({"name": "s", "workload": {"kind": "inference", "model": "llama-3.1-8b", "target_output_tokens_per_s": 1000,
                                                  "traffic": {"request_rate_rps": 5, "prompt": {"fixed": 10}, "output": {"fixed": 10}}}})
    with pytest.raises(InputError, match="percentile"):
        parse_scenario({"name": "s", "workload": {"kind": "inference", "model": "llama-3.1-8b", "prompt_tokens": 5, "output_tokens": 5,
                                                  "concurrent_sequences": 4, "slo": {"tpot_s": 0.05, "percentile": 95}}})


def test_the_evaluator_pipelines_pp_serving_pp2_capacity_close_to_tp2() -> None:
    """PP2 replicas stream micro-batches through their stages (serving.iteration_time_s): the evaluator's stable rate of a
    PP2 layout is close to TP2's (not half, as serial stages would give)."""
    from planner.evaluate import evaluate_inference
    from planner.layout import InferenceLayout
    from planner.scenario import InferenceWorkload

    model, gpu = resolve_model("llama-3.1-70b"), resolve_gpu("H100-SXM")
    workload = InferenceWorkload(kind="inference", model=model.name, prompt_tokens=2000, output_tokens=300, target_output_tokens_per_s=300.0)
    a = load_scenario(SCENARIOS / "llama-3.1-70b-chat.yaml").resolved_assumptions()
    capacity = {}
    for tp, pp in ((2, 1), (1, 2)):
        layout = InferenceLayout(gpu=gpu.name, weight_precision="fp8", kv_precision="fp8", tp=tp, pp=pp, batch=256)
        perf = evaluate_inference(model, workload, layout, gpu, a, None).perf
        capacity[(tp, pp)] = perf.request_rate_rps / perf.utilisation
    assert capacity[(1, 2)] >= 0.85 * capacity[(2, 1)], capacity
    assert capacity[(1, 2)] <= 1.15 * capacity[(2, 1)], capacity
