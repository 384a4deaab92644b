"""Diagnostic: the smallest worst-case error the speed model's structure allows on the published runs, in sample.

planner.speed makes a run's step time linear in the efficiency parameters θ (`calibrate.design`:
step = A θ + c, c the unfitted terms at the shipped calibration). The smallest z such that some θ
with 1/e_max >= 1 and n_half, overhead >= 0 puts every run's step within measured / (1 ± z) is a
Chebyshev (minimax) fit, found here by bisection on z over linear feasibility problems (OR-Tools
GLOP). Every parameter is left free, even one that a single run touches, and every run is in the
fit: this is what the model's form can express, not what it predicts for a run it has not seen
(the k-fold figure printed below, the method of `planner calibrate` and tests/test_speed_calibration.py
over the same 198 rows; `planner calibrate` itself reports all 247 runs of any sequence length). When this
bound is well under the cross-validated worst error, the rows that miss held out are not beyond
the model's form; they are runs whose parameters no other run pins down.

Run: `.venv/bin/python bench/calibration_bound.py [--runs tests/data/training_runs_published.csv]` (a diagnostic, not a test).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from ortools.linear_solver import pywraplp

from planner import calibrate as cal

ROOT = Path(__file__).resolve().parent.parent
BISECTION_STEPS = 30


def fits_within(matrix: np.ndarray, fixed: np.ndarray, measured: np.ndarray, lower: np.ndarray, z: float) -> bool:
    """True when some θ >= lower puts every step A θ + c within measured / (1 + z) .. measured / (1 - z)."""
    solver = pywraplp.Solver.CreateSolver("GLOP")
    theta = [solver.NumVar(float(lo), solver.infinity(), f"t{j}") for j, lo in enumerate(lower)]
    for i, row in enumerate(matrix):
        step = sum(float(row[j]) * theta[j] for j in np.flatnonzero(row)) + float(fixed[i])
        solver.Add(step >= measured[i] / (1.0 + z))
        solver.Add(step <= measured[i] / (1.0 - z))
    return solver.Solve() == pywraplp.Solver.OPTIMAL


def minimax_worst(runs: list[cal.Run]) -> float:
    """Smallest worst |measured/predicted - 1| over the runs that one θ reaches (bisection)."""
    keys, matrix, fixed = cal.design(runs, cal.calibrated_catalog())
    measured = np.array([r.step_time_s for r in runs])
    lower = np.array([1.0 if k.endswith("#inv") else 0.0 for k in keys])
    lo, hi = 0.0, 0.95
    if not fits_within(matrix, fixed, measured, lower, hi):
        raise SystemExit(f"no θ keeps every run within {hi:.0%}: the bound is above what this bisection searches")
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if fits_within(matrix, fixed, measured, lower, mid) else (mid, hi)
    return hi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "tests" / "data" / "training_runs_published.csv")
    args = parser.parse_args()
    runs = [r for r in cal.read_runs(args.runs) if 2048 <= r.layout["seq_len"] <= 32768]
    bound = minimax_worst(runs)
    error = cal.cross_validate(runs, folds=5)
    print(f"{len(runs)} published runs with sequence 2K-32K")
    print(f"in sample, one θ for all runs (minimax): worst |error| {bound:.1%}")
    print(f"held out (5-fold CV, the shipped fit's method): median {np.median(np.abs(error)):.1%}, worst {np.max(np.abs(error)):.1%}")
    for i in np.argsort(-np.abs(error))[:4]:
        print(f"  {error[i]:+.1%} held out: {runs[i].id}")


if __name__ == "__main__":
    main()
