"""Command line: `planner solve | memory | catalog | model show | validate | schema`.

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
        from planner.cost import is_stale
        from planner.scenario import Assumptions

        assumptions = Assumptions.with_overrides()
        for col in ("gpu", "provider", "offering", "region", "term", "$/GPU-h", "GPUs/instance", "flags", "as_of"):
            table.add_column(col)
        for r in rows:
            flags = ", ".join(f for f, on in (("PLACEHOLDER", r.placeholder), ("STALE", is_stale(r.as_of, assumptions))) if on)
            table.add_row(r.gpu, r.provider, r.offering, r.region, r.term.value, f"{r.usd_per_gpu_hour:.3f}", str(r.gpus_per_instance),
                          flags, r.as_of)
        out.print(table)

    guarded(body)


# ---- prices: import SkyPilot catalogs, fetch live offers -------------------------------------

prices_app = typer.Typer(no_args_is_help=True, help="Build a dated price file from SkyPilot's catalog or live offers.")
app.add_typer(prices_app, name="prices")


def _print_import(summary: Any) -> None:
    out.print(f"wrote {summary.rows} price rows for {', '.join(summary.gpus)} from {', '.join(summary.clouds)} to {summary.path}")
    if summary.unmapped:
        out.print(f"skipped accelerators with no catalog GPU: {', '.join(summary.unmapped)}")
    if summary.skipped_spot:
        out.print(f"skipped {summary.skipped_spot} rows whose spot price is above their on-demand price")
    out.print(f"use it with `pricing: {{price_file: {summary.path}}}` in a scenario")


@prices_app.command("import")
def prices_import(
    skypilot: Path = typer.Option(..., help="SkyPilot catalog folder with <cloud>/vms.csv files (e.g. ~/.sky/catalogs/v7)."),
    output: Optional[Path] = typer.Option(None, "--out", help="Price file to write (default prices-skypilot-DATE.csv)."),
    as_of: Optional[str] = typer.Option(None, help="Date of the catalog, YYYY-MM-DD (default today)."),
) -> None:
    """Import SkyPilot v7 vms.csv files as per-GPU price rows that keep the instance size."""
    from planner.prices import import_skypilot

    guarded(lambda: _print_import(import_skypilot(skypilot, output, as_of)))


@prices_app.command("fetch")
def prices_fetch(
    output: Optional[Path] = typer.Option(None, "--out", help="Price file to write (default prices-live-DATE.csv)."),
    provider: list[str] = typer.Option([], help="Providers to query (default all gpuhunt knows)."),
) -> None:
    """Query current offers with gpuhunt (optional extra planner[live]; needs the network)."""
    from planner.prices import fetch_live

    guarded(lambda: _print_import(fetch_live(output, tuple(provider))))


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


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
