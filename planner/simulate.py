"""Discrete-event simulation of a continuous-batching engine with chunked prefill, to check `planner.serving`.

The scheduler follows vLLM's (V1 scheduler with chunked prefill; Sarathi-Serve, Agrawal et al.
2024, Sec. 4.2-4.3): each iteration first runs one step of every decoding sequence, then fills
the rest of the token budget with prompt chunks in arrival order; waiting requests are
admitted first-come-first-served while the replica has a free sequence slot and KV room for
prompt + output tokens (TensorRT-LLM's GUARANTEED_NO_EVICT capacity policy: no preemption).
A request's first token is sampled in the iteration that finishes its prompt; every later
iteration gives it `tokens_per_step` tokens. Iteration durations come from the same
`IterationCost` (`serving.iteration_time_scalar_s`). Arrivals are Poisson with a seed, or a
CSV trace (arrival_s, prompt_tokens, output_tokens).
"""

from __future__ import annotations

import csv
import heapq
import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from planner.errors import InputError
from planner.serving import IterationCost, iteration_time_scalar_s


@dataclass(frozen=True)
class Requests:
    """Arrival times (s, ascending), prompt and output tokens of each request."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray


def poisson_requests(rate_rps: float, count: int, prompt_tokens: np.ndarray | int, output_tokens: np.ndarray | int, seed: int = 0) -> Requests:
    """Poisson arrivals at `rate_rps` (exponential gaps, numpy PCG64 with `seed`)."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / rate_rps, size=count))
    prompt = np.broadcast_to(np.asarray(prompt_tokens, dtype=np.int64), (count,)).copy()
    output = np.broadcast_to(np.asarray(output_tokens, dtype=np.int64), (count,)).copy()
    return Requests(arrivals, prompt, output)


def trace_requests(path: Path) -> Requests:
    """A CSV trace with columns arrival_s, prompt_tokens, output_tokens (sorted by arrival)."""
    try:
        with Path(path).open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise InputError(f"trace: cannot read {path}: {error.strerror}") from None
    need = ("arrival_s", "prompt_tokens", "output_tokens")
    if not rows or any(col not in rows[0] for col in need):
        raise InputError(f"trace: {path} needs the columns {', '.join(need)}")
    try:
        data = np.array([[float(r[c]) for c in need] for r in rows])
    except ValueError:
        raise InputError(f"trace: {path} has a non-numeric value in {', '.join(need)}") from None
    if (data[:, 1:] < 1).any() or (data[:, 0] < 0).any():
        raise InputError(f"trace: {path}: arrival_s must be >= 0 and token counts >= 1")
    order = np.argsort(data[:, 0], kind="stable")
    data = data[order]
    return Requests(data[:, 0], data[:, 1].astype(np.int64), data[:, 2].astype(np.int64))


@dataclass(frozen=True)
class SimResult:
    """Latency percentiles and throughput measured after the warm-up requests."""

    requests: int
    ttft_mean_s: float
    ttft_p50_s: float
    ttft_p90_s: float
    ttft_p99_s: float
    itl_mean_s: float
    itl_p50_s: float
    itl_p90_s: float
    itl_p99_s: float
    e2e_p50_s: float
    e2e_p90_s: float
    e2e_p99_s: float
    output_tokens_per_s: float
    decode_seqs_in_flight: float
    """Time-averaged decoding sequences over the measurement window."""
    iterations: int
    rejected: int
    """Requests that can never fit the KV capacity (prompt + output above it)."""


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    if values.size == 0 or weights.sum() <= 0:
        return math.nan
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, q * cum[-1])])


