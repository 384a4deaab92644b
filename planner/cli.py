"""Command line: `planner solve | simulate | memory | catalog | model show | validate | schema | calibrate`.

Every user error (`PlannerError`) becomes one line on stderr and exit code 2 (1 when the
scenario is valid but infeasible); no traceback reaches the user.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from planner.errors import PlannerError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="GPU capacity planner for LLMs: CP-SAT over cited memory, time and cost models.")
catalog_app = typer.Typer(no_args_is_help=True, help="Show the bundled catalogs.")
model_app = typer.Typer(no_args_is_help=True, help="Inspect a model.")
app.add_typer(catalog_app, name="catalog")
app.add_typer(model_app, name="model")

out = Console()
err = Console(stderr=True)


def guarded(fn: Callable[[], Any]) -> Any:
    """Run a command body; a PlannerError becomes one line and its exit code."""
    try:
        return fn()
    except PlannerError as error:
        err.print(str(error), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code=error.exit_code) from None


def gib(n_bytes: float) -> str:
    """Bytes as GiB with two decimals."""
    return f"{n_bytes / 2**30:,.2f}"


# ---- catalog ---------------------------------------------------------------------------------


@catalog_app.command("gpus")
def catalog_gpus() -> None:
    """GPUs: memory, bandwidth, dense throughput, links, power."""
    from planner.catalog import load_gpus

    table = Table(title="GPUs (catalogs/gpus.csv)")
    for col in ("name", "memory GiB", "HBM GB/s", "BF16 TFLOPS", "FP8 TFLOPS", "scale-up GB/s", "GPUs/node", "TDP W", "as_of"):
        table.add_column(col)
    for g in load_gpus():
        table.add_row(g.name, f"{g.memory_gib:g}", f"{g.hbm_bandwidth_gbps:g}", f"{g.bf16_dense_tflops or '-'}",
                      f"{g.fp8_dense_tflops or '-'}", f"{g.scaleup_link_gbps:g}", str(g.gpus_per_node), f"{g.tdp_watts:g}", g.as_of)
    out.print(table)


@catalog_app.command("prices")
def catalog_prices(price_file: Optional[Path] = typer.Option(None, help="A price CSV with the catalog's columns.")) -> None:
    """Cloud prices per GPU-hour, with provider, term and date."""
    from planner.catalog import load_prices

    def body() -> None:
        rows = load_prices(price_file) if price_file else load_prices()
        table = Table(title=f"Prices ({price_file or 'catalogs/prices.csv'})")
        for col in ("gpu", "provider", "offering", "region", "term", "$/GPU-h", "as_of"):
            table.add_column(col)
        for r in rows:
            table.add_row(r.gpu, r.provider, r.offering, r.region, r.term.value, f"{r.usd_per_gpu_hour:.3f}", r.as_of)
        out.print(table)

    guarded(body)


@catalog_app.command("models")
def catalog_models() -> None:
    """Bundled model configs with computed and published parameter counts."""
    from planner.catalog import load_model_entries, resolve_model

    table = Table(title="Models (catalogs/models/)")
    for col in ("name", "layers", "hidden", "heads/kv", "experts", "total B", "published B", "active B"):
        table.add_column(col)
    for e in load_model_entries():
        m = resolve_model(e.name)
        experts = f"{m.n_routed_experts}+{m.n_shared_experts} top{m.experts_per_token}" if m.is_moe else "-"
        table.add_row(e.name, str(m.num_layers), str(m.hidden_size), f"{m.num_heads}/{m.num_kv_heads}", experts,
                      f"{m.total_params / 1e9:.2f}", f"{e.published_total_params_b:g}", f"{m.active_params / 1e9:.2f}")
    out.print(table)


@model_app.command("show")
def model_show(name_or_path: str = typer.Argument(..., help="Catalog model name or path to a config.json."),
               as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Shape and parameter counts of a model."""
    from planner.catalog import resolve_model
    from planner.memory import kv_cache_bytes_per_token
    from planner.enums import KvPrecision

    def body() -> None:
        m = resolve_model(name_or_path)
        facts = {
            "name": m.name, "total_params_b": m.total_params / 1e9, "active_params_b": m.active_params / 1e9,
            "layers": m.num_layers, "hidden_size": m.hidden_size, "heads": m.num_heads, "kv_heads": m.num_kv_heads,
            "vocab_size": m.vocab_size, "moe": m.is_moe, "routed_experts": m.n_routed_experts, "shared_experts": m.n_shared_experts,
            "experts_per_token": m.experts_per_token, "mla": m.is_mla, "kv_lora_rank": m.kv_lora_rank,
            "kv_cache_bytes_per_token_bf16": kv_cache_bytes_per_token(m, KvPrecision.BF16),
        }
        if as_json:
            out.print_json(json.dumps(facts))
            return
        table = Table(title=f"{m.name}", show_header=False)
        for key, value in facts.items():
            table.add_row(key, f"{value:,.3f}" if isinstance(value, float) else str(value))
        out.print(table)

    guarded(body)


