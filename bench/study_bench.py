"""Benchmark: a 1,000-case study, serially and in a local process pool; prints cases/second.

The cases are cheap on purpose (Llama-3.1-8B served on L4s at 1,000 output tokens/s, bf16
weights and cache: a few tens of ms each), a grid of 100 prompt lengths x 10 output lengths,
so the figure measures the study machinery (process start, pickling, table building) as well
as the solver. It also checks that both runs give the same table (solve times aside).

`--study price` runs a 1,000-case price study instead: 100 price multipliers x 10 budgets on
the same workload, where every case can reuse one evaluated table.

The pool's workers are forked from this process, so by default (serial first) they start with
the tables and memos the serial run left; `--pool-first` times the pool first, both runs cold.
`--baseline REF` first runs this same script on git REF (checked out to a temporary worktree,
in a fresh process, removed afterwards) and prints the ratios of the two runs.

Run: `.venv/bin/python bench/study_bench.py [--cases 1000] [--workers 2] [--study grid|price] [--pool-first]
[--baseline REF]` (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def timed(label: str, study, workers: int, say=print) -> pd.DataFrame:
    started = time.perf_counter()
    df = run_study(study, workers=workers)
    elapsed = time.perf_counter() - started
    counts = df["status"].value_counts().to_dict()
    say(f"{label:<22} {len(df):>6} cases  {elapsed:8.2f} s  {len(df) / elapsed:8.1f} cases/s  "
          f"(mean case {df['solve_time_s'].mean() * 1000:.1f} ms; {', '.join(f'{k} {v}' for k, v in counts.items() if v)})")
    return df


def run_baseline(ref: str, argv: list[str]) -> str:
    """This script's output on git `ref` (a temporary worktree, a fresh process), echoed as it is returned."""
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="study-bench-baseline-") as folder:
        tree = Path(folder) / "tree"
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(tree), ref], check=True, capture_output=True)
        try:
            env = {**os.environ, "PYTHONPATH": str(tree)}
            out = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv], env=env, cwd=tree, check=True,
                                 capture_output=True, text=True).stdout
        finally:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)], check=True, capture_output=True)
    print(f"baseline {ref}:\n{out}this tree:")
    return out


def rates(output: str) -> dict[str, float]:
    """cases/s of each timed run in this script's output, by its label's first word (serial, process)."""
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+).*?([\d.]+) cases/s", output, re.M)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000, help="Cases in the grid (rounded down to a multiple of 10).")
    parser.add_argument("--workers", type=int, default=2, help="Processes of the parallel run.")
    parser.add_argument("--study", choices=("grid", "price"), default="grid",
                        help="grid: prompt x output lengths (a table per case); price: price multipliers x budgets (one shared table).")
    parser.add_argument("--pool-first", action="store_true", help="Time the process pool before the serial run (both cold).")
    parser.add_argument("--baseline", metavar="REF", help="Also run this script on git REF first and print the ratios.")
    args = parser.parse_args()
    before = run_baseline(args.baseline, [a for a in sys.argv[1:] if a not in ("--baseline", args.baseline)]) if args.baseline else None
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    say(f"load average at start: {os.getloadavg()[0]:.2f} (2 cores, shared); study: {args.study}")
    study = bench_study(args.cases) if args.study == "grid" else price_study(args.cases)
    runs = [("serial (workers=1)", 1), (f"process pool ({args.workers})", args.workers)]
    frames = {label: timed(label, study, workers, say) for label, workers in (runs[::-1] if args.pool_first else runs)}
    serial, pool = frames[runs[0][0]], frames[runs[1][0]]
    same = serial.drop(columns="solve_time_s").equals(pool.drop(columns="solve_time_s"))
    say(f"identical tables: {same}")
    if before is not None:
        old, new = rates(before), rates("\n".join(lines))
        print("ratio to baseline: " + ", ".join(f"{k} {new[k] / old[k]:.2f}x ({old[k]:.1f} -> {new[k]:.1f} cases/s)" for k in new if k in old))


if __name__ == "__main__":
    main()
