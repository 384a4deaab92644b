"""Benchmark: a 1,000-case study, serially and in a local process pool; prints cases/second.

The cases are cheap on purpose (Llama-3.1-8B served on L4s at 1,000 output tokens/s, bf16
weights and cache: a few tens of ms each), a grid of 100 prompt lengths x 10 output lengths,
so the figure measures the study machinery (process start, pickling, table building) as well
as the solver. It also checks that both runs give the same table (solve times aside).

`--study price` runs a 1,000-case price study instead: 100 price multipliers x 10 budgets on
the same workload, where every case can reuse one evaluated table.

Run: `.venv/bin/python bench/study_bench.py [--cases 1000] [--workers 2] [--study grid|price]` (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import os
import time

import pandas as pd

from planner.studies import parse_study, run_study

BASE = {
    "name": "llama-8b-l4-serving",
    "workload": {"kind": "inference", "model": "llama-3.1-8b", "prompt_tokens": 1024, "output_tokens": 256,
                 "target_output_tokens_per_s": 1000},
    "search": {"gpus": ["L4"], "weight_precisions": ["bf16"], "kv_precisions": ["bf16"]},
}


def bench_study(n_cases: int):
    """A grid of prompt lengths x 10 output lengths with `n_cases` cases (a multiple of 10)."""
    outputs = [64 * (i + 1) for i in range(10)]
    prompts = [128 + 64 * i for i in range(max(n_cases // len(outputs), 1))]
    return parse_study({"name": "study-bench", "base": BASE,
                        "axes": {"workload.prompt_tokens": prompts, "workload.output_tokens": outputs}})


def price_study(n_cases: int):
    """A price study: `n_cases / 10` price multipliers x 10 budgets on the same workload (one table to evaluate)."""
    multipliers = [round(0.5 + 0.01 * i, 2) for i in range(max(n_cases // 10, 1))]
    budgets = [2.0 + 0.5 * i for i in range(10)]
    return parse_study({"name": "price-bench", "base": BASE,
                        "axes": {"pricing.price_multiplier": multipliers, "constraints.budget_usd": budgets}})


def timed(label: str, study, workers: int) -> pd.DataFrame:
    started = time.perf_counter()
    df = run_study(study, workers=workers)
    elapsed = time.perf_counter() - started
    counts = df["status"].value_counts().to_dict()
    print(f"{label:<22} {len(df):>6} cases  {elapsed:8.2f} s  {len(df) / elapsed:8.1f} cases/s  "
          f"(mean case {df['solve_time_s'].mean() * 1000:.1f} ms; {', '.join(f'{k} {v}' for k, v in counts.items() if v)})")
    return df


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000, help="Cases in the grid (rounded down to a multiple of 10).")
    parser.add_argument("--workers", type=int, default=2, help="Processes of the parallel run.")
    parser.add_argument("--study", choices=("grid", "price"), default="grid",
                        help="grid: prompt x output lengths (a table per case); price: price multipliers x budgets (one shared table).")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} (2 cores, shared); study: {args.study}")
    study = bench_study(args.cases) if args.study == "grid" else price_study(args.cases)
    serial = timed("serial (workers=1)", study, 1)
    pool = timed(f"process pool ({args.workers})", study, args.workers)
    same = serial.drop(columns="solve_time_s").equals(pool.drop(columns="solve_time_s"))
    print(f"identical tables: {same}")


if __name__ == "__main__":
    main()