def simulate(cost: IterationCost, requests: Requests, *, tokens_per_step: float = 1.0, verify_tokens: float = 1.0,
             prefix_hit_rate: float = 0.0, warmup_fraction: float = 0.1, pipelined: bool = True, progress: bool = False) -> SimResult:
    """Replay `requests` through the engine model; one IterationCost layout (floats)."""
    budget_total = float(cost.chunk_tokens)  # type: ignore[arg-type]
    kv_cap = float(cost.kv_capacity_tokens)  # type: ignore[arg-type]
    max_seqs = int(float(cost.max_sequences))  # type: ignore[arg-type]
    arrivals = requests.arrival_s.tolist()
    prompt_all = requests.prompt_tokens.tolist()
    output = requests.output_tokens.tolist()
    total = len(arrivals)
    cached = [int(p * prefix_hit_rate) for p in prompt_all]
    ttft = [math.nan] * total
    finish = [math.nan] * total

    warm = int(total * warmup_fraction)
    window_start = arrivals[warm] if total else 0.0
    window_end = arrivals[-1] if total else 0.0

    waiting: deque[int] = deque()
    prefilling: deque[list[float]] = deque()  # [request, remaining prompt tokens, done tokens]
    decode_start_offset: dict[int, float] = {}
    done_heap: list[tuple[int, int]] = []  # (iteration at which it finishes, request)
    ctx_offset = 0.0  # sum over decoding seqs of (context at start - start_iteration x tokens_per_step)
    n_decode = 0
    kv_used = 0.0
    running = 0
    now, iteration, next_arrival, completed, rejected = 0.0, 0, 0, 0, 0
    itl_t: list[float] = []
    itl_n: list[int] = []
    window_decode_time = 0.0
    window_tokens = 0.0
    window_covered = window_end - window_start

    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("simulating requests", total=total)
    try:
        while completed + rejected < total:
            while next_arrival < total and arrivals[next_arrival] <= now:
                waiting.append(next_arrival)
                next_arrival += 1
            while waiting:
                r = waiting[0]
                need = prompt_all[r] + output[r]
                if need > kv_cap:
                    waiting.popleft()
                    rejected += 1
                    continue
                if running >= max_seqs or kv_used + need > kv_cap:
                    break
                waiting.popleft()
                running += 1
                kv_used += need
                prefilling.append([r, float(max(1, prompt_all[r] - cached[r])), float(cached[r])])
            if n_decode == 0 and not prefilling:
                if next_arrival >= total:
                    break
                now = max(now, arrivals[next_arrival])
                continue
            decode_ctx = ctx_offset + n_decode * iteration * tokens_per_step
            left = budget_total - n_decode * verify_tokens
            chunk, chunk_ctx = 0.0, 0.0
            finished_prefill: list[int] = []
            for item in prefilling:
                if left <= 0:
                    break
                take = min(item[1], left)
                chunk += take
                chunk_ctx += take * (item[2] + take / 2.0)
                item[1] -= take
                item[2] += take
                left -= take
                if item[1] <= 0:
                    finished_prefill.append(int(item[0]))
            while prefilling and prefilling[0][1] <= 0:
                prefilling.popleft()
            if chunk == 0.0 and n_decode == 0:  # a budget smaller than one decode step: the engine still runs a chunk
                item = prefilling[0]
                take = min(item[1], max(1.0, budget_total))
                chunk, chunk_ctx = take, take * (item[2] + take / 2.0)
                item[1] -= take
                item[2] += take
                if item[1] <= 0:
                    finished_prefill.append(int(item[0]))
                    prefilling.popleft()
            t = iteration_time_scalar_s(cost, n_decode, decode_ctx, chunk, chunk_ctx, verify_tokens, pipelined)
            start = now
            now += t
            if n_decode:
                itl_t.append(t)
                itl_n.append(n_decode if window_start <= start < window_end else 0)
            if window_start <= start < window_end:
                window_decode_time += n_decode * t
                window_tokens += n_decode * tokens_per_step + len(finished_prefill)
            iteration += 1
            # sequences whose last decode step was this iteration
            while done_heap and done_heap[0][0] <= iteration:
                _, r = heapq.heappop(done_heap)
                finish[r] = now
                n_decode -= 1
                ctx_offset -= decode_start_offset[r]
                running -= 1
                kv_used -= prompt_all[r] + output[r]
                completed += 1
            for r in finished_prefill:
                ttft[r] = now - arrivals[r]
                steps = math.ceil((output[r] - 1) / tokens_per_step)
                if steps <= 0:
                    finish[r] = now
                    running -= 1
                    kv_used -= prompt_all[r] + output[r]
                    completed += 1
                    continue
                offset = prompt_all[r] + 1 - iteration * tokens_per_step
                decode_start_offset[r] = offset
                ctx_offset += offset
                n_decode += 1
                heapq.heappush(done_heap, (iteration + steps, r))
            if bar is not None and iteration % 2000 == 0:
                bar.update(task, completed=completed + rejected)
    finally:
        if bar is not None:
            bar.stop()

    ttft_a = np.array(ttft[warm:])
    e2e_a = np.array(finish[warm:]) - np.array(arrivals[warm:])
    ttft_a, e2e_a = ttft_a[np.isfinite(ttft_a)], e2e_a[np.isfinite(e2e_a)]
    values, weights = np.array(itl_t), np.array(itl_n, dtype=float)
    itl_mean = float((values * weights).sum() / weights.sum()) if weights.sum() > 0 else math.nan

    def q(a: np.ndarray, p: float) -> float:
        return float(np.quantile(a, p)) if a.size else math.nan

    return SimResult(
        requests=total, ttft_mean_s=float(ttft_a.mean()) if ttft_a.size else math.nan, ttft_p50_s=q(ttft_a, 0.5), ttft_p90_s=q(ttft_a, 0.9), ttft_p99_s=q(ttft_a, 0.99), itl_mean_s=itl_mean,
        itl_p50_s=_weighted_quantile(values, weights, 0.5), itl_p90_s=_weighted_quantile(values, weights, 0.9),
        itl_p99_s=_weighted_quantile(values, weights, 0.99), e2e_p50_s=q(e2e_a, 0.5), e2e_p90_s=q(e2e_a, 0.9), e2e_p99_s=q(e2e_a, 0.99),
        output_tokens_per_s=window_tokens / window_covered if window_covered > 0 else math.nan,
        decode_seqs_in_flight=window_decode_time / window_covered if window_covered > 0 else math.nan,
        iterations=iteration, rejected=rejected,
    )



