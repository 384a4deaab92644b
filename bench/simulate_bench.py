"""Benchmark: the simulator replays >= 10,000 requests in < 10 s (issue #12), and the analytic model over many layouts.

Cases: Llama-3.1-70B fp8 on 2 x H100 (TP2) at 50% and 80% of its stable rate, 2,000-token
prompts and 300-token outputs; Llama-3.1-8B on one H100 at 80% with 500/200 tokens (many short
iterations); and `serving.steady_state` + `max_rate_rps` over 1,000 stacked layouts (the
evaluator's use). Prints wall time per case and the simulated vs analytic p50s.

Run: `PYTHONPATH=. .venv/bin/python bench/simulate_bench.py` (a benchmark, not a test).
"""

from __future__ import annotations

import time

import numpy as np

from planner import serving, simulate
from planner.catalog import resolve_gpu, resolve_model
from planner.layout import InferenceLayout
from planner.scenario import Assumptions

REQUESTS = 10_000
LIMIT_S = 10.0


def cost_of(model: str, gpu: str, tp: int) -> serving.IterationCost:
    g = resolve_gpu(gpu)
    layout = InferenceLayout(gpu=g.name, weight_precision="fp8", kv_precision="fp8", tp=tp, batch=1)
    return serving.iteration_cost(resolve_model(model), layout, g, Assumptions.with_overrides())


def main() -> None:
    ok = True
    for model, gpu, tp, prompt, output, load in (
        ("llama-3.1-70b", "H100-SXM", 2, 2000, 300, 0.5), ("llama-3.1-70b", "H100-SXM", 2, 2000, 300, 0.8),
        ("llama-3.1-8b", "H100-SXM", 1, 500, 200, 0.8),
    ):
        cost = cost_of(model, gpu, tp)
        rate = load * float(serving.max_rate_rps(cost, prompt, output))
        requests = simulate.poisson_requests(rate, REQUESTS, prompt, output, seed=0)
        start = time.perf_counter()
        result = simulate.simulate(cost, requests)
        wall = time.perf_counter() - start
        state = serving.steady_state(cost, rate, prompt, output)
        ok &= wall < LIMIT_S
        print(f"{model} {gpu} TP{tp} P={prompt} O={output} at {load:.0%} ({rate:.2f} req/s): {REQUESTS} requests, "
              f"{result.iterations} iterations in {wall:.2f} s | TTFT p50 sim {result.ttft_p50_s:.3f} model {float(state.ttft_p50_s):.3f} | "
              f"ITL p50 sim {result.itl_p50_s * 1e3:.1f} ms model {float(state.itl_p50_s) * 1e3:.1f} ms")
    costs = serving.stack_costs([cost_of("llama-3.1-70b", "H100-SXM", tp) for tp in (1, 2, 4, 8)])
    big = serving.IterationCost(**{k: np.tile(np.asarray(v, dtype=float) * np.ones(4), 250) for k, v in costs.__dict__.items()})
    start = time.perf_counter()
    top = serving.max_rate_rps(big, 2000.0, 300.0)
    state = serving.steady_state(big, 0.7 * top, 2000.0, 300.0)
    wall = time.perf_counter() - start
    print(f"analytic: max_rate_rps + steady_state over {top.size} layouts in {wall:.2f} s ({int(state.feasible.sum())} feasible)")
    print("PASS" if ok else f"FAIL: a replay took {LIMIT_S} s or more")


if __name__ == "__main__":
    main()
