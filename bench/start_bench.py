"""Benchmark: one-configuration commands answer in <= 0.5 s wall (issue #11, "fast start"), and `planner solve` of
every bundled serving scenario in < 2 s (issue #12).

Runs each command as a user would (a fresh `planner` process, so imports count; bytecode cached
as Python does by default, after one warm-up run) several times and prints the median and worst
wall time: `planner memory` for a serving configuration (which runs the load-aware steady state
of one replica), for a training configuration, `planner validate` on a bundled scenario, and a
whole `planner solve` (table, CP-SAT, verification, alternatives, output) of each bundled
serving scenario.

Run: `.venv/bin/python bench/start_bench.py [--repeat N] [--no-solves]` (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

LIMIT_S = 0.5
SOLVE_LIMIT_S = 2.0
ROOT = Path(__file__).resolve().parent.parent
COMMANDS = (
    ("memory, serving", ["memory", "--model", "deepseek-llm-7b", "--gpu", "RTX-4090", "--weights", "int8", "--batch", "4"]),
    ("memory, serving MoE TP8", ["memory", "--model", "deepseek-v3", "--gpu", "H200", "--weights", "fp8", "--kv", "fp8", "--tp", "8",
                                 "--batch", "64"]),
    ("memory, training", ["memory", "--model", "deepseek-llm-67b", "--gpu", "H100", "--kind", "training", "--dp", "8", "--zero", "3"]),
    ("validate", ["validate", "scenarios/deepseek-67b-serving-h100.yaml"]),
)


def serving_scenarios() -> list[Path]:
    """Bundled scenarios whose workload is serving (kind: inference)."""
    import yaml

    return [p for p in sorted((ROOT / "scenarios").glob("*.yaml")) if yaml.safe_load(p.read_text())["workload"]["kind"] == "inference"]


def planner_executable() -> list[str]:
    """The installed console script next to this interpreter, else `python -m planner.cli`."""
    script = Path(sys.executable).with_name("planner")
    return [str(script)] if script.exists() else [sys.executable, "-m", "planner.cli"]


def user_environment() -> dict[str, str]:
    """This environment as a user's default Python has it: compiled bytecode cached (PYTHONDONTWRITEBYTECODE unset), so
    the first run writes it and the timed runs read it instead of compiling every module again."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall_s(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=user_environment())
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: a valid configuration that does not fit (memory) or has no plan
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=8, help="runs per command (the median is reported)")
    parser.add_argument("--no-solves", action="store_true", help="skip the serving solves")
    args = parser.parse_args()
    base = planner_executable()
    ok = True
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    runs = [(name, argv, LIMIT_S) for name, argv in COMMANDS]
    if not args.no_solves:
        runs += [(f"solve {path.stem}", ["solve", str(path.relative_to(ROOT))], SOLVE_LIMIT_S) for path in serving_scenarios()]
    for name, argv, limit in runs:
        wall_s(base + argv)  # warm-up: writes the bytecode cache, as any earlier run of the command would have
        times = [wall_s(base + argv) for _ in range(args.repeat)]
        median = statistics.median(times)
        ok &= median <= limit
        print(f"{name:36s} median {median:.3f} s, worst {max(times):.3f} s over {args.repeat} runs "
              f"({'ok' if median <= limit else 'OVER'} the {limit} s goal)")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