def simulate_disaggregated(prefill_cost: IterationCost, decode_cost: IterationCost, prefill_requests: Requests, decode_requests: Requests,
                           kv_transfer_s: float, *, tokens_per_step: float = 1.0, verify_tokens: float = 1.0, prefix_hit_rate: float = 0.0,
                           warmup_fraction: float = 0.1, progress: bool = False) -> SimResult:
    """One prefill replica and one decode replica of a disaggregated plan (DistServe, Zhong et al. 2024, Sec. 3), each fed
    its share of the arrivals: the prefill replica runs prompts with one output token (its TTFT + the KV transfer is the
    request's TTFT), the decode replica runs the requests with their prompts' KV already present (prefix hit 1: one token
    to admit, then decode steps only). ITL, throughput and sequences in flight are the decode replica's; end-to-end
    latency adds the prefill replica's median TTFT and the transfer to the decode replica's."""
    ones = np.ones_like(prefill_requests.prompt_tokens)
    pre = simulate(prefill_cost, Requests(prefill_requests.arrival_s, prefill_requests.prompt_tokens, ones),
                   prefix_hit_rate=prefix_hit_rate, warmup_fraction=warmup_fraction, progress=progress)
    dec = simulate(decode_cost, decode_requests, tokens_per_step=tokens_per_step, verify_tokens=verify_tokens, prefix_hit_rate=1.0,
                   warmup_fraction=warmup_fraction, progress=progress)
    head = pre.ttft_p50_s + kv_transfer_s
    return SimResult(
        requests=pre.requests + dec.requests, ttft_mean_s=pre.ttft_mean_s + kv_transfer_s, ttft_p50_s=head,
        ttft_p90_s=pre.ttft_p90_s + kv_transfer_s, ttft_p99_s=pre.ttft_p99_s + kv_transfer_s, itl_mean_s=dec.itl_mean_s,
        itl_p50_s=dec.itl_p50_s, itl_p90_s=dec.itl_p90_s, itl_p99_s=dec.itl_p99_s, e2e_p50_s=dec.e2e_p50_s + head,
        e2e_p90_s=dec.e2e_p90_s + head, e2e_p99_s=dec.e2e_p99_s + head, output_tokens_per_s=dec.output_tokens_per_s,
        decode_seqs_in_flight=dec.decode_seqs_in_flight, iterations=pre.iterations + dec.iterations, rejected=pre.rejected + dec.rejected,
    )


def load_sweep(cost: IterationCost, prompt_tokens: int | np.ndarray, output_tokens: int | np.ndarray, rates_rps: np.ndarray, *,
               requests: int = 2000, seed: int = 0, **kwargs: float) -> list[tuple[float, SimResult]]:
    """Simulated results at several arrival rates (same seed each), for a latency-vs-load curve; lengths fixed or one per
    request (`poisson_requests`), `kwargs` as `simulate`'s."""
    return [(float(r), simulate(cost, poisson_requests(float(r), requests, prompt_tokens, output_tokens, seed), **kwargs))  # type: ignore[arg-type]
            for r in rates_rps]


def write_latency_chart(path: Path, cost: IterationCost, prompt_tokens: float, output_tokens: float, sweep: list[tuple[float, SimResult]],
                        title: str = "", **options: object) -> Path:
    """SVG of p50/p90 TTFT and ITL against arrival rate: analytic lines (`serving.steady_state` at the mean lengths with
    the traffic terms in `options`, `perf.steady_state_options`) and simulated points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from planner.serving import max_rate_rps, steady_state

    top = float(max_rate_rps(cost, prompt_tokens, output_tokens, **options))  # type: ignore[arg-type]
    grid = np.linspace(0.02, 0.98, 60) * top
    state = steady_state(cost, grid, prompt_tokens, output_tokens, **options)  # type: ignore[arg-type]
    fig, (ax_ttft, ax_itl) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in ((ax_ttft, "ttft", "TTFT (s)"), (ax_itl, "itl", "inter-token latency (s)")):
        for q, style in ((50, "-"), (90, "--")):
            ax.plot(grid, getattr(state, f"{metric}_p{q}_s"), style, color="C0", label=f"model p{q}")
            ax.plot([r for r, _ in sweep], [getattr(s, f"{metric}_p{q}_s") for _, s in sweep], "o" if q == 50 else "s",
                    color="C1", fillstyle="none" if q == 90 else "full", label=f"simulated p{q}")
        ax.axvline(top, color="grey", linewidth=0.8)
        ax.set_xlabel("arrival rate per replica (requests/s)")
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.suptitle(title or f"latency vs load (prompt {prompt_tokens}, output {output_tokens}); grey: max stable rate")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fig.savefig(tmp, format="svg")
    plt.close(fig)
    tmp.replace(path)
    return path
