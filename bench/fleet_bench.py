"""Benchmark: fleet solve time, fixed start weeks and scheduled windows.

Every catalog GPU can be bought (whole nodes, 2-week lead time) or rented on demand; 16
A100-80GB are owned. Fixed fleets of 2, 5 and 10 workloads over 12 weeks, then the goal of
issue #14: 10 workloads over 26 weeks where every training run has a window (earliest start,
deadline) and CP-SAT chooses start weeks, plans and purchases together. Prints, per fleet, the
candidate-building time (the evaluator over each workload's layouts), the CP-SAT time and
status. Goal: the 10-workload, 26-week scheduled fleet proven OPTIMAL in < 30 s.
Run: `PYTHONPATH=. .venv/bin/python bench/fleet_bench.py`.
"""

from __future__ import annotations

import time

from planner.catalog import load_gpus
from planner.fleet import FleetScenario, build_candidates, solve_fleet
from planner.scenario import Assumptions

SERVING = ["deepseek-llm-7b", "llama-3.1-8b", "qwen2.5-7b", "mixtral-8x7b", "deepseek-llm-67b"]
TRAINING = ["deepseek-llm-7b", "llama-3.1-8b", "qwen2.5-7b"]


def workloads(count: int, horizon_weeks: int = 12, windows: bool = False) -> list[dict]:
    out = []
    for i in range(count):
        if i % 2 == 0:
            model = SERVING[(i // 2) % len(SERVING)]
            out.append({"name": f"serve-{i}", "start_week": i % 4,
                        "workload": {"kind": "inference", "model": model, "prompt_tokens": 1024, "output_tokens": 256,
                                     "target_output_tokens_per_s": 2000 + 1000 * i, "slo": {"tpot_s": 0.1}},
                        "search": {"tp": [1, 2, 4, 8], "weight_precisions": ["bf16", "fp8", "int4"], "kv_precisions": ["bf16", "fp8"],
                                   "batch_per_replica": [8, 32, 128]}})
        else:
            model = TRAINING[(i // 2) % len(TRAINING)]
            run = {"name": f"train-{i}", "deadline_days": 21, "start_week": i % 5,
                   "workload": {"kind": "training", "mode": "full_finetune", "model": model, "tokens": 2e9 * (1 + i % 3),
                                "seq_len": 4096, "global_batch_seqs": 256},
                   "search": {"train_precisions": ["bf16", "fp8"], "tp": [1, 2, 4, 8], "pp": [1], "zero_stages": [1, 3],
                              "checkpointing": [2], "micro_batches": [1]}}
            if windows:  # a window of 2/3 of the horizon, staggered
                earliest = (i * 2) % (horizon_weeks // 3)
                run.update({"earliest_start_week": earliest, "deadline_week": earliest + 2 * horizon_weeks // 3})
            out.append(run)
    return out


def fleet(count: int, horizon_weeks: int, windows: bool) -> FleetScenario:
    offers = [{"gpu": g.name, "buy": True, "rent_term": "on_demand", "lead_time_weeks": 2} for g in load_gpus()]
    return FleetScenario.model_validate({"name": f"bench-{count}-{horizon_weeks}w{'-window' if windows else ''}",
                                         "horizon_weeks": horizon_weeks, "owned": {"A100-80GB": 16}, "offers": offers,
                                         "workloads": workloads(count, horizon_weeks, windows)})


def main() -> None:
    print("| workloads | weeks | windows | status | total time s | CP-SAT s | candidates | start choices | TCO $ |")
    print("|---|---|---|---|---|---|---|---|---|")
    for count, weeks, windows in ((2, 12, False), (5, 12, False), (10, 12, False), (10, 26, True)):
        f = fleet(count, weeks, windows)
        started = time.perf_counter()
        plan = solve_fleet(f)
        total = time.perf_counter() - started
        choices = sum(len(c.start_options) for c in build_candidates(f, Assumptions.with_overrides(f.assumptions)))
        print(f"| {count} | {weeks} | {'yes' if windows else 'no'} | {plan.status} | {total:.2f} | {plan.solve_time_s:.3f} | "
              f"{plan.candidates} | {choices} | {plan.total_cost_usd:,.0f} |")


if __name__ == "__main__":
    main()
