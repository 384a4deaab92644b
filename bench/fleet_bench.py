"""Benchmark: fleet solve time for 2, 5 and 10 workloads over the full GPU catalog.

Every catalog GPU can be bought (whole nodes) or rented on demand; 16 A100-80GB are owned.
Prints, per fleet size, the candidate-building time (the evaluator over each workload's
layouts), the CP-SAT time and status. Run: `.venv/bin/python bench/fleet_bench.py`.
"""

from __future__ import annotations

import time

from planner.catalog import load_gpus
from planner.fleet import FleetScenario, solve_fleet

SERVING = ["deepseek-llm-7b", "llama-3.1-8b", "qwen2.5-7b", "mixtral-8x7b", "deepseek-llm-67b"]
TRAINING = ["deepseek-llm-7b", "llama-3.1-8b", "qwen2.5-7b"]


def workloads(count: int) -> list[dict]:
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
            out.append({"name": f"train-{i}", "deadline_days": 21, "start_week": i % 5,
                        "workload": {"kind": "training", "mode": "full_finetune", "model": model, "tokens": 2e9 * (1 + i % 3),
                                     "seq_len": 4096, "global_batch_seqs": 256},
                        "search": {"train_precisions": ["bf16", "fp8"], "tp": [1, 2, 4, 8], "pp": [1], "zero_stages": [1, 3],
                                   "checkpointing": [2], "micro_batches": [1]}})
    return out


def main() -> None:
    offers = [{"gpu": g.name, "buy": True, "rent_term": "on_demand", "lead_time_weeks": 2} for g in load_gpus()]
    print("| workloads | status | total time s | CP-SAT s | candidates | TCO $ |")
    print("|---|---|---|---|---|---|")
    for count in (2, 5, 10):
        fleet = FleetScenario.model_validate({"name": f"bench-{count}", "horizon_weeks": 12, "owned": {"A100-80GB": 16},
                                              "offers": offers, "workloads": workloads(count)})
        started = time.perf_counter()
        plan = solve_fleet(fleet)
        total = time.perf_counter() - started
        print(f"| {count} | {plan.status} | {total:.2f} | {plan.solve_time_s:.3f} | {plan.candidates} | {plan.total_cost_usd:,.0f} |")


if __name__ == "__main__":
    main()