# ---- scenario files ---------------------------------------------------------------------------


@app.command("validate")
def validate(files: list[Path] = typer.Argument(..., help="Scenario files (YAML or JSON).")) -> None:
    """Check scenario files against the schema and the catalogs."""
    from planner.scenario import load_scenario

    def body() -> None:
        for path in files:
            scenario = load_scenario(path)
            out.print(f"{path}: ok ({scenario.workload.kind}, {scenario.workload.model}, objective {scenario.objective.value})")

    guarded(body)


@app.command("schema")
def schema() -> None:
    """Print the scenario JSON Schema (for editor autocompletion)."""
    from planner.scenario import Scenario

    sys.stdout.write(json.dumps(Scenario.model_json_schema(), indent=2) + "\n")


# ---- solve ----------------------------------------------------------------------------------


@app.command("solve")
def solve_cmd(
    scenario_file: Path = typer.Argument(..., help="Scenario file (YAML or JSON)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    top: int = typer.Option(0, "--top", help="Show at most K alternatives (0 = one per GPU type)."),
    pareto: bool = typer.Option(False, "--pareto", help="Also compute the cost vs speed frontier."),
    time_limit: float = typer.Option(20.0, "--time-limit", help="CP-SAT time limit per solve, seconds."),
) -> None:
    """Find the optimal plan for a scenario and explain it."""
    from planner.render import print_plan
    from planner.scenario import load_scenario
    from planner.solver import solve

    def body() -> None:
        scenario = load_scenario(scenario_file)
        plan = solve(scenario, time_limit_s=time_limit, alternatives=True, pareto=pareto)
        if as_json:
            sys.stdout.write(plan.model_dump_json(indent=2) + "\n")
            return
        print_plan(out, plan, top=top)

    guarded(body)


@app.command("memory")
def memory_cmd(
    model: str = typer.Option(..., help="Catalog model name or config.json path."),
    gpu: str = typer.Option(..., help="GPU id."),
    kind: str = typer.Option("inference", help="training or inference."),
    weights: str = typer.Option("bf16", help="Serving weight precision: bf16, fp8, int8, int4."),
    kv: str = typer.Option("bf16", help="KV-cache precision: bf16, fp8, int4."),
    precision: str = typer.Option("bf16", help="Training precision: bf16, fp16, fp8, fp32."),
    optimizer: str = typer.Option("adamw", help="adamw, adamw_8bit, sgd_momentum."),
    mode: str = typer.Option("pretrain", help="pretrain, full_finetune, lora, qlora."),
    tp: int = typer.Option(1, help="Tensor-parallel degree."),
    pp: int = typer.Option(1, help="Pipeline-parallel degree."),
    dp: int = typer.Option(1, help="Data-parallel degree (training)."),
    ep: int = typer.Option(1, help="Expert-parallel degree (training, MoE)."),
    zero: int = typer.Option(0, help="ZeRO stage 0-3."),
    ckpt: str = typer.Option("full", help="none, selective, full."),
    micro_batch: int = typer.Option(1, help="Sequences per micro-batch."),
    seq_len: int = typer.Option(4096, help="Training sequence length."),
    global_batch: int = typer.Option(0, help="Global batch in sequences (default micro_batch x dp)."),
    prompt: int = typer.Option(1024, help="Prompt tokens (serving)."),
    output: int = typer.Option(256, help="Output tokens (serving)."),
    batch: int = typer.Option(1, help="Concurrent sequences per replica (serving)."),
    price_term: str = typer.Option("on_demand", help="Pricing term for the cost line."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Evaluate ONE configuration: per-card memory breakdown, headroom, speed and cost."""
    from planner.render import evaluate_one, print_evaluation

    def body() -> None:
        evaluation, model_spec, derived = evaluate_one(
            model=model, gpu=gpu, kind=kind, weights=weights, kv=kv, precision=precision, optimizer=optimizer, mode=mode,
            tp=tp, pp=pp, dp=dp, ep=ep, zero=zero, ckpt=ckpt, micro_batch=micro_batch, seq_len=seq_len,
            global_batch=global_batch, prompt=prompt, output=output, batch=batch, price_term=price_term,
        )
        if as_json:
            sys.stdout.write(evaluation.model_dump_json(indent=2) + "\n")
            return
        print_evaluation(out, evaluation, model_spec, derived)

    guarded(body)


@app.command("fleet")
def fleet_cmd(
    fleet_file: Path = typer.Argument(..., help="Fleet file (YAML or JSON)."),
    as_json: bool = typer.Option(False, "--json", help="Print the fleet plan as JSON."),
    time_limit: float = typer.Option(30.0, "--time-limit", help="CP-SAT time limit, seconds."),
) -> None:
    """Plan one fleet (owned, bought, rented GPUs) for several workloads."""
    from planner.fleet import load_fleet, solve_fleet

    def body() -> None:
        plan = solve_fleet(load_fleet(fleet_file), time_limit_s=time_limit)
        if as_json:
            sys.stdout.write(plan.model_dump_json(indent=2) + "\n")
            return
        out.print(f"[bold]{plan.name}[/bold]: total cost of ownership ${plan.total_cost_usd:,.0f} over the horizon — {plan.status}; "
                  f"CP-SAT {plan.solve_time_s:.3f} s over {plan.candidates} candidates; verified: {plan.verified}")
        fleet_table = Table(title="Fleet")
        for col in ("GPU", "owned", "bought", "peak rented"):
            fleet_table.add_column(col)
        for g in sorted({*plan.owned_gpus, *plan.bought_gpus, *plan.peak_rented_gpus}):
            fleet_table.add_row(g, str(plan.owned_gpus.get(g, 0)), str(plan.bought_gpus.get(g, 0)), str(plan.peak_rented_gpus.get(g, 0)))
        out.print(fleet_table)
        out.print(f"Purchases (capex amortised over the horizon): ${plan.purchase_cost_usd:,.0f}")
        table = Table(title="Workloads")
        for col in ("workload", "plan", "source", "GPUs", "weeks", "power or rent $"):
            table.add_column(col)
        for a in plan.assignments:
            table.add_row(a.workload, a.plan, a.source, str(a.num_gpus), f"{a.weeks[0]}-{a.weeks[1]}", f"{a.cost_usd:,.0f}")
        out.print(table)

    guarded(body)


@app.command("sweep")
def sweep_cmd(
    study_file: Path = typer.Argument(..., help="Study file (YAML): a base scenario plus axes or cases."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="results.csv or results.parquet (resumable, written atomically)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Local worker processes (default: all cores; 1 = serial)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Dask scheduler address, e.g. tcp://host:8786."),
    time_limit: Optional[float] = typer.Option(None, "--time-limit", help="CP-SAT time limit per case, seconds."),
) -> None:
    """Run a what-if study: one solve per case, as a table (CSV/Parquet), with a progress bar and a summary."""
    from planner.studies import load_study, run_study, summarize

    def body() -> None:
        frame = run_study(load_study(study_file), workers=workers, scheduler=scheduler, output=output, progress=True,
                          time_limit_s=time_limit)
        table = Table(title=f"{study_file.name}: {len(frame)} cases")
        summary = summarize(frame)
        for col in summary.columns:
            table.add_column(str(col))
        for row in summary.itertuples(index=False):
            table.add_row(*(str(v) for v in row))
        out.print(table)
        if output is not None:
            out.print(f"wrote {output}")

    guarded(body)


@app.command("report")
def report_cmd(
    scenario_file: Path = typer.Argument(..., help="Scenario, study or fleet file (YAML or JSON)."),
    output: Path = typer.Option(Path("report.html"), "-o", "--output", help="report.html or report.md (both when the .md twin is asked with --twin)."),
    twin: bool = typer.Option(True, "--twin/--no-twin", help="Also write the Markdown (or HTML) twin beside it."),
    time_limit: float = typer.Option(20.0, "--time-limit", help="CP-SAT time limit per solve, seconds."),
) -> None:
    """Write a procurement report (self-contained HTML with charts, and its Markdown twin)."""
    from planner.report import build_fleet_report, build_report, build_study_report, save_report
    from planner.scenario import load_scenario, read_structured_file

    def body() -> None:
        if output.suffix.lower() not in (".html", ".htm", ".md", ".markdown"):
            from planner.errors import InputError
            raise InputError(f"--output: {output} must end in .html or .md.")
        data = read_structured_file(scenario_file)
        if isinstance(data, dict) and "workloads" in data:
            from planner.fleet import load_fleet
            report = build_fleet_report(load_fleet(scenario_file), time_limit_s=time_limit)
        elif isinstance(data, dict) and "base" in data:
            report = build_study_report(scenario_file)
        else:
            report = build_report(load_scenario(scenario_file), time_limit_s=time_limit)
        written = [save_report(report, output)]
        if twin:
            other = output.with_suffix(".md" if output.suffix.lower() in (".html", ".htm") else ".html")
            written.append(save_report(report, other))
        out.print("wrote " + ", ".join(str(p) for p in written))

    guarded(body)


@app.command("calibrate")
def calibrate_cmd(
    runs_file: Path = typer.Argument(..., help="Measured training runs (CSV with the columns of tests/data/training_runs_published.csv)."),
    output: Path = typer.Option(..., "-o", "--output", help="Calibration overlay to write (YAML)."),
    folds: int = typer.Option(5, "--folds", help="k of the k-fold cross-validation."),
) -> None:
    """Fit kernel efficiencies to measured runs, print k-fold cross-validated error, write an overlay."""

    def body() -> None:
        from planner.calibrate import calibrate
        runs, error, summary = calibrate(runs_file, output, folds)
        table = Table(title=f"{folds}-fold cross-validated error on tokens/s/GPU (rows not in the fit)")
        for column in ("run", "gpu", "dtype", "framework", "measured tok/s/GPU", "predicted", "error %"):
            table.add_column(column)
        for run, e in zip(runs, error):
            table.add_row(run.id, run.gpu, run.dtype, run.framework, f"{run.tokens_per_s_per_gpu:,.0f}",
                          f"{run.tokens_per_s_per_gpu * (1 + e):,.0f}", f"{100 * e:+.1f}")
        out.print(table)
        for label, stats in summary.items():
            out.print(f"{label:>10}: {stats['rows']:4d} rows, median |error| {stats['median_abs_pct']:5.1f}%, "
                      f"worst {stats['worst_abs_pct']:5.1f}%")
        out.print(f"wrote {output}")

    guarded(body)


@app.command("simulate")
def simulate_cmd(
    scenario_file: Path = typer.Argument(..., help="Serving scenario file (YAML or JSON)."),
    rate: Optional[float] = typer.Option(None, "--rate", help="Fleet-wide arrival rate, requests/s (default: the scenario's tokens/s target / output tokens)."),
    requests: int = typer.Option(10_000, "--requests", help="Requests to replay."),
    seed: int = typer.Option(0, "--seed", help="Seed of the Poisson arrivals."),
    trace: Optional[Path] = typer.Option(None, "--trace", help="CSV trace (arrival_s, prompt_tokens, output_tokens) instead of Poisson arrivals."),
    chart: Optional[Path] = typer.Option(None, "--chart", help="Write a latency-vs-load SVG here."),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="Layout from flags instead of solving: GPU id."),
    tp: int = typer.Option(1, "--tp", help="With --gpu: tensor-parallel degree."),
    pp: int = typer.Option(1, "--pp", help="With --gpu: pipeline-parallel degree."),
    replicas: int = typer.Option(1, "--replicas", help="With --gpu: replicas sharing the load."),
    weights: str = typer.Option("bf16", "--weights", help="With --gpu: weight precision."),
    kv: str = typer.Option("bf16", "--kv", help="With --gpu: KV-cache precision."),
    time_limit: float = typer.Option(20.0, "--time-limit", help="CP-SAT time limit when solving for the layout, seconds."),
) -> None:
    """Replay Poisson arrivals (or a trace) through a discrete-event model of the serving engine; compare with the load-aware model."""
    import numpy as np

    from planner.catalog import resolve_gpu, resolve_model
    from planner.errors import InputError
    from planner.layout import InferenceLayout
    from planner.scenario import load_scenario
    from planner.serving import iteration_cost, max_rate_rps, steady_state
    from planner.simulate import load_sweep, poisson_requests, simulate, trace_requests, write_latency_chart

    def body() -> None:
        scenario = load_scenario(scenario_file)
        workload = scenario.workload
        if workload.kind != "inference":
            raise InputError(f"{scenario_file}: simulate needs an inference workload, got workload.kind = {workload.kind}.")
        if requests < 1:
            raise InputError("--requests: must be at least 1.")
        if rate is not None and rate <= 0:
            raise InputError("--rate: must be a positive number of requests/s.")
        if gpu is not None:
            from planner.enums import KvPrecision, WeightPrecision

            for flag, value, allowed in (("--weights", weights, [w.value for w in WeightPrecision]), ("--kv", kv, [k.value for k in KvPrecision])):
                if value not in allowed:
                    raise InputError(f"{flag}: {value!r} is not a precision; allowed: {', '.join(allowed)}.")
            for flag, number in (("--tp", tp), ("--pp", pp), ("--replicas", replicas)):
                if number < 1:
                    raise InputError(f"{flag}: must be at least 1.")
            layout = InferenceLayout(gpu=resolve_gpu(gpu, "--gpu").name, weight_precision=weights, kv_precision=kv, tp=tp, pp=pp,
                                     batch=1, replicas=replicas)
        else:
            from planner.solver import solve

            plan = solve(scenario, time_limit_s=time_limit).evaluation
        traffic = workload.resolved_traffic()
        model = resolve_model(workload.model)
        prompt, output = traffic.prompt.mean_tokens(), traffic.output.mean_tokens()
        spec = {"prompt_second_moment": traffic.prompt.second_moment(), "prefix_hit_rate": traffic.prefix_cache_hit_rate,
                "tokens_per_step": traffic.tokens_per_step, "verify_tokens": traffic.verify_tokens}
        if gpu is not None:
            g = resolve_gpu(layout.gpu)
            cost = iteration_cost(model, layout, g, scenario.resolved_assumptions(), prompt_tokens=workload.prompt_tokens,
                                  output_tokens=workload.output_tokens)
            fleet_rate = rate if rate is not None else traffic.request_rate_rps or 0.0
        else:
            from planner.perf import serving_cost
            from planner.space import node_size

            layout = plan.layout  # type: ignore[union-attr]
            g = resolve_gpu(layout.gpu)
            # the plan's own per-iteration cost (batch slots, KV reserve) and the fleet rate its replica count was sized for
            cost = serving_cost(model, workload, layout, g, scenario.resolved_assumptions(), node_size(scenario, g))
            fleet_rate = rate if rate is not None else plan.perf.request_rate_rps * plan.perf.replicas_needed  # type: ignore[union-attr]
        if fleet_rate <= 0:
            raise InputError("--rate: the scenario states a concurrency, not a rate; give --rate in requests/s.")
        per_replica = fleet_rate / layout.replicas
        rng = np.random.default_rng(seed)
        arrivals = trace_requests(trace) if trace is not None else poisson_requests(
            per_replica, requests, traffic.prompt.sample(requests, rng), traffic.output.sample(requests, rng), seed)
        result = simulate(cost, arrivals, progress=True, tokens_per_step=spec["tokens_per_step"], verify_tokens=spec["verify_tokens"],
                          prefix_hit_rate=spec["prefix_hit_rate"])
        state = steady_state(cost, per_replica, prompt, output, **spec)
        out.print(f"[bold]{model.name}[/bold] on {layout.replicas} x {layout.gpu} TP{layout.tp} PP{layout.pp} "
                  f"({layout.weight_precision.value} weights, {layout.kv_precision.value} KV); {per_replica:.3g} requests/s per replica, "
                  f"max stable {float(max_rate_rps(cost, prompt, output)):.3g}; {result.requests} requests, seed {seed}")
        table = Table(title="simulated vs load-aware model (per replica)")
        for col in ("metric", "simulated", "model"):
            table.add_column(col)
        feasible = bool(state.feasible)

        def fmt(v: float) -> str:
            return ("-" if feasible else "infeasible") if v != v else f"{v:,.4g}"
        for label, sim_value, model_value in (
            ("TTFT p50 s", result.ttft_p50_s, state.ttft_p50_s), ("TTFT p90 s", result.ttft_p90_s, state.ttft_p90_s),
            ("TTFT p99 s", result.ttft_p99_s, state.ttft_p99_s), ("ITL p50 s", result.itl_p50_s, state.itl_p50_s),
            ("ITL p90 s", result.itl_p90_s, state.itl_p90_s), ("ITL p99 s", result.itl_p99_s, state.itl_p99_s),
            ("end-to-end p50 s", result.e2e_p50_s, state.e2e_mean_s), ("end-to-end p90 s", result.e2e_p90_s, float("nan")),
            ("end-to-end p99 s", result.e2e_p99_s, float("nan")),
            ("output tokens/s", result.output_tokens_per_s, state.output_tokens_per_s),
            ("decode sequences in flight", result.decode_seqs_in_flight, state.decode_seqs_in_flight),
        ):
            table.add_row(label, fmt(sim_value), fmt(float(model_value)) if label != "end-to-end p50 s" else fmt(float(model_value)) + " (mean)")
        out.print(table)
        if result.rejected:
            out.print(f"{result.rejected} requests never fit the KV cache (prompt + output above {float(cost.kv_capacity_tokens):,.0f} tokens)")
        if chart is not None:
            top = float(max_rate_rps(cost, prompt, output))
            sweep = load_sweep(cost, prompt, output, np.linspace(0.1, 0.9, 5) * top, requests=min(requests, 2000), seed=seed)
            out.print(f"wrote {write_latency_chart(chart, cost, prompt, output, sweep, f'{model.name} on {layout.gpu} TP{layout.tp} PP{layout.pp}')}")

    guarded(body)


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
